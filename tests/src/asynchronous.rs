//! The kit for async engines (feature `tokio`): every behaviour of the sync kit, run against an
//! [`AsyncCacheEngine`] through [`BlockingFace`], and the checks only async code needs
//! (cancellation at any await point).
//!
//! One definition of each behaviour serves both faces: [`BlockingFace`] drives each of the
//! async engine's futures to completion on the kit's tokio runtime, so the behaviour functions
//! of [`crate::behaviours`] see an ordinary [`CacheEngine`]. Its threads are the concurrent
//! callers of the concurrency checks, as for sync engines.
//!
//! ```no_run
//! use cache_local::InMemoryEngine;
//! use cache_tests::TestContext;
//!
//! fn engine(ctx: &TestContext) -> InMemoryEngine {
//!     InMemoryEngine::builder()
//!         .clock(ctx.clock())
//!         .default_ttl(ctx.default_ttl())
//!         .build()
//!         .expect("valid settings")
//! }
//!
//! // Runs every behaviour through `InMemoryEngine`'s `AsyncCacheEngine` face.
//! cache_tests::async_conformance_suite!(async_kit, engine);
//! # fn main() {}
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cache_core::{AsyncCacheEngine, Bytes, CacheEngine, Capabilities, Remaining, Result, Ttl};

/// The kit's tokio runtime: two worker threads, shared by every check of the process.
///
/// # Panics
///
/// When the runtime cannot be built (the system refuses threads).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("cache-tests")
            .build()
            .unwrap_or_else(|e| panic!("cannot build the kit's tokio runtime: {e}"))
    })
}

/// An async engine seen as a blocking one, for the kit: each call runs the engine's future to
/// completion on the kit's [`runtime`]. Only for tests: an application never calls an async
/// engine this way.
#[derive(Debug, Clone)]
pub struct BlockingFace<E>(pub E);

impl<E> BlockingFace<E> {
    fn block<T>(&self, future: impl Future<Output = T>) -> T {
        runtime().block_on(future)
    }
}

impl<E: AsyncCacheEngine> CacheEngine for BlockingFace<E> {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.block(self.0.get(key))
    }
    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.block(self.0.set(key, value, ttl))
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.block(self.0.delete(key))
    }
    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        self.block(self.0.delete_if_equals(key, expected))
    }
    fn exists(&self, key: &str) -> Result<bool> {
        self.block(self.0.exists(key))
    }
    fn clear(&self) -> Result<()> {
        self.block(self.0.clear())
    }
    fn close(&self) -> Result<()> {
        self.block(self.0.close())
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.block(self.0.get_many(keys))
    }
    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        self.block(self.0.set_many(entries, ttl))
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.block(self.0.delete_many(keys))
    }
    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.block(self.0.add(key, value, ttl))
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        self.block(self.0.increment(key, delta))
    }
    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.block(self.0.touch(key, ttl))
    }
    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.block(self.0.remaining_ttl(key))
    }
    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        self.block(self.0.get_with_ttl(key))
    }
    fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        self.block(self.0.get_many_with_ttl(keys))
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
}

/// What a cancellation run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CancellationReport {
    /// Operations that ended with a result (a value, a miss, a stored write, or an error).
    pub completed: u64,
    /// Operations whose future was dropped before it ended.
    pub cancelled: u64,
    /// Values read under a key that were written for another: must be 0.
    pub wrong_values: u64,
    /// Operations that ended with an error (timeouts of the engine itself, say).
    pub errors: u64,
}

/// `tasks` tasks share `engine` for `operations` operations in all, each a `set` or a `get` of
/// one of 64 keys whose values name their key, and each wrapped in a timeout of 0 to 3 ms (many
/// are dropped mid-flight, at whatever await point they reached). Every value read must name
/// its own key. Run it against an engine behind a proxy that delays replies
/// ([`crate::proxy::Fault::JitterReplies`]), so that cancellations land between request and
/// reply.
///
/// Returns what happened; the caller asserts on it (`wrong_values == 0`, and enough of both
/// completed and cancelled operations for the run to mean something).
pub fn cancellation_run<E>(engine: E, tasks: usize, operations: u64) -> CancellationReport
where
    E: AsyncCacheEngine + Clone + 'static,
{
    let completed = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let each = operations.div_ceil(tasks as u64);
    runtime().block_on(async {
        let mut handles = Vec::with_capacity(tasks);
        for task in 0..tasks {
            let engine = engine.clone();
            let (completed, cancelled, wrong, errors) = (
                Arc::clone(&completed),
                Arc::clone(&cancelled),
                Arc::clone(&wrong),
                Arc::clone(&errors),
            );
            handles.push(tokio::spawn(async move {
                let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (task as u64 + 1);
                for _ in 0..each {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let key = format!("cancel-{}", seed % 64);
                    let budget = Duration::from_micros((seed >> 8) % 3_000);
                    let operation = async {
                        match (seed >> 20) % 3 {
                            0 => {
                                let mut value = format!("{key}#{task}#").into_bytes();
                                value.resize(value.len() + ((seed >> 24) % 256) as usize, b'.');
                                engine
                                    .set(&key, Bytes::from(value), Ttl::Default)
                                    .await
                                    .map(|()| None)
                            }
                            // A release that can never match (no value ends like this): `true`
                            // would be another request's reply.
                            1 => engine
                                .delete_if_equals(&key, b"no value is this")
                                .await
                                .map(|released| {
                                    released.then(|| Bytes::from_static(b"released a mismatch"))
                                }),
                            _ => engine.get(&key).await,
                        }
                    };
                    match tokio::time::timeout(budget, operation).await {
                        Err(_) => {
                            cancelled.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(_)) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            completed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Ok(value)) => {
                            completed.fetch_add(1, Ordering::Relaxed);
                            if let Some(value) = value {
                                if !value.starts_with(format!("{key}#").as_bytes()) {
                                    wrong.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
            }));
        }
        for handle in handles {
            let _ = handle.await;
        }
    });
    CancellationReport {
        completed: completed.load(Ordering::Relaxed),
        cancelled: cancelled.load(Ordering::Relaxed),
        wrong_values: wrong.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Expands into one `#[test]` per behaviour of the kit, each building async engines with
/// `$factory` (taking `&TestContext`, returning an [`AsyncCacheEngine`]) and checking them
/// through [`BlockingFace`]. The same forms as [`conformance_suite!`](crate::conformance_suite).
#[macro_export]
macro_rules! async_conformance_suite {
    ($module:ident, $factory:expr, require = $require:expr) => {
        $crate::conformance_suite!(
            $module,
            |ctx: &$crate::TestContext| $crate::asynchronous::BlockingFace(($factory)(ctx)),
            require = $require
        );
    };
    ($module:ident, $factory:expr) => {
        $crate::async_conformance_suite!($module, $factory, require = true);
    };
    ($factory:expr) => {
        $crate::async_conformance_suite!(async_conformance, $factory, require = true);
    };
}
