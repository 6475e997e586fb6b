//! Metrics from every binary: each serves Prometheus text that `promtool check metrics` accepts, with the
//! names the dashboards use, and each counter moves when its action happens. (The recorder is one per
//! process, shared by the tests running in it: checks compare a counter before and after, never exactly.)

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::helpers::{spawn_app, wait_until, TestApp};

/// The sum of every sample of `name` whose labels contain each of `labels` (`key="value"`).
fn value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(app: &TestApp, url: &str) -> String {
    let res = app.client.get(url).send().await.expect("scrape");
    assert_eq!(res.status(), 200, "{url}");
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    res.text().await.unwrap()
}

/// `promtool check metrics` accepts the exposition (it reads it on stdin).
fn promtool_accepts(what: &str, text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/services.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool rejects the {what} metrics: {report}");
    // Lint remarks are allowed only for what promtool cannot know is fine; there should be none.
    assert!(report.trim().is_empty(), "promtool remarks on the {what} metrics: {report}");
}

#[tokio::test]
async fn every_binary_serves_valid_metrics_and_each_counter_moves_with_its_action() {
    let mut app = spawn_app().await;
    app.start_worker().await;
    let listener = app.start_listener().await;
    let api_url = app.url("/metrics");
    let worker_url = format!("http://127.0.0.1:{}/metrics", app.worker_port.unwrap());
    let listener_url = format!("http://127.0.0.1:{}/metrics", app.listener(listener).port);
    let before = scrape(&app, &api_url).await;

    // Actions: a product, two quotes (a miss, then a hit), an order the worker completes, an event.
    let product = app.create_product("Metered", 10.0, 100).await;
    let id = product["id"].as_i64().unwrap();
    for _ in 0..2 {
        assert_eq!(app.post("/api/v1/price", &json!({ "product_id": id })).await.status(), 200);
    }
    let order: serde_json::Value = app.order(id, 1).await.json().await.unwrap();
    let order_id = order["id"].as_i64().unwrap();
    wait_until(Duration::from_secs(15), "the order completed", || async {
        app.order_status(order_id).await == "completed"
    })
    .await;
    let event = json!({ "event_type": "demand_shock", "product_ids": [id], "multiplier": 1.1 });
    let published: serde_json::Value =
        app.admin(Method::POST, "/api/v1/publish-market-event", Some(&event)).await.json().await.unwrap();
    let event_id = published["event_id"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(15), "the event applied", || async {
        let record: serde_json::Value =
            app.get(&format!("/api/v1/market-events/{event_id}")).await.json().await.unwrap();
        record["status"] == "applied"
    })
    .await;
    wait_until(Duration::from_secs(15), "the listener counted it", || async {
        app.listener(listener).state.counters.applied.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;

    let task: serde_json::Value =
        app.admin(Method::POST, "/api/v1/recalculate", None).await.json().await.unwrap();
    let status_url = task["status_url"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(15), "the recalculation finished", || async {
        let task: serde_json::Value = app.get(&status_url).await.json().await.unwrap();
        task["status"] == "succeeded" || task["status"] == "skipped"
    })
    .await;

    let api = scrape(&app, &api_url).await;
    let worker = scrape(&app, &worker_url).await;
    let listener_text = scrape(&app, &listener_url).await;
    for (what, text) in [("api", &api), ("worker", &worker), ("listener", &listener_text)] {
        promtool_accepts(what, text);
    }
    let moved = |name: &str, labels: &[&str]| value(&api, name, labels) - value(&before, name, labels);
    let route = ["endpoint=\"/api/v1/price\"", "method=\"POST\"", "status=\"200\""];
    assert!(moved("http_requests_total", &route) >= 2.0, "{api}");
    assert!(moved("http_request_duration_seconds_count", &route) >= 2.0);
    assert!(moved("price_cache_requests_total", &["result=\"miss\""]) >= 1.0);
    assert!(moved("price_cache_requests_total", &["result=\"hit\""]) >= 1.0);
    assert!(moved("price_computations_total", &[]) >= 1.0);
    assert!(moved("orders_total", &["status=\"pending\""]) >= 1.0);
    assert!(moved("jobs_total", &["job_name=\"process_order\"", "outcome=\"enqueued\""]) >= 1.0);
    // One recorder per process: the worker's and the listener's counters are in the same registry here,
    // and in production each binary's /metrics shows its own.
    assert!(value(&worker, "jobs_total", &["job_name=\"process_order\"", "outcome=\"succeeded\""]) >= 1.0);
    assert!(value(&worker, "job_queue_wait_seconds_count", &["job_name=\"process_order\""]) >= 1.0);
    assert!(value(&worker, "job_duration_seconds_count", &["job_name=\"process_order\""]) >= 1.0);
    assert!(value(&worker, "orders_total", &["status=\"completed\""]) >= 1.0);
    assert!(value(&listener_text, "market_events_total", &["outcome=\"applied\""]) >= 1.0);
    for name in ["job_queue_depth", "db_pool_connections", "redis_connections", "otel_spans_dropped_total"] {
        assert!(listener_text.lines().any(|l| l.starts_with(name)), "{name} missing: {listener_text}");
    }
    // Every metric a dashboard panel queries is one a binary exports.
    let exported = format!("{api}\n{worker}\n{listener_text}");
    for name in dashboard_metrics() {
        assert!(
            exported.lines().any(|l| l.split(['{', ' ']).next() == Some(name.as_str())),
            "the dashboard queries {name}, which no binary exports"
        );
    }
    // Bounded labels: route templates, never raw ids.
    assert!(!api.contains(&format!("/api/v1/products/{id}\"")), "a raw path became a label");
}

#[tokio::test]
async fn the_worker_reports_its_health() {
    let mut app = spawn_app().await;
    app.start_worker().await;
    let url = format!("http://127.0.0.1:{}/health", app.worker_port.unwrap());
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["status"], "healthy");
}

fn repo_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The metric names the Grafana dashboard's queries use.
fn dashboard_metrics() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/dashboards/pricing-engine.json")).unwrap();
    let promql_words = ["sum", "by", "rate", "max", "histogram_quantile", "clamp_min", "le"];
    let mut names: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string())
        })
        .flat_map(|expr| {
            // Label matchers and label lists are not metric names.
            let without_labels: String = expr
                .split('{')
                .enumerate()
                .map(
                    |(i, part)| if i == 0 { part } else { part.split_once('}').map_or("", |(_, rest)| rest) },
                )
                .collect::<Vec<_>>()
                .join(" ");
            let without_groupings = without_labels
                .split("by (")
                .enumerate()
                .map(|(i, part)| {
                    if i == 0 {
                        part.to_string()
                    } else {
                        part.split_once(')').map_or(String::new(), |(_, r)| r.to_string())
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            without_groupings
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| {
                    w.contains('_')
                        && !promql_words.contains(w)
                        && !w.chars().next().unwrap().is_ascii_digit()
                })
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 10, "dashboard metrics: {names:?}");
    names
}

/// The binaries the workspace builds (crates with a `src/main.rs`), by package name.
fn workspace_binaries() -> Vec<String> {
    ["api", "worker", "listener", "core"]
        .into_iter()
        .filter(|c| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../{c}/src/main.rs")).exists()
        })
        .map(|c| format!("pricing-{c}"))
        .collect()
}

#[test]
fn the_compose_stack_agrees_with_the_code() {
    use pricing_core::{config::ENV_VARS, telemetry::OTEL_VARS, Settings};
    let mut compose: serde_norway::Value = serde_norway::from_str(&repo_file("docker-compose.yml")).unwrap();
    compose.apply_merge().expect("YAML merge keys resolve");
    let binaries = workspace_binaries();
    assert_eq!(binaries, ["pricing-api", "pricing-worker", "pricing-listener"]);
    let services = compose["services"].as_mapping().unwrap();
    for name in [
        "postgres",
        "redis",
        "jaeger",
        "prometheus",
        "grafana",
        "api",
        "balancer",
        "worker",
        "listener",
        "seed",
    ] {
        assert!(services.contains_key(name), "compose lacks the {name} service");
    }
    let defaults = Settings::from_vars(&[]).unwrap();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let Some(command) = service["command"].as_sequence().and_then(|c| c.first()).and_then(|c| c.as_str())
        else {
            continue;
        };
        if !command.starts_with("pricing-") {
            continue;
        }
        assert!(
            binaries.iter().any(|b| b == command),
            "{name} runs {command}, which the workspace does not build"
        );
        let env = service["environment"].as_mapping().unwrap_or_else(|| panic!("{name} has no environment"));
        for key in env.keys().map(|k| k.as_str().unwrap()) {
            assert!(
                ENV_VARS.contains(&key) || OTEL_VARS.contains(&key),
                "{name} passes {key}, which nothing reads"
            );
        }
        assert!(service.get("container_name").is_none(), "{name} must stay scalable: no container_name");
        if name != "seed" {
            assert!(service["healthcheck"].is_mapping(), "{name} has no healthcheck");
        }
    }
    let env = compose["x-app-env"].as_mapping().unwrap();
    let port_of = |key: &str| env[key].as_str().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
    assert_eq!(port_of("API_ADDR"), defaults.api_addr.port());
    assert_eq!(port_of("WORKER_ADDR"), defaults.worker_addr.port());
    assert_eq!(port_of("LISTENER_ADDR"), defaults.listener_addr.port());
    // The balancer publishes the api's port and finds every replica by name; the api publishes none, so
    // `--scale api=3` works, and believes X-Forwarded-For from the balancer's fixed address only.
    let api_port = defaults.api_addr.port();
    assert!(services["api"].get("ports").is_none(), "a published api port forbids --scale api=3");
    assert_eq!(services["api"]["expose"][0].as_str(), Some(api_port.to_string().as_str()));
    let balancer = &services["balancer"];
    let balancer_ports = balancer["ports"].as_sequence().unwrap();
    assert!(balancer_ports.iter().any(|p| p.as_str() == Some(&format!("{api_port}:{api_port}"))));
    assert!(repo_file("deploy/haproxy.cfg").contains(&format!(" api:{api_port} ")), "upstreams by name");
    let balancer_addr = balancer["networks"]["default"]["ipv4_address"].as_str().unwrap();
    let trusted = env["TRUSTED_PROXIES"].as_str().unwrap();
    assert!(trusted.contains(&format!(":-{balancer_addr}}}")), "TRUSTED_PROXIES is the balancer: {trusted}");
    let depends = services["api"]["depends_on"].as_mapping().unwrap();
    assert_eq!(depends["postgres"]["condition"], "service_healthy");

    let dockerfile = repo_file("Dockerfile");
    for binary in &binaries {
        assert!(dockerfile.contains(&format!("-p {binary}")), "the Dockerfile does not build {binary}");
        assert!(
            dockerfile.contains(&format!("target/release/{binary}")),
            "the Dockerfile does not ship {binary}"
        );
    }

    let prometheus: serde_norway::Value =
        serde_norway::from_str(&repo_file("deploy/prometheus.yml")).unwrap();
    let targets: Vec<(String, u16)> = prometheus["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| job["dns_sd_configs"].as_sequence().unwrap().iter())
        .map(|sd| (sd["names"][0].as_str().unwrap().to_string(), sd["port"].as_u64().unwrap() as u16))
        .collect();
    let expected = [
        ("api".to_string(), defaults.api_addr.port()),
        ("worker".to_string(), defaults.worker_addr.port()),
        ("listener".to_string(), defaults.listener_addr.port()),
    ];
    assert_eq!(targets, expected, "Prometheus scrapes each binary where it serves /metrics");

    if std::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let checked = std::process::Command::new("docker")
            .args(["compose", "config", "-q"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .status()
            .unwrap();
        assert!(checked.success(), "docker compose config -q rejects docker-compose.yml");
    }
}

/// The compose stack's `secrets` service, run with `sh` as Docker would (its `$$` unescaped, its volume a
/// temporary directory): it writes each secret once, and every `*_FILE` the services read names one of them.
#[test]
fn the_compose_secrets_service_writes_each_secret_once_for_every_replica() {
    let mut compose: serde_norway::Value = serde_norway::from_str(&repo_file("docker-compose.yml")).unwrap();
    compose.apply_merge().expect("YAML merge keys resolve");
    let service = &compose["services"]["secrets"];
    let mount = "/run/pricing-secrets";
    assert_eq!(service["volumes"][0].as_str(), Some(format!("secrets:{mount}").as_str()));
    let dir = std::env::temp_dir().join(format!("compose-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let script =
        service["entrypoint"][2].as_str().unwrap().replace("$$", "$").replace(mount, dir.to_str().unwrap());
    let run = || std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let names = ["admin_token", "quote_signing_key", "jwt_hs256_secret"];
    let written: Vec<String> = names.iter().map(|n| read(n)).collect();
    for secret in &written {
        assert_eq!(secret.len(), 64, "32 random bytes in hex");
        assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));
    }
    assert!(run().status.success());
    assert_eq!(names.iter().map(|n| read(n)).collect::<Vec<_>>(), written, "kept on the next start");

    for service_name in ["api", "worker", "listener", "seed"] {
        let service = &compose["services"][service_name];
        let volumes = service["volumes"].as_sequence().unwrap();
        assert!(volumes.iter().any(|v| v.as_str() == Some(&format!("secrets:{mount}:ro"))), "{service_name}");
        assert_eq!(service["depends_on"]["secrets"]["condition"], "service_completed_successfully");
    }
    let env = compose["x-app-env"].as_mapping().unwrap();
    for (var, file) in [
        ("ADMIN_TOKEN_FILE", names[0]),
        ("QUOTE_SIGNING_KEY_FILE", names[1]),
        ("JWT_HS256_SECRET_FILE", names[2]),
    ] {
        assert_eq!(env[var].as_str().unwrap(), format!("${{{var}:-{mount}/{file}}}"), "{var}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
