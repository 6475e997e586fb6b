//! A bug reads as a bug and an outage as an outage: a statement PostgreSQL refuses (a column that is not
//! there) or a constraint no rule maps is a 500 that shows nothing of its cause, so clients do not retry it
//! as if it would pass; PostgreSQL out of reach is a 503 (`limits.rs` provokes the pool timeout, and
//! `redis_outage.rs` Redis down).

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::spawn_app;

async fn assert_internal_error(res: reqwest::Response, hidden: &[&str]) {
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({ "detail": "Internal server error" }), "the cause is not shown");
    let text = body.to_string();
    for word in hidden {
        assert!(!text.contains(word), "{text} shows {word}");
    }
}

#[tokio::test]
async fn a_statement_postgresql_refuses_is_a_500_that_shows_nothing_of_its_cause() {
    let app = spawn_app().await;
    let id = app.create_product("Renamed", 10.0, 5).await["id"].as_i64().unwrap();
    // A schema the code does not expect: a bug of a deployment, never an outage.
    sqlx::query("ALTER TABLE products RENAME COLUMN name TO title").execute(&app.db).await.unwrap();
    assert_internal_error(app.get(&format!("/api/v1/products/{id}")).await, &["column", "name", "42703"])
        .await;
}

#[tokio::test]
async fn a_constraint_no_rule_maps_is_a_500_and_changes_nothing() {
    let app = spawn_app().await;
    let id = app.create_product("Allowed", 10.0, 5).await["id"].as_i64().unwrap();
    sqlx::query("ALTER TABLE products ADD CONSTRAINT no_forbidden_names CHECK (name <> 'Forbidden')")
        .execute(&app.db)
        .await
        .unwrap();
    let change = json!({ "name": "Forbidden" });
    let res = app.admin(reqwest::Method::PUT, &format!("/api/v1/products/{id}"), Some(&change)).await;
    assert_internal_error(res, &["no_forbidden_names", "constraint", "23514"]).await;
    let product: Value = app.get(&format!("/api/v1/products/{id}")).await.json().await.unwrap();
    assert_eq!(product["name"], "Allowed");
}
