//! Layers around any cache-toolkit engine, blocking or async, ours or a third party's:
//! fail-open, in-process statistics, metrics and tracing.
//!
//! A layer is an [`Interceptor`]: it sees each operation before it runs and how it ended, and
//! may turn a backend failure into a miss. [`Layered`] puts one around any engine and is an
//! engine again, of the same face (blocking [`CacheEngine`](cache_core::CacheEngine), async
//! [`AsyncCacheEngine`](cache_core::AsyncCacheEngine), or both), with the same capabilities.
//! Layers compose in any order with [`LayerExt::layer`]:
//!
//! ```
//! use std::time::Duration;
//! use cache_core::{Bytes, CacheEngine, Ttl};
//! use cache_layers::{FailOpen, LayerExt, Stats};
//! use cache_local::InMemoryEngine;
//!
//! let stats = Stats::new();
//! let engine = InMemoryEngine::new()
//!     .layer(stats.clone())     // counts what reaches the engine
//!     .layer(FailOpen::new());  // a failing engine gives misses, not errors
//! engine.set("k", Bytes::from_static(b"v"), Ttl::After(Duration::from_secs(60)))?;
//! assert!(engine.get("k")?.is_some());
//! assert!(engine.get("other")?.is_none());
//! let counts = stats.snapshot();
//! assert_eq!((counts.hits, counts.misses, counts.writes), (1, 1, 1));
//! # Ok::<(), cache_core::CacheError>(())
//! ```
//!
//! | layer | feature | what it does |
//! |---|---|---|
//! | [`FailOpen`] | always | backend failures become misses and skipped writes, counted and reported to a hook |
//! | [`Stats`] | always | in-process counts: hits, misses, writes, errors |
//! | `Metrics` | `metrics` | counters and latency histograms through the `metrics` facade (Prometheus, StatsD, OpenTelemetry exporters) |
//! | `Tracing` | `tracing` | one event per operation through `tracing`, keys hashed or left out |
//!
//! Layers cost nothing worth measuring when nobody listens: `Metrics` reads the clock only when
//! a recorder was installed, and `Tracing` only when its events are enabled.
//!
//! A third-party engine gets every layer for free: anything that implements an engine trait can
//! be wrapped. Layers never change what an engine does on success, so a layered engine passes
//! the same conformance kit.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod call;
mod fail_open;
mod layered;
#[cfg(feature = "metrics")]
mod metrics;
mod stats;
#[cfg(feature = "tracing")]
mod tracing;

pub use call::{Call, Labels, Operation, Outcome, error_kind};
pub use fail_open::{FailOpen, FailOpenCounts};
pub use layered::{Interceptor, Layer, LayerExt, Layered};
#[cfg(feature = "metrics")]
pub use metrics::Metrics;
pub use stats::{EngineStats, Stats};
#[cfg(feature = "tracing")]
pub use tracing::{KeyReport, Tracing};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
