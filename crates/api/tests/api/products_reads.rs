//! Reading the catalogue: listing and paging, search, one product, and the cached read (a miss then a
//! hit, never stale after a write or a sale). Writes and their validation: `products.rs`.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::spawn_app;
use crate::products::{assert_invalid, body};

#[tokio::test]
async fn listing_pages_through_the_catalogue_oldest_first() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for name in ["Red Apple", "Banana", "Green apple", "Cherry", "Pineapple"] {
        ids.push(app.create_product(name, 1.5, 10).await["id"].as_i64().unwrap());
    }

    let page = body(app.get("/api/v1/products?page=1&page_size=2").await).await;
    let keys: Vec<&str> = page.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["items", "page", "page_size", "total", "total_pages"], "{page}");
    assert_eq!(page["total"], 5);
    assert_eq!(page["page"], 1);
    assert_eq!(page["page_size"], 2);
    assert_eq!(page["total_pages"], 3);
    let page_ids = |page: &Value| -> Vec<i64> {
        page["items"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect()
    };
    assert_eq!(page_ids(&page), ids[0..2]);
    assert_eq!(page["items"][0]["price"], json!(1.5));

    let page = body(app.get("/api/v1/products?page=3&page_size=2").await).await;
    assert_eq!(page_ids(&page), ids[4..5]);
    let page = body(app.get("/api/v1/products?page=4&page_size=2").await).await;
    assert!(page_ids(&page).is_empty());
    assert_eq!(page["total"], 5);

    // The defaults: page 1 of 20.
    let page = body(app.get("/api/v1/products").await).await;
    assert_eq!(page_ids(&page), ids);
    assert_eq!(page["page"], 1);
    assert_eq!(page["page_size"], 20);
    assert_eq!(page["total_pages"], 1);

    // A trailing slash is the same resource.
    let res = app.get("/api/v1/products/").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(page_ids(&body(res).await), ids);
}

#[tokio::test]
async fn search_is_a_case_insensitive_name_contains() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for name in ["Red Apple", "Banana", "Green apple", "100% Juice", "Pineapple"] {
        ids.push(app.create_product(name, 2.0, 1).await["id"].as_i64().unwrap());
    }
    let found = |page: Value| -> (i64, Vec<i64>) {
        let items = page["items"].as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
        (page["total"].as_i64().unwrap(), items)
    };

    let page = body(app.get("/api/v1/products?search=APPLE").await).await;
    assert_eq!(found(page), (3, vec![ids[0], ids[2], ids[4]]));

    let page = body(app.get("/api/v1/products?search=apple&page_size=2&page=2").await).await;
    assert_eq!(page["total_pages"], 2);
    assert_eq!(found(page), (3, vec![ids[4]]));

    // LIKE wildcards in the term are literal characters.
    let page = body(app.get("/api/v1/products?search=%25").await).await;
    assert_eq!(found(page), (1, vec![ids[3]]));
    let page = body(app.get("/api/v1/products?search=_").await).await;
    assert_eq!(found(page), (0, vec![]));

    let page = body(app.get("/api/v1/products?search=kiwi").await).await;
    assert_eq!(page["total_pages"], 0);
    assert_eq!(found(page), (0, vec![]));

    // A blank term is no filter.
    let page = body(app.get("/api/v1/products?search=%20").await).await;
    assert_eq!(found(page).0, 5);
}

#[tokio::test]
async fn bad_paging_parameters_are_422() {
    let app = spawn_app().await;
    for (query, field) in [
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page_size=abc", "page_size"),
    ] {
        let res = app.get(&format!("/api/v1/products?{query}")).await;
        assert_invalid(res, field, query).await;
    }
    let res = app.get("/api/v1/products?page_size=100").await;
    assert_eq!(res.status(), StatusCode::OK);
    let long = "a".repeat(256);
    let res = app.get(&format!("/api/v1/products?search={long}")).await;
    assert_invalid(res, "search", "256-character search").await;
}

#[tokio::test]
async fn reading_one_product() {
    let app = spawn_app().await;
    let product = app.create_product("Mug", 4.25, 12).await;
    let id = product["id"].as_i64().unwrap();

    let res = app.get(&format!("/api/v1/products/{id}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, product);

    let res = app.get(&format!("/api/v1/products/{}", id + 1000)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(res).await["detail"], format!("Product {} not found", id + 1000));

    for bad in ["abc", "0", "-3", "1.5"] {
        let res = app.get(&format!("/api/v1/products/{bad}")).await;
        assert_invalid(res, "id", bad).await;
    }
}

#[tokio::test]
async fn the_cached_read_misses_then_hits_and_is_never_stale() {
    let app = spawn_app().await;
    let product = app.create_product("Cached", 10.0, 5).await;
    let id = product["id"].as_i64().unwrap();
    let cached = format!("/api/v1/products/{id}/cached");
    let read = || async {
        let res = app.get(&cached).await;
        assert_eq!(res.status(), StatusCode::OK);
        let hit = res.headers()["x-cache"].to_str().unwrap().to_string();
        (hit, body(res).await)
    };

    let (hit, first) = read().await;
    assert_eq!(hit, "MISS");
    assert_eq!(first, product);
    let (hit, second) = read().await;
    assert_eq!(hit, "HIT");
    assert_eq!(second, product);
    assert_eq!(second["price"], json!(10.0));

    // A price change shows at once.
    let res =
        app.admin(Method::PUT, &format!("/api/v1/products/{id}"), Some(&json!({ "price": 12.34 }))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, now) = read().await;
    assert_eq!(now["price"], json!(12.34));
    assert_eq!(now["stock"], 5);

    // So does a sale...
    let order: Value = body(app.order(id, 2).await).await;
    let (_, now) = read().await;
    assert_eq!(now["stock"], 3);
    assert_eq!(now["price"], json!(12.34));

    // ...and a cancellation giving the stock back.
    let res = app.admin_post(&format!("/api/v1/orders/{}/cancel", order["id"])).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (hit, now) = read().await;
    assert_eq!(hit, "HIT");
    assert_eq!(now["stock"], 5);

    // Whatever the cache holds is the row in PostgreSQL.
    assert_eq!(now, body(app.get(&format!("/api/v1/products/{id}")).await).await);

    let res = app.get(&format!("/api/v1/products/{}/cached", id + 1000)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = app.get("/api/v1/products/abc/cached").await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
