//! Ring membership: where a key goes among the servers in the ring, taking a server that keeps
//! failing out of it, and trying it again in the background until it answers.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cache_core::{CacheError, Result};
use cache_remote::Transport;

use super::{Core, Node};
use crate::keys::{BACKEND, WireKey};
use crate::ring::{Ring, RingServer};

impl<T: Transport> Core<T> {
    pub(super) fn ring(&self) -> Arc<Ring> {
        // A writer never panics while holding the lock.
        Arc::clone(&self.ring.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub(super) fn rebuild_ring(&self) {
        let live: Vec<(usize, &RingServer)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.out_until().is_none())
            .map(|(i, n)| (i, &n.ring))
            .collect();
        let any_out = live.len() < self.nodes.len();
        let ring = Arc::new(Ring::new(&live));
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = ring;
        self.any_out.store(any_out, Ordering::Release);
    }

    /// The servers in the ring.
    pub(super) fn live(&self) -> Vec<&Node<T>> {
        self.nodes
            .iter()
            .filter(|n| n.out_until().is_none())
            .collect()
    }

    pub(super) fn all_out(&self, operation: &'static str) -> CacheError {
        CacheError::Connection {
            backend: BACKEND,
            operation,
            address: self
                .nodes
                .iter()
                .map(|n| n.address.as_str())
                .collect::<Vec<_>>()
                .join(","),
            source: Some(
                format!(
                    "every server is out of the ring after failing; each is tried again {:?} \
                     after it was taken out",
                    self.ejection.retry_after
                )
                .into(),
            ),
        }
    }

    /// The server of `wire`.
    pub(super) fn locate(
        &self,
        ring: &Ring,
        wire: &WireKey,
        operation: &'static str,
    ) -> Result<usize> {
        if self.nodes.len() == 1 {
            return Ok(0);
        }
        ring.locate(wire.key.as_bytes())
            .ok_or_else(|| self.all_out(operation))
    }

    /// Takes note of how an operation on `node` ended: a server that keeps failing is taken
    /// out of the ring (never the only one: its keys would have nowhere else to go).
    pub(super) fn account<O>(&self, node: &Node<T>, result: &Result<O>) {
        let Err(error) = result else { return };
        if !error.is_transient() || self.nodes.len() == 1 {
            return;
        }
        if T::consecutive_failures(&node.client) < self.ejection.failure_limit {
            return;
        }
        let mut out = node.out_until();
        if out.is_none() {
            *out = Some(Instant::now() + self.ejection.retry_after);
            drop(out);
            self.rebuild_ring();
            self.start_retrying();
        }
    }

    /// Starts the task that tries servers out of the ring again, unless it runs. Operations
    /// never wait for those tries.
    pub(super) fn start_retrying(&self) {
        if self
            .retrying
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            T::spawn(retry_loop(self.me.clone()));
        }
    }

    /// When the next server out of the ring is due to be tried, if any is out.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.nodes.iter().filter_map(|n| *n.out_until()).min()
    }

    /// Tries the servers whose time out is over: one that answers comes back into the ring,
    /// after the namespace moved to a new generation (see [`readmit`](Self::readmit)).
    pub(super) async fn retry_due(&self) {
        let now = Instant::now();
        for node in &self.nodes {
            if node.out_until().is_some_and(|at| at <= now) {
                self.readmit(node).await;
            }
        }
    }

    /// A server coming back may hold values that were overwritten or deleted elsewhere while it
    /// was out. Before it takes its keys back, a namespaced engine moves the namespace to a new
    /// generation on every server (a `clear()`): nothing the server held can be read again.
    pub(super) async fn readmit(&self, node: &Node<T>) {
        let commands = &self.commands;
        let answered = T::run(
            &node.client,
            "ping",
            self.deadline(),
            || Ok(commands.ping()),
        )
        .await;
        let ready = match (&answered, &self.generation) {
            (Err(_), _) => false,
            (Ok(()), None) => true,
            (Ok(()), Some(generation)) => {
                let mut nodes = self.live();
                nodes.push(node);
                self.move_generation(generation, &nodes, "clear", self.deadline())
                    .await
                    .is_ok()
            }
        };
        let mut out = node.out_until();
        if ready {
            *out = None;
            drop(out);
            self.rebuild_ring();
        } else {
            *out = Some(Instant::now() + self.ejection.retry_after);
        }
    }
}

/// Tries the servers out of the ring of the engine `me` when each is due, until none is out,
/// the engine is closed, or it is dropped. It never keeps the engine alive while it waits.
async fn retry_loop<T: Transport>(me: Weak<Core<T>>) {
    loop {
        let wait = {
            let Some(servers) = me.upgrade() else { return };
            match servers.next_due() {
                Some(due) if !servers.is_closed() => due.saturating_duration_since(Instant::now()),
                _ => {
                    servers.retrying.store(false, Ordering::Release);
                    // A server taken out just now, while this task was ending, would wait for
                    // a task that never comes: look once more.
                    if servers.next_due().is_none()
                        || servers.is_closed()
                        || servers
                            .retrying
                            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                            .is_err()
                    {
                        return;
                    }
                    Duration::ZERO
                }
            }
        };
        if !wait.is_zero() {
            T::sleep(wait).await;
        }
        let Some(servers) = me.upgrade() else { return };
        servers.retry_due().await;
    }
}
