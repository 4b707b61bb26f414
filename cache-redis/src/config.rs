//! Configuration: URL, builder, environment.

use std::fmt;
use std::time::Duration;

use cache_core::config::{parse_millis, parse_number, parse_ttl, redact_url as redact};
use cache_core::{CacheError, Result, Ttl};

/// The URL `RedisEngine::new()` uses: `redis://127.0.0.1:6379`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Default bound on one operation (request and reply): 1 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on opening a connection, handshake included: 1 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of idle connections kept for reuse: 8.
pub const DEFAULT_POOL_SIZE: usize = 8;
/// Default largest value: 512 MiB, Redis's `proto-max-bulk-len`.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 512 * 1024 * 1024;

/// Builds a [`RedisEngine`](crate::RedisEngine). Setters cannot fail; [`build`](Self::build)
/// checks everything.
#[must_use]
#[derive(Clone)]
pub struct RedisEngineBuilder {
    pub(crate) url: String,
    pub(crate) namespace: Option<String>,
    pub(crate) default_ttl: Ttl,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_size: usize,
    pub(crate) max_value_size: usize,
    pub(crate) relaxed_keys: bool,
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
}

impl Default for RedisEngineBuilder {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            namespace: None,
            default_ttl: Ttl::Default,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_size: DEFAULT_POOL_SIZE,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            relaxed_keys: false,
            tls_root_certificate: None,
            danger_accept_invalid_certs: false,
        }
    }
}

impl fmt::Debug for RedisEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngineBuilder")
            .field("url", &redact(&self.url))
            .field("namespace", &self.namespace)
            .field("default_ttl", &self.default_ttl)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_size", &self.pool_size)
            .field("max_value_size", &self.max_value_size)
            .field("relaxed_keys", &self.relaxed_keys)
            .field(
                "tls_root_certificate",
                &self.tls_root_certificate.as_ref().map(|_| "set"),
            )
            .field(
                "danger_accept_invalid_certs",
                &self.danger_accept_invalid_certs,
            )
            .finish()
    }
}

impl RedisEngineBuilder {
    /// The server: `redis://[user][:password@]host[:port][/db]`, or `rediss://` for TLS (feature
    /// `tls`). Default `redis://127.0.0.1:6379`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Puts every key under this namespace; `clear()` then removes exactly the namespace's keys.
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

    /// The longest opening a connection may take, handshake included; default 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many idle connections are kept for reuse; default 8. More connections are opened when
    /// more threads need one at once; the extra ones are closed after use.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// The largest value accepted, in bytes; default 512 MiB (Redis's own limit). Larger values
    /// are refused with `ValueTooLarge` before anything is sent.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Accepts keys that break the portable key rule (whitespace, control characters, up to
    /// 64 KiB), which Redis stores fine but other engines refuse. Default off, so keys stay
    /// portable between engines.
    pub fn relaxed_keys(mut self, relaxed: bool) -> Self {
        self.relaxed_keys = relaxed;
        self
    }

    /// Trusts the CA certificate(s) in `pem` (PEM format) for `rediss://` URLs, instead of the
    /// system's and the webpki roots. Needs the `tls` feature.
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate = Some(pem.into());
        self
    }

    /// Accepts any server certificate on `rediss://` URLs: **no protection against a
    /// man-in-the-middle**. For tests only. This is the only way to turn verification off: a URL
    /// fragment such as `#insecure` is refused. Needs the `tls` feature.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.danger_accept_invalid_certs = accept;
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

    /// Like [`from_env`](Self::from_env) with another source of variables (a config system,
    /// a test).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` naming the variable that cannot be parsed.
    pub fn from_lookup(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        if let Some(url) = lookup("CACHE_REDIS_URL") {
            self.url = url;
        }
        if let Some(namespace) = lookup("CACHE_REDIS_NAMESPACE") {
            self.namespace = Some(namespace);
        }
        if let Some(ttl) = lookup("CACHE_REDIS_DEFAULT_TTL") {
            self.default_ttl = parse_ttl("CACHE_REDIS_DEFAULT_TTL", &ttl)?;
        }
        if let Some(ms) = lookup("CACHE_REDIS_TIMEOUT_MS") {
            self.timeout = parse_millis("CACHE_REDIS_TIMEOUT_MS", &ms)?;
        }
        if let Some(ms) = lookup("CACHE_REDIS_CONNECT_TIMEOUT_MS") {
            self.connect_timeout = parse_millis("CACHE_REDIS_CONNECT_TIMEOUT_MS", &ms)?;
        }
        if let Some(size) = lookup("CACHE_REDIS_POOL_SIZE") {
            self.pool_size = usize::try_from(parse_number("CACHE_REDIS_POOL_SIZE", &size)?)
                .map_err(|_| CacheError::invalid_config("CACHE_REDIS_POOL_SIZE is too large"))?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(
            redact("redis://app:s3cret@host:6379/2"),
            "redis://app:***@host:6379/2"
        );
        assert_eq!(redact("redis://:s3cret@host"), "redis://:***@host");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert!(!redact("rediss://u:p%40ss@h/0").contains("p%40ss"));
    }

    #[test]
    fn env_lookup() {
        let vars = |name: &str| match name {
            "CACHE_REDIS_URL" => Some("redis://10.0.0.1:7000/3".to_string()),
            "CACHE_REDIS_NAMESPACE" => Some("svc".to_string()),
            "CACHE_REDIS_DEFAULT_TTL" => Some("1.5".to_string()),
            "CACHE_REDIS_TIMEOUT_MS" => Some("250".to_string()),
            _ => None,
        };
        let b = RedisEngineBuilder::default().from_lookup(vars).unwrap();
        assert_eq!(b.url, "redis://10.0.0.1:7000/3");
        assert_eq!(b.namespace.as_deref(), Some("svc"));
        assert_eq!(b.default_ttl, Ttl::After(Duration::from_millis(1500)));
        assert_eq!(b.timeout, Duration::from_millis(250));
        let bad = RedisEngineBuilder::default()
            .from_lookup(|n| (n == "CACHE_REDIS_POOL_SIZE").then(|| "many".to_string()));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("CACHE_REDIS_POOL_SIZE")
        );
    }
}
