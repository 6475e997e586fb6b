//! Buying: the three request shapes, totals, stock checks, validation, SKUs. Reading, listing and
//! cancelling orders: `orders_lifecycle.rs`. (Under load: `flash_sale.rs`.)

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_at_list_prices as spawn_app, TestApp};

/// What an order's lines add up to.
fn lines_total(order: &Value) -> f64 {
    order["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["unit_price"].as_f64().unwrap() * i["quantity"].as_f64().unwrap())
        .sum()
}

pub(super) async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("a JSON body")
}

pub(super) fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().expect("an id")
}

async fn order_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders").fetch_one(&app.db).await.unwrap()
}

async fn post_raw(app: &TestApp, path: &str, raw: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(raw.to_string())
        .send()
        .await
        .unwrap()
}

pub(super) async fn create_product_with_sku(app: &TestApp, sku: &str, price: f64, stock: i32) -> Value {
    let res = app
        .admin(
            reqwest::Method::POST,
            "/api/v1/products",
            Some(&json!({ "sku": sku, "name": sku, "price": price, "stock": stock })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    body(res).await
}

#[tokio::test]
async fn a_single_item_order_is_201_and_takes_the_stock() {
    let app = spawn_app().await;
    let product = app.create_product("Headphones", 19.99, 10).await;
    let pid = id_of(&product);

    let res =
        app.post("/api/v1/orders", &json!({ "user_id": "user-1", "product_id": pid, "quantity": 3 })).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = body(res).await;
    for field in [
        "id",
        "user_id",
        "items",
        "product_id",
        "quantity",
        "total_price",
        "status",
        "created_at",
        "updated_at",
    ] {
        assert!(order.get(field).is_some(), "{field} missing from {order}");
    }
    assert!(id_of(&order) > 0);
    assert_eq!(order["user_id"], "user-1");
    assert_eq!(order["product_id"], pid);
    assert_eq!(order["quantity"], 3);
    assert_eq!(order["total_price"], json!(59.97));
    assert_eq!(order["status"], "pending");
    assert_eq!(order["attempts"], 0);
    assert!(order["created_at"].is_string() && order["updated_at"].is_string());
    assert_eq!(
        order["items"],
        json!([{ "product_id": pid, "quantity": 3, "unit_price": 19.99, "price_source": "current" }])
    );
    assert_eq!(app.stock_of(pid).await, 7);

    // Quantity defaults to 1; the user is optional; a SKU names the product as well as an id does.
    let res = app.post("/api/v1/orders", &json!({ "product_id": product["sku"].clone() })).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = body(res).await;
    assert_eq!(order["quantity"], 1);
    assert_eq!(order["product_id"], pid);
    assert_eq!(order["user_id"], Value::Null);
    assert_eq!(order["total_price"], json!(19.99));
    assert_eq!(app.stock_of(pid).await, 6);
}

#[tokio::test]
async fn a_multi_item_order_computes_its_total() {
    let app = spawn_app().await;
    let a = app.create_product("A", 19.99, 10).await;
    let b = app.create_product("B", 5.01, 10).await;
    let (a, b) = (id_of(&a), id_of(&b));

    let res = app
        .post(
            "/api/v1/orders",
            &json!({ "user_id": "u", "items": [
                { "product_id": b, "quantity": 3 },
                { "product_id": a, "quantity": 2 },
            ] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = body(res).await;
    // 2 x 19.99 + 3 x 5.01
    assert_eq!(order["total_price"], json!(55.01));
    assert!((lines_total(&order) - 55.01).abs() < 1e-9);
    assert_eq!(
        order["items"],
        json!([
            { "product_id": a, "quantity": 2, "unit_price": 19.99, "price_source": "current" },
            { "product_id": b, "quantity": 3, "unit_price": 5.01, "price_source": "current" },
        ])
    );
    assert!(order.get("product_id").is_none(), "{order}");
    assert!(order.get("quantity").is_none(), "{order}");
    assert_eq!(app.stock_of(a).await, 8);
    assert_eq!(app.stock_of(b).await, 7);

    // Lines naming the same product are merged.
    let res = app
        .post(
            "/api/v1/orders",
            &json!({ "items": [
                { "product_id": a, "quantity": 1 },
                { "product_id": a, "quantity": 2 },
            ] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = body(res).await;
    assert_eq!(order["quantity"], 3);
    assert_eq!(order["total_price"], json!(59.97));
    assert_eq!(app.stock_of(a).await, 5);

    let stored: String = sqlx::query_scalar("SELECT total_price::text FROM orders WHERE id = $1")
        .bind(id_of(&order))
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, "59.97");
}

#[tokio::test]
async fn with_dynamic_pricing_the_total_is_what_the_lines_add_up_to() {
    // Default pricing: 10 in stock is below the scarcity threshold, so the unit price is not the
    // catalogue price; the total must still be exactly the lines' sum.
    let app = crate::helpers::spawn_app().await;
    let a = id_of(&app.create_product("A", 19.99, 10).await);
    let b = id_of(&app.create_product("B", 5.01, 10).await);
    let res = app
        .post(
            "/api/v1/orders",
            &json!({ "items": [{ "product_id": a, "quantity": 2 }, { "product_id": b, "quantity": 3 }] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = body(res).await;
    let total = order["total_price"].as_f64().unwrap();
    assert!((total - lines_total(&order)).abs() < 1e-9, "{order}");
    assert!(total > 0.0);
    assert_eq!(app.stock_of(a).await, 8);
    assert_eq!(app.stock_of(b).await, 7);
}

#[tokio::test]
async fn the_older_item_ids_form_is_accepted_when_its_total_matches() {
    let app = spawn_app().await;
    let p100 = create_product_with_sku(&app, "P-100", 10.0, 5).await;
    let p101 = create_product_with_sku(&app, "P-101", 2.5, 5).await;

    // P-100 named twice (once by SKU, once by id as a string): 2 x 10.00 + 2.50.
    let res = app
        .post(
            "/api/v1/orders",
            &json!({
                "user_id": "legacy-user",
                "item_ids": ["P-100", "P-101", id_of(&p100).to_string()],
                "total_amount": 22.5,
            }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = body(res).await;
    assert_eq!(order["total_price"], json!(22.5));
    assert_eq!(order["user_id"], "legacy-user");
    assert_eq!(
        order["items"],
        json!([
            { "product_id": id_of(&p100), "quantity": 2, "unit_price": 10.0, "price_source": "current" },
            { "product_id": id_of(&p101), "quantity": 1, "unit_price": 2.5, "price_source": "current" },
        ])
    );
    assert_eq!(app.stock_of(id_of(&p100)).await, 3);
    assert_eq!(app.stock_of(id_of(&p101)).await, 4);
}

#[tokio::test]
async fn the_older_form_is_409_with_the_current_total_when_the_total_differs() {
    let app = spawn_app().await;
    let p100 = create_product_with_sku(&app, "P-100", 10.0, 5).await;
    let p101 = create_product_with_sku(&app, "P-101", 2.5, 5).await;
    let res = app
        .post(
            "/api/v1/orders",
            &json!({ "user_id": "u", "item_ids": ["P-100", "P-101"], "total_amount": 12.0 }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let error = body(res).await;
    assert_eq!(error["current_total"], json!(12.5), "{error}");
    assert!(error["detail"].as_str().unwrap().contains("12.5"), "{error}");

    // Nothing was sold or recorded.
    assert_eq!(app.stock_of(id_of(&p100)).await, 5);
    assert_eq!(app.stock_of(id_of(&p101)).await, 5);
    assert_eq!(order_count(&app).await, 0);

    // The total the server quoted is accepted.
    let res = app
        .post(
            "/api/v1/orders",
            &json!({ "user_id": "u", "item_ids": ["P-100", "P-101"], "total_amount": error["current_total"] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(app.stock_of(id_of(&p100)).await, 4);
}

#[tokio::test]
async fn insufficient_stock_is_400_and_sells_nothing() {
    let app = spawn_app().await;
    let product = app.create_product("Scarce", 3.0, 2).await;
    let pid = id_of(&product);
    let res = app.order(pid, 3).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let error = body(res).await;
    assert_eq!(error["detail"], format!("Insufficient stock for product {pid}. Available: 2, Requested: 3"));
    assert_eq!(app.stock_of(pid).await, 2);

    // In a multi-item order the merged quantity counts, and the other lines are not sold either.
    let other = app.create_product("Plenty", 1.0, 100).await;
    let res = app
        .post(
            "/api/v1/orders",
            &json!({ "items": [
                { "product_id": id_of(&other), "quantity": 5 },
                { "product_id": pid, "quantity": 1 },
                { "product_id": pid, "quantity": 2 },
            ] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        body(res).await["detail"],
        format!("Insufficient stock for product {pid}. Available: 2, Requested: 3")
    );
    assert_eq!(app.stock_of(id_of(&other)).await, 100);
    assert_eq!(app.stock_of(pid).await, 2);
    assert_eq!(order_count(&app).await, 0);

    // Exactly the stock left is fine.
    assert_eq!(app.order(pid, 2).await.status(), StatusCode::CREATED);
    assert_eq!(app.stock_of(pid).await, 0);
}

#[tokio::test]
async fn an_unknown_product_is_404() {
    let app = spawn_app().await;
    let product = app.create_product("Real", 3.0, 5).await;
    let res = app.order(999_999_999, 1).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(res).await["detail"], "Product 999999999 not found");

    let res = app
        .post(
            "/api/v1/orders",
            &json!({ "items": [
                { "product_id": id_of(&product), "quantity": 1 },
                { "product_id": "NO-SUCH-SKU", "quantity": 1 },
            ] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(res).await["detail"], "Product NO-SUCH-SKU not found");
    assert_eq!(app.stock_of(id_of(&product)).await, 5);
    assert_eq!(order_count(&app).await, 0);
}

#[tokio::test]
async fn invalid_orders_are_422_and_change_nothing() {
    let app = spawn_app().await;
    let product = app.create_product("Valid", 3.0, 5).await;
    let pid = id_of(&product);
    let cases = [
        ("quantity 0", json!({ "product_id": pid, "quantity": 0 }), "quantity"),
        ("negative quantity", json!({ "product_id": pid, "quantity": -2 }), "quantity"),
        ("quantity too large", json!({ "product_id": pid, "quantity": 10_001 }), "quantity"),
        ("quantity 0 in items", json!({ "items": [{ "product_id": pid, "quantity": 0 }] }), "quantity"),
        ("no items", json!({ "user_id": "u", "items": [] }), "at least one item"),
        ("no item_ids", json!({ "item_ids": [] }), "at least one item"),
        ("nothing to buy", json!({ "user_id": "u" }), "exactly one of"),
        (
            "product_id and items",
            json!({ "product_id": pid, "quantity": 1, "items": [{ "product_id": pid, "quantity": 1 }] }),
            "exactly one of",
        ),
        (
            "quantity outside product_id",
            json!({ "quantity": 2, "items": [{ "product_id": pid, "quantity": 1 }] }),
            "quantity",
        ),
        ("product id 0", json!({ "product_id": 0 }), "product id"),
        ("quantity as a string", json!({ "product_id": pid, "quantity": "1" }), "quantity"),
        ("empty user_id", json!({ "user_id": " ", "product_id": pid }), "user_id"),
        ("negative total_amount", json!({ "item_ids": [pid], "total_amount": -1 }), "total_amount"),
        ("unknown field", json!({ "product_id": pid, "coupon": "X" }), "coupon"),
    ];
    for (case, order, wanted) in cases {
        let res = app.post("/api/v1/orders", &order).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{case}");
        let detail = body(res).await["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(wanted), "{case}: {detail:?} should say {wanted:?}");
    }
    let res = post_raw(&app, "/api/v1/orders", r#"{"product_id": 1, "quantity": "#).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body(res).await["detail"].as_str().unwrap().starts_with("Malformed JSON"));

    assert_eq!(app.stock_of(pid).await, 5);
    assert_eq!(order_count(&app).await, 0);
}

/// A SKU freed by deleting its product and given to a new one must name the new product, although
/// `PricingService::resolve` caches SKU -> id.
#[tokio::test]
async fn a_sku_reused_after_its_product_was_deleted_names_the_new_product() {
    let app = spawn_app().await;
    let old = create_product_with_sku(&app, "REUSED", 5.0, 10).await;
    // Quoting by SKU resolves (and caches) it, as ordering by SKU does.
    let res = app.post("/api/v1/price", &json!({ "product_id": "REUSED" })).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.admin(reqwest::Method::DELETE, &format!("/api/v1/products/{}", id_of(&old)), None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let new = create_product_with_sku(&app, "REUSED", 6.0, 10).await;

    let res = app.post("/api/v1/orders", &json!({ "item_ids": ["REUSED"] })).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(body(res).await["product_id"], id_of(&new));
    assert_eq!(app.stock_of(id_of(&new)).await, 9);
}
