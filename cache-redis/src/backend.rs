//! The Redis backend as the remote core sees it: where to connect, RESP, the handshake (AUTH,
//! SELECT), TLS, and what Redis's error replies mean.

use cache_core::{CacheError, KeyDisplay};
use cache_remote::resp::{self, Resp, Value};
use cache_remote::{Backend, BoxExchange, ProtocolError, ReplyLimits, Request, single};

use crate::config::ServerUrl;

pub(crate) const BACKEND: &str = "redis";

/// A reply Redis sent as an error (`-ERR ...`), kept as the source of a `CacheError`.
#[derive(Debug, thiserror::Error)]
#[error("server replied: {0}")]
pub(crate) struct ServerError(pub(crate) String);

/// One Redis server.
#[derive(Debug)]
pub(crate) struct Redis {
    address: String,
    /// `AUTH` and `SELECT`, encoded once, and how many replies they get.
    handshake: Option<(Vec<u8>, usize)>,
    #[cfg(feature = "tls")]
    tls: Option<cache_remote::TlsSettings>,
}

impl Redis {
    pub(crate) fn new(
        url: &ServerUrl,
        #[cfg(feature = "tls")] tls: Option<cache_remote::TlsSettings>,
    ) -> Self {
        let mut bytes = Vec::new();
        let mut replies = 0;
        if let Some(password) = &url.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &url.username {
                args.push(user.as_bytes());
            }
            args.push(password.0.as_bytes());
            resp::command(&mut bytes, &args);
            replies += 1;
        }
        if url.db != 0 {
            resp::command(&mut bytes, &[b"SELECT", &resp::decimal(i64::from(url.db))]);
            replies += 1;
        }
        Self {
            address: url.address(),
            handshake: (replies > 0).then_some((bytes, replies)),
            #[cfg(feature = "tls")]
            tls,
        }
    }
}

impl Backend for Redis {
    type Decoder = Resp;

    fn name(&self) -> &'static str {
        BACKEND
    }

    fn decoder(&self) -> &Resp {
        &Resp
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn handshake(&self) -> Option<BoxExchange<'static, Value, ()>> {
        let (bytes, replies) = self.handshake.clone()?;
        let address = self.address.clone();
        let request = Request::new(bytes, replies, ReplyLimits::scalar(1024));
        Some(Box::new(single(request, move |replies: Vec<Value>| {
            for reply in replies {
                match reply {
                    Value::Simple(_) => {}
                    Value::Error(text) => {
                        return Err(reply_error(&text, "connect", &address, None));
                    }
                    other => return Err(unexpected(&other, "connect")),
                }
            }
            Ok(())
        })))
    }

    #[cfg(feature = "tls")]
    fn tls(&self) -> Option<&cache_remote::TlsSettings> {
        self.tls.as_ref()
    }
}

/// What an error reply means: credentials refused, a command refused by an ACL, out of memory
/// (for a write of `key`), or anything else.
pub(crate) fn reply_error(
    text: &str,
    operation: &'static str,
    address: &str,
    key: Option<(&str, bool)>,
) -> CacheError {
    let code = text.split(' ').next().unwrap_or_default();
    let source = Some(Box::new(ServerError(text.to_string())) as cache_core::BoxError);
    match (code, key) {
        ("NOAUTH" | "WRONGPASS", _) => CacheError::Authentication {
            backend: BACKEND,
            address: address.to_string(),
            source,
        },
        ("NOPERM", _) => CacheError::PermissionDenied {
            backend: BACKEND,
            operation,
            source,
        },
        ("OOM", Some((key, partly_applied))) => CacheError::Refused {
            backend: BACKEND,
            operation,
            key: KeyDisplay::new(key),
            partly_applied,
            source,
        },
        _ => CacheError::Backend {
            backend: BACKEND,
            source: Box::new(ServerError(text.to_string())),
        },
    }
}

/// A well-formed reply of the wrong kind for its command: the server is not the Redis we
/// expect (a proxy that rewrote it, say).
pub(crate) fn unexpected(value: &Value, operation: &'static str) -> CacheError {
    CacheError::Backend {
        backend: BACKEND,
        source: Box::new(ProtocolError::Unexpected(format!(
            "{operation} got a {} reply",
            value.kind()
        ))),
    }
}
