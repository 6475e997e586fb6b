//! One trace across processes, proven with the release-shaped binaries: the api, the worker and the
//! listener run as processes exporting OTLP/HTTP to a receiver in this test, which decodes the protobuf
//! export requests (`opentelemetry-proto`). A market event published with a known `traceparent`, and an
//! order, each arrive as one tree of spans rooted at the caller's span. Logs quieted to `RUST_LOG=warn`
//! still export whole traces (`OTEL_TRACES_FILTER` is the traces' own), with their PostgreSQL spans. Also:
//! no endpoint, no export; a collector that never answers does not slow requests.

mod processes;

use std::{
    net::TcpListener as StdListener,
    time::{Duration, Instant},
};

use processes::{
    otlp::{start_receiver, Received, ReceivedSpan},
    Stack, TOKEN,
};
use serde_json::json;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const ORDER_TRACE: &str = "5bf92f3577b34da6a3ce929d0e0e4737";
const OTHER_ORDER_TRACE: &str = "6bf92f3577b34da6a3ce929d0e0e4738";
const QUIET_TRACE: &str = "7bf92f3577b34da6a3ce929d0e0e4739";

async fn start_stack(otel: &[(&str, String)], with_worker_and_listener: bool) -> Stack {
    let mut stack = Stack::start("trace", otel).await;
    if with_worker_and_listener {
        stack.spawn("pricing-worker");
        stack.spawn("pricing-listener");
    }
    stack
}

/// Waits until the trace has spans from each of `services` and forms one tree under `root_parent` (a
/// parent span is exported when it ends, after its children), then returns them.
async fn trace_of(
    received: &Received,
    trace_id: &str,
    services: &[&str],
    root_parent: &str,
) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<ReceivedSpan> =
            received.lock().unwrap().iter().filter(|s| s.trace_id == trace_id).cloned().collect();
        let complete = spans
            .iter()
            .all(|span| span.parent == root_parent || spans.iter().any(|p| p.span_id == span.parent));
        if complete && services.iter().all(|svc| spans.iter().any(|s| s.service == *svc)) {
            return spans;
        }
        if Instant::now() >= deadline {
            let all: Vec<(String, String, String)> = received
                .lock()
                .unwrap()
                .iter()
                .map(|s| (s.service.clone(), s.name.clone(), s.trace_id.clone()))
                .collect();
            panic!("trace {trace_id} lacks some of {services:?}: {spans:#?}\nALL: {all:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every span's parent is in the trace, or is the caller's span: one tree rooted at the caller.
fn assert_one_tree(spans: &[ReceivedSpan], root_parent: &str) {
    for span in spans {
        let known = span.parent == root_parent || spans.iter().any(|p| p.span_id == span.parent);
        assert!(known, "span {} ({}) has a parent outside the trace: {spans:#?}", span.name, span.service);
    }
    assert!(spans.iter().any(|s| s.parent == root_parent && s.service == "pricing-api"));
}

/// The exported value of `span`'s attribute `key` (as `otlp::receive` prints it), if it has one.
fn attribute<'a>(span: &'a ReceivedSpan, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn an_event_and_an_order_are_each_one_trace_across_the_three_processes() {
    let (receiver, received) = start_receiver().await;
    let stack = start_stack(&[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver)], true).await;
    let client = reqwest::Client::new();
    let id = stack.create_product(100).await;

    let res = client
        .post(format!("{}/api/v1/publish-market-event", stack.api))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .header("x-request-id", "req-traced-1")
        .json(&json!({ "event_type": "competitor_price", "product_ids": [id], "multiplier": 1.2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.headers()["x-request-id"], "req-traced-1", "the client's request id is echoed");
    let spans = trace_of(
        &received,
        CALLER_TRACE,
        &["pricing-api", "pricing-listener", "pricing-worker"],
        CALLER_SPAN,
    )
    .await;
    assert_one_tree(&spans, CALLER_SPAN);
    let server = spans.iter().find(|s| s.parent == CALLER_SPAN).unwrap();
    assert_eq!(server.name, "POST /api/v1/publish-market-event");
    assert!(server.attributes.iter().any(|(k, _)| k == "http.response.status_code"), "{server:?}");
    // The handler's log line carries the request id and the trace id: from a log line to the trace.
    let logs = stack.log("pricing-api");
    let line = logs.lines().find(|l| l.contains("market event published")).expect("the publish is logged");
    assert!(line.contains("req-traced-1") && line.contains(CALLER_TRACE), "{line}");
    let job = spans
        .iter()
        .find(|s| s.service == "pricing-worker" && s.name.starts_with("job "))
        .expect("a job span");
    assert!(job.attributes.iter().any(|(k, _)| k == "queue.wait_ms"), "the queue wait is visible: {job:?}");

    // Orders for one product sent together share a transaction (group commit); each one's job still
    // continues its own request's trace.
    let order = |trace: &str| {
        client
            .post(format!("{}/api/v1/orders", stack.api))
            .header("traceparent", format!("00-{trace}-{CALLER_SPAN}-01"))
            .json(&json!({ "product_id": id, "quantity": 1 }))
            .send()
    };
    let (first, second) = tokio::join!(order(ORDER_TRACE), order(OTHER_ORDER_TRACE));
    assert_eq!(first.unwrap().status(), 201);
    assert_eq!(second.unwrap().status(), 201);
    let other = trace_of(&received, OTHER_ORDER_TRACE, &["pricing-api", "pricing-worker"], CALLER_SPAN).await;
    assert_one_tree(&other, CALLER_SPAN);
    let spans = trace_of(&received, ORDER_TRACE, &["pricing-api", "pricing-worker"], CALLER_SPAN).await;
    assert_one_tree(&spans, CALLER_SPAN);
    // The worker's try of the order is a span, and its fulfilment attempt one inside it.
    let wait = Instant::now() + Duration::from_secs(10);
    let spans = loop {
        let spans: Vec<ReceivedSpan> =
            received.lock().unwrap().iter().filter(|s| s.trace_id == ORDER_TRACE).cloned().collect();
        if spans.iter().any(|s| s.name == "fulfil") || Instant::now() >= wait {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let tried = spans
        .iter()
        .find(|s| s.name == "process order")
        .unwrap_or_else(|| panic!("a span per try of the order: {spans:#?}"));
    assert!(attribute(tried, "order_id").is_some() && attribute(tried, "attempt").is_some(), "{tried:?}");
    let fulfil = spans.iter().find(|s| s.name == "fulfil").expect("a span per fulfilment attempt");
    assert_eq!(fulfil.parent, tried.span_id, "{spans:#?}");
}

/// `RUST_LOG=warn` quiets the logs and thins nothing in the traces: the span filter is
/// `OTEL_TRACES_FILTER` (default `info`). An event published with a caller's `traceparent` is still one
/// whole tree across the three processes, with the api's PostgreSQL spans and their semantic attributes,
/// while no process logs a single INFO line. (The test above keeps `RUST_LOG=info` for its log line.)
#[tokio::test]
async fn with_logs_at_warn_an_event_is_still_one_whole_trace_with_its_database_spans() {
    let (receiver, received) = start_receiver().await;
    let stack =
        start_stack(&[("OTEL_EXPORTER_OTLP_ENDPOINT", receiver), ("RUST_LOG", "warn".into())], true).await;
    let id = stack.create_product(100).await;
    let res = reqwest::Client::new()
        .post(format!("{}/api/v1/publish-market-event", stack.api))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{QUIET_TRACE}-{CALLER_SPAN}-01"))
        .json(&json!({ "event_type": "competitor_price", "product_ids": [id], "multiplier": 1.2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let services = ["pricing-api", "pricing-listener", "pricing-worker"];
    let spans = trace_of(&received, QUIET_TRACE, &services, CALLER_SPAN).await;
    assert_one_tree(&spans, CALLER_SPAN);
    let server = spans.iter().find(|s| s.parent == CALLER_SPAN).unwrap();
    assert_eq!(server.name, "POST /api/v1/publish-market-event");
    assert!(spans.iter().any(|s| s.name == "recalculation attempt"), "{spans:#?}");
    // The event's INSERT: a PostgreSQL client span named by the semantic conventions.
    let insert = spans
        .iter()
        .find(|s| s.service == "pricing-api" && attribute(s, "db.system.name").is_some())
        .unwrap_or_else(|| panic!("a database span of the api's: {spans:#?}"));
    assert!(attribute(insert, "db.system.name").unwrap().contains("\"postgresql\""), "{insert:?}");
    assert!(attribute(insert, "db.operation.name").is_some_and(|v| v.contains("\"INSERT\"")), "{insert:?}");
    assert!(
        attribute(insert, "db.collection.name").is_some_and(|v| v.contains("\"market_events\"")),
        "{insert:?}"
    );
    // The logs really were at `warn` (at `info` each process logs its start, the api every publish).
    for exe in services {
        let log = stack.log(exe);
        let info = log.lines().find(|l| l.contains(r#""level":"INFO""#));
        assert!(info.is_none(), "{exe} logged at INFO with RUST_LOG=warn: {info:?}");
    }
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_a_dead_collector_slows_nothing() {
    // Only the traces-specific variable points at the receiver: without OTEL_EXPORTER_OTLP_ENDPOINT the
    // binaries set up no export at all.
    let (receiver, received) = start_receiver().await;
    let quiet =
        start_stack(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", format!("{receiver}/v1/traces"))], false).await;
    let client = reqwest::Client::new();
    let id = quiet.create_product(100).await;
    for _ in 0..20 {
        client
            .post(format!("{}/api/v1/price", quiet.api))
            .json(&json!({ "product_id": id }))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // several export periods: nothing may arrive
    assert!(received.lock().unwrap().is_empty(), "spans were exported with no endpoint set");
    drop(quiet);

    // A collector that accepts connections and never answers.
    let dead = StdListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = format!("http://{}", dead.local_addr().unwrap());
    let stack = start_stack(&[("OTEL_EXPORTER_OTLP_ENDPOINT", dead_addr)], false).await;
    let id = stack.create_product(100).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..200 {
        let started = Instant::now();
        let res = client
            .post(format!("{}/api/v1/price", stack.api))
            .json(&json!({ "product_id": id }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_millis(500), "a dead collector slowed a request to {slowest:?}");
    // More spans than the export queue holds: the overflow is dropped, and counted.
    use futures::StreamExt;
    let statuses: Vec<u16> = futures::stream::iter(0..3_000)
        .map(|_| {
            let request =
                client.post(format!("{}/api/v1/price", stack.api)).json(&json!({ "product_id": id }));
            async move { request.send().await.map_or(0, |r| r.status().as_u16()) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "every request answered");
    let metrics = client.get(format!("{}/metrics", stack.api)).send().await.unwrap().text().await.unwrap();
    let dropped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("otel_spans_dropped_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("otel_spans_dropped_total is exported");
    assert!(dropped > 0.0, "a full export queue drops spans and counts them: {dropped}");
}
