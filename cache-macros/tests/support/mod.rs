//! What the tests share: an engine that fails when told to.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cache_core::{Bytes, CacheEngine, CacheError, Capabilities, Remaining, Result, Ttl};
use cache_local::InMemoryEngine;

/// An `InMemoryEngine` whose reads and writes fail with a connection error while told to, as a
/// remote engine does when its server is down.
#[derive(Debug, Clone, Default)]
pub struct FlakyEngine {
    inner: InMemoryEngine,
    switches: Arc<Switches>,
}

#[derive(Debug, Default)]
struct Switches {
    reads: AtomicBool,
    writes: AtomicBool,
    failures: AtomicUsize,
}

impl FlakyEngine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads (`get`, `get_many`, `exists`, ...) fail from now on, or work again.
    pub fn fail_reads(&self, fail: bool) {
        self.switches.reads.store(fail, Ordering::SeqCst);
    }

    /// Writes (`set`, `add`, `delete`, ...) fail from now on, or work again.
    pub fn fail_writes(&self, fail: bool) {
        self.switches.writes.store(fail, Ordering::SeqCst);
    }

    /// How many operations failed so far.
    pub fn failures(&self) -> usize {
        self.switches.failures.load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &InMemoryEngine {
        &self.inner
    }

    fn check(&self, write: bool, operation: &'static str) -> Result<()> {
        let switch = if write {
            &self.switches.writes
        } else {
            &self.switches.reads
        };
        if switch.load(Ordering::SeqCst) {
            self.switches.failures.fetch_add(1, Ordering::SeqCst);
            return Err(CacheError::Connection {
                backend: "flaky",
                operation,
                address: "nowhere".into(),
                source: None,
            });
        }
        Ok(())
    }
}

impl CacheEngine for FlakyEngine {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.check(false, "get")?;
        CacheEngine::get(&self.inner, key)
    }
    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.check(true, "set")?;
        CacheEngine::set(&self.inner, key, value, ttl)
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.check(true, "delete")?;
        CacheEngine::delete(&self.inner, key)
    }
    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        self.check(true, "delete_if_equals")?;
        CacheEngine::delete_if_equals(&self.inner, key, expected)
    }
    fn exists(&self, key: &str) -> Result<bool> {
        self.check(false, "exists")?;
        CacheEngine::exists(&self.inner, key)
    }
    fn clear(&self) -> Result<()> {
        self.check(true, "clear")?;
        CacheEngine::clear(&self.inner)
    }
    fn close(&self) -> Result<()> {
        CacheEngine::close(&self.inner)
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.check(false, "get_many")?;
        CacheEngine::get_many(&self.inner, keys)
    }
    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        self.check(true, "set_many")?;
        CacheEngine::set_many(&self.inner, entries, ttl)
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.check(true, "delete_many")?;
        CacheEngine::delete_many(&self.inner, keys)
    }
    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.check(true, "add")?;
        CacheEngine::add(&self.inner, key, value, ttl)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        self.check(true, "increment")?;
        CacheEngine::increment(&self.inner, key, delta)
    }
    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.check(true, "touch")?;
        CacheEngine::touch(&self.inner, key, ttl)
    }
    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.check(false, "remaining_ttl")?;
        CacheEngine::remaining_ttl(&self.inner, key)
    }
    fn capabilities(&self) -> Capabilities {
        CacheEngine::capabilities(&self.inner)
    }
}

impl cache_core::NonBlocking for FlakyEngine {}

/// Waits (up to 10 s) until `ready` holds, checking every millisecond.
pub fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
