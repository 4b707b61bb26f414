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

/// How a client talks to its server: deadlines and the connection bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// The longest one operation may take: waiting for a free connection, the request and
    /// every reply.
    pub timeout: Duration,
    /// The longest opening a connection may take, handshake included.
    pub connect_timeout: Duration,
    /// The most connections open at once; more callers wait (until their deadline) for one.
    pub max_connections: usize,
    /// The most idle connections kept for reuse.
    pub max_idle_connections: usize,
    /// How many connections the async transport pipelines its callers' requests on.
    pub pipelines: usize,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_idle_connections: DEFAULT_MAX_IDLE_CONNECTIONS,
            pipelines: DEFAULT_PIPELINES,
        }
    }
}

impl ClientSettings {
    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a zero timeout or a zero connection bound.
    pub fn validate(&self) -> Result<()> {
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(CacheError::invalid_config(
                "timeouts must be longer than zero",
            ));
        }
        if self.max_connections == 0 || self.pipelines == 0 {
            return Err(CacheError::invalid_config(
                "max_connections and pipelines must be at least 1",
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
    /// `{prefix}_MAX_CONNECTIONS` and `{prefix}_MAX_IDLE_CONNECTIONS` from `lookup`.
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
        for (suffix, field) in [
            ("MAX_CONNECTIONS", &mut self.client.max_connections),
            (
                "MAX_IDLE_CONNECTIONS",
                &mut self.client.max_idle_connections,
            ),
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
        /// The most connections open at once; default 32. More concurrent callers wait for a
        /// free one until their deadline, then get `Timeout`.
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
        /// (memcached) or cores.
        pub fn pipelines(mut self, connections: usize) -> Self {
            self.options.client.pipelines = connections;
            self
        }
    };
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
