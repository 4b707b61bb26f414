//! The rest of the typed API over both local engines.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use cache_core::{CacheError, Ttl};
use cache_local::{InMemoryEngine, ThreadLocalEngine};
use cache_serializer::TypedCache;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    y: i32,
}

#[test]
fn bulk_operations_and_stats() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let entries = [("a", Point { x: 1, y: 2 }), ("b", Point { x: 3, y: 4 })];
    cache.set_many(&entries, Ttl::Default).unwrap();
    let got = cache.get_many::<Point>(&["b", "missing", "a"]).unwrap();
    assert_eq!(
        got,
        vec![Some(entries[1].1.clone()), None, Some(entries[0].1.clone())]
    );
    assert!(cache.exists("a").unwrap());
    assert!(cache.delete("a").unwrap());
    cache.clear().unwrap();
    assert_eq!(cache.get::<Point>("b").unwrap(), None);
    let stats = cache.stats();
    assert_eq!(
        (stats.sets, stats.hits, stats.misses),
        (2, 2, 2),
        "{stats:?}"
    );
}

#[test]
fn engine_errors_pass_through() {
    let cache = TypedCache::new(InMemoryEngine::new());
    assert!(matches!(
        cache.set("bad key", &1u8, Ttl::Default),
        Err(CacheError::InvalidKey { .. })
    ));
    assert!(matches!(
        cache.set("k", &1u8, Ttl::After(Duration::MAX)),
        Err(CacheError::InvalidTtl { .. })
    ));
    assert!(matches!(
        cache.get::<u8>(""),
        Err(CacheError::InvalidKey { .. })
    ));
}

#[test]
fn works_over_any_engine() {
    let cache = TypedCache::new(ThreadLocalEngine::new());
    cache
        .set("p", &Point { x: -1, y: 9 }, Ttl::Default)
        .unwrap();
    assert_eq!(
        cache.get::<Point>("p").unwrap(),
        Some(Point { x: -1, y: 9 })
    );
    let boxed: TypedCache<Box<dyn cache_core::CacheEngine>> =
        TypedCache::new(Box::new(InMemoryEngine::new()));
    boxed.set("p", &Point { x: 0, y: 0 }, Ttl::Never).unwrap();
    assert!(boxed.get::<Point>("p").unwrap().is_some());
}

#[cfg(feature = "json")]
#[test]
fn json_codec_round_trips_and_is_told_apart_from_bincode() {
    let engine = InMemoryEngine::new();
    let json = TypedCache::builder(engine.clone())
        .codec(cache_serializer::Json)
        .build()
        .unwrap();
    json.set("p", &Point { x: 5, y: 6 }, Ttl::Default).unwrap();
    assert_eq!(json.get::<Point>("p").unwrap(), Some(Point { x: 5, y: 6 }));
    let raw = cache_core::CacheEngine::get(&engine, "p").unwrap().unwrap();
    assert_eq!(&raw[11..], br#"{"x":5,"y":6}"#);
    let bincode = TypedCache::new(engine);
    assert_eq!(bincode.get::<Point>("p").unwrap(), None);
    assert_eq!(bincode.stats().schema_mismatches, 1);
}
