//! [`AsyncTieredEngine`]: the async face.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::invalidation::Subscription;
use cache_core::{AsyncCacheEngine, Bytes, CacheEngine, Capabilities, Remaining, Result, Ttl};

use crate::blocking::capabilities;
use crate::builder::{Parts, TieredBuilder};
use crate::coherence::{Local, TieredStats};

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
/// use cache_redis::AsyncRedisEngine;
/// use cache_tiered::AsyncTieredEngine;
///
/// # async fn run() -> cache_core::Result<()> {
/// let shared = AsyncRedisEngine::builder().url("redis://127.0.0.1:6379").namespace("app").build()?;
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
    /// The local tier, also in `inner`: held here too so that a local hit follows one pointer
    /// fewer (measured: the hit path is most of the tiered engine's work).
    local: Arc<Local<L>>,
    inner: Arc<Inner<L, S>>,
}

struct Inner<L, S> {
    local: Arc<Local<L>>,
    shared: S,
    subscription: Mutex<Option<Subscription>>,
    detection_bound: Option<Duration>,
}

impl<L, S> Clone for AsyncTieredEngine<L, S> {
    fn clone(&self) -> Self {
        Self {
            local: Arc::clone(&self.local),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<L: fmt::Debug, S: fmt::Debug> fmt::Debug for AsyncTieredEngine<L, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncTieredEngine")
            .field("local", &self.inner.local.engine)
            .field("shared", &self.inner.shared)
            .field("local_ttl", &self.inner.local.ttl_cap)
            .field("feed", &self.inner.detection_bound.is_some())
            .finish()
    }
}

/// The keys a write touches.
enum Keys<'a> {
    One(&'a str),
    Many(&'a [&'a str]),
    Entries(&'a [(&'a str, Bytes)]),
    All,
}

/// Drops keys from the local tier when dropped.
struct Invalidate<'a, L: CacheEngine> {
    local: &'a Local<L>,
    keys: Keys<'a>,
}

impl<L: CacheEngine> Drop for Invalidate<'_, L> {
    fn drop(&mut self) {
        match self.keys {
            Keys::One(key) => self.local.invalidate(key),
            Keys::Many(keys) => keys.iter().for_each(|key| self.local.invalidate(key)),
            Keys::Entries(entries) => entries
                .iter()
                .for_each(|(key, _)| self.local.invalidate(key)),
            Keys::All => self.local.invalidate_all(),
        }
    }
}

impl<L: CacheEngine + 'static, S: AsyncCacheEngine> AsyncTieredEngine<L, S> {
    /// A builder for an async tiered engine with `local` in front of `shared`; see
    /// [`TieredBuilder`].
    pub fn builder(local: L, shared: S) -> TieredBuilder<L, S, cache_core::Async> {
        TieredBuilder::new(local, shared)
    }
}

impl<L, S> AsyncTieredEngine<L, S> {
    pub(crate) fn from_parts(parts: Parts<L, S>) -> Self {
        Self {
            local: Arc::clone(&parts.local),
            inner: Arc::new(Inner {
                local: parts.local,
                shared: parts.shared,
                subscription: parts.subscription,
                detection_bound: parts.detection_bound,
            }),
        }
    }

    /// The local tier.
    pub fn local(&self) -> &L {
        &self.inner.local.engine
    }

    /// The shared tier.
    pub fn shared(&self) -> &S {
        &self.inner.shared
    }

    /// What the coherence machinery has done so far.
    pub fn stats(&self) -> TieredStats {
        self.inner.local.stats()
    }

    /// Whether values are kept locally now; see [`TieredEngine::is_caching_locally`](crate::TieredEngine::is_caching_locally).
    pub fn is_caching_locally(&self) -> bool {
        self.inner.local.is_caching()
    }

    /// The longest a local entry may be stale; see [`TieredEngine::staleness_bound`](crate::TieredEngine::staleness_bound).
    pub fn staleness_bound(&self) -> Duration {
        let cap = self.inner.local.ttl_cap;
        self.inner
            .detection_bound
            .map_or(cap, |bound| bound.min(cap))
    }
}

impl<L: CacheEngine, S: AsyncCacheEngine> AsyncTieredEngine<L, S> {
    async fn fall_through(&self, key: &str) -> Result<Option<Bytes>> {
        let local = &self.inner.local;
        let snapshot = local.snapshot(key);
        let Some((value, left)) = self.inner.shared.get_with_ttl(key).await? else {
            return Ok(None);
        };
        if let Some(snapshot) = snapshot {
            local.refill(key, &value, left, snapshot);
        }
        Ok(Some(value))
    }

    /// Drops `keys` from the local tier when it goes out of scope: after the shared write,
    /// and also when the caller drops the future mid-write (the write may still land).
    fn guard<'a>(&'a self, keys: Keys<'a>) -> Invalidate<'a, L> {
        Invalidate {
            local: &self.inner.local,
            keys,
        }
    }
}

impl<L: CacheEngine, S: AsyncCacheEngine> AsyncCacheEngine for AsyncTieredEngine<L, S> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.local.engine.get(key) {
            Ok(None) => self.fall_through(key).await,
            found => found,
        }
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let _invalidate = self.guard(Keys::One(key));
        self.inner.shared.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let _invalidate = self.guard(Keys::One(key));
        self.inner.shared.delete(key).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        if self.inner.local.engine.exists(key)? {
            return Ok(true);
        }
        self.inner.shared.exists(key).await
    }

    async fn clear(&self) -> Result<()> {
        let _invalidate = self.guard(Keys::All);
        self.inner.shared.clear().await
    }

    async fn close(&self) -> Result<()> {
        if let Some(subscription) = self
            .inner
            .subscription
            .lock()
            .ok()
            .and_then(|mut s| s.take())
        {
            subscription.cancel();
        }
        let shared = self.inner.shared.close().await;
        self.inner.local.engine.close()?;
        shared
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let mut found = self.inner.local.engine.get_many(keys)?;
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let local = &self.inner.local;
        let misses: Vec<&str> = missing.iter().map(|&i| keys[i]).collect();
        let snapshots: Vec<_> = misses.iter().map(|key| local.snapshot(key)).collect();
        let fetched = self.inner.shared.get_many_with_ttl(&misses).await?;
        for ((index, snapshot), slot) in missing.into_iter().zip(snapshots).zip(fetched) {
            if let Some((value, left)) = slot {
                if let Some(snapshot) = snapshot {
                    local.refill(keys[index], &value, left, snapshot);
                }
                found[index] = Some(value);
            }
        }
        Ok(found)
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let _invalidate = self.guard(Keys::Entries(entries));
        self.inner.shared.set_many(entries, ttl).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let _invalidate = self.guard(Keys::Many(keys));
        self.inner.shared.delete_many(keys).await
    }

    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let _invalidate = self.guard(Keys::One(key));
        self.inner.shared.add(key, value, ttl).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let _invalidate = self.guard(Keys::One(key));
        self.inner.shared.increment(key, delta).await
    }

    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let _invalidate = self.guard(Keys::One(key));
        self.inner.shared.touch(key, ttl).await
    }

    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.inner.shared.remaining_ttl(key).await
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        // The lifetime is the shared tier's: read it there (and refill on the way).
        let local = &self.inner.local;
        let snapshot = local.snapshot(key);
        let found = self.inner.shared.get_with_ttl(key).await?;
        if let (Some((value, left)), Some(snapshot)) = (&found, snapshot) {
            local.refill(key, value, *left, snapshot);
        }
        Ok(found)
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(
            &self.inner.local.engine.capabilities(),
            self.inner.shared.capabilities(),
        )
    }
}
