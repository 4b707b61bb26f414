//! [`TieredEngine`]: the blocking face.

use std::sync::Arc;

use cache_core::{Bytes, CacheEngine, Capabilities, Remaining, Result, Ttl};

use crate::builder::{TieredBuilder, Tiers, capabilities, tiered_engine_common};
use crate::coherence::{Keys, Local, WithTtl};

/// A local engine in front of a shared one, itself an engine: reads are served locally when
/// they can be, writes go to the shared tier, and other processes' changes reach the local
/// tier through an invalidation feed.
///
/// - **Reads** (`get`, `get_many`, `exists`) look in the local tier first; a miss there reads
///   the shared tier with the entry's remaining TTL (one round trip) and keeps the value
///   locally for that long, capped by the [local TTL](TieredBuilder::local_ttl).
/// - **Writes** (`set`, `set_many`, `delete`, `delete_if_equals`, `delete_many`, `add`,
///   `increment`, `touch`) go to the shared tier and then drop the key from the local tier,
///   whatever the outcome; the next read fetches the shared value. `delete_if_equals` compares
///   in the shared tier, never against a local copy, so it is as atomic as the shared engine's. `clear` clears the shared tier's namespace and the whole
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
    /// The local tier, also in `tiers`: held here too so that a local hit follows one pointer
    /// fewer (measured: the hit path is most of the tiered engine's work).
    local: Arc<Local<L>>,
    tiers: Arc<Tiers<L, S>>,
}

tiered_engine_common!(TieredEngine);

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

impl<L: CacheEngine, S: CacheEngine> CacheEngine for TieredEngine<L, S> {
    #[inline]
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.local.engine.get(key) {
            Ok(None) => Ok(self.get_with_ttl(key)?.map(|(value, _)| value)),
            found => found,
        }
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.set(key, value, ttl)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.delete(key)
    }

    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.delete_if_equals(key, expected)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.local.engine.exists(key)? || self.tiers.shared.exists(key)?)
    }

    fn clear(&self) -> Result<()> {
        let _invalidate = self.local.guard(Keys::All);
        self.tiers.shared.clear()
    }

    fn close(&self) -> Result<()> {
        self.tiers.end_feed();
        let shared = self.tiers.shared.close();
        self.local.engine.close()?;
        shared
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let mut found = self.local.engine.get_many(keys)?;
        let misses = self.local.misses(keys, &found);
        if !misses.is_empty() {
            let fetched = self.tiers.shared.get_many_with_ttl(&misses.keys)?;
            self.local.fill(misses, fetched, &mut found);
        }
        Ok(found)
    }

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let _invalidate = self.local.guard(Keys::Entries(entries));
        self.tiers.shared.set_many(entries, ttl)
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let _invalidate = self.local.guard(Keys::Many(keys));
        self.tiers.shared.delete_many(keys)
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.add(key, value, ttl)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.increment(key, delta)
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let _invalidate = self.local.guard(Keys::One(key));
        self.tiers.shared.touch(key, ttl)
    }

    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.tiers.shared.remaining_ttl(key)
    }

    /// The shared tier's value and lifetime (it holds the truth), kept locally on the way: the
    /// path of every local miss.
    fn get_with_ttl(&self, key: &str) -> Result<WithTtl> {
        let snapshot = self.local.snapshot(key);
        let found = self.tiers.shared.get_with_ttl(key)?;
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
