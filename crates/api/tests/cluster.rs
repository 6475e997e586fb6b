//! What only a Redis Cluster can show, run by the cluster pass (`scripts/test-cluster.sh`, with
//! `REDIS_CLUSTER_NODES` set): each multi-key operation against real slots on three primaries, the stats
//! summed over every primary, and a cluster node given as `REDIS_URL` refused at start. Without a cluster
//! each test says so and passes: `scripts/test.sh` runs them against one Redis, where they prove nothing.

use std::{path::Path, process::Stdio, time::Duration};

use chrono::Utc;
use pricing_core::{
    cache::{demand, Cache, CacheLifetimes, Lookup, RedisTarget},
    domain::Product,
};
use rust_decimal::Decimal;

fn cluster_nodes() -> Option<Vec<String>> {
    let nodes: Vec<String> = std::env::var("REDIS_CLUSTER_NODES")
        .ok()?
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(String::from)
        .collect();
    if nodes.is_empty() {
        eprintln!("no REDIS_CLUSTER_NODES: this check runs in scripts/test-cluster.sh");
        return None;
    }
    Some(nodes)
}

fn cache(nodes: Vec<String>) -> Cache {
    let prefix = format!("cluster-test:{}", uuid::Uuid::new_v4().simple());
    Cache::connect(&RedisTarget::Cluster(nodes), &prefix, 2).expect("a cluster connection")
}

fn product(id: i64, version: i64) -> Product {
    let now = Utc::now();
    Product {
        id,
        sku: format!("C-{id}"),
        name: "cluster".into(),
        category: "test".into(),
        price: Decimal::new(999, 2),
        stock: 10,
        version,
        created_at: now,
        updated_at: now,
    }
}

/// Ids over many tag ranges, so the keys land on every primary.
fn spread_ids() -> Vec<i64> {
    (0..60).map(|i| i * 137 + 5).collect()
}

#[tokio::test]
async fn every_multi_key_operation_works_on_real_slots() {
    let Some(nodes) = cluster_nodes() else { return };
    let cache = cache(nodes);
    let products: Vec<Product> = spread_ids().into_iter().map(|id| product(id, 3)).collect();
    let sold: Vec<(&Product, u32)> = products.iter().map(|p| (p, 2)).collect();
    let lifetimes = CacheLifetimes {
        product_ttl: Duration::from_secs(60),
        price_ttl: Duration::from_secs(60),
        demand_window_minutes: 5,
    };
    // Best effort by design (it only logs a failure): so read back what it wrote.
    cache.products_changed(&sold, &lifetimes).await;
    for p in &products {
        let row: Lookup<Product> = cache.lookup(&cache.keys.product(p.id)).await.expect("a read");
        assert!(matches!(row, Lookup::Hit(ref r) if r.version == 3), "product {} cached: {row:?}", p.id);
        let keys = [cache.keys.product(p.id), cache.keys.price(p.id)];
        assert_eq!(cache.get_many(&keys).await.expect("MGET of one product").len(), 2);
    }
    let ids: Vec<i64> = products.iter().map(|p| p.id).collect();
    let counted = demand::recent_orders(&cache, &ids, 5).await.expect("the demand window");
    assert!(counted.iter().all(|n| *n == 2), "each product's sale counted: {counted:?}");
    let all = demand::all_recent_orders(&cache, 5, 10_000).await.expect("read whole").expect("small");
    assert_eq!(all.len(), ids.len());

    let entries: Vec<(String, i64, String)> =
        ids.iter().map(|id| (cache.keys.price(*id), 4, "{\"x\":1}".to_string())).collect();
    let written = cache.set_versioned_many(&entries, || Duration::from_secs(60)).await.expect("bulk write");
    assert_eq!(written, ids.len() as u64, "every state written (each newer than the tombstone)");
    cache.forget_pricing(&ids).await.expect("UNLINK across ranges");
    for id in &ids {
        let state: Lookup<serde_json::Value> = cache.lookup(&cache.keys.price(*id)).await.expect("a read");
        assert!(matches!(state, Lookup::Missing), "price {id} dropped: {state:?}");
    }
}

#[tokio::test]
async fn cache_stats_count_the_keys_of_every_primary() {
    let Some(nodes) = cluster_nodes() else { return };
    let cache = cache(nodes.clone());
    let (_, _, before) = cache.server_info().await.expect("stats");
    for id in spread_ids() {
        cache.set_versioned(&cache.keys.product(id), 1, &id, Duration::from_secs(60)).await.expect("a write");
    }
    let (clients, memory, after) = cache.server_info().await.expect("stats");
    assert!(clients > 0 && memory > 0);
    assert!(after >= before + spread_ids().len() as u64, "every key counted: {before} -> {after}");
    let mut conn =
        redis::Client::open(nodes[0].as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let own: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert!(own < after, "one node holds part of the keys ({own} of {after}): the stats see them all");
}

#[tokio::test]
async fn a_cluster_node_given_as_redis_url_is_refused_naming_redis_cluster_nodes() {
    let Some(nodes) = cluster_nodes() else { return };
    let api = env!("CARGO_BIN_EXE_pricing-api");
    for binary in ["pricing-api", "pricing-worker", "pricing-listener"] {
        let path = Path::new(api).with_file_name(binary);
        let run = tokio::process::Command::new(&path)
            .env("REDIS_URL", &nodes[0])
            .env("REDIS_CLUSTER_NODES", "")
            // Refused before PostgreSQL is asked: nothing is created or migrated.
            .env("DATABASE_URL", "postgres://postgres:postgres@127.0.0.1:1/refused")
            .env("APP_ENV", "development")
            .env("API_ADDR", "127.0.0.1:0")
            .env("WORKER_ADDR", "127.0.0.1:0")
            .env("LISTENER_ADDR", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out =
            tokio::time::timeout(Duration::from_secs(60), run).await.expect("it stops").expect("it runs");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{binary} started against a cluster node given as REDIS_URL");
        assert!(said.contains("REDIS_CLUSTER_NODES"), "{binary} names the setting: {said}");
    }
}
