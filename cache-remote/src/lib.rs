//! The remote core of cache-toolkit: what the Redis and memcached engines share, and what a
//! third-party remote backend can build on.
//!
//! Drivers for these servers time out per read and accept any reply length: a trickled reply
//! could hold an operation for minutes and a reply announcing 2 GiB was allocated. This crate
//! bounds both, once, for every remote engine:
//!
//! - **I/O-free framing with limits** ([`Decode`]): requests are encoded into buffers and
//!   replies decoded from them; every size a reply announces is checked against the request's
//!   [`ReplyLimits`] before anything is allocated or waited for. Each backend brings its own
//!   codec (cache-redis has RESP, cache-memcached the meta protocol), built on the line and
//!   number helpers here ([`line_end`], [`parse_i64`], [`push_decimal`]).
//! - **Operations as exchanges** ([`Exchange`]): an operation is a conversation of requests and
//!   replies with no I/O in it, so the blocking transport (and the async one) run the same
//!   code, and each request says whether it may be sent twice.
//! - **One deadline per operation** ([`Deadline`]), covering the wait for a connection, the
//!   request and every reply; operations whose work grows with their input give some requests
//!   a deadline of their own ([`Request::with_own_deadline`]).
//! - **A bounded pool** ([`ClientSettings::max_connections`]): callers beyond the bound wait
//!   for a connection until their deadline.
//! - **One retry rule**: a connection taken from the pool that turns out dead is replaced and
//!   the operation runs again only if its first request never left or may be sent twice; a
//!   non-idempotent request (an increment) is never resent after it may have reached the
//!   server.
//! - **One place for errors**: transport failures become `Connection`, `Timeout` or `Backend`
//!   errors naming the operation; [`cache_core::CacheError::is_backend_failure`] is the one
//!   classification fail-open uses.
//!
//! A backend implements [`Backend`] (where to connect, its decoder, its handshake) and builds
//! its operations as exchanges; [`blocking::Client`] runs them.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tokio")]
pub mod asynchronous;
mod backend;
pub mod blocking;
mod buffer;
mod exchange;
mod link;
mod pool;
mod protocol;
mod settings;
#[cfg(feature = "tls")]
pub mod tls;
mod transport;

#[cfg(feature = "tls")]
pub use backend::TlsSettings;
pub use backend::{Backend, Broken, ReplyOf, UNIX_PREFIX};
pub use buffer::ReadBuffer;
pub use cache_core::block_on;
pub use cache_core::{Async, Blocking};
pub use exchange::{
    Batches, BoxExchange, Deadline, Exchange, ExchangeExt, MapOutput, Ready, Request, Single, Step,
    batches, ready, single,
};
pub use protocol::{
    Decode, Decoded, ProtocolError, ReplyLimits, line_end, parse_i64, push_decimal,
};
pub use settings::{
    ClientSettings, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IDLE_CONNECTIONS, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_PIPELINES, DEFAULT_TIMEOUT, RemoteOptions,
};
pub use transport::{Make, Output, Routed, Transport, by_pipeline, route_of, routed};

#[doc(hidden)]
pub mod __private {
    pub use cache_core::{Result, Ttl};
}

/// The most keys of one batch of a bulk operation: each batch is one request with its own
/// deadline (the first shares the operation's).
pub const BATCH_KEYS: usize = 512;
/// The most value bytes of one batch of a bulk write (a batch holds at least one entry).
pub const BATCH_BYTES: usize = 1 << 20;

/// Splits entries of these value sizes into batches of at most [`BATCH_KEYS`] entries and
/// [`BATCH_BYTES`] value bytes (a batch holds at least one entry), as ranges of indices.
///
/// ```
/// let sizes = [600_000, 600_000, 10, 10];
/// assert_eq!(cache_remote::batch_ranges(sizes), vec![0..1, 1..4]);
/// assert_eq!(cache_remote::batch_ranges([1; 1000]), vec![0..512, 512..1000]);
/// ```
pub fn batch_ranges(sizes: impl IntoIterator<Item = usize>) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut bytes, mut len) = (0, 0, 0);
    for (i, size) in sizes.into_iter().enumerate() {
        if i > start && (i - start >= BATCH_KEYS || bytes + size > BATCH_BYTES) {
            ranges.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
        len = i + 1;
    }
    if len > start {
        ranges.push(start..len);
    }
    ranges
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
