//! The namespace's generation on every server: read when the cached one is stale, raised on
//! servers behind, moved past every known one by a clear.

use cache_core::Result;
use cache_remote::{Deadline, Transport};

use super::{Core, Node, each};
use crate::generation::{Generation, Held, Raise, Read, next_generation};

impl<T: Transport> Core<T> {
    /// The namespace's generation, from the cache or, when that is stale, from the servers.
    pub(super) async fn generation(
        &self,
        operation: &'static str,
        deadline: Deadline,
    ) -> Result<Option<u64>> {
        let Some(generation) = &self.generation else {
            return Ok(None);
        };
        if let Some(value) = generation.fresh() {
            return Ok(Some(value));
        }
        let nodes = self.live();
        if nodes.is_empty() {
            return Err(self.all_out(operation));
        }
        // What this engine knew before reading: a generation it learns while the reads are
        // out (another caller's lookup) is newer than what they return, not lost.
        let known = generation.known();
        let limits = self.commands.limits();
        let read = move || Ok(Read::new(generation, limits));
        let reads = T::run_each("get", deadline, each(&nodes, read)).await;
        let mut first_error = None;
        let mut held = Vec::with_capacity(nodes.len());
        let mut alive: Vec<&Node<T>> = Vec::with_capacity(nodes.len());
        for (node, read) in nodes.iter().zip(reads) {
            self.account(node, &read);
            match read {
                Ok(value) => {
                    held.push(value);
                    alive.push(node);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if held.is_empty() {
            return Err(first_error.unwrap_or_else(|| self.all_out(operation)));
        }
        let newest = held.iter().filter_map(|h| h.generation()).max();
        let agreed = newest.is_some_and(|n| {
            known.is_none_or(|k| n >= k) && held.iter().all(|h| *h == Held::Generation(n))
        });
        if agreed {
            return Ok(newest.map(|n| generation.store(n)));
        }
        let (floor, target) = match (newest, known) {
            // Servers behind the newest (out during a clear, restarted) are raised to it.
            (Some(n), None) => (n, n),
            (Some(n), Some(k)) if n >= k => (n, n),
            // Every server lost the generation this engine uses: never reuse it (its old
            // entries may survive), move on as a clear would.
            (n, Some(k)) => {
                let next = next_generation(Some(n.map_or(k, |n| n.max(k))));
                (next, next)
            }
            // A new namespace: the first seed to reach each server stays.
            (None, None) => (0, next_generation(None)),
        };
        self.raise(generation, &alive, floor, target, operation, deadline)
            .await
            .map(Some)
    }

    /// Raises every server of `nodes` to a generation of at least `floor` (writing `target`,
    /// see [`Raise`]); the generation is the largest any of them holds afterwards.
    pub(super) async fn raise(
        &self,
        generation: &Generation,
        nodes: &[&Node<T>],
        floor: u64,
        target: u64,
        operation: &'static str,
        deadline: Deadline,
    ) -> Result<u64> {
        let limits = self.commands.limits();
        let raise = move || Ok(Raise::new(generation, floor, target, limits));
        let raised = T::run_each("set", deadline, each(nodes, raise)).await;
        let mut first_error = None;
        let mut newest = None;
        for (node, result) in nodes.iter().zip(raised) {
            self.account(node, &result);
            match result {
                Ok(value) => newest = newest.max(Some(value)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match newest {
            Some(value) => Ok(generation.store(value)),
            None => Err(first_error.unwrap_or_else(|| self.all_out(operation))),
        }
    }

    /// Moves the namespace to a generation newer than every one the servers of `nodes` or this
    /// engine know. It takes effect for this engine at once, even when a server failed (then
    /// the error is returned: that server may still hold the old generation).
    pub(super) async fn move_generation(
        &self,
        generation: &Generation,
        nodes: &[&Node<T>],
        operation: &'static str,
        deadline: Deadline,
    ) -> Result<()> {
        let limits = self.commands.limits();
        let read = move || Ok(Read::new(generation, limits));
        let reads = T::run_each("get", deadline, each(nodes, read)).await;
        let mut newest = generation.known();
        let mut first_error = None;
        for (node, read) in nodes.iter().zip(reads) {
            self.account(node, &read);
            match read {
                Ok(held) => newest = newest.max(held.generation()),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if first_error.is_some() && newest.is_none() {
            // No server answered: nothing to move past, and nothing moved.
            return Err(first_error.unwrap_or_else(|| self.all_out(operation)));
        }
        let target = next_generation(newest);
        generation.store(target);
        let raised = self
            .raise(generation, nodes, target, target, operation, deadline)
            .await;
        match (first_error, raised) {
            (_, Err(e)) | (Some(e), Ok(_)) => Err(e),
            (None, Ok(_)) => Ok(()),
        }
    }
}
