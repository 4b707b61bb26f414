//! Reads from replicas (`read_from(ReplicaPreferred)`) on a Redis Cluster and through
//! Sentinel, against servers each test starts: reads land on the replicas, writes on the
//! masters, a dead replica leaves reads to the master, and the staleness replication allows
//! is measured (a read right after an acknowledged write: how often it misses the write, and
//! for how long), with a liveness bound only.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, CacheError, Ttl};
use cache_redis::{ReadFrom, RedisEngine};
use cache_tests::servers::{OrSkip, TestServer};
use cache_tests::topologies::{RedisCluster, RedisSentinels};

const KEYS: usize = 200;

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Gets served by each of `servers`, in order.
fn gets<'a>(servers: impl IntoIterator<Item = &'a TestServer>) -> Vec<u64> {
    servers
        .into_iter()
        .map(|s| s.gets_served().unwrap_or(0))
        .collect()
}

/// Reads until every one of `replicas` has served a read: the engine learns of replicas from
/// the sentinels (whose view of a replica's link is refreshed every 10 s) or the cluster
/// (which lists a replica once its master has its replication offset).
fn until_replicas_serve(engine: &RedisEngine, replicas: &[&TestServer]) {
    let before = gets(replicas.iter().copied());
    let started = Instant::now();
    let mut i = 0;
    loop {
        let now = gets(replicas.iter().copied());
        if now.iter().zip(&before).all(|(n, b)| n > b) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "replicas never served reads: {now:?}"
        );
        let _ = engine.get(&format!("warm{}", i % 64));
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Writes `KEYS` keys, then reads them (once replication caught up) with `get`, `get_many`,
/// `exists` and `get_with_ttl`; returns nothing but fails on a wrong answer.
fn write_then_read(engine: &RedisEngine, tag: &str) {
    for i in 0..KEYS {
        engine
            .set(&format!("k{i}"), v(&format!("{tag}{i}")), Ttl::Default)
            .unwrap();
    }
    let started = Instant::now();
    for i in 0..KEYS {
        let key = format!("k{i}");
        let want = v(&format!("{tag}{i}"));
        // Replication is asynchronous: a read may come before the write reached the replica.
        while engine.get(&key).unwrap() != Some(want.clone()) {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{key} never replicated"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(engine.exists(&key).unwrap());
        assert_eq!(
            engine.get_with_ttl(&key).unwrap().map(|(v, _)| v),
            Some(want)
        );
    }
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let found = engine.get_many(&keys).unwrap();
    for (i, value) in found.into_iter().enumerate() {
        assert_eq!(value, Some(v(&format!("{tag}{i}"))), "get_many k{i}");
    }
}

/// Writes and immediately reads one key `rounds` times; for each read that missed the write,
/// how long until the replica had it. Prints the counts and the worst age.
fn staleness(engine: &RedisEngine, what: &str, rounds: usize) -> (usize, Duration) {
    let mut stale = 0;
    let mut worst = Duration::ZERO;
    for round in 0..rounds {
        let key = format!("s{}", round % 16);
        let value = v(&round.to_string());
        engine.set(&key, value.clone(), Ttl::Default).unwrap();
        let written = Instant::now();
        if engine.get(&key).unwrap() == Some(value.clone()) {
            continue;
        }
        stale += 1;
        while engine.get(&key).unwrap() != Some(value.clone()) {
            assert!(
                written.elapsed() < Duration::from_secs(5),
                "{what}: round {round} never replicated"
            );
        }
        worst = worst.max(written.elapsed());
    }
    eprintln!(
        "{what}: {stale} of {rounds} reads right after an acknowledged write missed it; the \
         worst was stale for {worst:?}"
    );
    (stale, worst)
}

#[test]
fn sentinel_reads_go_to_the_replica_and_fall_back_to_the_master() {
    let Some(set) = RedisSentinels::start("replica-reads").or_skip() else {
        return;
    };
    let engine = RedisEngine::builder()
        .sentinels(set.sentinel_addresses(), set.name())
        .namespace("replicas")
        .read_from(ReadFrom::ReplicaPreferred)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    assert!(!engine.capabilities().read_your_writes);
    let [master, replica] = set.servers() else {
        panic!("a master and a replica")
    };
    until_replicas_serve(&engine, &[replica]);
    let before = gets([master, replica]);
    write_then_read(&engine, "a");
    let after = gets([master, replica]);
    let (on_master, on_replica) = (after[0] - before[0], after[1] - before[1]);
    assert!(
        on_replica >= KEYS as u64,
        "reads on the replica: {on_replica}, on the master: {on_master}"
    );
    assert_eq!(on_master, 0, "no read went to the master");
    staleness(&engine, "sentinel replica", 2_000);

    // The replica dies: reads go on, on the master.
    replica.stop();
    let started = Instant::now();
    engine.set("after", v("death"), Ttl::Default).unwrap();
    assert_eq!(engine.get("after").unwrap(), Some(v("death")));
    assert!(started.elapsed() < Duration::from_secs(3));
    for i in 0..20 {
        assert_eq!(
            engine.get(&format!("k{i}")).unwrap(),
            Some(v(&format!("a{i}")))
        );
    }
}

#[test]
fn cluster_reads_go_to_replicas() {
    let Some(cluster) = RedisCluster::start(3, 1).or_skip() else {
        return;
    };
    let engine = RedisEngine::builder()
        .url(cluster.url())
        .namespace("replicas")
        .read_from(ReadFrom::ReplicaPreferred)
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let masters: Vec<String> = cluster.masters().into_iter().map(|(a, _)| a).collect();
    let (on_masters, on_replicas): (Vec<&TestServer>, Vec<&TestServer>) = cluster
        .nodes()
        .iter()
        .partition(|node| masters.contains(&node.address()));
    until_replicas_serve(&engine, &on_replicas);
    let before = (gets(on_masters.clone()), gets(on_replicas.clone()));
    write_then_read(&engine, "c");
    let after = (gets(on_masters), gets(on_replicas));
    let delta =
        |a: &[u64], b: &[u64]| -> Vec<u64> { a.iter().zip(b).map(|(x, y)| x - y).collect() };
    let (masters_served, replicas_served) =
        (delta(&after.0, &before.0), delta(&after.1, &before.1));
    assert!(
        replicas_served.iter().all(|n| *n > 0),
        "every replica serves reads: {replicas_served:?} (masters {masters_served:?})"
    );
    assert_eq!(
        masters_served.iter().sum::<u64>(),
        0,
        "no read went to a master: {masters_served:?}"
    );
    staleness(&engine, "cluster replica", 2_000);
}

#[test]
fn replicas_are_for_clusters_and_sentinels() {
    let err = RedisEngine::builder()
        .url("redis://127.0.0.1:1")
        .read_from(ReadFrom::ReplicaPreferred)
        .build()
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
    let master_reads = RedisEngine::builder()
        .url("redis-cluster://127.0.0.1:1")
        .build()
        .unwrap();
    assert!(master_reads.capabilities().read_your_writes);
}
