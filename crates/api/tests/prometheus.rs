//! The dashboard and the alert rules against a real Prometheus (Debian's `prometheus` package, installed
//! by `scripts/services.sh`): it runs with `deploy/prometheus.yml`, only the discovery swapped for this
//! test's processes (every other setting kept, the alert rules loaded), scrapes the three binaries while
//! every flow runs, and then every query of every dashboard in `deploy/grafana/dashboards/` is evaluated
//! through its HTTP API. A query fails the test when it is invalid, returns no series, or shows a label
//! value other than what its panel promises; a scraped series fails it when it carries an `exported_*`
//! label (a metric's own label that collides with one Prometheus sets on targets). This is what catches a
//! dashboard that parses but lies.

mod processes;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use processes::{url_of_pid, Stack, TOKEN};
use serde_json::{json, Value};

/// The scrape jobs of `deploy/prometheus.yml` and the address setting of the process each one scrapes.
const JOBS: &[(&str, &str)] =
    &[("pricing-api", "API_ADDR"), ("pricing-worker", "WORKER_ADDR"), ("pricing-listener", "LISTENER_ADDR")];

const JOB_KINDS: &[&str] = &["process_order", "recalculate_prices"];

/// What each metric's labels may show on a panel: the panel's promise. A label not listed here for the
/// metric a query reads fails the test (a panel grouped by it promises nothing known).
fn promises() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let scrape_jobs = JOBS.iter().map(|(job, _)| *job).collect();
    let retained = || pricing_core::db::retention::Retained::ALL.map(|t| t.table()).to_vec();
    vec![
        ("job_queue_depth", "queue", JOB_KINDS.to_vec()),
        ("job_queue_wait_seconds", "job_name", JOB_KINDS.to_vec()),
        ("job_duration_seconds", "job_name", JOB_KINDS.to_vec()),
        ("jobs_total", "job_name", JOB_KINDS.to_vec()),
        ("jobs_total", "outcome", vec!["enqueued", "succeeded", "failed", "retried", "skipped"]),
        ("orders_total", "status", vec!["pending", "processing", "completed", "failed", "cancelled"]),
        ("market_events_total", "outcome", vec!["applied", "duplicate", "dead_letter"]),
        ("lock_acquisitions_total", "lock", vec!["recalculate_global_lock"]),
        ("lock_acquisitions_total", "result", vec!["acquired", "busy"]),
        ("lock_held_seconds", "lock", vec!["recalculate_global_lock"]),
        ("db_pool_connections", "job", scrape_jobs),
        ("db_pool_connections", "state", vec!["idle", "in_use"]),
        ("orders_stuck", "status", vec!["pending", "processing"]),
        ("http_requests_rate_limited_total", "class", vec!["reads", "orders", "admin"]),
        ("retention_deleted_total", "table", retained()),
        ("retention_last_success_timestamp_seconds", "table", retained()),
    ]
}

/// `endpoint` is a route template (`/api/v1/products/{id}`), never a raw path with an id in it.
fn is_route_template(value: &str) -> bool {
    value == "unmatched"
        || (value.starts_with('/')
            && !value.split('/').any(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())))
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

/// `deploy/prometheus.yml` with each job's DNS discovery replaced by the test's address and the rule
/// files made absolute; every other setting as it is.
fn test_config(stack: &Stack) -> String {
    let mut config: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(repo_path("deploy/prometheus.yml")).unwrap())
            .unwrap();
    let scrape_configs = config["scrape_configs"].as_sequence_mut().expect("scrape_configs");
    assert_eq!(scrape_configs.len(), JOBS.len(), "one scrape job per binary");
    for scrape in scrape_configs {
        let job = scrape["job_name"].as_str().unwrap().to_string();
        let (_, setting) = JOBS.iter().find(|(name, _)| *name == job).expect("a known scrape job");
        let scrape = scrape.as_mapping_mut().unwrap();
        assert!(scrape.remove("dns_sd_configs").is_some(), "{job} is found by DNS in compose");
        let target = stack.url_of(setting).trim_start_matches("http://").to_string();
        scrape.insert(
            "static_configs".into(),
            serde_norway::to_value(json!([{ "targets": [target] }])).unwrap(),
        );
    }
    let rules = config["rule_files"].as_sequence_mut().expect("the alert rules are loaded");
    for file in rules.iter_mut() {
        let path = repo_path("deploy").join(file.as_str().unwrap());
        assert!(path.exists(), "{} exists", path.display());
        *file = path.to_string_lossy().into_owned().into();
    }
    serde_norway::to_string(&config).unwrap()
}

/// Prometheus, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempdir::Dir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn start_prometheus(stack: &Stack) -> Prometheus {
    let dir = std::env::temp_dir().join(format!("prometheus_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("prometheus.yml"), test_config(stack)).unwrap();
    let log = std::fs::File::create(dir.join("log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        // Port 0: it binds a free port itself, and the test reads which (no port handed over to race for).
        .arg("--web.listen-address=127.0.0.1:0")
        .stderr(log)
        .spawn()
        .expect("prometheus runs (scripts/services.sh installs Debian's package)");
    let url = url_of_pid(child.id()).expect("prometheus listens");
    let prometheus = Prometheus { child, url, _dir: tempdir::Dir(dir) };
    processes::wait_for(&format!("{}/-/ready", prometheus.url)).await;
    prometheus
}

/// Every flow the dashboard shows: quotes, reads, orders the worker completes or fails, a market event,
/// one the listener cannot understand (a dead letter), a recalculation.
async fn drive_every_flow(stack: &Stack) {
    let client = reqwest::Client::new();
    let api = &stack.api;
    let id = stack.create_product(1_000).await;
    for _ in 0..3 {
        let quote = client.post(format!("{api}/api/v1/price")).json(&json!({ "product_id": id })).send();
        assert_eq!(quote.await.unwrap().status(), 200);
        for path in [format!("/api/v1/products/{id}"), format!("/api/v1/products/{id}/cached")] {
            assert_eq!(client.get(format!("{api}{path}")).send().await.unwrap().status(), 200);
        }
    }
    // Half of the fulfilments fail (ORDER_FAILURE_RATE) with no retry: both outcomes show.
    for _ in 0..16 {
        let order =
            client.post(format!("{api}/api/v1/orders")).json(&json!({ "product_id": id, "quantity": 1 }));
        assert_eq!(order.send().await.unwrap().status(), 201);
    }
    let event = json!({ "event_type": "competitor_price", "product_ids": [id], "multiplier": 1.1 });
    let published = client.post(format!("{api}/api/v1/publish-market-event")).bearer_auth(TOKEN).json(&event);
    assert_eq!(published.send().await.unwrap().status(), 202);
    let recalculation = client.post(format!("{api}/api/v1/recalculate")).bearer_auth(TOKEN).send();
    assert_eq!(recalculation.await.unwrap().status(), 202);
    let redis = redis::Client::open(std::env::var("REDIS_URL").unwrap_or("redis://127.0.0.1:6379".into()));
    let mut redis = redis.unwrap().get_multiplexed_async_connection().await.unwrap();
    let stream = format!("{}:market_events", stack.setting("REDIS_KEY_PREFIX"));
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("event")
        .arg("not json")
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// Every query of every dashboard, with the panel it belongs to.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(repo_path("deploy/grafana/dashboards")).unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let title = format!("{}: {}", path.file_name().unwrap().to_string_lossy(), panel["title"]);
                queries.push((title, target["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    assert!(queries.len() > 10, "the dashboards are found");
    queries
}

/// What Prometheus's HTTP API answers at `path` (with `params`).
async fn api(
    client: &reqwest::Client,
    prometheus: &Prometheus,
    path: &str,
    params: &[(&str, &str)],
) -> Value {
    let url = format!("{}/api/v1/{path}", prometheus.url);
    client.get(url).query(params).send().await.unwrap().json().await.unwrap()
}

async fn query(client: &reqwest::Client, prometheus: &Prometheus, expr: &str) -> Value {
    let answer = api(client, prometheus, "query", &[("query", expr)]).await;
    assert_eq!(answer["status"], "success", "query {expr} is invalid: {answer}");
    answer["data"]["result"].clone()
}

/// What is wrong with one query's answer: no series, or a label value its panel does not promise.
fn problems_of(expr: &str, result: &Value) -> Vec<String> {
    let series = result.as_array().unwrap();
    if series.is_empty() {
        return vec!["returns no series".into()];
    }
    let promises = promises();
    let mut problems = Vec::new();
    for labels in series.iter().filter_map(|s| s["metric"].as_object()) {
        for (label, value) in labels {
            let value = value.as_str().unwrap();
            if label == "endpoint" {
                if !is_route_template(value) {
                    problems.push(format!("endpoint {value:?} is not a route template"));
                }
                continue;
            }
            let promised: Vec<&Vec<&str>> = promises
                .iter()
                .filter(|(metric, l, _)| l == label && expr.contains(metric))
                .map(|(_, _, values)| values)
                .collect();
            if promised.is_empty() {
                problems.push(format!(
                    "shows label {label} (= {value:?}), which its panel promises nothing about"
                ));
            } else if !promised.iter().any(|values| values.contains(&value)) {
                problems.push(format!("shows {label}={value:?}, not one of {:?}", promised[0]));
            }
        }
    }
    problems
}

#[tokio::test]
async fn every_dashboard_query_shows_what_its_panel_promises_in_a_real_prometheus() {
    let mut stack = Stack::start(
        "prom",
        &[
            ("ORDER_FAILURE_RATE", "0.5".into()),
            ("ORDER_MAX_ATTEMPTS", "1".into()),
            ("SWEEP_INTERVAL_MS", "500".into()),
        ],
    )
    .await;
    stack.spawn("pricing-worker");
    stack.spawn("pricing-listener");
    for (_, setting) in JOBS {
        processes::wait_for(&format!("{}/metrics", stack.url_of(setting))).await;
    }
    let prometheus = start_prometheus(&stack).await;
    drive_every_flow(&stack).await;

    // Rates need two scrapes after the flows, and the worker and listener need a moment: poll until every
    // query answers (or the deadline shows which do not).
    let client = reqwest::Client::new();
    let queries = dashboard_queries();
    let deadline = Instant::now() + Duration::from_secs(90);
    let problems = loop {
        let mut problems = Vec::new();
        for (panel, expr) in &queries {
            let result = query(&client, &prometheus, expr).await;
            problems.extend(problems_of(expr, &result).into_iter().map(|p| format!("{panel}: `{expr}` {p}")));
        }
        if problems.is_empty() || Instant::now() > deadline {
            break problems;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(problems.is_empty(), "the dashboard lies:\n{}", problems.join("\n"));

    // Each binary is a target that is up, and no scraped series had a label renamed `exported_*`.
    let up = query(&client, &prometheus, "up == 1").await;
    let up: Vec<&str> = up.as_array().unwrap().iter().filter_map(|s| s["metric"]["job"].as_str()).collect();
    for (job, _) in JOBS {
        assert!(up.contains(job), "{job} is scraped and up: {up:?}");
    }
    let labels: Value = api(&client, &prometheus, "labels", &[]).await;
    let clashing: Vec<&Value> = labels["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l.as_str().unwrap().starts_with("exported_"))
        .collect();
    assert!(clashing.is_empty(), "a metric's label collides with a target label: {clashing:?}");

    // The alert rules compose loads are evaluated without error against these series.
    let rules: Value = api(&client, &prometheus, "rules", &[]).await;
    let rules: Vec<&Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(rules.len() >= 8, "the alert rules are loaded: {rules:?}");
    for rule in rules {
        assert_eq!(rule["health"], "ok", "{}: {}", rule["name"], rule["lastError"]);
    }
}

/// The alert rules are valid and their unit tests (`deploy/alerts.test.yml`, input series and the alerts
/// they must and must not raise) pass in `promtool`.
#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    for args in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(repo_path("deploy"))
            .output()
            .expect("promtool runs");
        let said =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "promtool {args:?} failed:\n{said}");
    }
}
