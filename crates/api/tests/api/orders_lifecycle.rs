//! After the sale: reading an order and its status, listing orders, cancelling, the metrics by status
//! and the queue view, and the older service's paths to all of these. Placing orders: `orders.rs`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::spawn_app_at_list_prices as spawn_app;
use crate::orders::{body, create_product_with_sku, id_of};

#[tokio::test]
async fn reading_an_order_and_its_status() {
    let app = spawn_app().await;
    let product = app.create_product("Readable", 4.0, 5).await;
    let mut order = body(app.order(id_of(&product), 2).await).await;
    let id = id_of(&order);
    // A guest's order: its token is in the answer that placed it, and only there.
    let token = order.as_object_mut().unwrap().remove("order_access_token").unwrap();
    let with_token =
        |path: String| app.client.get(app.url(&path)).header("X-Order-Token", token.as_str().unwrap());

    let res = with_token(format!("/api/v1/orders/{id}")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, order);

    let res = with_token(format!("/api/v1/orders/{id}/status")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let status = body(res).await;
    assert_eq!(
        status,
        json!({
            "order_id": id,
            "status": "pending",
            "created_at": order["created_at"],
            "updated_at": order["updated_at"],
        })
    );

    for path in [format!("/api/v1/orders/{}", id + 1000), format!("/api/v1/orders/{}/status", id + 1000)] {
        let res = app.get(&path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body(res).await["detail"], format!("Order {} not found", id + 1000));
    }
    for path in ["/api/v1/orders/abc", "/api/v1/orders/abc/status"] {
        assert_eq!(app.get(path).await.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
    }
}

#[tokio::test]
async fn listing_orders_filters_by_status_and_pages_newest_first() {
    let app = spawn_app().await;
    let product = app.create_product("Listed", 1.0, 100).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(id_of(&body(app.order(id_of(&product), 1).await).await));
    }
    let res = app.admin_post(&format!("/api/v1/orders/{}/cancel", ids[1])).await;
    assert_eq!(res.status(), StatusCode::OK);
    let listed = |page: &Value| -> Vec<i64> { page["items"].as_array().unwrap().iter().map(id_of).collect() };

    let page = body(app.admin_get("/api/v1/orders").await).await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["page"], 1);
    assert_eq!(page["page_size"], 20);
    assert_eq!(page["total_pages"], 1);
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(listed(&page), newest_first);

    let page = body(app.admin_get("/api/v1/orders?page=2&page_size=2").await).await;
    assert_eq!(page["total"], 5);
    assert_eq!(page["total_pages"], 3);
    assert_eq!(listed(&page), newest_first[2..4]);
    assert_eq!(page["items"][0]["items"][0]["product_id"], id_of(&product));

    let page = body(app.admin_get("/api/v1/orders?status=pending").await).await;
    assert_eq!(page["total"], 4);
    assert_eq!(listed(&page), [ids[4], ids[3], ids[2], ids[0]]);
    assert!(page["items"].as_array().unwrap().iter().all(|o| o["status"] == "pending"));

    let page = body(app.admin_get("/api/v1/orders?status=cancelled").await).await;
    assert_eq!(page["total"], 1);
    assert_eq!(listed(&page), [ids[1]]);
    assert_eq!(page["items"][0]["status"], "cancelled");

    let page = body(app.admin_get("/api/v1/orders?status=completed").await).await;
    assert_eq!(page["total"], 0);
    assert_eq!(page["total_pages"], 0);
    assert!(listed(&page).is_empty());

    for query in ["status=shipped", "status=PENDING", "page_size=0", "page_size=101", "page=0"] {
        let res = app.admin_get(&format!("/api/v1/orders?{query}")).await;
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert!(body(res).await["detail"].is_string());
    }
}

#[tokio::test]
async fn cancelling_a_pending_order_gives_its_stock_back_once() {
    let app = spawn_app().await;
    let a = app.create_product("A", 2.0, 10).await;
    let b = app.create_product("B", 3.0, 10).await;
    let (a, b) = (id_of(&a), id_of(&b));
    let order = body(
        app.post(
            "/api/v1/orders",
            &json!({ "items": [{ "product_id": a, "quantity": 3 }, { "product_id": b, "quantity": 4 }] }),
        )
        .await,
    )
    .await;
    let id = id_of(&order);
    assert_eq!(app.stock_of(a).await, 7);
    assert_eq!(app.stock_of(b).await, 6);

    let cancel = format!("/api/v1/orders/{id}/cancel");
    let res = app.admin_post(&cancel).await;
    assert_eq!(res.status(), StatusCode::OK);
    let cancelled = body(res).await;
    assert_eq!(cancelled["id"], id);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(app.stock_of(a).await, 10);
    assert_eq!(app.stock_of(b).await, 10);
    assert_eq!(app.order_status(id).await, "cancelled");

    let res = app.admin_post(&cancel).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(body(res).await["detail"].as_str().unwrap().contains("cancelled"));
    assert_eq!(app.stock_of(a).await, 10, "stock given back only once");
    assert_eq!(app.stock_of(b).await, 10);

    let res = app.admin_post(&format!("/api/v1/orders/{}/cancel", id + 1000)).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(body(res).await["detail"], format!("Order {} not found", id + 1000));
}

#[tokio::test]
async fn a_completed_order_cannot_be_cancelled() {
    let app = spawn_app().await;
    let product = app.create_product("Done", 2.0, 10).await;
    let id = id_of(&body(app.order(id_of(&product), 1).await).await);
    let worker = pricing_worker::Worker::build(app.settings.clone()).await.unwrap();
    assert_eq!(worker.processor().process(id).await.unwrap(), pricing_worker::orders::Outcome::Completed);
    let res = app.admin_post(&format!("/api/v1/orders/{id}/cancel")).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(app.order_status(id).await, "completed");
    assert_eq!(app.stock_of(id_of(&product)).await, 9);
}

#[tokio::test]
async fn metrics_count_orders_by_status() {
    let app = spawn_app().await;
    let product = app.create_product("Counted", 2.0, 10).await;
    let metrics = body(app.get("/api/v1/orders/metrics").await).await;
    assert_eq!(
        metrics,
        json!({
            "average_processing_time_seconds": 0.0,
            "order_status_counts": {
                "pending": 0, "processing": 0, "completed": 0, "failed": 0, "cancelled": 0,
            },
            "total_processed": 0,
        })
    );

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(id_of(&body(app.order(id_of(&product), 1).await).await));
    }
    app.admin_post(&format!("/api/v1/orders/{}/cancel", ids[0])).await;
    let worker = pricing_worker::Worker::build(app.settings.clone()).await.unwrap();
    assert_eq!(worker.processor().process(ids[1]).await.unwrap(), pricing_worker::orders::Outcome::Completed);

    let res = app.get("/api/v1/orders/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    let metrics = body(res).await;
    assert_eq!(
        metrics["order_status_counts"],
        json!({ "pending": 1, "processing": 0, "completed": 1, "failed": 0, "cancelled": 1 })
    );
    assert_eq!(metrics["total_processed"], 1);
    let average = metrics["average_processing_time_seconds"].as_f64().unwrap();
    // At least the simulated fulfilment delay, and far less than the time this test takes.
    assert!(average >= app.settings.order_processing_delay.as_secs_f64() && average < 10.0, "{average}");
}

#[tokio::test]
async fn the_queue_view_shows_the_pending_orders() {
    let app = spawn_app().await;
    let product = app.create_product("Queued", 2.0, 20).await;
    let queue = body(app.get("/api/v1/orders/queue").await).await;
    assert_eq!(queue["queue_length"], 0);
    assert_eq!(queue["pending_orders"], json!([]));
    assert_eq!(queue["total_processed"], 0);

    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(id_of(&body(app.order(id_of(&product), 1).await).await));
    }
    app.admin_post(&format!("/api/v1/orders/{}/cancel", ids[0])).await;

    let res = app.get("/api/v1/orders/queue").await;
    assert_eq!(res.status(), StatusCode::OK);
    let queue = body(res).await;
    assert_eq!(queue["queue_length"], 11);
    // The ten oldest still pending, oldest first.
    assert_eq!(queue["pending_orders"], json!(ids[1..11]));
    assert_eq!(queue["total_processed"], 0);
    assert_eq!(queue["processing"], 0);
    // No worker runs: every wake-up job is still in Redis.
    assert_eq!(queue["redis_queue_depth"], 12);
}

#[tokio::test]
async fn the_older_services_paths_answer() {
    let app = spawn_app().await;
    let product = create_product_with_sku(&app, "P-200", 7.5, 10).await;

    let res = app
        .post("/orders/", &json!({ "user_id": 42, "item_ids": ["P-200", "P-200"], "total_amount": 15.0 }))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "the older clients' numeric user_id is a label");
    let mut order = body(res).await;
    assert_eq!(order["user_id"], "42");
    assert_eq!(order["guest"], true);
    order.as_object_mut().unwrap().remove("order_access_token");
    assert_eq!(order["total_price"], json!(15.0));
    assert_eq!(order["quantity"], 2);
    let id = id_of(&order);
    assert_eq!(app.stock_of(id_of(&product)).await, 8);

    let res = app.admin_get(&format!("/orders/{id}")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, order);

    let res = app.admin_get(&format!("/orders/{id}/status")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["status"], "pending");

    let res = app.get("/orders/metrics").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await["order_status_counts"]["pending"], 1);

    let res = app.get("/orders/status").await;
    assert_eq!(res.status(), StatusCode::OK);
    let queue = body(res).await;
    assert_eq!(queue["queue_length"], 1);
    assert_eq!(queue["pending_orders"], json!([id]));

    let res = app.admin_post(&format!("/orders/{id}/cancel")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.stock_of(id_of(&product)).await, 10);
}
