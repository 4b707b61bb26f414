#![doc = include_str!("docs/crate.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod conditional;
mod date;
mod directives;
mod entry;
mod flight;
mod key;
mod layer;
mod policy;
mod range;
mod service;
mod targeted;

pub use body::CacheBody;
pub use layer::{
    CACHE_STATUS_HEADER, DEFAULT_CACHE_NAME, DEFAULT_KEEP_STALE, DEFAULT_MAX_BODY_SIZE,
    HttpCacheBuilder, HttpCacheLayer, HttpCacheStats, REVERSE_PROXY_STALE_ON_ERROR,
};
pub use service::{HttpCache, ResponseFuture};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
