//! Coherence promises of the tiered engine: changes made anywhere reach the local tier, refills
//! never outlive the shared entry or an invalidation that raced them, and a broken feed stops
//! local caching until it is back. Against a real `redis-server` started by the harness, and
//! with a hand-driven feed where the timing must be exact.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::invalidation::{Invalidation, InvalidationSource, Sink, Subscription};
use cache_core::{Bytes, CacheEngine, CacheError, Capabilities, Remaining, Result, Ttl};
use cache_local::{InMemoryEngine, ThreadLocalEngine};
use cache_redis::RedisEngine;
use cache_tests::ReferenceEngine;
use cache_tests::servers::{OrSkip, ServerKind, TestServer};
use cache_tiered::TieredEngine;

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn redis(server: &TestServer, namespace: &str) -> RedisEngine {
    RedisEngine::builder()
        .url(server.url())
        .namespace(namespace)
        .build()
        .unwrap()
}

fn tiered(server: &TestServer, namespace: &str) -> TieredEngine<InMemoryEngine, RedisEngine> {
    let shared = redis(server, namespace);
    let feed = shared.invalidations();
    TieredEngine::builder(InMemoryEngine::new(), shared)
        .invalidations(feed)
        .build()
        .unwrap()
}

fn admin(server: &TestServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Polls `read` until it gives `want`, failing after `within`.
fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

#[test]
fn changes_by_anyone_reach_the_local_tier() {
    let Some(server) = TestServer::start(ServerKind::Redis, &[]).or_skip() else {
        return;
    };
    let a = tiered(&server, "co");
    let b = tiered(&server, "co");
    let plain = redis(&server, "co");
    let mut raw = admin(&server);
    assert!(
        b.is_caching_locally(),
        "the feed answers: coherent from the start"
    );

    a.set("k", v("1"), Ttl::Default).unwrap();
    // A read that races the echo of A's write is (rightly) not kept: read until one is.
    eventually("kept locally", Duration::from_secs(2), || {
        b.get("k").unwrap() == Some(v("1")) && b.local().get("k").unwrap() == Some(v("1"))
    });

    // Another tiered engine, a plain engine, and a raw client all invalidate B's copy.
    a.set("k", v("2"), Ttl::Default).unwrap();
    eventually("a tiered write", Duration::from_secs(2), || {
        b.get("k").unwrap() == Some(v("2"))
    });
    plain.set("k", v("3"), Ttl::Default).unwrap();
    eventually("a plain engine's write", Duration::from_secs(2), || {
        b.get("k").unwrap() == Some(v("3"))
    });
    redis::cmd("SET")
        .arg("co:k")
        .arg("4")
        .exec(&mut raw)
        .unwrap();
    eventually("redis-cli's write", Duration::from_secs(2), || {
        b.get("k").unwrap() == Some(v("4"))
    });
    plain.delete("k").unwrap();
    eventually("a delete", Duration::from_secs(2), || {
        b.get("k").unwrap().is_none()
    });

    // A flush is an invalidation of everything.
    plain.set("x", v("x"), Ttl::Default).unwrap();
    assert_eq!(b.get("x").unwrap(), Some(v("x")));
    redis::cmd("FLUSHDB").exec(&mut raw).unwrap();
    eventually("FLUSHDB", Duration::from_secs(2), || {
        b.get("x").unwrap().is_none()
    });

    // Other namespaces are not this feed's business.
    let other = redis(&server, "elsewhere");
    let before = b.stats().invalidated_keys;
    other.set("k", v("other"), Ttl::Default).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(b.stats().invalidated_keys, before);
    assert!(b.stats().invalidated_keys >= 4, "{:?}", b.stats());
}

#[test]
fn refills_live_no_longer_than_the_shared_entry_or_the_cap() {
    let Some(server) = TestServer::start(ServerKind::Redis, &[]).or_skip() else {
        return;
    };
    let plain = redis(&server, "ttl");
    let shared = redis(&server, "ttl");
    let feed = shared.invalidations();
    let cache = TieredEngine::builder(InMemoryEngine::new(), shared)
        .local_ttl(Duration::from_millis(400))
        .invalidations(feed)
        .build()
        .unwrap();

    // A shared entry with 1 s left, read after 600 ms: the local copy gets what is left.
    plain
        .set("short", v("s"), Ttl::After(Duration::from_secs(1)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(cache.get("short").unwrap(), Some(v("s")));
    let Some(Remaining::After(left)) = cache.local().remaining_ttl("short").unwrap() else {
        panic!("the local copy has a TTL");
    };
    // Local copies may outlive their TTL by the local tier's resolution (its clock tick).
    let tick = cache.local().capabilities().ttl_resolution;
    assert!(left <= Duration::from_millis(400) + tick, "{left:?}");

    // A shared entry that never expires: the local copy lives no longer than the cap.
    plain.set("forever", v("f"), Ttl::Never).unwrap();
    eventually("kept locally", Duration::from_secs(2), || {
        cache.get("forever").unwrap() == Some(v("f"))
            && cache.local().get("forever").unwrap().is_some()
    });
    let Some(Remaining::After(left)) = cache.local().remaining_ttl("forever").unwrap() else {
        panic!("the local copy has a TTL");
    };
    assert!(left <= Duration::from_millis(400) + tick, "{left:?}");
    assert_eq!(
        cache.remaining_ttl("forever").unwrap(),
        Some(Remaining::Never),
        "remaining_ttl is the shared tier's"
    );

    // The shared entry expires: the local copy is gone with it.
    plain
        .set("brief", v("b"), Ttl::After(Duration::from_millis(300)))
        .unwrap();
    assert_eq!(cache.get("brief").unwrap(), Some(v("b")));
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(cache.get("brief").unwrap(), None);
}

#[test]
fn a_killed_feed_stops_local_caching_until_it_is_back() {
    let Some(server) = TestServer::start(ServerKind::Redis, &[]).or_skip() else {
        return;
    };
    let b = tiered(&server, "kill");
    let plain = redis(&server, "kill");
    let mut raw = admin(&server);
    for round in 0..3 {
        plain.set("k", v("old"), Ttl::Default).unwrap();
        eventually("refill", Duration::from_secs(2), || {
            b.get("k").unwrap() == Some(v("old")) && b.local().get("k").unwrap().is_some()
        });
        let lost = b.stats().feed_lost;
        let killed: u64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "pubsub"][..])
            .query(&mut raw)
            .unwrap();
        assert_eq!(killed, 1, "round {round}: B's feed is the one subscriber");
        // A change while the feed is down, which no invalidation will report.
        plain.set("k", v("new"), Ttl::Default).unwrap();
        let noticed = eventually("the loss noticed", Duration::from_secs(2), || {
            b.stats().feed_lost > lost
        });
        assert!(
            noticed < Duration::from_millis(500),
            "a closed connection is noticed at once"
        );
        assert_eq!(b.get("k").unwrap(), Some(v("new")), "round {round}");
        eventually("the feed back", Duration::from_secs(3), || {
            b.is_caching_locally()
        });
        assert_eq!(b.get("k").unwrap(), Some(v("new")));
    }
}

/// A feed driven by the test.
#[derive(Clone, Default)]
struct ManualFeed {
    sink: Arc<Mutex<Option<Sink>>>,
}

impl std::fmt::Debug for ManualFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManualFeed")
    }
}

impl ManualFeed {
    fn say(&self, event: Invalidation<'_>) {
        let sink = self.sink.lock().unwrap().clone().expect("subscribed");
        sink(event);
    }
}

impl InvalidationSource for ManualFeed {
    fn subscribe(&self, sink: Sink) -> Result<Subscription> {
        sink(Invalidation::Connected);
        *self.sink.lock().unwrap() = Some(sink);
        let slot = Arc::clone(&self.sink);
        Ok(Subscription::new(move || {
            slot.lock().unwrap().take();
        }))
    }

    fn detection_bound(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// A shared engine whose `get_with_ttl` can be held after it has read, until released.
#[derive(Debug)]
struct Gated {
    inner: ReferenceEngine,
    gate: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
}

macro_rules! forward {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        $(fn $name(&self, $($arg: $ty),*) -> Result<$out> { self.inner.$name($($arg),*) })*
    };
}

impl CacheEngine for Gated {
    forward! {
        get(key: &str) -> Option<Bytes>;
        set(key: &str, value: Bytes, ttl: Ttl) -> ();
        delete(key: &str) -> bool;
        delete_if_equals(key: &str, expected: &[u8]) -> bool;
        exists(key: &str) -> bool;
        clear() -> ();
        close() -> ();
        get_many(keys: &[&str]) -> Vec<Option<Bytes>>;
        set_many(entries: &[(&str, Bytes)], ttl: Ttl) -> ();
        delete_many(keys: &[&str]) -> u64;
        add(key: &str, value: Bytes, ttl: Ttl) -> bool;
        increment(key: &str, delta: i64) -> i64;
        touch(key: &str, ttl: Ttl) -> bool;
        remaining_ttl(key: &str) -> Option<Remaining>;
    }

    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        let found = self.inner.get_with_ttl(key)?;
        if let Some((read, release)) = self.gate.lock().unwrap().take() {
            read.send(()).unwrap();
            release.recv().unwrap();
        }
        Ok(found)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

fn gated() -> (
    TieredEngine<InMemoryEngine, Arc<Gated>>,
    Arc<Gated>,
    ManualFeed,
) {
    let shared = Arc::new(Gated {
        inner: ReferenceEngine::in_namespace("race").unwrap(),
        gate: Mutex::new(None),
    });
    let feed = ManualFeed::default();
    let cache = TieredEngine::builder(InMemoryEngine::new(), Arc::clone(&shared))
        .invalidations(feed.clone())
        .build()
        .unwrap();
    (cache, shared, feed)
}

/// Holds the next shared read after it has read; returns (it has read, release it).
fn hold(shared: &Gated) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (read_tx, read_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    *shared.gate.lock().unwrap() = Some((read_tx, release_rx));
    (read_rx, release_tx)
}

#[test]
fn a_refill_that_raced_an_invalidation_is_not_kept() {
    for event in ["key", "all", "lost"] {
        let (cache, shared, feed) = gated();
        shared.inner.set("k", v("old"), Ttl::Default).unwrap();
        let (read, release) = hold(&shared);
        std::thread::scope(|s| {
            let reader = s.spawn(|| cache.get("k").unwrap());
            read.recv().unwrap();
            // The shared value changes while the refill holds the old one, and the feed says so
            // before the refill inserts.
            shared.inner.set("k", v("new"), Ttl::Default).unwrap();
            match event {
                "key" => feed.say(Invalidation::Key("k")),
                "all" => feed.say(Invalidation::All),
                _ => feed.say(Invalidation::Lost),
            }
            release.send(()).unwrap();
            assert_eq!(
                reader.join().unwrap(),
                Some(v("old")),
                "{event}: it read the old one"
            );
        });
        assert_eq!(
            cache.local().get("k").unwrap(),
            None,
            "{event}: the old value must not stick"
        );
        assert_eq!(cache.stats().refills_dropped, 1, "{event}");
        if event == "lost" {
            assert!(!cache.is_caching_locally());
            assert_eq!(cache.get("k").unwrap(), Some(v("new")));
            assert_eq!(
                cache.local().get("k").unwrap(),
                None,
                "nothing kept while lost"
            );
            feed.say(Invalidation::Connected);
        }
        assert_eq!(cache.get("k").unwrap(), Some(v("new")), "{event}");
        assert_eq!(cache.local().get("k").unwrap(), Some(v("new")), "{event}");
    }
}

#[test]
fn a_refill_that_raced_this_process_own_write_is_not_kept() {
    let (cache, shared, _feed) = gated();
    shared.inner.set("k", v("old"), Ttl::Default).unwrap();
    let (read, release) = hold(&shared);
    std::thread::scope(|s| {
        let reader = s.spawn(|| cache.get("k").unwrap());
        read.recv().unwrap();
        cache.set("k", v("mine"), Ttl::Default).unwrap();
        release.send(()).unwrap();
        reader.join().unwrap();
    });
    assert_eq!(cache.get("k").unwrap(), Some(v("mine")));
}

#[test]
fn the_builder_refuses_what_cannot_be_coherent() {
    let shared = || ReferenceEngine::in_namespace("b").unwrap();
    let error = TieredEngine::builder(InMemoryEngine::new(), shared())
        .build()
        .unwrap_err();
    assert!(matches!(error, CacheError::InvalidConfig { .. }));
    assert!(
        error.to_string().contains("without_invalidations"),
        "says what to do: {error}"
    );
    let error = TieredEngine::builder(ThreadLocalEngine::new(), shared())
        .without_invalidations()
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("per thread"), "{error}");
    let error = TieredEngine::builder(InMemoryEngine::new(), shared())
        .local_ttl(Duration::ZERO)
        .without_invalidations()
        .build()
        .unwrap_err();
    assert!(error.to_string().contains("local_ttl"), "{error}");
    let cache = TieredEngine::builder(InMemoryEngine::new(), shared())
        .local_ttl(Duration::from_secs(5))
        .without_invalidations()
        .build()
        .unwrap();
    assert_eq!(cache.staleness_bound(), Duration::from_secs(5));
    assert_eq!(cache.capabilities().backend, "tiered");
}

#[test]
fn a_silently_dead_feed_is_noticed_within_its_bound() {
    let Some(server) = TestServer::start(ServerKind::Redis, &[]).or_skip() else {
        return;
    };
    let b = tiered(&server, "frozen");
    let bound = b.staleness_bound();
    assert!(bound < Duration::from_secs(2), "{bound:?}");
    b.set("k", v("old"), Ttl::Default).unwrap();
    eventually("refill", Duration::from_secs(2), || {
        b.get("k").unwrap().is_some() && b.local().get("k").unwrap().is_some()
    });
    // A frozen server closes nothing: only the heartbeat can tell.
    server.signal("STOP");
    let noticed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        eventually(
            "the loss noticed",
            bound + Duration::from_millis(500),
            || b.stats().feed_lost > 0,
        )
    }));
    server.signal("CONT");
    let noticed = noticed.unwrap();
    assert!(
        noticed <= bound + Duration::from_millis(100),
        "{noticed:?} > {bound:?}"
    );
    assert_eq!(
        b.local().get("k").unwrap(),
        None,
        "the local tier was dropped"
    );
    eventually("the feed back", Duration::from_secs(5), || {
        b.is_caching_locally()
    });
    assert_eq!(b.get("k").unwrap(), Some(v("old")));
}

#[test]
fn the_async_face_is_coherent_and_safe_to_cancel() {
    let Some(server) = TestServer::start(ServerKind::Redis, &[]).or_skip() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        use cache_core::AsyncCacheEngine;
        use std::future::Future;
        let shared = cache_redis::AsyncRedisEngine::builder()
            .url(server.url())
            .namespace("async")
            .build()
            .unwrap();
        let feed = shared.invalidations();
        let cache = cache_tiered::AsyncTieredEngine::builder(InMemoryEngine::new(), shared)
            .invalidations(feed)
            .build()
            .unwrap();
        let plain = redis(&server, "async");
        plain.set("k", v("1"), Ttl::Default).unwrap();
        // Reads that race the echo of the write are not kept: read until one is.
        let start = Instant::now();
        while !(cache.get("k").await.unwrap() == Some(v("1"))
            && CacheEngine::get(cache.local(), "k").unwrap() == Some(v("1")))
        {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "never kept locally"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        plain.set("k", v("2"), Ttl::Default).unwrap();
        let start = Instant::now();
        while cache.get("k").await.unwrap() != Some(v("2")) {
            assert!(start.elapsed() < Duration::from_secs(2), "not invalidated");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A write whose future is dropped before it completes still drops the local copy.
        let start = Instant::now();
        while CacheEngine::get(cache.local(), "k").unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "never kept locally"
            );
            assert_eq!(cache.get("k").await.unwrap(), Some(v("2")));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        {
            let write = cache.set("k", v("3"), Ttl::Default);
            let mut write = std::pin::pin!(write);
            let waker = std::task::Waker::noop();
            let mut context = std::task::Context::from_waker(waker);
            let _ = write.as_mut().poll(&mut context);
        }
        assert_eq!(CacheEngine::get(cache.local(), "k").unwrap(), None);
    });
}
