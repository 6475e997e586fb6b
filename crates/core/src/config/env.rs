//! Reading one environment variable: its default when unset or empty, and an error naming the variable
//! and what it accepts when its value does not parse or lies outside its range. Every read goes through
//! `get`, which reads the process's environment, or the variables `Settings::from_vars` was given instead
//! (tests build their settings explicitly, never from whoever runs them).

use std::{
    cell::RefCell, collections::HashMap, env, fmt::Display, ops::RangeInclusive, str::FromStr, time::Duration,
};

thread_local! {
    /// The variables of a `with_vars` call in progress on this thread, instead of the environment.
    static GIVEN: RefCell<Option<HashMap<String, String>>> = const { RefCell::new(None) };
}

/// The value of `name`: from the variables being read by `with_vars`, else from the environment.
pub(super) fn get(name: &str) -> Option<String> {
    GIVEN.with(|given| match &*given.borrow() {
        Some(vars) => vars.get(name).cloned(),
        None => env::var(name).ok(),
    })
}

/// Runs `read` with `vars` as the only variables there are.
pub(super) fn with_vars<T>(vars: &[(&str, &str)], read: impl FnOnce() -> T) -> T {
    let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    GIVEN.with(|given| *given.borrow_mut() = Some(vars));
    let read = read();
    GIVEN.with(|given| *given.borrow_mut() = None);
    read
}

/// A comma-separated list; empty when unset.
pub(super) fn list(name: &str) -> Vec<String> {
    var(name, "").split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect()
}

/// `REDIS_CLUSTER_NODES`: each seed node a `redis://` (or `rediss://`) URL that parses.
pub(super) fn redis_nodes(name: &str) -> anyhow::Result<Vec<String>> {
    let nodes = list(name);
    for node in &nodes {
        let valid = (node.starts_with("redis://") || node.starts_with("rediss://"))
            && redis::IntoConnectionInfo::into_connection_info(node.as_str()).is_ok();
        anyhow::ensure!(
            valid,
            "{name} is invalid: {node:?} is not a redis://host:port URL (give the seed nodes comma-separated)"
        );
    }
    Ok(nodes)
}

/// `REDIS_KEY_PREFIX`: no braces, which would change the keys' cluster hash tags.
pub(super) fn key_prefix(name: &str) -> anyhow::Result<String> {
    let prefix = var(name, "pricing");
    anyhow::ensure!(
        !prefix.contains(['{', '}']) && prefix.len() <= 64,
        "{name}={prefix:?} is invalid: at most 64 characters, without braces (they are Redis Cluster hash tags)"
    );
    Ok(prefix)
}

pub(super) fn var(name: &str, default: &str) -> String {
    get(name).filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_string())
}

/// A filter in `RUST_LOG` syntax, checked now: a typo must stop start-up, not silence the logs or traces.
pub(super) fn filter(name: &str, default: &str) -> anyhow::Result<String> {
    let spec = var(name, default);
    crate::telemetry::check_filter(&spec)
        .map_err(|e| anyhow::anyhow!("environment variable {name}={spec:?} is not a valid filter: {e}"))?;
    Ok(spec)
}

pub(super) fn parse<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: Display,
{
    match get(name) {
        Some(v) if !v.is_empty() => {
            v.parse().map_err(|e| anyhow::anyhow!("environment variable {name}={v:?} is invalid: {e}"))
        }
        _ => Ok(default),
    }
}

/// A value of `name` (or `default`) that must lie in `range`.
pub(super) fn ranged<T>(name: &str, default: T, range: RangeInclusive<T>) -> anyhow::Result<T>
where
    T: FromStr + PartialOrd + Display,
    T::Err: Display,
{
    let value = parse(name, default)?;
    anyhow::ensure!(
        range.contains(&value),
        "environment variable {name}={value} is out of range: it must be between {} and {}",
        range.start(),
        range.end()
    );
    Ok(value)
}

/// A duration in milliseconds (a `_MS` setting) that must lie in `range`.
pub(super) fn millis(name: &str, default: u64, range: RangeInclusive<u64>) -> anyhow::Result<Duration> {
    Ok(Duration::from_millis(ranged(name, default, range)?))
}

/// A duration in seconds (a `_SECS` setting) that must lie in `range`.
pub(super) fn secs(name: &str, default: u64, range: RangeInclusive<u64>) -> anyhow::Result<Duration> {
    Ok(Duration::from_secs(ranged(name, default, range)?))
}

/// Settings renamed so that a duration's name says its unit: `(old, new)`. The old name is still read when
/// the new one is unset, with a warning at start-up.
pub const RENAMED: &[(&str, &str)] = &[
    ("CACHE_TTL", "CACHE_TTL_SECS"),
    ("PRICE_CACHE_TTL", "PRICE_CACHE_TTL_SECS"),
    ("QUOTE_TTL", "QUOTE_TTL_SECS"),
    ("IDEMPOTENCY_TTL", "IDEMPOTENCY_TTL_SECS"),
    ("SHUTDOWN_TIMEOUT", "SHUTDOWN_TIMEOUT_SECS"),
];

/// The variable to read for the setting `name`: itself, or its old name when only that one is set.
pub(super) fn renamed(name: &'static str) -> &'static str {
    let set = |n: &str| get(n).is_some_and(|v| !v.is_empty());
    match RENAMED.iter().find(|(_, new)| *new == name) {
        Some((old, _)) if !set(name) && set(old) => old,
        _ => name,
    }
}

/// A warning for each old name of a renamed setting that is set.
pub(super) fn deprecated_names_in_use() -> Vec<String> {
    RENAMED
        .iter()
        .filter(|(old, _)| get(old).is_some())
        .map(|(old, new)| {
            format!("{old} is deprecated: rename it {new} (the old name is still read when {new} is unset)")
        })
        .collect()
}
