//! The versioned-entry format, `{version}|{json}` (`{version}|null`: a tombstone), and its reads and
//! writes. Writes go through the `set_if_newer` script, so an older copy never replaces a newer one; reads
//! tell a hit from an invalidated or absent entry, and drop a corrupt one so it can be recomputed.

use std::time::Duration;

use futures::future::try_join_all;
use redis::{cluster_routing::Slot, AsyncCommands, Script};
use serde::{de::DeserializeOwned, Serialize};

use super::{
    scripts::{ScriptCall, DELETE_IF_EQUAL},
    Cache,
};
use crate::Result;

/// Keys per script call in `set_versioned_many`: enough to spread the call's cost, few enough that Redis
/// never blocks other clients for long (about 0.1 ms).
const KEYS_PER_CALL: usize = 100;

/// What a versioned read found.
#[derive(Debug)]
pub enum Lookup<T> {
    Hit(T),
    /// A tombstone: invalidated after the commit that made this version.
    Invalidated(i64),
    Missing,
}

impl Cache {
    /// Reads a versioned value and tells a miss on an invalidated entry (with its version) from one on an
    /// absent entry.
    #[tracing::instrument(name = "cache lookup", skip_all, fields(db.system.name = "redis"))]
    pub async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Result<Lookup<T>> {
        let raw: Option<String> = self.conn().await?.get(key).await?;
        self.decode_entry(key, raw).await
    }

    /// Reads several entries in one round trip (`MGET`), raw; decode each with `decode_entry`.
    #[tracing::instrument(name = "cache get many", skip_all, fields(db.system.name = "redis"))]
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        Ok(redis::cmd("MGET").arg(keys).query_async(&mut self.conn().await?).await?)
    }

    /// Decodes an entry read from `key`. A corrupt or older-format entry is dropped (unless it changed
    /// meanwhile) so the recomputed value can take its place, and counts as missing.
    pub async fn decode_entry<T: DeserializeOwned>(
        &self,
        key: &str,
        raw: Option<String>,
    ) -> Result<Lookup<T>> {
        let Some(raw) = raw else { return Ok(Lookup::Missing) };
        let decoded = match raw.split_once('|').map(|(v, json)| (v.parse::<i64>(), json)) {
            Some((Ok(version), "null")) => return Ok(Lookup::Invalidated(version)),
            Some((Ok(_), json)) => serde_json::from_str(json).map_err(|e| e.to_string()),
            _ => Err("not a versioned entry".to_string()),
        };
        match decoded {
            Ok(value) => Ok(Lookup::Hit(value)),
            Err(error) => {
                tracing::warn!(key, %error, "corrupt cache entry, treating as a miss");
                let _: i32 = Script::new(DELETE_IF_EQUAL)
                    .key(key)
                    .arg(&raw)
                    .invoke_async(&mut self.conn().await?)
                    .await?;
                Ok(Lookup::Missing)
            }
        }
    }

    /// Writes `value` unless the cache already holds `version` or newer. Returns whether it wrote.
    #[tracing::instrument(name = "cache set versioned", skip_all, fields(db.system.name = "redis"))]
    pub async fn set_versioned<T: Serialize>(
        &self,
        key: &str,
        version: i64,
        value: &T,
        ttl: Duration,
    ) -> Result<bool> {
        let json = serde_json::to_string(value).expect("cache values serialize");
        let written: i32 = self
            .set_if_newer
            .key(key)
            .arg(version)
            .arg(json)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn().await?)
            .await?;
        Ok(written == 1)
    }

    /// Writes many versioned values (the bulk recalculation): script calls of at most `KEYS_PER_CALL` keys
    /// of one slot each, sent at once. Returns how many were written.
    #[tracing::instrument(name = "cache set versioned many", skip_all, fields(db.system.name = "redis"))]
    pub async fn set_versioned_many(
        &self,
        entries: &[(String, i64, String)],
        ttl: impl Fn() -> Duration,
    ) -> Result<u64> {
        let calls = set_if_newer_calls(entries, ttl);
        let written = try_join_all(calls.iter().map(|call| async move {
            call.invoke::<u64>(&self.set_if_newer, &mut self.conn().await?).await.map_err(crate::Error::from)
        }))
        .await?;
        Ok(written.iter().sum())
    }

    /// Invalidates an entry as of `version`: a tombstone that only a value of that version or newer replaces.
    pub async fn invalidate(&self, key: &str, version: i64, ttl: Duration) -> Result<()> {
        self.set_versioned(key, version, &serde_json::Value::Null, ttl).await?;
        Ok(())
    }
}

/// `SET_IF_NEWER` calls for `entries`: grouped by the key's cluster slot (the recalculation's keys, in id
/// order, fall into few), at most `KEYS_PER_CALL` keys each. ARGV: version, value, ttl per key.
pub(super) fn set_if_newer_calls(
    entries: &[(String, i64, String)],
    ttl: impl Fn() -> Duration,
) -> Vec<ScriptCall> {
    type Entry = (String, i64, String);
    let mut by_slot: Vec<(Slot, Vec<&Entry>)> = Vec::new();
    for entry in entries {
        let slot = Slot::for_key(&entry.0);
        match by_slot.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(entry),
            None => by_slot.push((slot, vec![entry])),
        }
    }
    by_slot
        .iter()
        .map(|(_, group)| group)
        .flat_map(|group| group.chunks(KEYS_PER_CALL))
        .map(|chunk| {
            let mut call = ScriptCall::default();
            for (key, _, _) in chunk {
                call.key(key.clone());
            }
            for (_, version, json) in chunk {
                call.arg(*version).arg(json).arg(ttl().as_millis() as u64);
            }
            call
        })
        .collect()
}
