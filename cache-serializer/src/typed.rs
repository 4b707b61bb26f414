//! [`TypedCache`]: serde values over any engine.

use std::any::TypeId;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cache_core::{Bytes, CacheEngine, CacheError, KeyDisplay, Result, Ttl};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Bincode, Codec};
use crate::envelope::{self, Refusal};
use crate::fingerprint::{Fingerprint, TypeMap, fingerprint_of};
use crate::flight::{Flights, Outcome, Role};

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
    shared: Arc<Shared<E, C>>,
}

/// Called with every backend failure (see [`TypedCacheBuilder::on_backend_error`]).
pub type FailureHook = Arc<dyn Fn(&CacheError) + Send + Sync>;

struct Shared<E, C> {
    engine: E,
    codec: C,
    strict: bool,
    fail_open: bool,
    on_failure: Option<FailureHook>,
    schemas: TypeMap<Fingerprint>,
    stats: Counters,
    flights: Flights,
}

impl<E, C> Clone for TypedCache<E, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<E: CacheEngine, C: Codec> fmt::Debug for TypedCache<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedCache")
            .field("engine", &self.shared.engine)
            .field("codec", &C::NAME)
            .field("strict", &self.shared.strict)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counts of what a [`TypedCache`] has done, from [`TypedCache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads that returned a value.
    pub hits: u64,
    /// Reads that returned nothing: absent keys, and (unless strict) values of another schema or
    /// undecodable bytes.
    pub misses: u64,
    /// Values written.
    pub sets: u64,
    /// Values found that were written for another schema, codec or envelope version.
    pub schema_mismatches: u64,
    /// Values found that could not be decoded: foreign, truncated or corrupted bytes.
    pub decode_failures: u64,
    /// Loader runs in `get_or_set_with` and `try_get_or_set_with`.
    pub loads: u64,
    /// Callers that waited for another caller's loader instead of running their own.
    pub coalesced_waits: u64,
    /// Reads whose backend failure became a miss (fail-open mode).
    pub failed_open_reads: u64,
    /// Writes whose backend failure was skipped (fail-open mode).
    pub failed_open_writes: u64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    sets: AtomicU64,
    schema_mismatches: AtomicU64,
    decode_failures: AtomicU64,
    loads: AtomicU64,
    coalesced_waits: AtomicU64,
    failed_open_reads: AtomicU64,
    failed_open_writes: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The error of [`TypedCache::try_get_or_set_with`]: the cache's, or the loader's (shared with
/// every caller that waited for it, hence the `Arc`).
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

impl<E> From<CacheError> for LoadError<E> {
    fn from(e: CacheError) -> Self {
        Self::Cache(e)
    }
}

/// Builds a [`TypedCache`] with another codec, strict mode or named schemas.
#[must_use]
pub struct TypedCacheBuilder<E, C = Bincode> {
    engine: E,
    codec: C,
    strict: bool,
    fail_open: bool,
    on_failure: Option<FailureHook>,
    schemas: TypeMap<Fingerprint>,
}

impl<E: fmt::Debug, C: Codec> fmt::Debug for TypedCacheBuilder<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedCacheBuilder")
            .field("engine", &self.engine)
            .field("codec", &C::NAME)
            .field("strict", &self.strict)
            .field("named_schemas", &self.schemas.len())
            .finish()
    }
}

impl<E: CacheEngine, C: Codec> TypedCacheBuilder<E, C> {
    /// Uses `codec` instead of bincode.
    pub fn codec<C2: Codec>(self, codec: C2) -> TypedCacheBuilder<E, C2> {
        TypedCacheBuilder {
            engine: self.engine,
            codec,
            strict: self.strict,
            fail_open: self.fail_open,
            on_failure: self.on_failure,
            schemas: self.schemas,
        }
    }

    /// In strict mode, a value of another schema is [`CacheError::SchemaMismatch`] and
    /// undecodable bytes are [`CacheError::Serialization`], instead of misses. Default: off.
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Fail open: when the backend fails (`Connection`, `Timeout`, `Closed`, `Authentication`,
    /// `PermissionDenied`, `Backend`), reads return misses and writes are skipped, counted in
    /// [`CacheStats::failed_open_reads`] and [`CacheStats::failed_open_writes`], so a dead cache
    /// slows a service down instead of taking it down. Mistakes in the call itself (`InvalidKey`,
    /// `InvalidTtl`, `ValueTooLarge`, schema errors) are still returned.
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

    /// Builds the cache.
    pub fn build(self) -> TypedCache<E, C> {
        TypedCache {
            shared: Arc::new(Shared {
                engine: self.engine,
                codec: self.codec,
                strict: self.strict,
                fail_open: self.fail_open,
                on_failure: self.on_failure,
                schemas: self.schemas,
                stats: Counters::default(),
                flights: Flights::default(),
            }),
        }
    }
}

impl<E: CacheEngine> TypedCache<E> {
    /// A typed cache over `engine` with bincode, lenient about mismatches.
    pub fn new(engine: E) -> Self {
        Self::builder(engine).build()
    }

    /// A builder to choose the codec, strict mode and named schemas.
    pub fn builder(engine: E) -> TypedCacheBuilder<E> {
        TypedCacheBuilder {
            engine,
            codec: Bincode,
            strict: false,
            fail_open: false,
            on_failure: None,
            schemas: TypeMap::default(),
        }
    }
}

impl<E: CacheEngine, C: Codec> TypedCache<E, C> {
    /// The engine underneath.
    pub fn engine(&self) -> &E {
        &self.shared.engine
    }

    /// What this cache (and its clones) has done so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            sets: load(&c.sets),
            schema_mismatches: load(&c.schema_mismatches),
            decode_failures: load(&c.decode_failures),
            loads: load(&c.loads),
            coalesced_waits: load(&c.coalesced_waits),
            failed_open_reads: load(&c.failed_open_reads),
            failed_open_writes: load(&c.failed_open_writes),
        }
    }

    /// The fingerprint values of `T` are written with.
    ///
    /// # Errors
    ///
    /// [`CacheError::UnknownSchema`] when `T`'s shape cannot be traced and no schema name was
    /// given for it.
    pub fn fingerprint<T: DeserializeOwned + 'static>(&self) -> Result<Fingerprint> {
        if !self.shared.schemas.is_empty() {
            if let Some(fp) = self.shared.schemas.get(&TypeId::of::<T>()) {
                return Ok(*fp);
            }
        }
        fingerprint_of::<T>().map_err(|reason| CacheError::UnknownSchema {
            type_name: std::any::type_name::<T>(),
            reason: format!(
                "{reason}; name its schema with TypedCacheBuilder::schema::<T>(\"name/1\")"
            ),
        })
    }

    /// Encodes `value` with its envelope.
    ///
    /// # Errors
    ///
    /// `UnknownSchema`, or `Serialization` when the codec refuses the value.
    pub fn encode<T: Serialize + DeserializeOwned + 'static>(&self, value: &T) -> Result<Bytes> {
        thread_local! {
            /// The size of this thread's last encoded value.
            static LAST_LEN: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        let fingerprint = self.fingerprint::<T>()?;
        // Values tend to keep their size: allocate what the last one took, so the buffer usually
        // ends exactly full and `Bytes::from` takes it as is. Growing a small buffer reallocated
        // several times for 1 KiB, and `Bytes::from(Vec)` allocates again whenever the capacity
        // exceeds the length.
        let hint = LAST_LEN
            .with(std::cell::Cell::get)
            .clamp(envelope::HEADER_LEN + 8, 1 << 20);
        let mut out = Vec::with_capacity(hint);
        envelope::write_header(&mut out, C::ID, fingerprint);
        let encoded = self.shared.codec.encode(value, &mut out);
        LAST_LEN.with(|last| last.set(out.len()));
        encoded.map_err(|e| {
            CacheError::serialization(
                format!(
                    "cannot encode a `{}` with {}",
                    std::any::type_name::<T>(),
                    C::NAME
                ),
                e,
            )
        })?;
        Ok(Bytes::from(out))
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
        let fingerprint = self.fingerprint::<T>()?;
        self.decode_with(key, bytes, fingerprint)
    }

    fn decode_with<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        bytes: &[u8],
        fingerprint: Fingerprint,
    ) -> Result<Option<T>> {
        let stats = &self.shared.stats;
        let failure = match envelope::open(bytes, C::ID, fingerprint) {
            Ok(payload) => match self.shared.codec.decode::<T>(payload) {
                Ok(value) => {
                    bump(&stats.hits);
                    return Ok(Some(value));
                }
                Err(e) => {
                    bump(&stats.decode_failures);
                    CacheError::serialization(
                        format!(
                            "cannot decode the value under key {} as a `{}`",
                            KeyDisplay::new(key),
                            std::any::type_name::<T>()
                        ),
                        e,
                    )
                }
            },
            Err(Refusal::Foreign) => {
                bump(&stats.decode_failures);
                CacheError::Serialization {
                    message: format!(
                        "the value under key {} was not written by cache-serializer (or was cut short)",
                        KeyDisplay::new(key)
                    ),
                    source: None,
                }
            }
            Err(Refusal::Mismatch { expected, found }) => {
                bump(&stats.schema_mismatches);
                CacheError::SchemaMismatch {
                    key: KeyDisplay::new(key),
                    expected,
                    found,
                }
            }
        };
        if self.shared.strict {
            Err(failure)
        } else {
            bump(&stats.misses);
            Ok(None)
        }
    }

    /// Reports a backend failure to the hook and, in fail-open mode, turns it into `fallback`.
    fn absorb<T>(
        &self,
        result: Result<T>,
        counter: &AtomicU64,
        fallback: impl FnOnce() -> T,
    ) -> Result<T> {
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        // The one classification of backend failures (cache-core's): a caller's mistake is
        // never absorbed.
        if error.is_backend_failure() {
            if let Some(hook) = &self.shared.on_failure {
                hook(&error);
            }
            if self.shared.fail_open {
                bump(counter);
                return Ok(fallback());
            }
        }
        Err(error)
    }

    fn read<T>(&self, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        self.absorb(result, &self.shared.stats.failed_open_reads, fallback)
    }

    fn write<T>(&self, result: Result<T>, fallback: impl FnOnce() -> T) -> Result<T> {
        self.absorb(result, &self.shared.stats.failed_open_writes, fallback)
    }

    /// Counts `count` values as stored when the write succeeded; a failed write is absorbed or
    /// returned like any other and counts nothing.
    fn stored(&self, result: Result<()>, count: u64) -> Result<()> {
        match result {
            Ok(()) => {
                self.shared.stats.sets.fetch_add(count, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => self.write(Err(e), || ()),
        }
    }

    /// Reads the `T` under `key`.
    ///
    /// # Errors
    ///
    /// The engine's errors; `UnknownSchema`; in strict mode `SchemaMismatch` and
    /// `Serialization`.
    pub fn get<T: DeserializeOwned + 'static>(&self, key: &str) -> Result<Option<T>> {
        let fingerprint = self.fingerprint::<T>()?;
        match self.read(self.shared.engine.get(key), || None)? {
            Some(bytes) => self.decode_with(key, &bytes, fingerprint),
            None => {
                bump(&self.shared.stats.misses);
                Ok(None)
            }
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
        let bytes = self.encode(value)?;
        self.stored(self.shared.engine.set(key, bytes, ttl), 1)?;
        Ok(())
    }

    /// Removes `key`; `true` when something was removed.
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub fn delete(&self, key: &str) -> Result<bool> {
        self.write(self.shared.engine.delete(key), || false)
    }

    /// Whether an entry is stored under `key`, whatever its type.
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub fn exists(&self, key: &str) -> Result<bool> {
        self.read(self.shared.engine.exists(key), || false)
    }

    /// Removes every entry of the engine (see [`CacheEngine::clear`]).
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub fn clear(&self) -> Result<()> {
        self.write(self.shared.engine.clear(), || ())
    }

    /// Reads several `T`s, in the order of `keys`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub fn get_many<T: DeserializeOwned + 'static>(&self, keys: &[&str]) -> Result<Vec<Option<T>>> {
        let fingerprint = self.fingerprint::<T>()?;
        let values = self.read(self.shared.engine.get_many(keys), || vec![None; keys.len()])?;
        keys.iter()
            .zip(values)
            .map(|(key, bytes)| match bytes {
                Some(bytes) => self.decode_with(key, &bytes, fingerprint),
                None => {
                    bump(&self.shared.stats.misses);
                    Ok(None)
                }
            })
            .collect()
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
        let encoded = entries
            .iter()
            .map(|(key, value)| Ok((*key, self.encode(value)?)))
            .collect::<Result<Vec<_>>>()?;
        self.stored(
            self.shared.engine.set_many(&encoded, ttl),
            encoded.len() as u64,
        )
    }

    /// Returns the `T` under `key`, or runs `load`, stores its value for `ttl` and returns it.
    ///
    /// Single-flight: when several threads (through this cache or its clones) ask for the same
    /// missing key at once, `load` runs in one of them and the others wait for its value. Other
    /// keys load at the same time. If the loader panics, the panic goes to its caller and the
    /// waiters try again (one of them loads).
    ///
    /// If storing the loaded value fails, this caller gets the error (the value is not cached)
    /// while the callers that waited get the value.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get) and [`set`](Self::set).
    pub fn get_or_set_with<T, F>(&self, key: &str, ttl: Ttl, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> T,
    {
        self.try_get_or_set_with(key, ttl, || Ok::<T, std::convert::Infallible>(load()))
            .map_err(|e| match e {
                LoadError::Cache(e) => e,
                LoadError::Loader(never) => match *never {},
            })
    }

    /// Like [`get_or_set_with`](Self::get_or_set_with) with a fallible loader. A loader error is
    /// returned to its caller and to every caller that waited for it, and is never cached.
    ///
    /// # Errors
    ///
    /// [`LoadError::Loader`] with the loader's error, [`LoadError::Cache`] with the cache's.
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
        let fingerprint = self.fingerprint::<T>()?;
        let mut load = Some(load);
        loop {
            if let Some(value) = self.get::<T>(key)? {
                return Ok(value);
            }
            let stats = &self.shared.stats;
            match self
                .shared
                .flights
                .join(key, || bump(&stats.coalesced_waits))
            {
                Role::Waiter(flight) => match flight.wait() {
                    Outcome::Value(bytes) => {
                        if let Some(value) = self.decode_with(key, &bytes, fingerprint)? {
                            return Ok(value);
                        }
                        // The leader loaded another type under this key: load our own.
                    }
                    Outcome::LoaderError(error) => {
                        if let Ok(error) = error.downcast::<Er>() {
                            return Err(LoadError::Loader(error));
                        }
                    }
                    Outcome::Abandoned => {}
                },
                Role::Leader(guard) => {
                    // A leader that finished just before we joined may have stored the value.
                    if let Some(value) = self.get::<T>(key)? {
                        return Ok(value);
                    }
                    let Some(load) = load.take() else {
                        // Our loader already ran and its value could not be read back: report
                        // rather than loop.
                        return Err(LoadError::Cache(CacheError::Serialization {
                            message: format!(
                                "the value loaded for key {} could not be read back",
                                KeyDisplay::new(key)
                            ),
                            source: None,
                        }));
                    };
                    bump(&stats.loads);
                    match load() {
                        Ok(value) => {
                            let bytes = self.encode(&value)?;
                            let stored =
                                self.stored(self.shared.engine.set(key, bytes.clone(), ttl), 1);
                            guard.finish(Outcome::Value(bytes));
                            stored?;
                            return Ok(value);
                        }
                        Err(error) => {
                            let error = Arc::new(error);
                            guard.finish(Outcome::LoaderError(error.clone()));
                            return Err(LoadError::Loader(error));
                        }
                    }
                }
            }
        }
    }

    /// How many keys are being loaded right now by `get_or_set_with`.
    pub fn loads_in_flight(&self) -> usize {
        self.shared.flights.len()
    }
}
