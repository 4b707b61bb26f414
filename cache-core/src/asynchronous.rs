//! The async face of an engine: the same operations, the same contract, as futures.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

use crate::CacheEngine;
use crate::blocking::{check_entries, check_keys};
use crate::capabilities::{Capabilities, Operation};
use crate::error::Result;
use crate::ttl::{Remaining, Ttl};

/// The blocking face of a builder: its `build` makes the blocking engine (or typed cache).
/// Builders are generic over their face, so both faces share every setter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blocking;

/// The async face of a builder: its `build` makes the async engine (or typed cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Async;

/// A boxed, sendable future: what [`DynAsyncCacheEngine`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What `get_many_with_ttl` gives: one slot per key, a value and its remaining lifetime.
type ManyWithTtl = Vec<Option<(Bytes, Remaining)>>;

/// A cache engine whose operations are futures: every operation of
/// [`CacheEngine`](crate::CacheEngine), with the same names, the same
/// [contract](crate::CacheEngine#contract) word for word and the same errors.
///
/// Returned futures are `Send`, so they can be spawned on a multi-threaded runtime. The trait
/// uses the language's own async methods (`impl Future + Send` in the signatures): calls through
/// a concrete engine or a generic `E: AsyncCacheEngine` are statically dispatched and box
/// nothing. For type erasure, [`DynAsyncCacheEngine`] is the dyn-compatible companion that
/// every `AsyncCacheEngine` implements; `Arc<dyn DynAsyncCacheEngine>` and
/// `Box<dyn DynAsyncCacheEngine>` are engines again.
///
/// This crate depends on no runtime. Engines that do I/O need one (the remote engines' async
/// faces run on tokio, behind their `tokio` feature); engines that never block, such as
/// `InMemoryEngine`, declare themselves [`NonBlocking`] and get this trait from their blocking
/// one, on any executor.
///
/// The required and optional methods are those of
/// [`CacheEngine`](crate::CacheEngine#required-and-optional-methods), with the same rule: the
/// provided optional methods answer [`CacheError::Unsupported`](crate::CacheError::Unsupported), and an engine that overrides
/// one declares it in [`Capabilities::operations`].
///
/// ```
/// use cache_core::{AsyncCacheEngine, Bytes, Result, Ttl};
///
/// async fn remember<E: AsyncCacheEngine>(cache: &E) -> Result<Option<Bytes>> {
///     cache.set("greeting", Bytes::from_static(b"hello"), Ttl::Default).await?;
///     cache.get("greeting").await
/// }
/// # let _ = remember::<std::sync::Arc<dyn cache_core::DynAsyncCacheEngine>>;
/// ```
pub trait AsyncCacheEngine: Send + Sync + Debug {
    /// Reads the value under `key`; `Ok(None)` when it is absent or expired.
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::get`](crate::CacheEngine::get).
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>>> + Send;

    /// Stores `value` under `key` for `ttl`, replacing any previous value and its TTL.
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::set`](crate::CacheEngine::set).
    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> impl Future<Output = Result<()>> + Send;

    /// Removes `key`; `true` when an entry was removed.
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::delete`](crate::CacheEngine::delete).
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Removes every entry of this engine (its namespace, its database), and nothing else.
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::clear`](crate::CacheEngine::clear).
    fn clear(&self) -> impl Future<Output = Result<()>> + Send;

    /// Closes the engine for every handle and clone; later operations return `Closed`.
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::close`](crate::CacheEngine::close).
    fn close(&self) -> impl Future<Output = Result<()>> + Send;

    /// What this engine supports and its limits, including the optional operations it offers.
    fn capabilities(&self) -> Capabilities;

    /// Whether a live entry is stored under `key`; provided as a `get`.
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::exists`](crate::CacheEngine::exists).
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        async move { Ok(self.get(key).await?.is_some()) }
    }

    /// Reads several keys; the result has one slot per key, in the same order. Provided as one
    /// `get` per key after every key was checked.
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::get_many`](crate::CacheEngine::get_many).
    fn get_many(&self, keys: &[&str]) -> impl Future<Output = Result<Vec<Option<Bytes>>>> + Send {
        async move {
            check_keys(&self.capabilities(), keys.iter().copied())?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.get(key).await?);
            }
            Ok(out)
        }
    }

    /// Stores several entries with one TTL. Provided as one `set` per entry after every key and
    /// value was checked.
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::set_many`](crate::CacheEngine::set_many).
    fn set_many(
        &self,
        entries: &[(&str, Bytes)],
        ttl: Ttl,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            check_entries(&self.capabilities(), entries)?;
            for (key, value) in entries {
                self.set(key, value.clone(), ttl).await?;
            }
            Ok(())
        }
    }

    /// Removes several keys; returns how many entries were removed. Provided as one `delete`
    /// per key after every key was checked.
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::delete_many`](crate::CacheEngine::delete_many).
    fn delete_many(&self, keys: &[&str]) -> impl Future<Output = Result<u64>> + Send {
        async move {
            check_keys(&self.capabilities(), keys.iter().copied())?;
            let mut removed = 0;
            for key in keys {
                removed += u64::from(self.delete(key).await?);
            }
            Ok(removed)
        }
    }

    /// Stores `value` only if no live entry is under `key`, atomically; `true` when it stored.
    /// Optional ([`Operation::Add`]).
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::add`](crate::CacheEngine::add).
    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> impl Future<Output = Result<bool>> + Send {
        let _ = (key, value, ttl);
        std::future::ready(Err(self.capabilities().unsupported(Operation::Add)))
    }

    /// Adds `delta` to the counter under `key`, atomically, and returns the new value.
    /// Optional ([`Operation::Increment`]).
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::increment`](crate::CacheEngine::increment).
    fn increment(&self, key: &str, delta: i64) -> impl Future<Output = Result<i64>> + Send {
        let _ = (key, delta);
        std::future::ready(Err(self.capabilities().unsupported(Operation::Increment)))
    }

    /// Gives an existing entry a new TTL without rewriting its value; `true` when it existed.
    /// Optional ([`Operation::Touch`]).
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::touch`](crate::CacheEngine::touch).
    fn touch(&self, key: &str, ttl: Ttl) -> impl Future<Output = Result<bool>> + Send {
        let _ = (key, ttl);
        std::future::ready(Err(self.capabilities().unsupported(Operation::Touch)))
    }

    /// Removes the entry under `key` only if its value is byte for byte `expected`, atomically;
    /// `true` when it removed it, `false` (nothing changed) when the key is absent, expired or
    /// holds another value. Optional ([`Operation::DeleteIfEquals`]); see
    /// [`CacheEngine::delete_if_equals`](crate::CacheEngine::delete_if_equals).
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::delete_if_equals`](crate::CacheEngine::delete_if_equals).
    fn delete_if_equals(
        &self,
        key: &str,
        expected: &[u8],
    ) -> impl Future<Output = Result<bool>> + Send {
        let _ = (key, expected);
        std::future::ready(Err(self
            .capabilities()
            .unsupported(Operation::DeleteIfEquals)))
    }

    /// How long the entry under `key` has left; `None` when it is absent. Optional
    /// ([`Operation::RemainingTtl`]).
    ///
    /// # Errors
    ///
    /// As [`CacheEngine::remaining_ttl`](crate::CacheEngine::remaining_ttl).
    fn remaining_ttl(&self, key: &str) -> impl Future<Output = Result<Option<Remaining>>> + Send {
        let _ = key;
        std::future::ready(Err(self
            .capabilities()
            .unsupported(Operation::RemainingTtl)))
    }

    /// The value under `key` with its remaining lifetime, in one operation where the engine
    /// can (see [`CacheEngine::get_with_ttl`](crate::CacheEngine::get_with_ttl)).
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get); `Unsupported` on an engine without [`Operation::RemainingTtl`].
    fn get_with_ttl(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<(Bytes, Remaining)>>> + Send {
        async move {
            let caps = self.capabilities();
            if !caps.supports(Operation::RemainingTtl) {
                return Err(caps.unsupported(Operation::RemainingTtl));
            }
            let Some(value) = self.get(key).await? else {
                return Ok(None);
            };
            Ok(self.remaining_ttl(key).await?.map(|left| (value, left)))
        }
    }

    /// [`get_with_ttl`](Self::get_with_ttl) for several keys; one slot per key, in order.
    ///
    /// # Errors
    ///
    /// As [`get_many`](Self::get_many).
    fn get_many_with_ttl(
        &self,
        keys: &[&str],
    ) -> impl Future<Output = Result<Vec<Option<(Bytes, Remaining)>>>> + Send {
        async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.get_with_ttl(key).await?);
            }
            Ok(out)
        }
    }
}

/// A blocking engine whose operations never wait on I/O or on another thread for long (an
/// in-process map, a test double), and which is therefore also an [`AsyncCacheEngine`]: every
/// async operation runs the blocking one when the future is polled.
///
/// This is the one adapter from the blocking face to the async one; implement it with an empty
/// block. Engines that do I/O must not: their async face needs a runtime's I/O, and running a
/// blocking network call inside a future stalls an executor thread.
///
/// ```
/// use cache_core::{AsyncCacheEngine, Bytes, CacheEngine, Capabilities, NonBlocking, Result, Ttl};
/// # use std::{collections::HashMap, sync::Mutex};
/// # #[derive(Debug, Default)] struct Map(Mutex<HashMap<String, Bytes>>);
/// # impl CacheEngine for Map {
/// #     fn get(&self, k: &str) -> Result<Option<Bytes>> { Ok(self.0.lock().unwrap().get(k).cloned()) }
/// #     fn set(&self, k: &str, v: Bytes, _: Ttl) -> Result<()> { self.0.lock().unwrap().insert(k.into(), v); Ok(()) }
/// #     fn delete(&self, k: &str) -> Result<bool> { Ok(self.0.lock().unwrap().remove(k).is_some()) }
/// #     fn clear(&self) -> Result<()> { Ok(()) }
/// #     fn close(&self) -> Result<()> { Ok(()) }
/// #     fn capabilities(&self) -> Capabilities { Capabilities::default() }
/// # }
/// impl NonBlocking for Map {}
///
/// async fn warm(cache: &impl AsyncCacheEngine) -> Result<()> {
///     cache.set("a", Bytes::from_static(b"1"), Ttl::Default).await
/// }
/// assert!(cache_core::block_on(warm(&Map::default())).is_ok());
/// ```
pub trait NonBlocking: CacheEngine {}

impl<E: NonBlocking> AsyncCacheEngine for E {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        CacheEngine::get(self, key)
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        CacheEngine::set(self, key, value, ttl)
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        CacheEngine::delete(self, key)
    }
    async fn clear(&self) -> Result<()> {
        CacheEngine::clear(self)
    }
    async fn close(&self) -> Result<()> {
        CacheEngine::close(self)
    }
    fn capabilities(&self) -> Capabilities {
        CacheEngine::capabilities(self)
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        CacheEngine::exists(self, key)
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        CacheEngine::get_many(self, keys)
    }
    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        CacheEngine::set_many(self, entries, ttl)
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        CacheEngine::delete_many(self, keys)
    }
    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        CacheEngine::add(self, key, value, ttl)
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        CacheEngine::increment(self, key, delta)
    }
    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        CacheEngine::touch(self, key, ttl)
    }
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        CacheEngine::delete_if_equals(self, key, expected)
    }
    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        CacheEngine::remaining_ttl(self, key)
    }
    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        CacheEngine::get_with_ttl(self, key)
    }
    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        CacheEngine::get_many_with_ttl(self, keys)
    }
}

/// The dyn-compatible companion of [`AsyncCacheEngine`]: the same operations returning
/// [`BoxFuture`]s. Every `AsyncCacheEngine` implements it, and `dyn DynAsyncCacheEngine` (behind
/// an `Arc` or a `Box`) implements `AsyncCacheEngine`, so type-erased engines are
/// used exactly like concrete ones, at the cost of one allocation per call.
///
/// ```
/// use std::sync::Arc;
/// use cache_core::{AsyncCacheEngine, DynAsyncCacheEngine};
///
/// fn erase<E: AsyncCacheEngine + 'static>(engine: E) -> Arc<dyn DynAsyncCacheEngine> {
///     Arc::new(engine)
/// }
///
/// fn takes_any(_: &impl AsyncCacheEngine) {}
/// # fn check(e: Arc<dyn DynAsyncCacheEngine>) { takes_any(&e) }
/// # let _ = erase::<Arc<dyn DynAsyncCacheEngine>>;
/// ```
#[allow(missing_docs)] // Each method is its `AsyncCacheEngine` counterpart, boxed.
pub trait DynAsyncCacheEngine: Send + Sync + Debug {
    fn boxed_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>>>;
    fn boxed_set<'a>(&'a self, key: &'a str, value: Bytes, ttl: Ttl) -> BoxFuture<'a, Result<()>>;
    fn boxed_delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;
    fn boxed_delete_if_equals<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>>;
    fn boxed_exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;
    fn boxed_clear(&self) -> BoxFuture<'_, Result<()>>;
    fn boxed_close(&self) -> BoxFuture<'_, Result<()>>;
    fn boxed_get_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Bytes>>>>;
    fn boxed_set_many<'a>(
        &'a self,
        entries: &'a [(&'a str, Bytes)],
        ttl: Ttl,
    ) -> BoxFuture<'a, Result<()>>;
    fn boxed_delete_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>>;
    fn boxed_add<'a>(&'a self, key: &'a str, value: Bytes, ttl: Ttl)
    -> BoxFuture<'a, Result<bool>>;
    fn boxed_increment<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>>;
    fn boxed_touch<'a>(&'a self, key: &'a str, ttl: Ttl) -> BoxFuture<'a, Result<bool>>;
    fn boxed_remaining_ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Remaining>>>;
    fn boxed_get_with_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Bytes, Remaining)>>>;
    fn boxed_get_many_with_ttl<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<ManyWithTtl>>;
    fn boxed_capabilities(&self) -> Capabilities;
}

impl<E: AsyncCacheEngine> DynAsyncCacheEngine for E {
    fn boxed_get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>>> {
        Box::pin(self.get(key))
    }
    fn boxed_set<'a>(&'a self, key: &'a str, value: Bytes, ttl: Ttl) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.set(key, value, ttl))
    }
    fn boxed_delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.delete(key))
    }
    fn boxed_delete_if_equals<'a>(
        &'a self,
        key: &'a str,
        expected: &'a [u8],
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.delete_if_equals(key, expected))
    }
    fn boxed_exists<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.exists(key))
    }
    fn boxed_clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.clear())
    }
    fn boxed_close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.close())
    }
    fn boxed_get_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Bytes>>>> {
        Box::pin(self.get_many(keys))
    }
    fn boxed_set_many<'a>(
        &'a self,
        entries: &'a [(&'a str, Bytes)],
        ttl: Ttl,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.set_many(entries, ttl))
    }
    fn boxed_delete_many<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(self.delete_many(keys))
    }
    fn boxed_add<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Ttl,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.add(key, value, ttl))
    }
    fn boxed_increment<'a>(&'a self, key: &'a str, delta: i64) -> BoxFuture<'a, Result<i64>> {
        Box::pin(self.increment(key, delta))
    }
    fn boxed_touch<'a>(&'a self, key: &'a str, ttl: Ttl) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.touch(key, ttl))
    }
    fn boxed_remaining_ttl<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Remaining>>> {
        Box::pin(self.remaining_ttl(key))
    }
    fn boxed_get_with_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Bytes, Remaining)>>> {
        Box::pin(self.get_with_ttl(key))
    }
    fn boxed_get_many_with_ttl<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<ManyWithTtl>> {
        Box::pin(self.get_many_with_ttl(keys))
    }
    fn boxed_capabilities(&self) -> Capabilities {
        self.capabilities()
    }
}

// Each boxed future is awaited inside an `async fn`, which captures the borrows of `self` and
// of the arguments separately, as the trait's signatures do.
impl AsyncCacheEngine for dyn DynAsyncCacheEngine {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.boxed_get(key).await
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.boxed_set(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.boxed_delete(key).await
    }
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        self.boxed_delete_if_equals(key, expected).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.boxed_exists(key).await
    }
    async fn clear(&self) -> Result<()> {
        self.boxed_clear().await
    }
    async fn close(&self) -> Result<()> {
        self.boxed_close().await
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.boxed_get_many(keys).await
    }
    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        self.boxed_set_many(entries, ttl).await
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.boxed_delete_many(keys).await
    }
    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.boxed_add(key, value, ttl).await
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        self.boxed_increment(key, delta).await
    }
    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.boxed_touch(key, ttl).await
    }
    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.boxed_remaining_ttl(key).await
    }
    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        self.boxed_get_with_ttl(key).await
    }
    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        self.boxed_get_many_with_ttl(keys).await
    }
    fn capabilities(&self) -> Capabilities {
        self.boxed_capabilities()
    }
}

macro_rules! forward_async_engine {
    () => {
        fn get(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>>> + Send {
            (**self).get(key)
        }
        fn set(
            &self,
            key: &str,
            value: Bytes,
            ttl: Ttl,
        ) -> impl Future<Output = Result<()>> + Send {
            (**self).set(key, value, ttl)
        }
        fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
            (**self).delete(key)
        }
        fn delete_if_equals(
            &self,
            key: &str,
            expected: &[u8],
        ) -> impl Future<Output = Result<bool>> + Send {
            (**self).delete_if_equals(key, expected)
        }
        fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
            (**self).exists(key)
        }
        fn clear(&self) -> impl Future<Output = Result<()>> + Send {
            (**self).clear()
        }
        fn close(&self) -> impl Future<Output = Result<()>> + Send {
            (**self).close()
        }
        fn get_many(
            &self,
            keys: &[&str],
        ) -> impl Future<Output = Result<Vec<Option<Bytes>>>> + Send {
            (**self).get_many(keys)
        }
        fn set_many(
            &self,
            entries: &[(&str, Bytes)],
            ttl: Ttl,
        ) -> impl Future<Output = Result<()>> + Send {
            (**self).set_many(entries, ttl)
        }
        fn delete_many(&self, keys: &[&str]) -> impl Future<Output = Result<u64>> + Send {
            (**self).delete_many(keys)
        }
        fn add(
            &self,
            key: &str,
            value: Bytes,
            ttl: Ttl,
        ) -> impl Future<Output = Result<bool>> + Send {
            (**self).add(key, value, ttl)
        }
        fn increment(&self, key: &str, delta: i64) -> impl Future<Output = Result<i64>> + Send {
            (**self).increment(key, delta)
        }
        fn touch(&self, key: &str, ttl: Ttl) -> impl Future<Output = Result<bool>> + Send {
            (**self).touch(key, ttl)
        }
        fn remaining_ttl(
            &self,
            key: &str,
        ) -> impl Future<Output = Result<Option<Remaining>>> + Send {
            (**self).remaining_ttl(key)
        }
        fn get_with_ttl(
            &self,
            key: &str,
        ) -> impl Future<Output = Result<Option<(Bytes, Remaining)>>> + Send {
            (**self).get_with_ttl(key)
        }
        fn get_many_with_ttl(
            &self,
            keys: &[&str],
        ) -> impl Future<Output = Result<Vec<Option<(Bytes, Remaining)>>>> + Send {
            (**self).get_many_with_ttl(keys)
        }
        fn capabilities(&self) -> Capabilities {
            (**self).capabilities()
        }
    };
}

impl<T: AsyncCacheEngine + ?Sized> AsyncCacheEngine for Arc<T> {
    forward_async_engine!();
}

// `Box` and `&` are fundamental types, so a blanket forwarding impl for them would overlap with
// the `NonBlocking` adapter (a downstream crate may implement `NonBlocking` for `Box<Local>`).
// The boxed trait object, the common case, forwards explicitly.
impl AsyncCacheEngine for Box<dyn DynAsyncCacheEngine> {
    forward_async_engine!();
}
