//! The async Redis engine under silent and stalled servers, dropped flows and floods: every
//! operation ends in time, the engine recovers without being rebuilt, what waits is bounded,
//! and the operations on a key keep their order (the checks live in `cache_tests::stalls` and
//! `cache_tests::faults`).

#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::Duration;

use cache_redis::{AsyncRedisEngine, RedisEngine};
use cache_tests::asynchronous::BlockingFace;
use cache_tests::hostile::{Dialect, run_in_child};
use cache_tests::servers::{OrSkip, ServerKind, TestServer};
use cache_tests::stalls::{self, Setup};

fn server() -> Option<TestServer> {
    TestServer::start(ServerKind::Redis, &[]).or_skip()
}

fn engine(address: &str, setup: &Setup) -> AsyncRedisEngine {
    // Database 1 makes every new connection run a handshake (SELECT).
    let db = if setup.handshake { "/1" } else { "" };
    let mut builder = RedisEngine::async_builder()
        .url(format!("redis://{address}{db}"))
        .namespace("stalls")
        .timeout(setup.timeout)
        .connect_timeout(setup.connect_timeout)
        .pipelines(setup.pipelines);
    if let Some(requests) = setup.max_queued_requests {
        builder = builder.max_queued_requests(requests);
    }
    if let Some(bytes) = setup.max_value_size {
        builder = builder.max_value_size(bytes);
    }
    builder.build().unwrap()
}

#[test]
fn a_black_hole_after_a_healthy_start_is_recovered_from() {
    let Some(server) = server() else { return };
    let (timeout, connect_timeout) = (Duration::from_millis(500), Duration::from_millis(500));
    let took = cache_tests::faults::recovers_from_a_black_hole(
        &server.address(),
        timeout,
        connect_timeout,
        |address| {
            let setup = Setup {
                timeout,
                connect_timeout,
                ..Setup::default()
            };
            Arc::new(BlockingFace(engine(address, &setup)))
        },
    );
    eprintln!("async redis: serving again {took:?} after the network healed");
}

#[test]
fn a_flow_that_dies_while_idle_is_found_by_keepalive() {
    let Some(server) = server() else { return };
    let (timeout, keepalive) = (Duration::from_millis(500), Duration::from_secs(1));
    cache_tests::faults::keepalive_finds_a_dead_idle_flow(
        &server.address(),
        timeout,
        keepalive,
        true,
        |address| {
            Arc::new(BlockingFace(
                RedisEngine::async_builder()
                    .url(format!("redis://{address}"))
                    .timeout(timeout)
                    .keepalive(keepalive)
                    .build()
                    .unwrap(),
            ))
        },
    );
}

#[test]
fn waits_on_a_silent_handshake_end_in_time() {
    stalls::waits_on_a_silent_handshake_end_in_time(Dialect::Redis, engine);
}

#[test]
fn a_server_stopped_while_connecting_fails_callers_in_time() {
    let Some(server) = server() else { return };
    stalls::a_server_stopped_while_connecting_fails_callers_in_time(&server, engine);
}

#[test]
fn past_the_queue_bound_operations_fail_at_once() {
    let Some(server) = server() else { return };
    stalls::past_the_queue_bound_operations_fail_at_once(&server, engine);
}

#[test]
fn a_flood_against_a_stopped_server_stays_bounded() {
    if !run_in_child(
        "a_flood_against_a_stopped_server_stays_bounded",
        Duration::from_secs(60),
    ) {
        return;
    }
    let Some(server) = server() else { return };
    stalls::a_flood_against_a_stopped_server_stays_bounded(&server, 128 << 20, 40_000, engine);
}

#[test]
fn per_key_order_holds_across_pipelines() {
    let Some(server) = server() else { return };
    stalls::per_key_order_holds_across_pipelines(&server.address(), engine);
}

#[test]
fn a_large_announced_reply_takes_memory_as_it_arrives() {
    if !run_in_child(
        "a_large_announced_reply_takes_memory_as_it_arrives",
        Duration::from_secs(30),
    ) {
        return;
    }
    stalls::a_large_announced_reply_takes_memory_as_it_arrives(Dialect::Redis, engine);
}
