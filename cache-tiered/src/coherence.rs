//! What keeps the local tier coherent, for both faces: the local engine, invalidation epochs,
//! and the rule that a refill read before an invalidation never sticks, nor is ever served.
//!
//! Every invalidation (a key from the feed, or a write of this process) bumps the epoch of the
//! key's stripe and removes the key from the local tier, both under the stripe's lock. A refill
//! takes a [`Snapshot`] of the epochs *before* it asks the shared tier; then, under the same
//! lock, it inserts the value it got only if the epochs are unchanged. So the two critical
//! sections are ordered: either the invalidation's comes first, and the refill sees the bumped
//! epoch and keeps nothing, or the refill's comes first, and the invalidation's removal takes
//! its insert away before the invalidation returns. A refill whose snapshot already saw the
//! bump began its read after the change, so what it keeps is at least as new.
//!
//! Hits take no lock: they read the local tier only, which never holds a value read before an
//! invalidation of its key that has returned. (An earlier version checked the epochs before
//! and after an unlocked insert and removed the insert if they had moved: the stale value never
//! stayed, but it could be served between the insert and the removal, even to the writer
//! reading back the write it had just made.) Dropping everything (`All`, `Lost`, `Connected`,
//! `clear`) takes every stripe's lock, in order; it is rare, and nothing else holds more than
//! one.
//!
//! The locks are std mutexes, held for an epoch check and one local insert, delete or clear,
//! never across an `await`: the async face refills after its shared read has completed, and
//! invalidates from a guard's `drop`.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cache_core::invalidation::Invalidation;
use cache_core::{Bytes, CacheEngine, Remaining};

/// A value read from the shared tier with its remaining TTL.
pub(crate) type WithTtl = Option<(Bytes, Remaining)>;

/// Stripes of key epochs and locks: invalidations of different keys rarely make each other's
/// refills drop or wait.
const STRIPES: usize = 4096;

/// Counts of what the coherence machinery did, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TieredStats {
    /// Keys invalidated by the feed (other processes' changes, and this one's own writes
    /// echoed by the server).
    pub invalidated_keys: u64,
    /// Times the whole local tier was dropped: a clear or flush anywhere, the feed lost or
    /// connected again.
    pub local_flushes: u64,
    /// Refills not kept because an invalidation came while they were in flight.
    pub refills_dropped: u64,
    /// Times the feed said it was lost.
    pub feed_lost: u64,
}

/// The epochs a refill saw before it read the shared tier.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    global: u64,
    stripe: usize,
    epoch: u64,
}

/// One stripe of keys: its epoch, bumped by every invalidation of one of its keys, and the
/// lock that makes an invalidation and a refill's check-and-insert exclude each other.
#[derive(Debug, Default)]
struct Stripe {
    epoch: AtomicU64,
    lock: Mutex<()>,
}

impl Stripe {
    fn lock(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data, only an order: a panic under it leaves nothing to repair.
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The local tier and its epochs, shared by the engine and the feed's thread.
#[derive(Debug)]
pub(crate) struct Local<L> {
    pub(crate) engine: L,
    pub(crate) ttl_cap: Duration,
    hasher: RandomState,
    /// Bumped by clears and feed state changes, under every stripe's lock.
    global: AtomicU64,
    stripes: Box<[Stripe]>,
    /// Whether values may be kept locally now: always without a feed, and with one while it
    /// is connected.
    caching: AtomicBool,
    invalidated_keys: AtomicU64,
    local_flushes: AtomicU64,
    refills_dropped: AtomicU64,
    feed_lost: AtomicU64,
}

impl<L: CacheEngine> Local<L> {
    pub(crate) fn new(engine: L, ttl_cap: Duration, caching: bool) -> Self {
        Self {
            engine,
            ttl_cap,
            hasher: RandomState::new(),
            global: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            caching: AtomicBool::new(caching),
            invalidated_keys: AtomicU64::new(0),
            local_flushes: AtomicU64::new(0),
            refills_dropped: AtomicU64::new(0),
            feed_lost: AtomicU64::new(0),
        }
    }

    fn stripe(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % STRIPES
    }

    /// Taken before the shared tier is read; `None` when nothing may be kept locally now.
    pub(crate) fn snapshot(&self, key: &str) -> Option<Snapshot> {
        if !self.caching.load(Ordering::SeqCst) {
            return None;
        }
        let stripe = self.stripe(key);
        Some(Snapshot {
            global: self.global.load(Ordering::SeqCst),
            stripe,
            epoch: self.stripes[stripe].epoch.load(Ordering::SeqCst),
        })
    }

    fn unchanged(&self, snapshot: &Snapshot) -> bool {
        self.global.load(Ordering::SeqCst) == snapshot.global
            && self.stripes[snapshot.stripe].epoch.load(Ordering::SeqCst) == snapshot.epoch
    }

    /// Keeps `value`, read from the shared tier with `left` to live there, in the local tier
    /// for no longer than that (and the cap), unless an invalidation came since `snapshot`.
    ///
    /// The check and the insert are one critical section of the stripe's lock, which every
    /// invalidation of the stripe also takes: no invalidation can return between them, so
    /// the local tier never shows a value older than an invalidation that has returned.
    pub(crate) fn refill(&self, key: &str, value: &Bytes, left: Remaining, snapshot: Snapshot) {
        let (value, ttl) = (value.clone(), left.capped(self.ttl_cap));
        let _stripe = self.stripes[snapshot.stripe].lock();
        if !self.unchanged(&snapshot) {
            self.refills_dropped.fetch_add(1, Ordering::Release);
            return;
        }
        // A value the local tier refuses (too large for it) is simply not kept there.
        let _ = self.engine.set(key, value, ttl);
    }

    /// Keeps what a shared read found (see [`refill`](Self::refill)), when it found something
    /// and values may be kept.
    pub(crate) fn keep(&self, key: &str, found: &WithTtl, snapshot: Option<Snapshot>) {
        if let (Some((value, left)), Some(snapshot)) = (found, snapshot) {
            self.refill(key, value, *left, snapshot);
        }
    }

    /// The keys the local tier did not have (empty slots of `found`), with their snapshots,
    /// taken now: before the shared tier is asked for them.
    pub(crate) fn misses<'k>(&self, keys: &[&'k str], found: &[Option<Bytes>]) -> Misses<'k> {
        let indices: Vec<usize> = (0..keys.len()).filter(|&i| found[i].is_none()).collect();
        let keys: Vec<&str> = indices.iter().map(|&i| keys[i]).collect();
        let snapshots = keys.iter().map(|key| self.snapshot(key)).collect();
        Misses {
            keys,
            indices,
            snapshots,
        }
    }

    /// Puts what the shared tier `fetched` for `misses` into `found`, keeping each locally.
    pub(crate) fn fill(
        &self,
        misses: Misses<'_>,
        fetched: Vec<WithTtl>,
        found: &mut [Option<Bytes>],
    ) {
        let Misses {
            keys,
            indices,
            snapshots,
        } = misses;
        for (((key, index), snapshot), slot) in
            keys.into_iter().zip(indices).zip(snapshots).zip(fetched)
        {
            self.keep(key, &slot, snapshot);
            found[index] = slot.map(|(value, _)| value);
        }
    }

    /// Drops `keys` from the local tier when the guard goes out of scope: after the shared
    /// write it covers, and also when that write panics or its future is dropped mid-way (the
    /// write may still land).
    pub(crate) fn guard<'a>(&'a self, keys: Keys<'a>) -> Invalidate<'a, L> {
        Invalidate { local: self, keys }
    }

    /// Forgets `key` locally: after a write of this process, or when the feed names it.
    pub(crate) fn invalidate(&self, key: &str) {
        let stripe = &self.stripes[self.stripe(key)];
        let _stripe = stripe.lock();
        stripe.epoch.fetch_add(1, Ordering::SeqCst);
        let _ = self.engine.delete(key);
    }

    /// Forgets everything locally, holding every stripe's lock (taken in order, so two clears
    /// cannot deadlock; a refill or a key's invalidation holds one lock at most).
    pub(crate) fn invalidate_all(&self) {
        let _stripes: Vec<MutexGuard<'_, ()>> = self.stripes.iter().map(Stripe::lock).collect();
        self.global.fetch_add(1, Ordering::SeqCst);
        let _ = self.engine.clear();
        self.local_flushes.fetch_add(1, Ordering::Release);
    }

    /// What the feed says.
    pub(crate) fn hear(&self, event: Invalidation<'_>) {
        match event {
            Invalidation::Key(key) => {
                self.invalidate(key);
                self.invalidated_keys.fetch_add(1, Ordering::Release);
            }
            Invalidation::All => self.invalidate_all(),
            Invalidation::Lost => {
                // Stop keeping values first, so no refill starts against a feed that is gone.
                self.caching.store(false, Ordering::SeqCst);
                self.invalidate_all();
                // Counted once done (the counts are release/acquire): whoever sees the count
                // sees the local tier dropped.
                self.feed_lost.fetch_add(1, Ordering::Release);
            }
            Invalidation::Connected => {
                // Whatever changed while the feed was down went unheard: start afresh.
                self.invalidate_all();
                self.caching.store(true, Ordering::SeqCst);
            }
        }
    }
}

impl<L> Local<L> {
    pub(crate) fn is_caching(&self) -> bool {
        self.caching.load(Ordering::SeqCst)
    }

    pub(crate) fn stats(&self) -> TieredStats {
        TieredStats {
            invalidated_keys: self.invalidated_keys.load(Ordering::Acquire),
            local_flushes: self.local_flushes.load(Ordering::Acquire),
            refills_dropped: self.refills_dropped.load(Ordering::Acquire),
            feed_lost: self.feed_lost.load(Ordering::Acquire),
        }
    }
}

/// The local misses of a bulk read.
pub(crate) struct Misses<'k> {
    /// The keys to ask the shared tier for.
    pub(crate) keys: Vec<&'k str>,
    indices: Vec<usize>,
    snapshots: Vec<Option<Snapshot>>,
}

impl Misses<'_> {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The keys a write touches.
pub(crate) enum Keys<'a> {
    One(&'a str),
    Many(&'a [&'a str]),
    Entries(&'a [(&'a str, Bytes)]),
    All,
}

/// Drops keys from the local tier when dropped (see [`Local::guard`]).
pub(crate) struct Invalidate<'a, L: CacheEngine> {
    local: &'a Local<L>,
    keys: Keys<'a>,
}

impl<L: CacheEngine> Drop for Invalidate<'_, L> {
    fn drop(&mut self) {
        match self.keys {
            Keys::One(key) => self.local.invalidate(key),
            Keys::Many(keys) => keys.iter().for_each(|key| self.local.invalidate(key)),
            Keys::Entries(entries) => entries
                .iter()
                .for_each(|(key, _)| self.local.invalidate(key)),
            Keys::All => self.local.invalidate_all(),
        }
    }
}
