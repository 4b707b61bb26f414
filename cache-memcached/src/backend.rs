//! The memcached backend as the remote core sees it: where to connect, the meta protocol, and
//! the handshake that learns the server's item size limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cache_core::CacheError;
use cache_core::Result;
use cache_remote::{Backend, BoxExchange, Exchange, ReplyLimits, Request, Step};

use crate::keys::BACKEND;
use crate::meta::{Code, Meta, Reply, is_authentication};

/// One memcached server.
#[derive(Debug)]
pub(crate) struct Memcached {
    address: String,
    /// The smallest `item_size_max` of the engine's servers, learned on every new connection;
    /// 0 until then.
    item_size_max: Arc<AtomicUsize>,
    /// The ASCII authentication request (`set` with `user password` as its data), if any.
    login: Option<Login>,
    #[cfg(feature = "tls")]
    tls: Option<cache_remote::TlsSettings>,
}

/// The bytes of an authentication request, kept out of `Debug`.
struct Login(Vec<u8>);

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Login(***)")
    }
}

/// What `parts` hands a server for TLS: settings with the feature, nothing without.
#[cfg(feature = "tls")]
pub(crate) type Tls = Option<cache_remote::TlsSettings>;
#[cfg(not(feature = "tls"))]
pub(crate) type Tls = Option<()>;

impl Memcached {
    /// A server at `address`, whose item size limit is stored in `item_size_max` when a
    /// connection learns it, logging in with `credentials` on every connection.
    pub(crate) fn new(
        address: String,
        item_size_max: Arc<AtomicUsize>,
        credentials: Option<(String, crate::config::Secret)>,
        #[cfg_attr(not(feature = "tls"), allow(unused_variables))] tls: Tls,
    ) -> Self {
        // memcached reads the first `set` of an unauthenticated connection as `user password`,
        // whatever its key (protocol.txt, "Authentication").
        let login = credentials.map(|(user, password)| {
            let data = format!("{user} {}", password.0);
            let mut bytes = format!("set auth 0 0 {}\r\n", data.len()).into_bytes();
            bytes.extend_from_slice(data.as_bytes());
            bytes.extend_from_slice(b"\r\n");
            Login(bytes)
        });
        Self {
            address,
            item_size_max,
            login,
            #[cfg(feature = "tls")]
            tls,
        }
    }
}

impl Memcached {
    /// `host:port`.
    pub(crate) fn address_string(&self) -> String {
        self.address.clone()
    }
}

/// What every new connection says first: the login, alone (a refused login gets an error and
/// nothing after it is answered), then `stats settings`.
struct Handshake {
    login: Option<Vec<u8>>,
    learned: Arc<AtomicUsize>,
    address: String,
    logged_in: bool,
}

impl Handshake {
    fn refused(&self, why: String) -> CacheError {
        CacheError::Authentication {
            backend: BACKEND,
            address: self.address.clone(),
            source: Some(why.into()),
        }
    }

    fn stats() -> Request {
        Request::new(
            b"stats settings\r\n".to_vec(),
            1,
            ReplyLimits::scalar(0).with_arrays(1024, 0),
        )
    }
}

impl Exchange<Reply> for Handshake {
    type Output = ();

    fn start(&mut self) -> Result<Step<()>> {
        Ok(Step::Send(match &self.login {
            Some(login) => Request::new(login.clone(), 1, ReplyLimits::scalar(0)),
            None => {
                self.logged_in = true;
                Self::stats()
            }
        }))
    }

    fn next(&mut self, replies: Vec<Reply>) -> Result<Step<()>> {
        let reply = replies.into_iter().next();
        if !self.logged_in {
            self.logged_in = true;
            return match reply {
                Some(Reply::Status { code: Code::Hd, .. }) => Ok(Step::Send(Self::stats())),
                Some(Reply::Error { message, .. }) => {
                    Err(self.refused(format!("login refused: {message}")))
                }
                other => Err(CacheError::Backend {
                    backend: BACKEND,
                    source: format!("unexpected reply to the login: {other:?}").into(),
                }),
            };
        }
        match reply {
            Some(Reply::Stats(stats)) => {
                if let Some(size) = stats
                    .iter()
                    .find(|(name, _)| name == "item_size_max")
                    .and_then(|(_, value)| value.parse().ok())
                {
                    learn(&self.learned, size);
                }
                Ok(Step::Done(()))
            }
            Some(Reply::Error { message, .. }) if is_authentication(&message) => {
                Err(self
                    .refused("the server requires a login (memcached -Y): set credentials".into()))
            }
            other => Err(CacheError::Backend {
                backend: BACKEND,
                source: format!("unexpected reply to stats settings: {other:?}").into(),
            }),
        }
    }
}

/// Keeps the smallest item size limit any server reported (0: none yet).
fn learn(limit: &AtomicUsize, size: usize) {
    let _ = limit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |known| {
        (known == 0 || size < known).then_some(size)
    });
}

impl Backend for Memcached {
    type Decoder = Meta;

    fn name(&self) -> &'static str {
        BACKEND
    }

    fn decoder(&self) -> &Meta {
        &Meta
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn keepalive(&self) -> Option<Request> {
        Some(Request::new(b"mn\r\n".to_vec(), 1, ReplyLimits::scalar(0)))
    }

    /// `stats settings`: learns `item_size_max`, so that values the server would refuse are
    /// refused before they are sent. A server at its connection limit answers `ERROR Too many
    /// open connections` instead, which the decoder turns into a transient connection error.
    fn handshake(&self) -> Option<BoxExchange<'static, Reply, ()>> {
        Some(Box::new(Handshake {
            login: self.login.as_ref().map(|login| login.0.clone()),
            learned: Arc::clone(&self.item_size_max),
            address: self.address.clone(),
            logged_in: false,
        }))
    }

    #[cfg(feature = "tls")]
    fn tls(&self) -> Option<&cache_remote::TlsSettings> {
        self.tls.as_ref()
    }
}
