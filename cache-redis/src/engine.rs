//! [`RedisEngine`].

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cache_core::key::{MAX_KEY_LEN, check_key, namespace_prefix};
use cache_core::{
    Bytes, CacheEngine, CacheError, Capabilities, Expiry, KeyDisplay, KeyProblem, Result, Ttl,
};
use redis::{Connection, ErrorKind, IntoConnectionInfo, RedisError, ServerErrorKind};

use cache_core::config::redact_url as redact;

use crate::config::RedisEngineBuilder;

const BACKEND: &str = "redis";
/// The longest TTL accepted: 100 years. Longer ones (`Duration::MAX`) are refused, not clamped.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Redis keeps deadlines in milliseconds and deletes a key once the clock is past it, so a key
/// lives up to 1 ms longer than its TTL, plus 1 ms of rounding the TTL up.
const TTL_RESOLUTION: Duration = Duration::from_millis(2);
/// With relaxed keys: the longest key accepted.
const RELAXED_MAX_KEY_LEN: usize = 64 * 1024;
/// Keys removed per `UNLINK` while clearing a namespace.
const CLEAR_BATCH: usize = 500;

/// A cache engine on a Redis server.
///
/// Cloning shares the connections; [`close`](CacheEngine::close) closes the engine for every
/// clone. See the [crate docs](crate) for URLs, defaults and environment variables.
#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// `host:port/db`, for messages.
    address: String,
    /// The URL with the password hidden.
    shown_url: String,
    prefix: String,
    namespace: Option<String>,
    default_ttl: Ttl,
    timeout: Duration,
    connect_timeout: Duration,
    pool_size: usize,
    max_value_size: usize,
    relaxed_keys: bool,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl RedisEngineBuilder {
    /// Builds the engine. No connection is opened until the first operation (see
    /// [`RedisEngine::ping`]).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a URL that cannot be parsed (or `rediss://` without the `tls`
    /// feature), an invalid namespace, zero timeouts, or a zero or too long default TTL.
    pub fn build(self) -> Result<RedisEngine> {
        if self.url.contains('#') {
            return Err(CacheError::invalid_config(format!(
                "Redis URL {} has a fragment: fragments are not accepted (insecure TLS is only \
                 RedisEngineBuilder::danger_accept_invalid_certs)",
                redact(&self.url)
            )));
        }
        let tls = self.url.starts_with("rediss://");
        if (self.tls_root_certificate.is_some() || self.danger_accept_invalid_certs) && !tls {
            return Err(CacheError::invalid_config(
                "TLS settings need a rediss:// URL",
            ));
        }
        if cfg!(not(feature = "tls")) && tls {
            return Err(CacheError::invalid_config(
                "rediss:// URLs need the `tls` feature of cache-redis",
            ));
        }
        let url = if self.danger_accept_invalid_certs {
            format!("{}#insecure", self.url)
        } else {
            self.url.clone()
        };
        let info = url.as_str().into_connection_info().map_err(|e| {
            CacheError::invalid_config(format!(
                "cannot use Redis URL {}: {}",
                redact(&self.url),
                e.category()
            ))
        })?;
        let db = info.redis_settings().db();
        let address = format!("{}/{db}", info.addr());
        let client = open_client(info, self.tls_root_certificate).map_err(|e| {
            CacheError::invalid_config(format!(
                "cannot use Redis URL {}: {}",
                redact(&self.url),
                e.category()
            ))
        })?;
        let prefix = match &self.namespace {
            Some(ns) => namespace_prefix(ns)?,
            None => String::new(),
        };
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(CacheError::invalid_config(
                "timeouts must be longer than zero (a zero socket timeout would mean none)",
            ));
        }
        match self.default_ttl.resolve(Ttl::Default) {
            Expiry::Now => {
                return Err(CacheError::invalid_config("default_ttl must not be zero"));
            }
            Expiry::After(d) if d > MAX_TTL => {
                return Err(CacheError::invalid_config(format!(
                    "default_ttl of {d:?} is longer than the longest TTL ({MAX_TTL:?})"
                )));
            }
            _ => {}
        }
        Ok(RedisEngine {
            inner: Arc::new(Inner {
                client,
                address,
                shown_url: redact(&self.url),
                prefix,
                namespace: self.namespace,
                default_ttl: self.default_ttl,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
                pool_size: self.pool_size,
                max_value_size: self.max_value_size,
                relaxed_keys: self.relaxed_keys,
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
        })
    }
}

/// Whether an operation may be sent again on a fresh connection after the connection it used
/// turned out dead: true when running it twice gives the same result and state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Idempotent,
    Once,
}

impl RedisEngine {
    /// An engine for `redis://127.0.0.1:6379` with every default; no connection is opened until
    /// the first operation.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// Builds an engine for `url` with the other defaults and checks that the server answers.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a bad URL; `Connection`, `Timeout` or `Authentication` when the
    /// server cannot be reached or refuses the credentials (within the connect timeout, 1 s by
    /// default).
    pub fn connect(url: &str) -> Result<Self> {
        let engine = Self::builder().url(url).build()?;
        engine.ping()?;
        Ok(engine)
    }

    /// An engine configured from the environment (see the crate docs); no connection is opened.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a variable that cannot be parsed, or as [`RedisEngineBuilder::build`].
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// A builder with every default.
    pub fn builder() -> RedisEngineBuilder {
        RedisEngineBuilder::default()
    }

    /// Checks that the server answers (`PING`).
    ///
    /// # Errors
    ///
    /// `Connection`, `Timeout`, `Authentication`, `Closed`.
    pub fn ping(&self) -> Result<()> {
        self.run("PING", Retry::Idempotent, |c| {
            redis::cmd("PING").query::<()>(c)
        })
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }

    fn key(&self, key: &str) -> Result<String> {
        let inner = &*self.inner;
        if inner.relaxed_keys {
            if key.is_empty() {
                return Err(CacheError::invalid_key(key, KeyProblem::Empty));
            }
            if key.len() + inner.prefix.len() > RELAXED_MAX_KEY_LEN {
                return Err(CacheError::invalid_key(
                    key,
                    KeyProblem::TooLong {
                        len: key.len(),
                        max: RELAXED_MAX_KEY_LEN - inner.prefix.len(),
                    },
                ));
            }
        } else {
            check_key(key, inner.prefix.len())?;
        }
        let mut full = String::with_capacity(inner.prefix.len() + key.len());
        full.push_str(&inner.prefix);
        full.push_str(key);
        Ok(full)
    }

    fn keys(&self, keys: &[&str]) -> Result<Vec<String>> {
        keys.iter().map(|k| self.key(k)).collect()
    }

    fn check_value(&self, key: &str, value: &Bytes) -> Result<()> {
        if value.len() > self.inner.max_value_size {
            return Err(CacheError::ValueTooLarge {
                backend: BACKEND,
                key: KeyDisplay::new(key),
                size: value.len(),
                limit: self.inner.max_value_size,
            });
        }
        Ok(())
    }

    /// The expiry of `ttl` in milliseconds: `None` never, `Some(0)` not kept.
    fn expiry_ms(&self, ttl: Ttl) -> Result<Option<u64>> {
        match ttl.resolve(self.inner.default_ttl) {
            Expiry::Never => Ok(None),
            Expiry::Now => Ok(Some(0)),
            Expiry::After(d) if d > MAX_TTL => Err(CacheError::InvalidTtl {
                backend: BACKEND,
                ttl: d,
                max: MAX_TTL,
            }),
            // Rounded up, so never shorter than asked and never zero.
            Expiry::After(d) => Ok(Some(
                cache_core::ttl::ceil_millis(d).unwrap_or(u64::MAX).max(1),
            )),
        }
    }

    fn checkout(&self) -> Result<(Connection, bool)> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(CacheError::Closed { backend: BACKEND });
        }
        if let Some(conn) = self.idle().pop() {
            return Ok((conn, true));
        }
        let conn = inner
            .client
            .get_connection_with_timeout(inner.connect_timeout)
            .map_err(|e| self.error(e, "connect", inner.connect_timeout))?;
        conn.set_read_timeout(Some(inner.timeout))
            .and_then(|()| conn.set_write_timeout(Some(inner.timeout)))
            .map_err(|e| self.error(e, "connect", inner.connect_timeout))?;
        Ok((conn, false))
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The vector is always in a consistent state.
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkin(&self, conn: Connection) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.inner.pool_size {
            idle.push(conn);
        }
    }

    /// Runs `op` on a pooled connection. A connection that saw a transport or protocol error is
    /// dropped, never reused; if it came from the pool (and so may have died while idle, as on a
    /// server restart), the other idle connections are dropped too and an idempotent operation
    /// is tried once more on a fresh connection.
    fn run<T>(
        &self,
        operation: &'static str,
        retry: Retry,
        mut op: impl FnMut(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (mut conn, reused) = self.checkout()?;
            match op(&mut conn) {
                Ok(value) => {
                    self.checkin(conn);
                    return Ok(value);
                }
                Err(e) => {
                    let broken = e.is_io_error()
                        || e.is_timeout()
                        || e.is_unrecoverable_error()
                        || matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType);
                    if !broken {
                        self.checkin(conn);
                        return Err(self.error(e, operation, self.inner.timeout));
                    }
                    drop(conn);
                    let dead_while_idle = reused && !e.is_timeout();
                    if dead_while_idle {
                        self.idle().clear();
                    }
                    if !(dead_while_idle && retry == Retry::Idempotent && attempts == 1) {
                        return Err(self.error(e, operation, self.inner.timeout));
                    }
                }
            }
        }
    }

    fn error(&self, e: RedisError, operation: &'static str, after: Duration) -> CacheError {
        let address = self.inner.address.clone();
        if e.is_timeout() {
            return CacheError::Timeout {
                backend: BACKEND,
                address,
                after,
            };
        }
        let code = e.code().unwrap_or_default().to_string();
        if e.kind() == ErrorKind::AuthenticationFailed || code == "WRONGPASS" || code == "NOAUTH" {
            return CacheError::Authentication {
                backend: BACKEND,
                address,
                source: Some(Box::new(e)),
            };
        }
        if e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm) || code == "NOPERM" {
            return CacheError::PermissionDenied {
                backend: BACKEND,
                operation,
                source: Some(Box::new(e)),
            };
        }
        if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
            return CacheError::Connection {
                backend: BACKEND,
                address,
                source: Some(Box::new(e)),
            };
        }
        CacheError::Backend {
            backend: BACKEND,
            source: Box::new(e),
        }
    }

    fn set_command(key: &str, value: &[u8], ms: Option<u64>) -> redis::Cmd {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ms) = ms {
            cmd.arg("PX").arg(ms);
        }
        cmd
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
            .field("namespace", &inner.namespace)
            .field("default_ttl", &inner.default_ttl)
            .field("timeout", &inner.timeout)
            .field("connect_timeout", &inner.connect_timeout)
            .field("pool_size", &inner.pool_size)
            .field("closed", &inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl CacheEngine for RedisEngine {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = self.key(key)?;
        let value: Option<Vec<u8>> = self.run("GET", Retry::Idempotent, |c| {
            redis::cmd("GET").arg(&key).query(c)
        })?;
        Ok(value.map(Bytes::from))
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let full = self.key(key)?;
        self.check_value(key, &value)?;
        match self.expiry_ms(ttl)? {
            Some(0) => self.run("DEL", Retry::Idempotent, |c| {
                redis::cmd("DEL").arg(&full).query::<()>(c)
            }),
            ms => self.run("SET", Retry::Idempotent, |c| {
                Self::set_command(&full, &value, ms).query::<()>(c)
            }),
        }
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let key = self.key(key)?;
        let removed: u64 =
            self.run("DEL", Retry::Once, |c| redis::cmd("DEL").arg(&key).query(c))?;
        Ok(removed > 0)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let key = self.key(key)?;
        let found: u64 = self.run("EXISTS", Retry::Idempotent, |c| {
            redis::cmd("EXISTS").arg(&key).query(c)
        })?;
        Ok(found > 0)
    }

    fn clear(&self) -> Result<()> {
        if self.inner.prefix.is_empty() {
            return self.run("FLUSHDB", Retry::Idempotent, |c| {
                redis::cmd("FLUSHDB").query::<()>(c)
            });
        }
        let pattern = format!("{}*", escape_glob(&self.inner.prefix));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self.run("SCAN", Retry::Idempotent, |c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(CLEAR_BATCH)
                    .query(c)
            })?;
            // SCAN may return a key twice; UNLINK of a missing key is harmless.
            for batch in keys.chunks(CLEAR_BATCH) {
                self.run("UNLINK", Retry::Idempotent, |c| {
                    redis::cmd("UNLINK").arg(batch).query::<()>(c)
                })?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.idle().clear();
        Ok(())
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let full = self.keys(keys)?;
        if full.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self.run("MGET", Retry::Idempotent, |c| {
            redis::cmd("MGET").arg(&full).query(c)
        })?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let keys = entries
            .iter()
            .map(|(k, _)| self.key(k))
            .collect::<Result<Vec<_>>>()?;
        for (key, value) in entries {
            self.check_value(key, value)?;
        }
        let ms = self.expiry_ms(ttl)?;
        if keys.is_empty() {
            return Ok(());
        }
        if ms == Some(0) {
            return self.run("DEL", Retry::Idempotent, |c| {
                redis::cmd("DEL").arg(&keys).query::<()>(c)
            });
        }
        self.run("SET", Retry::Idempotent, |c| {
            let mut pipe = redis::pipe();
            for (key, (_, value)) in keys.iter().zip(entries) {
                pipe.add_command(Self::set_command(key, value, ms)).ignore();
            }
            pipe.query::<()>(c)
        })
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let full = self.keys(keys)?;
        if full.is_empty() {
            return Ok(0);
        }
        self.run("DEL", Retry::Once, |c| {
            redis::cmd("DEL").arg(&full).query(c)
        })
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let full = self.key(key)?;
        self.check_value(key, &value)?;
        match self.expiry_ms(ttl)? {
            // Nothing would be kept: report whether the key was free, store nothing.
            Some(0) => Ok(!self.exists(key)?),
            ms => {
                let stored: Option<String> = self.run("SET", Retry::Once, |c| {
                    let mut cmd = Self::set_command(&full, &value, ms);
                    cmd.arg("NX");
                    cmd.query(c)
                })?;
                Ok(stored.is_some())
            }
        }
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let full = self.key(key)?;
        let default_ms = self.expiry_ms(Ttl::Default)?;
        // One transaction: create the counter with the default TTL if it is missing (SET NX
        // keeps an existing value and its TTL), then add. INCRBY keeps the TTL.
        let result = self.run("INCRBY", Retry::Once, |c| {
            let mut create = Self::set_command(&full, b"0", default_ms);
            create.arg("NX");
            let (n,): (i64,) = redis::pipe()
                .atomic()
                .add_command(create)
                .ignore()
                .cmd("INCRBY")
                .arg(&full)
                .arg(delta)
                .query(c)?;
            Ok(n)
        });
        result.map_err(|e| match e {
            CacheError::Backend { source, .. } => {
                let text = source.to_string();
                if text.contains("overflow") {
                    CacheError::Overflow {
                        key: KeyDisplay::new(key),
                        delta,
                    }
                } else if text.contains("not an integer") {
                    CacheError::NotANumber {
                        key: KeyDisplay::new(key),
                    }
                } else {
                    CacheError::Backend {
                        backend: BACKEND,
                        source,
                    }
                }
            }
            other => other,
        })
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let full = self.key(key)?;
        match self.expiry_ms(ttl)? {
            Some(0) => Ok(self.delete(key)?),
            Some(ms) => {
                let touched: u64 = self.run("PEXPIRE", Retry::Idempotent, |c| {
                    redis::cmd("PEXPIRE").arg(&full).arg(ms).query(c)
                })?;
                Ok(touched > 0)
            }
            None => {
                // PERSIST answers 0 both for a missing key and one without a TTL: ask EXISTS in
                // the same transaction.
                let (exists,): (u64,) = self.run("PERSIST", Retry::Idempotent, |c| {
                    redis::pipe()
                        .atomic()
                        .cmd("EXISTS")
                        .arg(&full)
                        .cmd("PERSIST")
                        .arg(&full)
                        .ignore()
                        .query(c)
                })?;
                Ok(exists > 0)
            }
        }
    }

    fn capabilities(&self) -> Capabilities {
        let inner = &*self.inner;
        let mut caps = Capabilities::default();
        caps.backend = BACKEND;
        caps.shared_across_threads = true;
        caps.shared_across_processes = true;
        caps.ttl_resolution = TTL_RESOLUTION;
        caps.max_ttl = MAX_TTL;
        caps.max_value_size = Some(inner.max_value_size);
        caps.max_key_len = if inner.relaxed_keys {
            RELAXED_MAX_KEY_LEN - inner.prefix.len()
        } else {
            MAX_KEY_LEN - inner.prefix.len()
        };
        caps.default_ttl = match inner.default_ttl {
            Ttl::Default => Ttl::After(cache_core::DEFAULT_TTL),
            other => other,
        };
        caps
    }
}

#[cfg(feature = "tls")]
fn open_client(
    info: redis::ConnectionInfo,
    root_certificate: Option<Vec<u8>>,
) -> redis::RedisResult<redis::Client> {
    match root_certificate {
        Some(root_cert) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        ),
        None => redis::Client::open(info),
    }
}

#[cfg(not(feature = "tls"))]
fn open_client(
    info: redis::ConnectionInfo,
    root_certificate: Option<Vec<u8>>,
) -> redis::RedisResult<redis::Client> {
    if root_certificate.is_some() {
        return Err(redis::RedisError::from((
            ErrorKind::InvalidClientConfig,
            "a TLS root certificate needs the `tls` feature of cache-redis",
        )));
    }
    redis::Client::open(info)
}

/// Escapes Redis glob characters so a prefix matches only itself.
pub(crate) fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }

    #[test]
    fn bad_urls_are_config_errors() {
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
}
