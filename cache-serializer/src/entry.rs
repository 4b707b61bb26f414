//! The entry API: `cache.entry(key)` and `cache.entries(keys)`, configured with the TTL, tags,
//! negative caching or refresh, then loaded with `or_load` / `or_try_load` (one key) or
//! `or_load_many` / `or_try_load_many` (a batch: one loader call for every missing key).
//!
//! The builders are written once, generic over the cache they borrow; each face adds its
//! terminal methods (async ones on [`AsyncTypedCache`], blocking ones on [`TypedCache`]), and
//! both run the one implementation in `async_typed.rs`.

use std::collections::HashMap;
use std::future::Future;

use cache_core::{AsyncCacheEngine, CacheEngine, Result, Ttl, block_on};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{AsyncTypedCache, Codec, LoadError, Refresh, TypedCache};

/// How long a loaded value is stored: a fixed [`Ttl`] ([`FixedTtl`], what
/// [`Entry::ttl`] sets) or one chosen from the value by a closure `Fn(&T) -> Ttl` (what
/// [`Entry::ttl_from`] sets).
pub trait TtlFrom<T> {
    /// The TTL to store `value` with.
    fn ttl_for(&self, value: &T) -> Ttl;
}

/// One TTL for every value: [`Ttl::Default`] unless [`Entry::ttl`] says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FixedTtl(pub Ttl);

impl<T> TtlFrom<T> for FixedTtl {
    fn ttl_for(&self, _: &T) -> Ttl {
        self.0
    }
}

impl<T, F: Fn(&T) -> Ttl> TtlFrom<T> for F {
    fn ttl_for(&self, value: &T) -> Ttl {
        self(value)
    }
}

/// What an entry (or a batch of entries) is stored with.
#[derive(Debug, Clone)]
pub(crate) struct Options<'a, L> {
    pub(crate) ttl: L,
    pub(crate) tags: &'a [&'a str],
    pub(crate) negative_ttl: Option<Ttl>,
}

impl<'a> Options<'a, FixedTtl> {
    /// `ttl` for every value, no tags, no negative caching.
    pub(crate) fn fixed(ttl: Ttl) -> Self {
        Options {
            ttl: FixedTtl(ttl),
            tags: &[],
            negative_ttl: None,
        }
    }

    /// With negative caching for `ttl`.
    pub(crate) fn negative(mut self, ttl: Ttl) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// With `tags`.
    pub(crate) fn tagged(mut self, tags: &'a [&'a str]) -> Self {
        self.tags = tags;
        self
    }
}

impl<'a, L> Options<'a, L> {
    fn with_ttl<L2>(self, ttl: L2) -> Options<'a, L2> {
        Options {
            ttl,
            tags: self.tags,
            negative_ttl: self.negative_ttl,
        }
    }
}

/// One key of a typed cache, to read or load: made by
/// [`TypedCache::entry`] and [`AsyncTypedCache::entry`].
///
/// Set how a loaded value is stored, then load:
///
/// | setter | default |
/// |---|---|
/// | [`ttl`](Self::ttl), or [`ttl_from`](Self::ttl_from) the loaded value | [`Ttl::Default`] |
/// | [`tags`](Self::tags): the value carries them (see [`TypedCache::invalidate_tag`]) | none |
/// | [`negative_ttl`](Self::negative_ttl): how long an optional loader's `None` is cached | not cached |
/// | [`refresh`](Self::refresh): refresh ahead of expiry (a [`RefreshingEntry`]) | no refresh |
///
/// The loaders (`or_load`, `or_try_load`, `or_load_optional`, `or_try_load_optional`) return
/// the cached value, or run once per key across the callers that miss at the same time
/// (single-flight; across processes too with a [`Lease`](crate::Lease)), store what they
/// loaded and return it. A loader's error reaches every caller that waited for it and is never
/// cached.
///
/// ```
/// use std::time::Duration;
/// use cache_core::Ttl;
/// use cache_local::InMemoryEngine;
/// use cache_serializer::TypedCache;
///
/// let cache = TypedCache::new(InMemoryEngine::new());
/// let price: u64 = cache
///     .entry("price:42")
///     .ttl(Ttl::After(Duration::from_secs(60)))
///     .tags(&["catalog"])
///     .or_load(|| 1999)?;
/// assert_eq!(price, 1999);
///
/// // The TTL chosen from the value: a short one for a value that changes often.
/// let stock: u32 = cache
///     .entry("stock:42")
///     .ttl_from(|left: &u32| {
///         Ttl::After(Duration::from_secs(if *left < 10 { 5 } else { 300 }))
///     })
///     .or_load(|| 3)?;
/// assert_eq!(stock, 3);
/// # Ok::<(), cache_core::CacheError>(())
/// ```
#[must_use = "an entry does nothing until one of its `or_load` methods is called"]
#[derive(Debug)]
pub struct Entry<'a, Cache, L = FixedTtl> {
    cache: &'a Cache,
    key: &'a str,
    options: Options<'a, L>,
}

/// Several keys of a typed cache, to read or load together: made by
/// [`TypedCache::entries`] and [`AsyncTypedCache::entries`].
///
/// `or_load_many` reads every key in one bulk read and calls the loader **once**, with all the
/// keys it did not find (a database query with `WHERE id IN (..)`), then writes what it loaded
/// in one bulk write per TTL. Single-flight per key: a key another caller (a batch or a
/// single-key load) is loading already is awaited, not loaded twice; the keys this call loads
/// are awaited by the others. The loader returns the pairs it found; a key it does not return
/// is absent (cached as an absence only with a [`negative_ttl`](Self::negative_ttl)).
///
/// The result maps each key that has a value to it; absent keys are not in it.
///
/// ```
/// use cache_core::Ttl;
/// use cache_local::InMemoryEngine;
/// use cache_serializer::TypedCache;
///
/// let cache = TypedCache::new(InMemoryEngine::new());
/// cache.set("user:1", &"Ada".to_string(), Ttl::Default)?;
/// let mut queries = Vec::new();
/// let users = cache.entries(["user:1", "user:2", "user:3"]).or_load_many(|missing| {
///     queries.push(missing.clone()); // SELECT .. WHERE id IN (2, 3)
///     missing
///         .into_iter()
///         .filter(|key| key != "user:3") // no such user
///         .map(|key| (key, "Grace".to_string()))
/// })?;
/// assert_eq!(queries, [vec!["user:2".to_string(), "user:3".to_string()]]);
/// assert_eq!(users["user:1"], "Ada");
/// assert_eq!(users["user:2"], "Grace");
/// assert!(!users.contains_key("user:3"));
/// # Ok::<(), cache_core::CacheError>(())
/// ```
///
/// Refresh-ahead is for single keys ([`Entry::refresh`]), and a cache with a
/// [`Lease`](crate::Lease) refuses batch loads with `InvalidConfig`: a lease is taken per key,
/// and a batch holding many while it waits for others could stall two processes on each other.
#[must_use = "entries do nothing until one of their `or_load_many` methods is called"]
#[derive(Debug)]
pub struct Entries<'a, Cache, L = FixedTtl> {
    cache: &'a Cache,
    keys: Vec<String>,
    options: Options<'a, L>,
}

/// An [`Entry`] refreshed ahead of its expiry (see [`TypedCache::get_or_refresh_with`]):
/// made by [`Entry::refresh`].
#[must_use = "an entry does nothing until one of its `or_load` methods is called"]
#[derive(Debug)]
pub struct RefreshingEntry<'a, Cache> {
    cache: &'a Cache,
    key: &'a str,
    refresh: Refresh,
    /// A setter of the entry that refresh does not combine with, if one was used.
    conflict: Option<&'static str>,
}

impl<'a, Cache> Entry<'a, Cache> {
    pub(crate) fn new(cache: &'a Cache, key: &'a str) -> Self {
        Self {
            cache,
            key,
            options: Options::fixed(Ttl::Default),
        }
    }
}

impl<'a, Cache, L> Entry<'a, Cache, L> {
    /// Stores a loaded value for `ttl` (default: [`Ttl::Default`], the engine's default).
    pub fn ttl(self, ttl: Ttl) -> Entry<'a, Cache, FixedTtl> {
        Entry {
            cache: self.cache,
            key: self.key,
            options: self.options.with_ttl(FixedTtl(ttl)),
        }
    }

    /// Stores a loaded value for the TTL `ttl` gives for it: a short TTL for a value that
    /// changes often, [`Ttl::Never`] for one that never does, the expiry a token carries.
    pub fn ttl_from<T, F: Fn(&T) -> Ttl>(self, ttl: F) -> Entry<'a, Cache, F> {
        Entry {
            cache: self.cache,
            key: self.key,
            options: self.options.with_ttl(ttl),
        }
    }

    /// The loaded value carries these tags: invalidating one of them makes it a miss.
    pub fn tags(mut self, tags: &'a [&'a str]) -> Self {
        self.options.tags = tags;
        self
    }

    /// An optional loader's `None` is cached, as an absence, for `ttl` (by default it is not
    /// cached). Only the `or_load_optional` loaders can return `None`.
    pub fn negative_ttl(mut self, ttl: Ttl) -> Self {
        self.options.negative_ttl = Some(ttl);
        self
    }

    /// Refreshes the value ahead of its expiry as `refresh` says (see
    /// [`TypedCache::get_or_refresh_with`]): the value is stored for the refresh's freshness
    /// plus its stale window, which replaces any [`ttl`](Self::ttl) set before. Tags and
    /// negative caching do not combine with refresh: an entry that set them is refused with
    /// `InvalidConfig` when it loads.
    pub fn refresh(self, refresh: Refresh) -> RefreshingEntry<'a, Cache> {
        let conflict = if !self.options.tags.is_empty() {
            Some("tags")
        } else if self.options.negative_ttl.is_some() {
            Some("negative_ttl")
        } else {
            None
        };
        RefreshingEntry {
            cache: self.cache,
            key: self.key,
            refresh,
            conflict,
        }
    }
}

impl<'a, Cache> Entries<'a, Cache> {
    pub(crate) fn new<K: Into<String>>(
        cache: &'a Cache,
        keys: impl IntoIterator<Item = K>,
    ) -> Self {
        Self {
            cache,
            keys: keys.into_iter().map(Into::into).collect(),
            options: Options::fixed(Ttl::Default),
        }
    }
}

impl<'a, Cache, L> Entries<'a, Cache, L> {
    /// Stores every loaded value for `ttl` (default: [`Ttl::Default`]).
    pub fn ttl(self, ttl: Ttl) -> Entries<'a, Cache, FixedTtl> {
        Entries {
            cache: self.cache,
            keys: self.keys,
            options: self.options.with_ttl(FixedTtl(ttl)),
        }
    }

    /// Stores each loaded value for the TTL `ttl` gives for it; values with the same TTL are
    /// written in one bulk write.
    pub fn ttl_from<T, F: Fn(&T) -> Ttl>(self, ttl: F) -> Entries<'a, Cache, F> {
        Entries {
            cache: self.cache,
            keys: self.keys,
            options: self.options.with_ttl(ttl),
        }
    }

    /// Every loaded value carries these tags.
    pub fn tags(mut self, tags: &'a [&'a str]) -> Self {
        self.options.tags = tags;
        self
    }

    /// The keys the loader does not return are cached as absences for `ttl` (by default they
    /// are not cached).
    pub fn negative_ttl(mut self, ttl: Ttl) -> Self {
        self.options.negative_ttl = Some(ttl);
        self
    }
}

impl<'a, E: AsyncCacheEngine, C: Codec> AsyncTypedCache<E, C> {
    /// The entry under `key`, to load if it is missing: see [`Entry`].
    pub fn entry(&'a self, key: &'a str) -> Entry<'a, Self> {
        Entry::new(self, key)
    }

    /// The entries under `keys`, to load together those that are missing: see [`Entries`].
    pub fn entries<K: Into<String>>(
        &'a self,
        keys: impl IntoIterator<Item = K>,
    ) -> Entries<'a, Self> {
        Entries::new(self, keys)
    }
}

impl<'a, E: CacheEngine, C: Codec> TypedCache<E, C> {
    /// The entry under `key`, to load if it is missing: see [`Entry`].
    pub fn entry(&'a self, key: &'a str) -> Entry<'a, Self> {
        Entry::new(self, key)
    }

    /// The entries under `keys`, to load together those that are missing: see [`Entries`].
    pub fn entries<K: Into<String>>(
        &'a self,
        keys: impl IntoIterator<Item = K>,
    ) -> Entries<'a, Self> {
        Entries::new(self, keys)
    }
}

/// The async face's loaders.
impl<E: AsyncCacheEngine, C: Codec, L> Entry<'_, AsyncTypedCache<E, C>, L> {
    /// The cached value, or `load()`'s, stored and returned.
    ///
    /// # Errors
    ///
    /// The cache's errors (reading, encoding, storing).
    pub async fn or_load<T, F, Fut>(self, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let loaded = self
            .or_try_load(|| async { Ok::<T, std::convert::Infallible>(load().await) })
            .await;
        loaded.map_err(LoadError::into_cache_error)
    }

    /// The cached value, or `load()`'s if it succeeds, stored and returned.
    ///
    /// # Errors
    ///
    /// [`LoadError::Loader`] with the loader's error (shared with every caller that waited for
    /// it, and not cached), [`LoadError::Cache`] with the cache's.
    pub async fn or_try_load<T, Er, F, Fut>(self, load: F) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Er>>,
    {
        let key = self.key;
        let loaded = self
            .cache
            .load_through(
                key,
                &self.options,
                false,
                || async { load().await.map(Some) },
                false,
            )
            .await?;
        loaded.ok_or_else(|| LoadError::Cache(crate::core::TypedCore::<C>::unreadable_load(key)))
    }

    /// The cached value or absence, or `load()`'s: a `None` is cached as an absence when a
    /// [`negative_ttl`](Entry::negative_ttl) is set.
    ///
    /// # Errors
    ///
    /// As [`or_load`](Self::or_load).
    pub async fn or_load_optional<T, F, Fut>(self, load: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let loaded = self
            .or_try_load_optional(|| async { Ok::<_, std::convert::Infallible>(load().await) })
            .await;
        loaded.map_err(LoadError::into_cache_error)
    }

    /// [`or_load_optional`](Self::or_load_optional) with a fallible loader.
    ///
    /// # Errors
    ///
    /// As [`or_try_load`](Self::or_try_load).
    pub async fn or_try_load_optional<T, Er, F, Fut>(
        self,
        load: F,
    ) -> Result<Option<T>, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, Er>>,
    {
        self.cache
            .load_through(self.key, &self.options, true, load, false)
            .await
    }
}

/// The blocking face's loaders: the async ones, run on the caller's thread.
impl<E: CacheEngine, C: Codec, L> Entry<'_, TypedCache<E, C>, L> {
    /// The cached value, or `load()`'s, stored and returned.
    ///
    /// # Errors
    ///
    /// The cache's errors (reading, encoding, storing).
    pub fn or_load<T, F>(self, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        F: FnOnce() -> T,
    {
        self.or_try_load(|| Ok::<T, std::convert::Infallible>(load()))
            .map_err(LoadError::into_cache_error)
    }

    /// The cached value, or `load()`'s if it succeeds, stored and returned.
    ///
    /// # Errors
    ///
    /// [`LoadError::Loader`] with the loader's error (shared with every caller that waited for
    /// it, and not cached), [`LoadError::Cache`] with the cache's.
    pub fn or_try_load<T, Er, F>(self, load: F) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<T, Er>,
    {
        self.cache.load_value(self.key, &self.options, load)
    }

    /// The cached value or absence, or `load()`'s: a `None` is cached as an absence when a
    /// [`negative_ttl`](Entry::negative_ttl) is set.
    ///
    /// # Errors
    ///
    /// As [`or_load`](Self::or_load).
    pub fn or_load_optional<T, F>(self, load: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        F: FnOnce() -> Option<T>,
    {
        self.or_try_load_optional(|| Ok::<_, std::convert::Infallible>(load()))
            .map_err(LoadError::into_cache_error)
    }

    /// [`or_load_optional`](Self::or_load_optional) with a fallible loader.
    ///
    /// # Errors
    ///
    /// As [`or_try_load`](Self::or_try_load).
    pub fn or_try_load_optional<T, Er, F>(self, load: F) -> Result<Option<T>, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<Option<T>, Er>,
    {
        self.cache.load_here(self.key, &self.options, true, load)
    }
}

/// The async face's refreshing loaders.
impl<E: AsyncCacheEngine + 'static, C: Codec> RefreshingEntry<'_, AsyncTypedCache<E, C>> {
    /// As [`AsyncTypedCache::get_or_refresh_with`].
    ///
    /// # Errors
    ///
    /// As [`AsyncTypedCache::get_or_refresh_with`]; `InvalidConfig` when the entry also set
    /// tags or a negative TTL.
    pub async fn or_load<T, F, Fut>(self, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.check()?;
        self.cache
            .get_or_refresh_with(self.key, self.refresh, load)
            .await
    }

    /// As [`AsyncTypedCache::try_get_or_refresh_with`].
    ///
    /// # Errors
    ///
    /// As [`AsyncTypedCache::try_get_or_refresh_with`]; `InvalidConfig` as
    /// [`or_load`](Self::or_load).
    pub async fn or_try_load<T, Er, F, Fut>(self, load: F) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Er>> + Send + 'static,
    {
        self.check()?;
        self.cache
            .try_get_or_refresh_with(self.key, self.refresh, load)
            .await
    }
}

/// The blocking face's refreshing loaders.
impl<E: CacheEngine + 'static, C: Codec> RefreshingEntry<'_, TypedCache<E, C>> {
    /// As [`TypedCache::get_or_refresh_with`].
    ///
    /// # Errors
    ///
    /// As [`TypedCache::get_or_refresh_with`]; `InvalidConfig` when the entry also set tags or
    /// a negative TTL.
    pub fn or_load<T, F>(self, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.check()?;
        self.cache.get_or_refresh_with(self.key, self.refresh, load)
    }

    /// As [`TypedCache::try_get_or_refresh_with`].
    ///
    /// # Errors
    ///
    /// As [`TypedCache::try_get_or_refresh_with`]; `InvalidConfig` as
    /// [`or_load`](Self::or_load).
    pub fn or_try_load<T, Er, F>(self, load: F) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<T, Er> + Send + 'static,
    {
        self.check()?;
        self.cache
            .try_get_or_refresh_with(self.key, self.refresh, load)
    }
}

impl<Cache> RefreshingEntry<'_, Cache> {
    fn check(&self) -> Result<()> {
        match self.conflict {
            Some(setter) => Err(cache_core::CacheError::invalid_config(format!(
                "an entry refreshed ahead of expiry takes no `{setter}` (key {})",
                cache_core::KeyDisplay::new(self.key)
            ))),
            None => Ok(()),
        }
    }
}

/// The async face's batch loaders.
impl<E: AsyncCacheEngine, C: Codec, L> Entries<'_, AsyncTypedCache<E, C>, L> {
    /// The cached values of the keys, and for the missing ones what one call of `load` with
    /// all of them returns, stored (see [`Entries`]).
    ///
    /// # Errors
    ///
    /// The cache's errors; `InvalidConfig` on a cache with a lease.
    pub async fn or_load_many<T, F, Fut, I>(self, mut load: F) -> Result<HashMap<String, T>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = I>,
        I: IntoIterator<Item = (String, T)>,
    {
        let loaded = self
            .or_try_load_many(|keys| {
                let fut = load(keys);
                async move { Ok::<I, std::convert::Infallible>(fut.await) }
            })
            .await;
        loaded.map_err(LoadError::into_cache_error)
    }

    /// [`or_load_many`](Self::or_load_many) with a fallible loader: its error is returned to
    /// this caller and to every caller waiting for one of its keys, and nothing it was asked
    /// for is cached.
    ///
    /// `load` is called once with every key no one else is loading; it is called again only
    /// for keys another caller was loading and gave up on (its future dropped), or loaded as
    /// another type.
    ///
    /// # Errors
    ///
    /// [`LoadError::Loader`] with the loader's error, [`LoadError::Cache`] with the cache's.
    pub async fn or_try_load_many<T, Er, F, Fut, I>(
        self,
        load: F,
    ) -> Result<HashMap<String, T>, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<I, Er>>,
        I: IntoIterator<Item = (String, T)>,
    {
        self.cache.load_many(self.keys, &self.options, load).await
    }
}

/// The blocking face's batch loaders.
impl<E: CacheEngine, C: Codec, L> Entries<'_, TypedCache<E, C>, L> {
    /// The cached values of the keys, and for the missing ones what one call of `load` with
    /// all of them returns, stored (see [`Entries`]).
    ///
    /// # Errors
    ///
    /// The cache's errors; `InvalidConfig` on a cache with a lease.
    pub fn or_load_many<T, F, I>(self, mut load: F) -> Result<HashMap<String, T>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        F: FnMut(Vec<String>) -> I,
        I: IntoIterator<Item = (String, T)>,
    {
        self.or_try_load_many(|keys| Ok::<I, std::convert::Infallible>(load(keys)))
            .map_err(LoadError::into_cache_error)
    }

    /// [`or_load_many`](Self::or_load_many) with a fallible loader (see
    /// [`Entries::or_try_load_many`] on the async face).
    ///
    /// # Errors
    ///
    /// [`LoadError::Loader`] with the loader's error, [`LoadError::Cache`] with the cache's.
    pub fn or_try_load_many<T, Er, F, I>(
        self,
        mut load: F,
    ) -> Result<HashMap<String, T>, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnMut(Vec<String>) -> Result<I, Er>,
        I: IntoIterator<Item = (String, T)>,
    {
        let inner = self.cache.inner();
        block_on(inner.load_many(self.keys, &self.options, |keys| {
            std::future::ready(load(keys))
        }))
    }
}
