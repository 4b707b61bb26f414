//! Layers change nothing an engine does on success (the whole kit passes through them, both
//! faces), report what they promise, and fail open against a dead server.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::{Arc, Mutex};

use cache_core::{Bytes, CacheEngine, CacheError, Remaining, Ttl};
use cache_layers::{FailOpen, LayerExt, Layered, Operation, Stats};
use cache_local::InMemoryEngine;
use cache_redis::{AsyncRedisEngine, RedisEngine};
use cache_tests::servers::{OrSkip, ServerKind, TestServer};
use cache_tests::{ReferenceEngine, TestContext};

/// Every layer the crate's features build: statistics and fail-open always, metrics and
/// tracing with their features.
#[cfg(all(feature = "metrics", feature = "tracing"))]
type Stacked<E> = Layered<
    Layered<Layered<Layered<E, Stats>, cache_layers::Metrics>, cache_layers::Tracing>,
    FailOpen,
>;
#[cfg(not(all(feature = "metrics", feature = "tracing")))]
type Stacked<E> = Layered<Layered<E, Stats>, FailOpen>;

#[cfg(all(feature = "metrics", feature = "tracing"))]
fn every_layer<E>(engine: E) -> Stacked<E> {
    engine
        .layer(Stats::new())
        .layer(cache_layers::Metrics::new())
        .layer(cache_layers::Tracing::new().keys(cache_layers::KeyReport::Hashed))
        .layer(FailOpen::closed())
}

#[cfg(not(all(feature = "metrics", feature = "tracing")))]
fn every_layer<E>(engine: E) -> Stacked<E> {
    engine.layer(Stats::new()).layer(FailOpen::closed())
}

fn in_memory(ctx: &TestContext) -> Stacked<InMemoryEngine> {
    every_layer(
        InMemoryEngine::builder()
            .clock(ctx.clock())
            .default_ttl(ctx.default_ttl())
            .build()
            .unwrap(),
    )
}

fn reference(ctx: &TestContext) -> Stacked<ReferenceEngine> {
    every_layer(ReferenceEngine::new(ctx))
}

cache_tests::conformance_suite!(layered_in_memory_kit, in_memory);
cache_tests::async_conformance_suite!(layered_async_in_memory_kit, in_memory);
cache_tests::conformance_suite!(layered_reference_kit, reference);

fn redis(ctx: &TestContext) -> Stacked<RedisEngine> {
    let server = TestServer::shared(ServerKind::Redis).expect("checked by `require`");
    every_layer(
        RedisEngine::builder()
            .url(server.url())
            .namespace(ctx.namespace())
            .default_ttl(ctx.default_ttl())
            .max_value_size(1 << 20)
            .build()
            .unwrap(),
    )
}

fn async_redis(ctx: &TestContext) -> Stacked<AsyncRedisEngine> {
    let server = TestServer::shared(ServerKind::Redis).expect("checked by `require`");
    every_layer(
        RedisEngine::async_builder()
            .url(server.url())
            .namespace(ctx.namespace())
            .default_ttl(ctx.default_ttl())
            .max_value_size(1 << 20)
            .build()
            .unwrap(),
    )
}

// A remote engine layered: labels carry its namespace, and its failures pass through the
// layers' classification unchanged.
cache_tests::conformance_suite!(
    layered_redis_kit,
    redis,
    require = TestServer::shared(ServerKind::Redis).is_some()
);
cache_tests::async_conformance_suite!(
    layered_async_redis_kit,
    async_redis,
    require = TestServer::shared(ServerKind::Redis).is_some()
);

#[test]
fn stats_count_hits_misses_writes_and_errors() {
    let stats = Stats::new();
    let engine = InMemoryEngine::new().layer(stats.clone());
    engine
        .set("a", Bytes::from_static(b"1"), Ttl::Default)
        .unwrap();
    engine
        .set_many(
            &[
                ("b", Bytes::from_static(b"2")),
                ("c", Bytes::from_static(b"3")),
            ],
            Ttl::Default,
        )
        .unwrap();
    engine.get("a").unwrap();
    engine.get_many(&["b", "c", "x"]).unwrap();
    assert!(engine.get("bad key").is_err());
    let counts = stats.snapshot();
    assert_eq!(counts.hits, 3);
    assert_eq!(counts.misses, 1);
    assert_eq!(counts.writes, 3);
    assert_eq!(counts.errors, 1);
    assert_eq!(counts.calls(Operation::Get), 2);
    assert_eq!(counts.hit_ratio(), Some(0.75));
}

#[test]
fn reads_with_ttls_reach_the_engine_whole_and_are_counted() {
    let stats = Stats::new();
    let engine = InMemoryEngine::new()
        .layer(stats.clone())
        .layer(FailOpen::new());
    engine
        .set("a", Bytes::from_static(b"1"), Ttl::Never)
        .unwrap();
    assert_eq!(
        engine.get_with_ttl("a").unwrap(),
        Some((Bytes::from_static(b"1"), Remaining::Never))
    );
    assert_eq!(engine.remaining_ttl("x").unwrap(), None);
    assert_eq!(
        engine.get_many_with_ttl(&["a", "x"]).unwrap(),
        vec![Some((Bytes::from_static(b"1"), Remaining::Never)), None]
    );
    let counts = stats.snapshot();
    assert_eq!(counts.calls(Operation::GetWithTtl), 1);
    assert_eq!(counts.calls(Operation::RemainingTtl), 1);
    assert_eq!(counts.calls(Operation::GetManyWithTtl), 1);
    // Not split into a get and a remaining_ttl on the way through.
    assert_eq!(counts.calls(Operation::Get), 0);
    assert_eq!((counts.hits, counts.misses), (2, 2));
    assert_eq!(
        Operation::ALL.map(Operation::name)[12..15],
        ["remaining_ttl", "get_with_ttl", "get_many_with_ttl"]
    );
    assert!(Operation::GetManyWithTtl.is_read());
}

#[test]
fn a_layered_redis_engine_reads_with_ttls_in_one_transaction() {
    // A server of its own: the kits of this file run transactions on the shared one.
    let Some(server) = TestServer::start(ServerKind::Redis, &[]).or_skip() else {
        return;
    };
    let engine = every_layer(RedisEngine::builder().url(server.url()).build().unwrap());
    engine
        .set("layered-ttl", Bytes::from_static(b"v"), Ttl::Never)
        .unwrap();
    // Transactions the server ran so far, from INFO commandstats on a connection of our own.
    let execs = || -> u64 {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut stream = std::net::TcpStream::connect(server.address()).unwrap();
        stream.write_all(b"INFO commandstats\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        let len: usize = header.trim_start_matches('$').trim_end().parse().unwrap();
        let mut info = vec![0; len];
        reader.read_exact(&mut info).unwrap();
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_exec:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = execs();
    assert_eq!(
        engine.get_with_ttl("layered-ttl").unwrap(),
        Some((Bytes::from_static(b"v"), Remaining::Never))
    );
    assert_eq!(execs(), before + 1, "one MULTI/EXEC through every layer");
}

#[test]
fn releases_reach_the_engine_and_are_counted_as_writes_are_not() {
    let stats = Stats::new();
    let engine = every_layer(InMemoryEngine::new().layer(stats.clone()));
    engine
        .set("lease", Bytes::from_static(b"mine"), Ttl::Default)
        .unwrap();
    assert!(!engine.delete_if_equals("lease", b"theirs").unwrap());
    assert!(engine.delete_if_equals("lease", b"mine").unwrap());
    assert_eq!(engine.get("lease").unwrap(), None);
    assert!(matches!(
        engine.delete_if_equals("bad key", b"mine"),
        Err(CacheError::InvalidKey { .. })
    ));
    let counts = stats.snapshot();
    assert_eq!(counts.calls(Operation::DeleteIfEquals), 3);
    assert_eq!(counts.calls(Operation::Delete), 0, "not split on the way");
    // Like `delete`: neither a read (no hit or miss) nor a stored entry.
    assert_eq!((counts.hits, counts.misses, counts.writes), (0, 1, 1));
    assert_eq!(counts.errors, 1);
    assert_eq!(Operation::DeleteIfEquals.name(), "delete_if_equals");
    assert_eq!(Operation::ALL[15], Operation::DeleteIfEquals);
    assert!(!Operation::DeleteIfEquals.is_read());
}

fn dead_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("redis://127.0.0.1:{port}")
}

#[test]
fn failing_open_turns_a_dead_server_into_misses() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let fail_open = {
        let seen = Arc::clone(&seen);
        FailOpen::new().on_backend_error(move |e| seen.lock().unwrap().push(e.to_string()))
    };
    let engine = RedisEngine::builder()
        .url(dead_address())
        .build()
        .unwrap()
        .layer(fail_open.clone());
    assert_eq!(engine.get("k").unwrap(), None);
    assert_eq!(engine.get_many(&["a", "b"]).unwrap(), vec![None, None]);
    engine
        .set("k", Bytes::from_static(b"v"), Ttl::Default)
        .unwrap();
    assert!(!engine.delete("k").unwrap());
    assert!(
        !engine.delete_if_equals("k", b"v").unwrap(),
        "a release that failed open did not release"
    );
    assert!(
        engine.increment("n", 1).is_err(),
        "no counter can be made up: the error is returned"
    );
    assert!(
        matches!(engine.get("bad key"), Err(CacheError::InvalidKey { .. })),
        "a caller's mistake is never absorbed"
    );
    assert_eq!(engine.remaining_ttl("k").unwrap(), None);
    assert_eq!(engine.get_with_ttl("k").unwrap(), None);
    assert_eq!(
        engine.get_many_with_ttl(&["a", "b"]).unwrap(),
        vec![None, None]
    );
    assert!(matches!(
        engine.get_with_ttl("bad key"),
        Err(CacheError::InvalidKey { .. })
    ));
    let counts = fail_open.counts();
    assert_eq!(counts.failed_open_reads, 5);
    assert_eq!(counts.failed_open_writes, 3);
    assert_eq!(
        seen.lock().unwrap().len(),
        9,
        "every backend failure is reported"
    );
}
