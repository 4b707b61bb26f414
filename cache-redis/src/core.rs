//! The engine's operations, written once for both faces (generic over the [`Transport`]): key
//! checks and exchanges from [`Commands`], run where the topology says.

use cache_core::{Bytes, Capabilities, Result, Ttl};
use cache_remote::{Deadline, Make, Output, RemoteOptions, ReplyOf, Transport};

use crate::backend::{BACKEND, Redis};
use crate::ops::{Commands, MAX_TTL, TTL_RESOLUTION};

/// Where the engine's keys live.
pub(crate) enum Topology<T: Transport> {
    /// One server.
    Single(T::Client<Redis>),
}

/// The engine's state, shared by its clones.
pub(crate) struct Core<T: Transport> {
    pub(crate) topology: Topology<T>,
    pub(crate) commands: Commands,
    pub(crate) options: RemoteOptions,
    /// The URL with the password hidden.
    pub(crate) shown_url: String,
}

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
        caps
    }

    pub(crate) fn namespace(&self) -> Option<&str> {
        self.commands.keys.namespace()
    }

    /// Every client of the engine.
    pub(crate) fn clients(&self) -> Vec<&T::Client<Redis>> {
        match &self.topology {
            Topology::Single(client) => vec![client],
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.clients().into_iter().all(|c| T::is_closed(c))
    }

    pub(crate) fn close(&self) -> Result<()> {
        for client in self.clients() {
            T::close(client);
        }
        Ok(())
    }

    /// Runs an operation on the server of `key`.
    async fn keyed<M>(
        &self,
        operation: &'static str,
        _key: &str,
        deadline: Deadline,
        make: M,
    ) -> Result<Output<Redis, M>>
    where
        M: Make<ReplyOf<Redis>>,
    {
        match &self.topology {
            Topology::Single(client) => T::run(client, operation, deadline, make).await,
        }
    }

    /// Runs an operation that involves every server.
    async fn whole<M>(
        &self,
        operation: &'static str,
        deadline: Deadline,
        make: M,
    ) -> Result<Output<Redis, M>>
    where
        M: Make<ReplyOf<Redis>>,
    {
        match &self.topology {
            Topology::Single(client) => T::run(client, operation, deadline, make).await,
        }
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let commands = &self.commands;
        let deadline = self.deadline();
        self.whole("ping", deadline, || Ok(commands.ping())).await
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let commands = &self.commands;
        self.keyed("get", key, self.deadline(), || commands.get(key))
            .await
    }

    pub(crate) async fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let commands = &self.commands;
        self.keyed("set", key, self.deadline(), || {
            commands.set(key, &value, ttl)
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool> {
        let commands = &self.commands;
        self.keyed("delete", key, self.deadline(), || commands.delete(key))
            .await
    }

    pub(crate) async fn exists(&self, key: &str) -> Result<bool> {
        let commands = &self.commands;
        self.keyed("exists", key, self.deadline(), || commands.exists(key))
            .await
    }

    pub(crate) async fn clear(&self) -> Result<()> {
        let commands = &self.commands;
        self.whole("clear", self.deadline(), || Ok(commands.clear()))
            .await
    }

    pub(crate) async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let commands = &self.commands;
        self.whole("get_many", self.deadline(), || commands.get_many(keys))
            .await
    }

    pub(crate) async fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let commands = &self.commands;
        self.whole("set_many", self.deadline(), || {
            commands.set_many(entries, ttl)
        })
        .await
    }

    pub(crate) async fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let commands = &self.commands;
        self.whole("delete_many", self.deadline(), || {
            commands.delete_many(keys)
        })
        .await
    }

    pub(crate) async fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let commands = &self.commands;
        self.keyed("add", key, self.deadline(), || {
            commands.add(key, &value, ttl)
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
}
