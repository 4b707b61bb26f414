//! The engine trait and what an engine declares about itself.

use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;

use crate::capabilities::{Capabilities, Operation};
use crate::error::{CacheError, Result};
use crate::key::{MAX_KEY_LEN, check_key};
use crate::ttl::{Remaining, Ttl};

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
/// # Required and optional methods
///
/// Six methods are required, the ones every store can offer: [`get`](Self::get),
/// [`set`](Self::set), [`delete`](Self::delete), [`clear`](Self::clear), [`close`](Self::close)
/// and [`capabilities`](Self::capabilities). Every other method is provided, so a backend written
/// against this version keeps compiling when later versions add operations:
///
/// - [`exists`](Self::exists) and the bulk operations are composed from the required ones (one
///   call per key; engines that can do better override them). The provided bulk writes check
///   every key and value first, so bad input changes nothing.
/// - The operations no composition can make atomic ([`add`](Self::add),
///   [`increment`](Self::increment), [`touch`](Self::touch),
///   [`delete_if_equals`](Self::delete_if_equals), [`remaining_ttl`](Self::remaining_ttl) and
///   [`get_with_ttl`](Self::get_with_ttl)) are *optional*: their provided versions always return
///   [`CacheError::Unsupported`] and change nothing.
///
/// The rule: an engine that overrides an optional method lists its [`Operation`] in
/// [`Capabilities::operations`], and one that does not leaves it out (new operations are left
/// out by default). The conformance kit fails an engine whose declaration and behaviour
/// disagree, and skips, by name, the behaviours of operations an engine does not declare. The
/// layers built on engines check what they need when they are built (leases and tags need
/// `add` and `delete_if_equals`; refresh-ahead, `TieredEngine` and HTTP `Age` need the
/// remaining TTL) and refuse with [`CacheError::InvalidConfig`] rather than fail later.
///
/// A backend with only the required methods:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use cache_core::{Bytes, CacheEngine, CacheError, Capabilities, Operation, Result, Ttl};
///
/// #[derive(Debug, Default)]
/// struct Plain(Mutex<HashMap<String, Bytes>>);
///
/// impl CacheEngine for Plain {
///     fn get(&self, key: &str) -> Result<Option<Bytes>> {
///         cache_core::key::check_key(key, 0)?;
///         Ok(self.0.lock().unwrap().get(key).cloned())
///     }
///     fn set(&self, key: &str, value: Bytes, _ttl: Ttl) -> Result<()> {
///         cache_core::key::check_key(key, 0)?;
///         self.0.lock().unwrap().insert(key.to_owned(), value);
///         Ok(())
///     }
///     fn delete(&self, key: &str) -> Result<bool> {
///         cache_core::key::check_key(key, 0)?;
///         Ok(self.0.lock().unwrap().remove(key).is_some())
///     }
///     fn clear(&self) -> Result<()> {
///         self.0.lock().unwrap().clear();
///         Ok(())
///     }
///     fn close(&self) -> Result<()> {
///         Ok(())
///     }
///     fn capabilities(&self) -> Capabilities {
///         let mut caps = Capabilities::default();
///         caps.backend = "plain";
///         caps
///     }
/// }
///
/// let plain = Plain::default();
/// plain.set("a", Bytes::from_static(b"1"), Ttl::Default)?;
/// assert_eq!(plain.get_many(&["a", "b"])?, vec![Some(Bytes::from_static(b"1")), None]);
/// assert!(matches!(
///     plain.add("a", Bytes::new(), Ttl::Default),
///     Err(CacheError::Unsupported { operation: Operation::Add, .. })
/// ));
/// # Ok::<(), CacheError>(())
/// ```
///
/// (A real backend honours the TTL; the conformance kit checks that it does.)
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

    /// What this engine supports and its limits, including the optional operations it offers.
    fn capabilities(&self) -> Capabilities;

    /// Whether a live entry is stored under `key`. Provided as a `get`; engines that can answer
    /// without reading the value override it.
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `Closed`, transport errors.
    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Reads several keys; the result has one slot per key, in the same order. Provided as one
    /// `get` per key after every key was checked.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get); every key is checked before anything is read.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        check_keys(&self.capabilities(), keys.iter().copied())?;
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Stores several entries with one TTL. Provided as one `set` per entry after every key and
    /// value was checked against [`capabilities`](Self::capabilities).
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set); every key and value is checked before anything is written, so
    /// those errors change nothing. A server can still refuse an entry it cannot store right
    /// now (out of memory): that is [`CacheError::Refused`](crate::CacheError::Refused), and with
    /// `partly_applied` set other entries of the call may have been stored (and memcached drops
    /// a refused key's previous value). Transport errors leave the outcome unknown.
    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        check_entries(&self.capabilities(), entries)?;
        entries
            .iter()
            .try_for_each(|(key, value)| self.set(key, value.clone(), ttl))
    }

    /// Removes several keys; returns how many entries were removed. Provided as one `delete`
    /// per key after every key was checked.
    ///
    /// # Errors
    ///
    /// As [`delete`](Self::delete); every key is checked before anything is removed.
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        check_keys(&self.capabilities(), keys.iter().copied())?;
        let mut removed = 0;
        for key in keys {
            removed += u64::from(self.delete(key)?);
        }
        Ok(removed)
    }

    /// Stores `value` only if no live entry is under `key`, atomically; `true` when it stored.
    ///
    /// Optional ([`Operation::Add`]): the provided method returns `Unsupported`.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set); `Unsupported` on an engine that does not offer it.
    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let _ = (key, value, ttl);
        Err(self.capabilities().unsupported(Operation::Add))
    }

    /// Adds `delta` to the counter under `key`, atomically, and returns the new value.
    ///
    /// A missing key counts as 0 and the new counter gets the default TTL; an existing counter
    /// keeps its TTL. Optional ([`Operation::Increment`]): the provided method returns
    /// `Unsupported`.
    ///
    /// # Errors
    ///
    /// `NotANumber` when the value is not a counter and `Overflow` when the result would leave
    /// the signed 64-bit range; in both cases the value is left unchanged. `Unsupported` on an
    /// engine that does not offer it.
    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let _ = (key, delta);
        Err(self.capabilities().unsupported(Operation::Increment))
    }

    /// Gives an existing entry a new TTL without rewriting its value; `true` when the entry
    /// existed. `Ttl::After(Duration::ZERO)` removes it. Optional ([`Operation::Touch`]).
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set); `Unsupported` on an engine that does not offer it.
    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let _ = (key, ttl);
        Err(self.capabilities().unsupported(Operation::Touch))
    }

    /// Removes the entry under `key` only if its value is byte for byte `expected`; `true` when
    /// it removed it. Optional ([`Operation::DeleteIfEquals`]).
    ///
    /// `false` when the key is absent or expired, or holds any other value (a prefix of
    /// `expected`, a longer value, anything else): then nothing changes. The comparison and the
    /// removal are one atomic step with respect to every other operation on the engine, from
    /// every thread and, for engines shared across processes, every client: a value another
    /// writer stored after this call read the entry is never deleted. This is what releasing a
    /// lease or a lock needs: each holder stores a token of its own under the lock's key, and
    /// releases with its token, so a holder whose lease expired and was taken over cannot
    /// delete its successor's. A `get` followed by a `delete` is not that, which is why there
    /// is no composed fallback.
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
    /// lease as held until its TTL ends. `Unsupported` on an engine that does not offer it.
    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        let _ = (key, expected);
        Err(self.capabilities().unsupported(Operation::DeleteIfEquals))
    }

    /// How long the entry under `key` has left: `None` when it is absent or expired,
    /// [`Remaining::Never`] when it never expires, [`Remaining::After`] otherwise. Optional
    /// ([`Operation::RemainingTtl`]).
    ///
    /// # Errors
    ///
    /// `InvalidKey`, `Closed`, transport errors; `Unsupported` on an engine that does not
    /// offer it.
    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        let _ = key;
        Err(self.capabilities().unsupported(Operation::RemainingTtl))
    }

    /// Reads the value under `key` with its remaining lifetime. Engines answer in one operation
    /// (one round trip for remote ones); the provided method reads twice (`get`, then
    /// `remaining_ttl`), so an entry replaced in between may be reported with the new entry's
    /// lifetime. Part of [`Operation::RemainingTtl`].
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get); `Unsupported` on an engine without
    /// [`Operation::RemainingTtl`], before anything is read.
    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        let caps = self.capabilities();
        if !caps.supports(Operation::RemainingTtl) {
            return Err(caps.unsupported(Operation::RemainingTtl));
        }
        let Some(value) = self.get(key)? else {
            return Ok(None);
        };
        Ok(self.remaining_ttl(key)?.map(|left| (value, left)))
    }

    /// [`get_with_ttl`](Self::get_with_ttl) for several keys; one slot per key, in order.
    ///
    /// # Errors
    ///
    /// As [`get_many`](Self::get_many) and [`get_with_ttl`](Self::get_with_ttl).
    fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        keys.iter().map(|key| self.get_with_ttl(key)).collect()
    }
}

/// Checks every key and value of a bulk write against the key rule and the engine's limits,
/// before anything is written.
pub(crate) fn check_entries(caps: &Capabilities, entries: &[(&str, Bytes)]) -> Result<()> {
    check_keys(caps, entries.iter().map(|(key, _)| *key))?;
    match caps.max_value_size {
        Some(limit) => match entries.iter().find(|(_, value)| value.len() > limit) {
            Some((key, value)) => Err(CacheError::ValueTooLarge {
                backend: caps.backend,
                key: crate::KeyDisplay::new(key),
                size: value.len(),
                limit,
            }),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// Checks every key of a bulk call against the portable key rule and the engine's key length,
/// before anything is read or written.
pub(crate) fn check_keys<'a>(
    caps: &Capabilities,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let prefix_len = MAX_KEY_LEN.saturating_sub(caps.max_key_len);
    keys.into_iter()
        .try_for_each(|key| check_key(key, prefix_len))
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
