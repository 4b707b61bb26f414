//! A bounded pool: at most `max_open` connections open at once, at most `max_idle` kept idle.
//!
//! A connection is handed to one caller at a time while an idle one exists or another may be
//! opened. Past the bound, a caller shares the least busy connection that allows it
//! ([`Pooled::shareable`]): its request is pipelined behind the others' (see `link.rs`),
//! instead of waiting for a connection to come back and then waiting again for its reply.
//! Only when none may be shared (TLS) does a caller wait for one, until its deadline.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::exchange::Deadline;

/// What the pool needs to know of a connection.
pub(crate) trait Pooled {
    /// Whether several callers may have requests in flight on it at once.
    fn shareable(&self) -> bool;
    /// Whether it broke (it is then never handed out again).
    fn is_dead(&self) -> bool;
    /// It is being handed out after sitting idle.
    fn taken_idle(&self) {}
}

/// Why no connection was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every connection stayed busy until the deadline.
    Timeout,
    /// The pool was closed.
    Closed,
}

/// What a checkout gives.
pub(crate) enum Slot<L> {
    /// A connection: idle until now, or shared with callers already on it.
    Taken(Arc<L>),
    /// Room for one more connection; the caller opens it and hands it to [`Pool::opened`].
    Vacant,
}

struct Entry<L> {
    link: Arc<L>,
    /// Callers holding it now.
    users: usize,
    /// When `users` last fell to 0.
    idle_since: Instant,
}

struct State<L> {
    links: Vec<Entry<L>>,
    /// Rooms taken by callers that are opening a connection.
    opening: usize,
    waiting: usize,
    closed: bool,
    /// The most connections ever open at once, for tests and statistics.
    peak: usize,
}

impl<L: Pooled> State<L> {
    fn open(&self) -> usize {
        self.links.len() + self.opening
    }

    fn idle(&self) -> usize {
        self.links
            .iter()
            .filter(|e| e.users == 0 && !e.link.is_dead())
            .count()
    }
}

/// A bounded pool of shared connections `L`.
pub(crate) struct Pool<L> {
    state: Mutex<State<L>>,
    freed: Condvar,
    max_open: usize,
    max_idle: usize,
    /// An idle connection older than this is closed instead of reused: its flow may have died
    /// without a word (a NAT or load balancer forgot it).
    max_idle_time: Option<Duration>,
}

impl<L: Pooled> Pool<L> {
    pub(crate) fn new(max_open: usize, max_idle: usize, max_idle_time: Option<Duration>) -> Self {
        Self {
            state: Mutex::new(State {
                links: Vec::new(),
                opening: 0,
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

    fn lock(&self) -> MutexGuard<'_, State<L>> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection, or room for a new one, waiting until `deadline` only when every
    /// connection is busy and none may be shared.
    pub(crate) fn checkout(&self, deadline: &Deadline) -> Result<Slot<L>, Refusal> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Err(Refusal::Closed);
            }
            // The connection that went idle last: the others may then age out.
            let idle = state
                .links
                .iter()
                .enumerate()
                .filter(|(_, e)| e.users == 0)
                .max_by_key(|(_, e)| e.idle_since)
                .map(|(at, e)| (at, e.idle_since));
            if let Some((at, since)) = idle {
                if self
                    .max_idle_time
                    .is_some_and(|longest| since.elapsed() > longest)
                    || state.links[at].link.is_dead()
                {
                    // Closed outside the lock; its room is free again.
                    let old = state.links.swap_remove(at);
                    drop(state);
                    drop(old);
                    state = self.lock();
                    continue;
                }
                let entry = &mut state.links[at];
                entry.users = 1;
                entry.link.taken_idle();
                return Ok(Slot::Taken(Arc::clone(&entry.link)));
            }
            if state.open() < self.max_open {
                state.opening += 1;
                state.peak = state.peak.max(state.open());
                return Ok(Slot::Vacant);
            }
            let shared = state
                .links
                .iter_mut()
                .filter(|e| e.link.shareable() && !e.link.is_dead())
                .min_by_key(|e| e.users);
            if let Some(entry) = shared {
                entry.users += 1;
                return Ok(Slot::Taken(Arc::clone(&entry.link)));
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

    /// Takes in a connection opened in the room [`checkout`](Self::checkout) gave; the caller
    /// holds it.
    pub(crate) fn opened(&self, link: Arc<L>) {
        let mut state = self.lock();
        state.opening = state.opening.saturating_sub(1);
        if state.closed {
            // Dropped when its caller lets it go.
            drop(state);
            self.freed.notify_all();
            return;
        }
        let shareable = link.shareable();
        state.links.push(Entry {
            link,
            users: 1,
            idle_since: Instant::now(),
        });
        // Callers that found nothing to share may share this one.
        let wake = shareable && state.waiting > 0;
        drop(state);
        if wake {
            self.freed.notify_all();
        }
    }

    /// Gives back the room of a connection that could not be opened.
    pub(crate) fn failed(&self) {
        let mut state = self.lock();
        state.opening = state.opening.saturating_sub(1);
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.freed.notify_one();
        }
    }

    /// A caller is done with `link`. A dead connection leaves the pool (its other callers
    /// still hold it until they see it dead); one left idle beyond `max_idle` is closed.
    pub(crate) fn checkin(&self, link: &Arc<L>) {
        let mut state = self.lock();
        let Some(at) = state.links.iter().position(|e| Arc::ptr_eq(&e.link, link)) else {
            // Removed already (dead, drained or closed).
            return;
        };
        let dead = link.is_dead();
        let entry = &mut state.links[at];
        entry.users = entry.users.saturating_sub(1);
        let now_idle = entry.users == 0;
        if now_idle {
            entry.idle_since = Instant::now();
        }
        // A dead link stays counted until its last caller lets it go (its socket is open
        // until then), but is never handed out again.
        let mut gone = None;
        if now_idle && (dead || state.closed || state.idle() > self.max_idle) {
            gone = Some(state.links.swap_remove(at));
        }
        let wake = state.waiting > 0;
        // Waiters may share a live shareable link; otherwise one of them may take the room.
        let everyone = !dead && link.shareable();
        drop(state);
        drop(gone);
        if wake && everyone {
            self.freed.notify_all();
        } else if wake {
            self.freed.notify_one();
        }
    }

    /// Drops every idle connection (the server restarted: they are all dead).
    pub(crate) fn drain_idle(&self) {
        let mut state = self.lock();
        let (idle, busy): (Vec<_>, Vec<_>) = std::mem::take(&mut state.links)
            .into_iter()
            .partition(|e| e.users == 0);
        state.links = busy;
        let wake = state.waiting > 0;
        drop(state);
        drop(idle);
        if wake {
            self.freed.notify_all();
        }
    }

    /// Closes the pool: idle connections are dropped now, busy ones when their callers are
    /// done, and every waiter and later checkout is refused.
    pub(crate) fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let (idle, busy): (Vec<_>, Vec<_>) = std::mem::take(&mut state.links)
            .into_iter()
            .partition(|e| e.users == 0);
        state.links = busy;
        drop(state);
        drop(idle);
        self.freed.notify_all();
    }

    /// (open, idle, peak open) right now.
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.open(), state.idle(), state.peak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Fake {
        id: u32,
        shareable: bool,
        dead: AtomicBool,
    }

    impl Pooled for Fake {
        fn shareable(&self) -> bool {
            self.shareable
        }
        fn is_dead(&self) -> bool {
            self.dead.load(Ordering::Relaxed)
        }
    }

    fn fake(id: u32, shareable: bool) -> Arc<Fake> {
        Arc::new(Fake {
            id,
            shareable,
            dead: AtomicBool::new(false),
        })
    }

    fn taken(slot: Result<Slot<Fake>, Refusal>) -> u32 {
        match slot {
            Ok(Slot::Taken(link)) => link.id,
            Ok(Slot::Vacant) => panic!("vacant"),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[test]
    fn exclusive_connections_bound_and_wait() {
        let pool: Pool<Fake> = Pool::new(2, 1, None);
        let deadline = Deadline::after(Duration::from_millis(50));
        let (a, b) = (fake(1, false), fake(2, false));
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        pool.opened(Arc::clone(&a));
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        pool.opened(Arc::clone(&b));
        assert_eq!(pool.checkout(&deadline).err(), Some(Refusal::Timeout));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                pool.checkin(&a);
            });
            let long = Deadline::after(Duration::from_secs(5));
            assert_eq!(taken(pool.checkout(&long)), 1);
        });
        pool.checkin(&a);
        pool.checkin(&b);
        assert_eq!(pool.counts(), (1, 1, 2), "one kept idle, one closed");
        pool.close();
        assert_eq!(pool.checkout(&deadline).err(), Some(Refusal::Closed));
        assert_eq!(pool.counts().0, 0);
    }

    #[test]
    fn past_the_bound_callers_share_the_least_busy_connection() {
        let pool: Pool<Fake> = Pool::new(2, 2, None);
        let deadline = Deadline::after(Duration::from_millis(50));
        let (a, b) = (fake(1, true), fake(2, true));
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        pool.opened(Arc::clone(&a));
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        pool.opened(Arc::clone(&b));
        let first = taken(pool.checkout(&deadline));
        let second = taken(pool.checkout(&deadline));
        assert_ne!(first, second, "each connection gets one more caller");
        assert_eq!(pool.counts(), (2, 0, 2), "never more than the bound");
        b.dead.store(true, Ordering::Relaxed);
        assert_eq!(
            taken(pool.checkout(&deadline)),
            1,
            "a dead one is not shared"
        );
        pool.checkin(&b);
        assert_eq!(pool.counts().0, 2, "counted while a caller holds it");
        pool.checkin(&b);
        assert_eq!(pool.counts().0, 1, "gone once its last caller let it go");
    }

    #[test]
    fn an_idle_connection_past_its_time_is_not_reused() {
        let pool: Pool<Fake> = Pool::new(1, 1, Some(Duration::from_millis(20)));
        let deadline = Deadline::after(Duration::from_millis(50));
        let a = fake(7, false);
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        pool.opened(Arc::clone(&a));
        pool.checkin(&a);
        assert_eq!(taken(pool.checkout(&deadline)), 7);
        pool.checkin(&a);
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(pool.checkout(&deadline), Ok(Slot::Vacant)));
        assert_eq!(
            pool.counts(),
            (1, 0, 1),
            "the old one closed, its room reused"
        );
    }
}
