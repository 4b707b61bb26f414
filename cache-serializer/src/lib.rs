//! Typed values over any cache-toolkit engine.
//!
//! [`TypedCache`] stores serde types as bytes in any [`CacheEngine`](cache_core::CacheEngine),
//! bincode by default, and knows when the bytes under a key were written for another type or
//! another version of the type.
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use cache_core::Ttl;
//! use cache_local::InMemoryEngine;
//! use cache_serializer::TypedCache;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct Profile { id: u64, name: String, tags: Vec<String> }
//!
//! # fn main() -> cache_core::Result<()> {
//! let cache = TypedCache::new(InMemoryEngine::new());
//! let profile = cache.entry("profile:7").ttl(Ttl::After(Duration::from_secs(60))).or_load(|| {
//!     Profile { id: 7, name: "Grace".into(), tags: vec!["admiral".into()] } // a slow query, say
//! })?;
//! assert_eq!(cache.get::<Profile>("profile:7")?, Some(profile));
//! # Ok(())
//! # }
//! ```
//!
//! # Envelope and fingerprints
//!
//! Every value carries an 11-byte envelope: a magic byte, the envelope version, the codec id and
//! a 64-bit [`fingerprint`] of the type's serde shape (names, field order, field types,
//! enum variants; never the module path or `TypeId`). A value whose shape differs from the
//! reader's is a miss by default and [`CacheError::SchemaMismatch`](cache_core::CacheError) in
//! strict mode. Types whose shape cannot be traced need a schema name
//! ([`TypedCacheBuilder::schema`]); without one, using them is a clear
//! [`CacheError::UnknownSchema`](cache_core::CacheError) error.
//!
//! # Codecs
//!
//! | codec | feature | notes |
//! |---|---|---|
//! | [`Bincode`] | always | compact and fast; bincode 2.0.1, decoding bounded |
//! | `Json` | `json` | readable; larger and slower |
//!
//! bincode's project has stopped (RUSTSEC-2025-0141 marks 2.0.1 unmaintained, with no safe
//! upgrade); it is kept behind the [`Codec`] trait so another format can replace it.
//!
//! # Single-flight
//!
//! The entry API ([`TypedCache::entry`], [`TypedCache::entries`]) runs the loader once when many threads ask for the same missing
//! key; the others wait for its value. A failing loader's error reaches every waiter and is not
//! cached.
//!
//! # Freshness
//!
//! - **Refresh ahead**: [`Entry::refresh`] with a [`Refresh`] policy serves a
//!   value past its freshness while one refresh per key runs in the background, up to a hard
//!   limit, and can refresh hot keys early (XFetch) from the load time recorded with the value.
//! - **Leases across processes**: with [`TypedCacheBuilder::lease`] (a [`Lease`]), one loader
//!   runs per missing key across every process sharing the engine.
//! - **Tags**: [`TypedCache::set_tagged`], [`Entry::tags`] and
//!   [`TypedCache::invalidate_tag`], built on [`cache_core::tags`]: one write invalidates every
//!   entry carrying a tag.
//! - **Negative caching**: [`Entry::negative_ttl`] caches a loader's "not
//!   found" for its own TTL.
//! - **Compression**: [`TypedCacheBuilder::compress_above`].
//!
//! # Failing open
//!
//! By default every backend error is returned (fail closed). With
//! [`TypedCacheBuilder::fail_open`], a failing backend makes reads miss and writes skip, counted
//! in [`CacheStats`] and reported to [`TypedCacheBuilder::on_backend_error`], so a dead cache
//! server slows a service down instead of taking it down.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod asynchronous;
mod blocking;
mod codec;
mod core;
mod entry;
mod envelope;
mod face;
pub mod fingerprint;
mod flight;
mod lease;
mod refresh;
mod shape;

pub use asynchronous::AsyncTypedCache;
pub use blocking::{CacheStats, FailureHook, LoadError, TypedCache, TypedCacheBuilder};
#[cfg(feature = "macros")]
pub use cache_macros::cached;
#[cfg(feature = "json")]
pub use codec::Json;
pub use codec::{Bincode, Codec};
pub use core::{DEFAULT_MAX_BYTES_PER_CALL, DEFAULT_MAX_INFLATED};
pub use entry::{Entries, Entry, FixedTtl, RefreshingEntry, TtlFrom};
pub use fingerprint::Fingerprint;
pub use lease::{LEASE_KEY_PREFIX, Lease};
pub use refresh::{DEFAULT_BETA, DEFAULT_MAX_BACKGROUND_REFRESHES, Refresh};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
