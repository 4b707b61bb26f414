//! In-process cache engines for cache-toolkit.
//!
//! - [`InMemoryEngine`]: one bounded cache shared by every thread that holds it, with per-entry
//!   TTLs and a scan-resistant, self-tuning eviction policy (W-TinyLFU with an adaptive window).
//! - [`ThreadLocalEngine`]: each thread its own bounded entries, no sharing and no contention.
//!
//! Both implement [`cache_core::CacheEngine`] and pass the conformance kit in `cache-tests`. Store
//! typed values in them with `cache-serializer`'s `TypedCache`.
//!
//! # Defaults
//!
//! | setting | default |
//! |---|---|
//! | `max_capacity` | 300 entries (per thread for `ThreadLocalEngine`) |
//! | `max_bytes` | none |
//! | `default_ttl` | 300 s |
//! | clock | the system clock; a `ManualClock` in tests |
//! | longest TTL | 100 years ([`MAX_TTL`]) |
//! | TTL resolution | `2 * kernel tick + 2 ms` (10 ms on a 250 Hz kernel); 1 ms with a manual clock |
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cache_core::clock::ManualClock;
//! use cache_core::{Bytes, CacheEngine, Ttl};
//! use cache_local::InMemoryEngine;
//!
//! # fn main() -> cache_core::Result<()> {
//! let clock = Arc::new(ManualClock::new());
//! let cache = InMemoryEngine::builder().clock(clock.clone()).build()?;
//!
//! cache.set("session", Bytes::from_static(b"token"), Ttl::After(Duration::from_secs(30)))?;
//! clock.advance(Duration::from_secs(29));
//! assert!(cache.exists("session")?);
//! clock.advance(Duration::from_secs(1));
//! assert!(!cache.exists("session")?);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod common;
mod listener;
mod memory;
mod shard;
mod sketch;
mod store;
mod thread_local;

pub use common::{DEFAULT_MAX_CAPACITY, MAX_TTL};
pub use listener::{RemovalCause, RemovalListener};
#[doc(hidden)]
pub use memory::default_shards_for;
pub use memory::{InMemoryEngine, InMemoryEngineBuilder};
pub use thread_local::{ThreadLocalEngine, ThreadLocalEngineBuilder};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
