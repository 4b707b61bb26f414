//! The async Redis engine passes the whole conformance kit against a real `redis-server`.

#![cfg(feature = "tokio")]

use cache_redis::{AsyncRedisEngine, RedisEngine};
use cache_tests::TestContext;
use cache_tests::servers::{ServerKind, TestServer};

fn redis(ctx: &TestContext) -> AsyncRedisEngine {
    let server = TestServer::shared(ServerKind::Redis).expect("checked by `require`");
    RedisEngine::async_builder()
        .url(server.url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

cache_tests::async_conformance_suite!(
    async_redis_kit,
    redis,
    require = TestServer::shared(ServerKind::Redis).is_some()
);
