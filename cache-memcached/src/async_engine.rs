//! [`AsyncMemcachedEngine`]: the same engine on tokio, every caller's requests pipelined.

use std::fmt;
use std::sync::Arc;

use cache_core::{AsyncCacheEngine, Result};
use cache_remote::Async;

use crate::config::MemcachedEngineBuilder;
use crate::servers::Servers;

/// A cache engine on a memcached server for async code (tokio): the operations of
/// [`MemcachedEngine`](crate::MemcachedEngine), with the same TTL rules, generations, key checks
/// and limits, as futures.
///
/// Every caller's requests are pipelined on [`pipelines`] connections (1 by default); memcached
/// answers in order, and every reply's opaque token is checked against its command. Dropping an
/// operation's future at any point is safe: its request is still written whole and its replies
/// read and discarded; no other call ever receives them. Cloning shares the connections.
///
/// Needs a tokio runtime: an operation awaited outside one fails with a `Connection` error.
///
/// ```no_run
/// use cache_core::{AsyncCacheEngine, Bytes, Ttl};
/// use cache_memcached::AsyncMemcachedEngine;
///
/// # async fn run() -> cache_core::Result<()> {
/// let cache = AsyncMemcachedEngine::builder()
///     .server("memcached://127.0.0.1:11211")
///     .namespace("sessions")
///     .pipelines(2)
///     .build()?;
/// cache.set("s:42", Bytes::from_static(b"token"), Ttl::Default).await?;
/// cache.clear().await?; // O(1): a new generation
/// # Ok(())
/// # }
/// ```
///
/// [`pipelines`]: MemcachedEngineBuilder::pipelines
#[derive(Clone)]
pub struct AsyncMemcachedEngine {
    inner: Arc<Servers<Async>>,
}

impl MemcachedEngineBuilder<Async> {
    /// Builds the async engine. No connection is opened until the first operation.
    ///
    /// # Errors
    ///
    /// As the blocking builder's [`build`](MemcachedEngineBuilder::build).
    pub fn build(self) -> Result<AsyncMemcachedEngine> {
        Ok(AsyncMemcachedEngine {
            inner: self.parts()?.servers(),
        })
    }
}

impl AsyncMemcachedEngine {
    cache_remote::remote_engine_constructors!(
        async,
        MemcachedEngineBuilder<Async>,
        server,
        "127.0.0.1:11211"
    );

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace()
    }

    /// How many connections the engine has open now, over every server.
    pub fn open_connections(&self) -> usize {
        self.inner
            .nodes
            .iter()
            .map(|n| n.client.open_connections())
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

impl Default for AsyncMemcachedEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for AsyncMemcachedEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("AsyncMemcachedEngine")
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

impl AsyncCacheEngine for AsyncMemcachedEngine {
    cache_remote::async_engine_methods!();
}
