//! Refresh-ahead in the typed layer: stale values served while one background refresh per key
//! runs, a hard limit after which the caller loads, failed refreshes that keep the stale value,
//! early refresh (XFetch) drawn before staleness; both faces, the async one on a tokio runtime
//! and without one; a real Redis to show that freshness is the engine's.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use cache_core::{CacheEngine, Remaining};
use cache_local::InMemoryEngine;
use cache_serializer::{AsyncTypedCache, LoadError, Refresh, TypedCache};
use cache_tests::TestContext;

const S: fn(u64) -> Duration = Duration::from_secs;

fn engine(ctx: &TestContext) -> InMemoryEngine {
    InMemoryEngine::builder()
        .clock(ctx.clock())
        .build()
        .unwrap()
}

fn policy() -> Refresh {
    Refresh::after(S(10)).serve_stale_for(S(10))
}

/// Waits (for real: background work runs on threads) until `done`, at most 10 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + S(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn stale_values_are_served_while_one_background_refresh_runs() {
    let ctx = TestContext::new();
    let cache = TypedCache::new(engine(&ctx));
    let v1: u32 = cache.entry("k").refresh(policy()).or_load(|| 1).unwrap();
    assert_eq!(v1, 1);
    assert_eq!(
        cache.engine().remaining_ttl("k").unwrap(),
        Some(Remaining::After(S(20)))
    );

    // Fresh: the loader is not run.
    ctx.pass(S(5));
    let v: u32 = cache
        .entry("k")
        .refresh(policy())
        .or_load(|| -> u32 { panic!("fresh values are not reloaded") })
        .unwrap();
    assert_eq!(v, 1);
    assert_eq!(cache.stats().refreshes, 0);

    // Stale: 16 callers at once are all served 1 at once, while one refresh runs, held until
    // they are done.
    ctx.pass(S(10));
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    let runs = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (cache, gate, runs, start) =
                (cache.clone(), gate.clone(), runs.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                cache
                    .entry("k")
                    .refresh(policy())
                    .or_load(move || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        gate.lock().unwrap().recv().unwrap();
                        2u32
                    })
                    .unwrap()
            })
        })
        .collect();
    let served: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(served, vec![1; 16], "stale callers do not wait");
    assert_eq!(cache.refreshes_in_flight(), 1);
    let stats = cache.stats();
    assert_eq!((stats.stale_hits, stats.refreshes), (16, 1), "{stats:?}");
    release.send(()).unwrap();
    eventually("the refresh", || cache.refreshes_in_flight() == 0);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one refresh per key");
    assert_eq!(cache.get::<u32>("k").unwrap(), Some(2));
    // Stored for freshness and stale window again.
    assert_eq!(
        cache.engine().remaining_ttl("k").unwrap(),
        Some(Remaining::After(S(20)))
    );
    assert_eq!(
        cache.stats().loads,
        1,
        "the first load only ran in a caller"
    );
}

#[test]
fn past_the_hard_limit_the_caller_loads() {
    let ctx = TestContext::new();
    let cache = TypedCache::new(engine(&ctx));
    let _: u32 = cache.entry("k").refresh(policy()).or_load(|| 1).unwrap();
    ctx.pass(S(21));
    let v: u32 = cache.entry("k").refresh(policy()).or_load(|| 2).unwrap();
    assert_eq!(v, 2, "expired: loaded by the caller, not served stale");
    let stats = cache.stats();
    assert_eq!(
        (stats.loads, stats.refreshes, stats.stale_hits),
        (2, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn a_failed_refresh_keeps_the_stale_value_until_the_limit() {
    let ctx = TestContext::new();
    let cache = TypedCache::new(engine(&ctx));
    let _: u32 = cache.entry("k").refresh(policy()).or_load(|| 1).unwrap();
    ctx.pass(S(12));
    let v = cache
        .entry("k")
        .refresh(policy())
        .or_try_load(|| Err::<u32, _>("database down"))
        .unwrap();
    assert_eq!(v, 1);
    eventually("the failed refresh", || cache.stats().refresh_failures == 1);
    eventually("its release", || cache.refreshes_in_flight() == 0);
    assert_eq!(
        cache.get::<u32>("k").unwrap(),
        Some(1),
        "the stale value is kept"
    );
    // A miss's loader error goes to the caller, and nothing is cached.
    ctx.pass(S(9));
    let err = cache
        .entry("k")
        .refresh(policy())
        .or_try_load(|| Err::<u32, _>("still down"))
        .unwrap_err();
    assert!(matches!(err, LoadError::Loader(e) if *e == "still down"));
    assert_eq!(cache.get::<u32>("k").unwrap(), None);
}

#[test]
fn a_panicking_refresh_releases_its_key() {
    let ctx = TestContext::new();
    let cache = TypedCache::new(engine(&ctx));
    let _: u32 = cache.entry("k").refresh(policy()).or_load(|| 1).unwrap();
    ctx.pass(S(12));
    let _: u32 = cache
        .entry("k")
        .refresh(policy())
        .or_load(|| -> u32 { panic!("loader bug (expected by the test)") })
        .unwrap();
    eventually("the release", || cache.refreshes_in_flight() == 0);
    let _: u32 = cache.entry("k").refresh(policy()).or_load(|| 3).unwrap();
    eventually("the second refresh", || {
        cache.get::<u32>("k").unwrap() == Some(3)
    });
}

#[test]
fn early_refresh_is_drawn_before_staleness_from_the_recorded_load_time() {
    let ctx = TestContext::new();
    let cache = TypedCache::new(engine(&ctx));
    let slow = || {
        std::thread::sleep(Duration::from_millis(5));
        1u32
    };
    // A beta so large that 5 ms of load time against 10 s of freshness always draws.
    let eager = policy().early(1e9);
    let _: u32 = cache.entry("k").refresh(eager).or_load(slow).unwrap();
    let _: u32 = cache.entry("k").refresh(eager).or_load(|| 2).unwrap();
    eventually("the early refresh", || {
        cache.get::<u32>("k").unwrap() == Some(2)
    });
    let stats = cache.stats();
    assert_eq!(
        (stats.early_refreshes, stats.refreshes, stats.stale_hits),
        (1, 1, 0),
        "{stats:?}"
    );

    // A beta so small it never draws; and a value written by `set` records no load time, so
    // it never refreshes early whatever beta says.
    let shy = policy().early(1e-9);
    let _: u32 = cache.entry("shy").refresh(shy).or_load(slow).unwrap();
    cache
        .set("plain", &1u32, cache_core::Ttl::After(S(20)))
        .unwrap();
    for _ in 0..100 {
        let _: u32 = cache
            .entry("shy")
            .refresh(shy)
            .or_load(|| -> u32 { panic!("drawn") })
            .unwrap();
        let _: u32 = cache
            .entry("plain")
            .refresh(eager)
            .or_load(|| -> u32 { panic!("no load time") })
            .unwrap();
    }
    assert_eq!(cache.stats().refreshes, 1);
}

#[test]
fn bad_policies_are_typed_errors_that_change_nothing() {
    let ctx = TestContext::new();
    let cache = TypedCache::new(engine(&ctx));
    for bad in [
        Refresh::after(Duration::ZERO),
        policy().early(f64::NAN),
        policy().early(0.0),
    ] {
        let err = cache.entry("k").refresh(bad).or_load(|| 1u32).unwrap_err();
        assert!(
            matches!(err, cache_core::CacheError::InvalidConfig { .. }),
            "{err}"
        );
    }
    assert!(!cache.exists("k").unwrap());
}

#[test]
fn the_background_limit_bounds_refreshes() {
    let ctx = TestContext::new();
    let cache = TypedCache::builder(engine(&ctx))
        .max_background_refreshes(2)
        .build()
        .unwrap();
    for key in ["a", "b", "c"] {
        let _: u32 = cache.entry(key).refresh(policy()).or_load(|| 1).unwrap();
    }
    ctx.pass(S(12));
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(std::sync::Mutex::new(gate));
    for key in ["a", "b", "c"] {
        let gate = gate.clone();
        let v: u32 = cache
            .entry(key)
            .refresh(policy())
            .or_load(move || {
                let _ = gate.lock().unwrap().recv();
                2
            })
            .unwrap();
        assert_eq!(v, 1);
    }
    assert_eq!(
        cache.refreshes_in_flight(),
        2,
        "the third waits for a free slot"
    );
    assert_eq!(cache.stats().refreshes, 2);
    drop(release);
    eventually("the refreshes", || cache.refreshes_in_flight() == 0);
    let _: u32 = cache.entry("c").refresh(policy()).or_load(|| 2).unwrap();
    eventually("the third", || cache.get::<u32>("c").unwrap() == Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_stale_values_are_refreshed_on_the_runtime() {
    let ctx = TestContext::new();
    let cache = AsyncTypedCache::new(engine(&ctx));
    let _: u32 = cache
        .entry("k")
        .refresh(policy())
        .or_load(|| async { 1 })
        .await
        .unwrap();
    ctx.pass(S(12));
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    // Without the feature the caller runs the refresh itself: it must not wait for the gate.
    let gated = cfg!(feature = "tokio");
    let v: u32 = cache
        .entry("k")
        .refresh(policy())
        .or_load(move || async move {
            if gated {
                let _ = gate.await;
            }
            2
        })
        .await
        .unwrap();
    if cfg!(feature = "tokio") {
        // Spawned: the caller was served the stale value while the refresh waits.
        assert_eq!(v, 1);
        assert_eq!(cache.refreshes_in_flight(), 1);
        let again: u32 = cache
            .entry("k")
            .refresh(policy())
            .or_load(|| async { panic!("one refresh per key") })
            .await
            .unwrap();
        assert_eq!(again, 1);
        release.send(()).unwrap();
        let deadline = Instant::now() + S(10);
        while cache.get::<u32>("k").await.unwrap() != Some(2) {
            assert!(Instant::now() < deadline, "the refresh never stored");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    } else {
        drop(release);
        assert_eq!(v, 2);
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.stale_hits, stats.refreshes),
        (if cfg!(feature = "tokio") { 2 } else { 1 }, 1)
    );
}

/// Polls a future that never waits (the in-memory engine's) to completion without a runtime.
fn run_without_runtime<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..1000 {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("the future did not finish")
}

#[test]
fn async_without_a_runtime_the_finder_refreshes_and_gets_the_new_value() {
    let ctx = TestContext::new();
    let cache = AsyncTypedCache::new(engine(&ctx));
    let _: u32 =
        run_without_runtime(cache.entry("k").refresh(policy()).or_load(|| async { 1 })).unwrap();
    ctx.pass(S(12));
    let v: u32 =
        run_without_runtime(cache.entry("k").refresh(policy()).or_load(|| async { 2 })).unwrap();
    assert_eq!(
        v, 2,
        "refreshed in the caller: there is no runtime to spawn on"
    );
    assert_eq!(cache.refreshes_in_flight(), 0);
    assert_eq!(run_without_runtime(cache.get::<u32>("k")).unwrap(), Some(2));
    let stats = cache.stats();
    assert_eq!(
        (stats.stale_hits, stats.refreshes, stats.loads),
        (1, 1, 1),
        "{stats:?}"
    );
}

#[test]
fn freshness_is_the_servers_so_every_process_agrees() {
    use cache_redis::RedisEngine;
    use cache_tests::servers::{ServerKind, TestServer};
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let connect = || {
        RedisEngine::builder()
            .url(server.url())
            .namespace("refresh")
            .build()
            .unwrap()
    };
    // Two caches over two engines: two processes, as far as freshness is concerned.
    let (first, second) = (TypedCache::new(connect()), TypedCache::new(connect()));
    let short = Refresh::after(Duration::from_millis(300)).serve_stale_for(S(20));
    let _: u32 = first.entry("k").refresh(short).or_load(|| 1).unwrap();
    let v: u32 = second
        .entry("k")
        .refresh(short)
        .or_load(|| -> u32 { panic!("fresh on the server") })
        .unwrap();
    assert_eq!(v, 1);
    std::thread::sleep(Duration::from_millis(400));
    let v: u32 = second.entry("k").refresh(short).or_load(|| 2).unwrap();
    assert_eq!(v, 1, "stale, served");
    eventually("the refresh", || first.get::<u32>("k").unwrap() == Some(2));
    let left = first.engine().remaining_ttl("k").unwrap();
    assert!(
        matches!(left, Some(Remaining::After(d)) if d > S(19)),
        "stored for freshness and stale window: {left:?}"
    );
}
