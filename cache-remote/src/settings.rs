//! Settings every remote engine shares, their defaults, checks and environment variables, and
//! the builder setters that expose them.

use std::time::Duration;

use cache_core::config::{parse_millis, parse_number, parse_ttl};
use cache_core::key::KeySpace;
use cache_core::{CacheError, Capabilities, Expiry, Result, Ttl};

/// Default bound on one operation, request and every reply: 1 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on opening a connection, handshake included: 1 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default bound on the connections an engine has open at once: 32.
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// Default number of idle connections an engine keeps: 32 (all of them).
pub const DEFAULT_MAX_IDLE_CONNECTIONS: usize = 32;
/// Default number of connections an async engine pipelines its callers' requests on: 1.
pub const DEFAULT_PIPELINES: usize = 1;
/// Default time without traffic after which a connection is checked: 30 s.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);
/// Default bound on the requests waiting on one async connection: 16,384.
pub const DEFAULT_MAX_QUEUED_REQUESTS: usize = 16 * 1024;
/// Default bound on the request bytes waiting to be written on one async connection: 64 MiB.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// How a client talks to its server: deadlines and the connection bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// The longest one operation may take: waiting for a free connection, the request and
    /// every reply.
    pub timeout: Duration,
    /// The longest opening a connection may take, handshake included.
    pub connect_timeout: Duration,
    /// The most connections open at once; past it, blocking callers share connections
    /// (pipelined), except over TLS, where they wait (until their deadline) for one.
    pub max_connections: usize,
    /// The most idle connections kept for reuse.
    pub max_idle_connections: usize,
    /// How many connections the async transport pipelines its callers' requests on.
    pub pipelines: usize,
    /// How long a connection may go without traffic before it is checked (`None`: never).
    /// The async transport then sends the backend's [`keepalive`](crate::Backend::keepalive)
    /// request, and closes the connection unless it is answered within `timeout`; the blocking
    /// transport closes an idle connection this old instead of reusing it. Sockets of both
    /// have TCP keepalive on, probing after this long.
    pub keepalive: Option<Duration>,
    /// The most requests waiting on one async connection: queued to be written, or written
    /// and not yet answered. Past it, operations fail at once with `Overloaded`.
    pub max_queued_requests: usize,
    /// The most request bytes waiting to be written on one async connection (a request larger
    /// than this is sent when nothing else waits). Past it, operations fail at once with
    /// `Overloaded`.
    pub max_queued_bytes: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_idle_connections: DEFAULT_MAX_IDLE_CONNECTIONS,
            pipelines: DEFAULT_PIPELINES,
            keepalive: Some(DEFAULT_KEEPALIVE),
            max_queued_requests: DEFAULT_MAX_QUEUED_REQUESTS,
            max_queued_bytes: DEFAULT_MAX_QUEUED_BYTES,
        }
    }
}

impl ClientSettings {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a zero timeout or keepalive, or a zero connection or queue bound.
    pub fn validate(&self) -> Result<()> {
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(CacheError::invalid_config(
                "timeouts must be longer than zero",
            ));
        }
        if self.keepalive.is_some_and(|k| k < Duration::from_secs(1)) {
            return Err(CacheError::invalid_config(
                "keepalive must be at least 1 s (TCP keepalive counts whole seconds), or None",
            ));
        }
        if self.max_connections == 0 || self.pipelines == 0 {
            return Err(CacheError::invalid_config(
                "max_connections and pipelines must be at least 1",
            ));
        }
        if self.max_queued_requests == 0 || self.max_queued_bytes == 0 {
            return Err(CacheError::invalid_config(
                "max_queued_requests and max_queued_bytes must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What every remote engine's builder holds besides its servers: namespace, default TTL and
/// client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOptions {
    /// The namespace every key lives under, if any.
    pub namespace: Option<String>,
    /// What `Ttl::Default` stands for.
    pub default_ttl: Ttl,
    /// Deadlines and connection bounds.
    pub client: ClientSettings,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            default_ttl: Ttl::Default,
            client: ClientSettings::default(),
        }
    }
}

impl RemoteOptions {
    /// Reads the shared variables `{prefix}_NAMESPACE`, `{prefix}_DEFAULT_TTL` (seconds or
    /// `never`), `{prefix}_TIMEOUT_MS`, `{prefix}_CONNECT_TIMEOUT_MS`,
    /// `{prefix}_MAX_CONNECTIONS`, `{prefix}_MAX_IDLE_CONNECTIONS`, `{prefix}_KEEPALIVE_MS`
    /// (`0` or `off` turns it off), `{prefix}_PIPELINES`, `{prefix}_MAX_QUEUED_REQUESTS` and
    /// `{prefix}_MAX_QUEUED_BYTES` from `lookup`.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` naming a variable that cannot be parsed.
    pub fn read_env(
        &mut self,
        prefix: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<()> {
        let var = |name: &str| {
            let full = format!("{prefix}_{name}");
            lookup(&full).map(|value| (full, value))
        };
        if let Some((_, namespace)) = var("NAMESPACE") {
            self.namespace = Some(namespace);
        }
        if let Some((name, ttl)) = var("DEFAULT_TTL") {
            self.default_ttl = parse_ttl(&name, &ttl)?;
        }
        if let Some((name, ms)) = var("TIMEOUT_MS") {
            self.client.timeout = parse_millis(&name, &ms)?;
        }
        if let Some((name, ms)) = var("CONNECT_TIMEOUT_MS") {
            self.client.connect_timeout = parse_millis(&name, &ms)?;
        }
        if let Some((name, ms)) = var("KEEPALIVE_MS") {
            self.client.keepalive = match ms.trim() {
                "0" | "off" => None,
                ms => Some(parse_millis(&name, ms)?),
            };
        }
        for (suffix, field) in [
            ("MAX_CONNECTIONS", &mut self.client.max_connections),
            (
                "MAX_IDLE_CONNECTIONS",
                &mut self.client.max_idle_connections,
            ),
            ("PIPELINES", &mut self.client.pipelines),
            ("MAX_QUEUED_REQUESTS", &mut self.client.max_queued_requests),
            ("MAX_QUEUED_BYTES", &mut self.client.max_queued_bytes),
        ] {
            if let Some((name, n)) = var(suffix) {
                *field = usize::try_from(parse_number(&name, &n)?)
                    .map_err(|_| CacheError::invalid_config(format!("{name} is too large")))?;
            }
        }
        Ok(())
    }

    /// Checks everything but the servers: the client settings, the namespace, and that the
    /// default TTL is not zero and at most `max_ttl`. Returns the key space of the namespace.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` saying what is wrong.
    pub fn validate(&self, max_ttl: Duration) -> Result<KeySpace> {
        self.client.validate()?;
        match self.default_ttl.resolve(Ttl::Default) {
            Expiry::Now => return Err(CacheError::invalid_config("default_ttl must not be zero")),
            Expiry::After(d) if d > max_ttl => {
                return Err(CacheError::invalid_config(format!(
                    "default_ttl of {d:?} is longer than the longest TTL ({max_ttl:?})"
                )));
            }
            _ => {}
        }
        KeySpace::new(self.namespace.as_deref())
    }

    /// The capabilities every remote engine shares: shared across threads and processes, and
    /// the default TTL; the caller fills in the backend's limits.
    pub fn capabilities(&self, backend: &'static str) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.backend = backend;
        caps.shared_across_threads = true;
        caps.shared_across_processes = true;
        caps.operations = cache_core::Operations::ALL;
        caps.default_ttl = match self.default_ttl {
            Ttl::Default => Ttl::After(cache_core::DEFAULT_TTL),
            other => other,
        };
        caps.namespace = self.namespace.clone();
        caps
    }
}

/// Expands, inside the `impl` of a remote engine's builder that has a field
/// `options: RemoteOptions` and a method `from_lookup`, into the setters every remote engine
/// shares, blocking or async: `namespace`, `default_ttl`, `timeout`, `connect_timeout`, and
/// `from_env`, so that every engine names and documents them the same way.
#[macro_export]
macro_rules! remote_builder_setters {
    () => {
        /// Puts every key under this namespace; `clear()` then removes exactly the namespace's
        /// entries.
        pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
            self.options.namespace = Some(namespace.into());
            self
        }

        /// The TTL that `Ttl::Default` stands for; default 300 s.
        pub fn default_ttl(mut self, ttl: impl Into<$crate::__private::Ttl>) -> Self {
            self.options.default_ttl = ttl.into();
            self
        }

        /// The longest one operation may take: waiting for a free connection, the request and
        /// every reply. Default 1 s. Opening a new connection adds up to
        /// [`connect_timeout`](Self::connect_timeout).
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.client.timeout = timeout;
            self
        }

        /// The longest opening a connection may take, handshake included; default 1 s.
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.client.connect_timeout = timeout;
            self
        }

        /// How long a connection may go without traffic before it is checked; default 30 s,
        /// `None` turns the checks off. A flow that died silently (a NAT or load balancer
        /// that forgot it, a failed-over address) is then found in the background, not by the
        /// first request after a quiet spell: the async engines send a ping (Redis `PING`,
        /// memcached `mn`) and close the connection unless it is answered within `timeout`;
        /// the blocking engines close an idle connection this old instead of reusing it.
        /// Sockets have TCP keepalive on as well, probing after this long. At least 1 s.
        pub fn keepalive(mut self, keepalive: impl Into<Option<std::time::Duration>>) -> Self {
            self.options.client.keepalive = keepalive.into();
            self
        }

        /// Reads the settings from environment variables (see the crate docs), starting from
        /// the values set so far.
        ///
        /// # Errors
        ///
        /// `InvalidConfig` naming the variable that cannot be parsed.
        pub fn from_env(self) -> $crate::__private::Result<Self> {
            self.from_lookup(|name| std::env::var(name).ok())
        }
    };
}

/// Expands into the connection setters of a blocking builder: `max_connections` and
/// `max_idle_connections`.
#[macro_export]
macro_rules! blocking_builder_setters {
    () => {
        /// The most connections open at once; default 32. More concurrent callers share the
        /// least busy connections: their requests are pipelined on them and each caller gets
        /// its own replies, within its own deadline. Over TLS a connection is never shared:
        /// more callers wait for a free one until their deadline, then get `Timeout`.
        pub fn max_connections(mut self, connections: usize) -> Self {
            self.options.client.max_connections = connections;
            self
        }

        /// The most idle connections kept for reuse; default 32. Never more than
        /// [`max_connections`](Self::max_connections).
        pub fn max_idle_connections(mut self, connections: usize) -> Self {
            self.options.client.max_idle_connections = connections;
            self
        }
    };
}

/// Expands into the connection setter of an async builder: `pipelines`.
#[macro_export]
macro_rules! async_builder_setters {
    () => {
        /// How many connections the engine pipelines its callers' requests on; default 1. One
        /// connection carries many concurrent requests; more spread them over server threads
        /// (memcached) or cores. Each key goes on one of them (by a hash of the key), so the
        /// operations on a key reach the server in the order they were issued; bulk operations
        /// are split by connection.
        pub fn pipelines(mut self, connections: usize) -> Self {
            self.options.client.pipelines = connections;
            self
        }

        /// The most requests that may wait on one connection, queued or written and not yet
        /// answered; default 16,384 (about 300 bytes each, besides the request's own bytes).
        /// Past it an operation fails at once with `CacheError::Overloaded`, so a stalled
        /// server cannot make the queue, and memory, grow without end.
        pub fn max_queued_requests(mut self, requests: usize) -> Self {
            self.options.client.max_queued_requests = requests;
            self
        }

        /// The most request bytes that may wait to be written on one connection; default
        /// 64 MiB. Large `set`s count by their size; a request larger than the bound is sent
        /// when nothing else waits. Past it an operation fails at once with
        /// `CacheError::Overloaded`.
        pub fn max_queued_bytes(mut self, bytes: usize) -> Self {
            self.options.client.max_queued_bytes = bytes;
            self
        }
    };
}

/// Turns TCP keepalive on (probing after `keepalive` without traffic) or off.
#[cfg(any(unix, windows))]
pub(crate) fn set_tcp_keepalive<S>(socket: &S, keepalive: Option<Duration>) -> std::io::Result<()>
where
    for<'s> socket2::SockRef<'s>: From<&'s S>,
{
    let socket = socket2::SockRef::from(socket);
    match keepalive {
        None => socket.set_keepalive(false),
        Some(idle) => {
            let params = socket2::TcpKeepalive::new().with_time(idle);
            #[cfg(any(
                target_os = "linux",
                target_os = "android",
                target_os = "macos",
                target_os = "ios",
                target_os = "freebsd",
                target_os = "windows",
            ))]
            let params = params.with_interval(Duration::from_secs(5).min(idle));
            socket.set_tcp_keepalive(&params)
        }
    }
}

/// Turns TCP keepalive on or off (not on this platform).
#[cfg(not(any(unix, windows)))]
pub(crate) fn set_tcp_keepalive<S>(
    _socket: &S,
    _keepalive: Option<Duration>,
) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_variables() {
        let mut options = RemoteOptions::default();
        options
            .read_env("CACHE_X", &|name| match name {
                "CACHE_X_NAMESPACE" => Some("svc".into()),
                "CACHE_X_DEFAULT_TTL" => Some("1.5".into()),
                "CACHE_X_TIMEOUT_MS" => Some("250".into()),
                "CACHE_X_MAX_CONNECTIONS" => Some("4".into()),
                _ => None,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(options.namespace.as_deref(), Some("svc"));
        assert_eq!(options.default_ttl, Ttl::After(Duration::from_millis(1500)));
        assert_eq!(options.client.timeout, Duration::from_millis(250));
        assert_eq!(options.client.max_connections, 4);
        let mut queued = RemoteOptions::default();
        queued
            .read_env("CACHE_X", &|name| match name {
                "CACHE_X_KEEPALIVE_MS" => Some("off".into()),
                "CACHE_X_PIPELINES" => Some("4".into()),
                "CACHE_X_MAX_QUEUED_REQUESTS" => Some("100".into()),
                "CACHE_X_MAX_QUEUED_BYTES" => Some("1048576".into()),
                _ => None,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(queued.client.keepalive, None);
        assert_eq!(queued.client.pipelines, 4);
        assert_eq!(queued.client.max_queued_requests, 100);
        assert_eq!(queued.client.max_queued_bytes, 1 << 20);
        let mut every = RemoteOptions::default();
        every
            .read_env("CACHE_X", &|name| {
                (name == "CACHE_X_KEEPALIVE_MS").then(|| "5000".into())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(every.client.keepalive, Some(Duration::from_secs(5)));
        let err = RemoteOptions::default()
            .read_env("CACHE_X", &|name| {
                (name == "CACHE_X_MAX_IDLE_CONNECTIONS").then(|| "many".into())
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("CACHE_X_MAX_IDLE_CONNECTIONS"),
            "{err}"
        );
    }

    #[test]
    fn checks() {
        let long = Duration::from_secs(3600);
        assert!(RemoteOptions::default().validate(long).is_ok());
        let mut zero = RemoteOptions::default();
        zero.client.timeout = Duration::ZERO;
        assert!(zero.validate(long).is_err());
        let mut none = RemoteOptions::default();
        none.client.max_connections = 0;
        assert!(none.validate(long).is_err());
        let mut quick = RemoteOptions::default();
        quick.client.keepalive = Some(Duration::from_millis(10));
        assert!(quick.validate(long).is_err(), "keepalive under 1 s");
        let mut unbounded = RemoteOptions::default();
        unbounded.client.max_queued_requests = 0;
        assert!(unbounded.validate(long).is_err());
        let too_long = RemoteOptions {
            default_ttl: Ttl::After(long * 2),
            ..RemoteOptions::default()
        };
        assert!(too_long.validate(long).is_err());
        let bad_ns = RemoteOptions {
            namespace: Some("a b".into()),
            ..RemoteOptions::default()
        };
        assert!(bad_ns.validate(long).is_err());
    }
}
