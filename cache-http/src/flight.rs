//! Single-flight: one request per key at a time reaches the inner service on a miss; the
//! others wait for its outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use http::HeaderName;

use crate::entry::StoredResponse;

/// A response a leader stored, handed to its waiters.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) response: StoredResponse,
    /// When it was stored, for the waiters' `Age`.
    pub(crate) stored_at: Instant,
    /// The variant it is: the names it varies on, their generation and the leader's variant
    /// key; a waiter uses it only if its own request gives the same key.
    pub(crate) variant: Option<(u64, Vec<HeaderName>, String)>,
}

/// How a load ended, for its waiters.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The response was storable: waiters whose request matches its variant use it.
    Stored(Arc<Shared>),
    /// The response may not be shared: each waiter asks the inner service itself.
    NotStored,
    /// The leader went away (its future was dropped, the inner service failed): waiters join
    /// again, and one of them leads.
    Abandoned,
}

#[derive(Debug, Default)]
pub(crate) struct Flight {
    outcome: Mutex<Option<Outcome>>,
    notify: tokio::sync::Notify,
}

impl Flight {
    /// Waits until the load ends. Dropping the future stops waiting and changes nothing else.
    pub(crate) async fn wait(&self) -> Outcome {
        loop {
            let notified = self.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so a release between the look and the wait is seen.
            notified.as_mut().enable();
            if let Some(outcome) = lock(&self.outcome).as_ref() {
                return outcome.clone();
            }
            notified.await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is consistent between statements, so a poisoned lock is safe to use.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Default)]
pub(crate) struct Flights {
    in_flight: Mutex<HashMap<String, Arc<Flight>>>,
}

pub(crate) enum Role {
    Leader(LeaderGuard),
    Waiter(Arc<Flight>),
}

impl Flights {
    /// Joins the load of `key`, or starts one.
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Role {
        let mut map = lock(&self.in_flight);
        if let Some(flight) = map.get(key) {
            return Role::Waiter(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::default());
        map.insert(key.to_owned(), Arc::clone(&flight));
        Role::Leader(LeaderGuard {
            flights: Arc::clone(self),
            key: key.to_owned(),
            flight,
            finished: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.in_flight).len()
    }
}

/// Held by the request that reaches the inner service. Dropped without
/// [`finish`](Self::finish) (a dropped future, an error of the inner service), it releases the
/// waiters with [`Outcome::Abandoned`].
pub(crate) struct LeaderGuard {
    flights: Arc<Flights>,
    key: String,
    flight: Arc<Flight>,
    finished: bool,
}

impl LeaderGuard {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.release(outcome);
        self.finished = true;
    }

    fn release(&self, outcome: Outcome) {
        // Leave the map first: requests that come after this find the cache, not the flight.
        lock(&self.flights.in_flight).remove(&self.key);
        *lock(&self.flight.outcome) = Some(outcome);
        self.flight.notify.notify_waiters();
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.release(Outcome::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_leader_releases_its_waiters() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join("k") else {
            panic!("the first caller leads");
        };
        let Role::Waiter(flight) = flights.join("k") else {
            panic!("the second caller waits");
        };
        drop(leader);
        assert_eq!(flights.len(), 0);
        let outcome = futures_lite_block_on(flight.wait());
        assert!(matches!(outcome, Outcome::Abandoned));
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    /// Polls a future that is ready at once.
    fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("the outcome was already known"),
        }
    }
}
