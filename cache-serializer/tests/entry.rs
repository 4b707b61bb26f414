//! The entry API on both faces: TTL, tags, negative caching and a TTL chosen from the value on
//! single keys; the batch loader (one loader call for every missing key, single-flight per key
//! across batches and single loads, cancellation-safe on the async face).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cache_core::clock::ManualClock;
use cache_core::{CacheError, Ttl};
use cache_local::InMemoryEngine;
use cache_serializer::{AsyncTypedCache, Lease, LoadError, Refresh, TypedCache};

fn secs(n: u64) -> Ttl {
    Ttl::After(Duration::from_secs(n))
}

fn with_clock() -> (TypedCache<InMemoryEngine>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let engine = InMemoryEngine::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    (TypedCache::new(engine), clock)
}

/// Waits until `cond` holds; panics after a generous ceiling so a bug fails instead of hanging.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_entry_loads_once_and_is_stored_for_its_ttl() {
    let (cache, clock) = with_clock();
    let runs = AtomicUsize::new(0);
    for _ in 0..3 {
        let v: u32 = cache
            .entry("k")
            .ttl(secs(10))
            .or_load(|| {
                runs.fetch_add(1, Ordering::SeqCst);
                7
            })
            .unwrap();
        assert_eq!(v, 7);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        cache.get::<u32>("k").unwrap(),
        None,
        "the entry's TTL applied"
    );
}

#[test]
fn ttl_from_chooses_the_ttl_from_the_loaded_value() {
    let (cache, clock) = with_clock();
    let short = |stock: &u32| if *stock < 10 { secs(5) } else { secs(300) };
    let low: u32 = cache
        .entry("stock:low")
        .ttl_from(short)
        .or_load(|| 3)
        .unwrap();
    let high: u32 = cache
        .entry("stock:high")
        .ttl_from(short)
        .or_load(|| 50)
        .unwrap();
    assert_eq!((low, high), (3, 50));
    clock.advance(Duration::from_secs(6));
    assert_eq!(cache.get::<u32>("stock:low").unwrap(), None);
    assert_eq!(cache.get::<u32>("stock:high").unwrap(), Some(50));

    // In a batch, each value gets its own TTL (one bulk write per TTL).
    let loaded = cache
        .entries(["a", "b", "c"])
        .ttl_from(short)
        .or_load_many(|keys| keys.into_iter().zip([1u32, 20, 2]))
        .unwrap();
    assert_eq!(loaded.len(), 3);
    clock.advance(Duration::from_secs(6));
    let left = cache.get_many::<u32>(&["a", "b", "c"]).unwrap();
    assert_eq!(left, vec![None, Some(20), None]);
}

#[test]
fn tags_and_negative_ttl_combine_with_both_loaders() {
    let (cache, clock) = with_clock();
    let v: String = cache
        .entry("user:1")
        .tags(&["users"])
        .or_load(|| "Ada".to_string())
        .unwrap();
    assert_eq!(v, "Ada");
    let many = cache
        .entries(["user:2", "user:3"])
        .tags(&["users"])
        .or_load_many(|keys| keys.into_iter().map(|k| (k, "Grace".to_string())))
        .unwrap();
    assert_eq!(many.len(), 2);
    cache.invalidate_tag("users").unwrap();
    assert_eq!(cache.get::<String>("user:1").unwrap(), None);
    assert_eq!(cache.get::<String>("user:2").unwrap(), None);

    // A `None` (an optional loader's, or a key the batch did not return) is cached as an
    // absence only with a negative TTL, and for that long.
    let runs = AtomicUsize::new(0);
    let missing = || {
        runs.fetch_add(1, Ordering::SeqCst);
        None::<u32>
    };
    assert_eq!(cache.entry("gone").or_load_optional(missing).unwrap(), None);
    assert_eq!(cache.entry("gone").or_load_optional(missing).unwrap(), None);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "no negative TTL: not cached"
    );
    for _ in 0..2 {
        let got = cache
            .entry("gone")
            .negative_ttl(secs(30))
            .or_load_optional(missing)
            .unwrap();
        assert_eq!(got, None);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3, "cached as an absence");

    let calls = AtomicUsize::new(0);
    let batch = || {
        cache
            .entries(["x", "y"])
            .negative_ttl(secs(30))
            .or_load_many(|keys| {
                calls.fetch_add(1, Ordering::SeqCst);
                keys.into_iter().filter(|k| k == "x").map(|k| (k, 1u32))
            })
            .unwrap()
    };
    assert_eq!(batch(), HashMap::from([("x".to_string(), 1)]));
    assert_eq!(batch(), HashMap::from([("x".to_string(), 1)]));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "y's absence was cached");
    clock.advance(Duration::from_secs(31));
    batch();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the absence expired");
}

#[test]
fn a_batch_calls_its_loader_once_with_every_missing_key() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let cached: Vec<(String, u64)> = (0..90).map(|i| (format!("item:{i}"), i)).collect();
    let refs: Vec<(&str, u64)> = cached.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    cache.set_many(&refs, Ttl::Default).unwrap();
    let keys: Vec<String> = (0..100).map(|i| format!("item:{i}")).collect();
    let mut calls = Vec::new();
    let got = cache
        .entries(keys.iter().cloned().chain(["item:95".to_string()])) // a duplicate
        .or_load_many(|missing| {
            calls.push(missing.clone());
            missing.into_iter().map(|k| {
                let n = k["item:".len()..].parse::<u64>().unwrap();
                (k, n)
            })
        })
        .unwrap();
    assert_eq!(calls.len(), 1, "one loader call");
    let expected: Vec<String> = (90..100).map(|i| format!("item:{i}")).collect();
    assert_eq!(
        calls[0], expected,
        "with exactly the missing keys, once each"
    );
    assert_eq!(got.len(), 100);
    assert!((0..100).all(|i| got[&format!("item:{i}")] == i));
    // Stored: a second batch loads nothing.
    let again = cache
        .entries(keys.iter().cloned())
        .or_load_many(|missing| -> Vec<(String, u64)> { panic!("loaded again: {missing:?}") })
        .unwrap();
    assert_eq!(again.len(), 100);
    assert_eq!(cache.stats().loads, 1);
}

#[test]
fn a_batch_loader_error_reaches_the_caller_and_caches_nothing() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let err = cache
        .entries(["a", "b"])
        .or_try_load_many(|_| Err::<Vec<(String, u32)>, _>("db down"))
        .unwrap_err();
    assert!(matches!(err, LoadError::Loader(e) if *e == "db down"));
    assert_eq!(
        cache.get_many::<u32>(&["a", "b"]).unwrap(),
        vec![None, None]
    );
    assert_eq!(cache.loads_in_flight(), 0);
}

/// A batch and single-key loads of overlapping keys, at the same time: every key is loaded
/// exactly once, by whichever caller got it first, and everyone gets every value.
#[test]
fn single_flight_holds_per_key_across_batches_and_single_loads() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let loads: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let count = |keys: &[String]| {
        let mut loads = loads.lock().unwrap();
        for key in keys {
            *loads.entry(key.clone()).or_default() += 1;
        }
    };
    let value = |key: &str| key["k".len()..].parse::<u32>().unwrap();
    let range = |from: u32, to: u32| (from..to).map(|i| format!("k{i}")).collect::<Vec<_>>();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    thread::scope(|s| {
        let first = s.spawn(|| {
            cache
                .entries(range(0, 10))
                .or_load_many(|keys| {
                    count(&keys);
                    started_tx.send(()).unwrap();
                    // Hold the keys until the others have joined them: k3, k7 and k5..k9.
                    wait_until("the others to wait", || cache.stats().coalesced_waits >= 7);
                    keys.into_iter().map(|k| {
                        let v = value(&k);
                        (k, v)
                    })
                })
                .unwrap()
        });
        started_rx.recv().unwrap();
        let singles: Vec<_> = ["k3", "k7"]
            .into_iter()
            .map(|key| {
                let (cache, count) = (&cache, &count);
                s.spawn(move || {
                    cache
                        .entry(key)
                        .or_load(|| {
                            count(&[key.to_string()]);
                            value(key)
                        })
                        .unwrap()
                })
            })
            .collect();
        let second = s.spawn(|| {
            cache
                .entries(range(5, 15))
                .or_load_many(|keys| {
                    count(&keys);
                    keys.into_iter().map(|k| {
                        let v = value(&k);
                        (k, v)
                    })
                })
                .unwrap()
        });
        let first = first.join().unwrap();
        let second = second.join().unwrap();
        assert_eq!(first.len(), 10);
        assert_eq!(second.len(), 10);
        assert!(second.iter().all(|(k, v)| value(k) == *v));
        let singles: Vec<u32> = singles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(singles, [3, 7]);
    });
    let loads = loads.lock().unwrap();
    assert_eq!(loads.len(), 15, "{loads:?}");
    assert!(
        loads.values().all(|n| *n == 1),
        "a key loaded twice: {loads:?}"
    );
}

#[test]
fn batches_refuse_leases_and_refresh_refuses_tags() {
    let cache = TypedCache::builder(InMemoryEngine::new())
        .lease(Lease::new(Duration::from_secs(5)))
        .build()
        .unwrap();
    let err = cache
        .entries(["a"])
        .or_load_many(|keys| keys.into_iter().map(|k| (k, 1u32)))
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
    let err = cache
        .entry("a")
        .tags(&["t"])
        .refresh(Refresh::after(Duration::from_secs(60)))
        .or_load(|| 1u32)
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
    let v: u32 = cache
        .entry("a")
        .refresh(Refresh::after(Duration::from_secs(60)))
        .or_load(|| 2)
        .unwrap();
    assert_eq!(v, 2);
}

/// Async: a batch whose future is dropped while its loader runs releases its keys; a caller
/// waiting for one of them loads it itself, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_a_dropped_batch_hands_its_keys_to_the_waiters() {
    let cache = AsyncTypedCache::new(InMemoryEngine::new());
    let batch = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .entries(["a", "b", "c"])
                .or_load_many(|keys| async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    keys.into_iter().map(|k| (k, 0u32))
                })
                .await
        })
    };
    let waiting = {
        let cache = cache.clone();
        async move {
            while cache.loads_in_flight() < 3 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            cache.entry("b").or_load(|| async { 2u32 }).await.unwrap()
        }
    };
    let waiter = tokio::spawn(waiting);
    while cache.stats().coalesced_waits < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    batch.abort();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter did not take over")
        .unwrap();
    assert_eq!(got, 2);
    assert_eq!(cache.loads_in_flight(), 0);

    // The async batch loader: one call for the missing keys.
    let calls = Arc::new(AtomicUsize::new(0));
    let got = cache
        .entries(["b", "d"])
        .ttl(secs(60))
        .or_load_many(|keys| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { keys.into_iter().map(|k| (k, 4u32)) }
        })
        .await
        .unwrap();
    assert_eq!(got, HashMap::from([("b".into(), 2), ("d".into(), 4)]));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// The deprecated shorthands forward to the entry API: same values, same caching.
#[test]
#[allow(deprecated)]
fn deprecated_shorthands_forward_to_the_entry_api() {
    let cache = TypedCache::new(InMemoryEngine::new());
    assert_eq!(cache.get_or_set_with("a", secs(60), || 1u32).unwrap(), 1);
    assert_eq!(
        cache.get_or_set_with("a", secs(60), || 2u32).unwrap(),
        1,
        "cached by the first call"
    );
    let failed = cache.try_get_or_set_with("b", secs(60), || Err::<u32, _>("down"));
    assert!(matches!(failed, Err(LoadError::Loader(_))));
    assert_eq!(
        cache.get::<u32>("b").unwrap(),
        None,
        "an error is not cached"
    );
    assert_eq!(
        cache
            .get_or_set_optional_with("c", secs(60), secs(60), || None::<u32>)
            .unwrap(),
        None
    );
    assert_eq!(
        cache
            .get_or_set_optional_with("c", secs(60), secs(60), || Some(3u32))
            .unwrap(),
        None,
        "the absence is cached"
    );
    assert_eq!(
        cache
            .get_or_set_tagged_with("d", secs(60), &["t"], || 4u32)
            .unwrap(),
        4
    );
    cache.invalidate_tag("t").unwrap();
    assert_eq!(cache.get::<u32>("d").unwrap(), None, "the tag was carried");
    let refresh = Refresh::after(Duration::from_secs(60));
    assert_eq!(cache.get_or_refresh_with("e", refresh, || 5u32).unwrap(), 5);
    assert!(cache.get::<u32>("e").unwrap().is_some());
    let refresh = Refresh::after(Duration::from_secs(60));
    let failed = cache.try_get_or_refresh_with("f", refresh, || Err::<u32, _>("down"));
    assert!(matches!(failed, Err(LoadError::Loader(_))));
    let found = cache
        .try_get_or_set_optional_with("g", secs(60), secs(60), || Ok::<_, String>(None::<u32>));
    assert_eq!(found.unwrap(), None);
    assert_eq!(
        cache
            .try_get_or_set_optional_with("g", secs(60), secs(60), || Ok::<_, String>(Some(7u32)))
            .unwrap(),
        None,
        "the absence is cached"
    );
    let tagged = cache.try_get_or_set_tagged_with("h", secs(60), &["u"], || Ok::<_, String>(8u32));
    assert_eq!(tagged.unwrap(), 8);
    cache.invalidate_tag("u").unwrap();
    assert_eq!(cache.get::<u32>("h").unwrap(), None, "the tag was carried");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = AsyncTypedCache::new(InMemoryEngine::new());
    runtime.block_on(async {
        assert_eq!(
            cache
                .get_or_set_with("a", secs(60), || async { 1u32 })
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            cache
                .get_or_set_with("a", secs(60), || async { 2u32 })
                .await
                .unwrap(),
            1
        );
        let refresh = Refresh::after(Duration::from_secs(60));
        assert_eq!(
            cache
                .try_get_or_refresh_with("e", refresh, || async { Ok::<_, String>(5u32) })
                .await
                .unwrap(),
            5
        );
        let refresh = Refresh::after(Duration::from_secs(60));
        assert_eq!(
            cache
                .get_or_refresh_with("e2", refresh, || async { 6u32 })
                .await
                .unwrap(),
            6
        );
        let failed = cache
            .try_get_or_set_with("b", secs(60), || async { Err::<u32, _>("down") })
            .await;
        assert!(matches!(failed, Err(LoadError::Loader(_))));
        assert_eq!(
            cache
                .get_or_set_optional_with("c", secs(60), secs(60), || async { None::<u32> })
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            cache
                .try_get_or_set_optional_with("c", secs(60), secs(60), || async {
                    Ok::<_, String>(Some(3u32))
                })
                .await
                .unwrap(),
            None,
            "the absence is cached"
        );
        assert_eq!(
            cache
                .get_or_set_tagged_with("d", secs(60), &["t"], || async { 4u32 })
                .await
                .unwrap(),
            4
        );
        assert_eq!(
            cache
                .try_get_or_set_tagged_with("d2", secs(60), &["t"], || async {
                    Ok::<_, String>(5u32)
                })
                .await
                .unwrap(),
            5
        );
        cache.invalidate_tag("t").await.unwrap();
        assert_eq!(cache.get::<u32>("d").await.unwrap(), None);
        assert_eq!(cache.get::<u32>("d2").await.unwrap(), None);
    });
}
