//! The error type shared by every engine.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// A boxed error from a driver or codec, kept as the `source()` of a [`CacheError`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The result type of every cache operation.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;

/// Everything that can go wrong in a cache operation.
///
/// Variants describe what went wrong, not which backend or driver noticed it, so code that
/// handles errors works the same with every engine. Driver errors stay private to each backend
/// and are reachable through [`std::error::Error::source`].
///
/// Display texts are lowercase, name the backend and the key or limit involved, and never repeat
/// the text of their source. Keys are shown escaped and truncated (see [`KeyDisplay`]), and no
/// password ever appears.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The key breaks the key rule (see [`crate::key`]); nothing was sent or changed.
    #[error("invalid key {key}: {problem}")]
    InvalidKey {
        /// The key, escaped and truncated for display.
        key: KeyDisplay,
        /// What is wrong with it.
        problem: KeyProblem,
    },

    /// The TTL cannot be represented by this engine; nothing was changed.
    #[error("invalid ttl of {ttl:?} for {backend}: longer than the longest it supports ({max:?})")]
    InvalidTtl {
        /// The engine that refused it.
        backend: &'static str,
        /// The TTL that was asked for.
        ttl: Duration,
        /// The longest TTL the engine supports at the moment of the call.
        max: Duration,
    },

    /// The value (or the entry) is larger than the engine can ever store; nothing was changed.
    #[error("value of {size} bytes for key {key} exceeds the {backend} limit of {limit} bytes")]
    ValueTooLarge {
        /// The engine that refused it.
        backend: &'static str,
        /// The key the value was meant for.
        key: KeyDisplay,
        /// The size that was refused, in bytes.
        size: usize,
        /// The largest size the engine accepts, in bytes.
        limit: usize,
    },

    /// `increment` found a value that is not a signed 64-bit decimal integer; it was left alone.
    #[error("value under key {key} is not a signed 64-bit decimal integer")]
    NotANumber {
        /// The key holding the value.
        key: KeyDisplay,
    },

    /// `increment` would leave the signed 64-bit range; the value was left unchanged.
    #[error("incrementing key {key} by {delta} would overflow a signed 64-bit integer")]
    Overflow {
        /// The key holding the counter.
        key: KeyDisplay,
        /// The delta that was refused.
        delta: i64,
    },

    /// The server could not be reached, or the connection broke.
    #[error("{backend}: {operation} could not reach {address}")]
    Connection {
        /// The engine that failed.
        backend: &'static str,
        /// The operation that failed (`get`, `set_many`, `connect`, ...).
        operation: &'static str,
        /// The server address, without credentials.
        address: String,
        /// The underlying I/O or driver error.
        #[source]
        source: Option<BoxError>,
    },

    /// The operation did not end within its deadline (or no connection was free in time).
    #[error("{backend}: {operation} got no answer from {address} within {after:?}")]
    Timeout {
        /// The engine that failed.
        backend: &'static str,
        /// The operation that failed (`get`, `set_many`, `connect`, ...).
        operation: &'static str,
        /// The server address, without credentials.
        address: String,
        /// The configured bound that was exceeded.
        after: Duration,
    },

    /// Too much already waits for the server: the request was not sent. An async engine
    /// bounds what waits on each connection (requests and bytes); a server that stalls fills
    /// the bound, and operations beyond it fail at once instead of queueing without end.
    /// Transient: the bound frees as the server answers or the stalled connection is replaced.
    #[error("{backend}: {operation} not sent: the queue to {address} is full ({bound})")]
    Overloaded {
        /// The engine that refused the request.
        backend: &'static str,
        /// The operation refused.
        operation: &'static str,
        /// The server address, without credentials.
        address: String,
        /// The bound that was reached, such as `8192 requests` or `67108864 bytes`.
        bound: String,
    },

    /// The server refused to store a value although the request was valid (out of memory,
    /// say). For a bulk write, the other entries may have been stored: the batch may be partly
    /// applied, and a server may drop a refused key's previous value (memcached does).
    #[error(
        "{backend}: the server refused to store key {key} in {operation}{}",
        if *partly_applied { " (the batch may be partly applied)" } else { "" }
    )]
    Refused {
        /// The engine that failed.
        backend: &'static str,
        /// The operation that failed.
        operation: &'static str,
        /// The first key refused.
        key: KeyDisplay,
        /// Whether other entries of the same call may have been stored.
        partly_applied: bool,
        /// The server's reason.
        #[source]
        source: Option<BoxError>,
    },

    /// The server refused the credentials.
    #[error("{backend}: authentication to {address} failed")]
    Authentication {
        /// The engine that failed.
        backend: &'static str,
        /// The server address, without credentials.
        address: String,
        /// The server's refusal.
        #[source]
        source: Option<BoxError>,
    },

    /// The server accepted the credentials but refused this command or key (an ACL, say).
    #[error("{backend}: permission denied for {operation}")]
    PermissionDenied {
        /// The engine that failed.
        backend: &'static str,
        /// The operation that was refused.
        operation: &'static str,
        /// The server's refusal.
        #[source]
        source: Option<BoxError>,
    },

    /// A value could not be encoded or decoded.
    #[error("{message}")]
    Serialization {
        /// What failed, in a few words.
        message: String,
        /// The codec's own error.
        #[source]
        source: Option<BoxError>,
    },

    /// The bytes under a key were written for another type, schema or codec.
    #[error(
        "value under key {key} was written for another schema (expected {expected}, found {found})"
    )]
    SchemaMismatch {
        /// The key holding the value.
        key: KeyDisplay,
        /// The schema this reader expects.
        expected: String,
        /// The schema recorded with the value.
        found: String,
    },

    /// The serde shape of a type cannot be traced, so values of it cannot be checked.
    #[error("cannot fingerprint type `{type_name}`: {reason}")]
    UnknownSchema {
        /// The Rust type name (for the reader; it is not part of any fingerprint).
        type_name: &'static str,
        /// Why tracing failed and what to do about it.
        reason: String,
    },

    /// The engine was configured with values it cannot use.
    #[error("invalid configuration: {message}")]
    InvalidConfig {
        /// What is wrong.
        message: String,
    },

    /// The engine does not offer this operation (see [`crate::Capabilities::operations`]);
    /// nothing was sent or changed. Neither transient nor a failure of the cache: the same call
    /// fails the same way every time, so fail-open never turns it into a miss.
    #[error("{backend}: the engine does not offer `{operation}`")]
    Unsupported {
        /// The engine.
        backend: &'static str,
        /// The operation asked for.
        operation: crate::Operation,
    },

    /// The engine was closed with [`crate::CacheEngine::close`].
    #[error("{backend}: the engine is closed")]
    Closed {
        /// The engine.
        backend: &'static str,
    },

    /// Any other backend failure; the driver error is the source.
    #[error("{backend}: backend error")]
    Backend {
        /// The engine.
        backend: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
}

impl CacheError {
    /// Whether retrying the same operation later may succeed (`Connection`, `Timeout`,
    /// `Overloaded`).
    ///
    /// Invalid input, closed engines and schema problems are not transient: retrying them gives
    /// the same error.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Connection { .. } | Self::Timeout { .. } | Self::Overloaded { .. }
        )
    }

    /// Whether the error is the cache's failure rather than the caller's mistake: the server
    /// could not be reached or did not answer, refused the credentials, a command or a value,
    /// answered with something unusable, or the engine was closed.
    ///
    /// Invalid keys, TTLs and values, values of another schema, counters that are not numbers
    /// and configuration errors are the caller's: the same call fails the same way on a healthy
    /// cache. This is the one classification behind fail-open: a failure of the cache may be
    /// turned into a miss, a mistake of the caller never is.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_core::{CacheError, KeyProblem};
    ///
    /// let timeout = CacheError::Timeout {
    ///     backend: "redis",
    ///     operation: "get",
    ///     address: "10.0.0.7:6379".into(),
    ///     after: Duration::from_millis(500),
    /// };
    /// assert!(timeout.is_backend_failure());
    /// assert!(!CacheError::invalid_key("", KeyProblem::Empty).is_backend_failure());
    /// ```
    pub fn is_backend_failure(&self) -> bool {
        matches!(
            self,
            Self::Connection { .. }
                | Self::Timeout { .. }
                | Self::Overloaded { .. }
                | Self::Refused { .. }
                | Self::Authentication { .. }
                | Self::PermissionDenied { .. }
                | Self::Closed { .. }
                | Self::Backend { .. }
        )
    }

    /// The operation a transport or server error names (`get`, `set_many`, ...), if any.
    pub fn operation(&self) -> Option<&'static str> {
        match self {
            Self::Connection { operation, .. }
            | Self::Timeout { operation, .. }
            | Self::Overloaded { operation, .. }
            | Self::Refused { operation, .. }
            | Self::PermissionDenied { operation, .. } => Some(operation),
            Self::Unsupported { operation, .. } => Some(operation.name()),
            _ => None,
        }
    }

    /// The error's message with every key left out, for logs and traces that must not hold
    /// keys (a key may carry a user's e-mail address or a token).
    ///
    /// Keys become `<key>`; a serialization message, which is free text that may quote a key,
    /// is replaced by a fixed one. Every other part of the message is as [`Display`] gives it.
    ///
    /// ```
    /// use cache_core::{CacheError, KeyProblem};
    ///
    /// let error = CacheError::invalid_key("user:ada@example.com x", KeyProblem::Empty);
    /// assert!(error.to_string().contains("ada@example.com"));
    /// assert_eq!(
    ///     error.redacted().to_string(),
    ///     "invalid key <key>: keys must not be empty"
    /// );
    /// ```
    ///
    /// [`Display`]: std::fmt::Display
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(self)
    }

    /// Builds [`CacheError::InvalidKey`] for `key`.
    pub fn invalid_key(key: &str, problem: KeyProblem) -> Self {
        Self::InvalidKey {
            key: KeyDisplay::new(key),
            problem,
        }
    }

    /// Builds [`CacheError::Serialization`] with a message and a source.
    pub fn serialization(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Serialization {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Builds [`CacheError::InvalidConfig`].
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::InvalidConfig {
            message: message.into(),
        }
    }
}

/// A [`CacheError`]'s message without its keys: see [`CacheError::redacted`].
#[derive(Debug, Clone, Copy)]
pub struct Redacted<'a>(&'a CacheError);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KEY: &str = "<key>";
        match self.0 {
            CacheError::InvalidKey { problem, .. } => write!(f, "invalid key {KEY}: {problem}"),
            CacheError::ValueTooLarge {
                backend,
                size,
                limit,
                ..
            } => write!(
                f,
                "value of {size} bytes for key {KEY} exceeds the {backend} limit of {limit} bytes"
            ),
            CacheError::NotANumber { .. } => write!(
                f,
                "value under key {KEY} is not a signed 64-bit decimal integer"
            ),
            CacheError::Overflow { delta, .. } => write!(
                f,
                "incrementing key {KEY} by {delta} would overflow a signed 64-bit integer"
            ),
            CacheError::Refused {
                backend,
                operation,
                partly_applied,
                ..
            } => write!(
                f,
                "{backend}: the server refused to store key {KEY} in {operation}{}",
                if *partly_applied {
                    " (the batch may be partly applied)"
                } else {
                    ""
                }
            ),
            CacheError::Serialization { .. } => {
                f.write_str("a value could not be encoded or decoded")
            }
            CacheError::SchemaMismatch {
                expected, found, ..
            } => write!(
                f,
                "value under key {KEY} was written for another schema (expected {expected}, found {found})"
            ),
            other => fmt::Display::fmt(other, f),
        }
    }
}

/// What is wrong with a key that breaks the key rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key is empty.
    Empty,
    /// The key is longer than the engine allows once its namespace prefix is added.
    TooLong {
        /// The length of the key in bytes (without any prefix).
        len: usize,
        /// The longest key this engine accepts, in bytes (without any prefix).
        max: usize,
    },
    /// The key holds whitespace or a control character.
    ForbiddenChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the key.
        at: usize,
    },
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("keys must not be empty"),
            Self::TooLong { len, max } => {
                write!(
                    f,
                    "{len} bytes is longer than the {max} bytes this engine allows"
                )
            }
            Self::ForbiddenChar { ch, at } => write!(
                f,
                "whitespace or control character {:?} at byte {at} is not allowed",
                ch
            ),
        }
    }
}

/// A key prepared for display in an error: escaped, so control bytes and newlines cannot forge
/// log lines, and truncated, so a long key (which may carry a token) is not printed whole.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDisplay(String);

impl KeyDisplay {
    /// The number of characters of a key shown before it is truncated.
    pub const SHOWN_CHARS: usize = 48;

    /// Escapes and truncates `key`.
    pub fn new(key: &str) -> Self {
        let mut shown = String::with_capacity(key.len().min(Self::SHOWN_CHARS * 2) + 16);
        shown.push('"');
        let mut chars = key.chars();
        for ch in chars.by_ref().take(Self::SHOWN_CHARS) {
            shown.extend(ch.escape_debug());
        }
        shown.push('"');
        if chars.next().is_some() {
            shown.push_str(&format!("... ({} bytes)", key.len()));
        }
        Self(shown)
    }

    /// The escaped, possibly truncated text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_display_escapes_control_bytes() {
        let shown = KeyDisplay::new("a\r\nb\0").to_string();
        assert_eq!(shown, r#""a\r\nb\0""#);
    }

    #[test]
    fn key_display_truncates_long_keys() {
        let key = "k".repeat(300);
        let shown = KeyDisplay::new(&key).to_string();
        assert!(shown.len() < 80, "{shown}");
        assert!(shown.ends_with("... (300 bytes)"), "{shown}");
    }

    #[test]
    fn transient_errors() {
        let timeout = CacheError::Timeout {
            backend: "redis",
            operation: "get",
            address: "127.0.0.1:6379".into(),
            after: Duration::from_secs(1),
        };
        assert!(timeout.is_transient());
        assert!(timeout.is_backend_failure());
        assert_eq!(timeout.operation(), Some("get"));
        assert_eq!(
            timeout.to_string(),
            "redis: get got no answer from 127.0.0.1:6379 within 1s"
        );
        assert!(!CacheError::invalid_key("", KeyProblem::Empty).is_transient());
        assert!(!CacheError::invalid_key("", KeyProblem::Empty).is_backend_failure());
        let refused = CacheError::Refused {
            backend: "memcached",
            operation: "set_many",
            key: KeyDisplay::new("big"),
            partly_applied: true,
            source: None,
        };
        assert!(refused.is_backend_failure() && !refused.is_transient());
        assert!(refused.to_string().contains("partly applied"), "{refused}");
    }

    #[test]
    fn display_is_lowercase_and_names_the_key() {
        let err = CacheError::invalid_key("bad key", KeyProblem::ForbiddenChar { ch: ' ', at: 3 });
        let text = err.to_string();
        assert!(text.starts_with("invalid key \"bad key\""), "{text}");
    }
}
