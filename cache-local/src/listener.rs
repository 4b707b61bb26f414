//! Removal listeners: a callback told about every entry that leaves a local engine, and why.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cache_core::Bytes;

use crate::common::{Entry, Timer};

/// Why an entry left the engine, as told to a
/// [removal listener](crate::InMemoryEngineBuilder::removal_listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Evicted to keep the engine within its entry or byte bound.
    Size,
    /// Its TTL ran out, or it sat unread for the time-to-idle. Reported when the engine finds it
    /// (a read, a write to the key, the sweep before inserts), not at the moment it expired; an
    /// expired entry that is evicted, replaced or removed is reported as expired too.
    Expired,
    /// Overwritten by a write to its key (`set`, `set_many`, `add` over an expired entry).
    Replaced,
    /// Removed by a caller: `delete`, `delete_many`, `delete_if_equals`, `touch` with a zero
    /// TTL, `invalidate_if`.
    Removed,
    /// Removed by [`clear`](cache_core::CacheEngine::clear) or
    /// [`close`](cache_core::CacheEngine::close).
    Cleared,
}

impl RemovalCause {
    /// Whether the engine chose to remove the entry (size or expiry) rather than a caller.
    pub fn was_evicted(self) -> bool {
        matches!(self, RemovalCause::Size | RemovalCause::Expired)
    }
}

/// The callback type of a removal listener: the key as the caller wrote it, the value, and the
/// cause.
pub type RemovalListener = dyn Fn(&str, &Bytes, RemovalCause) + Send + Sync;

/// Entries that left a store during one operation, with their causes, to be told to the
/// listener once the store's lock is released.
pub(crate) type Removed = Vec<(Box<str>, Entry, RemovalCause)>;

/// A listener and the count of its panics.
#[derive(Clone)]
pub(crate) struct Listener {
    callback: Arc<RemovalListener>,
    panics: Arc<AtomicU64>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("panics", &self.panics.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Listener {
    pub(crate) fn new(callback: Arc<RemovalListener>) -> Self {
        Self {
            callback,
            panics: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Tells the listener about each removed entry, in order, on this thread. An entry found
    /// expired is reported as [`RemovalCause::Expired`] whatever removed it, except by a clear.
    /// A panic in the listener is caught and counted; the next entry is still reported.
    pub(crate) fn notify(&self, removed: Removed, timer: &Timer) {
        for (key, entry, cause) in removed {
            let cause = if cause != RemovalCause::Cleared && entry.is_expired(timer) {
                RemovalCause::Expired
            } else {
                cause
            };
            let call = catch_unwind(AssertUnwindSafe(|| {
                (self.callback)(&key, &entry.value, cause);
            }));
            if call.is_err() {
                self.panics.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
}
