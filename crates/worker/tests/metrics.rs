//! The worker's own metrics as a fresh process shows them, before it has done anything: alone in this
//! test binary, so no other test's work is in the recorder.

#[path = "../../core/testing/backends.rs"]
mod backends;

use backends::TestBackends;
use pricing_worker::Worker;

/// Dashboards and alerts see a 0 from the start, not a missing series until the first deletion.
#[tokio::test]
async fn the_retention_counters_are_exported_at_zero_from_the_start() {
    let t = TestBackends::connect().await;
    let mut settings = t.settings.clone();
    settings.worker_addr = "127.0.0.1:0".parse().unwrap();
    let _worker = Worker::build(settings).await.unwrap();

    let text = pricing_core::prometheus::render();
    assert!(text.contains("# HELP retention_deleted_total "), "{text}");
    for table in ["idempotency_keys", "market_events", "tasks"] {
        assert!(text.contains(&format!("\nretention_deleted_total{{table=\"{table}\"}} 0\n")), "{text}");
    }
}
