//! Single-flight: one request per key at a time reaches the inner service on a miss; the
//! others wait for its outcome. The mechanism is [`cache_core::flight`]; this is what a
//! leader hands its waiters.

use std::sync::Arc;

use http::HeaderName;

use crate::entry::StoredResponse;

/// A response a leader stored, handed to its waiters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) response: StoredResponse,
    /// The variant it is: the names it varies on, their generation and the leader's variant
    /// key; a waiter uses it only if its own request gives the same key.
    pub(crate) variant: Option<(u64, Vec<HeaderName>, String)>,
}

/// How a load ended, for its waiters.
#[derive(Debug, Clone)]
pub(crate) enum Fetched {
    /// The response was storable: waiters whose request matches its variant use it.
    Stored(Arc<Shared>),
    /// The response may not be shared: each waiter asks the inner service itself.
    NotStored,
}

/// The requests in flight, by key (see [`cache_core::flight`], shared with the typed layer).
pub(crate) type Flights = cache_core::flight::Flights<Fetched>;
/// What joining a request in flight made of the caller.
pub(crate) type Role = cache_core::flight::Role<Fetched>;
/// Held by the request that reaches the inner service: dropped without `finish` (a dropped
/// future, an error of the inner service), it releases the waiters, and one of them leads.
pub(crate) type LeaderGuard = cache_core::flight::Leader<Fetched>;
