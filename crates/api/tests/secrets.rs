//! No secret value ever leaves a process: the api, the worker and the listener run as processes with known
//! secrets and trace export on, every flow is driven (catalogue writes, quotes and orders as a shopper and as
//! a guest, order reads and cancels with a JWT and with an order token, bad tokens, a market event, a
//! recalculation), and every log line, every exported span, `/metrics` and the API description are searched
//! for each secret.

mod processes;

use std::time::{Duration, Instant};

use processes::{otlp::start_receiver, Stack, JWT_SECRET, QUOTE_KEY, TOKEN};
use serde_json::{json, Value};

#[tokio::test]
async fn no_secret_is_written_to_a_log_a_span_an_error_or_metrics() {
    let (receiver, received) = start_receiver().await;
    let mut stack = Stack::start(
        "secrets",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver),
            ("OTEL_TRACES_SAMPLER", "always_on".into()),
            ("RUST_LOG", "debug,h2=info,hyper=info,tower=info".into()),
        ],
    )
    .await;
    stack.spawn("pricing-worker");
    stack.spawn("pricing-listener");
    let client = reqwest::Client::new();
    let api = stack.api.clone();
    let id = stack.create_product(100).await;
    let shopper = jwt("shopper-1");
    let mut seen: Vec<String> = Vec::new();

    // A shopper quotes and orders with the quote; reads, lists, cancels.
    let quote: Value = client
        .post(format!("{api}/api/v1/price"))
        .bearer_auth(&shopper)
        .json(&json!({ "product_id": id }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order = json!({ "product_id": id, "quantity": 1, "quote_id": quote["quote_id"] });
    let placed = post(&client, &format!("{api}/api/v1/orders"), &shopper, &order).await;
    let order_id = placed["id"].as_i64().expect("an order");
    for path in [format!("/api/v1/orders/{order_id}"), "/api/v1/orders".into()] {
        seen.push(
            client
                .get(format!("{api}{path}"))
                .bearer_auth(&shopper)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    // A guest orders, reads and cancels with the order token.
    let guest: Value = client
        .post(format!("{api}/api/v1/orders"))
        .header("Idempotency-Key", "secret-test-1")
        .json(&json!({ "product_id": id, "quantity": 2 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let order_token = guest["order_access_token"].as_str().expect("a guest's order token").to_string();
    let guest_id = guest["id"].as_i64().unwrap();
    for (method, path) in
        [("GET", format!("/api/v1/orders/{guest_id}")), ("POST", format!("/api/v1/orders/{guest_id}/cancel"))]
    {
        let req = client
            .request(method.parse().unwrap(), format!("{api}{path}"))
            .header("X-Order-Token", &order_token);
        seen.push(req.send().await.unwrap().text().await.unwrap());
    }
    // Refusals: a bad JWT, the admin token one character off, a shopper at an admin route.
    let forged = format!("{shopper}x");
    let near_admin = format!("{}x", &TOKEN[..TOKEN.len() - 1]);
    for token in [&forged, &near_admin] {
        let res =
            client.post(format!("{api}/api/v1/price")).bearer_auth(token).json(&json!({ "product_id": id }));
        seen.push(res.send().await.unwrap().text().await.unwrap());
    }
    seen.push(post(&client, &format!("{api}/api/v1/recalculate"), &shopper, &json!({})).await.to_string());
    // An operator publishes an event and starts a recalculation.
    let event = json!({ "event_type": "competitor_price", "product_ids": [id], "multiplier": 1.1 });
    post(&client, &format!("{api}/api/v1/publish-market-event"), TOKEN, &event).await;
    let task = post(&client, &format!("{api}/api/v1/recalculate"), TOKEN, &json!({})).await;
    let task_id = task["task_id"].as_str().or(task["id"].as_str()).unwrap_or_default().to_string();
    wait_for_worker(&client, &api, &task_id).await;
    for path in ["/metrics", "/openapi.json"] {
        seen.push(client.get(format!("{api}{path}")).send().await.unwrap().text().await.unwrap());
    }

    // Every exported span of every process, once the batches are flushed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let services: Vec<String> = received.lock().unwrap().iter().map(|s| s.service.clone()).collect();
        if ["pricing-api", "pricing-worker", "pricing-listener"]
            .iter()
            .all(|s| services.iter().any(|x| x == s))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spans: Vec<String> = received.lock().unwrap().iter().map(|s| s.raw.clone()).collect();
    assert!(spans.len() > 20, "spans were exported: {}", spans.len());
    let logs: Vec<String> =
        ["pricing-api", "pricing-worker", "pricing-listener"].iter().map(|exe| stack.log(exe)).collect();
    assert!(logs[0].lines().count() > 20, "the api logged at debug");

    // The search reads what it should: the flows above are in the logs and the spans.
    assert!(logs[0].contains("order placed") && logs[1].contains("recalculation"), "the flows were logged");
    assert!(spans.iter().any(|s| s.contains("POST /api/v1/orders")), "the order was traced");
    let database_password_url = stack.database_url.clone();
    let secrets = [
        ("ADMIN_TOKEN", TOKEN),
        ("QUOTE_SIGNING_KEY", QUOTE_KEY),
        ("JWT_HS256_SECRET", JWT_SECRET),
        ("a shopper's JWT", shopper.as_str()),
        ("a shopper's JWT's signature", shopper.rsplit('.').next().unwrap()),
        ("an order token", order_token.as_str()),
        ("the database URL with its password", database_password_url.as_str()),
        ("the database password in a URL", ":postgres@"),
    ];
    for (what, secret) in secrets {
        for (place, texts) in [("a log line", &logs), ("an exported span", &spans), ("a response", &seen)] {
            for text in texts.iter() {
                if let Some(at) = text.find(secret) {
                    let context = &text[at.saturating_sub(200)..(at + secret.len() + 50).min(text.len())];
                    panic!("{what} appears in {place}: ...{context}...");
                }
            }
        }
    }
    stack.signal("pricing-api", "TERM");
    stack.exit_of("pricing-api", Duration::from_secs(30)).await;
}

fn jwt(sub: &str) -> String {
    let claims = pricing_api::auth::ShopperClaims {
        sub: sub.into(),
        exp: jsonwebtoken::get_current_timestamp() + 600,
        nbf: None,
        iss: None,
        aud: None,
        member: true,
        location: None,
        roles: vec![],
    };
    pricing_api::auth::jwt::sign_hs256(JWT_SECRET, &claims).unwrap()
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> Value {
    let res = client.post(url).bearer_auth(token).json(body).send().await.unwrap();
    res.json().await.unwrap_or(Value::Null)
}

/// Polls the task until the worker has finished it (so the worker's spans and logs include it).
async fn wait_for_worker(client: &reqwest::Client, api: &str, task_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let task: Value = client
            .get(format!("{api}/api/v1/tasks/{task_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if ["succeeded", "skipped", "failed"].contains(&task["status"].as_str().unwrap_or_default()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("recalculation {task_id} did not finish");
}

#[tokio::test]
async fn in_development_missing_secrets_are_generated_and_only_that_is_logged() {
    let unset = |var: &'static str| (var, String::new());
    let stack = Stack::start(
        "devsecrets",
        &[
            ("APP_ENV", "development".into()),
            unset("ADMIN_TOKEN"),
            unset("QUOTE_SIGNING_KEY"),
            unset("JWT_HS256_SECRET"),
        ],
    )
    .await;
    // A quote signs with the generated key, and verifies with it.
    let client = reqwest::Client::new();
    let res = client.post(format!("{}/api/v1/price", stack.api)).json(&json!({ "product_id": 1 })).send();
    assert_eq!(res.await.unwrap().status(), 404, "the api serves");
    let log = stack.log("pricing-api");
    for var in ["ADMIN_TOKEN", "QUOTE_SIGNING_KEY", "JWT_HS256_SECRET"] {
        let line = log.lines().find(|l| l.contains(&format!("{var} is not set: generated"))).expect(var);
        assert!(line.contains(&format!("Set {var} or {var}_FILE")), "{line}");
    }
    // A generated secret is 64 hex digits: no run of them appears anywhere in the log.
    let hex_run = log.as_bytes().windows(64).any(|w| w.iter().all(u8::is_ascii_hexdigit));
    assert!(!hex_run, "a generated secret was logged");
}
