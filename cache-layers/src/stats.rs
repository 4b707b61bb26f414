//! [`Stats`]: in-process counts of what an engine did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::call::{Call, Operation, Outcome};
use crate::layered::Interceptor;

/// Counts what the engine it wraps did: calls per operation, keys found and missed, entries
/// written, errors. Clones share the counts, so keep one to read them:
///
/// ```
/// use cache_core::CacheEngine;
/// use cache_layers::{LayerExt, Operation, Stats};
/// use cache_local::InMemoryEngine;
///
/// let stats = Stats::new();
/// let engine = InMemoryEngine::new().layer(stats.clone());
/// engine.get_many(&["a", "b"])?;
/// let counts = stats.snapshot();
/// assert_eq!(counts.misses, 2);
/// assert_eq!(counts.calls(Operation::GetMany), 1);
/// # Ok::<(), cache_core::CacheError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Stats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    calls: [AtomicU64; Operation::ALL.len()],
    hits: AtomicU64,
    misses: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    transient_errors: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineStats {
    calls: [u64; Operation::ALL.len()],
    /// Keys read and found.
    pub hits: u64,
    /// Keys read and not found (or, with a fail-open layer outside this one, not read).
    pub misses: u64,
    /// Entries written by `set`, `set_many` and `add` that succeeded.
    pub writes: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Of those, transient ones (`Connection`, `Timeout`).
    pub transient_errors: u64,
}

impl EngineStats {
    /// How many calls of `operation` were made.
    pub fn calls(&self, operation: Operation) -> u64 {
        self.calls[operation.index()]
    }

    /// Hits over reads, or `None` before any read.
    pub fn hit_ratio(&self) -> Option<f64> {
        let reads = self.hits + self.misses;
        (reads > 0).then(|| self.hits as f64 / reads as f64)
    }
}

impl Stats {
    /// Counts from zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counts so far.
    pub fn snapshot(&self) -> EngineStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut calls = [0; Operation::ALL.len()];
        for (slot, counter) in calls.iter_mut().zip(&c.calls) {
            *slot = load(counter);
        }
        EngineStats {
            calls,
            hits: load(&c.hits),
            misses: load(&c.misses),
            writes: load(&c.writes),
            errors: load(&c.errors),
            transient_errors: load(&c.transient_errors),
        }
    }
}

impl Interceptor for Stats {
    type Ticket = ();

    #[inline]
    fn before(&self, _call: &Call<'_>) {}

    #[inline]
    fn after(&self, call: &Call<'_>, _ticket: (), outcome: &Outcome<'_>) {
        let c = &self.counters;
        c.calls[call.operation.index()].fetch_add(1, Ordering::Relaxed);
        match outcome {
            Outcome::Done { hits, misses } => {
                if *hits > 0 {
                    c.hits.fetch_add(*hits, Ordering::Relaxed);
                }
                if *misses > 0 {
                    c.misses.fetch_add(*misses, Ordering::Relaxed);
                }
                if matches!(
                    call.operation,
                    Operation::Set | Operation::SetMany | Operation::Add
                ) {
                    c.writes.fetch_add(call.keys as u64, Ordering::Relaxed);
                }
            }
            Outcome::Failed(error) | Outcome::Absorbed(error) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                if error.is_transient() {
                    c.transient_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
