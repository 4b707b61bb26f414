//! Redis Cluster: which node serves a key, following MOVED and ASK, the slot map and its
//! refreshes, and the exchanges of bulk operations that answer key by key.
//!
//! The `redis` crate's cluster client was not used: it runs on the `redis` crate's connections,
//! which bound no reply and time out per read rather than per operation (the promises the remote
//! core exists to keep), and it retries a failed request up to 16 times, which could apply an
//! `increment` or an `add` twice. Here every node is a client of the remote core, and a request is
//! sent again only when the node said it did not run it (MOVED, ASK, TRYAGAIN) or the core's
//! own rule allows it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheError, KeyDisplay, Result};
use cache_remote::{
    BATCH_KEYS, ClientSettings, Deadline, Exchange, ReplyLimits, Request, Step, Transport,
};

use crate::backend::{BACKEND, Redirect, Redis, unexpected};
use crate::commands::Commands;
use crate::resp::{self, Value};

/// The number of hash slots.
pub(crate) const SLOTS: usize = 16384;
/// Redirections followed for one key before giving up.
pub(crate) const MAX_REDIRECTS: usize = 5;
/// The shortest time between two refreshes of the slot map.
const REFRESH_EVERY: Duration = Duration::from_millis(100);

const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_XMODEM);

/// The slot of a key: CRC16 of the key, or of its hash tag (the part between the first `{` and
/// the next `}`, when not empty), modulo 16384.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    CRC16.checksum(tagged.unwrap_or(key)) % SLOTS as u16
}

/// Which master serves each slot, and its replicas.
#[derive(Debug, Default)]
struct SlotMap {
    /// An index into `masters` per slot; `u16::MAX` where none is known.
    owners: Vec<u16>,
    masters: Vec<String>,
    /// The replicas of each master, by the same index.
    replicas: Vec<Vec<String>>,
}

impl SlotMap {
    fn owner(&self, slot: u16) -> Option<&str> {
        let index = *self.owners.get(usize::from(slot))?;
        self.masters.get(usize::from(index)).map(String::as_str)
    }

    fn replicas(&self, slot: u16) -> &[String] {
        self.owners
            .get(usize::from(slot))
            .and_then(|index| self.replicas.get(usize::from(*index)))
            .map_or(&[], Vec::as_slice)
    }
}

/// How often the slot map is read again while reads go to replicas.
const REPLICAS_EVERY: Duration = Duration::from_secs(2);

/// Builds the backend of a node from its address.
pub(crate) type NodeFactory = Box<dyn Fn(&str) -> Result<Redis> + Send + Sync>;

/// The cluster as one engine sees it.
pub(crate) struct Cluster<T: Transport> {
    factory: NodeFactory,
    settings: ClientSettings,
    seeds: Vec<String>,
    clients: RwLock<HashMap<String, Arc<T::Client<Redis>>>>,
    map: RwLock<Arc<SlotMap>>,
    refreshing: AtomicBool,
    refreshed: Mutex<Option<Instant>>,
    limits: ReplyLimits,
    /// Whether reads go to replicas.
    replica_reads: bool,
    /// Turns of the replicas, for reads.
    next_replica: AtomicUsize,
}

impl<T: Transport> std::fmt::Debug for Cluster<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("seeds", &self.seeds)
            .field("masters", &self.masters())
            .finish_non_exhaustive()
    }
}

/// What a node said of one key of a bulk request.
#[derive(Debug)]
pub(crate) enum Answer<T> {
    Done(T),
    Redirect(Redirect),
}

impl<T: Transport> Cluster<T> {
    pub(crate) fn new(seeds: Vec<String>, factory: NodeFactory, settings: ClientSettings) -> Self {
        Self {
            factory,
            settings,
            seeds,
            clients: RwLock::new(HashMap::new()),
            map: RwLock::new(Arc::new(SlotMap::default())),
            refreshing: AtomicBool::new(false),
            refreshed: Mutex::new(None),
            replica_reads: false,
            next_replica: AtomicUsize::new(0),
            // CLUSTER SLOTS: an entry per range, each with a few nodes of a few fields.
            limits: read_slots().limits,
        }
    }

    fn map(&self) -> Arc<SlotMap> {
        Arc::clone(&self.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sends reads to replicas: every node's connections start with `READONLY`, so that a
    /// replica answers reads of its master's slots.
    pub(crate) fn reading_replicas(mut self) -> Self {
        self.replica_reads = true;
        self
    }

    /// When reads go to replicas: reads the slot map again if it is older than
    /// [`REPLICAS_EVERY`], so that replicas are found once they are listed (a cluster lists a
    /// replica only once its master has heard its replication offset) and their changes are
    /// followed.
    pub(crate) async fn refresh_replicas(&self, deadline: Deadline) {
        if !self.replica_reads {
            return;
        }
        let old = self
            .refreshed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= REPLICAS_EVERY);
        if old {
            let _ = self.refresh(deadline, false).await;
        }
    }

    /// A replica of the master serving `slot` to read from, in turn, when reads go to
    /// replicas and it has one (as last known).
    pub(crate) fn reader(&self, slot: u16) -> Option<String> {
        if !self.replica_reads {
            return None;
        }
        let map = self.map();
        let replicas = map.replicas(slot);
        if replicas.is_empty() {
            return None;
        }
        let turn = self.next_replica.fetch_add(1, Ordering::Relaxed);
        Some(replicas[turn % replicas.len()].clone())
    }

    /// The masters serving slots, as last known.
    pub(crate) fn masters(&self) -> Vec<String> {
        self.map().masters.clone()
    }

    /// Every client opened so far.
    pub(crate) fn clients(&self) -> Vec<Arc<T::Client<Redis>>> {
        self.clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The client of the node at `address`, made on first use.
    pub(crate) fn client(&self, address: &str) -> Result<Arc<T::Client<Redis>>> {
        if let Some(client) = self
            .clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
        {
            return Ok(Arc::clone(client));
        }
        let mut backend = (self.factory)(address)?;
        if self.replica_reads {
            backend = backend.reading_replicas();
        }
        let mut clients = self.clients.write().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(
            clients
                .entry(address.to_string())
                .or_insert_with(|| Arc::new(T::client(backend, self.settings.clone()))),
        ))
    }

    /// The master serving `slot`, reading the slot map first when none is known.
    pub(crate) async fn owner(&self, slot: u16, deadline: Deadline) -> Result<String> {
        loop {
            if let Some(owner) = self.map().owner(slot) {
                return Ok(owner.to_string());
            }
            self.refresh(deadline, true).await?;
            if self.map().owner(slot).is_none() && deadline.remaining().is_none() {
                return Err(CacheError::Connection {
                    backend: BACKEND,
                    operation: "cluster slots",
                    address: self.seeds.join(","),
                    source: Some(format!("no node of the cluster serves slot {slot}").into()),
                });
            }
        }
    }

    /// Every master, reading the slot map first when none is known.
    pub(crate) async fn all_masters(&self, deadline: Deadline) -> Result<Vec<String>> {
        if self.map().masters.is_empty() {
            self.refresh(deadline, true).await?;
        }
        Ok(self.masters())
    }

    /// Takes note of a MOVED redirection: the slot is served elsewhere now. The map is read
    /// again too, since a move rarely comes alone.
    pub(crate) fn moved(&self, redirect: &Redirect) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let mut next = SlotMap {
            owners: map.owners.clone(),
            masters: map.masters.clone(),
            replicas: map.replicas.clone(),
        };
        let index = match next.masters.iter().position(|m| *m == redirect.address) {
            Some(index) => index,
            None => {
                next.masters.push(redirect.address.clone());
                next.replicas.push(Vec::new());
                next.masters.len() - 1
            }
        };
        if next.owners.len() == SLOTS {
            next.owners[usize::from(redirect.slot) % SLOTS] =
                u16::try_from(index).unwrap_or(u16::MAX);
        }
        *map = Arc::new(next);
    }

    /// Reads the slot map from a node that answers (the masters known, then the seeds), at most
    /// once per 100 ms; `wait` makes a caller wait for a refresh another caller runs.
    pub(crate) async fn refresh(&self, deadline: Deadline, wait: bool) -> Result<()> {
        let recent = self
            .refreshed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < REFRESH_EVERY);
        if recent && !self.map().masters.is_empty() {
            return Ok(());
        }
        if self
            .refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            if wait {
                T::sleep(Duration::from_millis(2)).await;
            }
            return Ok(());
        }
        let result = self.read_slots(deadline).await;
        *self.refreshed.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.refreshing.store(false, Ordering::Release);
        result
    }

    async fn read_slots(&self, deadline: Deadline) -> Result<()> {
        let mut candidates = self.masters();
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let mut last = None;
        for address in candidates {
            let client = self.client(&address)?;
            let limits = self.limits;
            let answer = T::run(&client, "cluster slots", deadline, move || {
                Ok(ReadSlots {
                    limits,
                    sent: false,
                })
            })
            .await;
            match answer {
                Ok(ranges) => {
                    let map = slot_map(ranges, &address);
                    *self.map.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(map);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            if deadline.remaining().is_none() {
                break;
            }
        }
        Err(last.unwrap_or_else(|| CacheError::Connection {
            backend: BACKEND,
            operation: "cluster slots",
            address: self.seeds.join(","),
            source: Some("no node of the cluster answered".into()),
        }))
    }
}

/// `CLUSTER SLOTS`, read once: `(first slot, last slot, master address)` per range.
pub(crate) fn read_slots() -> ReadSlots {
    ReadSlots {
        limits: ReplyLimits::scalar(1024).with_arrays(SLOTS * 2, 4),
        sent: false,
    }
}

/// A `CLUSTER SLOTS` range: first slot, last slot, master address, replica addresses.
pub(crate) type SlotRange = (u16, u16, String, Vec<String>);

/// The masters serving slots in `CLUSTER SLOTS` ranges read from the node at `asked`.
pub(crate) fn masters_of(ranges: Vec<SlotRange>, asked: &str) -> Vec<String> {
    slot_map(ranges, asked).masters
}

/// `CLUSTER SLOTS`: `(first slot, last slot, master address, replica addresses)` per range.
pub(crate) struct ReadSlots {
    limits: ReplyLimits,
    sent: bool,
}

impl Exchange<Value> for ReadSlots {
    type Output = Vec<SlotRange>;

    fn start(&mut self) -> Result<Step<Self::Output>> {
        if std::mem::replace(&mut self.sent, true) {
            return Err(CacheError::invalid_config("an exchange was started twice"));
        }
        let mut bytes = Vec::new();
        resp::command(&mut bytes, &[b"CLUSTER", b"SLOTS"]);
        Ok(Step::Send(Request::new(bytes, 1, self.limits)))
    }

    fn next(&mut self, replies: Vec<Value>) -> Result<Step<Self::Output>> {
        let bad = |v: &Value| unexpected(v, "cluster slots");
        let reply = replies.into_iter().next().unwrap_or(Value::Nil);
        let Value::Array(ranges) = reply else {
            return Err(match reply {
                Value::Error(text) => CacheError::Connection {
                    backend: BACKEND,
                    operation: "cluster slots",
                    address: String::new(),
                    source: Some(format!("the node is not in a cluster: {text}").into()),
                },
                other => bad(&other),
            });
        };
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            let Value::Array(fields) = range else {
                return Err(bad(&range));
            };
            let mut fields = fields.into_iter();
            let (Some(Value::Integer(first)), Some(Value::Integer(last)), Some(master)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(bad(&Value::Nil));
            };
            let master = node_address(master).ok_or_else(|| bad(&Value::Nil))?;
            // Replicas follow the master; one without a usable address is left out.
            let replicas = fields.filter_map(node_address).collect();
            let (Ok(first), Ok(last)) = (u16::try_from(first), u16::try_from(last)) else {
                return Err(bad(&Value::Nil));
            };
            out.push((first, last, master, replicas));
        }
        Ok(Step::Done(out))
    }
}

/// `host:port` of a `CLUSTER SLOTS` node entry (`[host, port, id, ...]`).
fn node_address(node: Value) -> Option<String> {
    let Value::Array(node) = node else {
        return None;
    };
    let mut node = node.into_iter();
    let (Some(Value::Bulk(host)), Some(Value::Integer(port))) = (node.next(), node.next()) else {
        return None;
    };
    let port = u16::try_from(port).ok()?;
    Some(format!("{}:{port}", String::from_utf8_lossy(&host)))
}

/// The map from `CLUSTER SLOTS` ranges read from the node at `asked`: a node that does not know
/// its own address (an empty host) is the one asked.
fn slot_map(ranges: Vec<SlotRange>, asked: &str) -> SlotMap {
    let mut map = SlotMap {
        owners: vec![u16::MAX; SLOTS],
        masters: Vec::new(),
        replicas: Vec::new(),
    };
    let asked_host = asked.rsplit_once(':').map_or(asked, |(h, _)| h);
    let resolve = |address: String| match address.strip_prefix(':') {
        Some(port) => format!("{asked_host}:{port}"),
        None if address.starts_with('?') => asked.to_string(),
        None => address,
    };
    for (first, last, address, replicas) in ranges {
        let address = resolve(address);
        let index = match map.masters.iter().position(|m| *m == address) {
            Some(index) => index,
            None => {
                map.masters.push(address);
                map.replicas
                    .push(replicas.into_iter().map(&resolve).collect());
                map.masters.len() - 1
            }
        };
        let index = u16::try_from(index).unwrap_or(u16::MAX);
        for slot in usize::from(first)..=usize::from(last).min(SLOTS - 1) {
            map.owners[slot] = index;
        }
    }
    map
}

/// `ASKING`, encoded.
const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

/// An exchange whose every command goes after `ASKING` (one ASK redirection): the `+OK` of
/// each `ASKING` is checked and taken out before the inner exchange sees the replies.
pub(crate) struct Asking<E> {
    pub(crate) inner: E,
}

impl<E: Exchange<Value>> Asking<E> {
    fn wrap(&self, step: Step<E::Output>) -> Step<E::Output> {
        match step {
            Step::Send(mut request) => {
                // One request may hold several commands (a transaction): ASKING covers the
                // command after it, and inside MULTI every queued command.
                let mut bytes = Vec::with_capacity(ASKING.len() + request.bytes.len());
                bytes.extend_from_slice(ASKING);
                bytes.extend_from_slice(&request.bytes);
                request.bytes = bytes;
                request.replies += 1;
                Step::Send(request)
            }
            done => done,
        }
    }
}

impl<E: Exchange<Value>> Exchange<Value> for Asking<E> {
    type Output = E::Output;

    fn start(&mut self) -> Result<Step<E::Output>> {
        let step = self.inner.start()?;
        Ok(self.wrap(step))
    }

    fn next(&mut self, mut replies: Vec<Value>) -> Result<Step<E::Output>> {
        if replies.is_empty() {
            return Err(unexpected(&Value::Nil, "asking"));
        }
        match replies.remove(0) {
            Value::Simple(_) => {}
            other => return Err(unexpected(&other, "asking")),
        }
        let step = self.inner.next(replies)?;
        Ok(self.wrap(step))
    }
}

/// One command per key on one node, each after `ASKING` when `asking`: the bulk operations of a
/// cluster, answered key by key so that keys redirected elsewhere can be sent there alone.
pub(crate) struct PerKey<'a, T, P> {
    commands: &'a Commands,
    requests: std::collections::VecDeque<(Request, usize)>,
    asking: bool,
    answers: Vec<Answer<T>>,
    parse: P,
    operation: &'static str,
}

impl<'a, T: Send, P> PerKey<'a, T, P>
where
    P: FnMut(usize, Value) -> Result<T> + Send,
{
    /// `encode(i, out)` appends the command of key `i` of `count`; `parse(i, reply)` reads its
    /// reply.
    pub(crate) fn new(
        commands: &'a Commands,
        operation: &'static str,
        count: usize,
        asking: bool,
        mut encode: impl FnMut(usize, &mut Vec<u8>),
        parse: P,
    ) -> Self {
        let mut requests = std::collections::VecDeque::new();
        let mut first = 0;
        while first < count {
            let end = (first + BATCH_KEYS).min(count);
            let mut bytes = Vec::new();
            for i in first..end {
                if asking {
                    bytes.extend_from_slice(ASKING);
                }
                encode(i, &mut bytes);
            }
            let per_key = if asking { 2 } else { 1 };
            let mut request = Request::new(bytes, (end - first) * per_key, commands.limits);
            if first > 0 {
                request.own_deadline = true;
            }
            requests.push_back((request, first));
            first = end;
        }
        Self {
            commands,
            requests,
            asking,
            answers: Vec::with_capacity(count),
            parse,
            operation,
        }
    }

    fn step(&mut self) -> Step<Vec<Answer<T>>> {
        match self.requests.front() {
            Some((request, _)) => Step::Send(request.clone()),
            None => Step::Done(std::mem::take(&mut self.answers)),
        }
    }
}

impl<T: Send, P> Exchange<Value> for PerKey<'_, T, P>
where
    P: FnMut(usize, Value) -> Result<T> + Send,
{
    type Output = Vec<Answer<T>>;

    fn start(&mut self) -> Result<Step<Self::Output>> {
        Ok(self.step())
    }

    fn next(&mut self, replies: Vec<Value>) -> Result<Step<Self::Output>> {
        let Some((_, first)) = self.requests.pop_front() else {
            return Err(unexpected(&Value::Nil, self.operation));
        };
        let mut replies = replies.into_iter();
        let mut index = first;
        loop {
            if self.asking {
                match replies.next() {
                    None => break,
                    Some(Value::Simple(_)) => {}
                    Some(other) => return Err(self.commands.failure(other, self.operation, None)),
                }
            }
            let Some(reply) = replies.next() else { break };
            let answer = match reply {
                Value::Error(text) => {
                    let error = self
                        .commands
                        .failure(Value::Error(text), self.operation, None);
                    match Redirect::of(&error) {
                        Some(redirect) => Answer::Redirect(redirect.clone()),
                        None => return Err(error),
                    }
                }
                other => Answer::Done((self.parse)(index, other)?),
            };
            self.answers.push(answer);
            index += 1;
        }
        Ok(self.step())
    }
}

/// The error for a key redirected too many times.
pub(crate) fn too_many_redirects(key: &str, operation: &'static str) -> CacheError {
    CacheError::Connection {
        backend: BACKEND,
        operation,
        address: String::new(),
        source: Some(
            format!(
                "key {} was redirected {MAX_REDIRECTS} times in a row: the cluster is \
                 reconfiguring",
                KeyDisplay::new(key)
            )
            .into(),
        ),
    }
}

/// Bytes of a `GET` reply.
pub(crate) fn bulk(reply: Value) -> std::result::Result<Option<Bytes>, Value> {
    match reply {
        Value::Bulk(value) => Ok(Some(Bytes::from(value))),
        Value::Nil => Ok(None),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis() {
        // Values from Redis's own CLUSTER KEYSLOT.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(CRC16.checksum(b"123456789"), 0x31c3);
    }

    #[test]
    fn redirections_are_parsed() {
        let moved = crate::backend::reply_error("MOVED 3999 127.0.0.1:6381", "get", "x", None);
        assert_eq!(
            Redirect::of(&moved),
            Some(&Redirect {
                ask: false,
                slot: 3999,
                address: "127.0.0.1:6381".into()
            })
        );
        let ask = crate::backend::reply_error("ASK 1 10.0.0.2:7000", "get", "x", None);
        assert!(Redirect::of(&ask).is_some_and(|r| r.ask));
        let down = crate::backend::reply_error("CLUSTERDOWN The cluster is down", "get", "x", None);
        assert!(down.is_transient(), "{down}");
    }

    #[test]
    fn slot_maps_name_every_served_slot() {
        let map = slot_map(
            vec![
                (
                    0,
                    5460,
                    "10.0.0.1:7000".into(),
                    vec!["10.0.0.2:7000".into()],
                ),
                (
                    5461,
                    16383,
                    ":7001".into(),
                    vec![":7002".into(), "10.0.0.3:7001".into()],
                ),
            ],
            "10.0.0.9:7001",
        );
        assert_eq!(map.owner(0), Some("10.0.0.1:7000"));
        assert_eq!(map.owner(16383), Some("10.0.0.9:7001"));
        assert_eq!(map.masters.len(), 2);
        assert_eq!(map.replicas(0), ["10.0.0.2:7000"]);
        assert_eq!(map.replicas(16383), ["10.0.0.9:7002", "10.0.0.3:7001"]);
    }
}
