//! The memcached engine passes the whole conformance kit against a real `memcached`.

use cache_memcached::MemcachedEngine;
use cache_tests::TestContext;
use cache_tests::servers::{ServerKind, TestServer};

fn memcached(ctx: &TestContext) -> MemcachedEngine {
    let server = TestServer::shared(ServerKind::Memcached).expect("checked by `require`");
    MemcachedEngine::builder()
        .server(server.url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

cache_tests::conformance_suite!(
    memcached_kit,
    memcached,
    require = TestServer::shared(ServerKind::Memcached).is_some()
);
