//! The price a customer sees is the price they pay: product views carry `current_price` (what the default
//! shopper pays now), an order line without a quote pays exactly that, and a client may state the unit
//! price or total it showed: a higher server figure is refused (409, current figures), a lower or equal
//! one is what is charged. One test per rule of `pricing_core::orders`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("a JSON body")
}

/// A product at list price 100 with 10 in stock: below the scarcity threshold (50), so it costs
/// 100 x (1 + 0.20 x 40/50) = 116 to the default shopper.
async fn scarce_product(app: &TestApp) -> i64 {
    app.create_product("Scarce lamp", 100.0, 10).await["id"].as_i64().unwrap()
}

#[tokio::test]
async fn every_product_view_shows_the_price_an_order_then_charges() {
    let app = spawn_app().await;
    let id = scarce_product(&app).await;

    let listed = body(app.get("/api/v1/products").await).await;
    let read = body(app.get(&format!("/api/v1/products/{id}")).await).await;
    let cached_miss = body(app.get(&format!("/api/v1/products/{id}/cached")).await).await;
    let res = app.get(&format!("/api/v1/products/{id}/cached")).await;
    assert_eq!(res.headers()["x-cache"], "HIT");
    let cached_hit = body(res).await;
    for (view, product) in [
        ("list", &listed["items"][0]),
        ("read", &read),
        ("cached miss", &cached_miss),
        ("cached hit", &cached_hit),
    ] {
        assert_eq!(product["price"], json!(100.0), "{view}: the list price stays");
        assert_eq!(product["current_price"], json!(116.0), "{view}: {product}");
    }

    let res = app.order(id, 2).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = body(res).await;
    assert_eq!(order["total_price"], json!(232.0));
    assert_eq!(order["items"][0]["unit_price"], json!(116.0));
    assert_eq!(order["items"][0]["price_source"], "current");

    // The sale changed the stock (and demand): the views move with it, and the order keeps what it paid.
    let after = body(app.get(&format!("/api/v1/products/{id}/cached")).await).await;
    assert_ne!(after["current_price"], json!(116.0), "{after}");
    let stored = body(app.admin_get(&format!("/api/v1/orders/{}", order["id"])).await).await;
    assert_eq!(stored["items"][0]["price_source"], "current");
    assert_eq!(stored["items"][0]["unit_price"], json!(116.0));
}

#[tokio::test]
async fn an_expected_unit_price_below_the_current_price_is_refused_and_sells_nothing() {
    let app = spawn_app().await;
    let id = scarce_product(&app).await;
    let res = app
        .post("/api/v1/orders", &json!({ "product_id": id, "quantity": 1, "expected_unit_price": 100.0 }))
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let error = body(res).await;
    assert_eq!(error["current_price"], json!(116.0), "{error}");
    assert_eq!(error["product_id"], json!(id));
    assert!(error["detail"].as_str().unwrap().contains("116"), "{error}");
    // Both names for the seen total: the lower holds (here below the price: 409 with the current total).
    let both = json!({ "item_ids": [id], "expected_total": 1, "total_amount": 1000 });
    assert_eq!(app.post("/api/v1/orders", &both).await.status(), StatusCode::CONFLICT);
    assert_eq!(app.stock_of(id).await, 10);
}

#[tokio::test]
async fn an_expected_unit_price_at_or_above_the_current_price_is_charged_the_current_price() {
    let app = spawn_app().await;
    let id = scarce_product(&app).await;
    let res = app
        .post("/api/v1/orders", &json!({ "product_id": id, "quantity": 1, "expected_unit_price": 116.0 }))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(body(res).await["total_price"], json!(116.0));
    // Stock 9 now: scarcity 1 + 0.2 x 41/50 = 1.164, and one order in the demand window (+0.25%):
    // the server price is under what the customer saw, and that is what they pay.
    let res = app
        .post(
            "/api/v1/orders",
            &json!({ "items": [{ "product_id": id, "quantity": 1, "expected_unit_price": 150.0 }] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = body(res).await;
    let charged = order["total_price"].as_f64().unwrap();
    assert!(charged > 116.0 && charged < 150.0, "{order}");
}

#[tokio::test]
async fn an_expected_total_is_a_ceiling_not_a_price() {
    let app = spawn_app().await;
    let id = scarce_product(&app).await;
    let res = app
        .post("/api/v1/orders", &json!({ "product_id": id, "quantity": 2, "expected_total": 200.0 }))
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let error = body(res).await;
    assert_eq!(error["current_total"], json!(232.0), "{error}");
    assert_eq!(error["current_items"][0]["unit_price"], json!(116.0), "{error}");
    assert_eq!(app.stock_of(id).await, 10);

    let res = app
        .post("/api/v1/orders", &json!({ "product_id": id, "quantity": 2, "expected_total": 250.0 }))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(body(res).await["total_price"], json!(232.0), "charged the server total, not the ceiling");
}

#[tokio::test]
async fn a_quoted_line_says_so_and_an_unquoted_one_pays_the_current_price_for_its_shopper() {
    let app = spawn_app().await;
    let quoted = app.create_product("Quoted", 50.0, 500).await["id"].as_i64().unwrap();
    let plain = app.create_product("Plain", 20.0, 500).await["id"].as_i64().unwrap();
    let u1 = app.shopper_token("u1", true);
    let q = body(app.post_as(&u1, "/api/v1/price", &json!({ "product_id": quoted })).await).await;
    let res = app
        .post_as(
            &u1,
            "/api/v1/orders",
            &json!({ "user_location": "NY", "items": [
                { "product_id": quoted, "quantity": 1, "quote_id": q["quote_id"] },
                { "product_id": plain, "quantity": 1 },
            ] }),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let order = body(res).await;
    let items = order["items"].as_array().unwrap();
    let line = |id: i64| items.iter().find(|i| i["product_id"] == json!(id)).unwrap();
    assert_eq!(line(quoted)["price_source"], "quote");
    assert_eq!(
        line(quoted)["unit_price"],
        json!(47.5),
        "the quote was for this member, at the default location"
    );
    assert_eq!(line(plain)["price_source"], "current");
    // 20 x 1.10 (NY) x 0.95 (member) = 20.90.
    assert_eq!(line(plain)["unit_price"], json!(20.9), "{order}");
}

#[tokio::test]
async fn bad_expected_prices_are_422() {
    let app = spawn_app().await;
    let id = scarce_product(&app).await;
    let cases = [
        ("negative expected_total", json!({ "product_id": id, "expected_total": -1 }), "expected_total"),
        (
            "zero expected_unit_price",
            json!({ "product_id": id, "expected_unit_price": 0 }),
            "expected_unit_price",
        ),
        (
            "one product, two expected prices",
            json!({ "items": [
                { "product_id": id, "quantity": 1, "expected_unit_price": 120 },
                { "product_id": id, "quantity": 1, "expected_unit_price": 130 },
            ] }),
            "expected_unit_price",
        ),
    ];
    for (case, order, field) in cases {
        let res = app.post("/api/v1/orders", &order).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{case}");
        let detail = body(res).await["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(field), "{case}: {detail}");
    }
    assert_eq!(app.stock_of(id).await, 10);
}
