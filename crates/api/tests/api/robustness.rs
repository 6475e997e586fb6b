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
    "/api/v1/products?search=%00",
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
    let res = app.get("/api/v1/health").await;
    assert_eq!(res.status(), 200, "the api still answers");
}
