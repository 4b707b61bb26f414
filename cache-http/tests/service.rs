//! The layer as a plain `tower` service: cancellation of a single-flight leader, engine
//! failures (fail open), foreign and damaged bytes under its keys, and configuration errors.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cache_core::{AsyncCacheEngine, CacheError, Capabilities, Remaining, Result, Ttl};
use cache_http::HttpCacheLayer;
use cache_local::InMemoryEngine;
use cache_redis::RedisEngine;
use common::App;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};

fn get(target: &str) -> Request<Full<Bytes>> {
    Request::get(target).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_leader_lets_a_waiter_proceed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = {
        let calls = Arc::clone(&calls);
        tower::service_fn(move |_request: Request<Full<Bytes>>| {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if call == 1 {
                    // The first call never answers: its caller gives up.
                    std::future::pending::<()>().await;
                }
                let response = Response::builder()
                    .header("cache-control", "max-age=60")
                    .body(Full::new(Bytes::from(format!("call {call}"))))
                    .unwrap();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let layer = HttpCacheLayer::new(InMemoryEngine::new()).unwrap();
    let service = layer.layer(inner);

    let leader = tokio::spawn(service.clone().oneshot(get("/k")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiter = tokio::spawn(service.clone().oneshot(get("/k")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the waiter waits for the leader"
    );
    assert!(!waiter.is_finished());

    leader.abort();
    let response = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter proceeds once the leader is gone")
        .unwrap()
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "call 2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // What the waiter fetched was stored.
    let response = service.oneshot(get("/k")).await.unwrap();
    assert!(response.headers().contains_key("age"));
    assert_eq!(layer.stats().hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_failures_fail_open_and_are_reported() {
    // A Redis that is not there: every operation fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let engine = RedisEngine::async_builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let reported = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&reported);
    let app = App::start_on(Arc::new(engine), move |builder| {
        builder.on_engine_error(move |error| {
            assert!(error.is_backend_failure(), "{error}");
            seen.fetch_add(1, Ordering::SeqCst);
        })
    })
    .await;
    let target = "/down?cc=max-age=60";
    for _ in 0..3 {
        let reply = app.get(target).await;
        assert_eq!(reply.status, 200);
        assert!(!reply.hit());
    }
    assert_eq!(app.calls("GET", target), 3);
    let stats = app.layer.stats();
    // Each request: a failed read, then a failed write.
    assert_eq!(stats.engine_errors, 6, "{stats:?}");
    assert_eq!(reported.load(Ordering::SeqCst), 6);
    assert_eq!(stats.stores, 0);
    // Unsafe requests still go through when their invalidation fails.
    let reply = app.send(reqwest::Method::POST, target, &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(app.layer.stats().engine_errors, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_holds_while_the_engine_is_down() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let engine = RedisEngine::async_builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let app = Arc::new(App::start_on(Arc::new(engine), |b| b).await);
    let target = "/down?cc=max-age=60&sleep_ms=400";
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { app.get(target).await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_eq!(
        app.calls("GET", target),
        1,
        "waiters got the leader's response"
    );
}

/// What the wrapped engine does to values it stores.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Stores other bytes than it was given.
    Foreign,
    /// Drops the last byte.
    Truncate,
    /// Flips one bit in the middle.
    Flip,
}

/// An `InMemoryEngine` that damages what it stores.
#[derive(Debug)]
struct Damaging {
    inner: InMemoryEngine,
    damage: Damage,
}

impl Damaging {
    fn damage(&self, value: Bytes) -> Bytes {
        let mut bytes = value.to_vec();
        match self.damage {
            Damage::Foreign => bytes = b"{\"not\":\"an entry\"}".to_vec(),
            Damage::Truncate => {
                bytes.pop();
            }
            Damage::Flip => {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x10;
            }
        }
        Bytes::from(bytes)
    }
}

impl AsyncCacheEngine for Damaging {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        AsyncCacheEngine::get(&self.inner, key).await
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        AsyncCacheEngine::set(&self.inner, key, self.damage(value), ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        AsyncCacheEngine::delete(&self.inner, key).await
    }
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        AsyncCacheEngine::delete_if_equals(&self.inner, key, expected).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        AsyncCacheEngine::exists(&self.inner, key).await
    }
    async fn clear(&self) -> Result<()> {
        AsyncCacheEngine::clear(&self.inner).await
    }
    async fn close(&self) -> Result<()> {
        AsyncCacheEngine::close(&self.inner).await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        AsyncCacheEngine::get_many(&self.inner, keys).await
    }
    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let damaged: Vec<(&str, Bytes)> = entries
            .iter()
            .map(|(key, value)| (*key, self.damage(value.clone())))
            .collect();
        AsyncCacheEngine::set_many(&self.inner, &damaged, ttl).await
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        AsyncCacheEngine::delete_many(&self.inner, keys).await
    }
    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        AsyncCacheEngine::add(&self.inner, key, self.damage(value), ttl).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        AsyncCacheEngine::increment(&self.inner, key, delta).await
    }
    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        AsyncCacheEngine::touch(&self.inner, key, ttl).await
    }
    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        AsyncCacheEngine::remaining_ttl(&self.inner, key).await
    }
    fn capabilities(&self) -> Capabilities {
        AsyncCacheEngine::capabilities(&self.inner)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_foreign_bytes_are_misses() {
    for damage in [Damage::Foreign, Damage::Truncate, Damage::Flip] {
        let engine = Damaging {
            inner: InMemoryEngine::new(),
            damage,
        };
        let app = App::start_on(Arc::new(engine), |b| b).await;
        for target in ["/bad?cc=max-age=60", "/bad?cc=max-age=60&vary=accept"] {
            for _ in 0..3 {
                let reply = app.get(target).await;
                assert_eq!(reply.status, 200);
                assert!(
                    reply.text().contains("of GET /bad"),
                    "{damage:?}: {reply:?}"
                );
                // A flipped bit may land in the body and still decode; it is then a hit
                // with that body, never a panic.
                if !matches!(damage, Damage::Flip) {
                    assert!(!reply.hit(), "{damage:?}");
                }
            }
        }
        let stats = app.layer.stats();
        assert_eq!(stats.engine_errors, 0);
        if !matches!(damage, Damage::Flip) {
            assert!(stats.corrupt_entries >= 4, "{damage:?} {stats:?}");
        }
    }
}

/// An engine whose keys have almost no room.
#[derive(Debug)]
struct TinyKeys(InMemoryEngine);

impl AsyncCacheEngine for TinyKeys {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        AsyncCacheEngine::get(&self.0, key).await
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        AsyncCacheEngine::set(&self.0, key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        AsyncCacheEngine::delete(&self.0, key).await
    }
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        AsyncCacheEngine::delete_if_equals(&self.0, key, expected).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        AsyncCacheEngine::exists(&self.0, key).await
    }
    async fn clear(&self) -> Result<()> {
        AsyncCacheEngine::clear(&self.0).await
    }
    async fn close(&self) -> Result<()> {
        AsyncCacheEngine::close(&self.0).await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        AsyncCacheEngine::get_many(&self.0, keys).await
    }
    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        AsyncCacheEngine::set_many(&self.0, entries, ttl).await
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        AsyncCacheEngine::delete_many(&self.0, keys).await
    }
    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        AsyncCacheEngine::add(&self.0, key, value, ttl).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        AsyncCacheEngine::increment(&self.0, key, delta).await
    }
    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        AsyncCacheEngine::touch(&self.0, key, ttl).await
    }
    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        AsyncCacheEngine::remaining_ttl(&self.0, key).await
    }
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = AsyncCacheEngine::capabilities(&self.0);
        capabilities.max_key_len = 20;
        capabilities
    }
}

#[test]
fn configuration_errors_are_refused_at_build() {
    let error = HttpCacheLayer::builder(InMemoryEngine::new())
        .key_headers(["x-tenant", "not a name"])
        .build()
        .unwrap_err();
    assert!(matches!(error, CacheError::InvalidConfig { .. }), "{error}");
    let error = HttpCacheLayer::new(TinyKeys(InMemoryEngine::new())).unwrap_err();
    assert!(matches!(error, CacheError::InvalidConfig { .. }), "{error}");
    for name in ["", "edge cache", "1st", "a;b", "tier\n"] {
        let error = HttpCacheLayer::builder(InMemoryEngine::new())
            .cache_status_name(name)
            .build()
            .unwrap_err();
        assert!(
            matches!(error, CacheError::InvalidConfig { .. }),
            "{name:?}"
        );
    }
    for name in ["edge", "tier-1.example.com", "cdn:eu/2"] {
        assert!(
            HttpCacheLayer::builder(InMemoryEngine::new())
                .cache_status_name(name)
                .build()
                .is_ok(),
            "{name:?}"
        );
    }
}

#[tokio::test]
async fn the_service_keeps_the_inner_readiness_and_errors() {
    // An inner error reaches the caller unchanged, and releases waiters (none here).
    let inner = tower::service_fn(|_request: Request<Full<Bytes>>| async {
        Err::<Response<Full<Bytes>>, _>("inner failed")
    });
    let mut service = HttpCacheLayer::new(InMemoryEngine::new())
        .unwrap()
        .layer(inner);
    let error = service
        .ready()
        .await
        .unwrap()
        .call(get("/e"))
        .await
        .unwrap_err();
    assert_eq!(error, "inner failed");
}

/// A response's `Age` and freshness come from the entry's remaining TTL: an engine without it
/// is refused when the layer is built, naming what is missing.
#[test]
fn an_engine_without_remaining_ttl_is_refused() {
    let engine = cache_tests::RequiredOnly(InMemoryEngine::new());
    match HttpCacheLayer::builder(engine).build() {
        Err(CacheError::InvalidConfig { message }) => {
            assert!(message.contains("remaining_ttl"), "{message}");
            assert!(message.contains("HTTP caches"), "{message}");
        }
        Err(other) => panic!("an engine without remaining_ttl: {other}"),
        Ok(_) => panic!("an engine without remaining_ttl was accepted"),
    }
}
