//! The Redis engine against hostile servers: replies no real server sends. Each operation must
//! end within its deadline plus a margin, and memory must stay bounded. Every check runs over
//! RESP2 and over RESP3 (`protocol=resp3`, with RESP3's types and push frames), on both faces.
//! The checks measure the whole process's memory, so this file's tests run one at a time.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cache_core::CacheEngine;
use cache_redis::RedisEngine;
use cache_tests::hostile::{
    Dialect, HostileServer, Misbehaviour, every_operation_ends_in_time,
    every_operation_ends_in_time_for_callers,
};

/// The dialects the fake speaks, each with the URL query that makes the engine speak it.
const DIALECTS: [(Dialect, &str); 2] = [(Dialect::Redis, ""), (Dialect::Resp3, "?protocol=resp3")];
const TIMEOUT: Duration = Duration::from_millis(500);
const MARGIN: Duration = Duration::from_millis(400);
/// The engine's value limit in these tests, and the memory the process may grow by.
const VALUE_LIMIT: usize = 1 << 20;
const MEMORY_BOUND: u64 = 64 << 20;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn engine_at(address: &str, query: &str) -> Arc<dyn CacheEngine> {
    engine_with(address, query, 32)
}

fn engine_with(address: &str, query: &str, connections: usize) -> Arc<dyn CacheEngine> {
    Arc::new(
        RedisEngine::builder()
            .url(format!("redis://{address}{query}"))
            .namespace("hostile")
            .timeout(TIMEOUT)
            .max_value_size(VALUE_LIMIT)
            .max_connections(connections)
            .build()
            .expect("valid settings"),
    )
}

#[cfg(feature = "tokio")]
fn async_engine_at(address: &str, query: &str) -> Arc<dyn CacheEngine> {
    Arc::new(cache_tests::asynchronous::BlockingFace(
        cache_redis::RedisEngine::async_builder()
            .url(format!("redis://{address}{query}"))
            .namespace("hostile")
            .timeout(TIMEOUT)
            .max_value_size(VALUE_LIMIT)
            .build()
            .expect("valid settings"),
    ))
}

fn check(misbehaviour: Misbehaviour) {
    let _serial = one_at_a_time();
    for (dialect, query) in DIALECTS {
        every_operation_ends_in_time(
            dialect,
            misbehaviour.clone(),
            TIMEOUT,
            MARGIN,
            MEMORY_BOUND,
            |address| engine_at(address, query),
        );
        // The async engine, through the kit's blocking face: the same bounds.
        #[cfg(feature = "tokio")]
        every_operation_ends_in_time(
            dialect,
            misbehaviour.clone(),
            TIMEOUT,
            MARGIN,
            MEMORY_BOUND,
            |address| async_engine_at(address, query),
        );
    }
    // Eight callers on two connections of the blocking engine: callers sharing a connection
    // each keep their own deadline (one dialect: the sharing does not depend on it).
    every_operation_ends_in_time_for_callers(
        Dialect::Redis,
        misbehaviour,
        TIMEOUT,
        MARGIN,
        MEMORY_BOUND,
        8,
        |address| engine_with(address, "", 2),
    );
}

#[test]
fn a_server_that_never_answers() {
    check(Misbehaviour::NeverAnswer);
}

#[test]
fn a_trickled_reply() {
    check(Misbehaviour::Trickle {
        every: Duration::from_millis(400),
    });
}

#[test]
fn an_oversized_bulk_reply() {
    check(Misbehaviour::OversizedValue {
        announced: 2_147_483_647,
    });
}

#[test]
fn an_endless_array() {
    check(Misbehaviour::EndlessArray { announced: 1 << 40 });
}

#[test]
fn a_deep_array() {
    check(Misbehaviour::DeepArray { depth: 1_000_000 });
}

#[test]
fn an_endless_line() {
    check(Misbehaviour::EndlessLine);
}

#[test]
fn a_flood_of_pushes_instead_of_a_reply() {
    check(Misbehaviour::PushFlood);
}

/// Builds an engine of one face for a fake's address and a URL query.
type MakeEngine = fn(&str, &str) -> Arc<dyn CacheEngine>;

/// Pushes before a reply, and after it while the connection is idle, are set apart: every read
/// is the miss the server answered, on the same connection, on both faces and protocols.
#[test]
fn pushes_around_replies_are_set_apart() {
    let _serial = one_at_a_time();
    let engines: Vec<(&str, MakeEngine)> = vec![
        ("blocking", engine_at),
        #[cfg(feature = "tokio")]
        ("async", async_engine_at),
    ];
    for (dialect, query) in DIALECTS {
        for (face, make) in &engines {
            let fake = HostileServer::start(dialect, Misbehaviour::PushAroundMiss).unwrap();
            let engine = make(fake.address(), query);
            for round in 0..20 {
                assert_eq!(
                    engine.get("k").map_err(|e| format!("{e:?}")),
                    Ok(None),
                    "{face} {dialect:?}, read {round}"
                );
                std::thread::sleep(Duration::from_millis(2 * (round % 5)));
            }
            assert_eq!(
                fake.data_requests(),
                20,
                "{face} {dialect:?}: each read sent once"
            );
        }
    }
}

/// A server that wants a login the connection never made (`-NOAUTH` to every command): every
/// operation says `Authentication` at once, on both faces and protocols.
#[test]
fn a_server_that_wants_a_login() {
    let _serial = one_at_a_time();
    for (dialect, query) in DIALECTS {
        cache_tests::hostile::every_operation_says_authentication(
            dialect,
            TIMEOUT,
            MARGIN,
            |address| engine_at(address, query),
        );
        #[cfg(feature = "tokio")]
        cache_tests::hostile::every_operation_says_authentication(
            dialect,
            TIMEOUT,
            MARGIN,
            |address| async_engine_at(address, query),
        );
    }
}
