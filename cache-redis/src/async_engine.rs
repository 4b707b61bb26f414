//! [`AsyncRedisEngine`]: the same engine on tokio, every caller's requests pipelined on one
//! connection.

use std::fmt;
use std::sync::Arc;

use cache_core::{AsyncCacheEngine, Result};
use cache_remote::Async;

use crate::config::RedisEngineBuilder;
use crate::core::Core;

/// A cache engine on a Redis server for async code (tokio): the operations of
/// [`RedisEngine`](crate::RedisEngine), with the same behaviour, errors and limits, as futures.
///
/// Every caller's requests are pipelined on one connection ([`pipelines`] to use more), so many
/// concurrent tasks share a few sockets and the server answers them in batches. Dropping an
/// operation's future at any point is safe: its request is still written whole and its reply
/// read and discarded; no other call ever receives it. Cloning shares the connections.
///
/// Needs a tokio runtime: an operation awaited outside one fails with a `Connection` error.
///
/// ```no_run
/// use std::time::Duration;
/// use cache_core::{AsyncCacheEngine, Bytes, Ttl};
/// use cache_redis::AsyncRedisEngine;
///
/// # async fn run() -> cache_core::Result<()> {
/// let cache = AsyncRedisEngine::builder()
///     .url("redis://127.0.0.1:6379/0")
///     .namespace("billing")
///     .timeout(Duration::from_millis(250))
///     .build()?;
/// cache.set("invoice:7", Bytes::from_static(b"paid"), Ttl::Default).await?;
/// assert!(cache.get("invoice:7").await?.is_some());
/// # Ok(())
/// # }
/// ```
///
/// [`pipelines`]: RedisEngineBuilder::pipelines
#[derive(Clone)]
pub struct AsyncRedisEngine {
    inner: Arc<Core<Async>>,
}

impl RedisEngineBuilder<Async> {
    /// Builds the async engine. No connection is opened until the first operation.
    ///
    /// # Errors
    ///
    /// As the blocking builder's [`build`](RedisEngineBuilder::build).
    pub fn build(self) -> Result<AsyncRedisEngine> {
        Ok(AsyncRedisEngine {
            inner: self.parts()?.core()?,
        })
    }
}

impl AsyncRedisEngine {
    cache_remote::remote_engine_constructors!(
        async,
        RedisEngineBuilder<Async>,
        url,
        "redis://127.0.0.1:6379"
    );

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
            .into_iter()
            .map(|c| c.open_connections())
            .sum()
    }
}

impl Default for AsyncRedisEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for AsyncRedisEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("AsyncRedisEngine")
            .field("url", &inner.shown_url)
            .field("options", &inner.options)
            .field("open_connections", &self.open_connections())
            .field("closed", &inner.is_closed())
            .finish()
    }
}

impl AsyncCacheEngine for AsyncRedisEngine {
    cache_remote::async_engine_methods!();
}
