//! The async memcached engine under the same faults as the blocking one, and under cancellation:
//! against real `memcached` processes started by the harness.

#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use cache_memcached::{AsyncMemcachedEngine, MemcachedEngine};
use cache_tests::asynchronous::{BlockingFace, cancellation_run, runtime};
use cache_tests::proxy::{Fault, FaultProxy};
use cache_tests::servers::{OrSkip, ServerKind, TestServer};

fn server() -> Option<TestServer> {
    TestServer::start(ServerKind::Memcached, &[]).or_skip()
}

fn engine_at(address: &str, namespace: &str, timeout: Duration) -> AsyncMemcachedEngine {
    MemcachedEngine::async_builder()
        .server(address)
        .namespace(namespace)
        .timeout(timeout)
        .build()
        .unwrap()
}

#[test]
fn faults_between_engine_and_server_are_survived() {
    let Some(server) = server() else { return };
    cache_tests::proxy::survives_faults(&server.address(), |address| {
        Arc::new(BlockingFace(engine_at(
            address,
            "proxy",
            Duration::from_millis(500),
        )))
    });
}

#[test]
fn a_dead_server_fails_fast_naming_the_address() {
    cache_tests::faults::dead_server_fails_fast(|address| {
        runtime().block_on(MemcachedEngine::connect_async(address))
    });
}

#[test]
fn operations_recover_after_a_server_restart() {
    let Some(server) = server() else { return };
    let engine = engine_at(&server.address(), "restart", Duration::from_secs(1));
    cache_tests::faults::survives_restart(&server, Arc::new(BlockingFace(engine)));
}

#[test]
fn a_frozen_server_times_out_and_the_engine_recovers() {
    let Some(server) = server() else { return };
    let engine = engine_at(&server.address(), "frozen", Duration::from_millis(300));
    cache_tests::faults::survives_freeze(&server, Arc::new(BlockingFace(engine)));
}

#[test]
fn an_increment_is_never_applied_twice() {
    let Some(server) = server() else { return };
    let direct = engine_at(&server.address(), "once", Duration::from_secs(1));
    cache_tests::faults::increment_is_never_applied_twice(
        &server.address(),
        b"ms ",
        |address| {
            Arc::new(BlockingFace(engine_at(
                address,
                "once",
                Duration::from_secs(1),
            )))
        },
        &BlockingFace(direct),
    );
}

/// 64 tasks, 100,000 sets and gets whose values name their key, each cancelled by a random
/// timeout of 0 to 3 ms, behind a proxy that holds every reply 0 to 3 ms: no call ever receives
/// a reply meant for another.
#[test]
fn cancelled_calls_never_receive_another_calls_reply() {
    let Some(server) = server() else { return };
    let proxy = FaultProxy::start(&server.address()).unwrap();
    proxy.set(Fault::JitterReplies);
    let engine = engine_at(proxy.address(), "cancel", Duration::from_secs(2));
    let report = cancellation_run(engine, 64, 100_000);
    eprintln!("async memcached cancellation: {report:?}");
    assert_eq!(report.wrong_values, 0, "{report:?}");
    assert!(
        report.completed > 5_000 && report.cancelled > 5_000,
        "too few of each to mean something: {report:?}"
    );
}
