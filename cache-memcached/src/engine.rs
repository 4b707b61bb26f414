//! [`MemcachedEngine`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use cache_core::{CacheEngine, CacheError, Capabilities, Result, Ttl};
use cache_remote::blocking::Client;
use cache_remote::{Blocking, RemoteOptions};

use crate::backend::Memcached;
use crate::config::{MemcachedEngineBuilder, parse_server};
use crate::generation::Generation;
use crate::keys::{BACKEND, GENERATION_LEN, ITEM_OVERHEAD, Keys, TTL_RESOLUTION, exptime, max_ttl};
use crate::ops::Commands;

/// A cache engine on a memcached server.
///
/// Cloning shares the connections; [`close`](CacheEngine::close) closes the engine for every
/// clone. See the [crate docs](crate) for servers, defaults, TTLs and namespaces.
#[derive(Clone)]
pub struct MemcachedEngine {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<Memcached>,
    commands: Commands,
    options: RemoteOptions,
    hash_keys: bool,
}

/// What both faces of the engine are built from.
pub(crate) struct Parts {
    pub(crate) backend: Memcached,
    pub(crate) commands: Commands,
    pub(crate) options: RemoteOptions,
    pub(crate) hash_keys: bool,
}

impl<Face> MemcachedEngineBuilder<Face> {
    /// Checks the settings and builds what both faces share.
    pub(crate) fn parts(self) -> Result<Parts> {
        let address = match self.servers.as_slice() {
            [one] => parse_server(one)?,
            [] => return Err(CacheError::invalid_config("no memcached server given")),
            _ => {
                return Err(CacheError::invalid_config(
                    "several memcached servers are not supported yet; give one",
                ));
            }
        };
        if self.item_size_limit <= ITEM_OVERHEAD {
            return Err(CacheError::invalid_config(format!(
                "item_size_limit must be more than {ITEM_OVERHEAD} bytes"
            )));
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
            generation,
            self.options.default_ttl,
            self.item_size_limit,
            Arc::clone(&learned),
        );
        Ok(Parts {
            backend: Memcached::new(address, learned),
            commands,
            options: self.options,
            hash_keys: self.hash_keys,
        })
    }
}

impl MemcachedEngineBuilder<Blocking> {
    /// Builds the engine. No connection is opened until the first operation (see
    /// [`MemcachedEngine::ping`]).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a bad server address, several servers, an invalid namespace, zero
    /// timeouts or connection bound, an item limit too small, or a zero or out-of-range default
    /// TTL.
    pub fn build(self) -> Result<MemcachedEngine> {
        let parts = self.parts()?;
        Ok(MemcachedEngine {
            inner: Arc::new(Inner {
                client: Client::new(parts.backend, parts.options.client.clone()),
                commands: parts.commands,
                options: parts.options,
                hash_keys: parts.hash_keys,
            }),
        })
    }
}

/// The capabilities both faces declare.
pub(crate) fn capabilities(options: &RemoteOptions, commands: &Commands) -> Capabilities {
    let mut caps = options.capabilities(BACKEND);
    caps.ttl_resolution = TTL_RESOLUTION;
    caps.max_ttl = max_ttl();
    caps.max_value_size = Some(commands.max_value_size());
    caps.max_key_len = commands.keys.space.max_key_len();
    caps
}

impl MemcachedEngine {
    cache_remote::remote_engine_constructors!(
        MemcachedEngineBuilder<Blocking>,
        server,
        "127.0.0.1:11211"
    );

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.commands.keys.space.namespace()
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
            .field("server", &inner.client.backend())
            .field("options", &inner.options)
            .field("hash_keys", &inner.hash_keys)
            .field("pool", &inner.client.pool_state())
            .field("closed", &inner.client.is_closed())
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
    fn several_servers_are_refused_for_now() {
        let err = MemcachedEngine::builder()
            .servers(["a:1", "b:2"])
            .build()
            .unwrap_err();
        assert!(matches!(err, CacheError::InvalidConfig { .. }));
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
