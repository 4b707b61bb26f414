//! Two services, each with a local tier in front of one Redis: a change made by one reaches
//! the other's local tier through Redis's invalidation feed.

use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, Remaining, Ttl};
use cache_local::InMemoryEngine;
use cache_redis::RedisEngine;
use cache_tiered::TieredEngine;

/// One service's cache: an `InMemoryEngine` in front of Redis, listening to the feed.
pub type ServiceCache = TieredEngine<InMemoryEngine, RedisEngine>;

/// Builds a service's cache on `url`, in `namespace`.
///
/// # Errors
///
/// `InvalidConfig` for a bad URL or namespace.
pub fn service_cache(url: &str, namespace: &str) -> cache_core::Result<ServiceCache> {
    let redis = RedisEngine::builder()
        .url(url)
        .namespace(namespace)
        .build()?;
    let feed = redis.invalidations();
    let local = InMemoryEngine::builder().max_capacity(10_000).build()?;
    TieredEngine::builder(local, redis)
        .local_ttl(Duration::from_secs(30))
        .invalidations(feed)
        .build()
}

/// What the walk-through saw.
#[derive(Debug)]
pub struct Walkthrough {
    /// Whether B's second read was served by its local tier.
    pub second_read_local: bool,
    /// The remaining TTL of B's local copy right after its first read.
    pub local_ttl_after_refill: Option<Remaining>,
    /// How long after A's update returned B first read the new value.
    pub update_seen_after: Duration,
    /// Whether B's feed was connected throughout.
    pub coherent: bool,
}

/// A writes `user:1` with a 10 s TTL, B reads it twice (Redis, then local), A updates it, and
/// B polls until it reads the update.
///
/// # Errors
///
/// Any engine error; `Timeout` if B never sees the update within 5 s.
pub fn walkthrough(a: &ServiceCache, b: &ServiceCache) -> cache_core::Result<Walkthrough> {
    let ten_seconds = Ttl::After(Duration::from_secs(10));
    a.set("user:1", Bytes::from_static(b"Ada"), ten_seconds)?;
    // B reads from Redis and keeps the value locally. A read that raced the feed's report of
    // A's write is (rightly) not kept, so read until the local tier has it (a moment at most).
    let reading = Instant::now();
    while b.get("user:1")?.is_some() && b.local().get("user:1")?.is_none() {
        if reading.elapsed() > Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let local_ttl_after_refill = b.local().remaining_ttl("user:1")?;
    let second_read_local = b.local().get("user:1")?.is_some() && b.get("user:1")?.is_some();
    a.set("user:1", Bytes::from_static(b"Ada Lovelace"), ten_seconds)?;
    let updated = Instant::now();
    while b.get("user:1")?.as_deref() != Some(&b"Ada Lovelace"[..]) {
        if updated.elapsed() > Duration::from_secs(5) {
            return Err(cache_core::CacheError::Timeout {
                backend: "tiered",
                operation: "walkthrough",
                address: "B's local tier".into(),
                after: Duration::from_secs(5),
            });
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(Walkthrough {
        second_read_local,
        local_ttl_after_refill,
        update_seen_after: updated.elapsed(),
        coherent: b.is_caching_locally() && b.stats().feed_lost == 0,
    })
}
