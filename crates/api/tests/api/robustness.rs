//! No request, however malformed, gets a 500 or takes the api down: garbage thrown at every route gets a
//! 4xx JSON `{"detail"}`, and the api still answers afterwards.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{spawn_app, ADMIN_TOKEN};

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v1/products"),
    ("GET", "/api/v1/products"),
    ("GET", "/api/v1/products/1"),
    ("PUT", "/api/v1/products/1"),
    ("DELETE", "/api/v1/products/1"),
    ("GET", "/api/v1/products/1/cached"),
    ("POST", "/api/v1/price"),
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/orders"),
    ("GET", "/api/v1/orders/1"),
    ("GET", "/api/v1/orders/1/status"),
    ("POST", "/api/v1/orders/1/cancel"),
    ("POST", "/orders/"),
    ("POST", "/api/v1/recalculate"),
    ("GET", "/api/v1/tasks/1"),
];

const BODIES: &[&str] = &[
    "",
    "null",
    "[]",
    "{",
    "\"text\"",
    "{\"product_id\": null}",
    "{\"product_id\": -1, \"quantity\": 1}",
    "{\"product_id\": 1e400}",
    "{\"product_id\": 99999999999999999999999}",
    "{\"product_id\": \"\\u0000\", \"quantity\": 1}",
    "{\"product_id\": 1, \"quantity\": 2147483648}",
    "{\"items\": [{\"product_id\": 1, \"quantity\": 1}], \"user_id\": \"a\\u0000b\"}",
    "{\"name\": \"\\u0000\", \"price\": 1, \"stock\": 1}",
    "{\"name\": \"x\", \"price\": 1e30, \"stock\": 1}",
    "{\"name\": \"x\", \"price\": -0.0, \"stock\": 1}",
    "{\"name\": \"x\", \"price\": \"NaN\", \"stock\": 1}",
    "{\"product_id\": 1, \"user_location\": \"\\u0000\"}",
    "{\"user_id\": \"u\", \"item_ids\": [\"P-100\"], \"total_amount\": 1e400}",
];

const PATHS: &[&str] = &[
    "/api/v1/products/%00",
    "/api/v1/products/99999999999999999999",
    "/api/v1/products/-1/cached",
    "/api/v1/orders?status=%00",
    "/api/v1/orders?page=-5&page_size=abc",
    "/api/v1/products?page=99999999999999999999",
    "/api/v1/tasks/%ff%fe",
    "/api/v1/orders/1/status/extra",
];

#[tokio::test]
async fn garbage_never_gets_a_server_error() {
    let app = spawn_app().await;
    app.create_product("Target", 5.0, 10).await;
    for (method, path) in ROUTES {
        for body in BODIES {
            let res = app
                .client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), app.url(path))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = res.status();
            let text = res.text().await.unwrap();
            assert!(
                status.is_success() || status.is_client_error(),
                "{method} {path} {body:?}: {status} {text}"
            );
            if status.is_client_error() {
                let json: Value =
                    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: {text}"));
                assert!(json["detail"].is_string(), "{method} {path} {body:?}: {text}");
            }
        }
    }
    for path in PATHS {
        let res = app.get(path).await;
        let status = res.status();
        assert!(status.is_client_error(), "GET {path}: {status}");
    }
    // A search no name can match (names with control characters are refused) finds nothing, as the
    // description allows it.
    let res = app.get("/api/v1/products?search=%00").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["total"], 0);
    let res = app.get("/api/v1/health").await;
    assert_eq!(res.status(), 200, "the api still answers");
}

/// The errors that used to escape as plain text, money read as a float, deep pages and deceptive text: each
/// is a JSON `{"detail"}` that names the problem, and changes nothing.
#[tokio::test]
async fn every_refusal_is_json_and_money_is_read_as_written() {
    let app = spawn_app().await;
    let product = app.create_product("Plain", 12.0, 10).await;
    let id = product["id"].as_i64().unwrap();
    let json_detail = |res: reqwest::Response| async move {
        let is_json = res.headers()["content-type"].to_str().unwrap().starts_with("application/json");
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or_default();
        assert!(is_json && body["detail"].is_string(), "{status}: {body}");
        (status, body["detail"].as_str().unwrap().to_string())
    };

    let huge =
        format!("{{\"event_type\": \"competitor_price\", \"category\": \"{}\"}}", "x".repeat(70 * 1024));
    let res = app
        .client
        .post(app.url("/api/v1/publish-market-event"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let (status, detail) = json_detail(res).await;
    assert_eq!((status, detail.contains("MAX_BODY_BYTES")), (413, true), "{detail}");
    for path in ["/api/v1/tasks/%FF", "/api/v1/market-events/%FF"] {
        let (status, detail) = json_detail(app.get(path).await).await;
        assert_eq!(status, 422, "{path}: {detail}");
    }

    // 11.999999999999999999 is not 12.0: refused for its decimals, never rounded through a float.
    let exact = r#"{"product_id": ID, "quantity": 1, "expected_unit_price": 11.999999999999999999}"#;
    let res = app
        .client
        .post(app.url("/api/v1/orders"))
        .header("content-type", "application/json")
        .body(exact.replace("ID", &id.to_string()))
        .send()
        .await
        .unwrap();
    let (status, detail) = json_detail(res).await;
    assert_eq!(status, 422);
    assert!(detail.contains("expected_unit_price must have at most 2 decimal places"), "{detail}");
    let res = app
        .client
        .put(app.url(&format!("/api/v1/products/{id}")))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"price": 0.001}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json_detail(res).await.0, 422);

    let (status, detail) = json_detail(app.get("/api/v1/products?page=1001&page_size=100").await).await;
    assert_eq!(status, 422);
    assert!(detail.contains("page must be between 1 and 1000"), "{detail}");

    // Bidirectional overrides make a name read as something else: refused wherever text is taken.
    let deceptive = "Invoice\u{202E}fdp.exe";
    let res = app
        .admin(
            Method::POST,
            "/api/v1/products",
            Some(&serde_json::json!({ "name": deceptive, "price": 1.0, "stock": 1 })),
        )
        .await;
    assert!(json_detail(res).await.1.contains("bidirectional"));
    let res =
        app.post("/api/v1/orders", &serde_json::json!({ "product_id": id, "user_id": "a\u{2066}b" })).await;
    assert_eq!(json_detail(res).await.0, 422);
    let event = serde_json::json!({ "event_id": "e\u{202A}1", "event_type": "competitor_price", "category": "x", "multiplier": 1.1 });
    let res = app.admin(Method::POST, "/api/v1/publish-market-event", Some(&event)).await;
    assert_eq!(json_detail(res).await.0, 422);
    assert_eq!(app.stock_of(id).await, 10, "nothing was sold");
}
