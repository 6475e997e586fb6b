//! Bench only (built and started by `bench/run.sh`, not part of the product's image): the least an HTTP endpoint
//! over Redis can do on this machine with the api's own stack (axum 0.8, tokio, one shared multiplexed Redis
//! connection). `GET /p/{id}` does one Redis `GET` of `{prefix}:p:{id}` and returns the bytes; `POST /q` reads a
//! quote-shaped JSON body for its `product_id` and does the same. An api read figure divided by this one says
//! what our own logic costs (validation, pricing, tracing, metrics); this one divided by redis-benchmark's `GET`
//! says what HTTP costs.
//!
//! `bench-ceiling [ADDR]` (default `127.0.0.1:8190`, or `CEILING_ADDR`); `REDIS_URL`, `REDIS_KEY_PREFIX`.
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;

#[derive(Clone)]
struct Ceiling {
    conn: MultiplexedConnection,
    prefix: std::sync::Arc<str>,
}

#[derive(serde::Deserialize)]
struct Quote {
    product_id: i64,
}

async fn read(ceiling: Ceiling, id: i64) -> Response {
    let mut conn = ceiling.conn;
    match conn.get::<_, Option<Vec<u8>>>(format!("{}:p:{id}", ceiling.prefix)).await {
        Ok(Some(bytes)) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn product(State(ceiling): State<Ceiling>, Path(id): Path<i64>) -> Response {
    read(ceiling, id).await
}

async fn quote(State(ceiling): State<Ceiling>, Json(quote): Json<Quote>) -> Response {
    read(ceiling, quote.product_id).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let addr = std::env::args().nth(1).unwrap_or_else(|| env("CEILING_ADDR", "127.0.0.1:8190"));
    let client = redis::Client::open(env("REDIS_URL", "redis://127.0.0.1:6379"))?;
    let conn = client.get_multiplexed_async_connection().await?;
    let state = Ceiling { conn, prefix: env("REDIS_KEY_PREFIX", "bench").into() };
    let app = Router::new().route("/p/{id}", get(product)).route("/q", post(quote)).with_state(state);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bench-ceiling listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
