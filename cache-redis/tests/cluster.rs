//! Both Redis engines on a real Redis Cluster (3 masters, 1 replica each): the whole kit, keys
//! spread over the masters or co-located, and namespaced clears that touch every master and
//! nothing else.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use cache_core::{Bytes, CacheEngine, Ttl};
#[cfg(feature = "tokio")]
use cache_redis::AsyncRedisEngine;
use cache_redis::RedisEngine;
use cache_tests::TestContext;
use cache_tests::topologies::{RedisCluster, redis_cli_at};

fn cluster(ctx: &TestContext) -> RedisEngine {
    let cluster = RedisCluster::shared().expect("checked by `require`");
    RedisEngine::builder()
        .url(cluster.url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .unwrap()
}

#[cfg(feature = "tokio")]
fn async_cluster(ctx: &TestContext) -> AsyncRedisEngine {
    let cluster = RedisCluster::shared().expect("checked by `require`");
    RedisEngine::async_builder()
        .url(cluster.url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .unwrap()
}

cache_tests::conformance_suite!(
    cluster_kit,
    cluster,
    require = RedisCluster::shared().is_some()
);
#[cfg(feature = "tokio")]
cache_tests::async_conformance_suite!(
    async_cluster_kit,
    async_cluster,
    require = RedisCluster::shared().is_some()
);

/// How many keys matching `pattern` each master holds.
fn keys_per_master(cluster: &RedisCluster, pattern: &str) -> Vec<usize> {
    cluster
        .masters()
        .iter()
        .map(|(address, _)| {
            redis_cli_at(address, &["--scan", "--pattern", pattern])
                .unwrap()
                .lines()
                .count()
        })
        .collect()
}

fn namespace(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

#[test]
fn a_namespace_spreads_over_every_master() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let ns = namespace("spread");
    let engine = RedisEngine::builder()
        .url(cluster.url())
        .namespace(&ns)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let entries: Vec<(&str, Bytes)> = keys
        .iter()
        .map(|k| (k.as_str(), Bytes::from(k.clone())))
        .collect();
    engine.set_many(&entries, Ttl::Default).unwrap();
    let counts = keys_per_master(&cluster, &format!("{ns}:*"));
    assert_eq!(counts.len(), 3);
    assert_eq!(counts.iter().sum::<usize>(), 300);
    assert!(counts.iter().all(|n| *n > 50), "{counts:?}");
    // Bulk reads across the masters come back in the caller's order.
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let found = engine.get_many(&refs).unwrap();
    for (key, value) in keys.iter().zip(found) {
        assert_eq!(value.as_deref(), Some(key.as_bytes()));
    }
    assert_eq!(engine.delete_many(&refs).unwrap(), 300);
}

#[test]
fn a_colocated_namespace_lives_on_one_master() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let ns = namespace("together");
    let engine = RedisEngine::builder()
        .url(cluster.url())
        .namespace(&ns)
        .colocate_namespace(true)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let entries: Vec<(&str, Bytes)> = keys
        .iter()
        .map(|k| (k.as_str(), Bytes::from(k.clone())))
        .collect();
    engine.set_many(&entries, Ttl::Default).unwrap();
    let mut counts = keys_per_master(&cluster, &format!("{{{ns}}}:*"));
    counts.sort_unstable();
    assert_eq!(counts, vec![0, 0, 100]);
    engine.clear().unwrap();
    assert_eq!(
        keys_per_master(&cluster, &format!("{{{ns}}}:*")),
        vec![0, 0, 0]
    );
    // Without a cluster, or without a namespace, it is refused.
    assert!(
        RedisEngine::builder()
            .url(cluster.url())
            .colocate_namespace(true)
            .build()
            .is_err()
    );
    assert!(
        RedisEngine::builder()
            .namespace("n")
            .colocate_namespace(true)
            .build()
            .is_err()
    );
}

/// A namespaced clear removes the namespace's keys on every master and nothing else: canaries
/// of another namespace and without one, on every master, survive.
#[test]
fn a_namespaced_clear_touches_every_master_and_nothing_else() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let ns = namespace("clear");
    let other = namespace("canary");
    let engine = RedisEngine::builder()
        .url(cluster.url())
        .namespace(&ns)
        .build()
        .unwrap();
    let canaries = RedisEngine::builder()
        .url(cluster.url())
        .namespace(&other)
        .build()
        .unwrap();
    let bare = RedisEngine::builder().url(cluster.url()).build().unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    for key in &keys {
        engine
            .set(key, Bytes::from_static(b"x"), Ttl::Default)
            .unwrap();
        canaries
            .set(key, Bytes::from_static(b"c"), Ttl::Default)
            .unwrap();
    }
    let bare_keys: Vec<String> = (0..30).map(|i| format!("{ns}-bare-{i}")).collect();
    for key in &bare_keys {
        bare.set(key, Bytes::from_static(b"b"), Ttl::Default)
            .unwrap();
    }
    assert!(
        keys_per_master(&cluster, &format!("{other}:*"))
            .iter()
            .all(|n| *n > 0)
    );
    engine.clear().unwrap();
    assert_eq!(keys_per_master(&cluster, &format!("{ns}:*")), vec![0, 0, 0]);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(
        canaries.get_many(&refs).unwrap().iter().flatten().count(),
        200
    );
    let bare_refs: Vec<&str> = bare_keys.iter().map(String::as_str).collect();
    assert_eq!(
        bare.get_many(&bare_refs).unwrap().iter().flatten().count(),
        30
    );
    canaries.clear().unwrap();
    bare.delete_many(&bare_refs).unwrap();
}

/// Counters and `add` on keys of every master, as on one server.
#[test]
fn counters_and_add_on_every_master() {
    let Some(cluster) = RedisCluster::shared() else {
        return;
    };
    let engine = RedisEngine::builder()
        .url(cluster.url())
        .namespace(namespace("atomic"))
        .build()
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for i in 0..250 {
                    engine.increment(&format!("c{}", i % 30), 1).unwrap();
                }
            });
        }
    });
    let total: i64 = (0..30)
        .map(|i| {
            let v = engine.get(&format!("c{i}")).unwrap().unwrap();
            std::str::from_utf8(&v).unwrap().parse::<i64>().unwrap()
        })
        .sum();
    assert_eq!(total, 1000);
    for i in 0..30 {
        assert!(
            engine
                .add(&format!("a{i}"), Bytes::from_static(b"1"), Ttl::Default)
                .unwrap()
        );
        assert!(
            !engine
                .add(&format!("a{i}"), Bytes::from_static(b"2"), Ttl::Default)
                .unwrap()
        );
    }
}

#[test]
fn a_cluster_has_database_zero_only() {
    let err = RedisEngine::builder()
        .url("redis-cluster://127.0.0.1:7000,127.0.0.1:7001/2")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("database 0"), "{err}");
    assert!(
        RedisEngine::builder()
            .cluster(["127.0.0.1:7000", "redis://127.0.0.1:7001"])
            .build()
            .is_ok()
    );
}
