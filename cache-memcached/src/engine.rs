//! [`MemcachedEngine`]: one type for both faces, its constructors, and the engine traits, each
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

use crate::config::MemcachedEngineBuilder;
use crate::core::Core;

/// A cache engine on a memcached server, or on several with consistent hashing.
///
/// One type serves both faces: `MemcachedEngine` (that is, `MemcachedEngine<Blocking>`)
/// implements [`CacheEngine`] for blocking code, and [`AsyncMemcachedEngine`]
/// (`MemcachedEngine<Async>`, with the `tokio` feature) implements
/// [`AsyncCacheEngine`](cache_core::AsyncCacheEngine) for async code on tokio, with the same TTL
/// rules, generations, key checks and limits. Build the first with
/// [`MemcachedEngine::builder`], the second with [`MemcachedEngine::async_builder`]; both return
/// the one [`MemcachedEngineBuilder`].
///
/// The blocking face runs each operation on the calling thread over a bounded pool of
/// connections per server. The async face pipelines every caller's requests on
/// [`pipelines`](MemcachedEngineBuilder::pipelines) connections per server (1 by default);
/// memcached answers in order, and every reply's opaque token is checked against its command.
/// Dropping an async operation's future at any point is safe: its request is still written
/// whole and its replies read and discarded; no other call ever receives them. An async
/// operation awaited outside a tokio runtime fails with a `Connection` error.
///
/// Cloning shares the connections; [`close`](CacheEngine::close) closes the engine for every
/// clone. See the [crate docs](crate) for servers, defaults, TTLs and namespaces.
///
/// ```no_run
/// use cache_core::{AsyncCacheEngine, Bytes, Ttl};
/// use cache_memcached::MemcachedEngine;
///
/// # async fn run() -> cache_core::Result<()> {
/// let cache = MemcachedEngine::async_builder()
///     .server("memcached://127.0.0.1:11211")
///     .namespace("sessions")
///     .pipelines(2)
///     .build()?;
/// cache.set("s:42", Bytes::from_static(b"token"), Ttl::Default).await?;
/// cache.clear().await?; // O(1): a new generation
/// # Ok(())
/// # }
/// ```
pub struct MemcachedEngine<F: Transport = Blocking> {
    inner: Arc<Core<F>>,
}

/// The async face of [`MemcachedEngine`]: its operations as futures, on tokio.
#[cfg(feature = "tokio")]
pub type AsyncMemcachedEngine = MemcachedEngine<Async>;

impl<F: Transport> MemcachedEngineBuilder<F> {
    /// Builds the engine of the builder's face. No connection is opened until the first
    /// operation (see [`MemcachedEngine::ping`]).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for no server, a bad or repeated server address, an invalid namespace,
    /// zero timeouts, connection bound, failure limit or retry time, an item limit too small,
    /// or a zero or out-of-range default TTL.
    pub fn build(self) -> Result<MemcachedEngine<F>> {
        Ok(MemcachedEngine {
            inner: self.parts()?.core(),
        })
    }
}

/// The constructors, and what only the blocking face has. The constructors are on the blocking
/// face's type because a bare `MemcachedEngine::` path names it; the async face is built with
/// [`async_builder`](Self::async_builder) and [`connect_async`](Self::connect_async) (or
/// `AsyncMemcachedEngine::default()`).
impl MemcachedEngine {
    /// A builder of a blocking engine, with every default.
    pub fn builder() -> MemcachedEngineBuilder<Blocking> {
        MemcachedEngineBuilder::default()
    }

    /// A builder of an async engine ([`AsyncMemcachedEngine`]), with every default.
    #[cfg(feature = "tokio")]
    pub fn async_builder() -> MemcachedEngineBuilder<Async> {
        MemcachedEngineBuilder::default()
    }

    /// A blocking engine for `127.0.0.1:11211` with every default; no connection is opened
    /// until the first operation.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// A blocking engine configured from the environment (see the crate docs); no connection
    /// is opened. For the async face: `MemcachedEngine::async_builder().from_env()?.build()`.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a variable that cannot be parsed, or as the builder's `build`.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// A blocking engine for the server at `address` with the other defaults, once the server
    /// answered.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a bad address; `Connection` or `Timeout` when the server cannot be
    /// reached (within the connect timeout, 1 s by default).
    pub fn connect(address: &str) -> Result<Self> {
        let engine = Self::builder().server(address).build()?;
        engine.ping()?;
        Ok(engine)
    }

    /// An async engine for the server at `address` with the other defaults, once the server
    /// answered.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    #[cfg(feature = "tokio")]
    pub async fn connect_async(address: &str) -> Result<AsyncMemcachedEngine> {
        let engine = Self::async_builder().server(address).build()?;
        engine.ping().await?;
        Ok(engine)
    }

    /// Checks that every server answers.
    ///
    /// # Errors
    ///
    /// `Connection`, `Timeout`, `Closed`.
    pub fn ping(&self) -> Result<()> {
        block_on(self.inner.ping())
    }

    /// Connection counts, summed over the servers.
    pub fn pool_state(&self) -> PoolState {
        self.inner.nodes.iter().map(|n| n.client.pool_state()).fold(
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
impl MemcachedEngine<Async> {
    /// Checks that every server answers.
    ///
    /// # Errors
    ///
    /// `Connection`, `Timeout`, `Closed`.
    pub async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }
}

impl<F: Transport> MemcachedEngine<F> {
    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace()
    }

    /// How many connections the engine has open now, over every server.
    pub fn open_connections(&self) -> usize {
        self.inner
            .nodes
            .iter()
            .map(|n| F::open_connections(&n.client))
            .sum()
    }

    /// The servers taken out of the ring after failing, now (see
    /// [`server_failure_limit`](MemcachedEngineBuilder::server_failure_limit)).
    pub fn servers_out(&self) -> Vec<String> {
        self.inner
            .out_of_ring()
            .into_iter()
            .map(String::from)
            .collect()
    }
}

impl<F: Transport> Clone for MemcachedEngine<F> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl Default for MemcachedEngine {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio")]
impl Default for MemcachedEngine<Async> {
    fn default() -> Self {
        MemcachedEngine::async_builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }
}

impl<F: Transport> fmt::Debug for MemcachedEngine<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("MemcachedEngine")
            .field(
                "face",
                &std::any::type_name::<F>()
                    .rsplit("::")
                    .next()
                    .unwrap_or_default(),
            )
            .field(
                "servers",
                &inner.nodes.iter().map(|n| &n.address).collect::<Vec<_>>(),
            )
            .field("out_of_ring", &inner.out_of_ring())
            .field("options", &inner.options)
            .field("hash_keys", &inner.hash_keys)
            .field("open_connections", &self.open_connections())
            .field("closed", &inner.is_closed())
            .finish()
    }
}

// Both faces hand every operation to the core, which is written once: the blocking face runs
// its future on the calling thread (it is ready at its first poll), the async face awaits it.

impl CacheEngine for MemcachedEngine {
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
impl AsyncCacheEngine for MemcachedEngine<Async> {
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

    #[test]
    fn bad_server_lists_are_refused() {
        for servers in [vec![], vec!["a:1", "a:1"], vec!["a:1", "b:port"]] {
            let err = MemcachedEngine::builder()
                .servers(servers.clone())
                .build()
                .unwrap_err();
            assert!(
                matches!(err, CacheError::InvalidConfig { .. }),
                "{servers:?}: {err}"
            );
        }
        assert!(
            MemcachedEngine::builder()
                .servers(["a:1", "b:2", "c"])
                .build()
                .is_ok()
        );
    }

    #[test]
    fn bad_keys_are_refused_before_any_connection() {
        let engine = MemcachedEngine::builder()
            .server("127.0.0.1:1")
            .namespace("n")
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        for key in ["", "a b", "x\r\ndelete victim"] {
            assert!(matches!(
                engine.get(key),
                Err(CacheError::InvalidKey { .. })
            ));
        }
        assert_eq!(engine.pool_state().peak, 0, "no connection was opened");
    }
}
