//! The `redis` crate as a transport (feature `redis-crate`): an `AsyncRedisEngine` over the
//! crate's `ConnectionManager` and `MultiplexedConnection` passes the whole conformance kit
//! against a real `redis-server`, and the kit's fault checks are run on it, with what each
//! shows stated here.

#![cfg(feature = "redis-crate")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use cache_core::{AsyncCacheEngine, CacheError, Ttl};
use cache_redis::{AsyncRedisEngine, RedisEngine};
use cache_tests::TestContext;
use cache_tests::asynchronous::{BlockingFace, runtime};
use cache_tests::servers::{ServerKind, TestServer};

fn server() -> Option<Arc<TestServer>> {
    TestServer::shared(ServerKind::Redis)
}

/// A `ConnectionManager` to `address`, made on the kit's runtime (where its tasks run).
fn manager(address: &str) -> redis::aio::ConnectionManager {
    let client = redis::Client::open(format!("redis://{address}")).unwrap();
    runtime()
        .block_on(redis::aio::ConnectionManager::new(client))
        .unwrap()
}

fn over_manager(ctx: &TestContext) -> AsyncRedisEngine {
    let server = server().expect("checked by `require`");
    RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

cache_tests::async_conformance_suite!(
    connection_manager_kit,
    over_manager,
    require = server().is_some()
);

fn over_multiplexed(ctx: &TestContext) -> AsyncRedisEngine {
    let server = server().expect("checked by `require`");
    let client = redis::Client::open(server.url()).unwrap();
    let connection = runtime()
        .block_on(client.get_multiplexed_async_connection())
        .unwrap();
    RedisEngine::async_builder()
        .redis_connection(connection)
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

cache_tests::async_conformance_suite!(
    multiplexed_connection_kit,
    over_multiplexed,
    require = server().is_some()
);

/// A reply over the engine's reply bound (the value limit, and at least 64 KiB, which keys
/// may need) is refused, though the crate has read it whole (the bound on memory is the
/// crate's, as the docs say).
#[test]
fn a_reply_over_the_value_limit_is_refused() {
    let Some(server) = server() else { return };
    let plain = RedisEngine::async_builder()
        .url(server.url())
        .namespace("crate-limit")
        .build()
        .unwrap();
    let small = RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .namespace("crate-limit")
        .max_value_size(1024)
        .build()
        .unwrap();
    runtime().block_on(async {
        plain
            .set("big", vec![7u8; 128 * 1024].into(), Ttl::Default)
            .await
            .unwrap();
        let err = small
            .get("big")
            .await
            .map(|v| v.map(|v| v.len()))
            .unwrap_err();
        assert!(matches!(err, CacheError::Backend { .. }), "{err}");
        // The connection goes on.
        small.set("ok", "fine".into(), Ttl::Default).await.unwrap();
        assert_eq!(
            small.get("ok").await.unwrap().as_deref(),
            Some(&b"fine"[..])
        );
    });
}

/// The server's error replies keep their meaning: a command refused by an ACL is
/// `PermissionDenied`, as on the engine's own connections, whether the crate hands it over as
/// a reply or as an error.
#[test]
fn server_errors_keep_their_types() {
    let Some(server) = server() else { return };
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "crate-tenant",
                "on",
                ">pw",
                "~crate-tenant:*",
                "+@all",
            ][..],
        )
        .exec(&mut admin)
        .unwrap();
    let client =
        redis::Client::open(format!("redis://crate-tenant:pw@{}", server.address())).unwrap();
    let manager = runtime()
        .block_on(redis::aio::ConnectionManager::new(client))
        .unwrap();
    let outside = RedisEngine::async_builder()
        .redis_connection(manager)
        .namespace("elsewhere")
        .build()
        .unwrap();
    runtime().block_on(async {
        for err in [
            outside.get("k").await.map(drop).unwrap_err(),
            outside
                .set("k", "v".into(), Ttl::Default)
                .await
                .unwrap_err(),
            outside.get_many(&["a", "b"]).await.map(drop).unwrap_err(),
        ] {
            assert!(
                matches!(err, CacheError::PermissionDenied { .. }),
                "{err:?}"
            );
        }
    });
}

/// What the engine's own connections offer and this transport cannot is refused at build.
#[test]
fn feeds_and_replica_reads_need_the_engines_own_connections() {
    let Some(server) = server() else { return };
    let engine = RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .build()
        .unwrap();
    let feed = engine.invalidations();
    let Err(err) = cache_core::invalidation::InvalidationSource::subscribe(&feed, Arc::new(|_| {}))
    else {
        panic!("a feed over a redis crate connection")
    };
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
    let err = RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .cluster(["127.0.0.1:1"])
        .read_from(cache_redis::ReadFrom::ReplicaPreferred)
        .build()
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
}

// The kit's fault checks, on the ConnectionManager transport.

#[test]
fn faults_between_engine_and_crate_and_server() {
    let Some(server) = server() else { return };
    // Through the fault proxy: drops, resets, stalls and partial writes between the crate's
    // connection and the server. The ConnectionManager reconnects on its own; every operation
    // either succeeds or fails with a transient error within its deadline.
    cache_tests::proxy::survives_faults(&server.address(), |address| {
        Arc::new(BlockingFace(
            RedisEngine::async_builder()
                .redis_connection(manager(address))
                .namespace("crate-proxy")
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
        ))
    });
}

#[test]
fn an_increment_is_never_applied_twice_by_the_crate() {
    let Some(server) = server() else { return };
    let direct = RedisEngine::async_builder()
        .url(server.url())
        .namespace("crate-once")
        .build()
        .unwrap();
    cache_tests::faults::increment_is_never_applied_twice(
        &server.address(),
        b"INCRBY",
        |address| {
            Arc::new(BlockingFace(
                RedisEngine::async_builder()
                    .redis_connection(manager(address))
                    .namespace("crate-once")
                    .timeout(Duration::from_secs(1))
                    .build()
                    .unwrap(),
            ))
        },
        &BlockingFace(direct),
    );
}

#[test]
fn a_frozen_server_times_out_and_the_crate_recovers() {
    let Some(server) = TestServer::start_owned(ServerKind::Redis, &[]).ok() else {
        return;
    };
    let engine = RedisEngine::async_builder()
        .redis_connection(manager(&server.address()))
        .namespace("crate-frozen")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    cache_tests::faults::survives_freeze(&server, Arc::new(BlockingFace(engine)));
}
