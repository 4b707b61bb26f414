//! Configuration: URL, builder, environment.

use std::fmt;

use std::marker::PhantomData;

use cache_core::config::redact_url as redact;
use cache_core::{CacheError, Result};
use cache_remote::{Async, Blocking, RemoteOptions};

/// The URL `RedisEngine::new()` uses: `redis://127.0.0.1:6379`.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// Default largest value: 512 MiB, Redis's `proto-max-bulk-len`.
pub const DEFAULT_MAX_VALUE_SIZE: usize = 512 * 1024 * 1024;

/// Builds a [`RedisEngine`](crate::RedisEngine), or with the `tokio` feature an
/// `AsyncRedisEngine` (`AsyncRedisEngine::builder()`, the [`Async`] face). Setters cannot fail;
/// `build` checks everything.
#[must_use]
pub struct RedisEngineBuilder<Face = Blocking> {
    pub(crate) url: String,
    pub(crate) options: RemoteOptions,
    pub(crate) max_value_size: usize,
    pub(crate) relaxed_keys: bool,
    pub(crate) tls_root_certificate: Option<Vec<u8>>,
    pub(crate) danger_accept_invalid_certs: bool,
    face: PhantomData<fn() -> Face>,
}

impl<Face> Default for RedisEngineBuilder<Face> {
    fn default() -> Self {
        Self {
            url: DEFAULT_URL.into(),
            options: RemoteOptions::default(),
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            relaxed_keys: false,
            tls_root_certificate: None,
            danger_accept_invalid_certs: false,
            face: PhantomData,
        }
    }
}

impl<Face> Clone for RedisEngineBuilder<Face> {
    fn clone(&self) -> Self {
        Self {
            url: self.url.clone(),
            options: self.options.clone(),
            max_value_size: self.max_value_size,
            relaxed_keys: self.relaxed_keys,
            tls_root_certificate: self.tls_root_certificate.clone(),
            danger_accept_invalid_certs: self.danger_accept_invalid_certs,
            face: PhantomData,
        }
    }
}

impl<Face> fmt::Debug for RedisEngineBuilder<Face> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEngineBuilder")
            .field("url", &redact(&self.url))
            .field("options", &self.options)
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

impl<Face> RedisEngineBuilder<Face> {
    /// The server: `redis://[user][:password@]host[:port][/db]`, or `rediss://` for TLS (feature
    /// `tls`). Default `redis://127.0.0.1:6379`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    cache_remote::remote_builder_setters!();

    /// The largest value accepted, in bytes; default 512 MiB (Redis's own limit). Larger values
    /// are refused with `ValueTooLarge` before anything is sent, and a reply announcing a
    /// larger value is refused before it is read (the connection is dropped).
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
        self.options.read_env("CACHE_REDIS", &lookup)?;
        Ok(self)
    }
}

impl RedisEngineBuilder<Blocking> {
    cache_remote::blocking_builder_setters!();
}

impl RedisEngineBuilder<Async> {
    cache_remote::async_builder_setters!();
}

/// A password that never shows in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A parsed Redis URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUrl {
    /// The host as written (an IPv6 literal keeps its brackets).
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) db: u32,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<Secret>,
    pub(crate) tls: bool,
}

impl ServerUrl {
    /// `host:port`, to connect to and to name in errors.
    pub(crate) fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Parses `redis://[user][:password@]host[:port][/db]` or `rediss://...`.
pub(crate) fn parse_url(text: &str) -> Result<ServerUrl> {
    let bad = |why: &str| {
        CacheError::invalid_config(format!("cannot use Redis URL {}: {why}", redact(text)))
    };
    if text.contains('#') {
        return Err(bad("fragments are not accepted (insecure TLS is only \
             RedisEngineBuilder::danger_accept_invalid_certs)"));
    }
    let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    let tls = match url.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(bad(&format!(
                "the scheme must be redis:// or rediss://, not {other}://"
            )));
        }
    };
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        Some(host) => host.to_string(),
        None => return Err(bad("no host")),
    };
    if url.query().is_some() {
        return Err(bad("query parameters are not accepted"));
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db
            .parse()
            .map_err(|_| bad("the path must be a database number (/0)"))?,
    };
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| bad("credentials must be UTF-8 once percent-decoded"))
    };
    let username = Some(decode(url.username())?).filter(|u| !u.is_empty());
    let password = url.password().map(decode).transpose()?.map(Secret);
    Ok(ServerUrl {
        host,
        port: url.port().unwrap_or(6379),
        db,
        username,
        password,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let plain = parse_url("redis://127.0.0.1").unwrap();
        assert_eq!(plain.address(), "127.0.0.1:6379");
        assert_eq!(
            (plain.db, plain.tls, plain.password.is_none()),
            (0, false, true)
        );
        let full = parse_url("rediss://app:p%40ss%2Bw@cache.internal:6380/2").unwrap();
        assert_eq!(full.address(), "cache.internal:6380");
        assert_eq!(full.username.as_deref(), Some("app"));
        assert_eq!(full.password, Some(Secret("p@ss+w".into())));
        assert_eq!((full.db, full.tls), (2, true));
        let only_password = parse_url("redis://:secret@h/").unwrap();
        assert_eq!(only_password.username, None);
        assert_eq!(only_password.password, Some(Secret("secret".into())));
        assert_eq!(
            parse_url("redis://[::1]:7000").unwrap().address(),
            "[::1]:7000"
        );
    }

    #[test]
    fn bad_urls_name_the_problem_without_the_password() {
        for bad in [
            "http://h",
            "redis://",
            "redis://h/x",
            "redis://h?protocol=resp3",
            "redis://u:hunter2@h#insecure",
            "not a url",
        ] {
            let err = parse_url(bad).unwrap_err();
            assert!(
                matches!(err, CacheError::InvalidConfig { .. }),
                "{bad}: {err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn passwords_never_show_in_debug() {
        let url = parse_url("redis://u:hunter2@h").unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
        let builder = RedisEngineBuilder::<Blocking>::default().url("redis://u:hunter2@h");
        assert!(!format!("{builder:?}").contains("hunter2"));
    }

    #[test]
    fn env_lookup() {
        let vars = |name: &str| match name {
            "CACHE_REDIS_URL" => Some("redis://10.0.0.1:7000/3".to_string()),
            "CACHE_REDIS_NAMESPACE" => Some("svc".to_string()),
            "CACHE_REDIS_TIMEOUT_MS" => Some("250".to_string()),
            _ => None,
        };
        let b = RedisEngineBuilder::<Blocking>::default()
            .from_lookup(vars)
            .unwrap();
        assert_eq!(b.url, "redis://10.0.0.1:7000/3");
        assert_eq!(b.options.namespace.as_deref(), Some("svc"));
        assert_eq!(
            b.options.client.timeout,
            std::time::Duration::from_millis(250)
        );
        let bad = RedisEngineBuilder::<Blocking>::default()
            .from_lookup(|n| (n == "CACHE_REDIS_MAX_CONNECTIONS").then(|| "many".to_string()));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("CACHE_REDIS_MAX_CONNECTIONS")
        );
    }
}
