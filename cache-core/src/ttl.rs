//! Time to live: how long an entry is kept.

use std::time::Duration;

/// The default TTL of every engine unless configured: 300 seconds.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// How long an entry lives, the same on every engine.
///
/// - [`Ttl::Default`]: the engine's configured default ([`DEFAULT_TTL`], 300 s, unless set
///   otherwise on its builder).
/// - [`Ttl::Never`]: the entry never expires (it can still be evicted by a bounded cache). Setting
///   it on an existing entry removes any earlier expiry.
/// - [`Ttl::After`]`(d)`: the entry expires after `d`. It is never gone sooner than `d` after the
///   call, and never alive later than `d` plus the engine's declared
///   [`ttl_resolution`](crate::Capabilities::ttl_resolution). Rounding is always upwards, so a
///   tiny TTL never becomes "now" and a huge one never becomes "never".
/// - `Ttl::After(Duration::ZERO)`: the value is not kept; an existing entry under the key is
///   removed and the operation reports success.
///
/// A TTL longer than the engine can represent (see
/// [`max_ttl`](crate::Capabilities::max_ttl); `Duration::MAX`, say) is refused with
/// [`CacheError::InvalidTtl`](crate::CacheError::InvalidTtl) and changes nothing.
///
/// ```
/// use std::time::Duration;
/// use cache_core::Ttl;
///
/// let ttl: Ttl = Duration::from_secs(30).into();
/// assert_eq!(ttl, Ttl::After(Duration::from_secs(30)));
/// assert_eq!(Ttl::default(), Ttl::Default);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Ttl {
    /// The engine's configured default TTL.
    #[default]
    Default,
    /// Never expires.
    Never,
    /// Expires after this duration; `Duration::ZERO` means the value is not kept.
    After(Duration),
}

impl From<Duration> for Ttl {
    fn from(duration: Duration) -> Self {
        Ttl::After(duration)
    }
}

/// A TTL with [`Ttl::Default`] resolved against an engine's default: what an engine acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Expiry {
    /// Keep the entry with no expiry.
    Never,
    /// Do not keep the value; remove any existing entry.
    Now,
    /// Keep the entry for this long (never zero).
    After(Duration),
}

/// How long an entry has left: what [`CacheEngine::remaining_ttl`](crate::CacheEngine::remaining_ttl)
/// reports for a live entry.
///
/// `After(d)` is at most the entry's real remaining lifetime plus the engine's
/// [`ttl_resolution`](crate::Capabilities::ttl_resolution) (memcached counts in whole seconds),
/// and never zero for a live entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Remaining {
    /// The entry never expires.
    Never,
    /// The entry expires in about this long.
    After(Duration),
}

impl Remaining {
    /// The TTL that gives an entry the same lifetime, capped at `cap`: for copying an entry
    /// into another cache for no longer than it lives here.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_core::{Remaining, Ttl};
    ///
    /// let minute = Duration::from_secs(60);
    /// assert_eq!(Remaining::Never.capped(minute), Ttl::After(minute));
    /// assert_eq!(
    ///     Remaining::After(Duration::from_secs(5)).capped(minute),
    ///     Ttl::After(Duration::from_secs(5))
    /// );
    /// ```
    pub fn capped(self, cap: Duration) -> Ttl {
        match self {
            Self::Never => Ttl::After(cap),
            Self::After(left) => Ttl::After(left.min(cap)),
        }
    }
}

impl Ttl {
    /// Resolves [`Ttl::Default`] against `default` and classifies the result.
    ///
    /// `default` is itself resolved: if it is `Ttl::Default` too, [`DEFAULT_TTL`] is used.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_core::{Expiry, Ttl};
    ///
    /// let default = Ttl::After(Duration::from_secs(60));
    /// assert_eq!(Ttl::Default.resolve(default), Expiry::After(Duration::from_secs(60)));
    /// assert_eq!(Ttl::After(Duration::ZERO).resolve(default), Expiry::Now);
    /// assert_eq!(Ttl::Never.resolve(default), Expiry::Never);
    /// ```
    pub fn resolve(self, default: Ttl) -> Expiry {
        let ttl = match self {
            Ttl::Default => match default {
                Ttl::Default => Ttl::After(DEFAULT_TTL),
                other => other,
            },
            other => other,
        };
        match ttl {
            Ttl::Never => Expiry::Never,
            Ttl::After(d) if d.is_zero() => Expiry::Now,
            Ttl::After(d) => Expiry::After(d),
            Ttl::Default => Expiry::After(DEFAULT_TTL),
        }
    }
}

/// Rounds `d` up to a whole number of milliseconds, never to zero for a non-zero `d`.
///
/// Returns `None` when the result does not fit in a `u64`.
///
/// ```
/// use std::time::Duration;
/// use cache_core::ttl::ceil_millis;
///
/// assert_eq!(ceil_millis(Duration::from_nanos(1)), Some(1));
/// assert_eq!(ceil_millis(Duration::from_micros(1500)), Some(2));
/// assert_eq!(ceil_millis(Duration::from_millis(7)), Some(7));
/// assert_eq!(ceil_millis(Duration::MAX), None);
/// ```
pub fn ceil_millis(d: Duration) -> Option<u64> {
    // u64 arithmetic: a u128 division showed up on every write of the local engines.
    d.as_secs()
        .checked_mul(1_000)?
        .checked_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)))
}

/// Rounds `d` up to a whole number of seconds, never to zero for a non-zero `d`.
///
/// Returns `None` when the result does not fit in a `u64`.
///
/// ```
/// use std::time::Duration;
/// use cache_core::ttl::ceil_secs;
///
/// assert_eq!(ceil_secs(Duration::from_millis(1)), Some(1));
/// assert_eq!(ceil_secs(Duration::from_millis(1500)), Some(2));
/// assert_eq!(ceil_secs(Duration::from_secs(3)), Some(3));
/// ```
pub fn ceil_secs(d: Duration) -> Option<u64> {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs.checked_add(1)
    } else {
        Some(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_of_default_is_the_library_default() {
        assert_eq!(
            Ttl::Default.resolve(Ttl::Default),
            Expiry::After(DEFAULT_TTL)
        );
        assert_eq!(Ttl::Default.resolve(Ttl::Never), Expiry::Never);
    }

    #[test]
    fn zero_default_means_now() {
        assert_eq!(
            Ttl::Default.resolve(Ttl::After(Duration::ZERO)),
            Expiry::Now
        );
    }

    #[test]
    fn rounding_never_reaches_zero() {
        assert_eq!(ceil_millis(Duration::from_nanos(1)), Some(1));
        assert_eq!(ceil_secs(Duration::from_nanos(1)), Some(1));
        assert_eq!(ceil_millis(Duration::ZERO), Some(0));
        assert_eq!(ceil_millis(Duration::new(2, 1)), Some(2_001));
        assert_eq!(
            ceil_millis(Duration::new(u64::MAX / 1_000, 999_999_999)),
            None
        );
        assert_eq!(ceil_secs(Duration::MAX), None);
    }
}
