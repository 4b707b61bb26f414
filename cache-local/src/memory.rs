//! [`InMemoryEngine`]: one bounded cache shared by every thread.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cache_core::clock::Clock;
use cache_core::key::check_key;
use cache_core::{Bytes, CacheEngine, Capabilities, NonBlocking, Remaining, Result, Ttl};

use crate::common::{
    DEFAULT_MAX_CAPACITY, Entry, NEVER, Options, Settings, closed, collect_live, keep_unless,
};
use crate::listener::{RemovalCause, Removed};
use crate::shard::Update;
use crate::store::Store;

const BACKEND: &str = "in-memory";

/// A bounded in-memory cache shared by every thread that holds it.
///
/// Cloning the engine (or wrapping it in an `Arc`) shares the same entries. Entries have
/// per-entry TTLs; expired entries are never returned. The clock is the kernel's coarse
/// monotonic clock, so an entry may live up to two kernel ticks plus 2 ms longer than its TTL
/// (10 ms on a 250 Hz kernel; see [`Capabilities::ttl_resolution`]), never shorter.
///
/// # Bounds and eviction
///
/// The engine holds at most [`max_capacity`](InMemoryEngineBuilder::max_capacity) entries
/// (300 by default) and, when [`max_bytes`](InMemoryEngineBuilder::max_bytes) is set, at most that
/// many bytes of keys plus values. When full, it evicts by W-TinyLFU with an adaptive window:
/// new entries pass through a small window, and one that was not read there gets into the main
/// area only if it was requested more often lately than the entry it would replace (a frequency
/// sketch keeps count), so a scan of one-off keys does not flush the hot set. The window grows
/// when keys it evicted come back soon (recency pays) and shrinks when keys the main area evicted
/// do (frequency pays). On the ARC paper's and the LIRS traces its hit ratio is at or near the
/// better of LRU and moka at every size (`docs/BENCHMARKS.md`); `docs/DESIGN.md` says how.
/// A hit only marks its entry under a shared lock.
///
/// The store is split into shards that each hold an equal whole share of the bound, so the bound
/// always holds; up to `shards - 1` entries of it may go unused when it does not divide evenly,
/// and a shard can fill up before the whole store does.
///
/// Expired entries are removed when read, and swept out before new entries are admitted once the
/// earliest deadline has passed, so they do not crowd out live ones. Sweeps are spaced at least
/// one millisecond per 10,000 entries of capacity apart, so their cost stays small.
///
/// A value that can never fit (with a byte bound: larger than
/// [`Capabilities::max_value_size`]) is refused with
/// [`CacheError::ValueTooLarge`](cache_core::CacheError::ValueTooLarge) and the previous value is
/// kept.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use cache_core::{Bytes, CacheEngine, Ttl};
/// use cache_local::InMemoryEngine;
///
/// # fn main() -> cache_core::Result<()> {
/// let cache = InMemoryEngine::builder()
///     .max_capacity(10_000)
///     .max_bytes(64 * 1024 * 1024)
///     .default_ttl(Duration::from_secs(60))
///     .build()?;
/// cache.set("user:1", Bytes::from_static(b"ada"), Ttl::Default)?;
/// assert_eq!(cache.get("user:1")?.as_deref(), Some(&b"ada"[..]));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct InMemoryEngine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    settings: Settings,
    closed: AtomicBool,
    sweeper: Sweeper,
}

/// Builds an [`InMemoryEngine`]; every setter has a default.
#[must_use]
#[derive(Default)]
pub struct InMemoryEngineBuilder {
    options: Options,
    shards: Option<usize>,
}

impl fmt::Debug for InMemoryEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("InMemoryEngineBuilder");
        self.options.describe(&mut out);
        out.field("shards", &self.shards).finish()
    }
}

impl InMemoryEngineBuilder {
    /// The most entries the engine holds; default 300.
    pub fn max_capacity(mut self, entries: u64) -> Self {
        self.options.max_capacity = Some(entries);
        self
    }

    /// An upper bound on the bytes of keys plus values held; default none.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.options.max_bytes = Some(bytes);
        self
    }

    /// The TTL that [`Ttl::Default`] stands for; default 300 s. `Ttl::Never` is allowed.
    pub fn default_ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.options.default_ttl = Some(ttl.into());
        self
    }

    /// The clock entries expire by; default the system clock. Tests pass a
    /// [`ManualClock`](cache_core::clock::ManualClock) to move time by hand.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.options.clock = Some(clock);
        self
    }

    /// Entries not read for this long expire, whatever their TTL says; default none.
    ///
    /// `get`, `get_many`, `get_with_ttl` and `get_many_with_ttl` count as reads, and so does
    /// the write that stored the entry; `exists` and `remaining_ttl` look without touching.
    /// [`remaining_ttl`](CacheEngine::remaining_ttl) reports whichever of the TTL and the idle
    /// time ends first. The same resolution as TTLs applies.
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.options.time_to_idle = Some(idle);
        self
    }

    /// Calls `listener` with the key, the value and the [`RemovalCause`] of every entry that
    /// leaves the engine: evicted for size, expired, replaced, removed or cleared.
    ///
    /// It runs on the thread whose call removed the entry, after the store's lock is released,
    /// so it may use the engine itself. Expired entries are reported when the engine finds them
    /// (a read, a write to the key, the sweep before inserts), not at the moment they expire.
    /// A panic in the listener is caught and counted
    /// ([`listener_panics`](InMemoryEngine::listener_panics)); the operation still succeeds.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use cache_core::{Bytes, CacheEngine, Ttl};
    /// use cache_local::{InMemoryEngine, RemovalCause};
    ///
    /// # fn main() -> cache_core::Result<()> {
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = Arc::clone(&seen);
    /// let cache = InMemoryEngine::builder()
    ///     .removal_listener(move |key, _value, cause| {
    ///         log.lock().unwrap().push((key.to_string(), cause));
    ///     })
    ///     .build()?;
    /// cache.set("a", Bytes::from_static(b"1"), Ttl::Default)?;
    /// cache.set("a", Bytes::from_static(b"2"), Ttl::Default)?;
    /// cache.delete("a")?;
    /// assert_eq!(
    ///     *seen.lock().unwrap(),
    ///     [("a".to_string(), RemovalCause::Replaced), ("a".to_string(), RemovalCause::Removed)]
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn removal_listener(
        mut self,
        listener: impl Fn(&str, &Bytes, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.options.listener = Some(Arc::new(listener));
        self
    }

    /// The number of independently locked shards, rounded to a power of two; default four per
    /// core, fewer for small capacities (each shard holds at least 512 entries, since each runs
    /// its own eviction policy and small ones lose hit ratio).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Builds the engine.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`](cache_core::CacheError::InvalidConfig) for a zero capacity, a
    /// zero or too long default TTL or time-to-idle, or a byte bound too small to hold a key and
    /// a value.
    pub fn build(self) -> Result<InMemoryEngine> {
        let max_capacity = self.options.max_capacity.unwrap_or(DEFAULT_MAX_CAPACITY);
        let shards = self
            .shards
            .unwrap_or_else(|| default_shards(max_capacity))
            .max(1)
            .next_power_of_two();
        let settings = Settings::new(BACKEND, self.options, shards)?;
        let store = Store::new(
            shards,
            settings.weight_capacity / shards as u64,
            max_capacity / shards as u64,
            settings.weighter,
        );
        Ok(InMemoryEngine {
            inner: Arc::new(Inner {
                store,
                sweeper: Sweeper::new(max_capacity),
                settings,
                closed: AtomicBool::new(false),
            }),
        })
    }
}

/// The fewest entries a shard gets by default: each shard runs its own eviction policy, and on
/// the ARC and LIRS traces shards of fewer than about 400 entries lose up to 1.3 points of hit
/// ratio against one policy over the whole capacity (see `docs/DESIGN.md`).
const MIN_SHARD_ENTRIES: u64 = 512;

fn default_shards(capacity: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    default_shards_for(capacity, cores)
}

/// The shard count the engine picks for `capacity` entries on a machine with `cores` cores.
/// Public for the benchmarks, which replay traces as the engine would run on other machines.
#[doc(hidden)]
pub fn default_shards_for(capacity: u64, cores: usize) -> usize {
    let mut shards = (cores * 4).next_power_of_two();
    while shards > 1 && capacity / (shards as u64) < MIN_SHARD_ENTRIES {
        shards /= 2;
    }
    shards
}

impl InMemoryEngine {
    /// An engine with the defaults: 300 entries, no byte bound, 300 s default TTL.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// A builder to set the bounds, the default TTL and the clock.
    pub fn builder() -> InMemoryEngineBuilder {
        InMemoryEngineBuilder::default()
    }

    /// How many entries are held now, counting expired ones not yet removed.
    pub fn entry_count(&self) -> u64 {
        self.inner.store.len() as u64
    }

    /// The bytes of keys plus values held, counting expired entries not yet removed, found by
    /// walking the entries. Under concurrent writes the walk is not a snapshot (it can see an entry
    /// that replaced one it already counted), so use [`bytes_bound_in_use`](Self::bytes_bound_in_use)
    /// to check the bound.
    pub fn weighted_bytes(&self) -> u64 {
        let mut bytes = 0;
        self.inner
            .store
            .for_each(|k, e| bytes += (k.len() + e.value.len()) as u64);
        bytes
    }

    /// How much of the byte bound is in use, from the store's own accounting (each shard read
    /// under its lock): never less than the bytes held, and never more than
    /// [`max_bytes`](InMemoryEngineBuilder::max_bytes). Each entry counts at least
    /// `max_bytes / max_capacity` bytes, so this is an upper bound. `None` without a byte bound.
    pub fn bytes_bound_in_use(&self) -> Option<u64> {
        let settings = &self.inner.settings;
        settings.max_bytes?;
        Some(self.inner.store.weight() / settings.max_capacity)
    }

    #[inline]
    fn open(&self) -> Result<&Inner> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(closed(BACKEND));
        }
        Ok(&self.inner)
    }

    /// Checks a write and returns its deadline and, when the clock was read for it, the time.
    fn checked_entry(
        &self,
        key: &str,
        value: &Bytes,
        ttl: Ttl,
    ) -> Result<(Option<u64>, Option<u64>)> {
        check_key(key, 0)?;
        self.inner.settings.check_value(key, value)?;
        self.inner.settings.deadline_and_now(ttl)
    }
}

impl Default for InMemoryEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.settings;
        f.debug_struct("InMemoryEngine")
            .field("max_capacity", &s.max_capacity)
            .field("max_bytes", &s.max_bytes)
            .field("default_ttl", &s.default_ttl)
            .field("shards", &s.shards)
            .field("entries", &self.inner.store.len())
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Inner {
    /// The key's value if it is live, counting the read (towards the policy and the
    /// time-to-idle); an expired entry found is removed.
    #[inline]
    fn get(&self, key: &str) -> Option<Bytes> {
        let timer = &self.settings.timer;
        match self
            .store
            .read(key, true, |e| e.read(timer).then(|| e.value.clone()))?
        {
            Some(value) => Some(value),
            None => {
                self.remove_expired(key);
                None
            }
        }
    }

    /// Removes the key's entry if it is (still) expired.
    fn remove_expired(&self, key: &str) {
        let timer = &self.settings.timer;
        let mut removed = Removed::new();
        self.store.update(key, &mut removed, |e| match e {
            Some(e) if e.is_expired(timer) => Update::Remove(()),
            _ => Update::Keep(()),
        });
        self.settings.notify(removed);
    }

    /// Stores the value, or removes the key for a zero TTL; reports what left.
    fn insert(&self, key: &str, value: Bytes, deadline: Option<u64>, now: Option<u64>) {
        let mut removed = Removed::new();
        match deadline {
            None => {
                if let Some(old) = self.store.remove(key) {
                    self.removed(&mut removed, key, old, RemovalCause::Removed);
                }
            }
            Some(deadline) => {
                self.sweeper
                    .before_insert(&self.store, &self.settings, now, &mut removed);
                self.note(deadline);
                let entry = Entry::new(value, deadline, &self.settings.timer);
                if let Some(old) = self.store.insert(key, entry, &mut removed) {
                    self.removed(&mut removed, key, old, RemovalCause::Replaced);
                }
            }
        }
        self.settings.notify(removed);
    }

    /// Records a removal for the listener, if there is one.
    #[inline]
    fn removed(&self, removed: &mut Removed, key: &str, entry: Entry, cause: RemovalCause) {
        if self.settings.listening() {
            removed.push((key.into(), entry, cause));
        }
    }

    /// Tells the sweeper about a new entry: it expires by its deadline, or sooner by idling.
    #[inline]
    fn note(&self, deadline: u64) {
        let idle_end = self.settings.timer.idle.map_or(NEVER, |idle| {
            self.settings.timer.now_ms().saturating_add(idle)
        });
        self.sweeper.note(deadline.min(idle_end));
    }

    /// Removes the key's entry; whether a live one was there.
    fn delete(&self, key: &str, removed: &mut Removed) -> bool {
        match self.store.remove(key) {
            Some(old) => {
                let live = !old.is_expired(&self.settings.timer);
                self.removed(removed, key, old, RemovalCause::Removed);
                live
            }
            None => false,
        }
    }

    fn default_deadline(&self) -> Result<Option<u64>> {
        self.settings.deadline(Ttl::Default)
    }
}

impl CacheEngine for InMemoryEngine {
    #[inline]
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let inner = self.open()?;
        check_key(key, 0)?;
        Ok(inner.get(key))
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let inner = self.open()?;
        let (deadline, now) = self.checked_entry(key, &value, ttl)?;
        inner.insert(key, value, deadline, now);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let mut removed = Removed::new();
        let live = inner.delete(key, &mut removed);
        inner.settings.notify(removed);
        Ok(live)
    }

    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let timer = &inner.settings.timer;
        // The test and the removal run under the shard's write lock, so no write can come
        // between them. The decision is taken once, inside: reading the clock again afterwards
        // could call a live entry that was just removed expired.
        let mut removed = Removed::new();
        let done = inner.store.update(key, &mut removed, |e| match e {
            // Absent either way; dropping it frees its room.
            Some(e) if e.is_expired(timer) => Update::Remove(false),
            Some(e) if e.value == expected => Update::Remove(true),
            _ => Update::Keep(false),
        });
        inner.settings.notify(removed);
        Ok(done)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let timer = &inner.settings.timer;
        match inner.store.read(key, false, |e| e.is_expired(timer)) {
            Some(false) => Ok(true),
            Some(true) => {
                inner.remove_expired(key);
                Ok(false)
            }
            None => Ok(false),
        }
    }

    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let timer = &inner.settings.timer;
        Ok(inner
            .store
            .read(key, false, |e| {
                (!e.is_expired(timer)).then(|| e.remaining(timer))
            })
            .flatten())
    }

    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let timer = &inner.settings.timer;
        match inner.store.read(key, true, |e| {
            e.read(timer).then(|| (e.value.clone(), e.remaining(timer)))
        }) {
            Some(Some(found)) => Ok(Some(found)),
            Some(None) => {
                inner.remove_expired(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn clear(&self) -> Result<()> {
        let inner = self.open()?;
        let mut removed = Removed::new();
        inner.store.clear(&mut removed);
        inner.settings.notify(removed);
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let mut removed = Removed::new();
        self.inner.store.clear(&mut removed);
        self.inner.settings.notify(removed);
        Ok(())
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let inner = self.open()?;
        for key in keys {
            check_key(key, 0)?;
        }
        Ok(keys.iter().map(|key| inner.get(key)).collect())
    }

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let inner = self.open()?;
        for (key, value) in entries {
            check_key(key, 0)?;
            inner.settings.check_value(key, value)?;
        }
        let deadline = inner.settings.deadline(ttl)?;
        for (key, value) in entries {
            inner.insert(key, value.clone(), deadline, None);
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let inner = self.open()?;
        for key in keys {
            check_key(key, 0)?;
        }
        let mut removed = Removed::new();
        let live = keys
            .iter()
            .filter(|key| inner.delete(key, &mut removed))
            .count() as u64;
        inner.settings.notify(removed);
        Ok(live)
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let inner = self.open()?;
        let (deadline, _) = self.checked_entry(key, &value, ttl)?;
        let timer = &inner.settings.timer;
        if let Some(deadline) = deadline {
            inner.note(deadline);
        }
        // The test and the write run under the shard's exclusive lock.
        let mut removed = Removed::new();
        let added = inner.store.update(key, &mut removed, |e| match e {
            Some(e) if !e.is_expired(timer) => Update::Keep(false),
            expired => match deadline {
                Some(deadline) => Update::Put(Entry::new(value, deadline, timer), true),
                // A zero TTL stores nothing, but the key was free: report it as added.
                None if expired.is_some() => Update::Remove(true),
                None => Update::Keep(true),
            },
        });
        inner.settings.notify(removed);
        Ok(added)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let settings = &inner.settings;
        let fresh_deadline = inner.default_deadline()?;
        if let Some(deadline) = fresh_deadline {
            inner.note(deadline);
        }
        // Read, change and write back under the shard's exclusive lock. A counter that grows
        // (`9` to `10`) is re-weighed by the store, which evicts to stay within the byte bound.
        let mut removed = Removed::new();
        let outcome = inner.store.update(key, &mut removed, |e| {
            settings.increment(key, delta, fresh_deadline, e)
        });
        inner.settings.notify(removed);
        outcome
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let deadline = inner.settings.deadline(ttl)?;
        let timer = &inner.settings.timer;
        if let Some(deadline) = deadline {
            inner.note(deadline);
        }
        let mut removed = Removed::new();
        let touched = inner.store.update(key, &mut removed, |e| match e {
            Some(e) if e.is_expired(timer) => Update::Remove(false),
            Some(e) => match deadline {
                Some(deadline) => {
                    e.deadline = deadline;
                    Update::Keep(true)
                }
                None => Update::Remove(true),
            },
            None => Update::Keep(false),
        });
        inner.settings.notify(removed);
        Ok(touched)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.settings.capabilities(true)
    }
}

/// Removes expired entries before new ones are admitted, once the earliest deadline has passed.
struct Sweeper {
    /// A lower bound of the times stored entries expire at; `NEVER` when none expires.
    earliest: AtomicU64,
    last_sweep: AtomicU64,
    sweeping: AtomicBool,
    interval_ms: u64,
}

impl Sweeper {
    fn new(capacity: u64) -> Self {
        Self {
            earliest: AtomicU64::new(NEVER),
            last_sweep: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
            interval_ms: (capacity / 10_000).max(1),
        }
    }

    #[inline]
    fn note(&self, deadline: u64) {
        // A plain load first: most deadlines are later than the earliest one, and a read keeps
        // the cache line shared between cores.
        if deadline < self.earliest.load(Ordering::Relaxed) {
            self.earliest.fetch_min(deadline, Ordering::Relaxed);
        }
    }

    #[inline]
    fn before_insert(
        &self,
        store: &Store,
        settings: &Settings,
        now: Option<u64>,
        removed: &mut Removed,
    ) {
        let earliest = self.earliest.load(Ordering::Relaxed);
        if earliest == NEVER {
            return;
        }
        let now = now.unwrap_or_else(|| settings.timer.now_ms());
        if now < earliest {
            return;
        }
        let last = self.last_sweep.load(Ordering::Relaxed);
        if last != 0 && now < last.saturating_add(self.interval_ms) {
            return;
        }
        if self.sweeping.swap(true, Ordering::Acquire) {
            return;
        }
        self.sweep(store, settings, now, removed);
        self.sweeping.store(false, Ordering::Release);
    }

    #[cold]
    fn sweep(&self, store: &Store, settings: &Settings, now: u64, removed: &mut Removed) {
        // Entries inserted during the sweep lower `earliest` themselves.
        self.earliest.store(NEVER, Ordering::Relaxed);
        let timer = &settings.timer;
        let mut remaining = NEVER;
        let mut gone = Removed::new();
        store.retain(
            |_, e| {
                if e.is_expired_at(timer, now) {
                    false
                } else {
                    remaining = remaining.min(e.end(timer));
                    true
                }
            },
            &mut gone,
            RemovalCause::Expired,
        );
        if settings.listening() {
            removed.append(&mut gone);
        }
        self.note(remaining);
        self.last_sweep.store(now.max(1), Ordering::Relaxed);
    }
}

impl InMemoryEngine {
    /// Removes every expired entry now. The engine also does this by itself before admitting
    /// new entries once a deadline has passed; call it to free memory sooner.
    pub fn remove_expired(&self) {
        let settings = &self.inner.settings;
        let now = settings.timer.now_ms();
        let mut removed = Removed::new();
        self.inner
            .sweeper
            .sweep(&self.inner.store, settings, now, &mut removed);
        settings.notify(removed);
    }

    /// The TTL that [`Ttl::Default`] stands for on this engine.
    pub fn default_ttl(&self) -> Ttl {
        CacheEngine::capabilities(self).default_ttl
    }

    /// How many times the removal listener panicked (each panic is caught).
    pub fn listener_panics(&self) -> u64 {
        self.inner
            .settings
            .listener
            .as_ref()
            .map_or(0, |listener| listener.panics())
    }

    /// The caller's keys of the live entries, a snapshot taken one shard at a time: a write
    /// that runs meanwhile is seen if it reached its shard before the walk did. Reading the
    /// keys does not count as a read of the entries (for eviction or idle time).
    pub fn keys(&self) -> Result<Vec<String>> {
        let inner = self.open()?;
        let mut keys = Vec::new();
        inner
            .store
            .for_each(collect_live(&inner.settings.timer, &mut keys, |key, _| {
                key.to_string()
            }));
        Ok(keys)
    }

    /// The live entries as key and value pairs, a snapshot taken like [`keys`](Self::keys).
    pub fn entries(&self) -> Result<Vec<(String, Bytes)>> {
        let inner = self.open()?;
        let mut entries = Vec::new();
        inner.store.for_each(collect_live(
            &inner.settings.timer,
            &mut entries,
            |key, entry| (key.to_string(), entry.value.clone()),
        ));
        Ok(entries)
    }

    /// Removes every live entry for which `doomed(key, value)` is true and returns how many it
    /// removed (expired entries go too, uncounted). It visits one shard at a time under that
    /// shard's write lock: a write to a shard already visited is kept whatever it stores, and
    /// one to a shard not visited yet is judged with the rest. The removal listener hears of
    /// each as [`RemovalCause::Removed`], after each shard's lock is released.
    pub fn invalidate_if(&self, doomed: impl FnMut(&str, &Bytes) -> bool) -> Result<u64> {
        let inner = self.open()?;
        let mut count = 0;
        let mut removed = Removed::new();
        inner.store.retain(
            keep_unless(&inner.settings.timer, &mut count, doomed),
            &mut removed,
            RemovalCause::Removed,
        );
        inner.settings.notify(removed);
        Ok(count)
    }
}

/// The async face: every operation runs at once when the future is polled (nothing here ever
/// waits on I/O), so it works on any executor, without `spawn_blocking`.
impl NonBlocking for InMemoryEngine {}
