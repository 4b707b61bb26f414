//! Comparison 17: what the local tier of a tiered engine costs on a hit, and what the tiered
//! path adds to a read that falls through to Redis (the value and its remaining TTL in one
//! round trip, then the refill). The tiered engine listens to Redis's invalidation feed
//! throughout, as it would in a service.

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_local::InMemoryEngine;
use cache_redis::RedisEngine;
use cache_tests::servers::TestServer;
use cache_tiered::TieredEngine;

use crate::measure::{gets, interleave};
use crate::{Goal, Plan, Row};

fn local() -> InMemoryEngine {
    InMemoryEngine::builder()
        .max_capacity(20_000)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn run(plan: &Plan, redis: &TestServer, rows: &mut Vec<Row>) -> Result<(), String> {
    let shared = || {
        RedisEngine::builder()
            .url(redis.url())
            .namespace("bench-tiered")
            .max_connections(1)
            .build()
            .map_err(|e| format!("redis: {e}"))
    };
    let bare_redis = shared()?;
    let tiered_shared = shared()?;
    let feed = tiered_shared.invalidations();
    let tiered = TieredEngine::builder(local(), tiered_shared)
        .invalidations(feed)
        .build()
        .map_err(|e| format!("tiered: {e}"))?;
    if !tiered.is_caching_locally() {
        return Err("the invalidation feed did not connect".into());
    }

    // Hits: 1,000 keys, in the tiered engine's local tier and in a bare InMemoryEngine, held
    // alike: values read off a socket (heap `Bytes`, whose clone counts references; a
    // `from_static` value would clone for free) with the 60 s TTL a refill gets.
    let keys: Vec<String> = (0..1_000).map(|i| format!("key:{i}")).collect();
    let bare_local = local();
    for key in &keys {
        bare_redis
            .set(key, Bytes::from(vec![7; 64]), Ttl::Never)
            .map_err(|e| format!("set: {e}"))?;
    }
    // Let the feed's invalidations of those writes arrive before refilling: a refill that
    // races one is (rightly) not kept.
    std::thread::sleep(std::time::Duration::from_millis(200));
    for key in &keys {
        let refilled = tiered.get(key).map_err(|e| format!("get: {e}"))?;
        let value = refilled.ok_or("the refill read nothing")?;
        bare_local
            .set(
                key,
                Bytes::from(value.to_vec()),
                Ttl::After(cache_tiered::DEFAULT_LOCAL_TTL),
            )
            .map_err(|e| format!("set: {e}"))?;
    }
    let before = tiered.stats();
    let ops = plan.local_ops;
    let r = interleave(
        plan.rounds,
        &mut [&mut || gets(&tiered, &keys, ops), &mut || {
            gets(&bare_local, &keys, ops)
        }],
    );
    rows.push(Row::rate(
        17,
        "TieredEngine get served by the local tier / InMemoryEngine get, hits, same values and TTLs",
        r[0],
        r[1],
        Goal::AtLeast(0.85),
    ));
    if tiered.stats() != before || !tiered.is_caching_locally() {
        return Err(format!(
            "the local tier was disturbed: {:?}",
            tiered.stats()
        ));
    }

    // Fall-through: every read misses locally (the local tier is emptied before each block),
    // so each is one Redis round trip plus the refill.
    let remote = plan.remote_ops.min(keys.len());
    let misses = &keys[..remote];
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                let _ = tiered.local().clear();
                1e6 / gets(&tiered, misses, remote)
            },
            &mut || 1e6 / gets(&bare_redis, misses, remote),
        ],
    );
    rows.push(Row::plain(
        17,
        "TieredEngine get falling through to Redis / RedisEngine get, time per get",
        r[0],
        r[1],
        "us",
        Goal::AtMost(1.1),
    ));
    Ok(())
}
