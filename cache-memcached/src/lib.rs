#![doc = include_str!("docs/crate.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod commands;
mod config;
mod core;
mod engine;
mod generation;
mod keys;
#[doc(hidden)]
pub mod meta;
mod parts;
mod ring;

pub use cache_remote::blocking::PoolState;
pub use cache_remote::{Async, Blocking};
pub use cache_remote::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IDLE_CONNECTIONS, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_PIPELINES, DEFAULT_TIMEOUT,
};
pub use config::{
    DEFAULT_GENERATION_REFRESH, DEFAULT_ITEM_SIZE_LIMIT, DEFAULT_SERVER, MemcachedEngineBuilder,
};
#[cfg(feature = "tokio")]
pub use engine::AsyncMemcachedEngine;
pub use engine::MemcachedEngine;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
