//! The memcached backend as the remote core sees it: where to connect, the meta protocol, and
//! the handshake that learns the server's item size limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cache_core::CacheError;
use cache_remote::{Backend, BoxExchange, ReplyLimits, Request, single};

use crate::keys::BACKEND;
use crate::meta::{Meta, Reply};

/// One memcached server.
#[derive(Debug)]
pub(crate) struct Memcached {
    address: String,
    /// The smallest `item_size_max` of the engine's servers, learned on every new connection;
    /// 0 until then.
    item_size_max: Arc<AtomicUsize>,
}

impl Memcached {
    /// A server at `address`, whose item size limit is stored in `item_size_max` when a
    /// connection learns it.
    pub(crate) fn new(address: String, item_size_max: Arc<AtomicUsize>) -> Self {
        Self {
            address,
            item_size_max,
        }
    }
}

impl Memcached {
    /// `host:port`.
    pub(crate) fn address_string(&self) -> String {
        self.address.clone()
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
        let learned = Arc::clone(&self.item_size_max);
        let request = Request::new(
            b"stats settings\r\n".to_vec(),
            1,
            ReplyLimits::scalar(0).with_arrays(1024, 0),
        );
        Some(Box::new(single(
            request,
            move |replies: Vec<Reply>| match replies.into_iter().next() {
                Some(Reply::Stats(stats)) => {
                    if let Some(size) = stats
                        .iter()
                        .find(|(name, _)| name == "item_size_max")
                        .and_then(|(_, value)| value.parse().ok())
                    {
                        learn(&learned, size);
                    }
                    Ok(())
                }
                other => Err(CacheError::Backend {
                    backend: BACKEND,
                    source: format!("unexpected reply to stats settings: {other:?}").into(),
                }),
            },
        )))
    }
}
