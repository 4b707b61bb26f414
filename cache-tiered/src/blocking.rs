//! [`TieredEngine`]: the blocking face.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::invalidation::Subscription;
use cache_core::{Bytes, CacheEngine, Capabilities, Remaining, Result, Ttl};

use crate::builder::{Parts, TieredBuilder};
use crate::coherence::{Local, TieredStats};

/// A local engine in front of a shared one, itself an engine: reads are served locally when
/// they can be, writes go to the shared tier, and other processes' changes reach the local
/// tier through an invalidation feed.
///
/// - **Reads** (`get`, `get_many`, `exists`) look in the local tier first; a miss there reads
///   the shared tier with the entry's remaining TTL (one round trip) and keeps the value
///   locally for that long, capped by the [local TTL](TieredBuilder::local_ttl).
/// - **Writes** (`set`, `set_many`, `delete`, `delete_many`, `add`, `increment`, `touch`) go to
///   the shared tier and then drop the key from the local tier, whatever the outcome; the next
///   read fetches the shared value. `clear` clears the shared tier's namespace and the whole
///   local tier.
/// - **`remaining_ttl`** asks the shared tier: it holds the truth.
/// - **Coherence**: with a feed (see [`TieredBuilder::invalidations`]) every change anyone
///   makes removes the key locally as soon as the feed delivers it; a value read before an
///   invalidation arrived is never kept after it (see the crate docs). While the feed is
///   lost, nothing is kept locally. Without a feed, a local entry may be up to the local TTL
///   stale.
///
/// The local tier must be shared across threads (an [`InMemoryEngine`], say) and should have
/// no namespace: keys reach it as the caller gives them. Cloning shares both tiers.
///
/// [`InMemoryEngine`]: https://docs.rs/cache-local
pub struct TieredEngine<L, S> {
    /// The local tier, also in `inner`: held here too so that a local hit follows one pointer
    /// fewer (measured: the hit path is most of the tiered engine's work).
    local: Arc<Local<L>>,
    inner: Arc<Inner<L, S>>,
}

pub(crate) struct Inner<L, S> {
    pub(crate) local: Arc<Local<L>>,
    pub(crate) shared: S,
    pub(crate) subscription: Mutex<Option<Subscription>>,
    pub(crate) detection_bound: Option<Duration>,
}

impl<L, S> Clone for TieredEngine<L, S> {
    fn clone(&self) -> Self {
        Self {
            local: Arc::clone(&self.local),
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<L: fmt::Debug, S: fmt::Debug> fmt::Debug for TieredEngine<L, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredEngine")
            .field("local", &self.inner.local.engine)
            .field("shared", &self.inner.shared)
            .field("local_ttl", &self.inner.local.ttl_cap)
            .field("feed", &self.inner.detection_bound.is_some())
            .finish()
    }
}

/// The capabilities of a tiered engine: the shared tier's, with the local tier's resolution
/// added (a local copy may outlive its TTL by that much) and the shorter key limit.
pub(crate) fn capabilities(local: &Capabilities, shared: Capabilities) -> Capabilities {
    let mut caps = shared;
    caps.backend = "tiered";
    caps.ttl_resolution += local.ttl_resolution;
    caps.max_key_len = caps.max_key_len.min(local.max_key_len);
    caps.shared_across_threads &= local.shared_across_threads;
    caps
}

impl<L: CacheEngine + 'static, S: CacheEngine> TieredEngine<L, S> {
    /// A builder for a tiered engine with `local` in front of `shared`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_core::{Bytes, CacheEngine, Ttl};
    /// use cache_local::InMemoryEngine;
    /// use cache_tiered::TieredEngine;
    ///
    /// # fn main() -> cache_core::Result<()> {
    /// # let shared = InMemoryEngine::new(); // a RedisEngine or MemcachedEngine, normally
    /// let local = InMemoryEngine::builder().max_capacity(10_000).build()?;
    /// let cache = TieredEngine::builder(local, shared)
    ///     .local_ttl(Duration::from_secs(5))
    ///     .without_invalidations() // or .invalidations(redis.invalidations())
    ///     .build()?;
    /// cache.set("greeting", Bytes::from_static(b"hello"), Ttl::Default)?;
    /// assert_eq!(cache.get("greeting")?.as_deref(), Some(&b"hello"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(local: L, shared: S) -> TieredBuilder<L, S> {
        TieredBuilder::new(local, shared)
    }
}

impl<L, S> TieredEngine<L, S> {
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

    /// Whether values are kept locally now: always without a feed; with one, while it is
    /// connected.
    pub fn is_caching_locally(&self) -> bool {
        self.inner.local.is_caching()
    }

    /// The longest a local entry may be stale: the feed's detection bound (while a broken
    /// feed goes unnoticed) with a feed, the local TTL without one; never more than the local
    /// TTL either way.
    pub fn staleness_bound(&self) -> Duration {
        let cap = self.inner.local.ttl_cap;
        self.inner
            .detection_bound
            .map_or(cap, |bound| bound.min(cap))
    }
}

impl<L: CacheEngine, S: CacheEngine> TieredEngine<L, S> {
    fn fall_through(&self, key: &str) -> Result<Option<Bytes>> {
        let local = &self.inner.local;
        let snapshot = local.snapshot(key);
        let Some((value, left)) = self.inner.shared.get_with_ttl(key)? else {
            return Ok(None);
        };
        if let Some(snapshot) = snapshot {
            local.refill(key, &value, left, snapshot);
        }
        Ok(Some(value))
    }

    fn after_write<T>(&self, key: &str, result: Result<T>) -> Result<T> {
        self.inner.local.invalidate(key);
        result
    }
}

impl<L: CacheEngine, S: CacheEngine> CacheEngine for TieredEngine<L, S> {
    #[inline]
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.local.engine.get(key) {
            Ok(None) => self.fall_through(key),
            found => found,
        }
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let result = self.inner.shared.set(key, value, ttl);
        self.after_write(key, result)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let result = self.inner.shared.delete(key);
        self.after_write(key, result)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        if self.inner.local.engine.exists(key)? {
            return Ok(true);
        }
        self.inner.shared.exists(key)
    }

    fn clear(&self) -> Result<()> {
        let result = self.inner.shared.clear();
        self.inner.local.invalidate_all();
        result
    }

    fn close(&self) -> Result<()> {
        if let Some(subscription) = self
            .inner
            .subscription
            .lock()
            .ok()
            .and_then(|mut s| s.take())
        {
            subscription.cancel();
        }
        let shared = self.inner.shared.close();
        self.inner.local.engine.close()?;
        shared
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let mut found = self.inner.local.engine.get_many(keys)?;
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let local = &self.inner.local;
        let misses: Vec<&str> = missing.iter().map(|&i| keys[i]).collect();
        let snapshots: Vec<_> = misses.iter().map(|key| local.snapshot(key)).collect();
        let fetched = self.inner.shared.get_many_with_ttl(&misses)?;
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

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let result = self.inner.shared.set_many(entries, ttl);
        for (key, _) in entries {
            self.inner.local.invalidate(key);
        }
        result
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let result = self.inner.shared.delete_many(keys);
        for key in keys {
            self.inner.local.invalidate(key);
        }
        result
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let result = self.inner.shared.add(key, value, ttl);
        self.after_write(key, result)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let result = self.inner.shared.increment(key, delta);
        self.after_write(key, result)
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let result = self.inner.shared.touch(key, ttl);
        self.after_write(key, result)
    }

    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.inner.shared.remaining_ttl(key)
    }

    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        // The lifetime is the shared tier's: read it there (and refill on the way).
        let local = &self.inner.local;
        let snapshot = local.snapshot(key);
        let found = self.inner.shared.get_with_ttl(key)?;
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
