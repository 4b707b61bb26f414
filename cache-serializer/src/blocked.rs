//! A blocking engine seen as an async one, for the blocking face of the typed layer.
//!
//! The typed layer's logic is written once, as async code over an [`AsyncCacheEngine`];
//! [`TypedCache`](crate::TypedCache) runs it with [`cache_core::block_on`] over `Blocked(engine)`.
//! Each future calls the blocking operation when first polled, on the caller's thread, and is
//! ready at once: one poll, no allocation, no runtime.

use cache_core::{AsyncCacheEngine, Bytes, CacheEngine, Capabilities, Remaining, Result, Ttl};

/// `E`'s blocking operations as futures that are ready at their first poll.
#[derive(Debug)]
pub(crate) struct Blocked<E>(pub(crate) E);

impl<E: CacheEngine> AsyncCacheEngine for Blocked<E> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.0.get(key)
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.0.set(key, value, ttl)
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.0.delete(key)
    }
    async fn clear(&self) -> Result<()> {
        self.0.clear()
    }
    async fn close(&self) -> Result<()> {
        self.0.close()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.0.exists(key)
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.0.get_many(keys)
    }
    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        self.0.set_many(entries, ttl)
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.0.delete_many(keys)
    }
    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.0.add(key, value, ttl)
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        self.0.increment(key, delta)
    }
    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.0.touch(key, ttl)
    }
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        self.0.delete_if_equals(key, expected)
    }
    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.0.remaining_ttl(key)
    }
    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        self.0.get_with_ttl(key)
    }
    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        self.0.get_many_with_ttl(keys)
    }
}
