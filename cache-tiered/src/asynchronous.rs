//! [`AsyncTieredEngine`]: the async face.

use std::sync::Arc;

use cache_core::{AsyncCacheEngine, Bytes, CacheEngine, Capabilities, Remaining, Result, Ttl};

use crate::builder::{TieredBuilder, Tiers, capabilities, tiered_engine_common};
use crate::coherence::{Keys, Local, WithTtl};

/// [`TieredEngine`](crate::TieredEngine) for async code: a blocking local engine (an
/// `InMemoryEngine`: its operations never wait) in front of an async shared engine
/// (`AsyncRedisEngine`, `AsyncMemcachedEngine`), with the same behaviour and feed.
///
/// Dropping an operation's future is safe: a write's key is dropped from the local tier even
/// when its future is dropped before the shared tier answered (the write may still land), and a
/// read dropped mid-way keeps nothing.
///
/// `close` ends the feed's thread and waits for it, up to 50 ms (its read slice), on the
/// calling task's thread; the feed's events are handled on that thread too, never on the
/// runtime.
///
/// ```no_run
/// use std::time::Duration;
/// use cache_core::{AsyncCacheEngine, Bytes, Ttl};
/// use cache_local::InMemoryEngine;
/// use cache_redis::RedisEngine;
/// use cache_tiered::AsyncTieredEngine;
///
/// # async fn run() -> cache_core::Result<()> {
/// let shared = RedisEngine::async_builder().url("redis://127.0.0.1:6379").namespace("app").build()?;
/// let feed = shared.invalidations();
/// let cache = AsyncTieredEngine::builder(InMemoryEngine::new(), shared)
///     .invalidations(feed)
///     .build()?;
/// cache.set("user:7", Bytes::from_static(b"Ada"), Ttl::Default).await?;
/// assert!(cache.get("user:7").await?.is_some()); // from Redis, then kept locally
/// # Ok(())
/// # }
/// ```
pub struct AsyncTieredEngine<L, S> {
    /// As in [`TieredEngine`](crate::TieredEngine): the local tier by a direct pointer.
    local: Arc<Local<L>>,
    tiers: Arc<Tiers<L, S>>,
}

tiered_engine_common!(AsyncTieredEngine);

impl<L: CacheEngine + 'static, S: AsyncCacheEngine> AsyncTieredEngine<L, S> {
    /// A builder for an async tiered engine with `local` in front of `shared`; see
    /// [`TieredBuilder`].
    pub fn builder(local: L, shared: S) -> TieredBuilder<L, S, cache_core::Async> {
        TieredBuilder::new(local, shared)
    }
}

// Every write drops its keys through a guard, which also runs when the caller drops the future
// before the shared tier answered (the write may still land); a read dropped mid-way keeps
// nothing, since it keeps only after its await.
impl<L: CacheEngine, S: AsyncCacheEngine> AsyncCacheEngine for AsyncTieredEngine<L, S> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.local.engine.get(key) {
            Ok(None) => Ok(self.get_with_ttl(key).await?.map(|(value, _)| value)),
            found => found,
        }
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.delete(key).await
    }

    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.delete_if_equals(key, expected).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.local.engine.exists(key)? || self.tiers.shared.exists(key).await?)
    }

    async fn clear(&self) -> Result<()> {
        let _invalidate = self.local.guard(Keys::All);
        self.tiers.shared.clear().await
    }

    async fn close(&self) -> Result<()> {
        self.tiers.end_feed();
        let shared = self.tiers.shared.close().await;
        self.local.engine.close()?;
        shared
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let mut found = self.local.engine.get_many(keys)?;
        let misses = self.local.misses(keys, &found);
        if !misses.is_empty() {
            let fetched = self.tiers.shared.get_many_with_ttl(&misses.keys).await?;
            self.local.fill(misses, fetched, &mut found);
        }
        Ok(found)
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let _invalidate = self.local.guard(Keys::Entries(entries));
        self.tiers.shared.set_many(entries, ttl).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let _invalidate = self.local.guard(Keys::Many(keys));
        self.tiers.shared.delete_many(keys).await
    }

    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.add(key, value, ttl).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.increment(key, delta).await
    }

    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.touch(key, ttl).await
    }

    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.tiers.shared.remaining_ttl(key).await
    }

    async fn get_with_ttl(&self, key: &str) -> Result<WithTtl> {
        let snapshot = self.local.snapshot(key);
        let found = self.tiers.shared.get_with_ttl(key).await?;
        self.local.keep(key, &found, snapshot);
        Ok(found)
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(
            &self.local.engine.capabilities(),
            self.tiers.shared.capabilities(),
        )
    }
}
