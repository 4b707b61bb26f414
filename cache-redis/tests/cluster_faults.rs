//! A Redis Cluster under faults, each test on a cluster of its own (3 masters, 1 replica each):
//! a master killed under load, slots moved under load, and a clear without a namespace.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_redis::RedisEngine;
use cache_tests::servers::OrSkip;
use cache_tests::topologies::{RedisCluster, redis_cli_at};

fn own_cluster() -> Option<RedisCluster> {
    RedisCluster::start(3, 1).or_skip()
}

/// What 8 callers saw.
#[derive(Debug, Default)]
struct Load {
    ops: AtomicU64,
    errors: AtomicU64,
    wrong: AtomicU64,
    window: Mutex<Option<(Instant, Instant)>>,
    last_error: Mutex<Option<String>>,
}

impl Load {
    fn error(&self, error: &cache_core::CacheError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut window = self.window.lock().unwrap();
        *window = Some(window.map_or((now, now), |(first, _)| (first, now)));
        *self.last_error.lock().unwrap() = Some(error.to_string());
    }

    fn report(&self, what: &str, since: Instant) -> Duration {
        let window = *self.window.lock().unwrap();
        let lasted = window.map_or(Duration::ZERO, |(first, last)| {
            last.saturating_duration_since(first.max(since).min(last))
        });
        eprintln!(
            "{what}: {} operations, {} errors over {:?} (last: {:?}), {} wrong values",
            self.ops.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            lasted,
            self.last_error.lock().unwrap(),
            self.wrong.load(Ordering::Relaxed)
        );
        lasted
    }
}

/// 8 callers setting and getting keys whose values name them, until `stop`.
fn run_load(engine: &RedisEngine, load: &Load, stop: &AtomicBool) {
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("t{t}-k{}", i % 500);
                    let result = if i % 2 == 0 {
                        engine
                            .set(&key, Bytes::from(format!("{key}={i}")), Ttl::Default)
                            .map(drop)
                    } else {
                        engine.get(&key).map(|found| {
                            if let Some(found) = found {
                                if !found.starts_with(format!("{key}=").as_bytes()) {
                                    load.wrong.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        })
                    };
                    load.ops.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = result {
                        load.error(&e);
                    }
                    i += 1;
                }
            });
        }
    });
}

fn engine(cluster: &RedisCluster) -> RedisEngine {
    RedisEngine::builder()
        .url(cluster.url())
        .namespace("load")
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

/// A master killed (SIGKILL) under load: operations on its slots fail until its replica is
/// promoted (the cluster's node timeout, 1 s here, and an election), then succeed against the
/// replica; no caller ever reads another key's value.
#[test]
fn a_killed_master_fails_over_to_its_replica() {
    let Some(cluster) = own_cluster() else { return };
    let engine = engine(&cluster);
    let (victim, _) = cluster.masters().remove(0);
    let load = Load::default();
    let stop = AtomicBool::new(false);
    let killed_at = Instant::now() + Duration::from_millis(500);
    let failed_over = std::thread::scope(|s| {
        s.spawn(|| run_load(&engine, &load, &stop));
        std::thread::sleep(killed_at.saturating_duration_since(Instant::now()));
        cluster.node(&victim).unwrap().stop();
        // Until the replica serves the slots, plus a while of success.
        let failed_over = cluster.wait_for_failover(&victim, Duration::from_secs(20));
        eprintln!("failed over {:?} after the kill", killed_at.elapsed());
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        failed_over
    });
    assert!(failed_over, "no failover within 20 s");
    let lasted = load.report("master killed", killed_at);
    assert_eq!(load.wrong.load(Ordering::Relaxed), 0);
    assert!(
        load.errors.load(Ordering::Relaxed) > 0,
        "the kill was not noticed"
    );
    assert!(lasted < Duration::from_secs(10), "errors for {lasted:?}");
    // After the failover every key is served again.
    let after = Instant::now();
    for i in 0..200 {
        let key = format!("after-{i}");
        if let Err(e) = engine.set(&key, Bytes::from(key.clone()), Ttl::Default) {
            panic!(
                "{e}: {:?}",
                std::error::Error::source(&e).map(ToString::to_string)
            );
        }
        assert_eq!(engine.get(&key).unwrap().as_deref(), Some(key.as_bytes()));
    }
    eprintln!(
        "200 sets and gets after the failover in {:?}",
        after.elapsed()
    );
}

/// Slots moved from one master to another (`redis-cli --cluster reshard`, keys included) under
/// load: MOVED and ASK are followed, no value is wrong, and no error reaches the callers.
#[test]
fn slots_moved_under_load_are_followed() {
    let Some(cluster) = own_cluster() else { return };
    let engine = engine(&cluster);
    let masters = cluster.masters();
    let (from, to) = (masters[0].1.clone(), masters[1].1.clone());
    let load = Load::default();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let output = std::thread::scope(|s| {
        s.spawn(|| run_load(&engine, &load, &stop));
        std::thread::sleep(Duration::from_millis(300));
        let output = cluster.reshard(&from, &to, 1000);
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        output
    });
    let output = output.unwrap();
    assert!(output.contains("Moving slot"), "{output}");
    load.report("1000 slots moved", started);
    assert_eq!(load.wrong.load(Ordering::Relaxed), 0);
    assert_eq!(
        load.errors.load(Ordering::Relaxed),
        0,
        "{:?}",
        load.last_error.lock().unwrap()
    );
}

/// `clear()` without a namespace empties every master's database (on a cluster of this test's
/// own: it removes everything).
#[test]
fn a_clear_without_a_namespace_empties_every_master() {
    let Some(cluster) = own_cluster() else { return };
    let engine = RedisEngine::builder().url(cluster.url()).build().unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let entries: Vec<(&str, Bytes)> = keys
        .iter()
        .map(|k| (k.as_str(), Bytes::from_static(b"v")))
        .collect();
    engine.set_many(&entries, Ttl::Never).unwrap();
    let sizes = |cluster: &RedisCluster| -> Vec<u64> {
        cluster
            .masters()
            .iter()
            .map(|(a, _)| {
                redis_cli_at(a, &["dbsize"])
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    assert!(sizes(&cluster).iter().all(|n| *n > 0));
    engine.clear().unwrap();
    assert_eq!(sizes(&cluster), vec![0, 0, 0]);
}
