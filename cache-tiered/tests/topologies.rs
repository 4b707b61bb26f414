//! Two tiers over a Redis Cluster and through Sentinel: the invalidation feed tracks every
//! master, and follows what changes them (a slot moved between masters, a master killed and
//! replaced by its replica, a sentinel failover whose old master stays up as a replica). After
//! each, a change made by another client reaches the local tier, and no read serves a value
//! older than the last one written before it, once the staleness bound has passed.
//!
//! Each test starts servers of its own (faults would disturb any other test using them).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::{Duration, Instant};

use cache_core::invalidation::InvalidationSource;
use cache_core::{Bytes, CacheEngine, Ttl};
use cache_local::InMemoryEngine;
use cache_redis::{RedisEngine, RedisProtocol};
use cache_tests::servers::OrSkip;
use cache_tests::topologies::{RedisCluster, RedisSentinels};
use cache_tiered::TieredEngine;

const NAMESPACE: &str = "topo";
/// Keys enough that every master of a three-master cluster holds some.
const KEYS: usize = 60;

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

type Tiered = TieredEngine<InMemoryEngine, RedisEngine>;

/// A tiered engine over `shared`, with its feed; and the feed's staleness bound.
fn tiered(shared: RedisEngine) -> (Tiered, Duration) {
    let feed = shared.invalidations();
    let bound = feed.detection_bound();
    let cache = TieredEngine::builder(InMemoryEngine::new(), shared)
        .invalidations(feed)
        .build()
        .unwrap();
    (cache, bound)
}

/// Polls `check` until it holds, failing after `within`.
fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// `writer` writes a new value under every key (retrying what a fault cut off), then `reader`
/// must read every new value within `bound` of the write (plus margin for the local tier's
/// clock tick and this machine's scheduling): each key is read back once the write returned,
/// at first from the local tier where the previous round left a copy.
fn round(writer: &RedisEngine, reader: &Tiered, bound: Duration, tag: &str) {
    // Fill the local tier with the current values first, so that a missed invalidation shows.
    for i in 0..KEYS {
        let key = format!("k{i}");
        let _ = reader.get(&key);
    }
    for i in 0..KEYS {
        let key = format!("k{i}");
        let value = format!("{tag}-{i}");
        eventually(
            &format!("{tag}: write {key}"),
            Duration::from_secs(20),
            || writer.set(&key, v(&value), Ttl::Never).is_ok(),
        );
    }
    let written = Instant::now();
    for i in 0..KEYS {
        let key = format!("k{i}");
        let want = v(&format!("{tag}-{i}"));
        eventually(
            &format!("{tag}: {key} read back"),
            bound * 4 + Duration::from_secs(2),
            || reader.get(&key).ok().flatten() == Some(want.clone()),
        );
    }
    // Reads after the bound never go back.
    std::thread::sleep(bound.saturating_sub(written.elapsed()));
    for i in 0..KEYS {
        let key = format!("k{i}");
        assert_eq!(
            reader.get(&key).unwrap(),
            Some(v(&format!("{tag}-{i}"))),
            "{tag}: {key} after the bound"
        );
    }
}

#[test]
fn a_cluster_feed_tracks_every_master_through_a_reshard_and_a_failover() {
    let Some(cluster) = RedisCluster::start(3, 1).or_skip() else {
        return;
    };
    let build = || {
        RedisEngine::builder()
            .url(cluster.url())
            .namespace(NAMESPACE)
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap()
    };
    let writer = build();
    let (reader, bound) = tiered(build());
    assert!(reader.is_caching_locally(), "every master tracked at once");
    round(&writer, &reader, bound, "first");

    // A thousand slots move from one master to another, keys included.
    let masters = cluster.masters();
    let output = cluster.reshard(&masters[0].1, &masters[1].1, 1000).unwrap();
    assert!(output.contains("Moving slot"), "{output}");
    round(&writer, &reader, bound, "resharded");

    // A master killed: the feed is lost at once, comes back once its replica serves.
    let lost = reader.stats().feed_lost;
    let (victim, _) = cluster.masters().remove(0);
    cluster.node(&victim).unwrap().stop();
    eventually("the loss noticed", Duration::from_secs(5), || {
        reader.stats().feed_lost > lost
    });
    assert!(cluster.wait_for_failover(&victim, Duration::from_secs(30)));
    eventually("the feed back", Duration::from_secs(10), || {
        reader.is_caching_locally()
    });
    round(&writer, &reader, bound, "failed-over");
}

#[test]
fn a_sentinel_feed_follows_a_failover_whose_old_master_stays_up() {
    let Some(set) = RedisSentinels::start("tiered-feed").or_skip() else {
        return;
    };
    let build = |protocol| {
        RedisEngine::builder()
            .sentinels(set.sentinel_addresses(), set.name())
            .namespace(NAMESPACE)
            .protocol(protocol)
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap()
    };
    let writer = build(RedisProtocol::Resp2);
    // The data connections and the feed speak RESP3; the sentinels are asked in RESP2.
    let (reader, bound) = tiered(build(RedisProtocol::Resp3));
    assert!(reader.is_caching_locally());
    round(&writer, &reader, bound, "first");

    let before = set.master().unwrap();
    let lost = reader.stats().feed_lost;
    set.failover().unwrap();
    eventually("the new master", Duration::from_secs(30), || {
        set.master().is_some_and(|m| m != before)
    });
    // At once, while the reader's engine may still read the old master (it asks the
    // sentinels every second; the old master keeps running, as a replica or still a master
    // for a while): changes made on the new master reach the reader.
    let new_master = RedisEngine::builder()
        .url(format!("redis://{}", set.master().unwrap()))
        .namespace(NAMESPACE)
        .build()
        .unwrap();
    round(&new_master, &reader, bound, "failed-over");
    assert!(reader.stats().feed_lost > lost, "the change was noticed");
    eventually("the feed back", Duration::from_secs(10), || {
        reader.is_caching_locally()
    });
    // Writes the old master took while it still was one are lost when it becomes a replica
    // (Redis's asynchronous replication): wait until the writer writes to the new one.
    eventually(
        "the writer on the new master",
        Duration::from_secs(10),
        || {
            let probe = v(&format!("{:?}", Instant::now()));
            writer.set("probe", probe.clone(), Ttl::Never).is_ok()
                && new_master.get("probe").ok().flatten() == Some(probe)
        },
    );
    round(&writer, &reader, bound, "settled");
}
