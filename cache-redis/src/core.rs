//! The engine's operations, written once for both faces (generic over the [`Transport`]): key
//! checks and exchanges from [`Commands`], run where the topology says: one server, the node of
//! a cluster serving the key's slot, or the master the sentinels name.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cache_core::{Bytes, CacheError, Capabilities, Remaining, Result, Ttl};
use cache_remote::{
    BoxExchange, Deadline, Exchange, Make, Output, RemoteOptions, ReplyOf, Transport, by_pipeline,
    route_of, routed,
};

use crate::backend::{BACKEND, Redirect, Redis};
use crate::cluster::{
    Answer, Asking, Cluster, MAX_REDIRECTS, PerKey, bulk, key_slot, too_many_redirects,
};
use crate::commands::{Commands, MAX_TTL, TTL_RESOLUTION};
use crate::resp::{self, Value};
use crate::sentinel::Sentinel;

/// Where the engine's keys live.
pub(crate) enum Topology<T: Transport> {
    /// One server.
    Single(Arc<T::Client<Redis>>),
    /// A Redis Cluster.
    Cluster(Box<Cluster<T>>),
    /// The master some sentinels name.
    Sentinel(Arc<Sentinel<T>>),
    /// A connection of the `redis` crate the user holds (async face only).
    #[cfg(feature = "redis-crate")]
    External(Arc<dyn crate::external::External>),
}

/// The engine's state, shared by its clones.
pub(crate) struct Core<T: Transport> {
    pub(crate) topology: Topology<T>,
    /// Where invalidation feeds find the masters to track, with blocking clients of their own.
    pub(crate) feed: Arc<crate::invalidation::FeedTarget>,
    pub(crate) commands: Commands,
    /// Where reads go.
    pub(crate) read_from: crate::ReadFrom,
    pub(crate) options: RemoteOptions,
    /// The URL with the password hidden.
    pub(crate) shown_url: String,
    pub(crate) closed: AtomicBool,
}

type Keyed<'a, V> = BoxExchange<'a, Value, Vec<Answer<V>>>;

impl<T: Transport> Core<T> {
    fn deadline(&self) -> Deadline {
        Deadline::after(self.options.client.timeout)
    }

    pub(crate) fn capabilities(&self) -> Capabilities {
        let mut caps = self.options.capabilities(BACKEND);
        caps.ttl_resolution = TTL_RESOLUTION;
        caps.max_ttl = MAX_TTL;
        caps.max_value_size = Some(self.commands.max_value_size);
        caps.max_key_len = self.commands.keys.max_key_len();
        caps.read_your_writes = self.read_from == crate::ReadFrom::Master;
        caps
    }

    /// The feed of this engine's invalidations (see [`RedisInvalidations`]).
    pub(crate) fn invalidations(&self) -> crate::RedisInvalidations {
        crate::RedisInvalidations {
            target: Arc::clone(&self.feed),
            prefix: self.commands.keys.prefix().to_string(),
            timeout: self.options.client.timeout,
            heartbeat: crate::invalidation::DEFAULT_HEARTBEAT,
            shown_url: self.shown_url.clone(),
        }
    }

    pub(crate) fn namespace(&self) -> Option<&str> {
        self.options.namespace.as_deref()
    }

    /// Every client of the engine (for a cluster or sentinels: those opened so far).
    pub(crate) fn clients(&self) -> Vec<Arc<T::Client<Redis>>> {
        match &self.topology {
            #[cfg(feature = "redis-crate")]
            Topology::External(_) => Vec::new(),
            Topology::Single(client) => vec![Arc::clone(client)],
            Topology::Cluster(cluster) => cluster.clients(),
            Topology::Sentinel(sentinel) => sentinel.clients(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        if let Topology::Sentinel(sentinel) = &self.topology {
            sentinel.close();
        }
        for client in self.clients() {
            T::close(&client);
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(CacheError::Closed { backend: BACKEND });
        }
        Ok(())
    }

    /// Runs an operation on the `redis` crate's connection the engine was built on.
    #[cfg(feature = "redis-crate")]
    async fn on_external<M>(
        &self,
        external: &dyn crate::external::External,
        deadline: Deadline,
        make: M,
    ) -> Result<Output<Redis, M>>
    where
        M: Make<ReplyOf<Redis>>,
    {
        crate::external::drive(external, deadline, self.options.client.timeout, make).await
    }

    /// Runs an operation on the server of `key`: in a cluster, the master serving its slot,
    /// following MOVED and ASK.
    async fn keyed<M>(
        &self,
        operation: &'static str,
        key: &str,
        deadline: Deadline,
        make: M,
    ) -> Result<Output<Redis, M>>
    where
        M: Make<ReplyOf<Redis>> + Clone,
    {
        self.check_open()?;
        // Every operation on a key goes on the key's connection, so that they keep their order.
        let route = route_of(key.as_bytes());
        let make = routed(route, make);
        let cluster = match &self.topology {
            #[cfg(feature = "redis-crate")]
            Topology::External(external) => {
                return self.on_external(&**external, deadline, make).await;
            }
            Topology::Single(client) => return T::run(client, operation, deadline, make).await,
            Topology::Sentinel(sentinel) => return sentinel.run(operation, deadline, make).await,
            Topology::Cluster(cluster) => cluster,
        };
        // Bad keys are refused before anything is sent.
        let slot = key_slot(self.commands.key(key)?.as_bytes());
        let mut ask: Option<String> = None;
        for _ in 0..MAX_REDIRECTS {
            let result = match ask.take() {
                Some(address) => {
                    let client = cluster.client(&address)?;
                    let mut inner = make.clone();
                    let asking = move || inner.make().map(|inner| Asking { inner });
                    T::run(&client, operation, deadline, routed(route, asking)).await
                }
                None => {
                    let address = cluster.owner(slot, deadline).await?;
                    let client = cluster.client(&address)?;
                    T::run(&client, operation, deadline, make.clone()).await
                }
            };
            let error = match result {
                Ok(output) => return Ok(output),
                Err(error) => error,
            };
            match Redirect::of(&error) {
                Some(redirect) if redirect.ask => ask = Some(redirect.address.clone()),
                Some(redirect) => {
                    cluster.moved(redirect);
                    let _ = cluster.refresh(deadline, false).await;
                }
                None => {
                    if error.is_transient() {
                        // A node down or failed over: read the map again for the next call.
                        let _ = cluster.refresh(deadline, false).await;
                    }
                    return Err(error);
                }
            }
        }
        Err(too_many_redirects(key, operation))
    }

    /// Runs a read of `key`: on a replica when reads go there ([`ReadFrom::ReplicaPreferred`]
    /// and the key's master has one), else, or when the replica fails in a way that may pass
    /// or was redirected, as [`keyed`](Self::keyed) on the master.
    ///
    /// [`ReadFrom::ReplicaPreferred`]: crate::ReadFrom::ReplicaPreferred
    async fn keyed_read<M>(
        &self,
        operation: &'static str,
        key: &str,
        deadline: Deadline,
        make: M,
    ) -> Result<Output<Redis, M>>
    where
        M: Make<ReplyOf<Redis>> + Clone,
    {
        if self.read_from == crate::ReadFrom::Master {
            return self.keyed(operation, key, deadline, make).await;
        }
        self.check_open()?;
        let route = route_of(key.as_bytes());
        match &self.topology {
            Topology::Sentinel(sentinel) => {
                return sentinel
                    .run_read(operation, deadline, routed(route, make))
                    .await;
            }
            Topology::Cluster(cluster) => {
                let slot = key_slot(self.commands.key(key)?.as_bytes());
                cluster.refresh_replicas(deadline).await;
                if let Some(address) = cluster.reader(slot) {
                    let client = cluster.client(&address)?;
                    match T::run(&client, operation, deadline, routed(route, make.clone())).await {
                        Ok(output) => return Ok(output),
                        Err(error)
                            if (Redirect::of(&error).is_some() || error.is_transient())
                                && deadline.remaining().is_some() =>
                        {
                            // A replica that no longer serves the slot, or failed: the map is
                            // read again, and the master answers.
                            let _ = cluster.refresh(deadline, false).await;
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
            _ => {}
        }
        self.keyed(operation, key, deadline, make).await
    }

    /// Runs an operation on every master (one server, the cluster's masters, or the master the
    /// sentinels name); the first error, once every one answered.
    async fn on_every_master<M>(
        &self,
        operation: &'static str,
        deadline: Deadline,
        make: M,
    ) -> Result<Vec<Output<Redis, M>>>
    where
        M: Make<ReplyOf<Redis>> + Clone,
    {
        self.check_open()?;
        let cluster = match &self.topology {
            #[cfg(feature = "redis-crate")]
            Topology::External(external) => {
                return self
                    .on_external(&**external, deadline, make)
                    .await
                    .map(|o| vec![o]);
            }
            Topology::Single(client) => {
                return T::run(client, operation, deadline, make)
                    .await
                    .map(|o| vec![o]);
            }
            Topology::Sentinel(sentinel) => {
                return sentinel
                    .run(operation, deadline, make)
                    .await
                    .map(|o| vec![o]);
            }
            Topology::Cluster(cluster) => cluster,
        };
        let masters = cluster.all_masters(deadline).await?;
        let mut clients = Vec::with_capacity(masters.len());
        for master in &masters {
            clients.push(cluster.client(master)?);
        }
        let mut jobs = Vec::with_capacity(clients.len());
        for client in &clients {
            jobs.push((&**client, make.clone()));
        }
        let results = T::run_each(operation, deadline, jobs).await;
        let mut outputs = Vec::with_capacity(results.len());
        for result in results {
            match result {
                Ok(output) => outputs.push(output),
                Err(e) => {
                    if e.is_transient() {
                        let _ = cluster.refresh(deadline, false).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(outputs)
    }

    /// Whether `operation` is a read that goes to replicas.
    fn replica_read(&self, operation: &str) -> bool {
        self.read_from == crate::ReadFrom::ReplicaPreferred
            && matches!(
                operation,
                "get"
                    | "get_many"
                    | "exists"
                    | "remaining_ttl"
                    | "get_with_ttl"
                    | "get_many_with_ttl"
            )
    }

    /// The keys of a bulk operation grouped by the connection each one goes on (see
    /// [`by_pipeline`]), for [`on_master_in_parts`](Self::on_master_in_parts).
    fn parts<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Vec<(u64, Vec<usize>)> {
        by_pipeline(
            keys.into_iter().map(str::as_bytes),
            T::pipelines(&self.options.client),
        )
    }

    /// A bulk operation on one server or the sentinels' master, in `parts` (at least one): each
    /// part on its connection, all at once; `build` makes the exchange of the part of that
    /// index. The outputs, in the order of the parts; the first error once every part ended.
    async fn on_master_in_parts<E, F>(
        &self,
        operation: &'static str,
        deadline: Deadline,
        parts: &[(u64, Vec<usize>)],
        build: F,
    ) -> Result<Vec<E::Output>>
    where
        E: Exchange<Value>,
        F: Fn(usize) -> Result<E> + Sync,
    {
        self.check_open()?;
        let build = &build;
        if let [(route, _)] = parts {
            let make = routed(*route, move || build(0));
            let output = match &self.topology {
                #[cfg(feature = "redis-crate")]
                Topology::External(external) => self.on_external(&**external, deadline, make).await,
                Topology::Single(client) => T::run(client, operation, deadline, make).await,
                Topology::Sentinel(sentinel) if self.replica_read(operation) => {
                    sentinel.run_read(operation, deadline, make).await
                }
                Topology::Sentinel(sentinel) => sentinel.run(operation, deadline, make).await,
                Topology::Cluster(_) => Err(CacheError::invalid_config(
                    "a cluster's bulk operations go by slot",
                )),
            };
            return output.map(|output| vec![output]);
        }
        let client = match &self.topology {
            #[cfg(feature = "redis-crate")]
            Topology::External(external) => {
                // The crate pipelines on its one connection: the parts in turn.
                let mut outputs = Vec::with_capacity(parts.len());
                for index in 0..parts.len() {
                    outputs.push(
                        self.on_external(&**external, deadline, move || build(index))
                            .await?,
                    );
                }
                return Ok(outputs);
            }
            Topology::Single(client) => Arc::clone(client),
            Topology::Sentinel(sentinel) if self.replica_read(operation) => {
                sentinel.reader(deadline).await?
            }
            Topology::Sentinel(sentinel) => sentinel.master(deadline).await?,
            Topology::Cluster(_) => {
                return Err(CacheError::invalid_config(
                    "a cluster's bulk operations go by slot",
                ));
            }
        };
        let run = |client: Arc<T::Client<Redis>>| async move {
            let jobs = parts
                .iter()
                .enumerate()
                .map(|(index, (route, _))| (&*client, routed(*route, move || build(index))))
                .collect();
            T::run_each(operation, deadline, jobs)
                .await
                .into_iter()
                .collect::<Result<Vec<E::Output>>>()
        };
        let mut results = run(client).await;
        if let (Topology::Sentinel(sentinel), Err(error)) = (&self.topology, &results) {
            if self.replica_read(operation)
                && error.is_transient()
                && deadline.remaining().is_some()
            {
                // The replica failed: the master answers.
                results = run(sentinel.master(deadline).await?).await;
            }
        }
        if let Topology::Sentinel(sentinel) = &self.topology {
            sentinel.after(&results, deadline).await;
        }
        results
    }

    /// A bulk operation on a cluster: `full` keys grouped by the node serving their slot, one
    /// command per key (`build` makes a node's exchange for some of them), every node at once;
    /// keys redirected are sent again where they were sent to. With `replicas`, keys go to a
    /// replica of their master where it has one.
    #[allow(clippy::too_many_arguments)]
    async fn per_key<'a, V, F>(
        &self,
        cluster: &Cluster<T>,
        operation: &'static str,
        deadline: Deadline,
        keys: &[&str],
        full: &[String],
        replicas: bool,
        build: F,
    ) -> Result<Vec<V>>
    where
        V: Send,
        F: Fn(Vec<usize>, bool) -> Keyed<'a, V> + Sync,
    {
        let mut results: Vec<Option<V>> = (0..full.len()).map(|_| None).collect();
        let mut pending: Vec<(usize, Option<String>)> =
            (0..full.len()).map(|i| (i, None)).collect();
        let pipelines = T::pipelines(&self.options.client) as u64;
        for _ in 0..MAX_REDIRECTS {
            // Group by (node, asking, connection), in first-seen order: each key goes on its
            // own connection to its node, as single-key operations do.
            let mut groups: Vec<(String, bool, u64, Vec<usize>)> = Vec::new();
            for (index, ask) in std::mem::take(&mut pending) {
                let (address, asking) = match ask {
                    Some(address) => (address, true),
                    None => {
                        let slot = key_slot(full[index].as_bytes());
                        match cluster.reader(slot).filter(|_| replicas) {
                            Some(replica) => (replica, false),
                            None => (cluster.owner(slot, deadline).await?, false),
                        }
                    }
                };
                let route = if pipelines > 1 {
                    route_of(keys.get(index).copied().unwrap_or_default().as_bytes())
                } else {
                    0
                };
                match groups.iter_mut().find(|(a, k, r, _)| {
                    *a == address && *k == asking && *r % pipelines == route % pipelines
                }) {
                    Some((_, _, _, members)) => members.push(index),
                    None => groups.push((address, asking, route, vec![index])),
                }
            }
            let mut clients = Vec::with_capacity(groups.len());
            for (address, _, _, _) in &groups {
                clients.push(cluster.client(address)?);
            }
            let mut jobs = Vec::with_capacity(groups.len());
            for ((_, asking, route, members), client) in groups.iter().zip(&clients) {
                let (build, asking) = (&build, *asking);
                let make = move || Ok(build(members.clone(), asking));
                jobs.push((&**client, routed(*route, make)));
            }
            let answers = T::run_each(operation, deadline, jobs).await;
            let mut first_error = None;
            for ((_, _, _, members), answer) in groups.iter().zip(answers) {
                match answer {
                    Ok(list) => {
                        for (index, answer) in members.iter().zip(list) {
                            match answer {
                                Answer::Done(value) => results[*index] = Some(value),
                                Answer::Redirect(redirect) if redirect.ask => {
                                    pending.push((*index, Some(redirect.address)));
                                }
                                Answer::Redirect(redirect) => {
                                    cluster.moved(&redirect);
                                    pending.push((*index, None));
                                }
                            }
                        }
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(error) = first_error {
                if error.is_transient() {
                    let _ = cluster.refresh(deadline, false).await;
                }
                return Err(error);
            }
            if pending.is_empty() {
                return Ok(results.into_iter().flatten().collect());
            }
            let _ = cluster.refresh(deadline, false).await;
        }
        let key = pending
            .first()
            .and_then(|(i, _)| keys.get(*i))
            .copied()
            .unwrap_or_default();
        Err(too_many_redirects(key, operation))
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let commands = &self.commands;
        self.on_every_master("ping", self.deadline(), || Ok(commands.ping()))
            .await
            .map(drop)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let commands = &self.commands;
        self.keyed_read("get", key, self.deadline(), || commands.get(key))
            .await
    }

    pub(crate) async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let commands = &self.commands;
        let value = &value;
        self.keyed("set", key, self.deadline(), || {
            commands.set(key, value, ttl)
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool> {
        let commands = &self.commands;
        self.keyed("delete", key, self.deadline(), || commands.delete(key))
            .await
    }

    pub(crate) async fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        let commands = &self.commands;
        self.keyed("delete_if_equals", key, self.deadline(), || {
            commands.delete_if_equals(key, expected)
        })
        .await
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        let commands = &self.commands;
        self.keyed_read("exists", key, self.deadline(), || commands.exists(key))
            .await
    }

    /// A namespace's keys on every master (`SCAN` + `UNLINK`); without a namespace, every
    /// master's database (`FLUSHDB`).
    pub(crate) async fn clear(&self) -> Result<()> {
        let commands = &self.commands;
        self.on_every_master("clear", self.deadline(), || Ok(commands.clear()))
            .await
            .map(drop)
    }

    pub(crate) async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let commands = &self.commands;
        let Topology::Cluster(cluster) = &self.topology else {
            if keys.is_empty() {
                return self
                    .on_every_master("get_many", self.deadline(), || commands.get_many(keys))
                    .await
                    .map(|mut all| all.pop().unwrap_or_default());
            }
            let parts = self.parts(keys.iter().copied());
            let keys_of = part_keys(keys, &parts);
            let found = self
                .on_master_in_parts("get_many", self.deadline(), &parts, |index| {
                    commands.get_many(&keys_of[index])
                })
                .await?;
            return Ok(scatter(keys.len(), &parts, found));
        };
        self.check_open()?;
        let full = keys
            .iter()
            .map(|k| commands.key(k))
            .collect::<Result<Vec<_>>>()?;
        let full = &full;
        let deadline = self.deadline();
        let read = |replicas: bool| {
            self.per_key(
                cluster,
                "get_many",
                deadline,
                keys,
                full,
                replicas,
                move |members, asking| {
                    Box::new(PerKey::new(
                        commands,
                        "get_many",
                        members.len(),
                        asking,
                        |j, out| resp::command(out, &[b"GET", full[members[j]].as_bytes()]),
                        move |_, reply| {
                            bulk(reply).map_err(|other| commands.failure(other, "get_many", None))
                        },
                    )) as Keyed<'_, _>
                },
            )
        };
        if !self.replica_read("get_many") {
            return read(false).await;
        }
        cluster.refresh_replicas(deadline).await;
        match read(true).await {
            // A replica failed: the masters answer.
            Err(error) if error.is_transient() && deadline.remaining().is_some() => {
                read(false).await
            }
            result => result,
        }
    }

    pub(crate) async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let commands = &self.commands;
        let Topology::Cluster(cluster) = &self.topology else {
            let parts = self.parts(entries.iter().map(|(key, _)| *key));
            if parts.len() <= 1 {
                return self
                    .on_every_master("set_many", self.deadline(), || {
                        commands.set_many(entries, ttl)
                    })
                    .await
                    .map(drop);
            }
            // Every entry is checked before any part is sent: a bad one changes nothing.
            for (key, value) in entries {
                commands.key(key)?;
                commands.check_value(key, value)?;
            }
            commands.expiry_ms(ttl)?;
            let entries_of: Vec<Vec<(&str, Bytes)>> = parts
                .iter()
                .map(|(_, members)| members.iter().map(|i| entries[*i].clone()).collect())
                .collect();
            return self
                .on_master_in_parts("set_many", self.deadline(), &parts, |index| {
                    commands.set_many(&entries_of[index], ttl)
                })
                .await
                .map(drop);
        };
        self.check_open()?;
        let mut full = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            full.push(commands.key(key)?);
            commands.check_value(key, value)?;
        }
        let ms = commands.expiry_ms(ttl)?.map(|ms| resp::decimal(ms as i64));
        let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        let (full, ms, many) = (&full, &ms, entries.len() > 1);
        self.per_key(
            cluster,
            "set_many",
            self.deadline(),
            &keys,
            full,
            false,
            move |members, asking| {
                let for_parse = members.clone();
                Box::new(PerKey::new(
                    commands,
                    "set_many",
                    members.len(),
                    asking,
                    move |j, out| {
                        let (index, key) = (members[j], full[members[j]].as_bytes());
                        match ms.as_deref() {
                            Some(b"0") => resp::command(out, &[b"DEL", key]),
                            _ => {
                                resp::command(out, &Commands::set_args(key, &entries[index].1, ms))
                            }
                        }
                    },
                    move |j, reply| match reply {
                        Value::Simple(_) | Value::Integer(_) => Ok(()),
                        other => {
                            let key = entries[for_parse[j]].0;
                            Err(commands.failure(other, "set_many", Some((key, many))))
                        }
                    },
                ))
            },
        )
        .await
        .map(drop)
    }

    pub(crate) async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let commands = &self.commands;
        let Topology::Cluster(cluster) = &self.topology else {
            let parts = self.parts(keys.iter().copied());
            if parts.len() <= 1 {
                return self
                    .on_every_master("delete_many", self.deadline(), || {
                        commands.delete_many(keys)
                    })
                    .await
                    .map(|all| all.into_iter().sum());
            }
            // Every key is checked before any part is sent: a bad one changes nothing.
            for key in keys {
                commands.key(key)?;
            }
            let keys_of = part_keys(keys, &parts);
            return self
                .on_master_in_parts("delete_many", self.deadline(), &parts, |index| {
                    commands.delete_many(&keys_of[index])
                })
                .await
                .map(|all| all.into_iter().sum());
        };
        self.check_open()?;
        let full = keys
            .iter()
            .map(|k| commands.key(k))
            .collect::<Result<Vec<_>>>()?;
        let full = &full;
        let removed = self
            .per_key(
                cluster,
                "delete_many",
                self.deadline(),
                keys,
                full,
                false,
                move |members, asking| {
                    Box::new(PerKey::new(
                        commands,
                        "delete_many",
                        members.len(),
                        asking,
                        |j, out| resp::command(out, &[b"DEL", full[members[j]].as_bytes()]),
                        move |_, reply| match reply {
                            Value::Integer(n) => Ok(u64::try_from(n).unwrap_or(0)),
                            other => Err(commands.failure(other, "delete_many", None)),
                        },
                    ))
                },
            )
            .await?;
        Ok(removed.into_iter().sum())
    }

    pub(crate) async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let commands = &self.commands;
        let value = &value;
        self.keyed("add", key, self.deadline(), || {
            commands.add(key, value, ttl)
        })
        .await
    }

    pub(crate) async fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let commands = &self.commands;
        self.keyed("increment", key, self.deadline(), || {
            commands.increment(key, delta)
        })
        .await
    }

    pub(crate) async fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let commands = &self.commands;
        self.keyed("touch", key, self.deadline(), || commands.touch(key, ttl))
            .await
    }

    pub(crate) async fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        let commands = &self.commands;
        self.keyed_read("remaining_ttl", key, self.deadline(), || {
            commands.remaining_ttl(key)
        })
        .await
    }

    pub(crate) async fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        let commands = &self.commands;
        self.keyed_read("get_with_ttl", key, self.deadline(), || {
            commands.get_with_ttl(key)
        })
        .await
    }

    /// One transaction per batch on one server or the sentinels' master; key by key (each its
    /// own transaction, on the node serving it) in a cluster, under one deadline.
    pub(crate) async fn get_many_with_ttl(
        &self,
        keys: &[&str],
    ) -> Result<Vec<Option<(Bytes, Remaining)>>> {
        let commands = &self.commands;
        let deadline = self.deadline();
        if !matches!(self.topology, Topology::Cluster(_)) {
            if keys.is_empty() {
                return self
                    .on_every_master("get_many_with_ttl", deadline, || {
                        commands.get_many_with_ttl(keys)
                    })
                    .await
                    .map(|mut all| all.pop().unwrap_or_default());
            }
            let parts = self.parts(keys.iter().copied());
            let keys_of = part_keys(keys, &parts);
            let found = self
                .on_master_in_parts("get_many_with_ttl", deadline, &parts, |index| {
                    commands.get_many_with_ttl(&keys_of[index])
                })
                .await?;
            return Ok(scatter(keys.len(), &parts, found));
        }
        self.check_open()?;
        for key in keys {
            commands.key(key)?;
        }
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.push(
                self.keyed_read("get_many_with_ttl", key, deadline, || {
                    commands.get_with_ttl(key)
                })
                .await?,
            );
        }
        Ok(found)
    }
}

/// The keys of each part (see [`Core::parts`]).
fn part_keys<'k>(keys: &[&'k str], parts: &[(u64, Vec<usize>)]) -> Vec<Vec<&'k str>> {
    parts
        .iter()
        .map(|(_, members)| members.iter().map(|i| keys[*i]).collect())
        .collect()
}

/// The answers of each part put back in the order of the keys.
fn scatter<V: Default>(len: usize, parts: &[(u64, Vec<usize>)], found: Vec<Vec<V>>) -> Vec<V> {
    let mut all: Vec<V> = (0..len).map(|_| V::default()).collect();
    for ((_, members), values) in parts.iter().zip(found) {
        for (index, value) in members.iter().zip(values) {
            if let Some(slot) = all.get_mut(*index) {
                *slot = value;
            }
        }
    }
    all
}
