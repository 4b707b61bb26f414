//! What a backend supplies to the transports, and how transport failures become errors.

use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cache_core::CacheError;

use crate::exchange::BoxExchange;
use crate::protocol::{Decode, ProtocolError};

/// The reply type of a backend's protocol.
pub type ReplyOf<B> = <<B as Backend>::Decoder as Decode>::Reply;

/// A remote backend as the transports see it: where to connect, how to read its replies, and
/// what to say on every new connection. How to build requests and read their results lives in
/// the backend's exchanges, which both transports run unchanged.
pub trait Backend: Send + Sync + Debug + 'static {
    /// The protocol's reply decoder.
    type Decoder: Decode;

    /// The backend's short name (`"redis"`), for errors.
    fn name(&self) -> &'static str;

    /// The decoder.
    fn decoder(&self) -> &Self::Decoder;

    /// Where to connect: `host:port`, or `unix:` and the absolute path of a Unix domain
    /// socket (`unix:/run/redis/redis.sock`; see [`UNIX_PREFIX`]). Also named in errors, so it holds
    /// no credentials.
    fn address(&self) -> &str;

    /// The exchange run on every new connection before it is used (authentication, choosing
    /// a database, learning the server's limits), if any.
    fn handshake(&self) -> Option<BoxExchange<'static, ReplyOf<Self>, ()>>;

    /// A short request whose answer shows that a connection idle for
    /// [`ClientSettings::keepalive`](crate::ClientSettings::keepalive) still reaches the server
    /// (Redis `PING`, memcached `mn`); any well-formed reply counts. The default, `None`,
    /// leaves idle connections unchecked but for TCP keepalive.
    fn keepalive(&self) -> Option<crate::exchange::Request> {
        None
    }

    /// TLS settings, when connections must be wrapped in TLS.
    #[cfg(feature = "tls")]
    fn tls(&self) -> Option<&TlsSettings> {
        None
    }
}

/// The prefix of a [`Backend::address`] that names a Unix domain socket by its path.
pub const UNIX_PREFIX: &str = "unix:";

/// The socket path of an address of the form `unix:/PATH`, if it is one. The path must be
/// absolute: a host name never holds a `/`, so a host called `unix` (`unix:6379`) stays TCP.
pub(crate) fn unix_path(address: &str) -> Option<&std::path::Path> {
    address
        .strip_prefix(UNIX_PREFIX)
        .filter(|path| path.starts_with('/'))
        .map(std::path::Path::new)
}

/// How to wrap a connection in TLS (rustls).
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// The client configuration: roots, and whether certificates are checked at all.
    pub config: std::sync::Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
}

/// Why a connection can no longer be used.
#[derive(Debug)]
pub enum Broken {
    /// The deadline passed before the whole reply arrived.
    Timeout,
    /// The server closed the connection.
    Closed,
    /// A socket or TLS error.
    Io(std::io::Error),
    /// A reply that cannot be trusted.
    Protocol(ProtocolError),
}

impl Broken {
    /// The same failure, for another caller on the same connection.
    pub(crate) fn duplicate(&self) -> Broken {
        match self {
            Self::Timeout => Self::Timeout,
            Self::Closed => Self::Closed,
            Self::Io(e) => Self::Io(std::io::Error::new(e.kind(), e.to_string())),
            Self::Protocol(e) => Self::Protocol(e.clone()),
        }
    }

    /// Whether the connection may have died while it sat idle (the server restarted or cut
    /// it): the error came from the socket, not from a slow or misbehaving server.
    pub fn is_dead_socket(&self) -> bool {
        match self {
            Self::Closed => true,
            Self::Io(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ),
            Self::Timeout | Self::Protocol(_) => false,
        }
    }

    /// The error a caller sees.
    pub fn into_error(
        self,
        backend: &'static str,
        operation: &'static str,
        address: &str,
        budget: Duration,
    ) -> CacheError {
        match self {
            Self::Timeout => CacheError::Timeout {
                backend,
                operation,
                address: address.to_string(),
                after: budget,
            },
            Self::Io(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                CacheError::Timeout {
                    backend,
                    operation,
                    address: address.to_string(),
                    after: budget,
                }
            }
            Self::Closed => CacheError::Connection {
                backend,
                operation,
                address: address.to_string(),
                source: Some("the server closed the connection".into()),
            },
            Self::Io(e) => CacheError::Connection {
                backend,
                operation,
                address: address.to_string(),
                source: Some(Box::new(e)),
            },
            Self::Protocol(e @ ProtocolError::Refused(_)) => CacheError::Connection {
                backend,
                operation,
                address: address.to_string(),
                source: Some(Box::new(e)),
            },
            Self::Protocol(e) => CacheError::Backend {
                backend,
                source: Box::new(e),
            },
        }
    }
}

/// Which bound of an async connection's queue refused a request.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "tokio"), allow(dead_code))]
pub(crate) enum QueueFull {
    /// The most requests that may wait.
    Requests(usize),
    /// The most bytes that may wait to be written.
    Bytes(usize),
}

/// How an exchange failed on a connection.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The request was not sent: the connection's queue is full. The connection is fine.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    Full(QueueFull),
    /// Every reply was read; the operation failed (an error reply, a bad counter). The
    /// connection is in a known state and can be reused.
    Reply(CacheError),
    /// The connection broke or cannot be trusted.
    Broken {
        /// Why.
        why: Broken,
        /// Whether any byte of the request in flight was written.
        sent: bool,
        /// Whether every request before it (if any) may be sent again: then running the whole
        /// exchange again cannot apply anything twice.
        before_idempotent: bool,
        /// Whether the request in flight may be sent again.
        idempotent: bool,
    },
}

/// What the retry rule needs to know of an operation whose connection broke.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    /// 0 on the first run of the operation.
    pub(crate) attempt: usize,
    /// Whether every request before the one in flight may be sent again.
    pub(crate) before_idempotent: bool,
    /// Whether the request in flight may be sent again.
    pub(crate) idempotent: bool,
    /// Whether any byte of the request in flight was written.
    pub(crate) sent: bool,
}

impl Retry {
    /// The retry rule of both transports, in one place: an operation runs again, once, on a new
    /// connection, only when the connection it ran on was found dead (`dead_while_idle`: a
    /// reused connection the server had closed while it sat idle), this was its first run, and
    /// nothing that must not be applied twice (`add`, `increment`, the delete of
    /// `delete_if_equals`) can have reached the server.
    pub(crate) fn allowed(self, dead_while_idle: bool) -> bool {
        self.attempt == 0
            && dead_while_idle
            && self.before_idempotent
            && (self.idempotent || !self.sent)
    }
}

/// Operations in a row that failed on a client's connections because the server could not be
/// reached, broke the connection or did not answer in time: what both clients report as
/// `consecutive_failures`, for routers that take a failing server out.
#[derive(Debug, Default)]
pub(crate) struct Failures(AtomicU32);

impl Failures {
    /// How many in a row now.
    pub(crate) fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// The server answered an operation: the row ends.
    pub(crate) fn answered(&self) {
        if self.0.load(Ordering::Relaxed) != 0 {
            self.0.store(0, Ordering::Relaxed);
        }
    }

    /// One more failure in the row.
    pub(crate) fn failed(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_paths_are_sockets() {
        assert_eq!(
            unix_path("unix:/run/redis.sock"),
            Some(std::path::Path::new("/run/redis.sock"))
        );
        assert_eq!(unix_path("unix:6379"), None);
        assert_eq!(unix_path("127.0.0.1:6379"), None);
    }
}
