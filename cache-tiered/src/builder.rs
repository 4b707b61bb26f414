//! The builder both faces share.

use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::invalidation::{InvalidationSource, Sink, Subscription};
use cache_core::{Async, Blocking, CacheEngine, CacheError, Result};

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

/// What an engine is built from.
pub(crate) struct Parts<L, S> {
    pub(crate) local: Arc<Local<L>>,
    pub(crate) shared: S,
    pub(crate) subscription: Mutex<Option<Subscription>>,
    pub(crate) detection_bound: Option<Duration>,
}

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
    pub(crate) fn parts(self, shared_caps: cache_core::Capabilities) -> Result<Parts<L, S>>
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
        Ok(Parts {
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
    /// `InvalidConfig` when no feed choice was made, the local tier is per-thread, or the local
    /// TTL is zero or longer than the local tier accepts; the feed's own `InvalidConfig` (a
    /// topology it does not support).
    pub fn build(self) -> Result<crate::TieredEngine<L, S>>
    where
        L: CacheEngine + 'static,
        S: CacheEngine,
    {
        let caps = self.shared.capabilities();
        Ok(crate::TieredEngine::from_parts(self.parts(caps)?))
    }
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
        Ok(crate::AsyncTieredEngine::from_parts(self.parts(caps)?))
    }
}
