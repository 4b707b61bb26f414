//! [`RedisInvalidations`]: Redis's server-assisted client tracking as an
//! [`InvalidationSource`], for tiered caches.
//!
//! Each master whose writes matter gets one connection per subscription, outside the engine's
//! pool, that runs `CLIENT TRACKING ON ... BCAST PREFIX <namespace prefix>`. From then on the
//! server itself reports every key of the namespace that anyone changes (writes by any client,
//! deletes, expiry, eviction, `FLUSHDB`), so processes that write through a plain engine, or
//! `redis-cli`, invalidate local tiers too. Over RESP2, tracking redirects the invalidations to
//! a subscribed connection (the same one, subscribed to `__redis__:invalidate`); over RESP3
//! (`protocol=resp3`), the server pushes them on the tracking connection itself, set apart
//! from replies by the reader.
//!
//! One server has one such connection. A cluster has one per master, and the masters are asked
//! for again (`CLUSTER SLOTS`) every heartbeat; through sentinels, the master they name is
//! tracked, and they are asked again every heartbeat. When the set of masters changes (a
//! failover, a master added) the feed is lost and starts again on the new set: a tiered cache
//! then drops its local tier, which is what makes a change it could not hear harmless.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::invalidation::{Invalidation, InvalidationSource, Sink, Subscription};
use cache_core::{CacheError, Result};
use cache_remote::blocking::{Client, Dedicated};
use cache_remote::{Backend, ClientSettings, ReplyLimits};

use crate::backend::Redis;
use crate::cluster::NodeFactory;
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
/// [`RedisEngine::invalidations`](crate::RedisEngine::invalidations), on either face, for one
/// server, a cluster or the master behind sentinels; give it to a tiered cache
/// (`cache-tiered`).
///
/// Each [`subscribe`](InvalidationSource::subscribe) opens one connection of its own to every
/// master (outside the engine's pool, with its URL, credentials, database and TLS) and a thread
/// that reads each. Every key of the namespace that anyone changes is reported after the
/// change is applied. A listener pings its server after [`heartbeat`](Self::heartbeat) of
/// silence and declares the feed [`Lost`](Invalidation::Lost) when no answer comes within the
/// engine's operation timeout, or at once when a connection closes (a `CLIENT KILL`, a
/// restart); it then reconnects with a growing pause (20 ms up to 1 s) and says
/// [`Connected`](Invalidation::Connected) once every master is tracked again.
///
/// On a cluster the masters are read again (`CLUSTER SLOTS`) every heartbeat, and through
/// sentinels the master's address is asked again every heartbeat: a failover (even one where
/// the old master stays up, as a replica), or a master added, ends the feed as `Lost` and
/// starts it again on the new masters, so the staleness bound,
/// [`detection_bound`](InvalidationSource::detection_bound), holds there too. A slot moved
/// between masters needs nothing: both are tracked, and the move itself is reported as the
/// key's deletion on one and its creation on the other.
///
/// Needs the `CLIENT` command, and over RESP2 `SUBSCRIBE` (an ACL user needs `+client|id`,
/// `+client|tracking`, `+subscribe` and the `__redis__:invalidate` channel); on a cluster
/// `CLUSTER SLOTS`, through sentinels their `SENTINEL GET-MASTER-ADDR-BY-NAME`.
#[derive(Clone)]
pub struct RedisInvalidations {
    pub(crate) target: Arc<FeedTarget>,
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
        if let TargetKind::Unavailable(why) = &self.target.kind {
            return Err(CacheError::invalid_config(*why));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let listener = Listener {
            target: Arc::clone(&self.target),
            tracking: Tracking {
                prefix: self.prefix.clone(),
                timeout: self.timeout,
                heartbeat: self.heartbeat,
            },
            stop: Arc::clone(&stop),
            sink,
            ready: Some(ready_tx),
            lost: false,
            backoff: FIRST_BACKOFF,
            tracked: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("cache-redis-invalidations".into())
            .spawn(move || listener.run())
            .map_err(|e| CacheError::Backend {
                backend: crate::backend::BACKEND,
                source: Box::new(e),
            })?;
        // Coherent from the first operation when the servers answer: wait for the first word.
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

/// The masters whose writes a feed must hear, and how to find them again.
pub(crate) struct FeedTarget {
    kind: TargetKind,
    settings: ClientSettings,
    /// Clients made so far, by address.
    clients: Mutex<HashMap<String, Arc<Client<Redis>>>>,
    /// The masters found last: asked first next time, on a cluster.
    known: Mutex<Vec<String>>,
}

enum TargetKind {
    /// No feed can be had (the engine runs on a connection it does not own): why.
    #[cfg_attr(not(feature = "redis-crate"), allow(dead_code))]
    Unavailable(&'static str),
    Single(Arc<Client<Redis>>),
    Cluster {
        seeds: Vec<String>,
        nodes: NodeFactory,
    },
    Sentinel {
        name: String,
        sentinels: Vec<String>,
        sentinel_nodes: NodeFactory,
        masters: NodeFactory,
    },
}

impl fmt::Debug for FeedTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            TargetKind::Unavailable(_) => "unavailable",
            TargetKind::Single(_) => "single",
            TargetKind::Cluster { .. } => "cluster",
            TargetKind::Sentinel { .. } => "sentinel",
        };
        f.debug_struct("FeedTarget")
            .field("kind", &kind)
            .field("known", &self.known)
            .finish_non_exhaustive()
    }
}

impl FeedTarget {
    fn new(kind: TargetKind, settings: ClientSettings) -> Self {
        Self {
            kind,
            settings,
            clients: Mutex::new(HashMap::new()),
            known: Mutex::new(Vec::new()),
        }
    }

    /// No feed: subscribing says `why`, as `InvalidConfig`.
    #[cfg_attr(not(feature = "redis-crate"), allow(dead_code))]
    pub(crate) fn unavailable(why: &'static str) -> Self {
        Self::new(TargetKind::Unavailable(why), ClientSettings::default())
    }

    /// One server, through `client`.
    pub(crate) fn single(client: Client<Redis>) -> Self {
        let settings = client.settings().clone();
        Self::new(TargetKind::Single(Arc::new(client)), settings)
    }

    /// The masters of the cluster that `seeds` belong to.
    pub(crate) fn cluster(
        seeds: Vec<String>,
        nodes: NodeFactory,
        settings: ClientSettings,
    ) -> Self {
        Self::new(TargetKind::Cluster { seeds, nodes }, settings)
    }

    /// The master named `name` by `sentinels`.
    pub(crate) fn sentinel(
        name: String,
        sentinels: Vec<String>,
        sentinel_nodes: NodeFactory,
        masters: NodeFactory,
        settings: ClientSettings,
    ) -> Self {
        Self::new(
            TargetKind::Sentinel {
                name,
                sentinels,
                sentinel_nodes,
                masters,
            },
            settings,
        )
    }

    /// Whether the masters can change under the feed: then they are asked for every heartbeat.
    fn moves(&self) -> bool {
        matches!(
            self.kind,
            TargetKind::Cluster { .. } | TargetKind::Sentinel { .. }
        )
    }

    fn is_sentinel(&self) -> bool {
        matches!(self.kind, TargetKind::Sentinel { .. })
    }

    /// The client of the server at `address`, made with `factory` on first use; a master's
    /// connections check that it is one (`ROLE`) when `master`.
    fn client(
        &self,
        address: &str,
        factory: &NodeFactory,
        master: bool,
    ) -> Result<Arc<Client<Redis>>> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(address) {
            return Ok(Arc::clone(client));
        }
        let mut backend = factory(address)?;
        if master {
            backend = backend.requiring_master();
        }
        let client = Arc::new(Client::new(backend, self.settings.clone()));
        clients.insert(address.to_string(), Arc::clone(&client));
        Ok(client)
    }

    /// The masters now, by address.
    fn masters(&self) -> Result<Vec<(String, Arc<Client<Redis>>)>> {
        match &self.kind {
            TargetKind::Unavailable(why) => Err(CacheError::invalid_config(*why)),
            TargetKind::Single(client) => Ok(vec![(
                client.backend().address().to_string(),
                Arc::clone(client),
            )]),
            TargetKind::Cluster { seeds, nodes } => {
                let mut candidates = self.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
                candidates.extend(
                    seeds
                        .iter()
                        .filter(|s| !candidates.contains(s))
                        .cloned()
                        .collect::<Vec<_>>(),
                );
                let mut last = None;
                for address in candidates {
                    let answer = self.client(&address, nodes, false).and_then(|client| {
                        client.run("invalidations", || Ok(crate::cluster::read_slots()))
                    });
                    match answer {
                        Ok(ranges) => {
                            let mut masters = crate::cluster::masters_of(ranges, &address);
                            masters.sort();
                            *self.known.lock().unwrap_or_else(|p| p.into_inner()) = masters.clone();
                            return masters
                                .into_iter()
                                .map(|m| Ok((m.clone(), self.client(&m, nodes, true)?)))
                                .collect();
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| CacheError::invalid_config("a cluster without nodes")))
            }
            TargetKind::Sentinel {
                name,
                sentinels,
                sentinel_nodes,
                masters,
            } => {
                let mut last = None;
                for sentinel in sentinels {
                    let answer = self
                        .client(sentinel, sentinel_nodes, false)
                        .and_then(|client| {
                            client.run("invalidations", || {
                                Ok(crate::sentinel::master_address(name))
                            })
                        });
                    match answer {
                        Ok(Some(master)) => {
                            let client = self.client(&master, masters, true)?;
                            return Ok(vec![(master, client)]);
                        }
                        Ok(None) => {
                            last = Some(CacheError::Connection {
                                backend: crate::backend::BACKEND,
                                operation: "invalidations",
                                address: sentinel.clone(),
                                source: Some(
                                    format!("the sentinel knows no master named {name}").into(),
                                ),
                            });
                        }
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| CacheError::invalid_config("no sentinel given")))
            }
        }
    }
}

/// How long `subscribe` waits for the first connection: connect, three round trips.
fn listener_wait(timeout: Duration) -> Duration {
    timeout.saturating_mul(4)
}

/// What every tracking connection does, from the feed's settings.
#[derive(Clone)]
struct Tracking {
    prefix: String,
    timeout: Duration,
    heartbeat: Duration,
}

/// The feed's supervisor: finds the masters, tracks each on a connection read by a thread of
/// its own, says `Connected` once all are tracked and `Lost` when any breaks or the masters
/// change, and starts again.
struct Listener {
    target: Arc<FeedTarget>,
    tracking: Tracking,
    stop: Arc<AtomicBool>,
    sink: Sink,
    ready: Option<mpsc::Sender<()>>,
    /// Whether `Lost` was said since the last `Connected`.
    lost: bool,
    backoff: Duration,
    /// The masters tracked last.
    tracked: Vec<String>,
}

/// Why a feed, or one connection of it, ended.
enum End {
    Stopped,
    Broken,
}

/// What a tracking connection's thread tells the supervisor.
enum Event {
    Tracking,
    Broken,
}

impl Listener {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits one slice for a word from the trackers: `Ok(true)` when one says it tracks,
    /// `Ok(false)` when none spoke, the end when the listener stops or a tracker broke.
    fn hear(&self, heard: &mpsc::Receiver<Event>) -> std::result::Result<bool, End> {
        if self.stopped() {
            return Err(End::Stopped);
        }
        match heard.recv_timeout(SLICE) {
            Ok(Event::Tracking) => Ok(true),
            Ok(Event::Broken) | Err(mpsc::RecvTimeoutError::Disconnected) => Err(End::Broken),
            Err(mpsc::RecvTimeoutError::Timeout) => Ok(false),
        }
    }

    fn say(&mut self, event: Invalidation<'_>) {
        (self.sink)(event);
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
    }

    fn run(mut self) {
        while !self.stopped() {
            let end = match self.target.masters() {
                Ok(masters) => self.follow(&masters),
                Err(_) => End::Broken,
            };
            if let End::Stopped = end {
                return;
            }
            if !self.lost {
                self.say(Invalidation::Lost);
                self.lost = true;
            } else {
                self.pause(self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
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

    /// Tracks every one of `masters` until one breaks, they change, or the feed stops.
    fn follow(&mut self, masters: &[(String, Arc<Client<Redis>>)]) -> End {
        let generation = Arc::new(AtomicBool::new(false));
        let (events, heard) = mpsc::channel();
        let mut threads = Vec::with_capacity(masters.len());
        for (_, client) in masters {
            let tracker = Tracker {
                client: Arc::clone(client),
                tracking: self.tracking.clone(),
                stop: Arc::clone(&self.stop),
                generation: Arc::clone(&generation),
                sink: Arc::clone(&self.sink),
                events: events.clone(),
            };
            match std::thread::Builder::new()
                .name("cache-redis-tracking".into())
                .spawn(move || tracker.run())
            {
                Ok(thread) => threads.push(thread),
                Err(_) => break,
            }
        }
        drop(events);
        let end = if threads.len() == masters.len() {
            self.watch(masters, &heard)
        } else {
            End::Broken
        };
        generation.store(true, Ordering::Release);
        for thread in threads {
            let _ = thread.join();
        }
        end
    }

    /// Waits until every master is tracked, says `Connected`, then watches for a broken
    /// connection or a change of masters.
    fn watch(
        &mut self,
        masters: &[(String, Arc<Client<Redis>>)],
        heard: &mpsc::Receiver<Event>,
    ) -> End {
        let until = Instant::now() + listener_wait(self.tracking.timeout);
        let mut tracking = 0;
        while tracking < masters.len() {
            match self.hear(heard) {
                Err(end) => return end,
                Ok(true) => tracking += 1,
                Ok(false) if Instant::now() >= until => return End::Broken,
                Ok(false) => {}
            }
        }
        let addresses: Vec<String> = masters.iter().map(|(a, _)| a.clone()).collect();
        let moved = !self.tracked.is_empty() && self.tracked != addresses;
        if moved && self.target.is_sentinel() {
            // A new master: the engines of this process read the old one (a replica now, or a
            // master about to become one, serving old values) until they ask the sentinels
            // again, every second. Refills are not kept while the feed is lost: stay lost until
            // they have.
            let until = Instant::now() + crate::sentinel::CHECK_EVERY * 2 + self.tracking.timeout;
            while Instant::now() < until {
                if let Err(end) = self.hear(heard) {
                    return end;
                }
            }
        }
        // Only now: a generation that broke during the wait waits again next time.
        self.tracked = addresses;
        self.say(Invalidation::Connected);
        self.lost = false;
        self.backoff = FIRST_BACKOFF;
        let mut asked = Instant::now();
        loop {
            if let Err(end) = self.hear(heard) {
                return end;
            }
            if self.target.moves() && asked.elapsed() >= self.tracking.heartbeat {
                asked = Instant::now();
                // A failed question is not a loss: the tracked masters still report.
                if let Ok(now) = self.target.masters() {
                    let same = now.len() == masters.len()
                        && now.iter().zip(masters).all(|((a, _), (b, _))| a == b);
                    if !same {
                        return End::Broken;
                    }
                }
            }
        }
    }
}

/// One tracking connection to one master, read by a thread of its own.
struct Tracker {
    client: Arc<Client<Redis>>,
    tracking: Tracking,
    /// The whole feed stops.
    stop: Arc<AtomicBool>,
    /// This generation of connections stops (the supervisor starts again).
    generation: Arc<AtomicBool>,
    sink: Sink,
    events: mpsc::Sender<Event>,
}

impl Tracker {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire) || self.generation.load(Ordering::Acquire)
    }

    fn run(mut self) {
        let client = Arc::clone(&self.client);
        let end = match client.dedicated("invalidations") {
            Ok(mut conn) => match self.setup(&mut conn) {
                Ok(()) => {
                    let _ = self.events.send(Event::Tracking);
                    self.listen(&mut conn)
                }
                Err(_) => End::Broken,
            },
            Err(_) => End::Broken,
        };
        if let End::Broken = end {
            let _ = self.events.send(Event::Broken);
        }
    }

    /// One command and its reply, within the timeout.
    fn ask(&self, conn: &mut Dedicated<'_, Redis>, args: &[&[u8]]) -> Result<Value> {
        let mut bytes = Vec::new();
        resp::command(&mut bytes, args);
        conn.send(&bytes, self.tracking.timeout)?;
        let limits = ReplyLimits::scalar(1024).with_arrays(8, 1);
        match conn.receive(&limits, self.tracking.timeout)? {
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
                after: self.tracking.timeout,
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
        if !self.tracking.prefix.is_empty() {
            tracking.push(b"PREFIX");
            tracking.push(self.tracking.prefix.as_bytes());
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
                Some(at) if at.elapsed() > self.tracking.timeout => return End::Broken,
                Some(_) => {}
                None if heard.elapsed() >= self.tracking.heartbeat => {
                    if conn.send(&ping, self.tracking.timeout).is_err() {
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
        let Some(rest) = key.strip_prefix(self.tracking.prefix.as_bytes()) else {
            return;
        };
        // A key no caller of this engine could have written is no one's.
        if let Ok(key) = std::str::from_utf8(rest) {
            (self.sink)(Invalidation::Key(key));
        }
    }
}
