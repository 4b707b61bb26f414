//! Leases: one loader per key across every process that shares an engine.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use cache_core::{Bytes, CacheError, Result};
use sha2::{Digest, Sha256};

/// An optional lease for the loads of a typed cache (see
/// [`TypedCacheBuilder::lease`](crate::TypedCacheBuilder::lease)): so that, on an engine shared
/// by many processes, one loader runs per missing key across all of them, not one per process.
///
/// The process that loads first stores a random token under `#lease:<key>` with `add`, for
/// [`hold`](Self::new) at most. The others see the lease taken and poll the key every
/// [`poll`](Self::poll) for the value; when it appears they return it without loading. The
/// leader releases its lease as soon as the value is stored (or its loader failed), with
/// [`delete_if_equals`](cache_core::CacheEngine::delete_if_equals) on its own token, so a
/// leader that outlived its lease never deletes the next leader's. A leader that crashed or
/// hangs holds the lease until it expires; then a waiter takes it over. A waiter that has
/// waited [`wait`](Self::wait) in all loads by itself, so a lease never blocks a caller for
/// longer than that bound.
///
/// Within one process, single-flight already runs one loader per key; the lease is taken by
/// that loader only, so a process sends one `add` per missing key, not one per caller.
///
/// ```
/// use std::time::Duration;
/// use cache_serializer::Lease;
///
/// // Leaders hold leases for up to 10 s; others wait up to 3 s, looking every 20 ms.
/// let lease = Lease::new(Duration::from_secs(10))
///     .wait(Duration::from_secs(3))
///     .poll(Duration::from_millis(20));
/// assert_eq!(lease.hold(), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    hold: Duration,
    wait: Duration,
    poll: Duration,
}

/// The prefix of the keys that hold leases: the lease of key `k` is under `#lease:k` (keys too
/// long for the prefix are hashed: `#lease:#<sha-256>`).
pub const LEASE_KEY_PREFIX: &str = "#lease:";

impl Lease {
    /// Leases held for at most `hold` (set it above your slowest load): waiters wait as long,
    /// looking every 20 ms.
    pub fn new(hold: Duration) -> Self {
        Self {
            hold,
            wait: hold,
            poll: Duration::from_millis(20),
        }
    }

    /// How long a caller waits for another process's load before loading itself.
    pub fn wait(mut self, bound: Duration) -> Self {
        self.wait = bound;
        self
    }

    /// How often a waiting caller looks for the value.
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// The longest a lease is held.
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// How long a caller waits for another process's load.
    pub fn waits(&self) -> Duration {
        self.wait
    }

    /// How often a waiting caller looks for the value.
    pub fn polls(&self) -> Duration {
        self.poll
    }

    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`] for a zero `hold` or `poll`.
    pub(crate) fn check(&self) -> Result<()> {
        if self.hold.is_zero() || self.poll.is_zero() {
            return Err(CacheError::InvalidConfig {
                message: format!(
                    "a lease needs a hold and a poll interval above zero (hold {:?}, poll {:?})",
                    self.hold, self.poll
                ),
            });
        }
        Ok(())
    }
}

/// The key of `key`'s lease, within `max_key_len` bytes.
pub(crate) fn lease_key(key: &str, max_key_len: usize) -> String {
    if LEASE_KEY_PREFIX.len() + key.len() <= max_key_len {
        return format!("{LEASE_KEY_PREFIX}{key}");
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(LEASE_KEY_PREFIX.len() + 1 + 64);
    out.push_str(LEASE_KEY_PREFIX);
    out.push('#');
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A random token, 16 bytes: this leader's and no other's.
pub(crate) fn token() -> Bytes {
    let mut out = Vec::with_capacity(16);
    for round in 0..2u8 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u8(round);
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        out.extend_from_slice(&hasher.finish().to_be_bytes());
    }
    Bytes::from(out)
}

/// What taking a lease came to.
pub(crate) enum Taken {
    /// This caller holds the lease under this key with this token: load, store, release.
    Held { key: String, token: Bytes },
    /// Another process stored the value (the bytes under the key, tags checked) while this one
    /// waited.
    Found(Bytes),
    /// No lease: the wait bound passed, or the engine failed. Load without one.
    Free,
}

/// What a caller trying to take a lease does after an `add`: the part of waiting both faces
/// share (they differ in how they sleep and call the engine).
pub(crate) struct Waiting {
    deadline: std::time::Instant,
    poll: Duration,
    waited: bool,
}

/// The next step of [`Waiting::after_add`].
pub(crate) enum AfterAdd {
    /// The lease is ours.
    Held,
    /// Load without a lease: the wait bound passed, or the engine failed.
    Free,
    /// Another process holds it: sleep this long, then look for the value and try again.
    Sleep(Duration),
}

impl Waiting {
    pub(crate) fn new(lease: &Lease) -> Self {
        Self {
            deadline: std::time::Instant::now() + lease.wait,
            poll: lease.poll,
            waited: false,
        }
    }

    /// The step after an `add` of the lease answered `added`, counted in `stats`. A backend
    /// failure goes to `report` (the fail-open layer's hook) and the load goes on without a
    /// lease; other errors (a key the engine refuses) are returned.
    pub(crate) fn after_add(
        &mut self,
        added: Result<bool>,
        stats: &crate::core::Counters,
        report: impl FnOnce(CacheError),
    ) -> Result<AfterAdd> {
        match added {
            Ok(true) => return Ok(AfterAdd::Held),
            Ok(false) => {}
            Err(e) if e.is_backend_failure() => {
                report(e);
                crate::core::bump(&stats.lease_timeouts);
                return Ok(AfterAdd::Free);
            }
            Err(e) => return Err(e),
        }
        if !std::mem::replace(&mut self.waited, true) {
            crate::core::bump(&stats.lease_waits);
        }
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            crate::core::bump(&stats.lease_timeouts);
            return Ok(AfterAdd::Free);
        }
        Ok(AfterAdd::Sleep(self.poll.min(left)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fit() {
        assert_eq!(lease_key("user:1", 250), "#lease:user:1");
        let long = "k".repeat(245);
        let hashed = lease_key(&long, 250);
        assert!(
            hashed.starts_with("#lease:#") && hashed.len() == 7 + 1 + 64,
            "{hashed}"
        );
        assert_ne!(lease_key(&"j".repeat(245), 250), hashed);
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(token(), token());
        assert_eq!(token().len(), 16);
    }

    #[test]
    fn bad_leases_are_refused() {
        assert!(Lease::new(Duration::ZERO).check().is_err());
        assert!(
            Lease::new(Duration::from_secs(1))
                .poll(Duration::ZERO)
                .check()
                .is_err()
        );
        assert!(Lease::new(Duration::from_secs(1)).check().is_ok());
    }
}
