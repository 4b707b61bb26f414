//! A tiered engine passes the whole conformance kit, both faces, over every shared tier: the
//! model engine (with the kit's manual clock), Redis with its invalidation feed, and memcached
//! without one.

use cache_local::InMemoryEngine;
use cache_memcached::MemcachedEngine;
use cache_redis::{AsyncRedisEngine, RedisEngine, RedisEngineBuilder};
use cache_tests::servers::{ServerKind, TestServer};
use cache_tests::{ReferenceEngine, TestContext};
use cache_tiered::{AsyncTieredEngine, TieredEngine};

fn local(ctx: &TestContext, manual_clock: bool) -> InMemoryEngine {
    let builder = InMemoryEngine::builder().max_capacity(10_000);
    let builder = if manual_clock {
        builder.clock(ctx.clock())
    } else {
        builder
    };
    builder.build().expect("valid settings")
}

fn over_reference(ctx: &TestContext) -> TieredEngine<InMemoryEngine, ReferenceEngine> {
    TieredEngine::builder(local(ctx, true), ReferenceEngine::new(ctx))
        .without_invalidations()
        .build()
        .expect("valid settings")
}

/// The kit's Redis settings, for either face's builder.
fn redis_settings<Face>(
    builder: RedisEngineBuilder<Face>,
    ctx: &TestContext,
) -> RedisEngineBuilder<Face> {
    let server = TestServer::shared(ServerKind::Redis).expect("checked by `require`");
    builder
        .url(server.url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
}

fn redis(ctx: &TestContext) -> TieredEngine<InMemoryEngine, RedisEngine> {
    let shared = redis_settings(RedisEngine::builder(), ctx)
        .build()
        .expect("valid settings");
    let feed = shared.invalidations();
    TieredEngine::builder(local(ctx, false), shared)
        .invalidations(feed)
        .build()
        .expect("valid settings")
}

fn async_redis(ctx: &TestContext) -> AsyncTieredEngine<InMemoryEngine, AsyncRedisEngine> {
    let shared = redis_settings(RedisEngine::async_builder(), ctx)
        .build()
        .expect("valid settings");
    let feed = shared.invalidations();
    AsyncTieredEngine::builder(local(ctx, false), shared)
        .invalidations(feed)
        .build()
        .expect("valid settings")
}

fn memcached(ctx: &TestContext) -> TieredEngine<InMemoryEngine, MemcachedEngine> {
    let server = TestServer::shared(ServerKind::Memcached).expect("checked by `require`");
    let shared = MemcachedEngine::builder()
        .server(server.url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings");
    TieredEngine::builder(local(ctx, false), shared)
        .without_invalidations()
        .build()
        .expect("valid settings")
}

cache_tests::conformance_suite!(tiered_reference_kit, over_reference);
cache_tests::async_conformance_suite!(tiered_async_reference_kit, |ctx: &TestContext| {
    AsyncTieredEngine::builder(local(ctx, true), ReferenceEngine::new(ctx))
        .without_invalidations()
        .build()
        .expect("valid settings")
});
cache_tests::conformance_suite!(
    tiered_redis_kit,
    redis,
    require = TestServer::shared(ServerKind::Redis).is_some()
);
cache_tests::async_conformance_suite!(
    tiered_async_redis_kit,
    async_redis,
    require = TestServer::shared(ServerKind::Redis).is_some()
);
cache_tests::conformance_suite!(
    tiered_memcached_kit,
    memcached,
    require = TestServer::shared(ServerKind::Memcached).is_some()
);

/// A shared tier that cannot tell how long an entry has left is refused when the engine is
/// built: a local copy must not outlive the shared entry.
#[test]
fn a_shared_tier_without_remaining_ttl_is_refused() {
    let ctx = TestContext::new();
    let shared = cache_tests::RequiredOnly(ReferenceEngine::new(&ctx));
    let refused = TieredEngine::builder(local(&ctx, true), shared)
        .without_invalidations()
        .build();
    match refused {
        Err(cache_core::CacheError::InvalidConfig { message }) => {
            assert!(message.contains("remaining_ttl"), "{message}");
        }
        other => panic!("a shared tier without remaining_ttl: {other:?}"),
    }
}
