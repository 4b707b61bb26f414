//! The entry API: `cache.entry(key)` and `cache.entries(keys)`, configured with the TTL, tags,
//! negative caching or refresh, then loaded with `or_load` / `or_try_load` (one key) or
//! `or_load_many` / `or_try_load_many` (a batch: one loader call for every missing key).
//!
//! The builders are written once, generic over the cache they borrow; each face adds its
//! terminal methods (async ones on [`AsyncTypedCache`], blocking ones on [`TypedCache`]), and
//! both run the one implementation in `asynchronous.rs`.

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

impl Options<'_, FixedTtl> {
    /// `ttl` for every value, no tags, no negative caching.
    pub(crate) fn fixed(ttl: Ttl) -> Self {
        Options {
            ttl: FixedTtl(ttl),
            tags: &[],
            negative_ttl: None,
        }
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

/// An [`Entry`] refreshed ahead of its expiry: made by [`Entry::refresh`].
///
/// Its loaders return the value, refreshed ahead of its expiry as the entry's [`Refresh`]
/// says: a fresh value is returned as is; a stale one (in the last
/// [`stale_for`](Refresh::serve_stale_for) of its life) is returned at once while `load` runs
/// in the background and replaces it; a missing one is loaded by this caller, single-flight,
/// as an [`Entry`]'s loaders do, and stored for `fresh_for + stale_for`. With
/// [`Refresh::early`], hot keys are refreshed in the background shortly before they go stale,
/// by whichever read draws it.
///
/// One background refresh runs per key at a time in this process (other processes may each
/// run one: freshness is the engine's, the refreshing set is local), on a thread of its own
/// on the blocking face, and at most
/// [`max_background_refreshes`](crate::TypedCacheBuilder::max_background_refreshes) at
/// once; past that, stale values are served without a refresh until one ends. A background
/// loader that fails (or whose value cannot be stored) is counted in
/// `CacheStats::refresh_failures` and the stale value is served until it expires; backend
/// failures also reach [`on_backend_error`](crate::TypedCacheBuilder::on_backend_error).
///
/// `load` must be `Send + 'static`, since it may run on another thread; when the value is
/// fresh it is dropped without running.
///
/// On the async face, the background refresh is spawned on the tokio runtime the call runs
/// on, with this crate's `tokio` feature. Without the feature, or outside a tokio runtime, there is
/// nothing to spawn on: the caller that finds the value stale (or draws an early refresh)
/// runs the refresh itself and returns the new value (or, if the loader fails, the stale
/// one), while every other caller is served the stale value without waiting. Either way,
/// one refresh runs per key at a time in this process.
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

    /// The loaded value carries these tags: invalidating one of them makes it a miss (see
    /// [`TypedCache::set_tagged`]). The tags' versions are taken before the loader runs, so a
    /// tag invalidated while it runs (the data it read may predate the change) makes the value
    /// it stores miss at once.
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
    /// [`RefreshingEntry`]): the value is stored for the refresh's freshness
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
    /// Single-flight: when several tasks (through this cache or its clones) ask for the same
    /// missing key at once, one loader runs and the others wait for its value, without blocking
    /// a thread. Cancellation-safe: if the future of the caller whose loader runs is dropped (a
    /// timeout, a client that hung up), a waiting caller takes over with its own loader; waiters
    /// never hang, and never fail because one caller went away. If storing the loaded value
    /// fails, this caller gets the error (the value is not cached) while the callers that waited
    /// get the value.
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
    /// Single-flight: when several threads (through this cache or its clones) ask for the same
    /// missing key at once, `load` runs in one of them and the others wait for its value. Other
    /// keys load at the same time. If the loader panics, the panic goes to its caller and the
    /// waiters try again (one of them loads). If storing the loaded value fails, this caller
    /// gets the error (the value is not cached) while the callers that waited get the value.
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
    /// [`negative_ttl`](Entry::negative_ttl) is set (usually shorter than the TTL), so that a
    /// key that does not exist is not looked up again and again. While the absence lasts,
    /// reads of the key return `None` ([`TypedCache::get`] included, counted in
    /// `CacheStats::negative_hits`) without running the loader. Single-flight as
    /// [`or_load`](Self::or_load).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_core::Ttl;
    /// use cache_local::InMemoryEngine;
    /// use cache_serializer::TypedCache;
    ///
    /// # fn main() -> cache_core::Result<()> {
    /// let cache = TypedCache::new(InMemoryEngine::new());
    /// let find = |id: u64| (id == 1).then(|| "Ada".to_string()); // a database query, say
    /// let user = |id: u64| {
    ///     cache
    ///         .entry(&format!("user:{id}"))
    ///         .ttl(Ttl::After(Duration::from_secs(300)))
    ///         .negative_ttl(Ttl::After(Duration::from_secs(30)))
    ///         .or_load_optional(move || find(id))
    /// };
    /// assert_eq!(user(2)?, None);
    /// assert_eq!(user(2)?, None, "cached as absent: the loader did not run again");
    /// assert_eq!(cache.stats().negative_hits, 1);
    /// # Ok(())
    /// # }
    /// ```
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
    /// The value, refreshed ahead of its expiry in a task (the rules are on
    /// [`RefreshingEntry`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_local::InMemoryEngine;
    /// use cache_serializer::{AsyncTypedCache, Refresh};
    ///
    /// # async fn run() -> cache_core::Result<()> {
    /// let cache = AsyncTypedCache::new(InMemoryEngine::new());
    /// let refresh = Refresh::after(Duration::from_secs(60)).serve_stale_for(Duration::from_secs(30));
    /// let rate: f64 = cache
    ///     .entry("rate:eur")
    ///     .refresh(refresh)
    ///     .or_load(|| async { 1.08 })
    ///     .await?;
    /// assert_eq!(rate, 1.08);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The cache's errors; `InvalidConfig` for a `refresh` whose freshness is zero or whose
    /// `beta` is not finite and positive, or when the entry also set tags or a negative TTL.
    pub async fn or_load<T, F, Fut>(self, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.check()?;
        self.cache
            .refresh_through(self.key, self.refresh, move || async move {
                Ok::<T, std::convert::Infallible>(load().await)
            })
            .await
            .map_err(LoadError::into_cache_error)
    }

    /// [`or_load`](Self::or_load) with a fallible loader: when this caller loads (a miss), its
    /// error is returned to it and to every caller that waited; a background refresh's error
    /// is counted in `CacheStats::refresh_failures` and the stale value is kept. Errors are
    /// never cached.
    ///
    /// # Errors
    ///
    /// [`LoadError::Loader`] with the loader's error, [`LoadError::Cache`] with the cache's
    /// (`InvalidConfig` as [`or_load`](Self::or_load)).
    pub async fn or_try_load<T, Er, F, Fut>(self, load: F) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Er>> + Send + 'static,
    {
        self.check()?;
        self.cache
            .refresh_through(self.key, self.refresh, load)
            .await
    }
}

/// The blocking face's refreshing loaders.
impl<E: CacheEngine + 'static, C: Codec> RefreshingEntry<'_, TypedCache<E, C>> {
    /// The value, refreshed ahead of its expiry on a thread of its own (the rules are on
    /// [`RefreshingEntry`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_local::InMemoryEngine;
    /// use cache_serializer::{Refresh, TypedCache};
    ///
    /// # fn main() -> cache_core::Result<()> {
    /// let cache = TypedCache::new(InMemoryEngine::new());
    /// let refresh = Refresh::after(Duration::from_secs(60))
    ///     .serve_stale_for(Duration::from_secs(30))
    ///     .early(1.0);
    /// let rate: f64 = cache.entry("rate:eur").refresh(refresh).or_load(|| 1.08)?; // a slow call, say
    /// assert_eq!(rate, 1.08);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The cache's errors; `InvalidConfig` for a `refresh` whose freshness is zero or whose
    /// `beta` is not finite and positive, or when the entry also set tags or a negative TTL.
    pub fn or_load<T, F>(self, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.check()?;
        self.cache
            .refresh_here(self.key, self.refresh, move || {
                Ok::<T, std::convert::Infallible>(load())
            })
            .map_err(LoadError::into_cache_error)
    }

    /// [`or_load`](Self::or_load) with a fallible loader. When this caller loads (a miss), its
    /// error is returned to it and to every caller that waited; a background refresh's error
    /// is counted in `CacheStats::refresh_failures` and the stale value is kept. Errors are
    /// never cached.
    ///
    /// # Errors
    ///
    /// [`LoadError::Loader`] with the loader's error, [`LoadError::Cache`] with the cache's
    /// (`InvalidConfig` as [`or_load`](Self::or_load)).
    pub fn or_try_load<T, Er, F>(self, load: F) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<T, Er> + Send + 'static,
    {
        self.check()?;
        self.cache.refresh_here(self.key, self.refresh, load)
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
