#![doc = include_str!("docs/crate.md")]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod cluster;
mod commands;
mod config;
mod core;
mod engine;
#[cfg(feature = "redis-crate")]
mod external;
mod invalidation;
mod parts;
#[doc(hidden)]
pub mod resp;
mod sentinel;

pub use cache_remote::blocking::PoolState;
pub use cache_remote::{Async, Blocking};
pub use cache_remote::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IDLE_CONNECTIONS, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_PIPELINES, DEFAULT_TIMEOUT,
};
pub use config::{
    DEFAULT_MAX_VALUE_SIZE, DEFAULT_URL, ReadFrom, RedisEngineBuilder, RedisProtocol,
};
#[cfg(feature = "tokio")]
pub use engine::AsyncRedisEngine;
pub use engine::RedisEngine;
pub use invalidation::RedisInvalidations;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
