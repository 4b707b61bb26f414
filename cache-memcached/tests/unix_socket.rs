//! Both faces of the memcached engine pass the whole conformance kit through a Unix domain
//! socket, against a real `memcached` listening only there (`-s`).

use std::sync::{Arc, OnceLock};

use cache_core::CacheEngine;
use cache_memcached::MemcachedEngine;
use cache_tests::TestContext;
use cache_tests::servers::{OrSkip, ServerKind, TestServer};

/// One server for the whole binary, listening on a socket in its own directory.
fn server() -> Option<Arc<TestServer>> {
    static SERVER: OnceLock<Option<Arc<TestServer>>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            TestServer::start_unix(ServerKind::Memcached)
                .map(Arc::new)
                .or_skip()
        })
        .clone()
}

fn url() -> String {
    let server = server().expect("checked by `require`");
    server.unix_url().expect("a Unix socket server")
}

fn memcached(ctx: &TestContext) -> MemcachedEngine {
    MemcachedEngine::builder()
        .server(url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

cache_tests::conformance_suite!(memcached_unix_kit, memcached, require = server().is_some());

#[cfg(feature = "tokio")]
fn async_memcached(ctx: &TestContext) -> cache_memcached::AsyncMemcachedEngine {
    MemcachedEngine::async_builder()
        .server(url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

#[cfg(feature = "tokio")]
cache_tests::async_conformance_suite!(
    async_memcached_unix_kit,
    async_memcached,
    require = server().is_some()
);

#[test]
fn a_bare_path_works_and_a_missing_socket_is_named() {
    let Some(server) = server() else {
        return;
    };
    let path = server.unix_socket().unwrap();
    let engine = MemcachedEngine::builder()
        .server(path.display().to_string())
        .namespace("bare-path")
        .build()
        .unwrap();
    engine.set("k", "v".into(), cache_core::Ttl::Never).unwrap();
    assert_eq!(engine.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    let missing = path.with_file_name("missing.sock");
    let engine = MemcachedEngine::builder()
        .server(format!("memcached+unix://{}", missing.display()))
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
