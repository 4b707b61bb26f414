//! What a typed load hands its single-flight waiters (the single-flight itself is
//! [`cache_core::flight`], shared with the HTTP layer).

use std::any::Any;
use std::sync::Arc;

use cache_core::Bytes;

/// What a finished load left for its waiters.
#[derive(Clone)]
pub(crate) enum Loaded {
    /// The encoded value (envelope included).
    Value(Bytes),
    /// The loader's error, as an `Arc<E>` behind `Any`.
    LoaderError(Arc<dyn Any + Send + Sync>),
}

/// The loads in flight, by key.
pub(crate) type Flights = cache_core::flight::Flights<Loaded>;
/// What joining a load made of the caller.
pub(crate) type Role = cache_core::flight::Role<Loaded>;
/// Held by the caller that loads (see [`cache_core::flight::Leader`]).
pub(crate) type LeaderGuard = cache_core::flight::Leader<Loaded>;
