//! The cluster rule, checked: every script call and every pipeline this crate sends touches keys of one
//! slot (on a Redis Cluster anything else fails with `CROSSSLOT`), whatever products, minutes or queues it
//! is given. A new multi-key operation belongs here; a command this test does not know fails it, so the
//! list cannot silently fall behind the code.

use chrono::Utc;
use redis::{cluster_routing::Slot, Cmd, Pipeline};
use rust_decimal::Decimal;

use super::{
    demand, keys::Keys, products::forget_pricing_commands, products::products_changed_calls,
    products::CacheLifetimes, versioned::set_if_newer_calls,
};
use crate::{domain::Product, jobs};

/// Ids across several tag ranges, unsorted, with a repeat.
const IDS: &[i64] = &[1, 99, 100, 7_250, 250, 12_345_678, 101, 99];

fn keys() -> Keys {
    Keys::new("pricing")
}

/// The keys a command names, for the commands this crate pipelines or scripts.
fn keys_of(cmd: &Cmd) -> Vec<Vec<u8>> {
    let args: Vec<Vec<u8>> = cmd
        .args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => bytes.to_vec(),
            _ => b"0".to_vec(), // a cursor: not a key
        })
        .collect();
    let name = String::from_utf8_lossy(&args[0]).to_uppercase();
    match name.as_str() {
        "HMGET" | "HGETALL" | "HLEN" | "HINCRBY" | "EXPIRE" | "LLEN" | "ZCARD" | "GET" | "XADD" => {
            vec![args[1].clone()]
        }
        "UNLINK" | "DEL" | "MGET" => args[1..].to_vec(),
        "PUBLISH" => vec![],
        other => panic!("the slot test does not know {other}: teach `keys_of` where its keys are"),
    }
}

fn assert_one_slot(what: &str, keys: impl IntoIterator<Item = Vec<u8>>) {
    let slots: std::collections::HashSet<Slot> = keys.into_iter().map(Slot::for_key).collect();
    assert!(slots.len() <= 1, "{what} spans {} slots", slots.len());
}

fn assert_pipeline(what: &str, pipe: &Pipeline) {
    assert_one_slot(what, pipe.cmd_iter().flat_map(keys_of));
}

fn product(id: i64) -> Product {
    let now = Utc::now();
    Product {
        id,
        sku: format!("SKU-{id}"),
        name: "p".into(),
        category: "c".into(),
        price: Decimal::ONE,
        stock: 1,
        version: 1,
        created_at: now,
        updated_at: now,
    }
}

#[test]
fn the_post_sale_script_calls_and_the_sales_count_each_touch_one_slot() {
    let products: Vec<Product> = IDS.iter().map(|id| product(*id)).collect();
    let sold: Vec<(&Product, u32)> = products.iter().map(|p| (p, 2)).collect();
    let lifetimes = CacheLifetimes {
        product_ttl: std::time::Duration::from_secs(1),
        price_ttl: std::time::Duration::from_secs(1),
        demand_window_minutes: 15,
    };
    let calls = products_changed_calls(&keys(), &sold, &lifetimes);
    assert_eq!(calls.len(), 5, "one call per id range (0, 1, 2, 72, 123456)");
    for call in &calls {
        assert_one_slot("a post-sale script call", call.keys.iter().map(|k| k.clone().into_bytes()));
    }
    let counted: Vec<(i64, u32)> = IDS.iter().map(|id| (*id, 1)).collect();
    let pipe = demand::count_sales(&keys(), &counted, 15, 1_000).expect("a sale is counted");
    assert_pipeline("the sales count", &pipe);
}

#[test]
fn demand_reads_touch_one_slot() {
    assert_pipeline("the demand window read", &demand::window_read(&keys(), IDS, 15, 1_000));
    assert_one_slot(
        "the window's buckets",
        demand::window_buckets(&keys(), 60, 1_000).into_iter().map(String::into_bytes),
    );
}

#[test]
fn pricing_drops_and_recalculation_writes_touch_one_slot_per_call() {
    for unlink in forget_pricing_commands(&keys(), IDS) {
        assert_one_slot("an UNLINK of pricing states", keys_of(&unlink));
    }
    let entries: Vec<(String, i64, String)> =
        (0..1_000).map(|id| (keys().price(id * 3), 1, "{}".to_string())).collect();
    let calls = set_if_newer_calls(&entries, || std::time::Duration::from_secs(1));
    assert!(calls.len() >= 30, "3,000 ids in ranges of 100: at least one call per range");
    let written: usize = calls.iter().map(|call| call.keys.len()).sum();
    assert_eq!(written, entries.len(), "every entry is written once");
    for call in &calls {
        assert_one_slot("a recalculation write", call.keys.iter().map(|k| k.clone().into_bytes()));
    }
}

#[test]
fn a_products_keys_share_one_slot() {
    for id in IDS {
        assert_one_slot(
            "a product's row and pricing state",
            [keys().product(*id), keys().price(*id)].map(String::into_bytes),
        );
    }
}

#[test]
fn every_queue_key_shares_the_slot_of_apalis_global_queue_list() {
    for queue in ["process_order", "recalculate_prices"] {
        let config = jobs::queue_config(&keys(), queue, 1);
        let names = [
            config.active_jobs_list(),
            config.scheduled_jobs_set(),
            config.signal_list(),
            config.done_jobs_set(),
            config.dead_jobs_set(),
            config.failed_jobs_set(),
            config.inflight_jobs_set(),
            config.job_data_hash(),
            config.job_meta_hash(),
            config.workers_set(),
            config.idempotency_key_set(),
            // Written by apalis-redis's register_worker.lua beside the queue's own keys.
            "core:apalis:queues:list".to_string(),
        ];
        assert_one_slot("a queue's keys", names.into_iter().map(String::into_bytes));
    }
}

#[test]
fn the_test_knows_when_keys_span_slots() {
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(keys().price(1)).cmd("GET").arg(keys().price(100));
    let spans = std::panic::catch_unwind(|| assert_pipeline("two ranges", &pipe));
    assert!(spans.is_err(), "keys of two ranges are two slots");
}
