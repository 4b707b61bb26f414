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
    pub(crate) credentials: Option<(String, Secret)>,
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
    face: PhantomData<fn() -> Face>,
}

/// A password, never shown in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// One server, as given: where, and how to talk to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    /// `host:port`, or `unix:PATH`: where to connect, and the server's name in the ring.
    pub(crate) address: String,
    /// The host alone (no port, IPv6 without brackets), for TLS.
    pub(crate) host: String,
    /// `memcacheds://`.
    pub(crate) tls: bool,
    /// ASCII authentication (`memcached -Y`), from the URL.
    pub(crate) credentials: Option<(String, Secret)>,
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
            credentials: None,
            tls_root_certificate: None,
            danger_accept_invalid_certs: false,
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
            credentials: self.credentials.clone(),
            tls_root_certificate: self.tls_root_certificate.clone(),
            danger_accept_invalid_certs: self.danger_accept_invalid_certs,
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
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(user, _)| (user, "***")),
            )
            .field("tls_root_certificate", &self.tls_root_certificate.is_some())
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl<Face> MemcachedEngineBuilder<Face> {
    /// The server: `memcached://[user:password@]host[:port]`, `memcache://...` or
    /// `host[:port]`; port 11211 by default. `memcacheds://` connects over TLS (memcached
    /// 1.5.13+ started with `-Z`; feature `tls`). A user and password (percent-encoded) log in
    /// with memcached's ASCII authentication (`-Y` auth file) on every new connection. A server on the same host can be reached through its Unix domain
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

    /// Logs in on every new connection with memcached's ASCII authentication (memcached 1.5.15+
    /// started with `-Y` and an auth file of `user:password` lines), for servers whose URL
    /// names no user. Over plain TCP the password crosses the network in the clear: use
    /// `memcacheds://` beyond the host. A wrong password fails every operation with
    /// `CacheError::Authentication`.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), Secret(password.into())));
        self
    }

    /// Trusts the CA certificate(s) in `pem` (PEM format) for `memcacheds://` servers, instead
    /// of the system's and the webpki roots. Needs the `tls` feature.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// Accepts any server certificate on `memcacheds://` servers: **no protection against a
    /// man in the middle**; for tests against self-signed servers only. A URL can never turn
    /// this on. Needs the `tls` feature.
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.danger_accept_invalid_certs = true;
        self
    }

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

/// A server given as a URL, an address or a socket path.
pub(crate) fn parse_server(server: &str) -> Result<Server> {
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
        let path = decode(path, server)?;
        return Ok(Server {
            address: format!("{}{path}", cache_remote::UNIX_PREFIX),
            host: path,
            tls: false,
            credentials: None,
        });
    }
    let (tls, rest) = if let Some(rest) = server.strip_prefix("memcacheds://") {
        (true, rest)
    } else {
        let rest = server
            .strip_prefix("memcached://")
            .or_else(|| server.strip_prefix("memcache://"))
            .unwrap_or(server);
        (false, rest)
    };
    let shown = match server.rsplit_once('@') {
        Some((_, host)) if !server.contains("://") => format!("***@{host}"),
        _ => cache_core::config::redact_url(server),
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((info, rest)) => (Some(info), rest),
        None => (None, rest),
    };
    if rest.is_empty() || rest.contains(['/', '@', '?', '#', ' ']) || rest.contains("://") {
        return Err(CacheError::invalid_config(format!(
            "memcached server must be memcached://[user:password@]host[:port] or host[:port], \
             got {shown:?}"
        )));
    }
    let credentials = match userinfo {
        None => None,
        Some(info) => {
            let (user, password) = info.split_once(':').ok_or_else(|| {
                CacheError::invalid_config(format!(
                    "memcached server {shown:?}: credentials must be user:password"
                ))
            })?;
            Some((decode(user, &shown)?, Secret(decode(password, &shown)?)))
        }
    };
    // An IPv6 literal is bracketed: [::1]:11211.
    let has_port = match rest.rfind(']') {
        Some(close) => rest[close..].contains(':'),
        None => rest.contains(':'),
    };
    let (host, address) = if has_port {
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, ""));
        if port.parse::<u16>().is_err() {
            return Err(CacheError::invalid_config(format!(
                "memcached server {shown:?} has an invalid port"
            )));
        }
        (host, rest.to_string())
    } else {
        (rest, format!("{rest}:11211"))
    };
    Ok(Server {
        address,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        tls,
        credentials,
    })
}

fn decode(part: &str, shown: &str) -> Result<String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| {
            CacheError::invalid_config(format!(
                "memcached server {shown:?} is not UTF-8 once percent-decoded"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        let address = |text: &str| parse_server(text).map(|server| server.address);
        assert_eq!(address("memcached://cache:11300").unwrap(), "cache:11300");
        assert_eq!(address("memcache://cache").unwrap(), "cache:11211");
        assert_eq!(address("10.0.0.1").unwrap(), "10.0.0.1:11211");
        assert_eq!(address("[::1]:11212").unwrap(), "[::1]:11212");
        assert_eq!(address("[::1]").unwrap(), "[::1]:11211");
        let secure = parse_server("memcacheds://app:p%40ss@[::1]:11300").unwrap();
        assert_eq!(
            (secure.address.as_str(), secure.host.as_str(), secure.tls),
            ("[::1]:11300", "::1", true)
        );
        assert_eq!(
            secure.credentials,
            Some(("app".into(), Secret("p@ss".into())))
        );
        assert!(!format!("{secure:?}").contains("p@ss"));
        let err = parse_server("memcached://app@h").unwrap_err().to_string();
        assert!(err.contains("user:password"), "{err}");
        let err = parse_server("memcached://app:hunter2@h:x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(parse_server("http://x/y").is_err());
        for unix in [
            "memcached+unix:///run/mc.sock",
            "unix:///run/mc.sock",
            "/run/mc.sock",
        ] {
            assert_eq!(address(unix).unwrap(), "unix:/run/mc.sock", "{unix}");
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
