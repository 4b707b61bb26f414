//! [`MemcachedEngine`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use cache_core::{CacheEngine, CacheError, Result, Ttl};
use cache_remote::blocking::PoolState;
use cache_remote::{Blocking, RemoteOptions};

use crate::backend::Memcached;
use crate::commands::Commands;
use crate::config::{MemcachedEngineBuilder, parse_server};
use crate::generation::Generation;
use crate::keys::{GENERATION_LEN, ITEM_OVERHEAD, Keys, exptime, max_ttl};
use crate::servers::{Ejection, Servers};

/// A cache engine on a memcached server, or on several with consistent hashing.
///
/// Cloning shares the connections; [`close`](CacheEngine::close) closes the engine for every
/// clone. See the [crate docs](crate) for servers, defaults, TTLs and namespaces.
#[derive(Clone)]
pub struct MemcachedEngine {
    inner: Arc<Servers<Blocking>>,
}

/// What both faces of the engine are built from.
pub(crate) struct Parts {
    pub(crate) backends: Vec<Memcached>,
    pub(crate) commands: Commands,
    pub(crate) generation: Option<Generation>,
    pub(crate) options: RemoteOptions,
    pub(crate) hash_keys: bool,
    pub(crate) ejection: Ejection,
}

impl Parts {
    pub(crate) fn servers<T: cache_remote::Transport>(self) -> Arc<Servers<T>> {
        Servers::new(
            self.backends,
            self.commands,
            self.generation,
            self.options,
            self.hash_keys,
            self.ejection,
        )
    }
}

impl<Face> MemcachedEngineBuilder<Face> {
    /// Checks the settings and builds what both faces share.
    pub(crate) fn parts(self) -> Result<Parts> {
        if self.servers.is_empty() {
            return Err(CacheError::invalid_config("no memcached server given"));
        }
        let mut addresses = Vec::with_capacity(self.servers.len());
        for server in &self.servers {
            let address = parse_server(server)?;
            if addresses.contains(&address) {
                return Err(CacheError::invalid_config(format!(
                    "memcached server {address} is given twice"
                )));
            }
            addresses.push(address);
        }
        if self.item_size_limit <= ITEM_OVERHEAD {
            return Err(CacheError::invalid_config(format!(
                "item_size_limit must be more than {ITEM_OVERHEAD} bytes"
            )));
        }
        if self.failure_limit == 0 || self.retry_after.is_zero() {
            return Err(CacheError::invalid_config(
                "server_failure_limit and server_retry_after must be more than zero",
            ));
        }
        let mut space = self.options.validate(max_ttl())?;
        let generation = match self.options.namespace {
            Some(_) => {
                // Data keys are `prefix` + 16 hex digits + `:` + key.
                space = space.reserve(GENERATION_LEN + 1)?;
                Some(Generation::new(space.prefix(), self.generation_refresh))
            }
            None => None,
        };
        // Refuse a default TTL memcached cannot represent now rather than at every write.
        exptime(Ttl::Default, self.options.default_ttl)
            .map_err(|e| CacheError::invalid_config(e.to_string()))?;
        let learned = Arc::new(AtomicUsize::new(0));
        let commands = Commands::new(
            Keys {
                space,
                hash_keys: self.hash_keys,
            },
            self.options.default_ttl,
            self.item_size_limit,
            Arc::clone(&learned),
        );
        Ok(Parts {
            backends: addresses
                .into_iter()
                .map(|address| Memcached::new(address, Arc::clone(&learned)))
                .collect(),
            commands,
            generation,
            options: self.options,
            hash_keys: self.hash_keys,
            ejection: Ejection {
                failure_limit: self.failure_limit,
                retry_after: self.retry_after,
            },
        })
    }
}

impl MemcachedEngineBuilder<Blocking> {
    /// Builds the engine. No connection is opened until the first operation (see
    /// [`MemcachedEngine::ping`]).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for no server, a bad or repeated server address, an invalid namespace,
    /// zero timeouts, connection bound, failure limit or retry time, an item limit too small,
    /// or a zero or out-of-range default TTL.
    pub fn build(self) -> Result<MemcachedEngine> {
        Ok(MemcachedEngine {
            inner: self.parts()?.servers(),
        })
    }
}

impl MemcachedEngine {
    cache_remote::remote_engine_constructors!(
        blocking,
        MemcachedEngineBuilder<Blocking>,
        server,
        "127.0.0.1:11211"
    );

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace()
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

impl Default for MemcachedEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemcachedEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("MemcachedEngine")
            .field(
                "servers",
                &inner.nodes.iter().map(|n| &n.address).collect::<Vec<_>>(),
            )
            .field("out_of_ring", &inner.out_of_ring())
            .field("options", &inner.options)
            .field("hash_keys", &inner.hash_keys)
            .field("pool", &self.pool_state())
            .field("closed", &inner.is_closed())
            .finish()
    }
}

impl CacheEngine for MemcachedEngine {
    cache_remote::blocking_engine_methods!();
}

#[cfg(test)]
mod tests {
    use super::*;

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
