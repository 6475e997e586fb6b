//! The API description is generated from the handlers, so it lists every route; the `/docs` page renders it
//! in headless Chromium from assets the api serves itself (no internet needed).

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{spawn_app, spawn_app_with};

/// Every operation a client can call, as `METHOD path`.
const OPERATIONS: &[&str] = &[
    "GET /",
    "GET /metrics",
    "GET /api/v1/health",
    "GET /api/v1/health/ready",
    "GET /api/v1/health/cache/stats",
    "GET /api/v1/products",
    "POST /api/v1/products",
    "GET /api/v1/products/{id}",
    "PUT /api/v1/products/{id}",
    "DELETE /api/v1/products/{id}",
    "GET /api/v1/products/{id}/cached",
    "POST /api/v1/price",
    "GET /api/v1/orders",
    "POST /api/v1/orders",
    "GET /api/v1/orders/metrics",
    "GET /api/v1/orders/queue",
    "GET /api/v1/orders/status",
    "GET /api/v1/orders/{id}",
    "GET /api/v1/orders/{id}/status",
    "POST /api/v1/orders/{id}/cancel",
    "POST /api/v1/recalculate",
    "GET /api/v1/tasks/{task_id}",
    "POST /api/v1/publish-market-event",
    "GET /api/v1/market-events",
    "GET /api/v1/market-events/{event_id}",
    "GET /orders",
    "POST /orders",
    "GET /orders/{id}",
    "GET /orders/metrics",
    "GET /orders/status",
];

const ADMIN: &[&str] = &[
    "GET /api/v1/health/cache/stats",
    "POST /api/v1/products",
    "PUT /api/v1/products/{id}",
    "DELETE /api/v1/products/{id}",
    "POST /api/v1/recalculate",
    "POST /api/v1/publish-market-event",
];

/// `(METHOD path, operation)` for every operation of the description.
fn operations(spec: &Value) -> Vec<(String, Value)> {
    let mut all = vec![];
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("responses").is_some() {
                all.push((format!("{} {path}", method.to_uppercase()), op.clone()));
            }
        }
    }
    all
}

#[tokio::test]
async fn the_description_lists_every_operation_with_its_answers() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(spec["openapi"], "3.1.0");
    let ops = operations(&spec);
    let described: HashSet<&str> = ops.iter().map(|(name, _)| name.as_str()).collect();
    for op in OPERATIONS {
        assert!(described.contains(op), "{op} is not described");
    }
    let ids: Vec<&str> =
        ops.iter().map(|(_, op)| op["operationId"].as_str().expect("an operationId")).collect();
    assert_eq!(ids.len(), ids.iter().collect::<HashSet<_>>().len(), "operationIds are unique: {ids:?}");
    for (name, op) in &ops {
        let responses = op["responses"].as_object().unwrap();
        for status in ["422", "503"] {
            assert!(responses.contains_key(status), "{name} lacks {status}");
        }
        if op.get("requestBody").is_some() {
            assert!(responses.contains_key("413"), "{name} lacks 413");
        }
        // Every operation that reads a caller says so: the admin's only the bearer scheme, the order
        // reads bearer or the order's token, the open ones "none, or bearer".
        let admin = ADMIN.contains(&name.as_str());
        let security = op.get("security").map(|s| s.to_string()).unwrap_or_default();
        if admin {
            assert_eq!(security, r#"[{"bearer":[]}]"#, "{name}: security");
            assert!(responses.contains_key("401") && responses.contains_key("403"), "{name}");
        } else if security.contains("bearer") {
            assert!(responses.contains_key("401") && !responses.contains_key("403"), "{name}");
        }
        let reads_an_order = name.contains("/orders/{id}");
        assert_eq!(security.contains("order_token"), reads_an_order, "{name}: {security}");
        if name.ends_with("POST /api/v1/price") || name.ends_with("POST /api/v1/orders") {
            assert_eq!(security, r#"[{},{"bearer":[]}]"#, "{name}: a guest or a shopper");
        }
        if name.ends_with("GET /api/v1/orders") {
            assert_eq!(security, r#"[{"bearer":[]}]"#, "{name}: shoppers and admins only");
        }
    }
    // Money is a number, and errors have one shape.
    let schemas = &spec["components"]["schemas"];
    assert_eq!(schemas["PriceDetail"]["properties"]["final_price"]["type"], "number");
    assert!(schemas["ErrorBody"]["required"].as_array().unwrap().contains(&"detail".into()));
    assert_eq!(spec["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(spec["components"]["securitySchemes"]["order_token"]["name"], "X-Order-Token");
}

#[tokio::test]
async fn the_docs_page_lists_the_operations_in_headless_chromium_offline() {
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let res = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(res.status(), StatusCode::OK, "the page's script is served by the api");

    let profile = std::env::temp_dir().join(format!("chromium-{}", uuid::Uuid::new_v4().simple()));
    // The flags keep Chromium off the network (this machine has none) and let the page's script run.
    let output = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.display()),
            "--virtual-time-budget=15000",
            "--dump-dom",
            &app.url("/docs/"),
        ])
        .output()
        .await
        .expect("chromium is installed (scripts/services.sh installs it)");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    for (name, op) in operations(&spec) {
        let id = op["operationId"].as_str().unwrap();
        assert!(dom.contains(&format!("/{id}\"")), "the page does not list {name} ({id})");
    }
}

/// Every pattern the description states is one of the rules' own constants: a schema attribute must be a
/// literal, so this is what keeps the copies equal to the rule the server applies.
#[tokio::test]
async fn every_pattern_in_the_description_is_a_rule_of_the_code() {
    use pricing_core::{domain, events};
    let app = spawn_app().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    fn patterns(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("pattern", Value::String(p)) => out.push(p.clone()),
                        _ => patterns(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| patterns(i, out)),
            _ => {}
        }
    }
    let mut found = vec![];
    patterns(&spec, &mut found);
    let rules = [
        domain::PRINTABLE_PATTERN,
        domain::PRINTABLE_NONBLANK_PATTERN,
        domain::SKU_PATTERN,
        events::EVENT_ID_PATTERN,
    ];
    let others = ["^[!-~]{1,255}$"];
    for pattern in &found {
        assert!(rules.contains(&pattern.as_str()) || others.contains(&pattern.as_str()), "{pattern}");
    }
    for rule in rules {
        assert!(found.iter().any(|p| p == rule), "{rule} is stated nowhere");
    }
}

/// `MAX_PAGE_SIZE` is configured, and a schema attribute is a literal: the description states the configured
/// maximum on every listing's `page_size` all the same, and it is the bound the server applies.
#[tokio::test]
async fn every_page_size_states_the_configured_maximum() {
    let app = spawn_app_with(|s| s.limits.max_page_size = 37).await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut listings = vec![];
    for (name, op) in operations(&spec) {
        for param in op["parameters"].as_array().into_iter().flatten().filter(|p| p["name"] == "page_size") {
            assert_eq!(param["schema"]["maximum"], 37, "{name}");
            assert_eq!(param["schema"]["minimum"], 1, "{name}");
            assert_eq!(param["description"], "1 to MAX_PAGE_SIZE (37); 20 when absent.", "{name}");
            listings.push(name.clone());
        }
    }
    listings.sort();
    assert_eq!(
        listings,
        ["GET /api/v1/market-events", "GET /api/v1/orders", "GET /api/v1/products", "GET /orders"]
    );

    assert_eq!(app.get("/api/v1/products?page_size=37").await.status(), StatusCode::OK);
    let res = app.get("/api/v1/products?page_size=38").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["detail"], "page_size must be between 1 and 37 (MAX_PAGE_SIZE)");
}
