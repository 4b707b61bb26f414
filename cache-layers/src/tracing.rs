//! [`Tracing`]: one event per operation through `tracing`.

use std::time::Instant;

use tracing::Level;

use crate::call::{Call, Outcome, error_kind};
use crate::layered::Interceptor;

/// How [`Tracing`] reports the key of an operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyReport {
    /// Not at all (the default): keys may hold user ids, emails, tokens.
    #[default]
    Omitted,
    /// As a 64-bit FNV-1a hash in hex, to correlate events about one key. Not a secret: a key
    /// from a small set can be found from its hash.
    Hashed,
}

/// Emits one `tracing` event per operation, at the end, on the target `cache`: the backend,
/// namespace, operation, outcome (`ok`, `error`, `absorbed`), the number of keys, hits and
/// misses, the duration in microseconds, and for errors the error (without its keys, see
/// [`CacheError::redacted`](cache_core::CacheError::redacted)) and its kind. Keys are left out
/// or hashed ([`KeyReport`]); values never appear.
///
/// Events are at `DEBUG` by default ([`level`](Self::level) changes it). When no subscriber
/// wants them, the layer does nothing, not even read the clock.
///
/// ```
/// use cache_layers::{KeyReport, LayerExt, Tracing};
/// use cache_local::InMemoryEngine;
///
/// let engine = InMemoryEngine::new().layer(Tracing::new().keys(KeyReport::Hashed));
/// # let _ = engine;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Tracing {
    level: Level,
    keys: KeyReport,
}

impl Default for Tracing {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracing {
    /// Events at `DEBUG`, keys left out.
    pub fn new() -> Self {
        Self {
            level: Level::DEBUG,
            keys: KeyReport::Omitted,
        }
    }

    /// The level of the events.
    #[must_use]
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// How keys are reported.
    #[must_use]
    pub fn keys(mut self, keys: KeyReport) -> Self {
        self.keys = keys;
        self
    }

    #[inline]
    fn enabled(&self) -> bool {
        match self.level {
            Level::ERROR => tracing::enabled!(target: "cache", Level::ERROR),
            Level::WARN => tracing::enabled!(target: "cache", Level::WARN),
            Level::INFO => tracing::enabled!(target: "cache", Level::INFO),
            Level::DEBUG => tracing::enabled!(target: "cache", Level::DEBUG),
            _ => tracing::enabled!(target: "cache", Level::TRACE),
        }
    }
}

fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Emits one event at a level known only at run time (`tracing`'s macros want a constant).
macro_rules! event_at {
    ($level:expr, $($fields:tt)*) => {
        match $level {
            Level::ERROR => tracing::event!(target: "cache", Level::ERROR, $($fields)*),
            Level::WARN => tracing::event!(target: "cache", Level::WARN, $($fields)*),
            Level::INFO => tracing::event!(target: "cache", Level::INFO, $($fields)*),
            Level::DEBUG => tracing::event!(target: "cache", Level::DEBUG, $($fields)*),
            _ => tracing::event!(target: "cache", Level::TRACE, $($fields)*),
        }
    };
}

impl Interceptor for Tracing {
    type Ticket = Option<Instant>;

    /// Idle when no subscriber wants events at this level at all: one load of the global
    /// level filter, the cheapest check `tracing` offers.
    #[inline]
    fn is_idle(&self) -> bool {
        match self.level {
            Level::ERROR => !tracing::level_enabled!(Level::ERROR),
            Level::WARN => !tracing::level_enabled!(Level::WARN),
            Level::INFO => !tracing::level_enabled!(Level::INFO),
            Level::DEBUG => !tracing::level_enabled!(Level::DEBUG),
            _ => !tracing::level_enabled!(Level::TRACE),
        }
    }

    #[inline]
    fn before(&self, _call: &Call<'_>) -> Option<Instant> {
        self.enabled().then(Instant::now)
    }

    fn after(&self, call: &Call<'_>, ticket: Option<Instant>, outcome: &Outcome<'_>) {
        let Some(started) = ticket else { return };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let labels = call.labels();
        let key = match (self.keys, call.key) {
            (KeyReport::Hashed, Some(key)) => format!("{:016x}", fnv1a(key)),
            _ => String::new(),
        };
        let (hits, misses) = match outcome {
            Outcome::Done { hits, misses } => (*hits, *misses),
            _ => (0, 0),
        };
        match outcome {
            Outcome::Done { .. } => event_at!(
                self.level,
                backend = labels.backend,
                namespace = &*labels.namespace,
                operation = call.operation.name(),
                outcome = outcome.name(),
                keys = call.keys,
                hits,
                misses,
                key_hash = key.as_str(),
                duration_us = micros,
                "cache operation"
            ),
            Outcome::Failed(error) | Outcome::Absorbed(error) => event_at!(
                self.level,
                backend = labels.backend,
                namespace = &*labels.namespace,
                operation = call.operation.name(),
                outcome = outcome.name(),
                keys = call.keys,
                key_hash = key.as_str(),
                duration_us = micros,
                error = %error.redacted(),
                error_kind = error_kind(error),
                "cache operation failed"
            ),
        }
    }
}
