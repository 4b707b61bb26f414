//! [`FailOpen`]: a failing cache slows a service down instead of taking it down.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cache_core::{CacheError, Result};

use crate::call::{Call, Operation, Outcome};
use crate::layered::Interceptor;

type Hook = Arc<dyn Fn(&CacheError) + Send + Sync>;

/// Fail open: when the backend fails, reads return misses and writes are skipped, counted
/// and reported to a hook.
///
/// What counts as a backend failure is cache-core's one classification,
/// [`CacheError::is_backend_failure`]: the server could not be reached, did not answer, refused
/// credentials, a command or a value, answered with something unusable, or the engine was
/// closed. Mistakes in the call itself (`InvalidKey`, `InvalidTtl`, `ValueTooLarge`, a counter
/// that is not a number) are always returned. `increment` and `close` have no fallback to make
/// up, so their failures are always returned too.
///
/// Every backend failure goes to [`on_backend_error`](Self::on_backend_error)'s hook, absorbed
/// or not. Clones share the counts and the hook.
///
/// ```
/// use cache_core::CacheEngine;
/// use cache_layers::{FailOpen, LayerExt};
/// use cache_local::InMemoryEngine;
///
/// let fail_open = FailOpen::new().on_backend_error(|e| eprintln!("cache: {e}"));
/// let engine = InMemoryEngine::new().layer(fail_open.clone());
/// engine.close()?;
/// assert_eq!(engine.get("k")?, None, "a closed engine fails, and the failure is absorbed");
/// assert_eq!(fail_open.counts().failed_open_reads, 1);
/// # Ok::<(), cache_core::CacheError>(())
/// ```
#[derive(Clone)]
pub struct FailOpen {
    shared: Arc<Shared>,
}

struct Shared {
    enabled: bool,
    hook: Option<Hook>,
    reads: AtomicU64,
    writes: AtomicU64,
}

/// How many failures a [`FailOpen`] absorbed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FailOpenCounts {
    /// Reads whose failure became a miss.
    pub failed_open_reads: u64,
    /// Writes whose failure was skipped.
    pub failed_open_writes: u64,
}

impl fmt::Debug for FailOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailOpen")
            .field("enabled", &self.shared.enabled)
            .field("hook", &self.shared.hook.as_ref().map(|_| "set"))
            .field("counts", &self.counts())
            .finish()
    }
}

impl Default for FailOpen {
    fn default() -> Self {
        Self::new()
    }
}

impl FailOpen {
    /// Failing open, without a hook.
    pub fn new() -> Self {
        Self::with(true, None)
    }

    /// Failing closed (every error is returned) but still reporting backend failures to the
    /// hook: the same layer, switched off.
    pub fn closed() -> Self {
        Self::with(false, None)
    }

    fn with(enabled: bool, hook: Option<Hook>) -> Self {
        Self {
            shared: Arc::new(Shared {
                enabled,
                hook,
                reads: AtomicU64::new(0),
                writes: AtomicU64::new(0),
            }),
        }
    }

    /// Calls `hook` with every backend failure, absorbed or not: for logs and alerts.
    #[must_use]
    pub fn on_backend_error(self, hook: impl Fn(&CacheError) + Send + Sync + 'static) -> Self {
        Self::with(self.shared.enabled, Some(Arc::new(hook)))
    }

    /// Whether failures are absorbed.
    pub fn is_open(&self) -> bool {
        self.shared.enabled
    }

    /// The failures absorbed so far, by this layer and its clones.
    pub fn counts(&self) -> FailOpenCounts {
        FailOpenCounts {
            failed_open_reads: self.shared.reads.load(Ordering::Relaxed),
            failed_open_writes: self.shared.writes.load(Ordering::Relaxed),
        }
    }

    /// Settles the result of `operation` run outside a layer (the typed cache uses this): the
    /// value, or for an absorbed backend failure `fallback()`, counted and reported.
    ///
    /// # Errors
    ///
    /// `result`'s error when it is not absorbed.
    pub fn settle<T>(
        &self,
        operation: Operation,
        result: Result<T>,
        fallback: impl FnOnce() -> T,
    ) -> Result<T> {
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                let absorbed = self.decides_to_absorb(&error);
                self.report(operation, &error, absorbed);
                if absorbed { Ok(fallback()) } else { Err(error) }
            }
        }
    }

    fn decides_to_absorb(&self, error: &CacheError) -> bool {
        self.shared.enabled && error.is_backend_failure()
    }

    fn report(&self, operation: Operation, error: &CacheError, absorbed: bool) {
        if !error.is_backend_failure() {
            return;
        }
        if let Some(hook) = &self.shared.hook {
            hook(error);
        }
        if absorbed {
            let counter = if operation.is_read() {
                &self.shared.reads
            } else {
                &self.shared.writes
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Interceptor for FailOpen {
    type Ticket = ();

    #[inline]
    fn before(&self, _call: &Call<'_>) {}

    #[inline]
    fn after(&self, call: &Call<'_>, _ticket: (), outcome: &Outcome<'_>) {
        match outcome {
            Outcome::Done { .. } => {}
            Outcome::Failed(error) => self.report(call.operation, error, false),
            Outcome::Absorbed(error) => self.report(call.operation, error, true),
        }
    }

    fn absorbs(&self, _call: &Call<'_>, error: &CacheError) -> bool {
        self.decides_to_absorb(error)
    }
}
