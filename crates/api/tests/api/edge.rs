//! The edge under abuse, with raw sockets and real clients: silent and slow clients are dropped in time, the
//! connection cap holds while normal clients are served, each client's rate limit answers 429 without
//! touching another's, `X-Forwarded-For` counts only from a trusted proxy, and a saturated process sheds
//! load with 503 at once.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{shopper_token, spawn_app_with, TestApp};
use pricing_core::config::RateLimit;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap()
}

/// How long until the server closes `stream` (reads until EOF or a reset), at most `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue, // a response (a 408, or the answer to a request): keep reading
            Err(_) => return None,
        }
    }
}

async fn served(app: &TestApp) -> bool {
    app.client.get(app.url("/api/v1/health")).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed_in_time_while_others_are_served() {
    let app = spawn_app_with(|s| {
        s.edge.header_read_timeout = Duration::from_millis(500);
        s.edge.keepalive_timeout = Duration::from_secs(1);
    })
    .await;
    // Silent: connects, sends nothing.
    let mut silent = connect(&app).await;
    // Slow: one header line every 200 ms, never the end of the header.
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let dripping = async {
        for i in 0..20 {
            if slow.write_all(format!("X-Drip-{i}: 1\r\n").as_bytes()).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // the drip's pace, not a wait for a condition
        }
    };
    let (_, normal) = tokio::join!(dripping, served(&app));
    assert!(normal, "a normal client is served meanwhile");
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await.is_some(), "the silent one is closed");
    assert!(closed_within(&mut slow, Duration::from_secs(1)).await.is_some(), "the slow one is closed");

    // Idle keep-alive: a whole request answered, then nothing.
    let mut idle = connect(&app).await;
    idle.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let closed =
        closed_within(&mut idle, Duration::from_secs(5)).await.expect("the idle connection is closed");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");
}

#[tokio::test]
async fn past_the_connection_cap_a_connection_is_closed_at_once_and_the_process_keeps_serving() {
    let app = spawn_app_with(|s| {
        s.edge.max_connections = 4;
        s.edge.header_read_timeout = Duration::from_millis(800);
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&app).await);
    }
    // The held connections have their slots once the server accepted them: poll until one more is refused.
    let mut extra = connect(&app).await;
    let refused = closed_within(&mut extra, Duration::from_millis(300)).await;
    assert!(refused.is_some(), "a fifth connection is closed at once");
    // The held ones are silent: their header timeout frees the slots, and normal clients are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !served(&app).await {
        assert!(Instant::now() < deadline, "the process never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("http_connections_refused_total"), "refusals are counted");
}

#[tokio::test]
async fn each_client_has_its_own_rate_limit_answered_with_429_and_retry_after() {
    let app = spawn_app_with(|s| {
        s.edge.orders = RateLimit { per_second: 1, burst: 3 };
        s.edge.reads = RateLimit { per_second: 1, burst: 5 };
    })
    .await;
    let id = app.create_product("Limited", 1.0, 1000).await["id"].as_i64().unwrap();
    let (alice, bob) = (shopper_token("alice", false), shopper_token("bob", false));
    let order = json!({ "product_id": id });
    let statuses: Vec<StatusCode> = join_all((0..8).map(|_| app.post_as(&alice, "/api/v1/orders", &order)))
        .await
        .iter()
        .map(|r| r.status())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 3, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count(), 5, "{statuses:?}");
    let refused = app.post_as(&alice, "/api/v1/orders", &order).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("Too many orders requests"), "{body}");
    assert_eq!(
        app.post_as(&bob, "/api/v1/orders", &order).await.status(),
        StatusCode::CREATED,
        "bob is not alice"
    );
    assert_eq!(app.stock_of(id).await, 996, "only the admitted orders sold");

    // Guests share their address's budget for reads; a shopper's reads are their own.
    let path = format!("/api/v1/products/{id}");
    let reads: Vec<StatusCode> =
        join_all((0..8).map(|_| app.get(&path))).await.iter().map(|r| r.status()).collect();
    assert!(reads.contains(&StatusCode::TOO_MANY_REQUESTS), "{reads:?}");
    assert_eq!(app.get_as(&bob, &format!("/api/v1/products/{id}")).await.status(), StatusCode::OK);
    assert_eq!(app.get("/api/v1/health/ready").await.status(), StatusCode::OK, "probes are never limited");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("http_requests_rate_limited_total{class=\"orders\"}"), "counted by class");
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let limited = |trusted: &'static str| {
        spawn_app_with(move |s| {
            s.edge.reads = RateLimit { per_second: 1, burst: 2 };
            s.edge.trusted_proxies = if trusted.is_empty() { vec![] } else { vec![trusted.parse().unwrap()] };
        })
    };
    let read = |app: &TestApp, client: &str| {
        app.client.get(app.url("/api/v1/products")).header("X-Forwarded-For", client).send()
    };
    // Behind a trusted proxy each forwarded client has its own budget.
    let app = limited("127.0.0.0/8").await;
    for _ in 0..2 {
        assert_ne!(read(&app, "203.0.113.1").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(read(&app, "203.0.113.1").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    assert_ne!(read(&app, "203.0.113.2").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    // A proxy that appends a header line of its own (HTTP allows repeating the header): the client's own
    // line cannot pick the budget, the proxy's line decides.
    let appended = |client_says: &str| {
        app.client
            .get(app.url("/api/v1/products"))
            .header("X-Forwarded-For", client_says)
            .header("X-Forwarded-For", "203.0.113.1")
            .send()
    };
    for forged in ["198.51.100.7", "198.51.100.8"] {
        assert_eq!(appended(forged).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS, "{forged}");
    }
    // From an untrusted peer the header is ignored: a client cannot pick a fresh budget.
    let app = limited("").await;
    for client in ["203.0.113.1", "203.0.113.2"] {
        assert_ne!(read(&app, client).await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(read(&app, "203.0.113.3").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_saturated_process_sheds_load_at_once_with_503_and_retry_after() {
    let app = spawn_app_with(|s| {
        s.edge.max_in_flight = 2;
        s.database_lock_timeout = Duration::from_secs(30);
    })
    .await;
    let id = app.create_product("Held", 1.0, 10).await["id"].as_i64().unwrap();
    let mut locker = sqlx::PgConnection::connect(&app.settings.database_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT id FROM products WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut locker)
        .await
        .unwrap();
    // Two orders wait on the row: the process is full.
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(app.client.post(app.url("/api/v1/orders")).json(&json!({ "product_id": id })).send())
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    let shed = loop {
        let started = Instant::now();
        let res = app.get("/api/v1/health").await;
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            break (res, started.elapsed());
        }
        assert!(Instant::now() < deadline, "the process never shed load");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(shed.1 < Duration::from_millis(500), "shed at once: {:?}", shed.1);
    assert_eq!(shed.0.headers()["retry-after"], "1");
    let body: serde_json::Value = shed.0.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("HTTP_MAX_IN_FLIGHT"), "{body}");
    sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
    for order in waiting {
        order.await.unwrap().unwrap();
    }
    assert!(served(&app).await, "served again once the orders finished");
}
