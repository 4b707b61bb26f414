//! The engine's operations over one memcached server or several, written once for both faces
//! (generic over the [`Transport`]): each key checked, given its generation and server, and
//! its exchange run there. Ring membership and the namespace's generation have modules of
//! their own.

mod generations;
mod membership;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use cache_core::{Bytes, Capabilities, Remaining, Result, Ttl};
use cache_remote::{
    BoxExchange, Deadline, Make, Output, RemoteOptions, ReplyOf, Transport, route_of, routed,
};

use crate::backend::Memcached;
use crate::commands::Commands;
use crate::generation::Generation;
use crate::keys::{BACKEND, TTL_RESOLUTION, WireKey, check_size, exptime, max_ttl};
use crate::meta::Reply;
use crate::ring::{Ring, RingServer};

/// When a server is taken out of the ring, and when it is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ejection {
    /// Operations in a row that must fail on a server (unreachable, broken connection, no
    /// answer in time) before it is taken out.
    pub(crate) failure_limit: u32,
    /// How long a server stays out before it is tried again.
    pub(crate) retry_after: Duration,
}

/// One server.
pub(crate) struct Node<T: Transport> {
    pub(crate) address: String,
    pub(crate) client: T::Client<Memcached>,
    ring: RingServer,
    /// `Some(when to try it again)` while the server is out of the ring.
    out_until: Mutex<Option<Instant>>,
}

impl<T: Transport> std::fmt::Debug for Node<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("address", &self.address)
            .field("out", &self.out_until().is_some())
            .finish()
    }
}

impl<T: Transport> Node<T> {
    fn out_until(&self) -> MutexGuard<'_, Option<Instant>> {
        // Every critical section leaves the state consistent.
        self.out_until.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine's state, shared by its clones: servers, ring, key rules, generation.
pub(crate) struct Core<T: Transport> {
    pub(crate) nodes: Vec<Node<T>>,
    /// The ring over the servers in it (indices into `nodes`).
    ring: RwLock<Arc<Ring>>,
    /// Whether any server is out, so that the common case checks nothing.
    any_out: AtomicBool,
    ejection: Ejection,
    pub(crate) commands: Commands,
    generation: Option<Generation>,
    pub(crate) options: RemoteOptions,
    pub(crate) hash_keys: bool,
    /// This engine, for the task that tries servers out of the ring again.
    me: Weak<Core<T>>,
    /// Whether that task runs.
    retrying: AtomicBool,
}

impl<T: Transport> std::fmt::Debug for Core<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("nodes", &self.nodes)
            .field("ejection", &self.ejection)
            .field("options", &self.options)
            .field("hash_keys", &self.hash_keys)
            .finish_non_exhaustive()
    }
}

/// The parts of a bulk operation: a server, the route of the connection the part goes on (see
/// [`cache_remote::by_pipeline`]), and indices into the caller's keys.
type Groups = Vec<(usize, u64, Vec<usize>)>;

/// Builds a server's exchange of a bulk read of some keys: a slot per key, in order.
type ReadMany<V> =
    for<'a> fn(&'a Commands, &'a [&'a WireKey]) -> BoxExchange<'a, Reply, Vec<Option<V>>>;

/// The same exchange maker for each server of `nodes`.
fn each<'a, T: Transport, M: Clone>(
    nodes: &[&'a Node<T>],
    make: M,
) -> Vec<(&'a T::Client<Memcached>, M)> {
    nodes.iter().map(|n| (&n.client, make.clone())).collect()
}

impl<T: Transport> Core<T> {
    pub(crate) fn new(
        backends: Vec<Memcached>,
        commands: Commands,
        generation: Option<Generation>,
        options: RemoteOptions,
        hash_keys: bool,
        ejection: Ejection,
    ) -> Arc<Self> {
        let nodes: Vec<Node<T>> = backends
            .into_iter()
            .map(|backend| {
                let address = backend.address_string();
                Node {
                    ring: RingServer::from_address(&address).unwrap_or(RingServer {
                        host: address.clone(),
                        port: 11211,
                        weight: 1,
                    }),
                    client: T::client(backend, options.client.clone()),
                    address,
                    out_until: Mutex::new(None),
                }
            })
            .collect();
        let all: Vec<(usize, &RingServer)> = nodes.iter().map(|n| &n.ring).enumerate().collect();
        let ring = Ring::new(&all);
        Arc::new_cyclic(|me| Self {
            nodes,
            ring: RwLock::new(Arc::new(ring)),
            any_out: AtomicBool::new(false),
            ejection,
            commands,
            generation,
            options,
            hash_keys,
            me: me.clone(),
            retrying: AtomicBool::new(false),
        })
    }

    /// A deadline for one operation.
    fn deadline(&self) -> Deadline {
        Deadline::after(self.options.client.timeout)
    }

    pub(crate) fn capabilities(&self) -> Capabilities {
        let mut caps = self.options.capabilities(BACKEND);
        caps.ttl_resolution = TTL_RESOLUTION;
        caps.max_ttl = max_ttl();
        caps.max_value_size = Some(self.commands.max_value_size());
        caps.max_key_len = self.commands.keys.space.max_key_len();
        caps
    }

    pub(crate) fn namespace(&self) -> Option<&str> {
        self.commands.keys.space.namespace()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.nodes.iter().all(|n| T::is_closed(&n.client))
    }

    pub(crate) fn close(&self) -> Result<()> {
        for node in &self.nodes {
            T::close(&node.client);
        }
        Ok(())
    }

    /// The servers out of the ring now.
    pub(crate) fn out_of_ring(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.out_until().is_some())
            .map(|n| n.address.as_str())
            .collect()
    }

    // ---- running ------------------------------------------------------------------------

    /// Runs an operation on `key` on its server, on the connection of the key: the operations
    /// on a key keep their order.
    async fn run_on<M>(
        &self,
        node: usize,
        key: &str,
        operation: &'static str,
        deadline: Deadline,
        make: M,
    ) -> Result<Output<Memcached, M>>
    where
        M: Make<ReplyOf<Memcached>>,
    {
        let node = &self.nodes[node];
        let make = routed(route_of(key.as_bytes()), make);
        let result = T::run(&node.client, operation, deadline, make).await;
        self.account(node, &result);
        result
    }

    /// Where each key goes, grouped by server and connection in first-seen order (`keys` are
    /// the caller's, `wires` their wire forms).
    fn group(&self, keys: &[&str], wires: &[&WireKey], operation: &'static str) -> Result<Groups> {
        let ring = self.ring();
        let pipelines = T::pipelines(&self.options.client) as u64;
        let mut groups: Groups = Vec::new();
        for (index, (key, wire)) in keys.iter().zip(wires).enumerate() {
            let node = self.locate(&ring, wire, operation)?;
            let route = if pipelines > 1 {
                route_of(key.as_bytes())
            } else {
                0
            };
            match groups
                .iter_mut()
                .find(|(n, r, _)| *n == node && *r % pipelines == route % pipelines)
            {
                Some((_, _, members)) => members.push(index),
                None => groups.push((node, route, vec![index])),
            }
        }
        Ok(groups)
    }

    /// A key's wire form and server, the generation read first when it is due.
    async fn prepare(
        &self,
        key: &str,
        operation: &'static str,
        deadline: Deadline,
    ) -> Result<(WireKey, usize)> {
        let generation = self.generation(operation, deadline).await?;
        let wire = self.commands.keys.wire(generation, key);
        let node = self.locate(&self.ring(), &wire, operation)?;
        Ok((wire, node))
    }

    async fn prepare_many<'k>(
        &self,
        keys: impl Iterator<Item = &'k str>,
        operation: &'static str,
        deadline: Deadline,
    ) -> Result<Vec<WireKey>> {
        let generation = self.generation(operation, deadline).await?;
        Ok(keys
            .map(|key| self.commands.keys.wire(generation, key))
            .collect())
    }

    // ---- operations ---------------------------------------------------------------------

    pub(crate) async fn ping(&self) -> Result<()> {
        let commands = &self.commands;
        let nodes: Vec<&Node<T>> = self.nodes.iter().collect();
        let ping = move || Ok(commands.ping());
        let results = T::run_each("ping", self.deadline(), each(&nodes, ping)).await;
        results.into_iter().collect::<Result<Vec<()>>>().map(drop)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let deadline = self.deadline();
        self.commands.keys.check(key)?;
        let (wire, node) = self.prepare(key, "get", deadline).await?;
        let commands = &self.commands;
        self.run_on(node, key, "get", deadline, || Ok(commands.get(&wire)))
            .await
    }

    pub(crate) async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let deadline = self.deadline();
        let hashed = self.commands.keys.check(key)?;
        let exptime = exptime(ttl, self.commands.default_ttl)?;
        check_size(key, hashed, &value, self.commands.max_value_size())?;
        let (wire, node) = self.prepare(key, "set", deadline).await?;
        let commands = &self.commands;
        self.run_on(node, key, "set", deadline, || {
            Ok(commands.set(key, &wire, &value, exptime))
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool> {
        let deadline = self.deadline();
        self.commands.keys.check(key)?;
        let (wire, node) = self.prepare(key, "delete", deadline).await?;
        let commands = &self.commands;
        self.run_on(node, key, "delete", deadline, || Ok(commands.delete(&wire)))
            .await
    }

    /// A compare-and-swap delete on the key's server (see [`crate::commands::DeleteIfEquals`]).
    pub(crate) async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        let deadline = self.deadline();
        self.commands.keys.check(key)?;
        let (wire, node) = self.prepare(key, "delete_if_equals", deadline).await?;
        let commands = &self.commands;
        self.run_on(node, key, "delete_if_equals", deadline, || {
            Ok(commands.delete_if_equals(&wire, expected))
        })
        .await
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        let deadline = self.deadline();
        self.commands.keys.check(key)?;
        let (wire, node) = self.prepare(key, "exists", deadline).await?;
        let commands = &self.commands;
        self.run_on(node, key, "exists", deadline, || Ok(commands.exists(&wire)))
            .await
    }

    /// `mg <key> t`: how long the entry has left, in memcached's whole seconds.
    pub(crate) async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        let deadline = self.deadline();
        self.commands.keys.check(key)?;
        let (wire, node) = self.prepare(key, "remaining_ttl", deadline).await?;
        let commands = &self.commands;
        self.run_on(node, key, "remaining_ttl", deadline, || {
            Ok(commands.remaining_ttl(&wire))
        })
        .await
    }

    /// `mg <key> v f t`: the value and its remaining TTL in one command.
    pub(crate) async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        let deadline = self.deadline();
        self.commands.keys.check(key)?;
        let (wire, node) = self.prepare(key, "get_with_ttl", deadline).await?;
        let commands = &self.commands;
        self.run_on(node, key, "get_with_ttl", deadline, || {
            Ok(commands.get_with_ttl(&wire))
        })
        .await
    }

    /// A namespace moves to a new generation on every server (O(1)); without one, every
    /// server is flushed.
    pub(crate) async fn clear(&self) -> Result<()> {
        let deadline = self.deadline();
        let nodes = self.live();
        if nodes.is_empty() {
            return Err(self.all_out("clear"));
        }
        if let Some(generation) = &self.generation {
            return self
                .move_generation(generation, &nodes, "clear", deadline)
                .await;
        }
        let commands = &self.commands;
        let flush = move || Ok(commands.flush_all());
        let results = T::run_each("clear", deadline, each(&nodes, flush)).await;
        let mut outcome = Ok(());
        for (node, result) in nodes.iter().zip(results) {
            self.account(node, &result);
            if let (Err(e), Ok(())) = (result, &outcome) {
                outcome = Err(e);
            }
        }
        outcome
    }

    pub(crate) async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        self.read_many(keys, "get_many", Commands::get_many).await
    }

    pub(crate) async fn get_many_with_ttl(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        self.read_many(keys, "get_many_with_ttl", Commands::get_many_with_ttl)
            .await
    }

    /// A bulk read: every key checked, then each server asked for its keys at once (`read`
    /// builds a server's exchange), one slot per key in order.
    async fn read_many<V: Send>(
        &self,
        keys: &[&str],
        operation: &'static str,
        read: ReadMany<V>,
    ) -> Result<Vec<Option<V>>> {
        let deadline = self.deadline();
        self.commands.keys.check_all(keys.iter().copied())?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let wires = self
            .prepare_many(keys.iter().copied(), operation, deadline)
            .await?;
        let refs: Vec<&WireKey> = wires.iter().collect();
        let groups = self.group(keys, &refs, operation)?;
        let commands = &self.commands;
        if let [(node, route, _)] = groups.as_slice() {
            let node = &self.nodes[*node];
            let make = routed(*route, || Ok(read(commands, &refs)));
            let result = T::run(&node.client, operation, deadline, make).await;
            self.account(node, &result);
            return result;
        }
        let subsets: Vec<Vec<&WireKey>> = groups
            .iter()
            .map(|(_, _, members)| members.iter().map(|i| refs[*i]).collect())
            .collect();
        let mut jobs = Vec::with_capacity(groups.len());
        for ((node, route, _), subset) in groups.iter().zip(&subsets) {
            jobs.push((
                &self.nodes[*node].client,
                routed(*route, move || Ok(read(commands, subset))),
            ));
        }
        let results = T::run_each(operation, deadline, jobs).await;
        let mut values: Vec<Option<V>> = (0..keys.len()).map(|_| None).collect();
        let mut first_error = None;
        for ((node, _, members), result) in groups.iter().zip(results) {
            self.account(&self.nodes[*node], &result);
            match result {
                Ok(found) => {
                    for (index, value) in members.iter().zip(found) {
                        values[*index] = value;
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(values), Err)
    }

    pub(crate) async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let deadline = self.deadline();
        let exptime = exptime(ttl, self.commands.default_ttl)?;
        let limit = self.commands.max_value_size();
        for (key, value) in entries {
            let hashed = self.commands.keys.check(key)?;
            check_size(key, hashed, value, limit)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        let wires = self
            .prepare_many(entries.iter().map(|(k, _)| *k), "set_many", deadline)
            .await?;
        let refs: Vec<&WireKey> = wires.iter().collect();
        let keys: Vec<&str> = entries.iter().map(|(key, _)| *key).collect();
        let groups = self.group(&keys, &refs, "set_many")?;
        let many = entries.len() > 1;
        let items: Vec<Vec<(&str, WireKey, &Bytes)>> = groups
            .iter()
            .map(|(_, _, members)| {
                members
                    .iter()
                    .map(|i| (entries[*i].0, wires[*i].clone(), &entries[*i].1))
                    .collect()
            })
            .collect();
        let commands = &self.commands;
        let mut jobs = Vec::with_capacity(groups.len());
        for ((node, route, _), items) in groups.iter().zip(&items) {
            jobs.push((
                &self.nodes[*node].client,
                routed(*route, move || Ok(commands.set_many(items, exptime, many))),
            ));
        }
        let results = T::run_each("set_many", deadline, jobs).await;
        let mut outcome = Ok(());
        for ((node, _, _), result) in groups.iter().zip(results) {
            self.account(&self.nodes[*node], &result);
            if let (Err(e), Ok(())) = (result, &outcome) {
                outcome = Err(e);
            }
        }
        outcome
    }

    pub(crate) async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let deadline = self.deadline();
        self.commands.keys.check_all(keys.iter().copied())?;
        if keys.is_empty() {
            return Ok(0);
        }
        let wires = self
            .prepare_many(keys.iter().copied(), "delete_many", deadline)
            .await?;
        let refs: Vec<&WireKey> = wires.iter().collect();
        let groups = self.group(keys, &refs, "delete_many")?;
        let subsets: Vec<Vec<&WireKey>> = groups
            .iter()
            .map(|(_, _, members)| members.iter().map(|i| refs[*i]).collect())
            .collect();
        let commands = &self.commands;
        let mut jobs = Vec::with_capacity(groups.len());
        for ((node, route, _), subset) in groups.iter().zip(&subsets) {
            jobs.push((
                &self.nodes[*node].client,
                routed(*route, move || Ok(commands.delete_many(subset))),
            ));
        }
        let results = T::run_each("delete_many", deadline, jobs).await;
        let mut removed = 0;
        let mut first_error = None;
        for ((node, _, _), result) in groups.iter().zip(results) {
            self.account(&self.nodes[*node], &result);
            match result {
                Ok(n) => removed += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }

    pub(crate) async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let deadline = self.deadline();
        let hashed = self.commands.keys.check(key)?;
        let exptime = exptime(ttl, self.commands.default_ttl)?;
        check_size(key, hashed, &value, self.commands.max_value_size())?;
        let (wire, node) = self.prepare(key, "add", deadline).await?;
        let commands = &self.commands;
        match exptime {
            Some(exptime) => {
                self.run_on(node, key, "add", deadline, || {
                    Ok(commands.add(key, &wire, &value, exptime))
                })
                .await
            }
            // Nothing would be kept: report whether the key was free, store nothing.
            None => self
                .run_on(node, key, "add", deadline, || Ok(commands.exists(&wire)))
                .await
                .map(|found| !found),
        }
    }

    pub(crate) async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let deadline = self.deadline();
        let hashed = self.commands.keys.check(key)?;
        let default_exptime = exptime(Ttl::Default, self.commands.default_ttl)?.unwrap_or(0);
        // The longest counter ("-9223372036854775808") must fit.
        check_size(key, hashed, &[b'0'; 20], self.commands.max_value_size())?;
        let (wire, node) = self.prepare(key, "increment", deadline).await?;
        let commands = &self.commands;
        self.run_on(node, key, "increment", deadline, || {
            Ok(commands.increment(key, &wire, delta, default_exptime))
        })
        .await
    }

    pub(crate) async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let deadline = self.deadline();
        self.commands.keys.check(key)?;
        let exptime = exptime(ttl, self.commands.default_ttl)?;
        let (wire, node) = self.prepare(key, "touch", deadline).await?;
        let commands = &self.commands;
        match exptime {
            Some(exptime) => {
                self.run_on(node, key, "touch", deadline, || {
                    Ok(commands.touch(&wire, exptime))
                })
                .await
            }
            None => {
                self.run_on(node, key, "touch", deadline, || Ok(commands.delete(&wire)))
                    .await
            }
        }
    }
}
