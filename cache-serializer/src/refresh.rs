//! Refresh-ahead: serving a value past its freshness while one caller per key refreshes it, and
//! probabilistic early refresh (XFetch).

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cache_core::{CacheError, Remaining, Result, Ttl};

/// How a refreshing entry ([`Entry::refresh`](crate::Entry::refresh), on both faces) keeps a key fresh: how long a value is fresh, how long past that it may still be
/// served while it is refreshed in the background, and whether hot keys refresh early.
///
/// A value is stored for `fresh_for + stale_for`. While more than `stale_for` of that is left,
/// it is **fresh** and returned as is. In the last `stale_for` it is **stale**: it is still
/// returned at once, and one caller per key and process starts a refresh in the background.
/// After that it has expired in the engine, and the next caller loads it (single-flight), as
/// an [`Entry`](crate::Entry) does. Freshness is read from the engine's remaining TTL of the
/// entry ([`CacheEngine::get_with_ttl`](cache_core::CacheEngine::get_with_ttl)), so every process
/// sharing the engine agrees on it without comparing clocks.
///
/// With [`early`](Self::early), a fresh value may also be refreshed before its freshness ends,
/// with a probability that rises as the end nears and with how long the loader took last time
/// (the XFetch rule of Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic Cache
/// Stampede Prevention", VLDB 2015): a hot key is refreshed once, a little before it goes
/// stale, by whichever caller draws it, with no coordination between callers or processes.
///
/// ```
/// use std::time::Duration;
/// use cache_serializer::Refresh;
///
/// // Fresh for 5 minutes; served stale for up to 1 more minute while it is refreshed; hot
/// // keys refresh a little early.
/// let refresh = Refresh::after(Duration::from_secs(300))
///     .serve_stale_for(Duration::from_secs(60))
///     .early(1.0);
/// assert_eq!(refresh.stale_for(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refresh {
    fresh_for: Duration,
    stale_for: Duration,
    beta: Option<f64>,
}

/// The XFetch parameter the paper recommends, and a good start: `1.0`. Larger values refresh
/// earlier (and more often); smaller, later.
pub const DEFAULT_BETA: f64 = 1.0;

impl Refresh {
    /// Values are fresh for `fresh_for`, then expire (no stale window, no early refresh until
    /// [`serve_stale_for`](Self::serve_stale_for) or [`early`](Self::early) say otherwise).
    pub fn after(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            stale_for: Duration::ZERO,
            beta: None,
        }
    }

    /// After its freshness, a value may still be served for up to `limit` while it is refreshed
    /// in the background; past that hard limit it is a miss.
    pub fn serve_stale_for(mut self, limit: Duration) -> Self {
        self.stale_for = limit;
        self
    }

    /// Probabilistic early refresh with parameter `beta` (see [`DEFAULT_BETA`]): a fresh value
    /// is refreshed in the background when `load_time * beta * -ln(u) >= time_to_stale`, for a
    /// uniform `u` in (0, 1] drawn at every read, where `load_time` is how long the loader took
    /// when it produced the value (recorded in the value's envelope). Values written by `set`
    /// record no load time and are never refreshed early.
    ///
    /// `beta` must be finite and positive; anything else is refused with
    /// [`CacheError::InvalidConfig`] when the policy is used.
    pub fn early(mut self, beta: f64) -> Self {
        self.beta = Some(beta);
        self
    }

    /// How long a value is fresh.
    pub fn fresh_for(&self) -> Duration {
        self.fresh_for
    }

    /// How long past its freshness a value may be served while it is refreshed.
    pub fn stale_for(&self) -> Duration {
        self.stale_for
    }

    /// The XFetch parameter, when early refresh is on.
    pub fn beta(&self) -> Option<f64> {
        self.beta
    }

    /// The TTL values are stored with: freshness and stale window together.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`] for a zero freshness, a sum that overflows or a `beta`
    /// that is not finite and positive.
    pub(crate) fn stored_ttl(&self) -> Result<Ttl> {
        if self.fresh_for.is_zero() {
            return Err(CacheError::InvalidConfig {
                message: "Refresh::after needs a freshness longer than zero".into(),
            });
        }
        if let Some(beta) = self.beta {
            if !(beta.is_finite() && beta > 0.0) {
                return Err(CacheError::InvalidConfig {
                    message: format!("Refresh::early needs a finite beta above zero, not {beta}"),
                });
            }
        }
        self.fresh_for
            .checked_add(self.stale_for)
            .map(Ttl::After)
            .ok_or_else(|| CacheError::InvalidConfig {
                message: format!(
                    "Refresh: freshness {:?} plus stale window {:?} overflows",
                    self.fresh_for, self.stale_for
                ),
            })
    }

    /// What a value with `remaining` lifetime in the engine, loaded in `load_time`, calls for,
    /// given a uniform draw `u` in (0, 1].
    pub(crate) fn judge(
        &self,
        remaining: Remaining,
        load_time: Option<Duration>,
        u: f64,
    ) -> Judgement {
        let Remaining::After(left) = remaining else {
            return Judgement::Fresh; // stored without expiry (by `set`): never stale
        };
        if left <= self.stale_for {
            return Judgement::Stale;
        }
        let (Some(beta), Some(load_time)) = (self.beta, load_time) else {
            return Judgement::Fresh;
        };
        let to_stale = (left - self.stale_for).as_secs_f64();
        if load_time.as_secs_f64() * beta * -u.ln() >= to_stale {
            Judgement::Early
        } else {
            Judgement::Fresh
        }
    }
}

/// What [`Refresh::judge`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// Serve it.
    Fresh,
    /// Serve it, and refresh it in the background: XFetch drew it.
    Early,
    /// Serve it, and refresh it in the background: it is past its freshness.
    Stale,
}

/// A uniform draw in (0, 1], from a per-thread SplitMix64 seeded by the standard library's
/// random hasher keys: good enough to spread refreshes, and no dependency.
pub(crate) fn draw() -> f64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(
            std::collections::hash_map::RandomState::new().build_hasher().finish() | 1,
        );
    }
    let bits = STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    });
    // 53 random bits in [0, 1), turned into (0, 1].
    1.0 - (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The keys being refreshed in the background by this process's typed cache (one refresh per
/// key at a time), at most `limit` at once.
pub(crate) struct Refreshing {
    keys: Mutex<HashSet<String>>,
    pub(crate) limit: usize,
}

/// The default of [`TypedCacheBuilder::max_background_refreshes`](crate::TypedCacheBuilder::max_background_refreshes).
pub const DEFAULT_MAX_BACKGROUND_REFRESHES: usize = 64;

impl Refreshing {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            keys: Mutex::new(HashSet::new()),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        // A set of keys is consistent between statements: a poisoned lock is safe to use.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Claims the refresh of `key`: `false` when it is being refreshed already or `limit`
    /// refreshes are running.
    pub(crate) fn claim(&self, key: &str) -> bool {
        let mut keys = self.lock();
        if keys.len() >= self.limit || keys.contains(key) {
            return false;
        }
        keys.insert(key.to_owned())
    }

    pub(crate) fn release(&self, key: &str) {
        self.lock().remove(key);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn fresh_stale_and_never() {
        let r = Refresh::after(S(60)).serve_stale_for(S(10));
        assert_eq!(
            r.judge(Remaining::After(S(50)), None, 0.5),
            Judgement::Fresh
        );
        assert_eq!(
            r.judge(Remaining::After(S(10)), None, 0.5),
            Judgement::Stale
        );
        assert_eq!(r.judge(Remaining::After(S(1)), None, 0.5), Judgement::Stale);
        assert_eq!(
            r.judge(Remaining::Never, Some(S(100)), 0.01),
            Judgement::Fresh
        );
    }

    #[test]
    fn xfetch_refreshes_early_as_the_end_nears_and_for_slow_loaders() {
        let r = Refresh::after(S(60)).serve_stale_for(S(10)).early(1.0);
        let load = Some(Duration::from_millis(100));
        // 1 s before going stale, a 100 ms loader: -ln(u) >= 10, so u <= e^-10.
        assert_eq!(
            r.judge(Remaining::After(S(11)), load, 0.5),
            Judgement::Fresh
        );
        assert_eq!(
            r.judge(Remaining::After(S(11)), load, 1e-5),
            Judgement::Early
        );
        // 50 ms before: -ln(u) >= 0.5, so u <= 0.61.
        let close = Remaining::After(S(10) + Duration::from_millis(50));
        assert_eq!(r.judge(close, load, 0.5), Judgement::Early);
        assert_eq!(r.judge(close, load, 0.9), Judgement::Fresh);
        // No recorded load time: never early.
        assert_eq!(r.judge(close, None, 1e-9), Judgement::Fresh);
        // Without `early`, never early either.
        let plain = Refresh::after(S(60)).serve_stale_for(S(10));
        assert_eq!(plain.judge(close, load, 1e-9), Judgement::Fresh);
    }

    #[test]
    fn draws_are_in_the_unit_interval_and_spread() {
        let draws: Vec<f64> = (0..10_000).map(|_| draw()).collect();
        assert!(draws.iter().all(|u| *u > 0.0 && *u <= 1.0));
        let low = draws.iter().filter(|u| **u < 0.5).count();
        assert!((4_500..5_500).contains(&low), "{low} of 10000 below 0.5");
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Refresh::after(Duration::ZERO).stored_ttl().is_err());
        assert!(Refresh::after(S(1)).early(f64::NAN).stored_ttl().is_err());
        assert!(Refresh::after(S(1)).early(-1.0).stored_ttl().is_err());
        assert!(
            Refresh::after(Duration::MAX)
                .serve_stale_for(S(1))
                .stored_ttl()
                .is_err()
        );
        assert_eq!(
            Refresh::after(S(60))
                .serve_stale_for(S(10))
                .stored_ttl()
                .ok(),
            Some(Ttl::After(S(70)))
        );
    }

    #[test]
    fn one_refresh_per_key_and_a_limit() {
        let r = Refreshing::new(2);
        assert!(r.claim("a"));
        assert!(!r.claim("a"));
        assert!(r.claim("b"));
        assert!(!r.claim("c"), "over the limit");
        r.release("a");
        assert!(r.claim("c"));
        assert_eq!(r.len(), 2);
    }
}
