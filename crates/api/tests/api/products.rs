//! Writing the catalogue: admin-only writes, creating, partial updates, deletes and input validation.
//! Reads, listing and the cached read: `products_reads.rs`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp, ADMIN_TOKEN};

pub(super) async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("a JSON body")
}

async fn product_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM products").fetch_one(&app.db).await.unwrap()
}

/// Sends `raw` as a JSON body with the admin token.
async fn admin_raw(app: &TestApp, method: Method, path: &str, raw: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(raw.to_string())
        .send()
        .await
        .unwrap()
}

/// Asserts a 422 whose detail mentions `field`.
pub(super) async fn assert_invalid(res: reqwest::Response, field: &str, case: &str) {
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{case}");
    let body = body(res).await;
    let detail = body["detail"].as_str().unwrap_or_else(|| panic!("{case}: {body}"));
    assert!(detail.contains(field), "{case}: detail {detail:?} should name {field:?}");
}

#[tokio::test]
async fn creating_a_product_returns_201_with_a_generated_sku() {
    let app = spawn_app().await;
    let res = app
        .admin(
            Method::POST,
            "/api/v1/products",
            Some(&json!({ "name": "  Desk Lamp ", "price": 99.99, "stock": 7 })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let product = body(res).await;
    assert!(product["id"].as_i64().unwrap() > 0);
    assert_eq!(product["name"], "Desk Lamp", "the name is trimmed");
    assert_eq!(product["category"], "general");
    assert_eq!(product["stock"], 7);
    assert_eq!(product["version"], 1);
    assert!(product["created_at"].is_string());
    assert!(product["updated_at"].is_string());
    // Money is a JSON number, exact to the cent.
    assert!(product["price"].is_number(), "price {}", product["price"]);
    assert_eq!(product["price"], json!(99.99));
    let sku = product["sku"].as_str().unwrap();
    assert!(sku.starts_with("SKU-") && sku.len() > 4, "generated sku {sku}");

    // It is stored, with the same values.
    let (stored_sku, price): (String, String) =
        sqlx::query_as("SELECT sku, price::text FROM products WHERE id = $1")
            .bind(product["id"].as_i64().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored_sku, sku);
    assert_eq!(price, "99.99");

    // A second product gets another sku.
    let other = app.create_product("Chair", 10.0, 1).await;
    assert_ne!(other["sku"], product["sku"]);
}

#[tokio::test]
async fn a_given_sku_is_kept_and_a_duplicate_sku_is_409() {
    let app = spawn_app().await;
    let new = json!({ "sku": "LAMP-1", "name": "Lamp", "category": "home", "price": 12.5, "stock": 3 });
    let res = app.admin(Method::POST, "/api/v1/products", Some(&new)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let product = body(res).await;
    assert_eq!(product["sku"], "LAMP-1");
    assert_eq!(product["category"], "home");
    assert_eq!(product["price"], json!(12.5));

    let again = json!({ "sku": "LAMP-1", "name": "Another lamp", "price": 1.0, "stock": 1 });
    let res = app.admin(Method::POST, "/api/v1/products", Some(&again)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let detail = body(res).await["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("LAMP-1"), "{detail}");
    assert_eq!(product_count(&app).await, 1);
}

#[tokio::test]
async fn writes_without_a_valid_token_are_401_and_with_a_shoppers_403() {
    let app = spawn_app().await;
    let product = app.create_product("Kept", 5.0, 5).await;
    let id = product["id"].as_i64().unwrap();
    let new = json!({ "name": "Sneaky", "price": 1.0, "stock": 1 });

    let res = app.post("/api/v1/products", &new).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(body(res).await["detail"].as_str().unwrap().contains("Bearer"));

    let res = app
        .client
        .post(app.url("/api/v1/products"))
        .bearer_auth("not-the-token")
        .json(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    assert!(body(res).await["detail"].is_string());
    let res = app.post_as(&app.shopper_token("s1", false), "/api/v1/products", &new).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "a shopper's token is not the admin's");

    // A non-bearer scheme is not a token this api reads.
    let res = app
        .client
        .post(app.url("/api/v1/products"))
        .basic_auth("admin", Some(ADMIN_TOKEN))
        .json(&new)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    let path = format!("/api/v1/products/{id}");
    let res = app.client.put(app.url(&path)).json(&json!({ "price": 1.0 })).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.client.delete(app.url(&path)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Nothing changed.
    assert_eq!(product_count(&app).await, 1);
    let now = body(app.get(&path).await).await;
    assert_eq!(now, product);
}

#[tokio::test]
async fn a_partial_update_changes_only_the_given_fields() {
    let app = spawn_app().await;
    let product = app.create_product("Kettle", 30.0, 4).await;
    let id = product["id"].as_i64().unwrap();
    let path = format!("/api/v1/products/{id}");

    let res = app.admin(Method::PUT, &path, Some(&json!({ "price": 27.49 }))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let updated = body(res).await;
    assert_eq!(updated["price"], json!(27.49));
    assert_eq!(updated["name"], "Kettle");
    assert_eq!(updated["stock"], 4);
    assert_eq!(updated["category"], product["category"]);
    assert_eq!(updated["sku"], product["sku"]);
    assert_eq!(updated["created_at"], product["created_at"]);
    assert_eq!(updated["version"], 2);

    let res = app
        .admin(
            Method::PUT,
            &path,
            Some(&json!({ "name": "Steel kettle", "stock": 0, "category": "kitchen" })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let updated = body(res).await;
    assert_eq!(updated["name"], "Steel kettle");
    assert_eq!(updated["stock"], 0);
    assert_eq!(updated["category"], "kitchen");
    assert_eq!(updated["price"], json!(27.49), "price left as it was");

    // What GET returns is what PUT returned.
    assert_eq!(body(app.get(&path).await).await, updated);

    let res = app
        .admin(Method::PUT, &format!("/api/v1/products/{}", id + 1000), Some(&json!({ "price": 1.0 })))
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_invalid_update_changes_nothing() {
    let app = spawn_app().await;
    let product = app.create_product("Vase", 15.0, 3).await;
    let path = format!("/api/v1/products/{}", product["id"]);
    for (update, field) in [
        (json!({ "price": -1.0 }), "price"),
        (json!({ "price": 0 }), "price"),
        (json!({ "price": 1.005 }), "price"),
        (json!({ "stock": -1 }), "stock"),
        (json!({ "name": "" }), "name"),
        (json!({ "name": "x".repeat(256) }), "name"),
        (json!({ "stock": "5" }), "stock"),
        (json!({ "sku": "NEW-SKU" }), "sku"),
        // A valid field next to an invalid one is not applied either.
        (json!({ "stock": 50, "price": -2 }), "price"),
    ] {
        let res = app.admin(Method::PUT, &path, Some(&update)).await;
        assert_invalid(res, field, &update.to_string()).await;
    }
    assert_eq!(body(app.get(&path).await).await, product);
}

#[tokio::test]
async fn deleting_a_product_is_204_then_404() {
    let app = spawn_app().await;
    let product = app.create_product("Old stock", 3.0, 1).await;
    let keep = app.create_product("Keep", 3.0, 1).await;
    let path = format!("/api/v1/products/{}", product["id"]);

    let res = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get(&format!("{path}/cached")).await.status(), StatusCode::NOT_FOUND);
    let res = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Only that one went.
    assert_eq!(product_count(&app).await, 1);
    let keep_path = format!("/api/v1/products/{}", keep["id"]);
    assert_eq!(app.get(&keep_path).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_product_with_orders_cannot_be_deleted() {
    let app = spawn_app().await;
    let product = app.create_product("Ordered", 8.0, 5).await;
    let id = product["id"].as_i64().unwrap();
    assert_eq!(app.order(id, 2).await.status(), StatusCode::CREATED);

    let path = format!("/api/v1/products/{id}");
    let res = app.admin(Method::DELETE, &path, None).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let detail = body(res).await["detail"].as_str().unwrap().to_string();
    assert!(detail.contains(&id.to_string()), "{detail}");

    let res = app.get(&path).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["stock"], 3);
    let res = app.get(&format!("{path}/cached")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["stock"], 3);
}

#[tokio::test]
async fn invalid_products_are_422_naming_the_field_and_change_nothing() {
    let app = spawn_app().await;
    app.create_product("Existing", 1.0, 1).await;
    let before = product_count(&app).await;

    let base = || json!({ "name": "Widget", "price": 9.99, "stock": 5 });
    let with = |field: &str, value: Value| {
        let mut body = base();
        body[field] = value;
        body
    };
    let cases = [
        ("negative price", with("price", json!(-5.0)), "price"),
        ("zero price", with("price", json!(0)), "price"),
        ("price with 3 decimals", with("price", json!(9.999)), "price"),
        ("price too large", with("price", json!(1e11)), "price"),
        ("price as a string", with("price", json!("abc")), "price"),
        ("negative stock", with("stock", json!(-1)), "stock"),
        ("stock as a string", with("stock", json!("5")), "stock"),
        ("fractional stock", with("stock", json!(1.5)), "stock"),
        ("empty name", with("name", json!("")), "name"),
        ("blank name", with("name", json!("   ")), "name"),
        ("256-char name", with("name", json!("n".repeat(256))), "name"),
        ("missing price", json!({ "name": "Widget", "stock": 5 }), "price"),
        ("bad sku", with("sku", json!("has space")), "sku"),
        ("empty category", with("category", json!("")), "category"),
        ("unknown field", with("colour", json!("red")), "colour"),
    ];
    for (case, product, field) in cases {
        let res = app.admin(Method::POST, "/api/v1/products", Some(&product)).await;
        assert_invalid(res, field, case).await;
    }

    let res = admin_raw(&app, Method::POST, "/api/v1/products", r#"{"name": "Widget", "price": 9.99,"#).await;
    assert_invalid(res, "Malformed JSON", "malformed JSON").await;

    let res = app
        .client
        .post(app.url("/api/v1/products"))
        .bearer_auth(ADMIN_TOKEN)
        .body(base().to_string())
        .send()
        .await
        .unwrap();
    assert_invalid(res, "Content-Type", "no content type").await;

    assert_eq!(product_count(&app).await, before);

    // The limits themselves are accepted: a 255-char name, two decimals, zero stock.
    let res = app
        .admin(
            Method::POST,
            "/api/v1/products",
            Some(&json!({ "name": "n".repeat(255), "price": 0.01, "stock": 0 })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let product = body(res).await;
    assert_eq!(product["price"], json!(0.01));
    assert_eq!(product["stock"], 0);
}
