//! Invalidations: how a shared engine tells the processes that cache its entries locally that
//! entries changed.
//!
//! A two-tier cache (a fast local tier in front of a shared one) stays coherent across processes
//! only if every process hears when another one changes a shared entry. An
//! [`InvalidationSource`] is that ear: it delivers one [`Invalidation`] per event to the sink
//! given to [`subscribe`](InvalidationSource::subscribe), from a thread of its own, for as
//! long as the [`Subscription`] lives.
//!
//! The contract a source keeps, and that a listener may rely on:
//!
//! - Every change of an entry under the source's namespace (by any client, expiry and eviction
//!   included where the server reports them) is delivered as [`Invalidation::Key`] or covered
//!   by an [`Invalidation::All`], after the change is applied on the server.
//! - When the source can no longer promise that (its connection broke, it is reconnecting), it
//!   delivers [`Invalidation::Lost`] first; once it can again, [`Invalidation::Connected`].
//!   Changes between the two may never be reported: a listener must treat everything it holds
//!   as stale when it hears `Connected` after `Lost`.
//! - A source whose connection breaks silently notices within its stated detection bound (a
//!   heartbeat), and says `Lost` then.
//!
//! `cache-redis` implements this for Redis with server-assisted client tracking; a shared tier
//! without such a feed (memcached) has none, and a tiered cache over it bounds staleness by its
//! local TTL alone.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use cache_core::invalidation::{Invalidation, Sink};
//!
//! let heard = Arc::new(AtomicUsize::new(0));
//! let counter = Arc::clone(&heard);
//! let sink: Sink = Arc::new(move |event: Invalidation<'_>| {
//!     if let Invalidation::Key(_) = event {
//!         counter.fetch_add(1, Ordering::Relaxed);
//!     }
//! });
//! sink(Invalidation::Key("user:1"));
//! assert_eq!(heard.load(Ordering::Relaxed), 1);
//! ```

use std::fmt::{self, Debug};
use std::sync::Arc;

use crate::error::Result;

/// One event of an [`InvalidationSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation<'a> {
    /// The entry under this key (as the engine's callers name it: without the namespace) changed
    /// or was removed.
    Key(&'a str),
    /// Every entry of the namespace may have changed (a clear or a flush).
    All,
    /// The source can no longer report changes (its connection broke); changes may be missed
    /// until [`Connected`](Self::Connected).
    Lost,
    /// The source reports changes again, from now on; changes made while it was lost were not
    /// reported.
    Connected,
}

/// Where a source delivers its events: called from the source's own thread, one event at a
/// time, so it must be quick and must not block.
pub type Sink = Arc<dyn Fn(Invalidation<'_>) + Send + Sync>;

/// A feed of [`Invalidation`]s for the entries of one shared engine.
pub trait InvalidationSource: Send + Sync + Debug {
    /// Starts delivering events to `sink` until the returned [`Subscription`] is dropped.
    ///
    /// The first event is `Connected` (once the feed is established) or `Lost` (when it cannot
    /// be established yet; the source keeps trying and says `Connected` when it succeeds).
    /// Sources wait for the first of these, up to their connect timeout, before returning, so
    /// that a listener built while the server answers is coherent from its first operation.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` when the source cannot feed this engine's setup at all (say, a topology
    /// it does not support). Unreachable servers are not an error: they are `Lost`.
    fn subscribe(&self, sink: Sink) -> Result<Subscription>;

    /// How long a silently broken feed may go unnoticed before the source says `Lost`: the
    /// staleness bound a listener can promise while the feed's connection is down.
    fn detection_bound(&self) -> std::time::Duration;
}

/// A live subscription: dropping it (or calling [`cancel`](Self::cancel)) stops the feed and
/// waits for the source's thread to end.
pub struct Subscription {
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Subscription {
    /// A subscription that runs `stop` when it ends.
    pub fn new(stop: impl FnOnce() + Send + 'static) -> Self {
        Self {
            stop: Some(Box::new(stop)),
        }
    }

    /// Stops the feed now; no event is delivered once this returns.
    pub fn cancel(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.end();
    }
}

impl Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("active", &self.stop.is_some())
            .finish()
    }
}
