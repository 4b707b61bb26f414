//! Counters: the number syntax and arithmetic of [`CacheEngine::increment`](crate::CacheEngine::increment).
//!
//! Counters are stored as ASCII decimal, so a value written by `increment` reads the same on every
//! engine (and with `redis-cli` or `telnet`). The syntax is Redis's: an optional `-`, then digits
//! without leading zeros (`0` alone is fine, `-0`, `+1`, `01`, ` 1` and `1.0` are not), and the
//! value must fit a signed 64-bit integer. Engines that cannot increment natively use these
//! helpers to emulate it exactly.

use bytes::Bytes;

use crate::error::{CacheError, Result};

/// Parses a stored counter. Returns `None` when `bytes` is not a signed 64-bit decimal integer in
/// Redis's syntax.
///
/// ```
/// use cache_core::counter::parse_counter;
///
/// assert_eq!(parse_counter(b"42"), Some(42));
/// assert_eq!(parse_counter(b"-9223372036854775808"), Some(i64::MIN));
/// assert_eq!(parse_counter(b"007"), None);
/// assert_eq!(parse_counter(b"-0"), None);
/// assert_eq!(parse_counter(b"+1"), None);
/// assert_eq!(parse_counter(b"9223372036854775808"), None);
/// ```
pub fn parse_counter(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes {
        [] => return None,
        [b'0'] => return Some(0),
        [b'-', rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    if digits.len() > 19 {
        return None;
    }
    // Accumulate as a negative number so that i64::MIN parses.
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(b - b'0'))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Formats a counter the way it is stored.
///
/// ```
/// use cache_core::counter::format_counter;
///
/// assert_eq!(&format_counter(-12)[..], b"-12");
/// ```
pub fn format_counter(value: i64) -> Bytes {
    Bytes::from(value.to_string())
}

/// Applies `delta` to the counter stored in `current` (`None` counts as 0), with the errors the
/// trait promises.
///
/// # Errors
///
/// [`CacheError::NotANumber`] when `current` is not a counter, [`CacheError::Overflow`] when the
/// result leaves the signed 64-bit range. In both cases the caller must leave the value alone.
pub fn apply_increment(key: &str, current: Option<&[u8]>, delta: i64) -> Result<i64> {
    let value = match current {
        None => 0,
        Some(bytes) => parse_counter(bytes).ok_or_else(|| CacheError::NotANumber {
            key: crate::error::KeyDisplay::new(key),
        })?,
    };
    value
        .checked_add(delta)
        .ok_or_else(|| CacheError::Overflow {
            key: crate::error::KeyDisplay::new(key),
            delta,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_extremes() {
        for v in [0, 1, -1, 10, i64::MAX, i64::MIN, 1234567890123] {
            assert_eq!(parse_counter(&format_counter(v)), Some(v));
        }
    }

    #[test]
    fn rejects_non_redis_syntax() {
        for bad in [
            &b""[..],
            b"-",
            b" 1",
            b"1 ",
            b"1.0",
            b"0x10",
            b"00",
            b"-01",
            b"abc",
            b"\xff",
        ] {
            assert_eq!(parse_counter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn increment_errors() {
        assert!(matches!(
            apply_increment("k", Some(b"x"), 1),
            Err(CacheError::NotANumber { .. })
        ));
        assert!(matches!(
            apply_increment("k", Some(b"9223372036854775807"), 1),
            Err(CacheError::Overflow { .. })
        ));
        assert_eq!(apply_increment("k", None, -5).unwrap(), -5);
    }
}
