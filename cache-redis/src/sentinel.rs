//! Redis Sentinel: the master is whichever server the sentinels name. They are asked again
//! whenever the one in use fails (a broken connection, a timeout, a write refused as
//! `READONLY`, a new connection finding a replica), at most every 100 ms, and every second in
//! the background: after a failover in which the old master stays up (a manual one, a
//! partition), it keeps accepting writes until the sentinels reconfigure it, and only asking
//! them finds the new master.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use cache_core::{CacheError, Result};
use cache_remote::{
    ClientSettings, Deadline, Exchange, Make, Output, ReplyLimits, ReplyOf, Request, Step,
    Transport,
};

use crate::backend::{BACKEND, Redis, unexpected};
use crate::cluster::NodeFactory;
use crate::resp::{self, Value};

/// The shortest time between two questions to the sentinels.
const ASK_EVERY: Duration = Duration::from_millis(100);
/// How often the sentinels are asked in the background, while the engine is used.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

type Client<T> = <T as Transport>::Client<Redis>;

/// The master some sentinels name, as one engine sees it.
pub(crate) struct Sentinel<T: Transport> {
    name: String,
    sentinels: Vec<String>,
    /// Connections to sentinels.
    sentinel_factory: NodeFactory,
    /// Connections to the master: credentials, database, and the check that it is a master.
    master_factory: NodeFactory,
    settings: ClientSettings,
    sentinel_clients: RwLock<HashMap<String, Arc<Client<T>>>>,
    master: RwLock<Option<(String, Arc<Client<T>>)>>,
    /// Every master client made, so that closing the engine closes them all.
    retired: Mutex<Vec<Arc<Client<T>>>>,
    asking: AtomicBool,
    asked: Mutex<Option<Instant>>,
    /// Whether reads go to replicas.
    replica_reads: bool,
    /// The replicas the sentinels name as healthy, with their clients, when reads go there.
    replicas: RwLock<Vec<(String, Arc<Client<T>>)>>,
    next_replica: AtomicUsize,
    /// Whether the background check runs.
    watching: AtomicBool,
    closed: AtomicBool,
    me: Weak<Sentinel<T>>,
}

impl<T: Transport> std::fmt::Debug for Sentinel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sentinel")
            .field("name", &self.name)
            .field("sentinels", &self.sentinels)
            .field("master", &self.master_address())
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Sentinel<T> {
    pub(crate) fn new(
        name: String,
        sentinels: Vec<String>,
        sentinel_factory: NodeFactory,
        master_factory: NodeFactory,
        settings: ClientSettings,
        replica_reads: bool,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            name,
            sentinels,
            sentinel_factory,
            master_factory,
            settings,
            sentinel_clients: RwLock::new(HashMap::new()),
            master: RwLock::new(None),
            retired: Mutex::new(Vec::new()),
            asking: AtomicBool::new(false),
            asked: Mutex::new(None),
            replica_reads,
            replicas: RwLock::new(Vec::new()),
            next_replica: AtomicUsize::new(0),
            watching: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            me: me.clone(),
        })
    }

    /// Stops the background check.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Starts the background check of the sentinels, unless it runs.
    fn watch(&self) {
        if self
            .watching
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            T::spawn(watch_loop(self.me.clone()));
        }
    }

    /// The master in use, if one was found.
    pub(crate) fn master_address(&self) -> Option<String> {
        self.master
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(a, _)| a.clone())
    }

    /// Every client made: sentinels and masters.
    pub(crate) fn clients(&self) -> Vec<Arc<Client<T>>> {
        let mut all: Vec<Arc<Client<T>>> = self
            .sentinel_clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.extend(
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .cloned(),
        );
        all
    }

    fn current(&self) -> Option<Arc<Client<T>>> {
        self.master
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, c)| Arc::clone(c))
    }

    /// Runs an operation on the master, finding it first if need be; a failure that may mean
    /// the master changed sends the engine to the sentinels again.
    pub(crate) async fn run<M>(
        &self,
        operation: &'static str,
        deadline: Deadline,
        make: M,
    ) -> Result<Output<Redis, M>>
    where
        M: Make<ReplyOf<Redis>>,
    {
        let client = self.master(deadline).await?;
        let result = T::run(&client, operation, deadline, make).await;
        self.after(&result, deadline).await;
        result
    }

    /// Runs a read: on a replica when reads go there and the sentinels named one, and on the
    /// master when none is known or the replica failed in a way that may pass.
    pub(crate) async fn run_read<M>(
        &self,
        operation: &'static str,
        deadline: Deadline,
        make: M,
    ) -> Result<Output<Redis, M>>
    where
        M: Make<ReplyOf<Redis>> + Clone,
    {
        if let Some(client) = self.replica() {
            let result = T::run(&client, operation, deadline, make.clone()).await;
            match result {
                Err(error) if error.is_transient() && deadline.remaining().is_some() => {}
                result => return result,
            }
        }
        self.run(operation, deadline, make).await
    }

    /// The client to read from: a replica, in turn, when reads go there and the sentinels
    /// named one; else the master, found first if need be.
    pub(crate) async fn reader(&self, deadline: Deadline) -> Result<Arc<Client<T>>> {
        match self.replica() {
            Some(client) => Ok(client),
            None => self.master(deadline).await,
        }
    }

    /// A replica to read from, in turn, when reads go to replicas and one is known.
    fn replica(&self) -> Option<Arc<Client<T>>> {
        if !self.replica_reads {
            return None;
        }
        self.watch();
        let replicas = self.replicas.read().unwrap_or_else(|p| p.into_inner());
        if replicas.is_empty() {
            return None;
        }
        let turn = self.next_replica.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(&replicas[turn % replicas.len()].1))
    }

    /// The client of the master, finding it first if need be.
    pub(crate) async fn master(&self, deadline: Deadline) -> Result<Arc<Client<T>>> {
        self.watch();
        match self.current() {
            Some(client) => Ok(client),
            None => {
                self.ask(deadline, true).await?;
                self.current()
                    .ok_or_else(|| self.no_master("no sentinel named a master"))
            }
        }
    }

    /// After an operation on the master: a failure that may mean the master changed sends the
    /// engine to the sentinels again.
    pub(crate) async fn after<O>(&self, result: &Result<O>, deadline: Deadline) {
        if let Err(error) = result {
            if error.is_transient() {
                let _ = self.ask(deadline, false).await;
            }
        }
    }

    fn no_master(&self, why: &str) -> CacheError {
        CacheError::Connection {
            backend: BACKEND,
            operation: "sentinel get-master-addr-by-name",
            address: self.sentinels.join(","),
            source: Some(format!("{why} for master {:?}", self.name).into()),
        }
    }

    fn sentinel_client(&self, address: &str) -> Result<Arc<Client<T>>> {
        if let Some(client) = self
            .sentinel_clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(address)
        {
            return Ok(Arc::clone(client));
        }
        let backend = (self.sentinel_factory)(address)?;
        let mut clients = self
            .sentinel_clients
            .write()
            .unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(
            clients
                .entry(address.to_string())
                .or_insert_with(|| Arc::new(T::client(backend, self.settings.clone()))),
        ))
    }

    /// Asks the sentinels, in turn, where the master is, at most every 100 ms (with `must`,
    /// unless a master is known: the first question is always asked). A new address replaces
    /// the master client; the old one is closed.
    async fn ask(&self, deadline: Deadline, must: bool) -> Result<()> {
        let recent = self
            .asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < ASK_EVERY);
        if recent && (!must || self.current().is_some()) {
            return Ok(());
        }
        if self
            .asking
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Someone else is asking: wait for that answer when there is no master yet.
            while must && self.current().is_none() && deadline.remaining().is_some() {
                if !self.asking.load(Ordering::Acquire) {
                    break;
                }
                T::sleep(Duration::from_millis(2)).await;
            }
            return Ok(());
        }
        let answer = self.ask_sentinels(deadline).await;
        *self.asked.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let outcome = match answer {
            Ok(address) => self.use_master(address),
            Err(e) => Err(e),
        };
        if self.replica_reads {
            // Reads go on to the master when no replica is known: a failed question leaves
            // the list as it was.
            if let Ok(replicas) = self.ask_replicas(deadline).await {
                self.use_replicas(replicas);
            }
        }
        self.asking.store(false, Ordering::Release);
        outcome
    }

    /// The master's address, as the first sentinel that knows it names it.
    async fn ask_sentinels(&self, deadline: Deadline) -> Result<String> {
        let name = self.name.as_str();
        self.first_answer(
            "sentinel get-master-addr-by-name",
            deadline,
            move || Ok(MasterAddress { name, sent: false }),
            |address| address.ok_or_else(|| self.no_master("the sentinel knows no such master")),
        )
        .await
    }

    /// The healthy replicas, as the first sentinel that answers names them.
    async fn ask_replicas(&self, deadline: Deadline) -> Result<Vec<String>> {
        let name = self.name.as_str();
        self.first_answer(
            "sentinel replicas",
            deadline,
            move || Ok(Replicas { name, sent: false }),
            Ok,
        )
        .await
    }

    /// Asks the sentinels in turn, until `deadline`, until one gives an answer `accept` takes;
    /// otherwise the last error.
    async fn first_answer<F, E, X>(
        &self,
        operation: &'static str,
        deadline: Deadline,
        make: F,
        accept: impl Fn(E::Output) -> Result<X>,
    ) -> Result<X>
    where
        F: FnMut() -> Result<E> + Clone + Send,
        E: Exchange<Value>,
    {
        let mut last = None;
        for sentinel in &self.sentinels {
            let client = self.sentinel_client(sentinel)?;
            match T::run(&client, operation, deadline, make.clone())
                .await
                .and_then(&accept)
            {
                Ok(answer) => return Ok(answer),
                Err(e) => last = Some(e),
            }
            if deadline.remaining().is_none() {
                break;
            }
        }
        Err(last.unwrap_or_else(|| self.no_master("no sentinel answered")))
    }

    /// Reads go to these replicas from now on; clients of replicas seen before are kept.
    fn use_replicas(&self, addresses: Vec<String>) {
        let mut replicas = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(addresses.len());
        for address in addresses {
            let known = replicas
                .iter()
                .find(|(a, _)| *a == address)
                .map(|(_, c)| Arc::clone(c));
            let client = match known {
                Some(client) => client,
                None => {
                    let Ok(backend) = (self.master_factory)(&address) else {
                        continue;
                    };
                    let client = Arc::new(T::client(backend, self.settings.clone()));
                    self.retired
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(Arc::clone(&client));
                    client
                }
            };
            next.push((address, client));
        }
        *replicas = next;
    }

    fn use_master(&self, address: String) -> Result<()> {
        let mut master = self.master.write().unwrap_or_else(|p| p.into_inner());
        if master.as_ref().is_some_and(|(a, _)| *a == address) {
            return Ok(());
        }
        let backend = (self.master_factory)(&address)?.requiring_master();
        let client = Arc::new(T::client(backend, self.settings.clone()));
        // Callers still using the old master finish (or fail as it refuses them); no new
        // operation goes there. Its client stays open until the engine closes: closing it now
        // would fail those callers as `Closed`, which is not what happened.
        master.replace((address, Arc::clone(&client)));
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(client);
        Ok(())
    }
}

/// Asks a sentinel once where the master named `name` is.
pub(crate) fn master_address(name: &str) -> MasterAddress<'_> {
    MasterAddress { name, sent: false }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME name`: `host:port`, or `None` for a name the sentinel
/// does not monitor.
pub(crate) struct MasterAddress<'a> {
    name: &'a str,
    sent: bool,
}

impl Exchange<Value> for MasterAddress<'_> {
    type Output = Option<String>;

    fn start(&mut self) -> Result<Step<Option<String>>> {
        if std::mem::replace(&mut self.sent, true) {
            return Err(CacheError::invalid_config("an exchange was started twice"));
        }
        let mut bytes = Vec::new();
        resp::command(
            &mut bytes,
            &[
                b"SENTINEL",
                b"GET-MASTER-ADDR-BY-NAME",
                self.name.as_bytes(),
            ],
        );
        Ok(Step::Send(Request::new(
            bytes,
            1,
            ReplyLimits::scalar(1024).with_arrays(2, 1),
        )))
    }

    fn next(&mut self, replies: Vec<Value>) -> Result<Step<Option<String>>> {
        match replies.into_iter().next() {
            Some(Value::Nil) => Ok(Step::Done(None)),
            Some(Value::Array(fields)) => match fields.as_slice() {
                [Value::Bulk(host), Value::Bulk(port)] => Ok(Step::Done(Some(format!(
                    "{}:{}",
                    String::from_utf8_lossy(host),
                    String::from_utf8_lossy(port)
                )))),
                _ => Err(unexpected(&Value::Array(fields), "sentinel")),
            },
            Some(other) => Err(unexpected(&other, "sentinel")),
            None => Err(unexpected(&Value::Nil, "sentinel")),
        }
    }
}

/// `SENTINEL REPLICAS name`: the replicas that are up, linked to their master, and not
/// flagged down or disconnected, as `host:port`.
struct Replicas<'a> {
    name: &'a str,
    sent: bool,
}

impl Exchange<Value> for Replicas<'_> {
    type Output = Vec<String>;

    fn start(&mut self) -> Result<Step<Vec<String>>> {
        if std::mem::replace(&mut self.sent, true) {
            return Err(CacheError::invalid_config("an exchange was started twice"));
        }
        let mut bytes = Vec::new();
        resp::command(
            &mut bytes,
            &[b"SENTINEL", b"REPLICAS", self.name.as_bytes()],
        );
        // Each replica is a list of about 40 fields and their values.
        Ok(Step::Send(Request::new(
            bytes,
            1,
            ReplyLimits::scalar(4096).with_arrays(1024, 2),
        )))
    }

    fn next(&mut self, replies: Vec<Value>) -> Result<Step<Vec<String>>> {
        let reply = replies.into_iter().next().unwrap_or(Value::Nil);
        let Value::Array(replicas) = reply else {
            return Err(unexpected(&reply, "sentinel replicas"));
        };
        let mut healthy = Vec::new();
        for replica in replicas {
            let Value::Array(fields) = replica else {
                return Err(unexpected(&replica, "sentinel replicas"));
            };
            let field = |name: &[u8]| {
                fields.chunks(2).find_map(|pair| match pair {
                    [Value::Bulk(key), Value::Bulk(value)] if key == name => {
                        Some(String::from_utf8_lossy(value).into_owned())
                    }
                    _ => None,
                })
            };
            let (Some(ip), Some(port), Some(flags)) =
                (field(b"ip"), field(b"port"), field(b"flags"))
            else {
                continue;
            };
            let down = flags
                .split(',')
                .any(|flag| matches!(flag, "s_down" | "o_down" | "disconnected"));
            let linked = field(b"master-link-status").is_some_and(|status| status == "ok");
            if !down && linked {
                healthy.push(format!("{ip}:{port}"));
            }
        }
        Ok(Step::Done(healthy))
    }
}

/// Asks the sentinels where the master is every [`CHECK_EVERY`], until the engine is closed or
/// dropped; it never keeps the engine alive while it waits.
async fn watch_loop<T: Transport>(me: Weak<Sentinel<T>>) {
    loop {
        T::sleep(CHECK_EVERY).await;
        let Some(sentinel) = me.upgrade() else { return };
        if sentinel.closed.load(Ordering::Acquire) {
            return;
        }
        let deadline = Deadline::after(sentinel.settings.timeout);
        let _ = sentinel.ask(deadline, false).await;
    }
}
