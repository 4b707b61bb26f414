//! The Redis backend as the remote core sees it: where to connect, RESP, the handshake (AUTH,
//! SELECT), TLS, and what Redis's error replies mean.

use cache_core::{CacheError, KeyDisplay};
use cache_remote::{Backend, BoxExchange, ProtocolError, ReplyLimits, Request, single};

use crate::config::ServerUrl;
use crate::resp::{self, Resp, Value};

pub(crate) const BACKEND: &str = "redis";

/// A reply Redis sent as an error (`-ERR ...`), kept as the source of a `CacheError`.
#[derive(Debug, thiserror::Error)]
#[error("server replied: {0}")]
pub(crate) struct ServerError(pub(crate) String);

/// One Redis server.
#[derive(Debug)]
pub(crate) struct Redis {
    address: String,
    /// `HELLO 3` or `AUTH`, and `SELECT`, encoded once, and how many replies they get.
    handshake: Option<(Vec<u8>, usize)>,
    /// Whether connections speak RESP3 (the handshake starts with `HELLO 3`).
    resp3: bool,
    /// Whether the handshake ends with `ROLE`, refusing a server that is not a master.
    require_master: bool,
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
        let resp3 = url.protocol == Some(crate::RedisProtocol::Resp3);
        if resp3 {
            // HELLO authenticates too; its AUTH needs a user name, `default` when none is set.
            let mut args: Vec<&[u8]> = vec![b"HELLO", b"3"];
            if let Some(password) = &url.password {
                args.push(b"AUTH");
                args.push(url.username.as_deref().unwrap_or("default").as_bytes());
                args.push(password.0.as_bytes());
            }
            resp::command(&mut bytes, &args);
            replies += 1;
        } else if let Some(password) = &url.password {
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
            resp3,
            require_master: false,
            #[cfg(feature = "tls")]
            tls,
        }
    }

    /// Makes every new connection check that the server is a master (`ROLE`), and fail as a
    /// transient connection error when it is not: after a failover, the old master may still
    /// answer, as a replica.
    pub(crate) fn requiring_master(mut self) -> Self {
        self.require_master = true;
        self
    }

    /// Makes every new connection say `READONLY`, so that a cluster replica answers reads of
    /// its master's slots (a master ignores it).
    pub(crate) fn reading_replicas(mut self) -> Self {
        let (mut bytes, replies) = self.handshake.take().unwrap_or_default();
        resp::command(&mut bytes, &[b"READONLY"]);
        self.handshake = Some((bytes, replies + 1));
        self
    }

    /// Whether connections speak RESP3.
    pub(crate) fn resp3(&self) -> bool {
        self.resp3
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

    fn keepalive(&self) -> Option<Request> {
        let mut bytes = Vec::new();
        resp::command(&mut bytes, &[b"PING"]);
        Some(Request::new(bytes, 1, ReplyLimits::scalar(64)))
    }

    fn handshake(&self) -> Option<BoxExchange<'static, Value, ()>> {
        let (mut bytes, mut replies) = self.handshake.clone().unwrap_or_default();
        if self.require_master {
            resp::command(&mut bytes, &[b"ROLE"]);
            replies += 1;
        }
        if replies == 0 {
            return None;
        }
        let address = self.address.clone();
        let require_master = self.require_master;
        let resp3 = self.resp3;
        // ROLE of a replica names its master and a few numbers; of a master, its replicas.
        // HELLO's map holds seven fields, one of them the list of modules.
        let limits = ReplyLimits::scalar(1024).with_arrays(1024, 3);
        let request = Request::new(bytes, replies, limits);
        Some(Box::new(single(request, move |replies: Vec<Value>| {
            let count = replies.len();
            for (index, reply) in replies.into_iter().enumerate() {
                match reply {
                    Value::Simple(_) => {}
                    // HELLO's answer: the server's name, version, protocol and role.
                    Value::Array(_) if resp3 && index == 0 => {}
                    Value::Error(text) if resp3 && index == 0 && refuses_hello(&text) => {
                        return Err(CacheError::invalid_config(format!(
                            "the Redis server at {address} does not speak RESP3 (HELLO 3: \
                             {text}); it needs Redis 6 or later: use protocol=resp2"
                        )));
                    }
                    Value::Array(role) if require_master && index + 1 == count => {
                        if !matches!(role.first(), Some(Value::Bulk(name)) if name == b"master") {
                            return Err(CacheError::Connection {
                                backend: BACKEND,
                                operation: "connect",
                                address: address.clone(),
                                source: Some("the server is not a master (any more)".into()),
                            });
                        }
                    }
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

/// Whether an error answering `HELLO 3` says the server cannot speak RESP3 (`NOPROTO`, or
/// a server before Redis 6 that does not know `HELLO`), rather than refusing the credentials.
fn refuses_hello(text: &str) -> bool {
    text.starts_with("NOPROTO") || text.contains("unknown command")
}

/// A cluster node's answer that a key's slot is served elsewhere (`-MOVED slot host:port`), or
/// is being moved there (`-ASK slot host:port`: ask once, after `ASKING`). Kept as the source of
/// a `Backend` error; the cluster router takes it out and follows it, so callers never see it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the cluster {} slot {slot} to {address}", if *.ask { "is moving" } else { "moved" })]
pub(crate) struct Redirect {
    pub(crate) ask: bool,
    pub(crate) slot: u16,
    pub(crate) address: String,
}

impl Redirect {
    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split(' ');
        let ask = match words.next()? {
            "MOVED" => false,
            "ASK" => true,
            _ => return None,
        };
        let slot = words.next()?.parse().ok()?;
        let address = words.next()?.to_string();
        Some(Self { ask, slot, address })
    }

    /// The redirection an error carries, if any.
    pub(crate) fn of(error: &CacheError) -> Option<&Redirect> {
        match error {
            CacheError::Backend { source, .. } => source.downcast_ref::<Redirect>(),
            _ => None,
        }
    }
}

/// What an error reply means: credentials refused, a command refused by an ACL, out of memory
/// (for a write of `key`), a cluster redirection, a server that cannot serve for now (a
/// cluster without quorum, a replica, a server loading its data), or anything else.
pub(crate) fn reply_error(
    text: &str,
    operation: &'static str,
    address: &str,
    key: Option<(&str, bool)>,
) -> CacheError {
    let code = text.split(' ').next().unwrap_or_default();
    if let Some(redirect) = Redirect::parse(text) {
        return CacheError::Backend {
            backend: BACKEND,
            source: Box::new(redirect),
        };
    }
    let source = Some(Box::new(ServerError(text.to_string())) as cache_core::BoxError);
    match (code, key) {
        // Nothing was done, and the same request may succeed soon: transient, like a
        // connection that failed.
        ("TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN" | "READONLY", _) => {
            CacheError::Connection {
                backend: BACKEND,
                operation,
                address: address.to_string(),
                source,
            }
        }
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
