//! The builder both faces share.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::invalidation::{InvalidationSource, Sink, Subscription};
use cache_core::{Async, Blocking, CacheEngine, CacheError, Capabilities, Result};

use crate::coherence::Local;

/// The local TTL cap when none is set: 60 seconds.
pub const DEFAULT_LOCAL_TTL: Duration = Duration::from_secs(60);

enum Feed {
    Unset,
    Without,
    Source(Arc<dyn InvalidationSource>),
}

/// Builds a [`TieredEngine`](crate::TieredEngine) (or, as `TieredBuilder<_, _, Async>`, an
/// [`AsyncTieredEngine`](crate::AsyncTieredEngine)). Made by their `builder` functions.
///
/// You must say how the local tier hears of other processes' changes: with
/// [`invalidations`](Self::invalidations) (a feed such as
/// `RedisEngine::invalidations()`), or with [`without_invalidations`](Self::without_invalidations),
/// accepting that a local entry may be up to the [local TTL](Self::local_ttl) stale.
#[must_use]
pub struct TieredBuilder<L, S, Face = Blocking> {
    local: L,
    shared: S,
    local_ttl: Duration,
    feed: Feed,
    face: PhantomData<fn() -> Face>,
}

impl<L: fmt::Debug, S: fmt::Debug, Face> fmt::Debug for TieredBuilder<L, S, Face> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let feed = match &self.feed {
            Feed::Unset => "unset".to_string(),
            Feed::Without => "none".to_string(),
            Feed::Source(source) => format!("{source:?}"),
        };
        f.debug_struct("TieredBuilder")
            .field("local", &self.local)
            .field("shared", &self.shared)
            .field("local_ttl", &self.local_ttl)
            .field("feed", &feed)
            .finish()
    }
}

/// Both tiers and the feed: what an engine of either face holds, shared by its clones.
pub(crate) struct Tiers<L, S> {
    pub(crate) local: Arc<Local<L>>,
    pub(crate) shared: S,
    pub(crate) subscription: Mutex<Option<Subscription>>,
    pub(crate) detection_bound: Option<Duration>,
}

impl<L, S> Tiers<L, S> {
    /// See `TieredEngine::staleness_bound`.
    pub(crate) fn staleness_bound(&self) -> Duration {
        let cap = self.local.ttl_cap;
        self.detection_bound.map_or(cap, |bound| bound.min(cap))
    }

    /// Ends the feed: no event arrives once this returns.
    pub(crate) fn end_feed(&self) {
        let subscription = self.subscription.lock().ok().and_then(|mut s| s.take());
        if let Some(subscription) = subscription {
            subscription.cancel();
        }
    }

    pub(crate) fn fmt_as(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result
    where
        L: fmt::Debug,
        S: fmt::Debug,
    {
        f.debug_struct(name)
            .field("local", &self.local.engine)
            .field("shared", &self.shared)
            .field("local_ttl", &self.local.ttl_cap)
            .field("feed", &self.detection_bound.is_some())
            .finish()
    }
}

/// What a tiered engine needs of its shared tier: a local copy lives no longer than the shared
/// entry, so every read of the shared tier comes with the entry's remaining TTL.
const SHARED_TIER_NEEDS: &str = "tiered engines (reading the shared tier)";

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

/// The parts of both engines that do not depend on the face: the struct's clone, `Debug`,
/// construction and accessors.
macro_rules! tiered_engine_common {
    ($engine:ident) => {
        impl<L, S> Clone for $engine<L, S> {
            fn clone(&self) -> Self {
                Self {
                    local: std::sync::Arc::clone(&self.local),
                    tiers: std::sync::Arc::clone(&self.tiers),
                }
            }
        }

        impl<L: std::fmt::Debug, S: std::fmt::Debug> std::fmt::Debug for $engine<L, S> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.tiers.fmt_as(stringify!($engine), f)
            }
        }

        impl<L, S> $engine<L, S> {
            pub(crate) fn from_tiers(tiers: crate::builder::Tiers<L, S>) -> Self {
                Self {
                    local: std::sync::Arc::clone(&tiers.local),
                    tiers: std::sync::Arc::new(tiers),
                }
            }

            /// The local tier.
            pub fn local(&self) -> &L {
                &self.local.engine
            }

            /// The shared tier.
            pub fn shared(&self) -> &S {
                &self.tiers.shared
            }

            /// What the coherence machinery has done so far.
            pub fn stats(&self) -> crate::TieredStats {
                self.local.stats()
            }

            /// Whether values are kept locally now: always without a feed; with one, while it
            /// is connected.
            pub fn is_caching_locally(&self) -> bool {
                self.local.is_caching()
            }

            /// The longest a local entry may be stale: the feed's detection bound (while a
            /// broken feed goes unnoticed) with a feed, the local TTL without one; never more
            /// than the local TTL either way.
            pub fn staleness_bound(&self) -> std::time::Duration {
                self.tiers.staleness_bound()
            }
        }
    };
}
pub(crate) use tiered_engine_common;

impl<L, S, Face> TieredBuilder<L, S, Face> {
    pub(crate) fn new(local: L, shared: S) -> Self {
        Self {
            local,
            shared,
            local_ttl: DEFAULT_LOCAL_TTL,
            feed: Feed::Unset,
            face: PhantomData,
        }
    }

    /// The longest a value stays in the local tier (60 s by default). A refill is kept for the
    /// shared entry's remaining TTL, capped by this. With a feed, it bounds staleness only when
    /// the feed fails in a way nobody notices; without one, it is the staleness bound.
    pub fn local_ttl(mut self, cap: Duration) -> Self {
        self.local_ttl = cap;
        self
    }

    /// Listens to `source` for changes made by anyone: each one removes the key from the local
    /// tier. While the source is lost, nothing is kept locally (every read goes to the shared
    /// tier); when it connects again, the local tier starts empty.
    pub fn invalidations(mut self, source: impl InvalidationSource + 'static) -> Self {
        self.feed = Feed::Source(Arc::new(source));
        self
    }

    /// No feed: other processes' changes are seen once the local copy expires, so a local
    /// entry may be up to the [local TTL](Self::local_ttl) stale. For shared tiers that have no
    /// feed (memcached, most third-party engines); set a short local TTL.
    pub fn without_invalidations(mut self) -> Self {
        self.feed = Feed::Without;
        self
    }

    /// Checks the settings and subscribes to the feed.
    pub(crate) fn tiers(self, shared_caps: Capabilities) -> Result<Tiers<L, S>>
    where
        L: CacheEngine + 'static,
    {
        let local_caps = self.local.capabilities();
        if !local_caps.shared_across_threads {
            return Err(CacheError::invalid_config(format!(
                "the local tier ({}) keeps entries per thread, so an invalidation could not reach \
                 every thread's copy; use a shared engine such as InMemoryEngine",
                local_caps.backend
            )));
        }
        if self.local_ttl.is_zero() {
            return Err(CacheError::invalid_config(
                "local_ttl must be longer than zero",
            ));
        }
        if self.local_ttl > local_caps.max_ttl {
            return Err(CacheError::invalid_config(format!(
                "local_ttl of {:?} is longer than the local tier accepts ({:?})",
                self.local_ttl, local_caps.max_ttl
            )));
        }
        if local_caps.max_key_len < shared_caps.max_key_len {
            // Keys the shared tier takes but the local one refuses would fail every read.
            return Err(CacheError::invalid_config(format!(
                "the local tier accepts keys of at most {} bytes, the shared one {}: give the \
                 local tier no namespace (or a shorter one)",
                local_caps.max_key_len, shared_caps.max_key_len
            )));
        }
        let source = match self.feed {
            Feed::Unset => {
                return Err(CacheError::invalid_config(
                    "a tiered engine needs to know how it hears of other processes' changes: \
                     call .invalidations(source) (e.g. RedisEngine::invalidations()) or \
                     .without_invalidations() to accept staleness up to the local TTL",
                ));
            }
            Feed::Without => None,
            Feed::Source(source) => Some(source),
        };
        let local = Arc::new(Local::new(self.local, self.local_ttl, source.is_none()));
        let (subscription, detection_bound) = match source {
            None => (None, None),
            Some(source) => {
                // The feed's thread holds the local tier only, never the engine: dropping the
                // engine drops the subscription, which ends the thread.
                let listener = Arc::clone(&local);
                let sink: Sink = Arc::new(move |event| listener.hear(event));
                (
                    Some(source.subscribe(sink)?),
                    Some(source.detection_bound()),
                )
            }
        };
        Ok(Tiers {
            local,
            shared: self.shared,
            subscription: Mutex::new(subscription),
            detection_bound,
        })
    }
}

impl<L, S> TieredBuilder<L, S, Blocking> {
    /// Builds the engine and, with a feed, subscribes to it (waiting up to the feed's connect
    /// timeout for it to answer; a feed that cannot connect yet only means nothing is kept
    /// locally until it does).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` when no feed choice was made, the shared tier does not offer
    /// [`remaining_ttl`](cache_core::Operation::RemainingTtl), the local tier is per-thread, or
    /// the local TTL is zero or longer than the local tier accepts; the feed's own `InvalidConfig` (a
    /// topology it does not support).
    pub fn build(self) -> Result<crate::TieredEngine<L, S>>
    where
        L: CacheEngine + 'static,
        S: CacheEngine,
    {
        let caps = self.shared.capabilities();
        require_shared(&caps)?;
        Ok(crate::TieredEngine::from_tiers(self.tiers(caps)?))
    }
}

/// What a tiered cache needs of its shared tier: remaining TTLs, so that a local copy never
/// outlives the shared entry, and reads that see this process's writes, so that a refill is
/// never older than a write that returned.
fn require_shared(caps: &Capabilities) -> Result<()> {
    caps.require(cache_core::Operation::RemainingTtl, SHARED_TIER_NEEDS)?;
    if !caps.read_your_writes {
        return Err(cache_core::CacheError::invalid_config(format!(
            "a tiered cache needs a shared tier whose reads see its writes; {} reads from \
             replicas, which may lag them: read from the master for the shared tier",
            caps.backend
        )));
    }
    Ok(())
}

impl<L, S> TieredBuilder<L, S, Async> {
    /// Builds the async engine; as the blocking [`build`](TieredBuilder::build).
    ///
    /// # Errors
    ///
    /// As the blocking [`build`](TieredBuilder::build).
    pub fn build(self) -> Result<crate::AsyncTieredEngine<L, S>>
    where
        L: CacheEngine + 'static,
        S: cache_core::AsyncCacheEngine,
    {
        let caps = self.shared.capabilities();
        require_shared(&caps)?;
        Ok(crate::AsyncTieredEngine::from_tiers(self.tiers(caps)?))
    }
}
