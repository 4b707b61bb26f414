//! [`AsyncTypedCache`]: serde values over any async engine.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use cache_core::tags::AsyncTagExt;
use cache_core::{Async, AsyncCacheEngine, Bytes, CacheError, Result, Ttl};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::blocking::{LoadError, Release, TypedCacheBuilder};
use crate::codec::{Bincode, Codec};
use crate::core::{CacheStats, Found, Tagging, TypedCore, bump};
use crate::entry::{Options, TtlFrom};
use crate::envelope;
use crate::face::{Face, Spawned};
use crate::fingerprint::Fingerprint;
use crate::flight::{Flights, LeaderGuard, Loaded, Role};
use crate::lease::{self, AfterAdd, Taken};
use crate::refresh::{self, Refresh};

/// The async face of [`TypedCache`](crate::TypedCache): serde values over any
/// [`AsyncCacheEngine`], with the same envelope, fingerprints, strict mode, fail-open,
/// statistics and errors, and an async, cancellation-safe single-flight
/// [`entry`](Self::entry) API.
///
/// It depends on no runtime: it works with every async engine on the executor that engine
/// needs (tokio for the remote engines).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use cache_core::Ttl;
/// use cache_local::InMemoryEngine;
/// use cache_serializer::AsyncTypedCache;
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct User { id: u64, name: String }
///
/// # async fn run() -> cache_core::Result<()> {
/// let cache = AsyncTypedCache::new(InMemoryEngine::new());
/// let user = cache
///     .entry("user:1")
///     .ttl(Ttl::Default)
///     .or_load(|| async {
///         User { id: 1, name: "Ada".into() } // an async query, say
///     })
///     .await?;
/// assert_eq!(cache.get::<User>("user:1").await?, Some(user));
/// # Ok(())
/// # }
/// ```
pub struct AsyncTypedCache<E, C = Bincode> {
    shared: Arc<Shared<E, C>>,
}

/// What a cache and its clones share. The blocking [`TypedCache`](crate::TypedCache) is this
/// same cache over its engine seen as an async one, with [`Face::Blocking`].
pub(crate) struct Shared<E, C> {
    pub(crate) engine: E,
    pub(crate) core: TypedCore<C>,
    flights: Flights,
    face: Face,
    /// Leases whose holder's future was dropped (async face): released by the next load that
    /// takes a lease, or left to expire.
    dropped_leases: Mutex<Vec<(String, Bytes)>>,
}

impl<E, C> Clone for AsyncTypedCache<E, C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<E: fmt::Debug, C: Codec> fmt::Debug for AsyncTypedCache<E, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncTypedCache")
            .field("engine", &self.shared.engine)
            .field("codec", &C::NAME)
            .field("strict", &self.shared.core.strict)
            .field("stats", &self.shared.core.stats())
            .finish()
    }
}

impl<E: AsyncCacheEngine, C: Codec> TypedCacheBuilder<E, C, Async> {
    /// As [`TypedCacheBuilder::lease`] on the blocking face: loads take a
    /// [`Lease`](crate::Lease) first, so one loader runs per missing key across processes.
    /// Waiting for another process's lease sleeps on the tokio timer, hence the `tokio`
    /// feature. A caller whose future is dropped while it holds a lease releases it from a
    /// task spawned on the current runtime (or, outside one, leaves it to expire).
    #[cfg(feature = "tokio")]
    pub fn lease(mut self, lease: crate::Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Builds the async cache, once the engine is known to serve every option.
    ///
    /// # Errors
    ///
    /// As the blocking face's [`build`](TypedCacheBuilder::build).
    pub fn build(self) -> Result<AsyncTypedCache<E, C>> {
        self.check(&self.engine.capabilities())?;
        let (engine, core) = self.into_parts();
        Ok(AsyncTypedCache::from_parts(engine, core, Face::Async))
    }
}

impl<E, C> AsyncTypedCache<E, C> {
    /// A cache over `engine` for `face`: how both faces are built.
    pub(crate) fn from_parts(engine: E, core: TypedCore<C>, face: Face) -> Self {
        Self {
            shared: Arc::new(Shared {
                engine,
                core,
                flights: Flights::default(),
                face,
                dropped_leases: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The state this cache shares with its clones.
    pub(crate) fn shared(&self) -> &Shared<E, C> {
        &self.shared
    }
}

impl<E: AsyncCacheEngine> AsyncTypedCache<E> {
    /// A typed cache over `engine` with bincode, lenient about mismatches.
    pub fn new(engine: E) -> Self {
        let (engine, core) = Self::builder(engine).into_parts();
        Self::from_parts(engine, core, Face::Async)
    }

    /// A builder to choose the codec, strict mode, fail-open and named schemas; the same
    /// builder as [`TypedCache::builder`](crate::TypedCache::builder)'s, whose `build` makes an
    /// `AsyncTypedCache`.
    pub fn builder(engine: E) -> TypedCacheBuilder<E, Bincode, Async> {
        TypedCacheBuilder::with_engine(engine)
    }
}

impl<E: AsyncCacheEngine, C: Codec> AsyncTypedCache<E, C> {
    /// The engine underneath.
    pub fn engine(&self) -> &E {
        &self.shared.engine
    }

    /// What this cache (and its clones) has done so far.
    pub fn stats(&self) -> CacheStats {
        self.shared.core.stats()
    }

    /// The fingerprint values of `T` are written with.
    ///
    /// # Errors
    ///
    /// As [`TypedCache::fingerprint`](crate::TypedCache::fingerprint).
    pub fn fingerprint<T: DeserializeOwned + 'static>(&self) -> Result<Fingerprint> {
        self.shared.core.fingerprint::<T>()
    }

    /// Encodes `value` with its envelope.
    ///
    /// # Errors
    ///
    /// As [`TypedCache::encode`](crate::TypedCache::encode).
    pub fn encode<T: Serialize + DeserializeOwned + 'static>(&self, value: &T) -> Result<Bytes> {
        self.shared.core.encode(value)
    }

    /// Reads the `T` under `key`.
    ///
    /// # Errors
    ///
    /// As [`TypedCache::get`](crate::TypedCache::get).
    pub async fn get<T: DeserializeOwned + 'static>(&self, key: &str) -> Result<Option<T>> {
        let core = &self.shared.core;
        let fingerprint = core.fingerprint::<T>()?;
        match core.fail_open(self.shared.engine.get(key).await, || None)? {
            Some(bytes) => match self.untag(key, bytes).await? {
                Some(bytes) => core.decode_with(key, &bytes, fingerprint),
                None => core.miss(),
            },
            None => core.miss(),
        }
    }

    /// As the blocking face's: the envelope inside `bytes`, once a tagged entry's tags are
    /// read and current.
    async fn untag(&self, key: &str, bytes: Bytes) -> Result<Option<Bytes>> {
        match self.shared.core.tagging(key, bytes)? {
            Tagging::Plain(bytes) => Ok(Some(bytes)),
            Tagging::Malformed => Ok(None),
            Tagging::Check(tagged) => self.untag_checked(tagged).await,
        }
    }

    /// A tagged entry's envelope, if every tag it carries is still at the version it recorded.
    pub(crate) async fn untag_checked(
        &self,
        tagged: cache_core::tags::Tagged,
    ) -> Result<Option<Bytes>> {
        let core = &self.shared.core;
        let keys = tagged.tag_keys();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let current = self.shared.engine.get_many(&refs).await;
        let current = core.fail_open(current, || vec![None; refs.len()])?;
        Ok(core.tags_checked(tagged, &current))
    }

    /// Stores `value` under `key` for `ttl`.
    ///
    /// # Errors
    ///
    /// As [`TypedCache::set`](crate::TypedCache::set).
    pub async fn set<T: Serialize + DeserializeOwned + 'static>(
        &self,
        key: &str,
        value: &T,
        ttl: Ttl,
    ) -> Result<()> {
        let core = &self.shared.core;
        let bytes = core.encode(value)?;
        core.stored(self.shared.engine.set(key, bytes, ttl).await, 1)
    }

    /// Removes `key`; `true` when something was removed.
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let result = self.shared.engine.delete(key).await;
        self.shared.core.write(result, || false)
    }

    /// Whether an entry is stored under `key`, whatever its type.
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        let result = self.shared.engine.exists(key).await;
        self.shared.core.fail_open(result, || false)
    }

    /// Removes every entry of the engine (see [`AsyncCacheEngine::clear`]).
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub async fn clear(&self) -> Result<()> {
        let result = self.shared.engine.clear().await;
        self.shared.core.write(result, || ())
    }

    /// Reads several `T`s, in the order of `keys`.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    pub async fn get_many<T: DeserializeOwned + 'static>(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<T>>> {
        let core = &self.shared.core;
        let fingerprint = core.fingerprint::<T>()?;
        let values = self.read_many(keys).await?;
        core.decode_all(keys, values, fingerprint)
    }

    /// The envelopes under `keys`, in order, once tagged entries' tags are checked: one bulk
    /// read, and one more for all the tags' versions if any entry is tagged.
    async fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let core = &self.shared.core;
        let result = self.shared.engine.get_many(keys).await;
        let found = core.fail_open(result, || vec![None; keys.len()])?;
        let bulk = core.bulk_tagging(keys, found)?;
        let current = if bulk.tag_keys.is_empty() {
            Vec::new()
        } else {
            let refs: Vec<&str> = bulk.tag_keys.iter().map(String::as_str).collect();
            let current = self.shared.engine.get_many(&refs).await;
            core.fail_open(current, || vec![None; refs.len()])?
        };
        Ok(core.bulk_checked(bulk, &current))
    }

    /// Stores several `T`s with one TTL.
    ///
    /// # Errors
    ///
    /// As [`set`](Self::set); every value is encoded before anything is written.
    pub async fn set_many<T: Serialize + DeserializeOwned + 'static>(
        &self,
        entries: &[(&str, T)],
        ttl: Ttl,
    ) -> Result<()> {
        let core = &self.shared.core;
        let encoded = core.encode_all(entries)?;
        let result = self.shared.engine.set_many(&encoded, ttl).await;
        core.stored(result, encoded.len() as u64)
    }

    /// Shorthand for `self.entry(key).ttl(ttl).or_load(load)`: see
    /// [`Entry::or_load`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_load`](crate::Entry).
    #[deprecated(note = "use the entry API: `cache.entry(key).ttl(ttl).or_load(load)`")]
    pub async fn get_or_set_with<T, F, Fut>(&self, key: &str, ttl: Ttl, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.entry(key).ttl(ttl).or_load(load).await
    }

    /// Shorthand for `self.entry(key).ttl(ttl).or_try_load(load)`: see
    /// [`Entry::or_try_load`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_try_load`](crate::Entry).
    #[deprecated(note = "use the entry API: `cache.entry(key).ttl(ttl).or_try_load(load)`")]
    pub async fn try_get_or_set_with<T, Er, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        load: F,
    ) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Er>>,
    {
        self.entry(key).ttl(ttl).or_try_load(load).await
    }

    /// Shorthand for `self.entry(key).ttl(ttl).negative_ttl(negative_ttl).or_load_optional(load)`:
    /// see [`Entry::or_load_optional`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_load_optional`](crate::Entry).
    #[deprecated(
        note = "use the entry API: `cache.entry(key).ttl(ttl).negative_ttl(negative_ttl).or_load_optional(load)`"
    )]
    pub async fn get_or_set_optional_with<T, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        negative_ttl: Ttl,
        load: F,
    ) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        self.entry(key)
            .ttl(ttl)
            .negative_ttl(negative_ttl)
            .or_load_optional(load)
            .await
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
    pub async fn try_get_or_set_optional_with<T, Er, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        negative_ttl: Ttl,
        load: F,
    ) -> Result<Option<T>, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, Er>>,
    {
        self.entry(key)
            .ttl(ttl)
            .negative_ttl(negative_ttl)
            .or_try_load_optional(load)
            .await
    }

    /// As [`TypedCache::set_tagged`](crate::TypedCache::set_tagged): stores `value` carrying
    /// `tags`.
    ///
    /// # Errors
    ///
    /// As [`TypedCache::set_tagged`](crate::TypedCache::set_tagged).
    pub async fn set_tagged<T: Serialize + DeserializeOwned + 'static>(
        &self,
        key: &str,
        value: &T,
        ttl: Ttl,
        tags: &[&str],
    ) -> Result<()> {
        let core = &self.shared.core;
        let bytes = core.encode(value)?;
        let versions = self.shared.engine.tag_versions(tags).await;
        let Some(versions) = core.write(versions.map(Some), || None)? else {
            return Ok(()); // fail-open: skipped, like any failed write
        };
        let result = self
            .shared
            .engine
            .set_with_versions(key, &bytes, ttl, &versions)
            .await;
        core.stored(result, 1)
    }

    /// Shorthand for `self.entry(key).ttl(ttl).tags(tags).or_load(load)`: see
    /// [`Entry::tags`](crate::Entry).
    ///
    /// # Errors
    ///
    /// As [`Entry::or_load`](crate::Entry).
    #[deprecated(note = "use the entry API: `cache.entry(key).ttl(ttl).tags(tags).or_load(load)`")]
    pub async fn get_or_set_tagged_with<T, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        tags: &[&str],
        load: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.entry(key).ttl(ttl).tags(tags).or_load(load).await
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
    pub async fn try_get_or_set_tagged_with<T, Er, F, Fut>(
        &self,
        key: &str,
        ttl: Ttl,
        tags: &[&str],
        load: F,
    ) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, Er>>,
    {
        self.entry(key).ttl(ttl).tags(tags).or_try_load(load).await
    }

    /// As [`TypedCache::invalidate_tag`](crate::TypedCache::invalidate_tag): one write, errors
    /// returned in fail-open mode too.
    ///
    /// # Errors
    ///
    /// The engine's errors; as [`set_tagged`](Self::set_tagged) for a bad tag.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        self.shared.engine.invalidate_tag(tag).await
    }

    /// What the cache holds under `key` for `T`s.
    async fn lookup<T: DeserializeOwned + 'static>(
        &self,
        key: &str,
        fingerprint: Fingerprint,
    ) -> Result<Found<T>> {
        let core = &self.shared.core;
        let bytes = match core.fail_open(self.shared.engine.get(key).await, || None)? {
            Some(bytes) => self.untag(key, bytes).await?,
            None => None,
        };
        core.found_or_miss(key, bytes, fingerprint)
    }

    /// Every single-key load: a value found is returned, a cached absence is `None` for
    /// optional loads; otherwise one caller per key loads, stores the value (or, with a
    /// negative TTL, the absence) and hands it to the callers waiting. `looked` skips the first
    /// read when the caller has just read the key.
    ///
    /// A hit is answered by a small future: the load's machinery (single-flight, leases, tags,
    /// the loader's own future) is boxed and only built on a miss. Without that, the blocking
    /// face's hits cost a quarter more (bench row 21: 0.88 of a plain `get` instead of 1.0).
    pub(crate) async fn load_through<T, Er, F, Fut, L>(
        &self,
        key: &str,
        options: &Options<'_, L>,
        optional: bool,
        load: F,
        looked: bool,
    ) -> Result<Option<T>, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, Er>>,
    {
        if !looked {
            let fingerprint = self.shared.core.fingerprint::<T>()?;
            if let Some(answer) = self.lookup::<T>(key, fingerprint).await?.answer(optional) {
                return Ok(answer);
            }
        }
        Box::pin(self.load_missing(key, options, optional, load)).await
    }

    /// [`load_through`](Self::load_through) once the key was read and missed.
    async fn load_missing<T, Er, F, Fut, L>(
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
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, Er>>,
    {
        let core = &self.shared.core;
        let fingerprint = core.fingerprint::<T>()?;
        let (tags, negative_ttl) = (options.tags, options.negative_ttl);
        let mut looked = true;
        let mut load = Some(load);
        loop {
            if !std::mem::take(&mut looked) {
                if let Some(answer) = self.lookup::<T>(key, fingerprint).await?.answer(optional) {
                    return Ok(answer);
                }
            }
            let role = self
                .shared
                .flights
                .join(key, || bump(&core.stats.coalesced_waits));
            let guard = match role {
                Role::Waiter(flight) => {
                    match flight.wait().await {
                        Some(Loaded::Value(bytes)) => {
                            let bytes = TypedCore::<C>::strip_tags(key, bytes);
                            let found = core.found(key, &bytes, fingerprint)?;
                            if let Some(answer) = found.answer(optional) {
                                return Ok(answer);
                            }
                            // The leader loaded another type under this key (or found nothing
                            // where we need a value): load our own.
                        }
                        Some(Loaded::LoaderError(error)) => {
                            if let Ok(error) = error.downcast::<Er>() {
                                return Err(LoadError::Loader(error));
                            }
                        }
                        // The leader went away (its future was dropped, or it panicked): try
                        // again, and one of the waiters leads.
                        None => {}
                    }
                    continue;
                }
                Role::Leader(guard) => guard,
            };
            // A leader that finished just before we joined may have stored the value.
            if let Some(answer) = self.lookup::<T>(key, fingerprint).await?.answer(optional) {
                return Ok(answer);
            }
            let Some(load) = load.take() else {
                return Err(LoadError::Cache(TypedCore::<C>::unreadable_load(key)));
            };
            // Across processes: one loader per key, if a lease is set. The guard releases it
            // however the load ends: a value, an error, a panic, a dropped future.
            let held = match &core.lease {
                Some(lease) => match self.take_lease(key, lease).await? {
                    Taken::Held {
                        key: lease_key,
                        token,
                    } => {
                        let held = HeldLease {
                            shared: &self.shared,
                            key: lease_key,
                            token,
                            released: false,
                        };
                        // Another process may have stored it just before we took it.
                        let found = self.lookup::<T>(key, fingerprint).await?;
                        if let Some(answer) = found.answer(optional) {
                            held.release().await;
                            return Ok(answer);
                        }
                        Some(held)
                    }
                    Taken::Found(bytes) => {
                        if let Some(answer) = core.found(key, &bytes, fingerprint)?.answer(optional)
                        {
                            guard.finish(Loaded::Value(bytes));
                            return Ok(answer);
                        }
                        None
                    }
                    Taken::Free => None,
                },
                None => None,
            };
            // Tag versions before the loader runs (see the blocking face).
            let stamp = self.stamp(tags).await?;
            let (tagged, store) = (|bytes| stamp.wrap(bytes), stamp.store);
            bump(&core.stats.loads);
            let started = std::time::Instant::now();
            let loaded = load().await;
            let took = started.elapsed();
            // `?` inside leaves the block, not the function: the lease is released below.
            let result: Result<Option<T>, LoadError<Er>> = async {
                match loaded {
                    Ok(Some(value)) => {
                        let bytes = tagged(core.encode_loaded(&value, Some(took))?);
                        let stored = if store {
                            let ttl = options.ttl.ttl_for(&value);
                            let result = self.shared.engine.set(key, bytes.clone(), ttl).await;
                            core.stored(result, 1)
                        } else {
                            Ok(())
                        };
                        guard.finish(Loaded::Value(bytes));
                        stored?;
                        Ok(Some(value))
                    }
                    Ok(None) => {
                        let bytes = tagged(core.absent(fingerprint));
                        let stored = match negative_ttl.filter(|_| store) {
                            Some(negative_ttl) => {
                                let result = self
                                    .shared
                                    .engine
                                    .set(key, bytes.clone(), negative_ttl)
                                    .await;
                                core.stored(result, 1)
                            }
                            None => Ok(()),
                        };
                        guard.finish(Loaded::Value(bytes));
                        stored?;
                        Ok(None)
                    }
                    Err(error) => {
                        let error = Arc::new(error);
                        guard.finish(Loaded::LoaderError(error.clone()));
                        Err(LoadError::Loader(error))
                    }
                }
            }
            .await;
            if let Some(held) = held {
                held.release().await;
            }
            return result;
        }
    }

    /// Takes the lease of `key`, or waits for the process that holds it.
    async fn take_lease(&self, key: &str, lease: &crate::Lease) -> Result<Taken> {
        lease.check()?;
        self.release_dropped_leases().await;
        let core = &self.shared.core;
        let engine = &self.shared.engine;
        let lease_key = lease::lease_key(key, engine.capabilities().max_key_len);
        let token = lease::token();
        let mut waiting = lease::Waiting::new(lease);
        loop {
            let added = engine
                .add(&lease_key, token.clone(), Ttl::After(lease.hold()))
                .await;
            let report = |e| {
                let _ = core.fail_open(Err::<(), _>(e), || ());
            };
            let pause = match waiting.after_add(added, &core.stats, report)? {
                AfterAdd::Held => {
                    return Ok(Taken::Held {
                        key: lease_key,
                        token,
                    });
                }
                AfterAdd::Free => return Ok(Taken::Free),
                AfterAdd::Sleep(pause) => pause,
            };
            self.shared.face.sleep(pause).await;
            if let Ok(Some(bytes)) = engine.get(key).await {
                if let Some(bytes) = self.untag(key, bytes).await? {
                    return Ok(Taken::Found(bytes));
                }
            }
        }
    }

    /// The tag versions a load stamps its value with, read before the loader runs: an
    /// invalidation while it runs makes the value miss. When they cannot be read (fail-open),
    /// the value is handed to the waiters but not stored.
    async fn stamp(&self, tags: &[&str]) -> Result<Stamp> {
        let versions = match tags {
            [] => None,
            tags => {
                let versions = self.shared.engine.tag_versions(tags).await;
                self.shared.core.fail_open(versions.map(Some), || None)?
            }
        };
        Ok(Stamp {
            store: tags.is_empty() || versions.is_some(),
            versions,
        })
    }

    /// The batch loader behind [`Entries`](crate::Entries): one bulk read; the keys no one is
    /// loading are loaded by one call of `load`, written in one bulk write per TTL; the keys
    /// others are loading are awaited. Rounds repeat only for keys whose loader gave up (or
    /// loaded another type).
    pub(crate) async fn load_many<T, Er, F, Fut, I, L>(
        &self,
        keys: Vec<String>,
        options: &Options<'_, L>,
        mut load: F,
    ) -> Result<HashMap<String, T>, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<I, Er>>,
        I: IntoIterator<Item = (String, T)>,
    {
        let core = &self.shared.core;
        if core.lease.is_some() {
            return Err(LoadError::Cache(CacheError::invalid_config(
                "batch loads take no lease: a batch would hold many leases while it waits for \
                 others; load leased keys one by one (entry), or build this cache without a lease",
            )));
        }
        let fingerprint = core.fingerprint::<T>()?;
        let mut out = HashMap::with_capacity(keys.len());
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        let mut pending: Vec<String> = keys
            .into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect();
        while !pending.is_empty() {
            let missing = self.answer_many(pending, fingerprint, &mut out).await?;
            let mut led = Vec::new();
            let mut waited = Vec::new();
            for key in missing {
                match self
                    .shared
                    .flights
                    .join(&key, || bump(&core.stats.coalesced_waits))
                {
                    Role::Leader(guard) => led.push((key, guard)),
                    Role::Waiter(flight) => waited.push((key, flight)),
                }
            }
            // A leader that finished just before we joined may have stored some of ours: a
            // guard dropped here releases its waiters, who read the value.
            if !led.is_empty() {
                let (keys, mut guards): (Vec<String>, HashMap<String, _>) = (
                    led.iter().map(|(key, _)| key.clone()).collect(),
                    led.into_iter().collect(),
                );
                let still = self.answer_many(keys, fingerprint, &mut out).await?;
                led = still
                    .into_iter()
                    .filter_map(|key| guards.remove(&key).map(|guard| (key, guard)))
                    .collect();
            }
            if !led.is_empty() {
                self.load_led(led, options, fingerprint, &mut load, &mut out)
                    .await?;
            }
            // The keys others load: after ours are stored and released, so two batches that
            // each lead the other's keys never wait on each other.
            pending = Vec::new();
            for (key, flight) in waited {
                match flight.wait().await {
                    Some(Loaded::Value(bytes)) => {
                        let bytes = TypedCore::<C>::strip_tags(&key, bytes);
                        match core.found::<T>(&key, &bytes, fingerprint)?.answer(true) {
                            Some(Some(value)) => {
                                out.insert(key, value);
                            }
                            Some(None) => {}
                            None => pending.push(key),
                        }
                    }
                    Some(Loaded::LoaderError(error)) => match error.downcast::<Er>() {
                        Ok(error) => return Err(LoadError::Loader(error)),
                        Err(_) => pending.push(key),
                    },
                    None => pending.push(key),
                }
            }
        }
        Ok(out)
    }

    /// Reads `keys` in one bulk read: values go to `out`, cached absences are answered, and
    /// the keys left to load are returned.
    async fn answer_many<T: DeserializeOwned + 'static>(
        &self,
        keys: Vec<String>,
        fingerprint: Fingerprint,
        out: &mut HashMap<String, T>,
    ) -> Result<Vec<String>> {
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let values = self.read_many(&refs).await?;
        let found = self
            .shared
            .core
            .found_all::<T>(&refs, values, fingerprint)?;
        let mut missing = Vec::new();
        for (key, found) in keys.into_iter().zip(found) {
            match found.answer(true) {
                Some(Some(value)) => {
                    out.insert(key, value);
                }
                Some(None) => {}
                None => missing.push(key),
            }
        }
        Ok(missing)
    }

    /// Loads the keys this caller leads with one call of `load`, stores what it returned (and,
    /// with a negative TTL, the absence of the rest) in one bulk write per TTL, and hands it to
    /// the callers waiting.
    async fn load_led<T, Er, F, Fut, I, L>(
        &self,
        led: Vec<(String, LeaderGuard)>,
        options: &Options<'_, L>,
        fingerprint: Fingerprint,
        load: &mut F,
        out: &mut HashMap<String, T>,
    ) -> Result<(), LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + 'static,
        L: TtlFrom<T>,
        Er: Send + Sync + 'static,
        F: FnMut(Vec<String>) -> Fut,
        Fut: Future<Output = Result<I, Er>>,
        I: IntoIterator<Item = (String, T)>,
    {
        let core = &self.shared.core;
        let stamp = self.stamp(options.tags).await?;
        let (tagged, store) = (|bytes| stamp.wrap(bytes), stamp.store);
        bump(&core.stats.loads);
        let started = std::time::Instant::now();
        let loaded = load(led.iter().map(|(key, _)| key.clone()).collect()).await;
        let took = started.elapsed();
        let mut values: HashMap<String, T> = match loaded {
            Ok(pairs) => pairs.into_iter().collect(),
            Err(error) => {
                let error = Arc::new(error);
                for (_, guard) in led {
                    guard.finish(Loaded::LoaderError(error.clone()));
                }
                return Err(LoadError::Loader(error));
            }
        };
        let mut writes: Vec<(Ttl, Vec<(String, Bytes)>)> = Vec::new();
        let mut write = |ttl: Ttl, key: &str, bytes: &Bytes| {
            let entry = (key.to_owned(), bytes.clone());
            match writes.iter_mut().find(|(t, _)| *t == ttl) {
                Some((_, group)) => group.push(entry),
                None => writes.push((ttl, vec![entry])),
            }
        };
        let mut finished = Vec::with_capacity(led.len());
        for (key, guard) in led {
            match values.remove(&key) {
                Some(value) => {
                    let bytes = tagged(core.encode_loaded(&value, Some(took))?);
                    write(options.ttl.ttl_for(&value), &key, &bytes);
                    finished.push((guard, bytes));
                    out.insert(key, value);
                }
                None => {
                    let bytes = tagged(core.absent(fingerprint));
                    if let Some(ttl) = options.negative_ttl {
                        write(ttl, &key, &bytes);
                    }
                    finished.push((guard, bytes));
                }
            }
        }
        let mut stored = Ok(());
        if store {
            for (ttl, group) in writes {
                let entries: Vec<(&str, Bytes)> = group
                    .iter()
                    .map(|(key, bytes)| (key.as_str(), bytes.clone()))
                    .collect();
                let result = self.shared.engine.set_many(&entries, ttl).await;
                if let Err(error) = core.stored(result, entries.len() as u64) {
                    stored = Err(error);
                }
            }
        }
        for (guard, bytes) in finished {
            guard.finish(Loaded::Value(bytes));
        }
        Ok(stored?)
    }

    /// Releases the leases that callers of the async face held when their futures were
    /// dropped (see [`HeldLease`]).
    async fn release_dropped_leases(&self) {
        let dropped = std::mem::take(
            &mut *self
                .shared
                .dropped_leases
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for (key, token) in dropped {
            let _ = self.shared.engine.delete_if_equals(&key, &token).await;
        }
    }

    /// How many keys are being loaded right now (single-flight loads of the entry API).
    pub fn loads_in_flight(&self) -> usize {
        self.shared.flights.len()
    }
}

impl<E: AsyncCacheEngine + 'static, C: Codec> AsyncTypedCache<E, C> {
    /// Shorthand for `self.entry(key).refresh(refresh).or_load(load)`: see
    /// [`RefreshingEntry::or_load`](crate::RefreshingEntry).
    ///
    /// # Errors
    ///
    /// As [`RefreshingEntry::or_load`](crate::RefreshingEntry).
    #[deprecated(note = "use the entry API: `cache.entry(key).refresh(refresh).or_load(load)`")]
    pub async fn get_or_refresh_with<T, F, Fut>(
        &self,
        key: &str,
        refresh: Refresh,
        load: F,
    ) -> Result<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.entry(key).refresh(refresh).or_load(load).await
    }

    /// Shorthand for `self.entry(key).refresh(refresh).or_try_load(load)`: see
    /// [`RefreshingEntry::or_try_load`](crate::RefreshingEntry).
    ///
    /// # Errors
    ///
    /// As [`RefreshingEntry::or_try_load`](crate::RefreshingEntry).
    #[deprecated(note = "use the entry API: `cache.entry(key).refresh(refresh).or_try_load(load)`")]
    pub async fn try_get_or_refresh_with<T, Er, F, Fut>(
        &self,
        key: &str,
        refresh: Refresh,
        load: F,
    ) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Er>> + Send + 'static,
    {
        self.entry(key).refresh(refresh).or_try_load(load).await
    }

    /// Returns the `T` under `key`, refreshing it ahead of its expiry: the implementation of
    /// [`RefreshingEntry::or_try_load`](crate::RefreshingEntry) on both faces.
    pub(crate) async fn refresh_through<T, Er, F, Fut>(
        &self,
        key: &str,
        refresh: Refresh,
        load: F,
    ) -> Result<T, LoadError<Er>>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Er>> + Send + 'static,
    {
        let core = &self.shared.core;
        let stored_ttl = refresh.stored_ttl()?;
        let fingerprint = core.fingerprint::<T>()?;
        let found = self.shared.engine.get_with_ttl(key).await;
        match core.fail_open(found, || None)? {
            Some((bytes, remaining)) => match self.untag(key, bytes).await? {
                Some(bytes) => {
                    if let Found::Value(value) = core.found::<T>(key, &bytes, fingerprint)? {
                        let judgement =
                            refresh.judge(remaining, envelope::load_time(&bytes), refresh::draw());
                        if core.serve(judgement) && core.refreshing.claim(key) {
                            core.refresh_started(judgement);
                            let (tx, rx) = tokio::sync::oneshot::channel();
                            let task = self.clone().refresh_now(key.to_owned(), stored_ttl, load);
                            let task = async move {
                                let _ = tx.send(task.await);
                            };
                            return Ok(match self.shared.face.spawn("cache-refresh", task) {
                                Spawned::Yes => value,
                                // Nothing to spawn on: refresh here, and return what it loaded.
                                Spawned::Nowhere(task) => {
                                    task.await;
                                    rx.await.ok().flatten().unwrap_or(value)
                                }
                                // No thread to be had: the value is served stale, and a later
                                // read tries again.
                                Spawned::Refused => {
                                    core.refreshing.release(key);
                                    bump(&core.stats.refresh_failures);
                                    value
                                }
                            });
                        }
                        return Ok(value);
                    }
                }
                None => {
                    core.miss::<()>()?;
                }
            },
            None => {
                core.miss::<()>()?;
            }
        }
        let loaded = self
            .load_through(
                key,
                &Options::fixed(stored_ttl),
                false,
                || async { load().await.map(Some) },
                true,
            )
            .await?;
        loaded.ok_or_else(|| LoadError::Cache(TypedCore::<C>::unreadable_load(key)))
    }

    /// Refreshes `key` (claimed by the caller): loads, stores for `stored_ttl`, releases the
    /// claim, also when dropped half-way. The value stored, if it was.
    async fn refresh_now<T, Er, F, Fut>(self, key: String, stored_ttl: Ttl, load: F) -> Option<T>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        Er: Send + Sync + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Er>> + Send + 'static,
    {
        let core = &self.shared.core;
        let _release = Release(&core.refreshing, &key);
        let started = std::time::Instant::now();
        let loaded = load().await;
        let stored = match loaded {
            Ok(value) => match core.encode_loaded(&value, Some(started.elapsed())) {
                Ok(bytes) => {
                    let result = self.shared.engine.set(&key, bytes, stored_ttl).await;
                    core.stored(result, 1).ok().map(|()| value)
                }
                Err(_) => None,
            },
            Err(_) => None,
        };
        if stored.is_none() {
            bump(&core.stats.refresh_failures);
        }
        stored
    }

    /// How many keys are being refreshed in the background right now.
    pub fn refreshes_in_flight(&self) -> usize {
        self.shared.core.refreshing.len()
    }
}

/// A lease this caller holds: released with [`release`](Self::release) when the load ends, or
/// when dropped before: on the blocking face at once, on the caller's thread (a panicking
/// loader); on the async face (a dropped future, which cannot await) by the next load of this
/// cache that takes a lease, and otherwise when the lease expires.
struct HeldLease<'a, E: AsyncCacheEngine, C> {
    shared: &'a Shared<E, C>,
    key: String,
    token: Bytes,
    released: bool,
}

impl<E: AsyncCacheEngine, C> HeldLease<'_, E, C> {
    /// Releases the lease if this caller still holds it; a failure leaves it to expire.
    async fn release(mut self) {
        self.released = true;
        let _ = self
            .shared
            .engine
            .delete_if_equals(&self.key, &self.token)
            .await;
    }
}

impl<E: AsyncCacheEngine, C> Drop for HeldLease<'_, E, C> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let (key, token) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        match self.shared.face {
            // The blocking face's engine answers at the first poll.
            Face::Blocking => {
                let _ = cache_core::block_on(self.shared.engine.delete_if_equals(&key, &token));
            }
            Face::Async => self
                .shared
                .dropped_leases
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push((key, token)),
        }
    }
}

/// What [`AsyncTypedCache::stamp`] read: the versions to wrap a loaded value in, and whether
/// to store it.
struct Stamp {
    versions: Option<cache_core::tags::TagVersions>,
    store: bool,
}

impl Stamp {
    fn wrap(&self, bytes: Bytes) -> Bytes {
        match &self.versions {
            Some(versions) => versions.wrap(&bytes),
            None => bytes,
        }
    }
}
