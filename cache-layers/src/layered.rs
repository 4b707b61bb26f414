//! [`Layered`]: any engine, blocking or async, with an [`Interceptor`] around every operation.

use std::fmt;
use std::sync::OnceLock;

use cache_core::{
    AsyncCacheEngine, Bytes, CacheEngine, CacheError, Capabilities, Remaining, Result, Ttl,
};

use crate::call::{Call, LabelSource, Labels, Operation, Outcome};

/// What a layer does around each operation of the engine it wraps. One implementation serves
/// both faces: [`Layered`] calls it around blocking and async operations alike.
pub trait Interceptor: Send + Sync + fmt::Debug {
    /// What [`before`](Self::before) hands to [`after`](Self::after): a start time, say, or
    /// nothing when nobody listens.
    type Ticket: Send;

    /// Called before the operation runs.
    fn before(&self, call: &Call<'_>) -> Self::Ticket;

    /// Called once it ended, with how.
    fn after(&self, call: &Call<'_>, ticket: Self::Ticket, outcome: &Outcome<'_>);

    /// Whether the layer has nothing to do right now (nobody listens to its metrics or events):
    /// then the operation goes straight to the engine, without a call, a ticket or an outcome.
    /// Never, by default.
    #[inline]
    fn is_idle(&self) -> bool {
        false
    }

    /// Whether the caller gets the operation's fallback (a miss, a skipped write) instead of
    /// `error`: what a fail-open layer decides. Never, by default.
    fn absorbs(&self, call: &Call<'_>, error: &CacheError) -> bool {
        let _ = (call, error);
        false
    }
}

/// Something that can be put around an engine: every [`Interceptor`] is one.
pub trait Layer<E> {
    /// The engine with the layer around it.
    type Engine;

    /// Puts the layer around `inner`.
    fn layer(self, inner: E) -> Self::Engine;
}

impl<E, I: Interceptor> Layer<E> for I {
    type Engine = Layered<E, I>;

    fn layer(self, inner: E) -> Layered<E, I> {
        Layered::new(inner, self)
    }
}

/// `.layer(...)` on every engine, blocking or async, to stack layers in the order they are
/// written (the last is the outermost):
///
/// ```
/// use cache_layers::{FailOpen, LayerExt, Stats};
/// use cache_local::InMemoryEngine;
///
/// let stats = Stats::new();
/// let engine = InMemoryEngine::new().layer(stats.clone()).layer(FailOpen::new());
/// # let _ = engine;
/// ```
pub trait LayerExt: Sized {
    /// Puts `layer` around `self`.
    fn layer<L: Layer<Self>>(self, layer: L) -> L::Engine {
        layer.layer(self)
    }
}

impl<E> LayerExt for E {}

/// An engine with an [`Interceptor`] around every operation. It is an engine of the same face
/// as the one it wraps: [`CacheEngine`] around a blocking engine, [`AsyncCacheEngine`] around an
/// async one (an engine with both faces, such as `InMemoryEngine`, keeps both). Capabilities are
/// the inner engine's.
#[derive(Debug)]
pub struct Layered<E, I> {
    inner: E,
    interceptor: I,
    labels: OnceLock<Labels>,
}

impl<E: Clone, I: Clone> Clone for Layered<E, I> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            interceptor: self.interceptor.clone(),
            labels: self.labels.clone(),
        }
    }
}

impl<E, I: Interceptor> Layered<E, I> {
    /// Puts `interceptor` around `inner`.
    pub fn new(inner: E, interceptor: I) -> Self {
        Self {
            inner,
            interceptor,
            labels: OnceLock::new(),
        }
    }

    /// The engine inside.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The interceptor.
    pub fn interceptor(&self) -> &I {
        &self.interceptor
    }

    /// Settles an operation: reports its outcome, and gives the fallback for an error the
    /// interceptor absorbs.
    #[inline]
    fn settle<T>(
        &self,
        call: &Call<'_>,
        ticket: I::Ticket,
        result: Result<T>,
        found: impl FnOnce(&T) -> (u64, u64),
        fallback: Option<impl FnOnce() -> T>,
    ) -> Result<T> {
        match result {
            Ok(value) => {
                let (hits, misses) = found(&value);
                self.interceptor
                    .after(call, ticket, &Outcome::Done { hits, misses });
                Ok(value)
            }
            Err(error) => match fallback {
                Some(fallback) if self.interceptor.absorbs(call, &error) => {
                    self.interceptor
                        .after(call, ticket, &Outcome::Absorbed(&error));
                    Ok(fallback())
                }
                _ => {
                    self.interceptor
                        .after(call, ticket, &Outcome::Failed(&error));
                    Err(error)
                }
            },
        }
    }
}

#[inline]
fn nothing<T>(_: &T) -> (u64, u64) {
    (0, 0)
}

/// One key read: a hit when found (a value, a remaining TTL).
#[inline]
fn one<T>(found: &Option<T>) -> (u64, u64) {
    if found.is_some() { (1, 0) } else { (0, 1) }
}

/// Summaries take `&T` of the operation's output type, here a `Vec`.
#[inline]
#[allow(clippy::ptr_arg)]
fn many<T>(found: &Vec<Option<T>>) -> (u64, u64) {
    let hits = found.iter().filter(|v| v.is_some()).count() as u64;
    (hits, found.len() as u64 - hits)
}

#[inline]
fn exists(found: &bool) -> (u64, u64) {
    if *found { (1, 0) } else { (0, 1) }
}

/// No fallback: the error always reaches the caller (there is no safe value to make up).
fn none<T>() -> Option<fn() -> T> {
    None
}

#[inline]
fn call<'a>(source: &'a LabelSource<'a>, operation: Operation, key: &'a str) -> Call<'a> {
    Call {
        operation,
        key: Some(key),
        keys: 1,
        source,
    }
}

#[inline]
fn bulk<'a>(source: &'a LabelSource<'a>, operation: Operation, keys: usize) -> Call<'a> {
    Call {
        operation,
        key: None,
        keys,
        source,
    }
}

/// Where a call finds the engine's labels, through the face it is called on.
macro_rules! source {
    ($self:ident, $face:ident) => {
        LabelSource {
            cell: &$self.labels,
            fetch: &|| $face::capabilities(&$self.inner),
        }
    };
}

impl<E: CacheEngine, I: Interceptor> CacheEngine for Layered<E, I> {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        if self.interceptor.is_idle() {
            return self.inner.get(key);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::Get, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.get(key), one, Some(|| None))
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        if self.interceptor.is_idle() {
            return self.inner.set(key, value, ttl);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::Set, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.set(key, value, ttl), nothing, Some(|| ()))
    }

    fn delete(&self, key: &str) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.delete(key);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::Delete, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.delete(key), nothing, Some(|| false))
    }

    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.delete_if_equals(key, expected);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::DeleteIfEquals, key);
        let t = self.interceptor.before(&c);
        let result = self.inner.delete_if_equals(key, expected);
        self.settle(&c, t, result, nothing, Some(|| false))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.exists(key);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::Exists, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.exists(key), exists, Some(|| false))
    }

    fn clear(&self) -> Result<()> {
        if self.interceptor.is_idle() {
            return self.inner.clear();
        }
        let source = source!(self, CacheEngine);
        let c = bulk(&source, Operation::Clear, 0);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.clear(), nothing, Some(|| ()))
    }

    fn close(&self) -> Result<()> {
        if self.interceptor.is_idle() {
            return self.inner.close();
        }
        let source = source!(self, CacheEngine);
        let c = bulk(&source, Operation::Close, 0);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.close(), nothing, none())
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        if self.interceptor.is_idle() {
            return self.inner.get_many(keys);
        }
        let source = source!(self, CacheEngine);
        let c = bulk(&source, Operation::GetMany, keys.len());
        let t = self.interceptor.before(&c);
        let fallback = || vec![None; keys.len()];
        self.settle(&c, t, self.inner.get_many(keys), many, Some(fallback))
    }

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let source = source!(self, CacheEngine);
        let c = bulk(&source, Operation::SetMany, entries.len());
        let t = self.interceptor.before(&c);
        self.settle(
            &c,
            t,
            self.inner.set_many(entries, ttl),
            nothing,
            Some(|| ()),
        )
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if self.interceptor.is_idle() {
            return self.inner.delete_many(keys);
        }
        let source = source!(self, CacheEngine);
        let c = bulk(&source, Operation::DeleteMany, keys.len());
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.delete_many(keys), nothing, Some(|| 0))
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.add(key, value, ttl);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::Add, key);
        let t = self.interceptor.before(&c);
        self.settle(
            &c,
            t,
            self.inner.add(key, value, ttl),
            nothing,
            Some(|| false),
        )
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        if self.interceptor.is_idle() {
            return self.inner.increment(key, delta);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::Increment, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.increment(key, delta), nothing, none())
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.touch(key, ttl);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::Touch, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.touch(key, ttl), nothing, Some(|| false))
    }

    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        if self.interceptor.is_idle() {
            return self.inner.remaining_ttl(key);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::RemainingTtl, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.remaining_ttl(key), one, Some(|| None))
    }

    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        if self.interceptor.is_idle() {
            return self.inner.get_with_ttl(key);
        }
        let source = source!(self, CacheEngine);
        let c = call(&source, Operation::GetWithTtl, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.get_with_ttl(key), one, Some(|| None))
    }

    fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        if self.interceptor.is_idle() {
            return self.inner.get_many_with_ttl(keys);
        }
        let source = source!(self, CacheEngine);
        let c = bulk(&source, Operation::GetManyWithTtl, keys.len());
        let t = self.interceptor.before(&c);
        let fallback = || vec![None; keys.len()];
        let result = self.inner.get_many_with_ttl(keys);
        self.settle(&c, t, result, many, Some(fallback))
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

impl<E: AsyncCacheEngine, I: Interceptor> AsyncCacheEngine for Layered<E, I> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        if self.interceptor.is_idle() {
            return self.inner.get(key).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::Get, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.get(key).await, one, Some(|| None))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        if self.interceptor.is_idle() {
            return self.inner.set(key, value, ttl).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::Set, key);
        let t = self.interceptor.before(&c);
        let result = self.inner.set(key, value, ttl).await;
        self.settle(&c, t, result, nothing, Some(|| ()))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.delete(key).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::Delete, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.delete(key).await, nothing, Some(|| false))
    }

    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.delete_if_equals(key, expected).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::DeleteIfEquals, key);
        let t = self.interceptor.before(&c);
        let result = self.inner.delete_if_equals(key, expected).await;
        self.settle(&c, t, result, nothing, Some(|| false))
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.exists(key).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::Exists, key);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.exists(key).await, exists, Some(|| false))
    }

    async fn clear(&self) -> Result<()> {
        if self.interceptor.is_idle() {
            return self.inner.clear().await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = bulk(&source, Operation::Clear, 0);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.clear().await, nothing, Some(|| ()))
    }

    async fn close(&self) -> Result<()> {
        if self.interceptor.is_idle() {
            return self.inner.close().await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = bulk(&source, Operation::Close, 0);
        let t = self.interceptor.before(&c);
        self.settle(&c, t, self.inner.close().await, nothing, none())
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        if self.interceptor.is_idle() {
            return self.inner.get_many(keys).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = bulk(&source, Operation::GetMany, keys.len());
        let t = self.interceptor.before(&c);
        let fallback = || vec![None; keys.len()];
        self.settle(&c, t, self.inner.get_many(keys).await, many, Some(fallback))
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let source = source!(self, AsyncCacheEngine);
        let c = bulk(&source, Operation::SetMany, entries.len());
        let t = self.interceptor.before(&c);
        let result = self.inner.set_many(entries, ttl).await;
        self.settle(&c, t, result, nothing, Some(|| ()))
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if self.interceptor.is_idle() {
            return self.inner.delete_many(keys).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = bulk(&source, Operation::DeleteMany, keys.len());
        let t = self.interceptor.before(&c);
        self.settle(
            &c,
            t,
            self.inner.delete_many(keys).await,
            nothing,
            Some(|| 0),
        )
    }

    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.add(key, value, ttl).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::Add, key);
        let t = self.interceptor.before(&c);
        let result = self.inner.add(key, value, ttl).await;
        self.settle(&c, t, result, nothing, Some(|| false))
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        if self.interceptor.is_idle() {
            return self.inner.increment(key, delta).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::Increment, key);
        let t = self.interceptor.before(&c);
        self.settle(
            &c,
            t,
            self.inner.increment(key, delta).await,
            nothing,
            none(),
        )
    }

    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        if self.interceptor.is_idle() {
            return self.inner.touch(key, ttl).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::Touch, key);
        let t = self.interceptor.before(&c);
        self.settle(
            &c,
            t,
            self.inner.touch(key, ttl).await,
            nothing,
            Some(|| false),
        )
    }

    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        if self.interceptor.is_idle() {
            return self.inner.remaining_ttl(key).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::RemainingTtl, key);
        let t = self.interceptor.before(&c);
        let result = self.inner.remaining_ttl(key).await;
        self.settle(&c, t, result, one, Some(|| None))
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        if self.interceptor.is_idle() {
            return self.inner.get_with_ttl(key).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = call(&source, Operation::GetWithTtl, key);
        let t = self.interceptor.before(&c);
        let result = self.inner.get_with_ttl(key).await;
        self.settle(&c, t, result, one, Some(|| None))
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        if self.interceptor.is_idle() {
            return self.inner.get_many_with_ttl(keys).await;
        }
        let source = source!(self, AsyncCacheEngine);
        let c = bulk(&source, Operation::GetManyWithTtl, keys.len());
        let t = self.interceptor.before(&c);
        let fallback = || vec![None; keys.len()];
        let result = self.inner.get_many_with_ttl(keys).await;
        self.settle(&c, t, result, many, Some(fallback))
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}
