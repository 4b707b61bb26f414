//! Single-flight: one load per key at a time, its outcome handed to every caller that asked for
//! the key meanwhile. The typed layer and the HTTP layer both use it.
//!
//! Runtime-free: a waiting task blocks no thread, and a waiting thread of a blocking face parks
//! in [`block_on`](crate::block_on). Cancellation-safe on both sides: a dropped waiter changes
//! nothing, and a leader dropped before it [`finish`](Leader::finish)ed (a panic, an early
//! return, a dropped future) releases its waiters with `None`, so that one of them leads next.
//!
//! ```
//! use cache_core::flight::{Flights, Role};
//!
//! let flights: Flights<u32> = Flights::default();
//! let Role::Leader(leader) = flights.join("k", || ()) else { unreachable!() };
//! let Role::Waiter(flight) = flights.join("k", || ()) else { unreachable!() };
//! leader.finish(7);
//! assert_eq!(cache_core::block_on(flight.wait()), Some(7));
//! assert!(matches!(flights.join("k", || ()), Role::Leader(_)), "the flight ended");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// One load in flight: its outcome once known, and the notification its waiters await.
pub struct Flight<O> {
    /// `None` while the load runs; `Some(None)` when its leader went away.
    outcome: Mutex<Option<Option<O>>>,
    notify: tokio::sync::Notify,
}

impl<O> Default for Flight<O> {
    fn default() -> Self {
        Self {
            outcome: Mutex::new(None),
            notify: tokio::sync::Notify::new(),
        }
    }
}

impl<O> fmt::Debug for Flight<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flight")
            .field("ended", &lock(&self.outcome).is_some())
            .finish()
    }
}

impl<O: Clone> Flight<O> {
    /// Waits until the load ends: `Some(outcome)` as its leader finished it, `None` when the
    /// leader went away without finishing (join again: one of the waiters leads). Dropping the
    /// future stops waiting and changes nothing else.
    pub async fn wait(&self) -> Option<O> {
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
    // The protected state is consistent between statements, so a poisoned lock is safe to use.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The loads in flight, by key. Cloning shares the table.
pub struct Flights<O> {
    in_flight: Arc<Mutex<HashMap<String, Arc<Flight<O>>>>>,
}

impl<O> Default for Flights<O> {
    fn default() -> Self {
        Self {
            in_flight: Arc::default(),
        }
    }
}

impl<O> Clone for Flights<O> {
    fn clone(&self) -> Self {
        Self {
            in_flight: Arc::clone(&self.in_flight),
        }
    }
}

impl<O> fmt::Debug for Flights<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("in_flight", &self.len())
            .finish()
    }
}

/// What [`Flights::join`] made of the caller.
#[derive(Debug)]
pub enum Role<O> {
    /// The caller loads, and hands the outcome to the waiters with [`Leader::finish`].
    Leader(Leader<O>),
    /// Another caller loads: [`Flight::wait`] for its outcome.
    Waiter(Arc<Flight<O>>),
}

impl<O> Flights<O> {
    /// Joins the load of `key`, or starts one. `on_wait` runs when joining as a waiter, under
    /// the table's lock, so that a count it keeps is exact whenever the leader looks at it.
    pub fn join(&self, key: &str, on_wait: impl FnOnce()) -> Role<O> {
        let mut map = lock(&self.in_flight);
        if let Some(flight) = map.get(key) {
            on_wait();
            return Role::Waiter(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::default());
        map.insert(key.to_owned(), Arc::clone(&flight));
        Role::Leader(Leader {
            flights: self.clone(),
            key: key.to_owned(),
            flight,
            finished: false,
        })
    }

    /// How many loads are in flight.
    pub fn len(&self) -> usize {
        lock(&self.in_flight).len()
    }

    /// Whether no load is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Held by the caller that loads. Dropping it without [`finish`](Self::finish) releases the
/// waiters with `None`.
pub struct Leader<O> {
    flights: Flights<O>,
    key: String,
    flight: Arc<Flight<O>>,
    finished: bool,
}

impl<O> fmt::Debug for Leader<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leader").field("key", &self.key).finish()
    }
}

impl<O> Leader<O> {
    /// Ends the load: every waiter gets `outcome`; callers that join from now on lead a new
    /// load (they should find the cache filled first).
    pub fn finish(mut self, outcome: O) {
        self.release(Some(outcome));
        self.finished = true;
    }

    fn release(&self, outcome: Option<O>) {
        // Leave the table first: callers that come after this find the cache, not the flight.
        lock(&self.flights.in_flight).remove(&self.key);
        *lock(&self.flight.outcome) = Some(outcome);
        self.flight.notify.notify_waiters();
    }
}

impl<O> Drop for Leader<O> {
    fn drop(&mut self) {
        if !self.finished {
            self.release(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_on;

    #[test]
    fn a_dropped_leader_releases_its_waiters() {
        let flights: Flights<u8> = Flights::default();
        let Role::Leader(leader) = flights.join("k", || ()) else {
            panic!("the first caller leads");
        };
        let mut waits = 0;
        let Role::Waiter(flight) = flights.join("k", || waits += 1) else {
            panic!("the second caller waits");
        };
        assert_eq!(waits, 1);
        drop(leader);
        assert!(flights.is_empty());
        assert_eq!(block_on(flight.wait()), None);
        assert!(matches!(flights.join("k", || ()), Role::Leader(_)));
    }

    #[test]
    fn waiters_on_other_threads_get_the_outcome() {
        let flights: Flights<String> = Flights::default();
        let Role::Leader(leader) = flights.join("k", || ()) else {
            panic!("the first caller leads");
        };
        let waiters: Vec<_> = (0..4)
            .map(|_| match flights.join("k", || ()) {
                Role::Waiter(flight) => std::thread::spawn(move || block_on(flight.wait())),
                Role::Leader(_) => panic!("a load is in flight"),
            })
            .collect();
        leader.finish("v".to_owned());
        for waiter in waiters {
            assert_eq!(waiter.join().ok().flatten().as_deref(), Some("v"));
        }
    }
}
