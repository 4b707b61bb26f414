//! [`RedisEngine`].

use std::fmt;
use std::sync::Arc;

use cache_core::config::redact_url as redact;
use cache_core::{CacheEngine, Capabilities, Result};
use cache_remote::blocking::Client;
use cache_remote::{Blocking, RemoteOptions};

use crate::backend::{BACKEND, Redis};
use crate::config::{RedisEngineBuilder, ServerUrl, parse_url};
use crate::ops::{Commands, MAX_TTL, RELAXED_MAX_KEY_LEN, TTL_RESOLUTION};

/// A cache engine on a Redis server.
///
/// Cloning shares the connections; [`close`](CacheEngine::close) closes the engine for every
/// clone. See the [crate docs](crate) for URLs, defaults, deadlines and environment variables.
#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client<Redis>,
    commands: Commands,
    options: RemoteOptions,
    /// The URL with the password hidden.
    shown_url: String,
}

/// What both faces of the engine are built from.
pub(crate) struct Parts {
    pub(crate) backend: Redis,
    pub(crate) commands: Commands,
    pub(crate) options: RemoteOptions,
    pub(crate) shown_url: String,
}

impl<Face> RedisEngineBuilder<Face> {
    /// Checks the settings and builds what both faces share.
    pub(crate) fn parts(self) -> Result<Parts> {
        let url = parse_url(&self.url)?;
        let mut keys = self.options.validate(MAX_TTL)?;
        if self.relaxed_keys {
            keys = keys.relaxed(RELAXED_MAX_KEY_LEN);
        }
        let backend = backend(&url, &self)?;
        let commands = Commands::new(
            keys,
            self.options.default_ttl,
            self.max_value_size,
            url.address(),
        );
        Ok(Parts {
            backend,
            commands,
            shown_url: redact(&self.url),
            options: self.options,
        })
    }
}

impl RedisEngineBuilder<Blocking> {
    /// Builds the engine. No connection is opened until the first operation (see
    /// [`RedisEngine::ping`]).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a URL that cannot be parsed (or `rediss://` without the `tls`
    /// feature), an invalid namespace, zero timeouts or connection bound, or a zero or too long
    /// default TTL.
    pub fn build(self) -> Result<RedisEngine> {
        let parts = self.parts()?;
        Ok(RedisEngine {
            inner: Arc::new(Inner {
                client: Client::new(parts.backend, parts.options.client.clone()),
                commands: parts.commands,
                options: parts.options,
                shown_url: parts.shown_url,
            }),
        })
    }
}

#[cfg(feature = "tls")]
fn backend<Face>(url: &ServerUrl, builder: &RedisEngineBuilder<Face>) -> Result<Redis> {
    let tls = if url.tls {
        Some(crate::tls::settings(
            &url.host,
            builder.tls_root_certificate.as_deref(),
            builder.danger_accept_invalid_certs,
        )?)
    } else {
        if builder.tls_root_certificate.is_some() || builder.danger_accept_invalid_certs {
            return Err(cache_core::CacheError::invalid_config(
                "TLS settings need a rediss:// URL",
            ));
        }
        None
    };
    Ok(Redis::new(url, tls))
}

#[cfg(not(feature = "tls"))]
fn backend<Face>(url: &ServerUrl, builder: &RedisEngineBuilder<Face>) -> Result<Redis> {
    if url.tls || builder.tls_root_certificate.is_some() || builder.danger_accept_invalid_certs {
        return Err(cache_core::CacheError::invalid_config(
            "rediss:// URLs and TLS settings need the `tls` feature of cache-redis",
        ));
    }
    Ok(Redis::new(url))
}

/// The capabilities both faces declare.
pub(crate) fn capabilities(options: &RemoteOptions, commands: &Commands) -> Capabilities {
    let mut caps = options.capabilities(BACKEND);
    caps.ttl_resolution = TTL_RESOLUTION;
    caps.max_ttl = MAX_TTL;
    caps.max_value_size = Some(commands.max_value_size);
    caps.max_key_len = commands.keys.max_key_len();
    caps
}

impl RedisEngine {
    cache_remote::remote_engine_constructors!(
        RedisEngineBuilder<Blocking>,
        url,
        "redis://127.0.0.1:6379"
    );

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.commands.keys.namespace()
    }
}

impl Default for RedisEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("RedisEngine")
            .field("url", &inner.shown_url)
            .field("options", &inner.options)
            .field("pool", &inner.client.pool_state())
            .field("closed", &inner.client.is_closed())
            .finish()
    }
}

impl CacheEngine for RedisEngine {
    cache_remote::blocking_engine_methods!();
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
