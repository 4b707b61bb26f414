//! Layers on the async face: the same interceptors around async engines.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use cache_core::{AsyncCacheEngine, Bytes, Ttl};
use cache_layers::{FailOpen, LayerExt, Stats};
use cache_local::InMemoryEngine;
use cache_redis::RedisEngine;

fn dead_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("redis://127.0.0.1:{port}")
}

#[tokio::test]
async fn failing_open_works_on_the_async_face_too() {
    let fail_open = FailOpen::new();
    let engine = RedisEngine::async_builder()
        .url(dead_address())
        .build()
        .unwrap()
        .layer(fail_open.clone())
        .layer(Stats::new());
    assert_eq!(engine.get("k").await.unwrap(), None);
    engine
        .set("k", Bytes::from_static(b"v"), Ttl::Default)
        .await
        .unwrap();
    assert_eq!(fail_open.counts().failed_open_reads, 1);
    assert_eq!(fail_open.counts().failed_open_writes, 1);
    let counts = engine.interceptor().snapshot();
    assert_eq!((counts.misses, counts.errors), (1, 0), "{counts:?}");
}

#[tokio::test]
async fn layers_wrap_async_engines() {
    let stats = Stats::new();
    let engine = InMemoryEngine::new().layer(stats.clone());
    engine
        .set("k", Bytes::from_static(b"v"), Ttl::Default)
        .await
        .unwrap();
    assert!(engine.get("k").await.unwrap().is_some());
    assert_eq!(stats.snapshot().hits, 1);
}
