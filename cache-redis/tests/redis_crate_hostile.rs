//! The kit's hostile-server checks on the `redis` crate transport (feature `redis-crate`):
//! the same fakes as `hostile.rs`, with an `AsyncRedisEngine` over a `ConnectionManager`. The
//! crate reads replies itself, so the engine's reply bounds cannot protect it: each check runs
//! in a child process of its own (a failure may take the process down), and each test asserts
//! the outcome the crate transport's docs state, survived or not. A change in the crate that
//! changes an outcome fails here, so that the docs are corrected.

#![cfg(feature = "redis-crate")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::CacheEngine;
use cache_redis::RedisEngine;
use cache_tests::asynchronous::{BlockingFace, runtime};
use cache_tests::hostile::{
    ChildOutcome, Dialect, Misbehaviour, child_outcome, every_operation_ends_in_time, is_child,
};

const TIMEOUT: Duration = Duration::from_millis(500);
const MARGIN: Duration = Duration::from_millis(400);
const MEMORY_BOUND: u64 = 64 << 20;
/// How long a child may run: every operation's ceiling, and the crate's reconnections.
const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// An engine over a `ConnectionManager` to the fake at `address`, with the crate's own
/// timeouts at the engine's.
fn engine_at(address: &str) -> Arc<dyn CacheEngine> {
    let client = redis::Client::open(format!("redis://{address}")).unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT))
        .set_number_of_retries(1);
    let started = Instant::now();
    match runtime().block_on(redis::aio::ConnectionManager::new_with_config(
        client, config,
    )) {
        Ok(manager) => Arc::new(BlockingFace(
            RedisEngine::async_builder()
                .redis_connection(manager)
                .namespace("hostile")
                .timeout(TIMEOUT)
                .max_value_size(1 << 20)
                .build()
                .unwrap(),
        )),
        Err(error) => {
            // The crate could not even connect: that ends in time too, or the check fails.
            assert!(
                started.elapsed() < TIMEOUT * 4,
                "the crate took {:?} to give up connecting: {error}",
                started.elapsed()
            );
            // The check ends here, passed: say so as the test harness would, for the parent.
            println!("the crate refused to connect: {error}\ntest result: ok. 1 passed");
            std::process::exit(0);
        }
    }
}

/// Runs `misbehaviour` against the crate transport in a child process and checks that it
/// ends as the docs say: survived (every operation ended in time with an error, memory
/// bounded) or not.
fn check(test: &str, misbehaviour: Misbehaviour, survives: bool) {
    if is_child(test) {
        every_operation_ends_in_time(
            Dialect::Redis,
            misbehaviour,
            TIMEOUT,
            MARGIN,
            MEMORY_BOUND,
            engine_at,
        );
        return;
    }
    let outcome = child_outcome(test, CHILD_LIMIT);
    let first_lines = |output: &str| {
        output
            .lines()
            .filter(|line| !line.trim().is_empty())
            .filter(|line| !line.starts_with("running") && !line.contains("stack backtrace"))
            .take(6)
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let (survived, detail) = match &outcome {
        ChildOutcome::Passed => (true, String::new()),
        ChildOutcome::Failed { output } => (false, first_lines(output)),
        ChildOutcome::Killed { output } => (
            false,
            format!("killed after {CHILD_LIMIT:?}: {}", first_lines(output)),
        ),
    };
    eprintln!(
        "redis crate transport, {misbehaviour:?}: {} {detail}",
        if survived { "survived" } else { "NOT survived" }
    );
    assert_eq!(
        survived, survives,
        "{misbehaviour:?}: the outcome differs from the one the docs state: {detail}"
    );
}

#[test]
fn crate_a_server_that_never_answers() {
    check(
        "crate_a_server_that_never_answers",
        Misbehaviour::NeverAnswer,
        true,
    );
}

#[test]
fn crate_a_trickled_reply() {
    check(
        "crate_a_trickled_reply",
        Misbehaviour::Trickle {
            every: Duration::from_millis(400),
        },
        true,
    );
}

#[test]
fn crate_a_silent_server() {
    check("crate_a_silent_server", Misbehaviour::Silent, true);
}

/// Not survived: the crate reads the whole announced value before the engine sees it (at
/// 2 GiB announced the process grew by 4 GiB and operations overran their deadlines while the
/// runtime's threads were busy reading; 512 MiB here keeps the check light).
#[test]
fn crate_an_oversized_bulk_reply() {
    check(
        "crate_an_oversized_bulk_reply",
        Misbehaviour::OversizedValue {
            announced: 512 << 20,
        },
        false,
    );
}

/// Not survived: the crate keeps every element of an endless array (the process grew by
/// about 270 MiB within the check).
#[test]
fn crate_an_endless_array() {
    check(
        "crate_an_endless_array",
        Misbehaviour::EndlessArray { announced: 1 << 40 },
        false,
    );
}

#[test]
fn crate_a_deep_array() {
    check(
        "crate_a_deep_array",
        Misbehaviour::DeepArray { depth: 1_000_000 },
        true,
    );
}

/// Not survived: the crate buffers a line without end (the process grew by about 300 MiB).
#[test]
fn crate_an_endless_line() {
    check("crate_an_endless_line", Misbehaviour::EndlessLine, false);
}

#[test]
fn crate_a_flood_of_pushes() {
    check("crate_a_flood_of_pushes", Misbehaviour::PushFlood, true);
}
