//! Both faces of the Redis engine pass the whole conformance kit through a Unix domain socket
//! (`redis+unix://`), against a real `redis-server` listening on one.

use std::sync::{Arc, OnceLock};

use cache_core::CacheEngine;
use cache_redis::RedisEngine;
use cache_tests::TestContext;
use cache_tests::servers::{OrSkip, ServerKind, TestServer};

/// One server for the whole binary, listening on a socket in its own directory.
fn server() -> Option<Arc<TestServer>> {
    static SERVER: OnceLock<Option<Arc<TestServer>>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            TestServer::start_unix(ServerKind::Redis)
                .map(Arc::new)
                .or_skip()
        })
        .clone()
}

fn url() -> String {
    let server = server().expect("checked by `require`");
    server.unix_url().expect("a Unix socket server")
}

fn redis(ctx: &TestContext) -> RedisEngine {
    RedisEngine::builder()
        .url(url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

cache_tests::conformance_suite!(redis_unix_kit, redis, require = server().is_some());

#[cfg(feature = "tokio")]
fn async_redis(ctx: &TestContext) -> cache_redis::AsyncRedisEngine {
    RedisEngine::async_builder()
        .url(url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

#[cfg(feature = "tokio")]
cache_tests::async_conformance_suite!(
    async_redis_unix_kit,
    async_redis,
    require = server().is_some()
);

#[test]
fn the_socket_is_what_is_used_and_named_in_errors() {
    let Some(server) = server() else {
        return;
    };
    let path = server.unix_socket().unwrap();
    let engine = RedisEngine::builder()
        .url(format!("unix://{}?db=2", path.display()))
        .namespace("unix-db")
        .build()
        .unwrap();
    engine.set("k", "v".into(), cache_core::Ttl::Never).unwrap();
    // Database 2 of the same server, seen through TCP.
    let tcp = RedisEngine::builder()
        .url(format!("{}/2", server.url()))
        .namespace("unix-db")
        .build()
        .unwrap();
    assert_eq!(tcp.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    // A socket nobody listens on: a connection error naming it, at once.
    let missing = path.with_file_name("missing.sock");
    let engine = RedisEngine::builder()
        .url(format!("redis+unix://{}", missing.display()))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = engine.get("k").unwrap_err();
    assert!(
        matches!(err, cache_core::CacheError::Connection { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("missing.sock"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
