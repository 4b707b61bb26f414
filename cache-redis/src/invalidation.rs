//! [`RedisInvalidations`]: Redis's server-assisted client tracking as an
//! [`InvalidationSource`], for tiered caches.
//!
//! One connection per subscription, outside the engine's pool, runs
//! `CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX <namespace prefix>` and subscribes to
//! `__redis__:invalidate`. From then on the server itself reports every key of the namespace
//! that anyone changes (writes by any client, deletes, expiry, eviction, `FLUSHDB`), so
//! processes that write through a plain engine, or `redis-cli`, invalidate local tiers too.
//! Over RESP2, tracking redirects the invalidations to a subscribed connection (the same
//! one); over RESP3 (`protocol=resp3`), the server pushes them on the tracking connection
//! itself, set apart from replies by the reader.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::invalidation::{Invalidation, InvalidationSource, Sink, Subscription};
use cache_core::{CacheError, Result};
use cache_remote::blocking::{Client, Dedicated};
use cache_remote::{Backend, ReplyLimits};

use crate::backend::Redis;
use crate::commands::RELAXED_MAX_KEY_LEN;
use crate::resp::{self, Value};

/// The channel Redis publishes tracking invalidations on, for RESP2 clients.
const CHANNEL: &[u8] = b"__redis__:invalidate";
/// How long the listener waits in one read, so that a cancelled subscription ends quickly.
const SLICE: Duration = Duration::from_millis(50);
/// The most keys one invalidation message may name (Redis batches the keys one event-loop
/// iteration changed: an `UNLINK` of a clear's 500-key batch, say). A message announcing more is
/// refused before it is read; the feed then restarts, which drops the local tier: safe.
const MAX_KEYS: usize = 100_000;
/// The first pause before reconnecting, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Silence after which the listener pings the server.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);

/// A feed of the invalidations of one Redis engine's namespace, from Redis's client tracking
/// (`CLIENT TRACKING ... BCAST`, Redis 6 or later). Made by
/// [`RedisEngine::invalidations`](crate::RedisEngine::invalidations), on either face; give it to a
/// tiered cache (`cache-tiered`).
///
/// Each [`subscribe`](InvalidationSource::subscribe) opens one connection of its own (outside
/// the engine's pool, with its URL, credentials, database and TLS) and a thread that reads it.
/// Every key of the namespace that anyone changes is reported after the change is applied.
/// The listener pings the server after [`heartbeat`](Self::heartbeat) of silence and declares
/// the feed [`Lost`](Invalidation::Lost) when no answer comes within the engine's operation
/// timeout, or at once when the connection closes (a `CLIENT KILL`, a restart); it then
/// reconnects with a growing pause (20 ms up to 1 s) and says
/// [`Connected`](Invalidation::Connected) once subscribed again.
///
/// Needs the `CLIENT` and `SUBSCRIBE` commands (an ACL user needs `+client|id`,
/// `+client|tracking`, `+subscribe` and the `__redis__:invalidate` channel). Not available on
/// a Redis Cluster or through Sentinel yet: [`subscribe`](InvalidationSource::subscribe) says
/// `InvalidConfig` there.
#[derive(Clone)]
pub struct RedisInvalidations {
    pub(crate) client: Option<Arc<Client<Redis>>>,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) shown_url: String,
}

impl fmt::Debug for RedisInvalidations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisInvalidations")
            .field("url", &self.shown_url)
            .field("prefix", &self.prefix)
            .field("heartbeat", &self.heartbeat)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RedisInvalidations {
    /// Pings after this much silence (500 ms by default); with the engine's timeout, it sets
    /// how soon a silently broken connection is noticed.
    #[must_use]
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(SLICE);
        self
    }
}

impl InvalidationSource for RedisInvalidations {
    fn subscribe(&self, sink: Sink) -> Result<Subscription> {
        let Some(client) = self.client.clone() else {
            return Err(CacheError::invalid_config(format!(
                "invalidations from {} need a single Redis server; a cluster or sentinels are \
                 not supported yet",
                self.shown_url
            )));
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let listener = Listener {
            client,
            prefix: self.prefix.clone(),
            timeout: self.timeout,
            heartbeat: self.heartbeat,
            stop: Arc::clone(&stop),
            sink,
            ready: Some(ready_tx),
        };
        let thread = std::thread::Builder::new()
            .name("cache-redis-invalidations".into())
            .spawn(move || listener.run())
            .map_err(|e| CacheError::Backend {
                backend: crate::backend::BACKEND,
                source: Box::new(e),
            })?;
        // Coherent from the first operation when the server answers: wait for the first word.
        let wait = listener_wait(self.timeout);
        let _ = ready_rx.recv_timeout(wait);
        let thread = Mutex::new(Some(thread));
        Ok(Subscription::new(move || {
            stop.store(true, Ordering::Release);
            if let Some(thread) = thread.lock().ok().and_then(|mut t| t.take()) {
                let _ = thread.join();
            }
        }))
    }

    fn detection_bound(&self) -> Duration {
        self.heartbeat + self.timeout + SLICE
    }
}

/// How long `subscribe` waits for the first connection: connect, three round trips.
fn listener_wait(timeout: Duration) -> Duration {
    timeout.saturating_mul(4)
}

struct Listener {
    client: Arc<Client<Redis>>,
    prefix: String,
    timeout: Duration,
    heartbeat: Duration,
    stop: Arc<AtomicBool>,
    sink: Sink,
    ready: Option<mpsc::Sender<()>>,
}

/// Why a feed ended.
enum End {
    Stopped,
    Broken,
}

impl Listener {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn say(&mut self, event: Invalidation<'_>) {
        (self.sink)(event);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
    }

    fn run(mut self) {
        let mut lost = false;
        let mut backoff = FIRST_BACKOFF;
        while !self.stopped() {
            let client = Arc::clone(&self.client);
            let end = match client.dedicated("invalidations") {
                Ok(mut conn) => match self.setup(&mut conn) {
                    Ok(()) => {
                        self.say(Invalidation::Connected);
                        lost = false;
                        backoff = FIRST_BACKOFF;
                        self.listen(&mut conn)
                    }
                    Err(_) => End::Broken,
                },
                Err(_) => End::Broken,
            };
            if let End::Stopped = end {
                return;
            }
            if !lost {
                self.say(Invalidation::Lost);
                lost = true;
            } else {
                self.pause(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    fn pause(&self, total: Duration) {
        let until = Instant::now() + total;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(SLICE));
        }
    }

    /// One command and its reply, within the timeout.
    fn ask(&self, conn: &mut Dedicated<'_, Redis>, args: &[&[u8]]) -> Result<Value> {
        let mut bytes = Vec::new();
        resp::command(&mut bytes, args);
        conn.send(&bytes, self.timeout)?;
        let limits = ReplyLimits::scalar(1024).with_arrays(8, 1);
        match conn.receive(&limits, self.timeout)? {
            Some(Value::Error(text)) => Err(crate::backend::reply_error(
                &text,
                "invalidations",
                self.client.backend().address(),
                None,
            )),
            Some(value) => Ok(value),
            None => Err(CacheError::Timeout {
                backend: crate::backend::BACKEND,
                operation: "invalidations",
                address: self.client.backend().address().to_string(),
                after: self.timeout,
            }),
        }
    }

    fn setup(&self, conn: &mut Dedicated<'_, Redis>) -> Result<()> {
        let unexpected = |v: &Value| crate::backend::unexpected(v, "invalidations");
        let resp3 = self.client.backend().resp3();
        // RESP3 pushes the invalidations on the tracking connection itself; RESP2 redirects
        // them to a subscribed connection, this same one.
        let id = if resp3 {
            Vec::new()
        } else {
            match self.ask(conn, &[b"CLIENT", b"ID"])? {
                Value::Integer(id) => resp::decimal(id),
                other => return Err(unexpected(&other)),
            }
        };
        let mut tracking: Vec<&[u8]> = vec![b"CLIENT", b"TRACKING", b"ON"];
        if !resp3 {
            tracking.extend([b"REDIRECT".as_slice(), &id]);
        }
        tracking.push(b"BCAST");
        if !self.prefix.is_empty() {
            tracking.push(b"PREFIX");
            tracking.push(self.prefix.as_bytes());
        }
        match self.ask(conn, &tracking)? {
            Value::Simple(_) if resp3 => return Ok(()),
            Value::Simple(_) => {}
            other => return Err(unexpected(&other)),
        }
        match self.ask(conn, &[b"SUBSCRIBE", CHANNEL])? {
            Value::Array(items) if items.first() == Some(&Value::Bulk(b"subscribe".to_vec())) => {
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }

    fn listen(&mut self, conn: &mut Dedicated<'_, Redis>) -> End {
        let limits = ReplyLimits::scalar(RELAXED_MAX_KEY_LEN).with_arrays(MAX_KEYS, 2);
        let mut heard = Instant::now();
        let mut pinged: Option<Instant> = None;
        let mut ping = Vec::new();
        resp::command(&mut ping, &[b"PING"]);
        loop {
            if self.stopped() {
                return End::Stopped;
            }
            match conn.receive(&limits, SLICE) {
                Ok(Some(message)) => {
                    heard = Instant::now();
                    pinged = None;
                    if !self.deliver(message) {
                        return End::Broken;
                    }
                }
                Ok(None) => {}
                Err(_) => return End::Broken,
            }
            match pinged {
                Some(at) if at.elapsed() > self.timeout => return End::Broken,
                Some(_) => {}
                None if heard.elapsed() >= self.heartbeat => {
                    if conn.send(&ping, self.timeout).is_err() {
                        return End::Broken;
                    }
                    pinged = Some(Instant::now());
                }
                None => {}
            }
        }
    }

    /// Hands a pushed message to the sink; `false` for one that cannot come from a healthy
    /// subscription (the feed is then restarted).
    fn deliver(&mut self, message: Value) -> bool {
        match message {
            // RESP3: `>2 invalidate [keys]` on the tracking connection itself.
            Value::Push(items) => match <[Value; 2]>::try_from(items) {
                Ok([Value::Bulk(kind), payload]) if kind == b"invalidate" => self.keys(payload),
                _ => false,
            },
            // RESP3: the answer to a heartbeat.
            Value::Simple(pong) => pong == "PONG",
            // RESP2: `message __redis__:invalidate [keys]` on the subscribed connection.
            Value::Array(items) => {
                let mut items = items.into_iter();
                match (items.next(), items.next(), items.next()) {
                    (Some(Value::Bulk(kind)), Some(_), Some(payload)) if kind == b"message" => {
                        self.keys(payload)
                    }
                    // The answer to a heartbeat.
                    (Some(Value::Bulk(kind)), _, _) if kind == b"pong" => true,
                    (Some(Value::Bulk(kind)), _, _) if kind == b"subscribe" => true,
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// Reports the keys of an invalidation: all of them (`nil`: a flush), a list, or one.
    fn keys(&mut self, payload: Value) -> bool {
        match payload {
            Value::Nil => (self.sink)(Invalidation::All),
            Value::Array(keys) => {
                for key in keys {
                    let Value::Bulk(key) = key else { continue };
                    self.key(&key);
                }
            }
            Value::Bulk(key) => self.key(&key),
            _ => return false,
        }
        true
    }

    fn key(&mut self, key: &[u8]) {
        let Some(rest) = key.strip_prefix(self.prefix.as_bytes()) else {
            return;
        };
        // A key no caller of this engine could have written is no one's.
        if let Ok(key) = std::str::from_utf8(rest) {
            (self.sink)(Invalidation::Key(key));
        }
    }
}
