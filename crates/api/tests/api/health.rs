//! The index, liveness, readiness (PostgreSQL and Redis), cache statistics, and the JSON 404 and 405.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::helpers::{spawn_app, spawn_app_with, use_single_redis, TestApp};

async fn body(res: reqwest::Response) -> Value {
    res.json().await.expect("a JSON body")
}

#[tokio::test]
async fn the_index_names_the_service() {
    let app = spawn_app().await;
    let res = app.get("/").await;
    assert_eq!(res.status(), StatusCode::OK);
    let index = body(res).await;
    assert_eq!(index["name"], "Pricing Engine");
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(index["openapi"], "/openapi.json");
    assert_eq!(index["docs"], "/docs");
    assert_eq!(index.as_object().unwrap().len(), 4, "only name, version, openapi and docs: {index}");
}

#[tokio::test]
async fn health_is_healthy() {
    let app = spawn_app().await;
    for path in ["/api/v1/health", "/api/v1/health/"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert_eq!(body(res).await, json!({ "status": "healthy" }));
    }
}

#[tokio::test]
async fn ready_when_postgres_and_redis_answer() {
    let app = spawn_app().await;
    let res = app.get("/api/v1/health/ready").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body(res).await, json!({ "status": "ready", "checks": { "postgres": "ok", "redis": "ok" } }));
}

/// A TCP proxy in front of the test's Redis: the api is built through it (`Application::build` needs Redis
/// to answer: it opens the queue's connection eagerly), then `stop` takes Redis away from that api alone,
/// closing every proxied connection and the listening port.
struct RedisProxy {
    url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RedisProxy {
    async fn start(redis_url: &str) -> Self {
        let rest = redis_url.strip_prefix("redis://").expect("a redis:// url");
        let (authority, db) = rest.split_once('/').map_or((rest, None), |(a, d)| (a, Some(d)));
        let (auth, target) =
            authority.rsplit_once('@').map_or((String::new(), authority), |(a, h)| (format!("{a}@"), h));
        let target = target.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = match db {
            Some(db) => format!("redis://{auth}{addr}/{db}"),
            None => format!("redis://{auth}{addr}"),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut connections = JoinSet::new();
                loop {
                    let (mut client, _) = tokio::select! {
                        _ = stop.cancelled() => break,
                        accepted = listener.accept() => accepted.unwrap(),
                    };
                    let target = target.clone();
                    connections.spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
                drop(listener);
                connections.shutdown().await;
            }
        });
        Self { url, stop, task }
    }

    /// Returns once the port is closed and every proxied connection is dropped.
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

/// The api, and the proxy through which it reaches Redis.
async fn spawn_app_behind_redis_proxy() -> (TestApp, RedisProxy) {
    let redis_url = crate::helpers::test_settings().redis_url;
    let proxy = RedisProxy::start(&redis_url).await;
    let url = proxy.url.clone();
    let app = spawn_app_with(move |s| use_single_redis(s, url)).await;
    (app, proxy)
}

#[tokio::test]
async fn not_ready_naming_redis_when_redis_stops_answering() {
    let (app, proxy) = spawn_app_behind_redis_proxy().await;
    let res = app.get("/api/v1/health/ready").await;
    assert_eq!(res.status(), StatusCode::OK, "ready while Redis answers");

    proxy.stop().await;
    let res = app.get("/api/v1/health/ready").await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready = body(res).await;
    assert_eq!(ready["status"], "unavailable");
    assert_eq!(ready["detail"], "Redis not answering");
    assert_eq!(ready["checks"], json!({ "postgres": "ok", "redis": "unavailable" }));
    // Liveness does not depend on Redis.
    let res = app.get("/api/v1/health").await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_cached_read_falls_back_to_postgres_when_redis_stops_answering() {
    let (app, proxy) = spawn_app_behind_redis_proxy().await;
    let product = app.create_product("Fallback", 3.5, 4).await;
    let cached = format!("/api/v1/products/{}/cached", product["id"]);
    assert_eq!(app.get(&cached).await.headers()["x-cache"], "MISS");
    assert_eq!(app.get(&cached).await.headers()["x-cache"], "HIT");

    proxy.stop().await;
    let res = app.get(&cached).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-cache"], "MISS");
    assert_eq!(body(res).await, product);
}

#[tokio::test]
async fn cache_stats_count_this_deployments_hits_and_misses() {
    let app = spawn_app().await;
    assert_eq!(app.get("/api/v1/health/cache/stats").await.status(), StatusCode::UNAUTHORIZED, "admins only");
    let stats = body(app.admin_get("/api/v1/health/cache/stats").await).await;
    assert_eq!(stats["hits"], 0);
    assert_eq!(stats["misses"], 0);
    assert_eq!(stats["hit_rate"], json!(0.0));

    let product = app.create_product("Stat", 1.0, 1).await;
    let cached = format!("/api/v1/products/{}/cached", product["id"]);
    for expected in ["MISS", "HIT", "HIT", "HIT"] {
        let res = app.get(&cached).await;
        assert_eq!(res.headers()["x-cache"], expected);
    }

    let res = app.admin_get("/api/v1/health/cache/stats").await;
    assert_eq!(res.status(), StatusCode::OK);
    let stats = body(res).await;
    let mut keys: Vec<&str> = stats.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "connected_clients",
            "database_keys",
            "hit_rate",
            "hits",
            "key_prefix",
            "misses",
            "used_memory_bytes"
        ]
    );
    assert_eq!(stats["hits"], 3);
    assert_eq!(stats["misses"], 1);
    assert_eq!(stats["hit_rate"], json!(0.75));
    assert_eq!(stats["key_prefix"], app.settings.redis_key_prefix);
    // At least the cached product.
    assert!(stats["database_keys"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["connected_clients"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["used_memory_bytes"].as_u64().unwrap() > 0, "{stats}");
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let app = spawn_app().await;
    for path in ["/nope", "/api/v1/nope", "/api/v1/products/1/nope", "/api/v2/health"] {
        let res = app.get(path).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"), "{path}");
        assert_eq!(body(res).await, json!({ "detail": "Not found" }), "{path}");
    }
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let app = spawn_app().await;
    let requests = [
        (reqwest::Method::DELETE, "/api/v1/health"),
        (reqwest::Method::POST, "/api/v1/orders/metrics"),
        (reqwest::Method::GET, "/api/v1/orders/1/cancel"),
        (reqwest::Method::PATCH, "/api/v1/products/1"),
        (reqwest::Method::PUT, "/orders"),
        (reqwest::Method::POST, "/"),
    ];
    for (method, path) in requests {
        let res = app.client.request(method.clone(), app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            res.headers()["content-type"].to_str().unwrap().starts_with("application/json"),
            "{method} {path}"
        );
        assert_eq!(body(res).await, json!({ "detail": "Method not allowed" }), "{method} {path}");
    }
}
