//! [`TypedCache`]: serde values over any engine.

//!
//! `TypedCache` is a thin blocking shell: every method runs the one implementation, in
//! [`AsyncTypedCache`], with [`block_on`] over the blocking engine seen as an async one
//! (`Blocked`). The engine's futures are ready at their first poll, so a call costs what the
//! blocking engine costs; waits (leases) sleep the caller's thread and background refreshes get
//! threads of their own (see `face.rs`).

use std::any::TypeId;
use std::fmt;
use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::sync::Arc;

use cache_core::{
    AsyncCacheEngine, Blocking, Bytes, CacheEngine, CacheError, Capabilities, Remaining, Result,
    Ttl, block_on,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use cache_layers::FailOpen;

use crate::AsyncTypedCache;
use crate::codec::{Bincode, Codec};
pub use crate::core::{CacheStats, FailureHook};
use crate::core::{Counters, Found, Tagging, TypedCore};
use crate::entry::{Options, TtlFrom};
use crate::face::Face;
use crate::fingerprint::{Fingerprint, TypeMap};
use crate::refresh::Refresh;

/// Stores serde values as bytes in any [`CacheEngine`], and knows when bytes under a key were
/// written for another type.
///
/// Every value is written with a small envelope: a format version, the codec and a
/// [fingerprint](crate::fingerprint) of the type's serde shape. Reading a value written for
/// another shape (another type, a field added, removed, reordered or retyped) is a miss, never a
/// wrongly decoded value; in [strict](TypedCacheBuilder::strict) mode it is
/// [`CacheError::SchemaMismatch`]. The entry is left alone, so during a rolling deploy old and new
/// builds do not delete each other's entries; the next `set` replaces it. Bytes that this library
/// did not write, or that are corrupted, are a miss (counted in
/// [`decode_failures`](CacheStats::decode_failures)), or [`CacheError::Serialization`] in strict
/// mode.
///
/// Clones share the engine, the statistics and the single-flight state.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use cache_core::Ttl;
/// use cache_local::InMemoryEngine;
/// use cache_serializer::TypedCache;
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct User { id: u64, name: String }
///
/// # fn main() -> cache_core::Result<()> {
/// let cache = TypedCache::new(InMemoryEngine::new());
/// cache.set("user:1", &User { id: 1, name: "Ada".into() }, Ttl::Default)?;
/// let user: Option<User> = cache.get("user:1")?;
/// assert_eq!(user.map(|u| u.name).as_deref(), Some("Ada"));
///
/// // Read as another type: a miss, not garbage.
/// assert_eq!(cache.get::<(u64, u64)>("user:1")?, None);
/// # Ok(())
/// # }
/// ```
pub struct TypedCache<E, C = Bincode> {
    inner: AsyncTypedCache<Blocked<E>, C>,
}

impl<E, C> Clone for TypedCache<E, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<E: fmt::Debug, C: Codec> fmt::Debug for TypedCache<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.inner.shared();
        f.debug_struct("TypedCache")
            .field("engine", &shared.engine.0)
            .field("codec", &C::NAME)
            .field("strict", &shared.core.strict)
            .field("stats", &shared.core.stats())
            .finish()
    }
}

/// The error of the fallible loaders ([`Entry::or_try_load`](crate::Entry)): the cache's, or the
/// loader's (shared with every caller that waited for it, hence the `Arc`).
#[derive(Debug)]
pub enum LoadError<E> {
    /// Reading, encoding or storing failed.
    Cache(CacheError),
    /// The loader failed; nothing was cached.
    Loader(Arc<E>),
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cache(e) => fmt::Display::fmt(e, f),
            Self::Loader(e) => write!(f, "loader failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Cache(e) => Some(e),
            Self::Loader(e) => Some(&**e),
        }
    }
}

impl LoadError<std::convert::Infallible> {
    /// The cache's error: a loader that cannot fail left no other.
    pub(crate) fn into_cache_error(self) -> CacheError {
        match self {
            Self::Cache(e) => e,
            Self::Loader(never) => match *never {},
        }
    }
}

impl<E> From<CacheError> for LoadError<E> {
    fn from(e: CacheError) -> Self {
        Self::Cache(e)
    }
}

/// Builds a [`TypedCache`] (or, from `AsyncTypedCache::builder`, an
/// [`AsyncTypedCache`](crate::AsyncTypedCache)) with another codec, strict mode, fail-open or named
/// schemas.
#[must_use]
pub struct TypedCacheBuilder<E, C = Bincode, Face = Blocking> {
    pub(crate) engine: E,
    codec: C,
    strict: bool,
    fail_open: bool,
    on_failure: Option<FailureHook>,
    schemas: TypeMap<Fingerprint>,
    compress_above: Option<usize>,
    max_inflated: usize,
    max_bytes_per_call: usize,
    max_refreshes: usize,
    pub(crate) lease: Option<crate::Lease>,
    face: PhantomData<fn() -> Face>,
}

impl<E: fmt::Debug, C: Codec, Face> fmt::Debug for TypedCacheBuilder<E, C, Face> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedCacheBuilder")
            .field("engine", &self.engine)
            .field("codec", &C::NAME)
            .field("strict", &self.strict)
            .field("named_schemas", &self.schemas.len())
            .finish()
    }
}

impl<E, Face> TypedCacheBuilder<E, Bincode, Face> {
    /// A builder over `engine` with every default: bincode, lenient, fail closed.
    pub(crate) fn with_engine(engine: E) -> Self {
        Self {
            engine,
            codec: Bincode,
            strict: false,
            fail_open: false,
            on_failure: None,
            schemas: TypeMap::default(),
            compress_above: None,
            max_inflated: crate::core::DEFAULT_MAX_INFLATED,
            max_bytes_per_call: crate::core::DEFAULT_MAX_BYTES_PER_CALL,
            max_refreshes: crate::refresh::DEFAULT_MAX_BACKGROUND_REFRESHES,
            lease: None,
            face: PhantomData,
        }
    }
}

impl<E, C: Codec, Face> TypedCacheBuilder<E, C, Face> {
    /// Uses `codec` instead of bincode.
    pub fn codec<C2: Codec>(self, codec: C2) -> TypedCacheBuilder<E, C2, Face> {
        TypedCacheBuilder {
            engine: self.engine,
            codec,
            strict: self.strict,
            fail_open: self.fail_open,
            on_failure: self.on_failure,
            schemas: self.schemas,
            compress_above: self.compress_above,
            max_inflated: self.max_inflated,
            max_bytes_per_call: self.max_bytes_per_call,
            max_refreshes: self.max_refreshes,
            lease: self.lease,
            face: PhantomData,
        }
    }

    /// In strict mode, a value of another schema is [`CacheError::SchemaMismatch`] and
    /// undecodable bytes are [`CacheError::Serialization`], instead of misses. Default: off.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Fail open: when the backend fails ([`CacheError::is_backend_failure`]), reads return
    /// misses and writes are skipped, counted in [`CacheStats::failed_open_reads`] and
    /// [`CacheStats::failed_open_writes`], so a dead cache slows a service down instead of
    /// taking it down. Mistakes in the call itself (`InvalidKey`, `InvalidTtl`, `ValueTooLarge`,
    /// schema errors) are still returned. This is `cache-layers`' [`FailOpen`] layer, applied to
    /// every engine call of the typed cache; any engine can have it without the typed layer.
    ///
    /// Default: off (fail closed), so errors are never hidden unless asked for.
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// Calls `hook` with every backend failure, in both modes: for logs and metrics.
    pub fn on_backend_error(mut self, hook: impl Fn(&CacheError) + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(hook));
        self
    }

    /// Names the schema of `T` by hand, for types whose shape cannot be traced (`uuid::Uuid`,
    /// untagged enums, `serde_json::Value`): values of `T` are then fingerprinted by this name.
    ///
    /// Choose a name no other type under the same keys uses (`"uuid/1"`) and change it whenever
    /// `T`'s encoding changes: the library cannot see such changes for a named schema.
    pub fn schema<T: 'static>(mut self, name: &str) -> Self {
        self.schemas
            .insert(TypeId::of::<T>(), Fingerprint::named(name));
        self
    }

    /// Stores values whose encoding takes at least `bytes` bytes LZ4-compressed (values that
    /// do not shrink stay plain). Default: never. Readers need no setting: a compressed value
    /// says so in its envelope, and any typed cache of this version reads it; older versions
    /// read it as a miss (an envelope format they do not know).
    ///
    /// On JSON-like records LZ4 stored 1 KiB in 0.68 of its size and 64 KiB in 0.42, at
    /// about 1 us and 80 us to compress and 0.2 us and 15 us to inflate (docs/BENCHMARKS.md,
    /// row 18): worth it for values of a few KiB and up, or when memory or bandwidth is what
    /// runs out.
    ///
    /// ```
    /// use cache_local::InMemoryEngine;
    /// use cache_serializer::TypedCache;
    ///
    /// let cache = TypedCache::builder(InMemoryEngine::new())
    ///     .compress_above(4096)
    ///     .build()?;
    /// # drop(cache);
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = Some(bytes);
        self
    }

    /// The most bytes a compressed value may inflate to when read (64 MiB by default): a value
    /// claiming more is refused before anything is allocated, as a miss (or
    /// [`CacheError::Serialization`] in strict mode), as are values whose claim LZ4 could not
    /// produce from their size.
    pub fn max_inflated_size(mut self, bytes: usize) -> Self {
        self.max_inflated = bytes;
        self
    }

    /// The most bytes of values one bulk read (`get_many`) decodes, counted once inflated
    /// (256 MiB by default). Values past it are misses (or [`CacheError::Serialization`] in
    /// strict mode), counted in [`CacheStats::over_budget`]: hostile bytes under many keys
    /// cannot make one call hold more than this.
    pub fn max_bytes_per_call(mut self, bytes: usize) -> Self {
        self.max_bytes_per_call = bytes;
        self
    }

    /// The most background refreshes ([`RefreshingEntry`](crate::RefreshingEntry)) that run at
    /// once (64 by default; at least 1). A stale value found while this many run is served without
    /// starting another; a later read starts it once one ends. On the blocking face each runs
    /// on a thread of its own, so this bounds the threads too.
    pub fn max_background_refreshes(mut self, refreshes: usize) -> Self {
        self.max_refreshes = refreshes.max(1);
        self
    }

    /// The parts both faces are built from.
    pub(crate) fn into_parts(self) -> (E, TypedCore<C>) {
        (
            self.engine,
            TypedCore {
                codec: self.codec,
                strict: self.strict,
                fail_open: fail_open_layer(self.fail_open, self.on_failure),
                schemas: self.schemas,
                stats: Counters::default(),
                compress_above: self.compress_above,
                max_inflated: self.max_inflated,
                max_bytes_per_call: self.max_bytes_per_call,
                refreshing: crate::refresh::Refreshing::new(self.max_refreshes),
                lease: self.lease,
            },
        )
    }
}

/// Fail-open is `cache-layers`' [`FailOpen`] layer, applied to every engine call.
fn fail_open_layer(open: bool, hook: Option<FailureHook>) -> FailOpen {
    let layer = if open {
        FailOpen::new()
    } else {
        FailOpen::closed()
    };
    match hook {
        Some(hook) => layer.on_backend_error(move |error| hook(error)),
        None => layer,
    }
}

impl<E: CacheEngine, C: Codec> TypedCacheBuilder<E, C, Blocking> {
    /// Loads take a [`Lease`](crate::Lease) first, so that one loader runs per missing key
    /// across every process sharing the engine (every loader of the entry API, and the loads of
    /// refreshing entries on a miss; background refreshes take none). Default: no lease
    /// (one loader per key and process).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_local::InMemoryEngine;
    /// use cache_serializer::{Lease, TypedCache};
    ///
    /// let cache = TypedCache::builder(InMemoryEngine::new())
    ///     .lease(Lease::new(Duration::from_secs(10)))
    ///     .build()?;
    /// # drop(cache);
    /// # Ok::<(), cache_core::CacheError>(())
    /// ```
    pub fn lease(mut self, lease: crate::Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Builds the cache, once the engine is known to serve every option.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`] for a lease with a zero hold or poll interval, or on an
    /// engine that does not offer what a lease needs (`add` to take it, `delete_if_equals` to
    /// release it; see [`Capabilities::operations`](cache_core::Capabilities::operations)).
    pub fn build(self) -> Result<TypedCache<E, C>> {
        self.check(&self.engine.capabilities())?;
        let (engine, core) = self.into_parts();
        Ok(TypedCache {
            inner: AsyncTypedCache::from_parts(Blocked(engine), core, Face::Blocking),
        })
    }
}

impl<E, C: Codec, Face> TypedCacheBuilder<E, C, Face> {
    /// Whether an engine with `caps` serves every option set: what both faces' `build` check.
    pub(crate) fn check(&self, caps: &cache_core::Capabilities) -> Result<()> {
        if let Some(lease) = &self.lease {
            lease.check()?;
            caps.require(cache_core::Operation::Add, "leases (taking one)")?;
            caps.require(
                cache_core::Operation::DeleteIfEquals,
                "leases (releasing one)",
            )?;
        }
        Ok(())
    }
}

impl<E: CacheEngine> TypedCache<E> {
    /// A typed cache over `engine` with bincode, lenient about mismatches. It has no option an
    /// engine could lack, so it cannot fail; [`builder`](Self::builder)'s `build` checks the
    /// options it is given.
    pub fn new(engine: E) -> Self {
        let (engine, core) = Self::builder(engine).into_parts();
        TypedCache {
            inner: AsyncTypedCache::from_parts(Blocked(engine), core, Face::Blocking),
        }
    }

    /// A builder to choose the codec, strict mode, fail-open and named schemas.
    pub fn builder(engine: E) -> TypedCacheBuilder<E> {
        TypedCacheBuilder::with_engine(engine)
    }
}

impl<E: CacheEngine, C: Codec> TypedCache<E, C> {
    /// The engine underneath.
    pub fn engine(&self) -> &E {
        &self.inner.engine().0
    }

    /// What this cache (and its clones) has done so far.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }

    /// The fingerprint values of `T` are written with.
    ///
    /// # Errors
    ///
    /// [`CacheError::UnknownSchema`] when `T`'s shape cannot be traced and no schema name was
    /// given for it.
    pub fn fingerprint<T: DeserializeOwned + 'static>(&self) -> Result<Fingerprint> {
        self.inner.fingerprint::<T>()
    }

    /// Encodes `value` with its envelope.
    ///
    /// # Errors
    ///
    /// `UnknownSchema`, or `Serialization` when the codec refuses the value.
    pub fn encode<T: Serialize + DeserializeOwned + 'static>(&self, value: &T) -> Result<Bytes> {
        self.inner.encode(value)
    }

    /// Decodes bytes read under `key` (the key is only used in messages): the value, or
    /// `Ok(None)` for a value of another schema or undecodable bytes (errors in strict mode).
    /// Counts the outcome in [`stats`](Self::stats).
    ///
    /// # Errors
    ///
    /// `UnknownSchema`; in strict mode `SchemaMismatch` and `Serialization`.
    pub fn decode<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        bytes: &[u8],
    ) -> Result<Option<T>> {
        let core = &self.inner.shared().core;
        core.decode_with(key, bytes, core.fingerprint::<T>()?)
    }

    /// Reads the `T` under `key`.
    ///
    /// # Errors
    ///
    /// The engine's errors; `UnknownSchema`; in strict mode `SchemaMismatch` and
    /// `Serialization`.
    pub fn get<T: DeserializeOwned + 'static>(&self, key: &str) -> Result<Option<T>> {
        let fingerprint = self.inner.fingerprint::<T>()?;
        match self.lookup_here::<T>(key, fingerprint)? {
            Found::Value(value) => Ok(Some(value)),
            Found::Absent | Found::Miss => Ok(None),
        }
    }

    /// Stores `value` under `key` for `ttl`.
    ///
    /// # Errors
    ///
    /// The engine's errors (`InvalidKey`, `InvalidTtl`, `ValueTooLarge`...), `UnknownSchema`,
    /// `Serialization`.
    pub fn set<T: Serialize + DeserializeOwned + 'static>(
        &self,
        key: &str,
        value: &T,
        ttl: Ttl,
    ) -> Result<()> {
        block_on(self.inner.set(key, value, ttl))
    }

    /// Removes `key`; `true` when something was removed.
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub fn delete(&self, key: &str) -> Result<bool> {
        block_on(self.inner.delete(key))
    }

    /// Whether an entry is stored under `key`, whatever its type.
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub fn exists(&self, key: &str) -> Result<bool> {
        block_on(self.inner.exists(key))
    }

    /// Removes every entry of the engine (see [`CacheEngine::clear`]).
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub fn clear(&self) -> Result<()> {
        block_on(self.inner.clear())
    }

    /// Reads several `T`s, in the order of `keys`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn get_many<T: DeserializeOwned + 'static>(&self, keys: &[&str]) -> Result<Vec<Option<T>>> {
        block_on(self.inner.get_many(keys))
    }

    /// Stores several `T`s with one TTL.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set); every value is encoded before anything is written.
    pub fn set_many<T: Serialize + DeserializeOwned + 'static>(
        &self,
        entries: &[(&str, T)],
        ttl: Ttl,
    ) -> Result<()> {
        block_on(self.inner.set_many(entries, ttl))
    }
}

impl<E: CacheEngine, C: Codec> TypedCache<E, C> {
    /// Shorthand for `self.entry(key).ttl(ttl).or_load(load)`: see
    /// [`Entry::or_load`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_load`](crate::Entry).
    #[deprecated(note = "use the entry API: `cache.entry(key).ttl(ttl).or_load(load)`")]
    pub fn get_or_set_with<T, F>(&self, key: &str, ttl: Ttl, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> T,
    {
        self.entry(key).ttl(ttl).or_load(load)
    }

    /// Shorthand for `self.entry(key).ttl(ttl).or_try_load(load)`: see
    /// [`Entry::or_try_load`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_try_load`](crate::Entry).
    #[deprecated(note = "use the entry API: `cache.entry(key).ttl(ttl).or_try_load(load)`")]
    pub fn try_get_or_set_with<T, Er, F>(
        &self,
        key: &str,
        ttl: Ttl,
        load: F,
    ) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<T, Er>,
    {
        self.entry(key).ttl(ttl).or_try_load(load)
    }

    /// Shorthand for
    /// `self.entry(key).ttl(ttl).negative_ttl(negative_ttl).or_load_optional(load)`: see
    /// [`Entry::or_load_optional`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_load_optional`](crate::Entry).
    #[deprecated(
        note = "use the entry API: `cache.entry(key).ttl(ttl).negative_ttl(negative_ttl).or_load_optional(load)`"
    )]
    pub fn get_or_set_optional_with<T, F>(
        &self,
        key: &str,
        ttl: Ttl,
        negative_ttl: Ttl,
        load: F,
    ) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Option<T>,
    {
        self.entry(key)
            .ttl(ttl)
            .negative_ttl(negative_ttl)
            .or_load_optional(load)
    }

    /// Shorthand for
    /// `self.entry(key).ttl(ttl).negative_ttl(negative_ttl).or_try_load_optional(load)`: see
    /// [`Entry::or_try_load_optional`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_try_load_optional`](crate::Entry).
    #[deprecated(
        note = "use the entry API: `cache.entry(key).ttl(ttl).negative_ttl(negative_ttl).or_try_load_optional(load)`"
    )]
    pub fn try_get_or_set_optional_with<T, Er, F>(
        &self,
        key: &str,
        ttl: Ttl,
        negative_ttl: Ttl,
        load: F,
    ) -> Result<Option<T>, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<Option<T>, Er>,
    {
        self.entry(key)
            .ttl(ttl)
            .negative_ttl(negative_ttl)
            .or_try_load_optional(load)
    }

    /// Stores `value` under `key` for `ttl`, carrying `tags`: after
    /// [`invalidate_tag`](Self::invalidate_tag) of any of them, every read of the key misses
    /// until it is written again. The tags' versions are read (and created, for new tags) in
    /// one bulk read before the write; reading a tagged entry costs one more bulk read of its
    /// tags' versions. See [`cache_core::tags`] for how tags work on every engine.
    ///
    /// ```
    /// use cache_core::Ttl;
    /// use cache_local::InMemoryEngine;
    /// use cache_serializer::TypedCache;
    ///
    /// # fn main() -> cache_core::Result<()> {
    /// let cache = TypedCache::new(InMemoryEngine::new());
    /// cache.set_tagged("order:1", &"two books".to_string(), Ttl::Default, &["user:7"])?;
    /// cache.set_tagged("order:2", &"a lamp".to_string(), Ttl::Default, &["user:7", "eu"])?;
    /// cache.set_tagged("order:3", &"a chair".to_string(), Ttl::Default, &["user:8"])?;
    ///
    /// cache.invalidate_tag("user:7")?; // one write, however many entries carry the tag
    /// assert_eq!(cache.get::<String>("order:1")?, None);
    /// assert_eq!(cache.get::<String>("order:2")?, None);
    /// assert_eq!(cache.get::<String>("order:3")?.as_deref(), Some("a chair"));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set); [`CacheError::InvalidConfig`] for more than
    /// [`MAX_TAGS`](cache_core::tags::MAX_TAGS) tags or an empty or over-long tag; `InvalidKey`
    /// for a tag the key rule refuses.
    pub fn set_tagged<T: Serialize + DeserializeOwned + 'static>(
        &self,
        key: &str,
        value: &T,
        ttl: Ttl,
        tags: &[&str],
    ) -> Result<()> {
        block_on(self.inner.set_tagged(key, value, ttl, tags))
    }

    /// Shorthand for `self.entry(key).ttl(ttl).tags(tags).or_load(load)`: see
    /// [`Entry::tags`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_load`](crate::Entry).
    #[deprecated(note = "use the entry API: `cache.entry(key).ttl(ttl).tags(tags).or_load(load)`")]
    pub fn get_or_set_tagged_with<T, F>(
        &self,
        key: &str,
        ttl: Ttl,
        tags: &[&str],
        load: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> T,
    {
        self.entry(key).ttl(ttl).tags(tags).or_load(load)
    }

    /// Shorthand for `self.entry(key).ttl(ttl).tags(tags).or_try_load(load)`: see
    /// [`Entry::tags`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_try_load`](crate::Entry).
    #[deprecated(
        note = "use the entry API: `cache.entry(key).ttl(ttl).tags(tags).or_try_load(load)`"
    )]
    pub fn try_get_or_set_tagged_with<T, Er, F>(
        &self,
        key: &str,
        ttl: Ttl,
        tags: &[&str],
        load: F,
    ) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<T, Er>,
    {
        self.entry(key).ttl(ttl).tags(tags).or_try_load(load)
    }

    /// Makes every entry carrying `tag` a miss, with one write (a new version of the tag),
    /// however many entries carry it.
    ///
    /// Its errors are returned in fail-open mode too: an invalidation skipped without a word
    /// would leave stale values in use.
    ///
    /// # Errors
    ///
    /// The engine's errors; as [`set_tagged`](Self::set_tagged) for a bad tag.
    pub fn invalidate_tag(&self, tag: &str) -> Result<()> {
        block_on(self.inner.invalidate_tag(tag))
    }

    /// How many keys are being loaded right now (single-flight loads of the entry API).
    pub fn loads_in_flight(&self) -> usize {
        self.inner.loads_in_flight()
    }
}

/// Refresh ahead: the engine is `'static` because a background refresh runs on a thread of its
/// own.
impl<E: CacheEngine + 'static, C: Codec> TypedCache<E, C> {
    /// Shorthand for `self.entry(key).refresh(refresh).or_load(load)`: see
    /// [`RefreshingEntry::or_load`](crate::RefreshingEntry).
    ///
    /// # Errors
    ///
    /// As [`RefreshingEntry::or_load`](crate::RefreshingEntry).
    #[deprecated(note = "use the entry API: `cache.entry(key).refresh(refresh).or_load(load)`")]
    pub fn get_or_refresh_with<T, F>(&self, key: &str, refresh: Refresh, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        self.entry(key).refresh(refresh).or_load(load)
    }

    /// Shorthand for `self.entry(key).refresh(refresh).or_try_load(load)`: see
    /// [`RefreshingEntry::or_try_load`](crate::RefreshingEntry).
    ///
    /// # Errors
    ///
    /// As [`RefreshingEntry::or_try_load`](crate::RefreshingEntry).
    #[deprecated(note = "use the entry API: `cache.entry(key).refresh(refresh).or_try_load(load)`")]
    pub fn try_get_or_refresh_with<T, Er, F>(
        &self,
        key: &str,
        refresh: Refresh,
        load: F,
    ) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<T, Er> + Send + 'static,
    {
        self.entry(key).refresh(refresh).or_try_load(load)
    }

    /// How many keys are being refreshed in the background right now.
    pub fn refreshes_in_flight(&self) -> usize {
        self.inner.refreshes_in_flight()
    }

    /// Refresh ahead on this face: the one implementation, run on the caller's thread (see
    /// [`RefreshingEntry::or_try_load`](crate::RefreshingEntry)).
    pub(crate) fn refresh_here<T, Er, F>(
        &self,
        key: &str,
        refresh: Refresh,
        load: F,
    ) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<T, Er> + Send + 'static,
    {
        block_on(self.inner.refresh_through(key, refresh, now(load)))
    }
}

impl<E, C> TypedCache<E, C> {
    /// The one implementation this cache runs, over its engine seen as an async one.
    pub(crate) fn inner(&self) -> &AsyncTypedCache<Blocked<E>, C> {
        &self.inner
    }
}

impl<E: CacheEngine, C: Codec> TypedCache<E, C> {
    /// What the cache holds under `key` for `T`s, read on the caller's thread: the hit path of
    /// `get` and of every load, kept out of the async implementation because running that one
    /// through `block_on` cost a hit 15 % (a plain `get`) to 30 % (a memoized call) more (bench
    /// row 21, one run against the previous release). Tagged entries, whose check reads
    /// more, and every miss go to the async implementation.
    fn lookup_here<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Result<Found<T>> {
        let shared = self.inner.shared();
        let core = &shared.core;
        let bytes = match core.fail_open(shared.engine.0.get(key), || None)? {
            Some(bytes) => match core.tagging(key, bytes)? {
                Tagging::Plain(bytes) => Some(bytes),
                Tagging::Malformed => None,
                Tagging::Check(tagged) => block_on(self.inner.untag_checked(tagged))?,
            },
            None => None,
        };
        core.found_or_miss(key, bytes, fingerprint)
    }

    /// Every blocking load: a hit read here, a miss loaded by the async implementation
    /// (single-flight, leases, tags), which does not read the key again.
    pub(crate) fn load_here<T, Er, F, L>(
        &self,
        key: &str,
        options: &Options<'_, L>,
        optional: bool,
        load: F,
    ) -> Result<Option<T>, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<Option<T>, Er>,
    {
        let fingerprint = self.inner.fingerprint::<T>()?;
        if let Some(answer) = self.lookup_here::<T>(key, fingerprint)?.answer(optional) {
            return Ok(answer);
        }
        block_on(
            self.inner
                .load_through(key, options, optional, now(load), true),
        )
    }

    /// [`load_here`](Self::load_here) for a loader that always finds a value.
    pub(crate) fn load_value<T, Er, F, L>(
        &self,
        key: &str,
        options: &Options<'_, L>,
        load: F,
    ) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Result<T, Er>,
    {
        self.load_here(key, options, false, || load().map(Some))?
            .ok_or_else(|| LoadError::Cache(TypedCore::<C>::unreadable_load(key)))
    }
}

/// A blocking loader as the async implementation takes it: a future that is ready when
/// created, the loader having run on the caller's thread.
pub(crate) fn now<R>(load: impl FnOnce() -> R) -> impl FnOnce() -> Ready<R> {
    move || ready(load())
}

/// Releases a key's background refresh when dropped, a panicking loader included.
pub(crate) struct Release<'a>(
    pub(crate) &'a crate::refresh::Refreshing,
    pub(crate) &'a str,
);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// `E`'s blocking operations as futures that are ready at their first poll: the blocking engine
/// seen as an async one, for the one implementation in [`AsyncTypedCache`]. Each future calls
/// the blocking operation when first polled, on the caller's thread: one poll, no allocation,
/// no runtime.
#[derive(Debug)]
pub(crate) struct Blocked<E>(pub(crate) E);

impl<E: CacheEngine> AsyncCacheEngine for Blocked<E> {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.0.get(key)
    }
    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.0.set(key, value, ttl)
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.0.delete(key)
    }
    async fn clear(&self) -> Result<()> {
        self.0.clear()
    }
    async fn close(&self) -> Result<()> {
        self.0.close()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.0.exists(key)
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.0.get_many(keys)
    }
    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        self.0.set_many(entries, ttl)
    }
    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.0.delete_many(keys)
    }
    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.0.add(key, value, ttl)
    }
    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        self.0.increment(key, delta)
    }
    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.0.touch(key, ttl)
    }
    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        self.0.delete_if_equals(key, expected)
    }
    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.0.remaining_ttl(key)
    }
    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        self.0.get_with_ttl(key)
    }
    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        self.0.get_many_with_ttl(keys)
    }
}
