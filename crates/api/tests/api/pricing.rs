//! Price quotes (`POST /api/v1/price`): cache-aside with per-request parts, single-flight, invalidation,
//! and orders that honour quotes.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, wait_until, TestApp};

async fn quote(app: &TestApp, body: Value) -> (u16, Value) {
    let res = app.post("/api/v1/price", &body).await;
    (res.status().as_u16(), res.json().await.unwrap())
}

fn price(v: &Value) -> f64 {
    v["final_price"].as_f64().unwrap()
}

#[tokio::test]
async fn a_miss_then_a_hit_give_the_same_price() {
    let app = spawn_app().await;
    let product = app.create_product("Chair", 80.0, 500).await;
    let body = json!({ "product_id": product["id"], "user_location": "NY" });
    let (status, first) = quote(&app, body.clone()).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["source"], "database");
    let (_, second) = quote(&app, body).await;
    assert_eq!(second["source"], "cache");
    assert_eq!(price(&first), price(&second));
    assert_eq!(price(&first), 88.0, "NY is 1.10 by default");
    for field in [
        "product_id",
        "sku",
        "base_price",
        "discount_rate",
        "currency",
        "breakdown",
        "quote_id",
        "valid_until",
    ] {
        assert!(!first[field].is_null(), "missing {field}");
    }
    assert_eq!(first["base_price"], 80.0);
}

#[tokio::test]
async fn a_members_discount_never_reaches_a_non_member() {
    let app = spawn_app().await;
    let product = app.create_product("Table", 200.0, 500).await;
    let id = product["id"].clone();
    let member_token = app.shopper_token("m1", true);
    let member = app
        .post_as(&member_token, "/api/v1/price", &json!({ "product_id": id }))
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(member["from_token"], json!(["user_id", "is_prime_member"]));
    // A guest's claim to membership in the body grants nothing; the answer says so.
    let (_, guest) = quote(&app, json!({ "product_id": id, "is_prime_member": true })).await;
    assert_eq!(guest["is_prime_member"], false);
    assert_eq!(guest["from_token"], json!([]));
    assert_eq!(guest["source"], "cache", "the second request is served from the cached state");
    assert_eq!(price(&member), 190.0);
    assert_eq!(price(&guest), 200.0);
    assert_eq!(member["discount_rate"], 0.05);
    assert_eq!(guest["discount_rate"], 0.0);
}

#[tokio::test]
async fn location_changes_the_price_and_products_can_be_named_by_sku() {
    let app = spawn_app().await;
    let product = app.create_product("Rug", 100.0, 500).await;
    let (_, ny) = quote(&app, json!({ "product_id": product["sku"], "user_location": "NY" })).await;
    let (_, tx) = quote(&app, json!({ "product_id": product["id"], "user_location": "TX" })).await;
    let (_, default) = quote(&app, json!({ "product_id": product["id"] })).await;
    assert_eq!(price(&ny), 110.0);
    assert_eq!(price(&tx), 97.0);
    assert_eq!(price(&default), 100.0);
    assert_eq!(default["user_location"], "US");
}

#[tokio::test]
async fn unknown_products_are_404_and_bad_input_422() {
    let app = spawn_app().await;
    let (status, body) = quote(&app, json!({ "product_id": 999_999 })).await;
    assert_eq!(status, 404);
    assert!(body["detail"].as_str().unwrap().contains("999999"));
    let (status, _) = quote(&app, json!({ "product_id": "NO-SUCH-SKU" })).await;
    assert_eq!(status, 404);
    for bad in
        [json!({}), json!({ "product_id": true }), json!({ "product_id": 1, "is_prime_member": "yes" })]
    {
        let (status, body) = quote(&app, bad.clone()).await;
        assert_eq!(status, 422, "{bad}");
        assert!(body["detail"].is_string());
    }
}

#[tokio::test]
async fn a_corrupt_cache_entry_counts_as_a_miss_and_is_overwritten() {
    let app = spawn_app().await;
    let product = app.create_product("Vase", 30.0, 500).await;
    let id = product["id"].as_i64().unwrap();
    let key = app.cache.keys.price(id);
    let mut conn = app.cache.conn().await.unwrap();
    for garbage in ["not json at all", "1|{\"old\":\"format\"}", "|"] {
        let _: () = redis::cmd("SET").arg(&key).arg(garbage).query_async(&mut conn).await.unwrap();
        let (status, body) = quote(&app, json!({ "product_id": id })).await;
        assert_eq!(status, 200, "{garbage}: {body}");
        assert_eq!(body["source"], "database");
        assert_eq!(price(&body), 30.0);
        let (_, again) = quote(&app, json!({ "product_id": id })).await;
        assert_eq!(again["source"], "cache", "the corrupt entry was replaced");
    }
}

#[tokio::test]
async fn concurrent_first_requests_compute_once() {
    let app = spawn_app().await;
    let product = app.create_product("Popular", 10.0, 500).await;
    let id = product["id"].as_i64().unwrap();
    let before = app.pricing.computations();
    let results: Vec<(u16, Value)> = futures::stream::iter(0..200)
        .map(|i| quote(&app, json!({ "product_id": id, "is_prime_member": i % 2 == 0 })))
        .buffer_unordered(200)
        .collect()
        .await;
    assert!(results.iter().all(|(s, _)| *s == 200));
    assert_eq!(app.pricing.computations() - before, 1, "200 simultaneous misses, one computation");
    let members: Vec<f64> =
        results.iter().filter(|(_, b)| b["is_prime_member"] == true).map(|(_, b)| price(b)).collect();
    assert!(members.iter().all(|p| *p == 9.5));
}

#[tokio::test]
async fn a_product_update_shows_in_the_next_quote() {
    let app = spawn_app().await;
    let product = app.create_product("Clock", 50.0, 500).await;
    let id = product["id"].as_i64().unwrap();
    let (_, before) = quote(&app, json!({ "product_id": id })).await;
    assert_eq!(price(&before), 50.0);
    let res = app
        .admin(reqwest::Method::PUT, &format!("/api/v1/products/{id}"), Some(&json!({ "price": 60.0 })))
        .await;
    assert_eq!(res.status(), 200);
    let (_, after) = quote(&app, json!({ "product_id": id })).await;
    assert_eq!(price(&after), 60.0);
}

#[tokio::test]
async fn an_order_moves_the_price_through_scarcity_and_demand() {
    let app = spawn_app_with(|s| {
        s.scarcity_threshold = 50;
        s.demand_saturation_orders = 4;
    })
    .await;
    let product = app.create_product("Scarce", 100.0, 60).await;
    let id = product["id"].as_i64().unwrap();
    let (_, before) = quote(&app, json!({ "product_id": id })).await;
    assert_eq!(price(&before), 100.0);
    // 20 units sold in one order: stock 40 (scarcity 1.04) and one order of 4 (demand 1.0625).
    assert_eq!(app.order(id, 20).await.status(), 201);
    let (_, after) = quote(&app, json!({ "product_id": id })).await;
    assert_eq!(after["source"], "database", "the order invalidated the cached state");
    assert_eq!(price(&after), 110.5, "{after}");
}

#[tokio::test]
async fn an_order_with_a_valid_quote_pays_the_quoted_price() {
    let app = spawn_app().await;
    let product = app.create_product("Quoted", 100.0, 500).await;
    let id = product["id"].as_i64().unwrap();
    // A first quote fills the cache; the second is a hit, stored in the same round trip as the read.
    quote(&app, json!({ "product_id": id })).await;
    let (_, q) = quote(&app, json!({ "product_id": id, "user_location": "NY", "user_id": "u1" })).await;
    assert_eq!(q["source"], "cache");
    assert_eq!(price(&q), 110.0);
    // The base price rises after the quote; the customer still pays what they were shown.
    app.admin(reqwest::Method::PUT, &format!("/api/v1/products/{id}"), Some(&json!({ "price": 150.0 })))
        .await;
    let res = app
        .post(
            "/api/v1/orders",
            &json!({ "user_id": "u1", "items": [{ "product_id": id, "quantity": 2, "quote_id": q["quote_id"] }] }),
        )
        .await;
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    assert_eq!(order["items"][0]["unit_price"], 110.0);
    assert_eq!(order["total_price"], 220.0);
}

#[tokio::test]
async fn expired_or_foreign_quotes_are_refused_with_the_current_price() {
    let app = spawn_app_with(|s| s.quote_ttl = Duration::from_secs(1)).await;
    let product = app.create_product("Expiring", 40.0, 500).await;
    let other = app.create_product("Other", 10.0, 500).await;
    let id = product["id"].as_i64().unwrap();
    let (u1, u2) = (app.shopper_token("u1", false), app.shopper_token("u2", false));
    let q =
        app.post_as(&u1, "/api/v1/price", &json!({ "product_id": id })).await.json::<Value>().await.unwrap();
    assert_eq!(q["user_id"], "u1", "bound to the token's sub");
    let quote_id = q["quote_id"].as_str().unwrap().to_string();

    // Someone else's quote (another shopper, or a guest naming u1 in the body), or a quote for another
    // product: 409 with the current price, nothing sold.
    let foreign = json!({ "product_id": id, "quantity": 1, "quote_id": quote_id });
    let res = app.post_as(&u2, "/api/v1/orders", &foreign).await;
    assert_eq!(res.status(), 409);
    let detail = res.json::<Value>().await.unwrap();
    assert!(detail["detail"].as_str().unwrap().contains("another shopper"), "{detail}");
    assert_eq!(detail["current_price"], 40.0);
    let as_guest = json!({ "user_id": "u1", "product_id": id, "quantity": 1, "quote_id": quote_id });
    assert_eq!(app.post("/api/v1/orders", &as_guest).await.status(), 409);
    let wrong_product = json!({ "product_id": other["id"], "quantity": 1, "quote_id": quote_id });
    assert_eq!(app.post_as(&u1, "/api/v1/orders", &wrong_product).await.status(), 409);

    wait_until(Duration::from_secs(5), "the quote to expire", || {
        let expired = app.pricing.verified_quote(&quote_id).is_none();
        async move { expired }
    })
    .await;
    let res = app
        .post_as(&u1, "/api/v1/orders", &json!({ "product_id": id, "quantity": 1, "quote_id": quote_id }))
        .await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["current_price"], 40.0);
    assert!(body["detail"].as_str().unwrap().contains("expired"), "{body}");
    assert_eq!(app.stock_of(id).await, 500, "a refused order changes nothing");
}

#[tokio::test]
async fn the_latest_market_signal_applies_product_over_category() {
    let app = spawn_app().await;
    let book = app.create_product("Novel", 20.0, 500).await;
    let id = book["id"].as_i64().unwrap();
    let category = book["category"].as_str().unwrap().to_string();
    let (_, plain) = quote(&app, json!({ "product_id": id })).await;
    assert_eq!(price(&plain), 20.0, "no signal: market 1.0");

    pricing_core::db::market::set_multiplier(
        &app.db,
        &format!("category:{category}"),
        rust_decimal::Decimal::new(15, 1),
        "test",
    )
    .await
    .unwrap();
    let other = app.create_product("Atlas", 10.0, 500).await;
    let (_, by_category) = quote(&app, json!({ "product_id": other["id"] })).await;
    assert_eq!(price(&by_category), 15.0, "the category's signal");

    pricing_core::db::market::set_multiplier(
        &app.db,
        &format!("product:{}", other["id"]),
        rust_decimal::Decimal::new(12, 1),
        "test",
    )
    .await
    .unwrap();
    // A product update invalidates the cached state; the product's own signal wins over its category's.
    app.admin(
        reqwest::Method::PUT,
        &format!("/api/v1/products/{}", other["id"]),
        Some(&json!({ "stock": 400 })),
    )
    .await;
    let (_, by_product) = quote(&app, json!({ "product_id": other["id"] })).await;
    assert_eq!(price(&by_product), 12.0);
    let market =
        by_product["breakdown"].as_array().unwrap().iter().find(|a| a["name"] == "market").unwrap().clone();
    assert_eq!(market["multiplier"], 1.2);
}

/// A quote is a signed token: quoting writes nothing to Redis, an altered token is refused, and a token is
/// honoured by every api process sharing the key (and by none other).
#[tokio::test]
async fn a_quote_is_a_signed_token_any_api_with_the_key_honours() {
    let key = |s: &mut pricing_core::Settings| {
        s.secrets.quote_signing_keys = vec!["shared-test-key-of-at-least-32-bytes".into()]
    };
    let app = spawn_app_with(key).await;
    let id = app.create_product("Tokened", 20.0, 500).await["id"].as_i64().unwrap();
    quote(&app, json!({ "product_id": id })).await; // the pricing state is cached from here on
    let keys_before = app.redis_keys().await;
    let mut tokens = vec![];
    for _ in 0..20 {
        let (status, q) = quote(&app, json!({ "product_id": id, "user_id": "u1" })).await;
        assert_eq!(status, 200);
        assert_eq!(q["source"], "cache");
        tokens.push(q["quote_id"].as_str().unwrap().to_string());
    }
    assert_eq!(keys_before, app.redis_keys().await, "a quote on a cache hit wrote to Redis");

    // Altered: one character of the claims changed. Refused with the current price; nothing sold.
    let token = &tokens[0];
    let at = token.find('.').unwrap() + 12;
    let flipped = if &token[at..at + 1] == "A" { "B" } else { "A" };
    let altered = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
    let order =
        |quote_id: &str| json!({ "user_id": "u1", "product_id": id, "quantity": 1, "quote_id": quote_id });
    let res = app.post("/api/v1/orders", &order(&altered)).await;
    assert_eq!(res.status(), 409);
    assert_eq!(res.json::<Value>().await.unwrap()["current_price"], 20.0);
    assert_eq!(app.stock_of(id).await, 500);

    // Another api process with the same key honours it; one with another key does not.
    let twin = spawn_app_with(|s| {
        key(s);
        s.database_url = app.settings.database_url.clone();
        s.redis_key_prefix = app.settings.redis_key_prefix.clone();
    })
    .await;
    assert_eq!(twin.post("/api/v1/orders", &order(&tokens[1])).await.status(), 201);
    let stranger = spawn_app_with(|s| {
        s.secrets.quote_signing_keys = vec!["another-key-of-at-least-32-bytes-long".into()];
        s.database_url = app.settings.database_url.clone();
        s.redis_key_prefix = app.settings.redis_key_prefix.clone();
    })
    .await;
    assert_eq!(stranger.post("/api/v1/orders", &order(&tokens[2])).await.status(), 409);
    assert_eq!(app.stock_of(id).await, 499);
}
