//! The one crate to start with: every part of cache-toolkit, behind features.
//!
//! The root re-exports [`cache_core`] (the engine traits, [`Ttl`], [`CacheError`], ...) and the
//! types most services use; each part is also a module named after its role, holding the whole
//! of the crate behind it. With the default features (`local`, `typed`):
//!
//! ```
//! # #[cfg(all(feature = "local", feature = "typed"))] {
//! use cache_toolkit::{InMemoryEngine, Ttl, TypedCache};
//!
//! #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
//! struct User {
//!     name: String,
//! }
//!
//! let cache = TypedCache::new(InMemoryEngine::new());
//! let user = User { name: "Ada".into() };
//! cache.set("user:1", &user, Ttl::Default)?;
//! assert_eq!(cache.get::<User>("user:1")?, Some(user));
//! # }
//! # Ok::<(), cache_toolkit::CacheError>(())
//! ```
//!
//! # Features
//!
//! | feature | module and root items | crate |
//! |---|---|---|
//! | `local` (default) | `local`: `InMemoryEngine`, `ThreadLocalEngine` | `cache-local` |
//! | `typed` (default) | `typed`: `TypedCache`, `AsyncTypedCache` | `cache-serializer` |
//! | `redis` | `redis`: `RedisEngine` | `cache-redis` |
//! | `memcached` | `memcached`: `MemcachedEngine` | `cache-memcached` |
//! | `tokio` | `AsyncRedisEngine`, `AsyncMemcachedEngine`, async leases and refresh | |
//! | `tls` | `rediss://` URLs (and `memcacheds://` with `memcached`), with rustls | `cache-redis`, `cache-memcached` |
//! | `layers`, `metrics`, `tracing` | `layers`: stats, fail-open, metrics, tracing | `cache-layers` |
//! | `tiered` | `tiered`: `TieredEngine` | `cache-tiered` |
//! | `http` | `http`: `HttpCacheLayer` | `cache-http` |
//! | `macros` | `#[cached]` | `cache-macros` |
//! | `json` | the JSON codec, `typed::Json` | `cache-serializer` |
//!
//! Each module is listed below when its feature is on (on docs.rs, all are).
//!
//! A service that needs a single backend may depend on `cache-core` and that backend's crate
//! instead; the types are the same ones.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use cache_core::*;

/// In-process engines (`cache-local`).
#[cfg(feature = "local")]
pub use cache_local as local;
#[cfg(feature = "local")]
pub use cache_local::{InMemoryEngine, ThreadLocalEngine};

/// Typed values over any engine (`cache-serializer`).
#[cfg(feature = "typed")]
pub use cache_serializer as typed;
#[cfg(feature = "typed")]
pub use cache_serializer::{AsyncTypedCache, TypedCache};

/// The `#[cached]` attribute: a memoized function over a typed cache.
#[cfg(feature = "macros")]
pub use cache_serializer::cached;

/// Redis (`cache-redis`).
#[cfg(feature = "redis")]
pub use cache_redis as redis;
#[cfg(all(feature = "redis", feature = "tokio"))]
pub use cache_redis::AsyncRedisEngine;
#[cfg(feature = "redis")]
pub use cache_redis::RedisEngine;

/// memcached (`cache-memcached`).
#[cfg(feature = "memcached")]
pub use cache_memcached as memcached;
#[cfg(all(feature = "memcached", feature = "tokio"))]
pub use cache_memcached::AsyncMemcachedEngine;
#[cfg(feature = "memcached")]
pub use cache_memcached::MemcachedEngine;

/// Layers over any engine (`cache-layers`).
#[cfg(feature = "layers")]
pub use cache_layers as layers;

/// Two tiers (`cache-tiered`).
#[cfg(feature = "tiered")]
pub use cache_tiered as tiered;
#[cfg(feature = "tiered")]
pub use cache_tiered::{AsyncTieredEngine, TieredEngine};

/// HTTP response caching (`cache-http`).
#[cfg(feature = "http")]
pub use cache_http as http;

/// The README's examples, compiled and run as doctests.
#[cfg(all(doctest, feature = "local", feature = "typed"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
