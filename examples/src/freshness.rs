//! Freshness without stampedes, as two services sharing one Redis see it: a cold key loaded
//! once for both (a lease), a hot key refreshed before it goes stale (refresh ahead), and a tag
//! invalidated with one write.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_core::{CacheError, Ttl};
use cache_redis::RedisEngine;
use cache_serializer::{Lease, Refresh, TypedCache};

/// A service's typed cache over Redis, under `namespace`, with leases.
///
/// # Errors
///
/// `InvalidConfig` for a bad URL or namespace.
pub fn service_cache(url: &str, namespace: &str) -> Result<TypedCache<RedisEngine>, CacheError> {
    let engine = RedisEngine::builder()
        .url(url)
        .namespace(namespace)
        .build()?;
    TypedCache::builder(engine)
        .lease(Lease::new(Duration::from_secs(5)))
        .build()
}

/// What the walkthrough saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    /// How many times the cold key's loader ran for 8 callers in each of the two services.
    pub cold_loads: usize,
    /// How many times the hot key's loader ran while both services read it for 1.5 s, with a
    /// freshness of 500 ms and a stale window of 500 ms.
    pub hot_loads: usize,
    /// The longest a read of the hot key took.
    pub slowest_hot_read: Duration,
    /// Whether the tagged entries read as misses after one invalidation, and the untagged one
    /// did not.
    pub tag_invalidated: bool,
}

/// Runs the walkthrough with services `a` and `b` (on the same Redis and namespace).
///
/// # Errors
///
/// Any cache error.
pub fn walkthrough(
    a: &TypedCache<RedisEngine>,
    b: &TypedCache<RedisEngine>,
) -> Result<Seen, CacheError> {
    for key in ["catalog", "rate:eur", "order:1", "order:2", "order:3"] {
        a.delete(key)?;
    }
    // A cold key: 16 callers, 8 per service, at once. The loader takes 200 ms.
    let loads = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..16)
        .map(|i| {
            let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
            let loads = Arc::clone(&loads);
            std::thread::spawn(move || {
                cache
                    .entry("catalog")
                    .ttl(Ttl::After(Duration::from_secs(60)))
                    .or_load(|| {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        vec!["mug".to_string(), "lamp".to_string()]
                    })
            })
        })
        .collect();
    for caller in callers {
        caller.join().map_err(|_| CacheError::InvalidConfig {
            message: "a caller panicked".into(),
        })??;
    }
    let cold_loads = loads.load(Ordering::SeqCst);

    // A hot key, read by both services every 5 ms for 1.5 s: refreshed in the background,
    // early, while the readers keep getting a value at once.
    let refresh = Refresh::after(Duration::from_millis(500))
        .serve_stale_for(Duration::from_millis(500))
        .early(1.0);
    let hot = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_millis(1500) {
        for cache in [a, b] {
            let hot = Arc::clone(&hot);
            let t = Instant::now();
            let _rate: f64 = cache.entry("rate:eur").refresh(refresh).or_load(move || {
                hot.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                1.08
            })?;
            slowest = slowest.max(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let a refresh still running finish.
    let deadline = Instant::now() + Duration::from_secs(2);
    while (a.refreshes_in_flight() > 0 || b.refreshes_in_flight() > 0) && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }

    // Tags: two orders of user 7 and one of user 8; user 7 changes in service b.
    let day = Ttl::After(Duration::from_secs(86_400));
    a.set_tagged("order:1", &"two books".to_string(), day, &["user:7"])?;
    a.set_tagged("order:2", &"a lamp".to_string(), day, &["user:7", "eu"])?;
    a.set_tagged("order:3", &"a chair".to_string(), day, &["user:8"])?;
    b.invalidate_tag("user:7")?;
    let tag_invalidated = a.get::<String>("order:1")?.is_none()
        && a.get::<String>("order:2")?.is_none()
        && a.get::<String>("order:3")?.is_some();

    Ok(Seen {
        cold_loads,
        hot_loads: hot.load(Ordering::SeqCst),
        slowest_hot_read: slowest,
        tag_invalidated,
    })
}
