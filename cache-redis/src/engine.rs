//! [`RedisEngine`]: one type for both faces, its constructors, and the engine traits, each
//! operation handed to the [`Core`] the faces share.

use std::fmt;
use std::sync::Arc;

#[cfg(feature = "tokio")]
use cache_core::AsyncCacheEngine;
use cache_core::{Bytes, CacheEngine, Capabilities, Remaining, Result, Ttl, block_on};
#[cfg(feature = "tokio")]
use cache_remote::Async;
use cache_remote::blocking::PoolState;
use cache_remote::{Blocking, Transport};

use crate::config::RedisEngineBuilder;
use crate::core::Core;

/// A cache engine on a Redis server, a Redis Cluster, or the master some sentinels name.
///
/// One type serves both faces: `RedisEngine` (that is, `RedisEngine<Blocking>`) implements
/// [`CacheEngine`] for blocking code, and [`AsyncRedisEngine`] (`RedisEngine<Async>`, with the
/// `tokio` feature) implements [`AsyncCacheEngine`](cache_core::AsyncCacheEngine) for async code
/// on tokio, with the same behaviour, errors and limits. Build the first with
/// [`RedisEngine::builder`], the second with [`RedisEngine::async_builder`]; both return the one
/// [`RedisEngineBuilder`].
///
/// The blocking face runs each operation on the calling thread over a bounded pool of
/// connections. The async face pipelines every caller's requests on one connection
/// ([`pipelines`](RedisEngineBuilder::pipelines) to use more), so many concurrent tasks share a
/// few sockets and the server answers them in batches. Dropping an async operation's future at
/// any point is safe: its request is still written whole and its reply read and discarded; no
/// other call ever receives it. An async operation awaited outside a tokio runtime fails with a
/// `Connection` error.
///
/// Cloning shares the connections; [`close`](CacheEngine::close) closes the engine for every
/// clone. See the [crate docs](crate) for URLs, defaults, deadlines and environment variables.
///
/// ```no_run
/// use std::time::Duration;
/// use cache_core::{AsyncCacheEngine, Bytes, Ttl};
/// use cache_redis::RedisEngine;
///
/// # async fn run() -> cache_core::Result<()> {
/// let cache = RedisEngine::async_builder()
///     .url("redis://127.0.0.1:6379/0")
///     .namespace("billing")
///     .timeout(Duration::from_millis(250))
///     .build()?;
/// cache.set("invoice:7", Bytes::from_static(b"paid"), Ttl::Default).await?;
/// assert!(cache.get("invoice:7").await?.is_some());
/// # Ok(())
/// # }
/// ```
pub struct RedisEngine<F: Transport = Blocking> {
    inner: Arc<Core<F>>,
}

/// The async face of [`RedisEngine`]: its operations as futures, on tokio.
#[cfg(feature = "tokio")]
pub type AsyncRedisEngine = RedisEngine<Async>;

impl<F: Transport> RedisEngineBuilder<F> {
    /// Builds the engine of the builder's face. No connection is opened until the first
    /// operation (see [`RedisEngine::ping`]).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a URL that cannot be parsed (or `rediss://` without the `tls`
    /// feature), a cluster URL naming a database other than 0, an invalid namespace, zero
    /// timeouts or connection bound, or a zero or too long default TTL.
    pub fn build(self) -> Result<RedisEngine<F>> {
        Ok(RedisEngine {
            inner: self.parts()?.core()?,
        })
    }
}

/// The constructors, and what only the blocking face has. The constructors are on the blocking
/// face's type because a bare `RedisEngine::` path names it; the async face is built with
/// [`async_builder`](Self::async_builder) and [`connect_async`](Self::connect_async) (or
/// `AsyncRedisEngine::default()`).
impl RedisEngine {
    /// A builder of a blocking engine, with every default.
    pub fn builder() -> RedisEngineBuilder<Blocking> {
        RedisEngineBuilder::default()
    }

    /// A builder of an async engine ([`AsyncRedisEngine`]), with every default.
    #[cfg(feature = "tokio")]
    pub fn async_builder() -> RedisEngineBuilder<Async> {
        RedisEngineBuilder::default()
    }

    /// A blocking engine for `redis://127.0.0.1:6379` with every default; no connection is
    /// opened until the first operation.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// A blocking engine configured from the environment (see the crate docs); no connection
    /// is opened. For the async face: `RedisEngine::async_builder().from_env()?.build()`.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a variable that cannot be parsed, or as the builder's `build`.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// A blocking engine for `url` with the other defaults, once the server answered.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a bad URL; `Connection`, `Timeout` or `Authentication` when the
    /// server cannot be reached or refuses the credentials (within the connect timeout, 1 s by
    /// default).
    pub fn connect(url: &str) -> Result<Self> {
        let engine = Self::builder().url(url).build()?;
        engine.ping()?;
        Ok(engine)
    }

    /// An async engine for `url` with the other defaults, once the server answered.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    #[cfg(feature = "tokio")]
    pub async fn connect_async(url: &str) -> Result<AsyncRedisEngine> {
        let engine = Self::async_builder().url(url).build()?;
        engine.ping().await?;
        Ok(engine)
    }

    /// Checks that every server answers.
    ///
    /// # Errors
    ///
    /// `Connection`, `Timeout`, `Authentication`, `Closed`.
    pub fn ping(&self) -> Result<()> {
        block_on(self.inner.ping())
    }

    /// Connection counts, summed over the servers.
    pub fn pool_state(&self) -> PoolState {
        self.inner
            .clients()
            .into_iter()
            .map(|c| c.pool_state())
            .fold(
                PoolState {
                    open: 0,
                    idle: 0,
                    peak: 0,
                },
                |sum, s| PoolState {
                    open: sum.open + s.open,
                    idle: sum.idle + s.idle,
                    peak: sum.peak + s.peak,
                },
            )
    }
}

#[cfg(feature = "tokio")]
impl RedisEngine<Async> {
    /// Checks that every server answers.
    ///
    /// # Errors
    ///
    /// `Connection`, `Timeout`, `Authentication`, `Closed`.
    pub async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

impl<F: Transport> RedisEngine<F> {
    /// The feed of this engine's invalidations, from Redis's client tracking: give it to a
    /// tiered cache so that its local tier hears when anyone changes a key of this namespace.
    /// Nothing is opened until it is subscribed to. See
    /// [`RedisInvalidations`](crate::RedisInvalidations).
    pub fn invalidations(&self) -> crate::RedisInvalidations {
        self.inner.invalidations()
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace()
    }

    /// How many connections the engine has open now, over every server.
    pub fn open_connections(&self) -> usize {
        self.inner
            .clients()
            .iter()
            .map(|c| F::open_connections(c))
            .sum()
    }
}

impl<F: Transport> Clone for RedisEngine<F> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Default for RedisEngine {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio")]
impl Default for RedisEngine<Async> {
    fn default() -> Self {
        RedisEngine::async_builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }
}

impl<F: Transport> fmt::Debug for RedisEngine<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("RedisEngine")
            .field(
                "face",
                &std::any::type_name::<F>()
                    .rsplit("::")
                    .next()
                    .unwrap_or_default(),
            )
            .field("url", &inner.shown_url)
            .field("options", &inner.options)
            .field("open_connections", &self.open_connections())
            .field("closed", &inner.is_closed())
            .finish()
    }
}

// Both faces hand every operation to the core, which is written once: the blocking face runs
// its future on the calling thread (it is ready at its first poll), the async face awaits it.

impl CacheEngine for RedisEngine {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        block_on(self.inner.get(key))
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        block_on(self.inner.set(key, value, ttl))
    }

    fn delete(&self, key: &str) -> Result<bool> {
        block_on(self.inner.delete(key))
    }

    fn clear(&self) -> Result<()> {
        block_on(self.inner.clear())
    }

    fn close(&self) -> Result<()> {
        self.inner.close()
    }

    fn exists(&self, key: &str) -> Result<bool> {
        block_on(self.inner.exists(key))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        block_on(self.inner.get_many(keys))
    }

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        block_on(self.inner.set_many(entries, ttl))
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        block_on(self.inner.delete_many(keys))
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        block_on(self.inner.add(key, value, ttl))
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        block_on(self.inner.increment(key, delta))
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        block_on(self.inner.touch(key, ttl))
    }

    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        block_on(self.inner.delete_if_equals(key, expected))
    }

    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        block_on(self.inner.remaining_ttl(key))
    }

    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        block_on(self.inner.get_with_ttl(key))
    }

    fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        block_on(self.inner.get_many_with_ttl(keys))
    }
}

#[cfg(feature = "tokio")]
impl AsyncCacheEngine for RedisEngine<Async> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        self.inner.set(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }

    async fn clear(&self) -> Result<()> {
        self.inner.clear().await
    }

    async fn close(&self) -> Result<()> {
        self.inner.close()
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key).await
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.inner.get_many(keys).await
    }

    async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        self.inner.set_many(entries, ttl).await
    }

    async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.inner.delete_many(keys).await
    }

    async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        self.inner.add(key, value, ttl).await
    }

    async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        self.inner.increment(key, delta).await
    }

    async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        self.inner.touch(key, ttl).await
    }

    async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        self.inner.delete_if_equals(key, expected).await
    }

    async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        self.inner.remaining_ttl(key).await
    }

    async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        self.inner.get_with_ttl(key).await
    }

    async fn get_many_with_ttl(&self, keys: &[&str]) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        self.inner.get_many_with_ttl(keys).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_core::CacheError;
    use std::time::Duration;

    #[test]
    fn bad_settings_are_config_errors() {
        let err = RedisEngine::builder()
            .url("http://nope")
            .build()
            .unwrap_err();
        assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
        let err = RedisEngine::builder()
            .url("redis://user:hunter2@127.0.0.1:1/0")
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(RedisEngine::builder().max_connections(0).build().is_err());
    }

    #[test]
    fn debug_hides_the_password() {
        let engine = RedisEngine::builder()
            .url("redis://user:hunter2@127.0.0.1:6379/1")
            .build()
            .unwrap();
        let shown = format!("{engine:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("user:***@127.0.0.1:6379/1"), "{shown}");
    }

    #[test]
    fn bad_keys_are_refused_before_any_connection() {
        let engine = RedisEngine::builder()
            .url("redis://127.0.0.1:1")
            .namespace("n")
            .build()
            .unwrap();
        for key in ["", "a b", "x\r\n"] {
            assert!(matches!(
                engine.get(key),
                Err(CacheError::InvalidKey { .. })
            ));
        }
        assert_eq!(engine.pool_state().peak, 0, "no connection was opened");
    }
}
