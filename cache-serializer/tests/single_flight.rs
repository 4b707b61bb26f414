//! `entry(key).or_load` runs the loader once for many callers of the same missing key.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use cache_core::Ttl;
use cache_local::InMemoryEngine;
use cache_serializer::{LoadError, TypedCache};

const CALLERS: usize = 16;

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
fn the_loader_runs_once_for_concurrent_callers() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CALLERS));
    let results: Vec<String> = thread::scope(|s| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|_| {
                let cache = cache.clone();
                let runs = Arc::clone(&runs);
                let barrier = Arc::clone(&barrier);
                s.spawn(move || {
                    barrier.wait();
                    cache
                        .entry("cold")
                        .ttl(Ttl::Default)
                        .or_load(|| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            // Hold the load until every other caller is waiting for it, so a
                            // second load could only come from a broken single-flight.
                            wait_until("all callers to wait", || {
                                cache.stats().coalesced_waits == (CALLERS - 1) as u64
                            });
                            "loaded once".to_string()
                        })
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(results.iter().all(|r| r == "loaded once"), "{results:?}");
    assert_eq!(cache.stats().loads, 1);
    assert_eq!(
        cache.get::<String>("cold").unwrap().as_deref(),
        Some("loaded once")
    );
    assert_eq!(cache.loads_in_flight(), 0);
}

#[test]
fn a_loader_error_reaches_every_waiter_and_is_not_cached() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(CALLERS));
    let errors: Vec<Arc<String>> = thread::scope(|s| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|_| {
                let cache = cache.clone();
                let runs = Arc::clone(&runs);
                let barrier = Arc::clone(&barrier);
                s.spawn(move || {
                    barrier.wait();
                    let result = cache
                        .entry("failing")
                        .ttl(Ttl::Default)
                        .or_try_load::<u64, String, _>(|| {
                            runs.fetch_add(1, Ordering::SeqCst);
                            wait_until("all callers to wait", || {
                                cache.stats().coalesced_waits == (CALLERS - 1) as u64
                            });
                            Err("database down".to_string())
                        });
                    match result {
                        Err(LoadError::Loader(e)) => e,
                        other => panic!("expected the loader's error, got {other:?}"),
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(
        errors
            .iter()
            .all(|e| Arc::ptr_eq(e, &errors[0]) && **e == "database down")
    );
    assert_eq!(
        cache.get::<u64>("failing").unwrap(),
        None,
        "an error must not be cached"
    );
    // The next call loads again.
    let value = cache
        .entry("failing")
        .ttl(Ttl::Default)
        .or_try_load::<u64, String, _>(|| Ok(7))
        .unwrap();
    assert_eq!(value, 7);
}

#[test]
fn a_panicking_loader_releases_the_waiters() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let (leader_started, started) = std::sync::mpsc::channel();
    let panicking = {
        let cache = cache.clone();
        thread::spawn(move || {
            cache.entry("boom").ttl(Ttl::Default).or_load(|| -> u32 {
                leader_started.send(()).unwrap();
                wait_until("the waiters", || cache.stats().coalesced_waits == 3);
                panic!("loader panicked on purpose");
            })
        })
    };
    started.recv().unwrap();
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            thread::spawn(move || {
                cache
                    .entry("boom")
                    .ttl(Ttl::Default)
                    .or_load(|| 99u32)
                    .unwrap()
            })
        })
        .collect();
    assert!(
        panicking.join().is_err(),
        "the panic reaches the loader's caller"
    );
    for waiter in waiters {
        assert_eq!(waiter.join().unwrap(), 99);
    }
    assert_eq!(cache.loads_in_flight(), 0);
}

#[test]
fn other_keys_load_at_the_same_time() {
    let cache = TypedCache::new(InMemoryEngine::new());
    // Each loader waits for the other to start: with one global lock this would time out.
    let both_started = Arc::new(Barrier::new(2));
    thread::scope(|s| {
        for key in ["left", "right"] {
            let cache = cache.clone();
            let both_started = Arc::clone(&both_started);
            s.spawn(move || {
                cache
                    .entry(key)
                    .ttl(Ttl::Default)
                    .or_load(|| {
                        both_started.wait();
                        key.len()
                    })
                    .unwrap()
            });
        }
    });
    assert_eq!(cache.get::<usize>("left").unwrap(), Some(4));
    assert_eq!(cache.get::<usize>("right").unwrap(), Some(5));
}

#[test]
fn a_hit_never_runs_the_loader() {
    let cache = TypedCache::new(InMemoryEngine::new());
    cache.set("warm", &5u8, Ttl::Default).unwrap();
    let value = cache
        .entry("warm")
        .ttl(Ttl::Default)
        .or_load(|| -> u8 { panic!("loader ran on a hit") })
        .unwrap();
    assert_eq!(value, 5);
}

/// 64 callers of one cold key with a 100 ms loader: the loader runs once; when it fails, its error
/// reaches every caller and nothing is cached.
#[test]
fn sixty_four_callers_one_slow_loader() {
    const MANY: usize = 64;
    let cache = TypedCache::new(InMemoryEngine::new());
    for failing in [false, true] {
        let key = if failing { "cold-failing" } else { "cold" };
        let runs = Arc::new(AtomicUsize::new(0));
        let waits_before = cache.stats().coalesced_waits;
        let barrier = Arc::new(Barrier::new(MANY));
        let results: Vec<Result<u64, String>> = thread::scope(|s| {
            let handles: Vec<_> = (0..MANY)
                .map(|_| {
                    let (cache, runs, barrier) =
                        (cache.clone(), Arc::clone(&runs), Arc::clone(&barrier));
                    s.spawn(move || {
                        barrier.wait();
                        cache
                            .entry(key)
                            .ttl(Ttl::Default)
                            .or_try_load::<u64, String, _>(|| {
                                runs.fetch_add(1, Ordering::SeqCst);
                                thread::sleep(Duration::from_millis(100));
                                wait_until("all callers to wait", || {
                                    cache.stats().coalesced_waits - waits_before
                                        == (MANY - 1) as u64
                                });
                                if failing {
                                    Err("backend down".to_string())
                                } else {
                                    Ok(7)
                                }
                            })
                            .map_err(|e| match e {
                                LoadError::Loader(e) => (*e).clone(),
                                LoadError::Cache(e) => e.to_string(),
                            })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(runs.load(Ordering::SeqCst), 1, "failing={failing}");
        if failing {
            assert!(
                results
                    .iter()
                    .all(|r| r == &Err("backend down".to_string())),
                "{results:?}"
            );
            assert_eq!(
                cache.get::<u64>(key).unwrap(),
                None,
                "an error is not cached"
            );
        } else {
            assert!(results.iter().all(|r| r == &Ok(7)), "{results:?}");
        }
    }
}
