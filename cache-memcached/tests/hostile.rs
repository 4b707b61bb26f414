//! The memcached engine against hostile servers: replies no real server sends. Each operation must
//! end within its deadline plus a margin, and memory must stay bounded. The checks measure the
//! whole process's memory, so this file's tests run one at a time.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cache_core::CacheEngine;
use cache_memcached::MemcachedEngine;
use cache_tests::hostile::{
    Dialect, Misbehaviour, every_operation_ends_in_time, every_operation_ends_in_time_for_callers,
};

const DIALECT: Dialect = Dialect::Memcached;
const TIMEOUT: Duration = Duration::from_millis(500);
const MARGIN: Duration = Duration::from_millis(400);
/// The engine's value limit in these tests, and the memory the process may grow by.
const VALUE_LIMIT: usize = 1 << 20;
const MEMORY_BOUND: u64 = 64 << 20;

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn engine_at(address: &str) -> Arc<dyn CacheEngine> {
    engine_with(address, 32)
}

fn engine_with(address: &str, connections: usize) -> Arc<dyn CacheEngine> {
    Arc::new(
        MemcachedEngine::builder()
            .server(address)
            .namespace("hostile")
            .timeout(TIMEOUT)
            .item_size_limit(VALUE_LIMIT)
            .max_connections(connections)
            .build()
            .expect("valid settings"),
    )
}

#[cfg(feature = "tokio")]
fn async_engine_at(address: &str) -> Arc<dyn CacheEngine> {
    Arc::new(cache_tests::asynchronous::BlockingFace(
        cache_memcached::MemcachedEngine::async_builder()
            .server(address)
            .namespace("hostile")
            .timeout(TIMEOUT)
            .item_size_limit(VALUE_LIMIT)
            .build()
            .expect("valid settings"),
    ))
}

fn check(misbehaviour: Misbehaviour) {
    let _serial = one_at_a_time();
    every_operation_ends_in_time(
        DIALECT,
        misbehaviour.clone(),
        TIMEOUT,
        MARGIN,
        MEMORY_BOUND,
        engine_at,
    );
    // The async engine, through the kit's blocking face: the same bounds.
    #[cfg(feature = "tokio")]
    every_operation_ends_in_time(
        DIALECT,
        misbehaviour.clone(),
        TIMEOUT,
        MARGIN,
        MEMORY_BOUND,
        async_engine_at,
    );
    // Eight callers on two connections of the blocking engine: callers sharing a connection
    // each keep their own deadline.
    every_operation_ends_in_time_for_callers(
        DIALECT,
        misbehaviour,
        TIMEOUT,
        MARGIN,
        MEMORY_BOUND,
        8,
        |address| engine_with(address, 2),
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
fn an_oversized_value() {
    check(Misbehaviour::OversizedValue { announced: 1 << 30 });
}

#[test]
fn endless_stat_lines() {
    check(Misbehaviour::EndlessArray { announced: 0 });
}

#[test]
fn an_endless_line() {
    check(Misbehaviour::EndlessLine);
}

/// A server that wants a login the connection never made (restarted with `-Y`): every
/// operation says `Authentication` at once, on both faces, and the connection stays in step.
#[test]
fn a_server_that_wants_a_login() {
    let _serial = one_at_a_time();
    cache_tests::hostile::every_operation_says_authentication(DIALECT, TIMEOUT, MARGIN, engine_at);
    #[cfg(feature = "tokio")]
    cache_tests::hostile::every_operation_says_authentication(
        DIALECT,
        TIMEOUT,
        MARGIN,
        async_engine_at,
    );
}
