//! Negative caching: a loader's "not found" is cached for its own TTL, read as `None` by every
//! read without loading again, loaded once under concurrency, and replaced by a value when one
//! is loaded; both faces.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_core::{CacheEngine, Ttl};
use cache_local::InMemoryEngine;
use cache_serializer::{AsyncTypedCache, LoadError, TypedCache};
use cache_tests::TestContext;

fn minutes(n: u64) -> Ttl {
    Ttl::After(Duration::from_secs(60 * n))
}

#[test]
fn not_found_is_cached_for_its_own_ttl() {
    let ctx = TestContext::new();
    let engine = InMemoryEngine::builder()
        .clock(ctx.clock())
        .build()
        .unwrap();
    let cache = TypedCache::new(engine.clone());
    let loads = AtomicUsize::new(0);
    let find = || {
        loads.fetch_add(1, Ordering::SeqCst);
        None::<String>
    };
    let short = Ttl::After(Duration::from_secs(10));
    assert_eq!(
        cache
            .entry("user:9")
            .ttl(minutes(5))
            .negative_ttl(short)
            .or_load_optional(find)
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .entry("user:9")
            .ttl(minutes(5))
            .negative_ttl(short)
            .or_load_optional(find)
            .unwrap(),
        None
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1, "the absence is cached");
    // Every read sees it as None; strict mode too; the key exists.
    assert_eq!(cache.get::<String>("user:9").unwrap(), None);
    let strict = TypedCache::builder(engine.clone())
        .strict(true)
        .build()
        .unwrap();
    assert_eq!(strict.get::<String>("user:9").unwrap(), None);
    assert!(cache.exists("user:9").unwrap());
    let stats = cache.stats();
    assert_eq!((stats.negative_hits, stats.loads), (2, 1), "{stats:?}");
    // It lives for the negative TTL, not the value TTL.
    let left = engine.remaining_ttl("user:9").unwrap();
    assert!(
        matches!(left, Some(cache_core::Remaining::After(d)) if d <= Duration::from_secs(11)),
        "{left:?}"
    );
    ctx.pass(Duration::from_secs(11));
    assert_eq!(
        cache
            .entry("user:9")
            .ttl(minutes(5))
            .negative_ttl(short)
            .or_load_optional(|| Some("Ada".to_string()))
            .unwrap()
            .as_deref(),
        Some("Ada"),
        "after the negative TTL the loader runs again"
    );
    assert_eq!(
        cache.get::<String>("user:9").unwrap().as_deref(),
        Some("Ada")
    );
}

#[test]
fn a_loader_that_always_finds_replaces_an_absence() {
    let cache = TypedCache::new(InMemoryEngine::new());
    cache
        .entry("k")
        .ttl(minutes(5))
        .negative_ttl(minutes(1))
        .or_load_optional::<String, _>(|| None)
        .unwrap();
    let value = cache
        .entry("k")
        .ttl(minutes(5))
        .or_load(|| "found".to_string())
        .unwrap();
    assert_eq!(value, "found");
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("found"));
    // An absence is per type: a reader of another type sees another schema, a miss.
    cache
        .entry("n")
        .ttl(minutes(5))
        .negative_ttl(minutes(1))
        .or_load_optional::<u64, _>(|| None)
        .unwrap();
    assert_eq!(cache.get::<String>("n").unwrap(), None);
    assert_eq!(cache.stats().schema_mismatches, 1);
}

#[test]
fn errors_are_not_cached_and_concurrent_misses_load_once() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let failed: Result<Option<String>, LoadError<&str>> = cache
        .entry("k")
        .ttl(minutes(5))
        .negative_ttl(minutes(1))
        .or_try_load_optional(|| Err("db down"));
    assert!(matches!(failed, Err(LoadError::Loader(e)) if *e == "db down"));
    assert!(!cache.exists("k").unwrap(), "a loader error is not cached");

    let loads = Arc::new(AtomicUsize::new(0));
    let barrier = std::sync::Barrier::new(32);
    std::thread::scope(|s| {
        for _ in 0..32 {
            s.spawn(|| {
                barrier.wait();
                let found = cache
                    .entry("cold")
                    .ttl(minutes(5))
                    .negative_ttl(minutes(1))
                    .or_load_optional::<String, _>(|| {
                        loads.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(50));
                        None
                    })
                    .unwrap();
                assert_eq!(found, None);
            });
        }
    });
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[test]
fn the_async_face_caches_absences_too() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cache = AsyncTypedCache::new(InMemoryEngine::new());
        let loads = AtomicUsize::new(0);
        for _ in 0..3 {
            let found = cache
                .entry("k")
                .ttl(minutes(5))
                .negative_ttl(minutes(1))
                .or_load_optional::<String, _, _>(|| async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    None
                })
                .await
                .unwrap();
            assert_eq!(found, None);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert_eq!(cache.get::<String>("k").await.unwrap(), None);
        assert_eq!(cache.stats().negative_hits, 3);
        let value = cache
            .entry("k")
            .ttl(minutes(5))
            .or_load(|| async { "found".to_string() })
            .await
            .unwrap();
        assert_eq!(value, "found");
        assert_eq!(
            cache.get::<String>("k").await.unwrap().as_deref(),
            Some("found")
        );
    });
}
