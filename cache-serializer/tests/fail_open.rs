//! Failing open: a dead backend makes reads miss and writes skip, counted and reported; the
//! default stays failing closed.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::{CacheEngine, CacheError, Ttl};
use cache_local::InMemoryEngine;
use cache_redis::RedisEngine;
use cache_serializer::TypedCache;

fn dead_redis() -> RedisEngine {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    RedisEngine::builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
}

#[test]
fn by_default_backend_errors_are_returned() {
    let cache = TypedCache::new(dead_redis());
    assert!(matches!(
        cache.get::<u32>("k"),
        Err(CacheError::Connection { .. })
    ));
    assert!(matches!(
        cache.set("k", &1u32, Ttl::Default),
        Err(CacheError::Connection { .. })
    ));
}

#[test]
fn failing_open_turns_a_dead_server_into_misses() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let cache = TypedCache::builder(dead_redis())
        .fail_open(true)
        .on_backend_error({
            let seen = Arc::clone(&seen);
            move |e| seen.lock().unwrap().push(e.to_string())
        })
        .build()
        .unwrap();
    let start = Instant::now();
    assert_eq!(cache.get::<u32>("k").unwrap(), None);
    cache.set("k", &1u32, Ttl::Default).unwrap();
    assert!(!cache.exists("k").unwrap());
    assert!(!cache.delete("k").unwrap());
    assert_eq!(
        cache.get_many::<u32>(&["a", "b"]).unwrap(),
        vec![None, None]
    );
    cache.set_many(&[("a", 1u32)], Ttl::Default).unwrap();
    cache.clear().unwrap();
    // The service keeps working without its cache: the loader's value comes back.
    let value = cache
        .entry("report")
        .ttl(Ttl::Default)
        .or_load(|| 42u64)
        .unwrap();
    assert_eq!(value, 42);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "failing fast: {:?}",
        start.elapsed()
    );
    let stats = cache.stats();
    assert_eq!(stats.failed_open_reads, 5, "{stats:?}");
    assert_eq!(stats.failed_open_writes, 5, "{stats:?}");
    assert_eq!(stats.sets, 0, "nothing was stored: {stats:?}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 10);
    assert!(seen[0].contains("could not reach 127.0.0.1"), "{}", seen[0]);
}

#[test]
fn mistakes_in_the_call_are_still_errors_when_failing_open() {
    let cache = TypedCache::builder(InMemoryEngine::new())
        .fail_open(true)
        .build()
        .unwrap();
    assert!(matches!(
        cache.set("bad key", &1u8, Ttl::Default),
        Err(CacheError::InvalidKey { .. })
    ));
    assert!(matches!(
        cache.get::<u8>(""),
        Err(CacheError::InvalidKey { .. })
    ));
    assert!(matches!(
        cache.set("k", &1u8, Ttl::After(Duration::MAX)),
        Err(CacheError::InvalidTtl { .. })
    ));
    // A closed engine is a backend failure: absorbed.
    cache.engine().close().unwrap();
    assert_eq!(cache.get::<u8>("k").unwrap(), None);
    assert_eq!(cache.stats().failed_open_reads, 1);
}
