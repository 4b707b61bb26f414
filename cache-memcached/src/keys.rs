//! Keys, values and TTLs as memcached stores them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cache_core::key::KeySpace;
use cache_core::ttl::ceil_secs;
use cache_core::{Bytes, CacheError, Expiry, KeyDisplay, KeyProblem, Result, Ttl};
use sha2::{Digest, Sha256};

pub(crate) const BACKEND: &str = "memcached";
/// Above this many seconds memcached reads an expiration as a Unix time.
const RELATIVE_LIMIT: u64 = 30 * 24 * 3600;
/// memcached's clock ticks in whole seconds and TTLs are rounded up to whole seconds, then one
/// second is added: an entry lives at least its TTL and less than 2 s longer.
pub(crate) const TTL_RESOLUTION: Duration = Duration::from_secs(2);
/// Room kept in an item for memcached's header, the key, and the hashed-key envelope.
pub(crate) const ITEM_OVERHEAD: usize = 512;
/// Client flag: the value starts with the original key (the wire key is a hash).
const FLAG_HASHED: i64 = 1;
/// Width of a namespace generation: 16 hex digits.
pub(crate) const GENERATION_LEN: usize = 16;

/// A key as it goes on the wire.
#[derive(Debug, Clone)]
pub(crate) struct WireKey {
    pub(crate) key: String,
    /// The original key, when the wire key is its hash.
    pub(crate) hashed_from: Option<String>,
}

/// The engine's key rule: the portable one counting the namespace and generation, or, with
/// `hash_keys`, any non-empty key stored under its SHA-256.
#[derive(Debug)]
pub(crate) struct Keys {
    pub(crate) space: KeySpace,
    pub(crate) hash_keys: bool,
}

impl Keys {
    /// Checks `key` before any I/O; `true` when it will be stored under its hash.
    pub(crate) fn check(&self, key: &str) -> Result<bool> {
        match self.space.check(key) {
            Ok(()) => Ok(false),
            Err(_) if self.hash_keys && !key.is_empty() => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Checks every key before any I/O.
    pub(crate) fn check_all<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<()> {
        for key in keys {
            self.check(key)?;
        }
        Ok(())
    }

    /// The wire form of `key` (already checked) in `generation`.
    pub(crate) fn wire(&self, generation: Option<u64>, key: &str) -> WireKey {
        let hashed = self.space.check(key).is_err();
        let stored = if hashed {
            let digest = Sha256::digest(key.as_bytes());
            let mut text = String::with_capacity(65);
            text.push('#');
            for byte in digest {
                text.push_str(&format!("{byte:02x}"));
            }
            text
        } else {
            key.to_string()
        };
        let mut full =
            String::with_capacity(self.space.prefix_len() + GENERATION_LEN + 1 + stored.len());
        full.push_str(self.space.prefix());
        if let Some(generation) = generation {
            use std::fmt::Write as _;
            let _ = write!(full, "{generation:016x}:");
        }
        full.push_str(&stored);
        WireKey {
            key: full,
            hashed_from: hashed.then(|| key.to_string()),
        }
    }
}

/// The stored payload and client flags for `value` under `key`: the value, behind the original
/// key when the wire key is a hash.
pub(crate) fn payload(key: &WireKey, value: &[u8]) -> (Vec<u8>, i64) {
    match &key.hashed_from {
        Some(original) => {
            let mut payload = Vec::with_capacity(4 + original.len() + value.len());
            let len = u32::try_from(original.len()).unwrap_or(u32::MAX);
            payload.extend_from_slice(&len.to_be_bytes());
            payload.extend_from_slice(original.as_bytes());
            payload.extend_from_slice(value);
            (payload, FLAG_HASHED)
        }
        None => (value.to_vec(), 0),
    }
}

/// The payload size of `value` under `key` (checked before any I/O).
pub(crate) fn check_size(key: &str, hashed: bool, value: &[u8], limit: usize) -> Result<()> {
    let envelope = if hashed { 4 + key.len() } else { 0 };
    if value.len() + envelope > limit {
        return Err(CacheError::ValueTooLarge {
            backend: BACKEND,
            key: KeyDisplay::new(key),
            size: value.len(),
            limit: limit.saturating_sub(envelope),
        });
    }
    if hashed && u32::try_from(key.len()).is_err() {
        return Err(CacheError::invalid_key(
            key,
            KeyProblem::TooLong {
                len: key.len(),
                max: u32::MAX as usize,
            },
        ));
    }
    Ok(())
}

/// The user's value from a stored payload; `None` when it belongs to another key (a hash
/// collision, a value another client wrote under the hash) or is malformed.
pub(crate) fn unwrap_payload(key: &WireKey, flags: Option<i64>, data: Vec<u8>) -> Option<Bytes> {
    let hashed = flags.unwrap_or(0) & FLAG_HASHED != 0;
    match (&key.hashed_from, hashed) {
        (None, false) => Some(Bytes::from(data)),
        (Some(original), true) => {
            let (len, rest) = data.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
            if rest.len() < len || &rest[..len] != original.as_bytes() {
                return None;
            }
            Some(Bytes::copy_from_slice(&rest[len..]))
        }
        _ => None,
    }
}

/// memcached's expiration for `ttl`: `None` when nothing is kept, `Some(0)` for never.
pub(crate) fn exptime(ttl: Ttl, default: Ttl) -> Result<Option<u32>> {
    match ttl.resolve(default) {
        Expiry::Never => Ok(Some(0)),
        Expiry::Now => Ok(None),
        Expiry::After(d) => {
            let secs = ceil_secs(d).and_then(|s| s.checked_add(1));
            match secs.and_then(expiration_for_secs) {
                Some(exp) => Ok(Some(exp)),
                None => Err(CacheError::InvalidTtl {
                    backend: BACKEND,
                    ttl: d,
                    max: max_ttl(),
                }),
            }
        }
    }
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// memcached's expiration for `secs` seconds from now: relative up to 30 days, a Unix time
/// beyond; `None` when it does not fit memcached's expiration, a signed 32-bit number (a larger
/// one was read as negative: already expired).
pub(crate) fn expiration_for_secs(secs: u64) -> Option<u32> {
    let exptime = if secs <= RELATIVE_LIMIT {
        secs
    } else {
        now_unix().checked_add(secs)?
    };
    u32::try_from(exptime)
        .ok()
        .filter(|e| *e <= i32::MAX as u32)
}

/// The longest TTL memcached can represent now: until its signed 32-bit Unix time runs out in
/// January 2038.
pub(crate) fn max_ttl() -> Duration {
    Duration::from_secs(
        (i32::MAX as u64)
            .saturating_sub(now_unix())
            .saturating_sub(2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expirations_follow_memcached_rules() {
        assert_eq!(expiration_for_secs(2), Some(2));
        assert_eq!(
            expiration_for_secs(RELATIVE_LIMIT),
            Some(RELATIVE_LIMIT as u32)
        );
        let absolute = expiration_for_secs(31 * 24 * 3600).unwrap_or_default();
        assert!(u64::from(absolute) > now_unix() + 30 * 24 * 3600);
        assert_eq!(expiration_for_secs(u64::from(u32::MAX)), None);
        assert_eq!(expiration_for_secs(i32::MAX as u64), None);
    }

    #[test]
    fn ttls_round_up_and_never_become_never() {
        let default = Ttl::Default;
        let ms = |n| Ttl::After(Duration::from_millis(n));
        assert_eq!(exptime(ms(1), default).ok(), Some(Some(2)));
        assert_eq!(exptime(ms(1500), default).ok(), Some(Some(3)));
        assert_eq!(exptime(ms(2000), default).ok(), Some(Some(3)));
        assert_eq!(exptime(Ttl::Never, default).ok(), Some(Some(0)));
        assert_eq!(exptime(ms(0), default).ok(), Some(None));
        assert_eq!(exptime(Ttl::Default, default).ok(), Some(Some(301)));
        assert!(matches!(
            exptime(Ttl::After(Duration::MAX), default),
            Err(CacheError::InvalidTtl { .. })
        ));
    }

    #[test]
    fn hashed_payloads_name_their_key() {
        let keys = Keys {
            space: KeySpace::new(None).unwrap_or_else(|e| panic!("{e}")),
            hash_keys: true,
        };
        let wire = keys.wire(None, "with space");
        assert!(wire.key.starts_with('#') && wire.key.len() == 65);
        let (stored, flags) = payload(&wire, b"v");
        assert_eq!(
            unwrap_payload(&wire, Some(flags), stored.clone()).as_deref(),
            Some(&b"v"[..])
        );
        let other = keys.wire(None, "other key");
        assert_eq!(unwrap_payload(&other, Some(flags), stored), None);
        assert_eq!(unwrap_payload(&wire, Some(0), b"v".to_vec()), None);
    }
}
