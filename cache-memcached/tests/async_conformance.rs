//! The async Memcached engine passes the whole conformance kit against a real `memcached`.

#![cfg(feature = "tokio")]

use cache_memcached::{AsyncMemcachedEngine, MemcachedEngine};
use cache_tests::TestContext;
use cache_tests::servers::{ServerKind, TestServer};

fn memcached(ctx: &TestContext) -> AsyncMemcachedEngine {
    let server = TestServer::shared(ServerKind::Memcached).expect("checked by `require`");
    MemcachedEngine::async_builder()
        .server(server.url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

cache_tests::async_conformance_suite!(
    async_memcached_kit,
    memcached,
    require = TestServer::shared(ServerKind::Memcached).is_some()
);
