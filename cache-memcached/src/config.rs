//! Configuration: servers, builder, environment.

use std::fmt;
use std::time::Duration;

use cache_core::config::{parse_millis, parse_number, parse_ttl};
use cache_core::{CacheError, Result, Ttl};

/// The server `MemcachedEngine::new()` uses: `127.0.0.1:11211`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:11211";
/// Default bound on one operation (request and reply): 1 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on opening a connection: 1 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of idle connections kept for reuse: 8.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Default item size limit of the server (`memcached -I`): 1 MiB.
pub const DEFAULT_ITEM_SIZE_LIMIT: usize = 1024 * 1024;
/// Default bound on how long another engine may keep using a namespace's generation after a
/// `clear()`: 1 s.
pub const DEFAULT_GENERATION_REFRESH: Duration = Duration::from_secs(1);

/// Builds a [`MemcachedEngine`](crate::MemcachedEngine). Setters cannot fail;
/// [`build`](Self::build) checks everything.
#[must_use]
#[derive(Clone)]
pub struct MemcachedEngineBuilder {
    pub(crate) servers: Vec<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) default_ttl: Ttl,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_size: usize,
    pub(crate) item_size_limit: usize,
    pub(crate) hash_keys: bool,
    pub(crate) generation_refresh: Duration,
}

impl Default for MemcachedEngineBuilder {
    fn default() -> Self {
        Self {
            servers: vec![DEFAULT_SERVER.into()],
            namespace: None,
            default_ttl: Ttl::Default,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            item_size_limit: DEFAULT_ITEM_SIZE_LIMIT,
            hash_keys: false,
            generation_refresh: DEFAULT_GENERATION_REFRESH,
        }
    }
}

impl fmt::Debug for MemcachedEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedEngineBuilder")
            .field("servers", &self.servers)
            .field("namespace", &self.namespace)
            .field("default_ttl", &self.default_ttl)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_size", &self.pool_size)
            .field("item_size_limit", &self.item_size_limit)
            .field("hash_keys", &self.hash_keys)
            .field("generation_refresh", &self.generation_refresh)
            .finish()
    }
}

impl MemcachedEngineBuilder {
    /// The server: `memcached://host[:port]`, `memcache://host[:port]` or `host[:port]`;
    /// port 11211 by default. Replaces any server set before.
    pub fn server(mut self, server: impl Into<String>) -> Self {
        self.servers = vec![server.into()];
        self
    }

    /// The servers. This release talks to one server: `build` refuses several (consistent
    /// hashing over several servers is planned and will keep this signature).
    pub fn servers<S: Into<String>>(mut self, servers: impl IntoIterator<Item = S>) -> Self {
        self.servers = servers.into_iter().map(Into::into).collect();
        self
    }

    /// Puts every key under this namespace; `clear()` then forgets exactly the namespace's
    /// entries in O(1) (see the crate docs) and never flushes the server.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The TTL that `Ttl::Default` stands for; default 300 s.
    pub fn default_ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.default_ttl = ttl.into();
        self
    }

    /// The longest one operation may take, request and reply; default 1 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest opening a connection may take; default 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many idle connections are kept for reuse; default 8.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// The server's item size limit (`memcached -I`); default 1 MiB. Values that cannot fit are
    /// refused with `ValueTooLarge` before anything is sent.
    pub fn item_size_limit(mut self, bytes: usize) -> Self {
        self.item_size_limit = bytes;
        self
    }

    /// Stores keys that are too long or hold whitespace or control characters under a SHA-256
    /// of the key instead of refusing them. The original key is stored with the value and
    /// compared on every read, so two keys can never read each other's values. Default off.
    pub fn hash_keys(mut self, hash: bool) -> Self {
        self.hash_keys = hash;
        self
    }

    /// How long an engine keeps using its cached generation of the namespace before it reads it
    /// again: the bound on how long after another engine's `clear()` this engine may still see
    /// the cleared entries. Default 1 s. `clear()` on this engine takes effect for it at once.
    pub fn generation_refresh(mut self, every: Duration) -> Self {
        self.generation_refresh = every;
        self
    }

    /// Reads the settings from environment variables (see the crate docs), starting from the
    /// defaults.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` naming the variable that cannot be parsed.
    pub fn from_env(self) -> Result<Self> {
        self.from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env) with another source of variables.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` naming the variable that cannot be parsed.
    pub fn from_lookup(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        if let Some(servers) = lookup("CACHE_MEMCACHED_SERVERS") {
            self.servers = servers
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(namespace) = lookup("CACHE_MEMCACHED_NAMESPACE") {
            self.namespace = Some(namespace);
        }
        if let Some(ttl) = lookup("CACHE_MEMCACHED_DEFAULT_TTL") {
            self.default_ttl = parse_ttl("CACHE_MEMCACHED_DEFAULT_TTL", &ttl)?;
        }
        if let Some(ms) = lookup("CACHE_MEMCACHED_TIMEOUT_MS") {
            self.timeout = parse_millis("CACHE_MEMCACHED_TIMEOUT_MS", &ms)?;
        }
        if let Some(ms) = lookup("CACHE_MEMCACHED_CONNECT_TIMEOUT_MS") {
            self.connect_timeout = parse_millis("CACHE_MEMCACHED_CONNECT_TIMEOUT_MS", &ms)?;
        }
        if let Some(size) = lookup("CACHE_MEMCACHED_POOL_SIZE") {
            self.pool_size = to_usize(
                "CACHE_MEMCACHED_POOL_SIZE",
                parse_number("CACHE_MEMCACHED_POOL_SIZE", &size)?,
            )?;
        }
        if let Some(size) = lookup("CACHE_MEMCACHED_ITEM_SIZE_LIMIT") {
            self.item_size_limit = to_usize(
                "CACHE_MEMCACHED_ITEM_SIZE_LIMIT",
                parse_number("CACHE_MEMCACHED_ITEM_SIZE_LIMIT", &size)?,
            )?;
        }
        Ok(self)
    }
}

fn to_usize(name: &str, n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| CacheError::invalid_config(format!("{name} is too large")))
}

/// `host:port` of a server given as a URL or an address.
pub(crate) fn parse_server(server: &str) -> Result<String> {
    let rest = server
        .strip_prefix("memcached://")
        .or_else(|| server.strip_prefix("memcache://"))
        .unwrap_or(server);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains(['/', '@', '?', ' ']) || rest.contains("://") {
        return Err(CacheError::invalid_config(format!(
            "memcached server must be memcached://host[:port] or host[:port], got {server:?}"
        )));
    }
    // An IPv6 literal is bracketed: [::1]:11211.
    let has_port = match rest.rfind(']') {
        Some(close) => rest[close..].contains(':'),
        None => rest.contains(':'),
    };
    if has_port {
        let port = rest.rsplit(':').next().unwrap_or_default();
        if port.parse::<u16>().is_err() {
            return Err(CacheError::invalid_config(format!(
                "memcached server {server:?} has an invalid port"
            )));
        }
        Ok(rest.to_string())
    } else {
        Ok(format!("{rest}:11211"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        assert_eq!(
            parse_server("memcached://cache:11300").unwrap(),
            "cache:11300"
        );
        assert_eq!(parse_server("memcache://cache").unwrap(), "cache:11211");
        assert_eq!(parse_server("10.0.0.1").unwrap(), "10.0.0.1:11211");
        assert_eq!(parse_server("[::1]:11212").unwrap(), "[::1]:11212");
        assert_eq!(parse_server("[::1]").unwrap(), "[::1]:11211");
        assert!(parse_server("http://x/y").is_err());
        assert!(parse_server("cache:port").is_err());
        assert!(parse_server("").is_err());
    }

    #[test]
    fn env_lookup() {
        let b = MemcachedEngineBuilder::default()
            .from_lookup(|name| match name {
                "CACHE_MEMCACHED_SERVERS" => Some("a:1, b:2".into()),
                "CACHE_MEMCACHED_DEFAULT_TTL" => Some("never".into()),
                "CACHE_MEMCACHED_ITEM_SIZE_LIMIT" => Some("2097152".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(b.servers, vec!["a:1", "b:2"]);
        assert_eq!(b.default_ttl, Ttl::Never);
        assert_eq!(b.item_size_limit, 2 << 20);
    }
}
