//! What both faces of [`MemcachedEngine`](crate::MemcachedEngine) are built from: the
//! builder's settings checked once ([`Parts`]), a backend per server, and the [`Core`] over
//! them.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use cache_core::{CacheError, Result, Ttl};
use cache_remote::RemoteOptions;

use crate::backend::Memcached;
use crate::commands::Commands;
use crate::config::{MemcachedEngineBuilder, Server, parse_server};
use crate::core::{Core, Ejection};
use crate::generation::Generation;
use crate::keys::{GENERATION_LEN, ITEM_OVERHEAD, Keys, exptime, max_ttl};

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
    pub(crate) fn core<T: cache_remote::Transport>(self) -> Arc<Core<T>> {
        Core::new(
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
        let mut servers: Vec<Server> = Vec::with_capacity(self.servers.len());
        for server in &self.servers {
            let server = parse_server(server)?;
            if servers.iter().any(|known| known.address == server.address) {
                return Err(CacheError::invalid_config(format!(
                    "memcached server {} is given twice",
                    server.address
                )));
            }
            servers.push(server);
        }
        if (self.tls_root_certificate.is_some() || self.danger_accept_invalid_certs)
            && !servers.iter().any(|server| server.tls)
        {
            return Err(CacheError::invalid_config(
                "TLS settings need a memcacheds:// server",
            ));
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
        let mut backends = Vec::with_capacity(servers.len());
        for server in servers {
            let tls = tls_settings(
                &server,
                self.tls_root_certificate.as_deref(),
                self.danger_accept_invalid_certs,
            )?;
            let credentials = server.credentials.or_else(|| self.credentials.clone());
            backends.push(Memcached::new(
                server.address,
                Arc::clone(&learned),
                credentials,
                tls,
            ));
        }
        Ok(Parts {
            backends,
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

/// The TLS settings of a `memcacheds://` server; `None` for plain ones.
#[cfg(feature = "tls")]
fn tls_settings(
    server: &Server,
    root: Option<&[u8]>,
    danger: bool,
) -> Result<Option<cache_remote::TlsSettings>> {
    if !server.tls {
        return Ok(None);
    }
    cache_remote::tls::settings(&server.host, root, danger).map(Some)
}

#[cfg(not(feature = "tls"))]
fn tls_settings(server: &Server, _root: Option<&[u8]>, _danger: bool) -> Result<Option<()>> {
    if server.tls {
        return Err(CacheError::invalid_config(
            "memcacheds:// servers need the `tls` feature of cache-memcached",
        ));
    }
    Ok(None)
}
