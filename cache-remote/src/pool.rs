//! A bounded pool: at most `max_open` connections open at once, at most `max_idle` kept.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::exchange::Deadline;

/// Why no connection was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every connection stayed busy until the deadline.
    Timeout,
    /// The pool was closed.
    Closed,
}

/// What a checkout gives: an idle connection, or the right to open a new one.
pub(crate) enum Slot<C> {
    /// A connection that was idle.
    Idle(C),
    /// Room for one more connection; the caller opens it.
    Vacant,
}

struct State<C> {
    /// Idle connections, each with the moment it went idle.
    idle: Vec<(C, Instant)>,
    /// Connections counted against `max_open`: idle, in use, and being opened.
    open: usize,
    waiting: usize,
    closed: bool,
    /// The most connections ever open at once, for tests and statistics.
    peak: usize,
}

/// A bounded pool of `C`.
pub(crate) struct Pool<C> {
    state: Mutex<State<C>>,
    freed: Condvar,
    max_open: usize,
    max_idle: usize,
    /// An idle connection older than this is closed instead of reused: its flow may have died
    /// without a word (a NAT or load balancer forgot it).
    max_idle_time: Option<Duration>,
}

impl<C> Pool<C> {
    pub(crate) fn new(max_open: usize, max_idle: usize, max_idle_time: Option<Duration>) -> Self {
        Self {
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
                closed: false,
                peak: 0,
            }),
            freed: Condvar::new(),
            max_open: max_open.max(1),
            max_idle: max_idle.min(max_open),
            max_idle_time,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection or room for a new one, waiting until `deadline` for either.
    pub(crate) fn checkout(&self, deadline: &Deadline) -> Result<Slot<C>, Refusal> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Err(Refusal::Closed);
            }
            if let Some((conn, since)) = state.idle.pop() {
                if self
                    .max_idle_time
                    .is_some_and(|longest| since.elapsed() > longest)
                {
                    // Its room is reused for a new connection; the old one is closed outside
                    // the lock.
                    drop(state);
                    drop(conn);
                    return Ok(Slot::Vacant);
                }
                return Ok(Slot::Idle(conn));
            }
            if state.open < self.max_open {
                state.open += 1;
                state.peak = state.peak.max(state.open);
                return Ok(Slot::Vacant);
            }
            let Some(left) = deadline.remaining() else {
                return Err(Refusal::Timeout);
            };
            state.waiting += 1;
            let (next, _) = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            state.waiting -= 1;
        }
    }

    /// Returns a connection whose last request was answered in full.
    pub(crate) fn checkin(&self, conn: C) {
        let mut state = self.lock();
        if state.closed || state.idle.len() >= self.max_idle {
            state.open = state.open.saturating_sub(1);
            let wake = state.waiting > 0;
            drop(state);
            drop(conn);
            if wake {
                self.freed.notify_one();
            }
            return;
        }
        state.idle.push((conn, Instant::now()));
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.freed.notify_one();
        }
    }

    /// Gives back the room of a connection that was dropped (or never opened).
    pub(crate) fn release(&self) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.freed.notify_one();
        }
    }

    /// Drops every idle connection (the server restarted: they are all dead).
    pub(crate) fn drain_idle(&self) {
        let mut state = self.lock();
        let idle = std::mem::take(&mut state.idle);
        state.open = state.open.saturating_sub(idle.len());
        let wake = state.waiting > 0;
        drop(state);
        drop(idle);
        if wake {
            self.freed.notify_all();
        }
    }

    /// Closes the pool: idle connections are dropped now, busy ones when they come back, and
    /// every waiter and later checkout is refused.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let idle = std::mem::take(&mut state.idle);
        state.open = state.open.saturating_sub(idle.len());
        drop(state);
        drop(idle);
        self.freed.notify_all();
    }

    /// (open, idle, peak open) right now.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.open, state.idle.len(), state.peak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_holds_and_waiters_get_freed_room() {
        let pool: Pool<u32> = Pool::new(2, 1, None);
        let deadline = Deadline::after(Duration::from_millis(50));
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        assert_eq!(pool.checkout(&deadline).err(), Some(Refusal::Timeout));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                pool.checkin(7);
            });
            let long = Deadline::after(Duration::from_secs(5));
            assert!(matches!(pool.checkout(&long), Ok(Slot::Idle(7))));
        });
        pool.checkin(1);
        pool.checkin(2);
        assert_eq!(pool.counts(), (1, 1, 2), "one kept idle, one closed");
        pool.close();
        assert_eq!(pool.checkout(&deadline).err(), Some(Refusal::Closed));
        assert_eq!(pool.counts().0, 0);
    }

    #[test]
    fn an_idle_connection_past_its_time_is_not_reused() {
        let pool: Pool<u32> = Pool::new(1, 1, Some(Duration::from_millis(20)));
        let deadline = Deadline::after(Duration::from_millis(50));
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        pool.checkin(7);
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Idle(7))));
        pool.checkin(7);
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        assert_eq!(
            pool.counts(),
            (1, 0, 1),
            "the old one closed, its room reused"
        );
    }
}
