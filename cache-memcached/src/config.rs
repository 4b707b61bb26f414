//! Configuration: servers, builder, environment.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use cache_core::config::parse_number;
use cache_core::{CacheError, Result};
use cache_remote::{Async, Blocking, RemoteOptions};

/// The server `MemcachedEngine::new()` uses: `127.0.0.1:11211`.
pub const DEFAULT_SERVER: &str = "127.0.0.1:11211";
/// Default item size limit of the server (`memcached -I`): 1 MiB. The engine also learns the
/// server's own limit when it connects, and uses the smaller.
pub const DEFAULT_ITEM_SIZE_LIMIT: usize = 1024 * 1024;
/// Default bound on how long another engine may keep using a namespace's generation after a
/// `clear()`: 1 s.
pub const DEFAULT_GENERATION_REFRESH: Duration = Duration::from_secs(1);
/// Default number of operations in a row that must fail on a server before it is taken out of
/// the ring: 3.
pub const DEFAULT_FAILURE_LIMIT: u32 = 3;
/// Default time a server stays out of the ring before it is tried again: 5 s.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Builds a [`MemcachedEngine`](crate::MemcachedEngine) of either face:
/// `MemcachedEngine::builder()` for the blocking face ([`Blocking`]),
/// `MemcachedEngine::async_builder()` (with the `tokio` feature) for the async one ([`Async`]).
/// The setters of one face's connections exist on that face's builder only. Setters cannot
/// fail; `build` checks everything.
#[must_use]
pub struct MemcachedEngineBuilder<Face = Blocking> {
    pub(crate) servers: Vec<String>,
    pub(crate) options: RemoteOptions,
    pub(crate) item_size_limit: usize,
    pub(crate) hash_keys: bool,
    pub(crate) generation_refresh: Duration,
    pub(crate) failure_limit: u32,
    pub(crate) retry_after: Duration,
    face: PhantomData<fn() -> Face>,
}

impl<Face> Default for MemcachedEngineBuilder<Face> {
    fn default() -> Self {
        Self {
            servers: vec![DEFAULT_SERVER.into()],
            options: RemoteOptions::default(),
            item_size_limit: DEFAULT_ITEM_SIZE_LIMIT,
            hash_keys: false,
            generation_refresh: DEFAULT_GENERATION_REFRESH,
            failure_limit: DEFAULT_FAILURE_LIMIT,
            retry_after: DEFAULT_RETRY_AFTER,
            face: PhantomData,
        }
    }
}

impl<Face> Clone for MemcachedEngineBuilder<Face> {
    fn clone(&self) -> Self {
        Self {
            servers: self.servers.clone(),
            options: self.options.clone(),
            item_size_limit: self.item_size_limit,
            hash_keys: self.hash_keys,
            generation_refresh: self.generation_refresh,
            failure_limit: self.failure_limit,
            retry_after: self.retry_after,
            face: PhantomData,
        }
    }
}

impl<Face> fmt::Debug for MemcachedEngineBuilder<Face> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedEngineBuilder")
            .field("servers", &self.servers)
            .field("options", &self.options)
            .field("item_size_limit", &self.item_size_limit)
            .field("hash_keys", &self.hash_keys)
            .field("generation_refresh", &self.generation_refresh)
            .field("failure_limit", &self.failure_limit)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl<Face> MemcachedEngineBuilder<Face> {
    /// The server: `memcached://host[:port]`, `memcache://host[:port]` or `host[:port]`;
    /// port 11211 by default. A server on the same host can be reached through its Unix domain
    /// socket (memcached's `-s PATH`): `memcached+unix:///path/to/memcached.sock`,
    /// `unix:///path...`, or the absolute path alone, as libmemcached takes it. Replaces any
    /// server set before.
    pub fn server(mut self, server: impl Into<String>) -> Self {
        self.servers = vec![server.into()];
        self
    }

    /// The servers, each as [`server`](Self::server) takes it. Keys are spread over them with
    /// ketama consistent hashing, placed exactly as libmemcached places them with
    /// `MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED` (pylibmc's `ketama_weighted`, PHP's
    /// `Memcached::OPT_LIBKETAMA_COMPATIBLE`), so clients in other languages find the same key on
    /// the same server; adding a fourth server to three moves about a quarter of the keys. The
    /// order does not matter. See the [crate docs](crate#several-servers) for what happens when
    /// one fails.
    pub fn servers<S: Into<String>>(mut self, servers: impl IntoIterator<Item = S>) -> Self {
        self.servers = servers.into_iter().map(Into::into).collect();
        self
    }

    /// With several servers: how many operations in a row must fail on a server (it cannot be
    /// reached, breaks the connection, or does not answer within the timeout) before it is taken
    /// out of the ring; its keys then go to the next server, as misses. Default 3. With one
    /// server, it is never taken out: its errors are the caller's to see.
    pub fn server_failure_limit(mut self, failures: u32) -> Self {
        self.failure_limit = failures;
        self
    }

    /// With several servers: how long a server taken out stays out before it is tried again
    /// (one `mn` no-op, within the timeout). Default 5 s. A server that answers comes back
    /// into the ring; a namespaced engine first moves the namespace to a new generation, so
    /// that nothing the server held from before can be read again.
    pub fn server_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    cache_remote::remote_builder_setters!();

    /// The item size limit (`memcached -I`); default 1 MiB. The engine also learns the server's
    /// own limit (`stats settings`) on every new connection and uses the smaller, so values the
    /// server would refuse are refused with `ValueTooLarge` before anything is sent.
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
        self.options.read_env("CACHE_MEMCACHED", &lookup)?;
        if let Some(size) = lookup("CACHE_MEMCACHED_ITEM_SIZE_LIMIT") {
            self.item_size_limit = to_usize(
                "CACHE_MEMCACHED_ITEM_SIZE_LIMIT",
                parse_number("CACHE_MEMCACHED_ITEM_SIZE_LIMIT", &size)?,
            )?;
        }
        Ok(self)
    }
}

impl MemcachedEngineBuilder<Blocking> {
    cache_remote::blocking_builder_setters!();
}

impl MemcachedEngineBuilder<Async> {
    cache_remote::async_builder_setters!();
}

fn to_usize(name: &str, n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| CacheError::invalid_config(format!("{name} is too large")))
}

/// `host:port` of a server given as a URL or an address, or `unix:PATH` for a Unix domain
/// socket.
pub(crate) fn parse_server(server: &str) -> Result<String> {
    let unix = server
        .strip_prefix("memcached+unix://")
        .or_else(|| server.strip_prefix("memcache+unix://"))
        .or_else(|| server.strip_prefix("unix://"))
        .or_else(|| server.starts_with('/').then_some(server));
    if let Some(path) = unix {
        if !path.starts_with('/') || path.contains(['?', '#']) {
            return Err(CacheError::invalid_config(format!(
                "a memcached socket must be an absolute path (memcached+unix:///run/memcached.sock), \
                 got {server:?}"
            )));
        }
        let path = percent_encoding::percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| {
                CacheError::invalid_config(format!(
                    "memcached socket {server:?} is not UTF-8 once percent-decoded"
                ))
            })?;
        return Ok(format!("{}{path}", cache_remote::UNIX_PREFIX));
    }
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
        for unix in [
            "memcached+unix:///run/mc.sock",
            "unix:///run/mc.sock",
            "/run/mc.sock",
        ] {
            assert_eq!(parse_server(unix).unwrap(), "unix:/run/mc.sock", "{unix}");
        }
        assert!(parse_server("unix://run/mc.sock").is_err());
        assert!(parse_server("memcached+unix:///run/mc.sock?x=1").is_err());
        assert!(parse_server("cache:port").is_err());
        assert!(parse_server("").is_err());
    }

    #[test]
    fn env_lookup() {
        let b = MemcachedEngineBuilder::<Blocking>::default()
            .from_lookup(|name| match name {
                "CACHE_MEMCACHED_SERVERS" => Some("a:1, b:2".into()),
                "CACHE_MEMCACHED_DEFAULT_TTL" => Some("never".into()),
                "CACHE_MEMCACHED_MAX_CONNECTIONS" => Some("7".into()),
                "CACHE_MEMCACHED_ITEM_SIZE_LIMIT" => Some("2097152".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(b.servers, vec!["a:1", "b:2"]);
        assert_eq!(b.options.default_ttl, cache_core::Ttl::Never);
        assert_eq!(b.options.client.max_connections, 7);
        assert_eq!(b.item_size_limit, 2 << 20);
    }
}
