//! Who may see and change what: shoppers' tokens verified (HS256 secret, RS256/ES256 from a JWKS file with
//! several keys), each order reached only by its owner, an admin or its order token, membership only from
//! the token, and a bad token always a 401 that says why.

use std::time::Duration;

use jsonwebtoken::{jwk::JwkSet, Algorithm, EncodingKey, Header};
use pricing_api::auth::ShopperClaims;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{shopper_token, spawn_app, spawn_app_with, TestApp, JWT_SECRET};

fn claims(sub: &str) -> ShopperClaims {
    ShopperClaims {
        sub: sub.into(),
        exp: jsonwebtoken::get_current_timestamp() + 600,
        nbf: None,
        iss: None,
        aud: None,
        member: false,
        location: None,
        roles: vec![],
    }
}

fn hs256(claims: &ShopperClaims, secret: &str) -> String {
    pricing_api::auth::jwt::sign_hs256(secret, claims).unwrap()
}

async fn body(res: reqwest::Response) -> Value {
    res.json().await.unwrap()
}

async fn get_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.client.get(app.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn each_order_is_reached_only_by_its_owner_an_admin_or_its_order_token() {
    let app = spawn_app().await;
    let product = app.create_product("Lamp", 10.0, 100).await["id"].as_i64().unwrap();
    let (alice, bob) = (shopper_token("alice", false), shopper_token("bob", false));
    let order = body(app.post_as(&alice, "/api/v1/orders", &json!({ "product_id": product })).await).await;
    let id = order["id"].as_i64().unwrap();
    assert_eq!(order["user_id"], "alice");
    assert_eq!(order["guest"], false);
    assert!(order.get("order_access_token").is_none(), "a shopper's order needs no token");
    let mut guest = body(app.order(product, 1).await).await;
    let guest_id = guest["id"].as_i64().unwrap();
    let guest_token = guest["order_access_token"].take();
    let guest_token = guest_token.as_str().expect("a guest's order comes with its token");

    for path in [format!("/api/v1/orders/{id}"), format!("/api/v1/orders/{id}/status")] {
        assert_eq!(app.get_as(&alice, &path).await.status(), StatusCode::OK, "owner: {path}");
        assert_eq!(app.admin_get(&path).await.status(), StatusCode::OK, "admin: {path}");
        for (who, res) in [
            ("another shopper", app.get_as(&bob, &path).await),
            ("a guest", app.get(&path).await),
            ("another order's token", get_with(&app, &path, &[("X-Order-Token", guest_token)]).await),
        ] {
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{who}: {path}");
            assert_eq!(body(res).await["detail"], format!("Order {id} not found"), "as if it did not exist");
        }
    }
    let guest_path = format!("/api/v1/orders/{guest_id}");
    assert_eq!(get_with(&app, &guest_path, &[("X-Order-Token", guest_token)]).await.status(), StatusCode::OK);
    assert_eq!(app.get(&guest_path).await.status(), StatusCode::NOT_FOUND, "no token");
    let wrong = get_with(&app, &guest_path, &[("X-Order-Token", "not-the-token")]).await;
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get_as(&alice, &guest_path).await.status(), StatusCode::NOT_FOUND);

    // Cancelling follows the same rule, and a refused cancel changes nothing.
    let cancel = format!("/api/v1/orders/{id}/cancel");
    assert_eq!(app.post_as(&bob, &cancel, &json!({})).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.post(&cancel, &json!({})).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.order_status(id).await, "pending");
    assert_eq!(app.post_as(&alice, &cancel, &json!({})).await.status(), StatusCode::OK);
    let guest_cancel = app
        .client
        .post(app.url(&format!("{guest_path}/cancel")))
        .header("X-Order-Token", guest_token)
        .send()
        .await
        .unwrap();
    assert_eq!(guest_cancel.status(), StatusCode::OK);
    assert_eq!(app.stock_of(product).await, 100, "both cancelled, stock back");
}

#[tokio::test]
async fn a_shopper_lists_their_own_orders_an_admin_all_and_a_guest_none() {
    let app = spawn_app().await;
    let product = app.create_product("Mug", 3.0, 100).await["id"].as_i64().unwrap();
    let (alice, bob) = (shopper_token("alice", false), shopper_token("bob", false));
    for token in [&alice, &alice, &bob] {
        app.post_as(token, "/api/v1/orders", &json!({ "product_id": product })).await;
    }
    app.order(product, 1).await;

    let page = body(app.get_as(&alice, "/api/v1/orders").await).await;
    assert_eq!(page["total"], 2);
    assert!(page["items"].as_array().unwrap().iter().all(|o| o["user_id"] == "alice"), "{page}");
    // A shopper's `user_id` filter cannot reach someone else's orders.
    let page = body(app.get_as(&alice, "/api/v1/orders?user_id=bob").await).await;
    assert_eq!(page["total"], 2, "still alice's own");
    let page = body(app.get_as(&bob, "/api/v1/orders?status=pending").await).await;
    assert_eq!(page["total"], 1);

    let all = body(app.admin_get("/api/v1/orders").await).await;
    assert_eq!(all["total"], 4);
    let bobs = body(app.admin_get("/api/v1/orders?user_id=bob").await).await;
    assert_eq!(bobs["total"], 1);
    assert_eq!(bobs["items"][0]["user_id"], "bob");

    let res = app.get("/api/v1/orders").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(app.get("/orders").await.status(), StatusCode::UNAUTHORIZED, "the older path too");
}

#[tokio::test]
async fn bad_tokens_are_401_saying_why_and_never_a_guest() {
    let app = spawn_app_with(|s| {
        s.secrets.jwt_issuer = Some("https://id.example".into());
        s.secrets.jwt_audience = Some("pricing".into());
        s.secrets.jwt_leeway = Duration::from_secs(0);
    })
    .await;
    let product = app.create_product("Desk", 100.0, 10).await["id"].as_i64().unwrap();
    let good = || ShopperClaims {
        iss: Some("https://id.example".into()),
        aud: Some("pricing".into()),
        ..claims("s1")
    };
    let now = jsonwebtoken::get_current_timestamp();
    let cases = [
        ("expired", hs256(&ShopperClaims { exp: now - 60, ..good() }, JWT_SECRET)),
        ("not valid yet", hs256(&ShopperClaims { nbf: Some(now + 600), ..good() }, JWT_SECRET)),
        ("another audience", hs256(&ShopperClaims { aud: Some("elsewhere".into()), ..good() }, JWT_SECRET)),
        ("another issuer", hs256(&ShopperClaims { iss: Some("https://evil".into()), ..good() }, JWT_SECRET)),
        ("signature", hs256(&good(), "another-secret-of-at-least-32-bytes-long")),
        ("not a JWT", "garbage".to_string()),
    ];
    for (why, token) in cases {
        let res = app.post_as(&token, "/api/v1/price", &json!({ "product_id": product })).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{why}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer error=\"invalid_token\"", "{why}");
        let detail = body(res).await["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(why), "{why}: {detail}");
        assert!(!detail.contains(&token), "the token is never echoed");
        let res = app.post_as(&token, "/api/v1/orders", &json!({ "product_id": product })).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{why}: no order");
    }
    assert_eq!(app.stock_of(product).await, 10);
    let res =
        app.post_as(&hs256(&good(), JWT_SECRET), "/api/v1/price", &json!({ "product_id": product })).await;
    assert_eq!(res.status(), StatusCode::OK, "the good token passes");
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_by_kid_from_a_jwks_file_with_several_keys() {
    let fixture = |name: &str| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        std::fs::read(path).unwrap()
    };
    let keys = [
        ("rsa-1", Algorithm::RS256, EncodingKey::from_rsa_pem(&fixture("rsa-1.pem")).unwrap()),
        ("rsa-2", Algorithm::RS256, EncodingKey::from_rsa_pem(&fixture("rsa-2.pem")).unwrap()),
        ("ec-1", Algorithm::ES256, EncodingKey::from_ec_pem(&fixture("ec-1.pem")).unwrap()),
    ];
    let mut set = JwkSet { keys: vec![] };
    for (kid, alg, key) in &keys {
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(key, *alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        set.keys.push(jwk);
    }
    let file = std::env::temp_dir().join(format!("jwks-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, serde_json::to_vec(&set).unwrap()).unwrap();
    let app = spawn_app_with(|s| {
        s.secrets.jwt_hs256_secret = None;
        s.secrets.jwt_public_keys_file = Some(file.clone());
    })
    .await;
    let product = app.create_product("Chair", 50.0, 10).await["id"].as_i64().unwrap();
    let sign = |kid: &str, alg: Algorithm, key: &EncodingKey, claims: &ShopperClaims| {
        let header = Header { kid: Some(kid.into()), ..Header::new(alg) };
        jsonwebtoken::encode(&header, claims, key).unwrap()
    };
    for (kid, alg, key) in &keys {
        let token = sign(kid, *alg, key, &ShopperClaims { member: true, ..claims(kid) });
        let quote = body(app.post_as(&token, "/api/v1/price", &json!({ "product_id": product })).await).await;
        assert_eq!(quote["user_id"], *kid, "{kid}: {quote}");
        assert_eq!(quote["is_prime_member"], true, "{kid}");
    }
    // A key signing under another key's kid, an unknown kid, and HS256 (not configured) are refused.
    let (_, _, rsa_1) = &keys[0];
    for (why, token) in [
        ("kid", sign("rsa-2", Algorithm::RS256, rsa_1, &claims("x"))),
        ("kid", sign("rsa-9", Algorithm::RS256, rsa_1, &claims("x"))),
        ("HS256", shopper_token("x", true)),
    ] {
        let res = app.post_as(&token, "/api/v1/price", &json!({ "product_id": product })).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{why}");
        let detail = body(res).await["detail"].as_str().unwrap().to_string();
        assert!(detail.contains(why) || detail.contains("signature"), "{why}: {detail}");
    }
    let _ = std::fs::remove_file(file);
}

#[tokio::test]
async fn membership_and_the_admin_role_come_only_from_a_verified_token() {
    let app = spawn_app().await;
    let product = app.create_product("Sofa", 200.0, 1000).await["id"].as_i64().unwrap();
    // A guest claiming membership in the body pays the guest price, for the quote and for the order.
    let body_claim = json!({ "product_id": product, "is_prime_member": true, "user_id": "member-1" });
    let guest_quote = body(app.post("/api/v1/price", &body_claim).await).await;
    assert_eq!(guest_quote["final_price"], 200.0);
    assert_eq!(guest_quote["user_id"], Value::Null, "a guest's quote");
    let order = body(app.post("/api/v1/orders", &body_claim).await).await;
    assert_eq!(order["total_price"], 200.0, "{order}");
    assert_eq!(order["guest"], true, "the body's user_id is a label");

    // The token's member claim grants it; its location is the default ship-to region, the body's wins.
    let member =
        hs256(&ShopperClaims { member: true, location: Some("NY".into()), ..claims("m1") }, JWT_SECRET);
    let quote = body(app.post_as(&member, "/api/v1/price", &json!({ "product_id": product })).await).await;
    assert_eq!(quote["user_location"], "NY");
    assert_eq!(quote["from_token"], json!(["user_id", "is_prime_member", "user_location"]));
    let chosen = json!({ "product_id": product, "user_location": "TX" });
    let quote = body(app.post_as(&member, "/api/v1/price", &chosen).await).await;
    assert_eq!(quote["user_location"], "TX");
    assert_eq!(quote["from_token"], json!(["user_id", "is_prime_member"]));

    // A token with the admin role may do what the admin token does.
    let admin = hs256(&ShopperClaims { roles: vec!["admin".into()], ..claims("ops-1") }, JWT_SECRET);
    let res = app
        .post_as(&admin, "/api/v1/products", &json!({ "name": "By role", "price": 1.0, "stock": 1 }))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}
