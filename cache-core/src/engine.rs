//! The engine trait and what an engine declares about itself.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::Result;
use crate::key::MAX_KEY_LEN;
use crate::ttl::{DEFAULT_TTL, Remaining, Ttl};

/// A cache engine: bytes in, bytes out, with TTLs, bulk and atomic operations.
///
/// Every engine, local or remote, ours or a third party's, behaves the same way; the conformance
/// kit (`cache-tests`) checks it. Typed values live one layer up, in `cache-serializer`.
///
/// # Contract
///
/// - **Misses are not errors.** `get` of an absent or expired key is `Ok(None)`.
/// - **`Ok` means done.** `Ok(())` from `set` means the value was stored at that moment. Expiry
///   and, for bounded engines, eviction may remove it later; that is a cache's nature and each
///   engine documents its policy. A value that can never fit is refused with
///   [`CacheError::ValueTooLarge`](crate::CacheError::ValueTooLarge), never dropped after an `Ok`.
/// - **Bad input changes nothing.** A key that breaks the [key rule](crate::key), a value over a
///   limit or a TTL out of range gives a typed error before anything is sent or changed. Bulk
///   operations check every key first.
/// - **TTLs** follow [`Ttl`]: `Default` is the engine's default (300 s unless configured), `Never`
///   never expires, `After(d)` lives at least `d` and at most `d` plus
///   [`Capabilities::ttl_resolution`], and `After(Duration::ZERO)` removes the entry.
/// - **Counters** are ASCII decimal with Redis's syntax and signed 64-bit arithmetic
///   (see [`crate::counter`]).
/// - **`clear` is scoped.** It removes this engine's entries (its namespace, its database), never
///   anyone else's.
/// - **`close` is shared.** It closes the engine for every handle and clone of it; later calls
///   return [`CacheError::Closed`](crate::CacheError::Closed).
///
/// The trait is object safe: `Arc<dyn CacheEngine>` and `Box<dyn CacheEngine>` are engines too.
///
/// ```
/// use std::sync::Arc;
/// use cache_core::{Bytes, CacheEngine, Ttl};
///
/// fn remember(cache: &dyn CacheEngine) -> cache_core::Result<()> {
///     cache.set("greeting", Bytes::from_static(b"hello"), Ttl::Default)?;
///     assert_eq!(cache.get("greeting")?.as_deref(), Some(&b"hello"[..]));
///     Ok(())
/// }
/// # let _ = remember;
/// ```
pub trait CacheEngine: Send + Sync + Debug {
    /// Reads the value under `key`; `Ok(None)` when it is absent or expired.
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `Closed`, and for remote engines `Connection`, `Timeout` and friends.
    fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// Stores `value` under `key` for `ttl`, replacing any previous value and its TTL.
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `InvalidTtl`, `ValueTooLarge` (nothing changed), `Closed`, and transport
    /// errors for remote engines.
    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()>;

    /// Removes `key`; `true` when an entry was removed.
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `Closed`, transport errors.
    fn delete(&self, key: &str) -> Result<bool>;

    /// Removes the entry under `key` only if its value is byte for byte `expected`; `true` when
    /// it removed it.
    ///
    /// `false` when the key is absent or expired, or holds any other value (a prefix of
    /// `expected`, a longer value, anything else): then nothing changes. The comparison and the
    /// removal are one atomic step with respect to every other operation on the engine, from
    /// every thread and, for engines shared across processes, every client: a value another
    /// writer stored after this call read the entry is never deleted. This is what releasing a
    /// lease or a lock needs: each holder stores a token of its own under the lock's key, and
    /// releases with its token, so a holder whose lease expired and was taken over cannot
    /// delete its successor's.
    ///
    /// ```
    /// use cache_core::{Bytes, CacheEngine, Ttl};
    ///
    /// fn release(cache: &dyn CacheEngine, lock: &str, token: &[u8]) -> cache_core::Result<bool> {
    ///     // Another holder's token stays where it is.
    ///     cache.delete_if_equals(lock, token)
    /// }
    /// # let _ = release;
    /// ```
    ///
    /// # Errors
    ///
    /// As [`delete`](Self::delete): `InvalidKey` (checked before anything is sent, so nothing
    /// changed), `Closed`, transport errors. After `Connection` or `Timeout` the outcome is
    /// unknown (the removal may have happened, and is never sent a second time): treat the
    /// lease as held until its TTL ends.
    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool>;

    /// Whether a live entry is stored under `key`.
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `Closed`, transport errors.
    fn exists(&self, key: &str) -> Result<bool>;

    /// Removes every entry of this engine (its namespace, its database), and nothing else.
    ///
    /// # Errors
    ///
    /// `Closed`, transport errors.
    fn clear(&self) -> Result<()>;

    /// Closes the engine for every handle and clone; later operations return `Closed`. Local
    /// engines free their entries. Closing twice is fine.
    ///
    /// # Errors
    ///
    /// Transport errors while closing a remote connection.
    fn close(&self) -> Result<()>;

    /// Reads several keys; the result has one slot per key, in the same order.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get); every key is checked before anything is read.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>>;

    /// Stores several entries with one TTL.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set); every key and value is checked before anything is written, so
    /// those errors change nothing. A server can still refuse an entry it cannot store right
    /// now (out of memory): that is [`CacheError::Refused`](crate::CacheError::Refused), and with
    /// `partly_applied` set other entries of the call may have been stored (and memcached drops
    /// a refused key's previous value). Transport errors leave the outcome unknown.
    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()>;

    /// Removes several keys; returns how many entries were removed.
    ///
    /// # Errors
    ///
    /// As [`delete`](Self::delete); every key is checked before anything is removed.
    fn delete_many(&self, keys: &[&str]) -> Result<u64>;

    /// Stores `value` only if no live entry is under `key`, atomically; `true` when it stored.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool>;

    /// Adds `delta` to the counter under `key`, atomically, and returns the new value.
    ///
    /// A missing key counts as 0 and the new counter gets the default TTL; an existing counter
    /// keeps its TTL.
    ///
    /// # Errors
    ///
    /// `NotANumber` when the value is not a counter and `Overflow` when the result would leave
    /// the signed 64-bit range; in both cases the value is left unchanged.
    fn increment(&self, key: &str, delta: i64) -> Result<i64>;

    /// Gives an existing entry a new TTL without rewriting its value; `true` when the entry
    /// existed. `Ttl::After(Duration::ZERO)` removes it.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set).
    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool>;

    /// How long the entry under `key` has left: `None` when it is absent or expired,
    /// [`Remaining::Never`] when it never expires, [`Remaining::After`] otherwise.
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `Closed`, transport errors.
    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>>;

    /// Reads the value under `key` with its remaining lifetime. Engines answer in one operation
    /// (one round trip for remote ones); the provided method reads twice, so an entry replaced
    /// in between may be reported with the new entry's lifetime.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        let Some(value) = self.get(key)? else {
            return Ok(None);
        };
        Ok(self.remaining_ttl(key)?.map(|left| (value, left)))
    }

    /// [`get_with_ttl`](Self::get_with_ttl) for several keys; one slot per key, in order.
    ///
    /// # Errors
    ///
    /// As [`get_many`](Self::get_many).
    fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        keys.iter().map(|key| self.get_with_ttl(key)).collect()
    }

    /// What this engine supports and its limits.
    fn capabilities(&self) -> Capabilities;
}

/// What an engine supports and its limits, for users and the conformance kit.
///
/// The kit decides what to check from these values, never from the backend's name. Engines
/// outside this workspace build one from [`Capabilities::default`] and set its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// A short name of the backend (`"in-memory"`, `"redis"`), for messages only.
    pub backend: &'static str,
    /// Whether every thread holding the engine sees the same entries.
    pub shared_across_threads: bool,
    /// Whether other processes (and machines) see the same entries.
    pub shared_across_processes: bool,
    /// How much longer than asked an entry may live (the TTL granularity plus clock lag).
    pub ttl_resolution: Duration,
    /// The longest `Ttl::After` the engine accepts right now.
    pub max_ttl: Duration,
    /// The largest value the engine stores, in bytes; `None` when only memory limits it.
    pub max_value_size: Option<usize>,
    /// The longest key the engine accepts, in bytes, once its namespace prefix is counted.
    pub max_key_len: usize,
    /// The TTL that [`Ttl::Default`] stands for on this engine.
    pub default_ttl: Ttl,
    /// The namespace the engine's keys live in, if any (for labels and messages).
    pub namespace: Option<String>,
}

impl Default for Capabilities {
    /// A conservative description: not shared, 1 s resolution, 30 days maximum TTL, no value
    /// limit, the full portable key length, the 300 s default TTL and no namespace.
    fn default() -> Self {
        Self {
            backend: "unknown",
            shared_across_threads: false,
            shared_across_processes: false,
            ttl_resolution: Duration::from_secs(1),
            max_ttl: Duration::from_secs(30 * 24 * 3600),
            max_value_size: None,
            max_key_len: MAX_KEY_LEN,
            default_ttl: Ttl::After(DEFAULT_TTL),
            namespace: None,
        }
    }
}

macro_rules! forward_engine {
    () => {
        fn get(&self, key: &str) -> Result<Option<Bytes>> {
            (**self).get(key)
        }
        fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
            (**self).set(key, value, ttl)
        }
        fn delete(&self, key: &str) -> Result<bool> {
            (**self).delete(key)
        }
        fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
            (**self).delete_if_equals(key, expected)
        }
        fn exists(&self, key: &str) -> Result<bool> {
            (**self).exists(key)
        }
        fn clear(&self) -> Result<()> {
            (**self).clear()
        }
        fn close(&self) -> Result<()> {
            (**self).close()
        }
        fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
            (**self).get_many(keys)
        }
        fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
            (**self).set_many(entries, ttl)
        }
        fn delete_many(&self, keys: &[&str]) -> Result<u64> {
            (**self).delete_many(keys)
        }
        fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
            (**self).add(key, value, ttl)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64> {
            (**self).increment(key, delta)
        }
        fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
            (**self).touch(key, ttl)
        }
        fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
            (**self).remaining_ttl(key)
        }
        fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
            (**self).get_with_ttl(key)
        }
        fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
            (**self).get_many_with_ttl(keys)
        }
        fn capabilities(&self) -> Capabilities {
            (**self).capabilities()
        }
    };
}

impl<T: CacheEngine + ?Sized> CacheEngine for Arc<T> {
    forward_engine!();
}

impl<T: CacheEngine + ?Sized> CacheEngine for Box<T> {
    forward_engine!();
}

impl<T: CacheEngine + ?Sized> CacheEngine for &T {
    forward_engine!();
}
