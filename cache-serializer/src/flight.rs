//! Single-flight: one loader per key at a time, shared by every caller waiting for it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cache_core::Bytes;

/// What a finished load left for its waiters.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// The encoded value (envelope included).
    Value(Bytes),
    /// The loader's error, as an `Arc<E>` behind `Any`.
    LoaderError(Arc<dyn Any + Send + Sync>),
    /// The leader gave up (it panicked, or failed before loading): waiters try again.
    Abandoned,
}

/// One load in flight: its outcome once known, and the notification waiters await (a waiting
/// task blocks no thread; a waiting thread of the blocking face parks in `block_on`).
#[derive(Default)]
pub(crate) struct Flight {
    outcome: Mutex<Option<Outcome>>,
    notify: tokio::sync::Notify,
}

impl Flight {
    /// Waits until the load ends. Dropping the future stops waiting and changes
    /// nothing else.
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
    // The protected state is always consistent between statements, so a poisoned lock is safe.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Default)]
pub(crate) struct Flights {
    in_flight: Mutex<HashMap<String, Arc<Flight>>>,
}

pub(crate) enum Role<'a> {
    Leader(LeaderGuard<'a>),
    Waiter(Arc<Flight>),
}

impl Flights {
    /// Joins the load of `key`, or starts one. `on_wait` runs under the lock when joining, so a
    /// count it keeps is exact when the leader looks at it.
    pub(crate) fn join(&self, key: &str, on_wait: impl FnOnce()) -> Role<'_> {
        let mut map = lock(&self.in_flight);
        if let Some(flight) = map.get(key) {
            on_wait();
            return Role::Waiter(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::default());
        map.insert(key.to_owned(), Arc::clone(&flight));
        Role::Leader(LeaderGuard {
            flights: self,
            key: key.to_owned(),
            flight,
            finished: false,
        })
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.in_flight).len()
    }
}

/// Held by the caller that runs the loader. Dropping it without [`finish`](Self::finish) (a
/// panic, an early return, a cancelled future) releases the waiters with
/// [`Outcome::Abandoned`], and one of them loads instead.
pub(crate) struct LeaderGuard<'a> {
    flights: &'a Flights,
    key: String,
    flight: Arc<Flight>,
    finished: bool,
}

impl LeaderGuard<'_> {
    pub(crate) fn finish(mut self, outcome: Outcome) {
        self.release(outcome);
        self.finished = true;
    }

    fn release(&self, outcome: Outcome) {
        // Leave the map first: callers that come after this find the cache, not the flight.
        lock(&self.flights.in_flight).remove(&self.key);
        *lock(&self.flight.outcome) = Some(outcome);
        self.flight.notify.notify_waiters();
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.release(Outcome::Abandoned);
        }
    }
}
