//! The core of cache-toolkit: one engine trait, one TTL type, one error enum and one key rule,
//! shared by every backend.
//!
//! Application code usually depends on a backend crate (`cache-local`, `cache-redis`,
//! `cache-memcached`) and on `cache-serializer` for typed values; this crate is what they all
//! speak. Authors of new backends implement [`CacheEngine`] and prove it with the conformance kit
//! in `cache-tests`.
//!
//! # What lives here
//!
//! | item | what it is |
//! |---|---|
//! | [`CacheEngine`] | the object-safe engine trait: bytes in, bytes out |
//! | [`AsyncCacheEngine`], [`DynAsyncCacheEngine`] | the same operations as futures, and its dyn-compatible companion |
//! | [`Ttl`], [`Expiry`], [`DEFAULT_TTL`] | how long an entry lives (300 s by default) |
//! | [`CacheError`], [`Result`] | the meaning-based error enum and its `is_transient()` |
//! | [`Capabilities`], [`Operation`] | limits, sharing and optional operations an engine declares |
//! | [`NonBlocking`], [`block_on`] | the one adapter between the blocking and the async faces |
//! | [`key`] | the portable key rule and prefix-free namespaces |
//! | [`invalidation`] | the feed that tells local tiers a shared entry changed |
//! | [`counter`] | the decimal counter syntax of `increment` |
//! | [`clock`] | the system clock and a manual clock for tests |
//! | [`config`] | parsing of engines' environment variables, URL redaction |
//! | [`flight`] | single-flight: one load per key at a time, for layers (the typed and HTTP ones use it) |
//!
//! # Example
//!
//! A function written against the trait works with every engine:
//!
//! ```
//! use std::time::Duration;
//! use cache_core::{Bytes, CacheEngine, CacheError, Ttl};
//!
//! fn visit(cache: &dyn CacheEngine, page: &str) -> Result<i64, CacheError> {
//!     let key = format!("visits:{page}");
//!     let count = cache.increment(&key, 1)?;
//!     cache.touch(&key, Ttl::After(Duration::from_secs(3600)))?;
//!     Ok(count)
//! }
//! # let _ = visit;
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod asynchronous;
mod block_on;
mod blocking;
mod capabilities;
pub mod clock;
pub mod config;
pub mod counter;
mod error;
pub mod flight;
pub mod invalidation;
pub mod key;
pub mod tags;
pub mod ttl;

pub use asynchronous::{
    Async, AsyncCacheEngine, Blocking, BoxFuture, DynAsyncCacheEngine, NonBlocking,
};
pub use block_on::block_on;
pub use blocking::CacheEngine;
pub use bytes::Bytes;
pub use capabilities::{Capabilities, Operation, Operations};
pub use error::{BoxError, CacheError, KeyDisplay, KeyProblem, Redacted, Result};
pub use ttl::{DEFAULT_TTL, Expiry, Remaining, Ttl};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
