//! [`InMemoryEngine`]: one bounded cache shared by every thread.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cache_core::clock::Clock;
use cache_core::counter::{apply_increment, format_counter};
use cache_core::key::check_key;
use cache_core::{Bytes, CacheEngine, Capabilities, NonBlocking, Remaining, Result, Ttl};
use quick_cache::DefaultHashBuilder;
use quick_cache::sync::{Cache, DefaultLifecycle, EntryAction, EntryResult};

use crate::common::{DEFAULT_MAX_CAPACITY, Entry, EntryWeighter, NEVER, Settings, closed};

const BACKEND: &str = "in-memory";

type Store =
    Cache<String, Entry, EntryWeighter, DefaultHashBuilder, DefaultLifecycle<String, Entry>>;

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
/// many bytes of keys plus values. When full, it evicts by the S3-FIFO-like CLOCK-Pro policy of
/// [`quick_cache`]: new entries start cold and are evicted first unless they are read again, so a
/// scan of one-off keys does not flush the hot set. On skewed workloads its hit ratio is close to
/// the ideal and above LRU's (see `docs/DESIGN.md` for the measurements).
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
    max_capacity: Option<u64>,
    max_bytes: Option<u64>,
    default_ttl: Option<Ttl>,
    clock: Option<Arc<dyn Clock>>,
    shards: Option<usize>,
}

impl fmt::Debug for InMemoryEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryEngineBuilder")
            .field("max_capacity", &self.max_capacity)
            .field("max_bytes", &self.max_bytes)
            .field("default_ttl", &self.default_ttl)
            .field("clock", &self.clock)
            .field("shards", &self.shards)
            .finish()
    }
}

impl InMemoryEngineBuilder {
    /// The most entries the engine holds; default 300.
    pub fn max_capacity(mut self, entries: u64) -> Self {
        self.max_capacity = Some(entries);
        self
    }

    /// An upper bound on the bytes of keys plus values held; default none.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The TTL that [`Ttl::Default`] stands for; default 300 s. `Ttl::Never` is allowed.
    pub fn default_ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.default_ttl = Some(ttl.into());
        self
    }

    /// The clock entries expire by; default the system clock. Tests pass a
    /// [`ManualClock`](cache_core::clock::ManualClock) to move time by hand.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The number of independently locked shards, rounded to a power of two; default four per
    /// core, fewer for small capacities (each shard holds at least 32 entries).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Builds the engine.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`](cache_core::CacheError::InvalidConfig) for a zero capacity, a
    /// zero or too long default TTL, or a byte bound too small to hold a key and a value.
    pub fn build(self) -> Result<InMemoryEngine> {
        let max_capacity = self.max_capacity.unwrap_or(DEFAULT_MAX_CAPACITY);
        let shards = self
            .shards
            .unwrap_or_else(|| default_shards(max_capacity))
            .max(1)
            .next_power_of_two();
        let settings = Settings::new(
            BACKEND,
            max_capacity,
            self.max_bytes,
            self.default_ttl.unwrap_or(Ttl::Default),
            self.clock,
            shards,
        )?;
        let store = Store::with_options(
            settings.options()?,
            settings.weighter,
            DefaultHashBuilder::default(),
            DefaultLifecycle::default(),
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

fn default_shards(capacity: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shards = (cores * 4).next_power_of_two();
    while shards > 1 && capacity / (shards as u64) < 32 {
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
        self.inner
            .store
            .iter()
            .map(|(k, e)| (k.len() + e.value.len()) as u64)
            .sum()
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
    #[inline]
    fn live(&self, key: &str, entry: Entry) -> Option<Bytes> {
        if entry.is_expired(&self.settings.timer) {
            let deadline = entry.deadline;
            self.store.remove_if(key, |e| e.deadline == deadline);
            None
        } else {
            Some(entry.value)
        }
    }

    fn insert(&self, key: &str, value: Bytes, deadline: Option<u64>, now: Option<u64>) {
        match deadline {
            None => {
                self.store.remove(key);
            }
            Some(deadline) => {
                self.sweeper.before_insert(&self.store, &self.settings, now);
                self.sweeper.note(deadline);
                self.store.insert(key.into(), Entry { value, deadline });
            }
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
        Ok(inner.store.get(key).and_then(|e| inner.live(key, e)))
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
        Ok(inner
            .store
            .remove(key)
            .is_some_and(|(_, e)| !e.is_expired(&inner.settings.timer)))
    }

    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let timer = &inner.settings.timer;
        // The test and the removal run under the shard's write lock, so no write can come
        // between them. The decision is taken once, inside: reading the clock again afterwards
        // could call a live entry that was just removed expired.
        let mut removed_live = false;
        inner.store.remove_if(key, |e| {
            if e.is_expired(timer) {
                // Absent either way; dropping it frees its room.
                return true;
            }
            removed_live = e.value == expected;
            removed_live
        });
        Ok(removed_live)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let inner = self.open()?;
        check_key(key, 0)?;
        Ok(inner
            .store
            .peek(key)
            .and_then(|e| inner.live(key, e))
            .is_some())
    }

    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let timer = &inner.settings.timer;
        Ok(inner
            .store
            .peek(key)
            .filter(|e| !e.is_expired(timer))
            .map(|e| e.remaining(timer)))
    }

    fn get_with_ttl(&self, key: &str) -> Result<Option<(Bytes, Remaining)>> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let timer = &inner.settings.timer;
        Ok(inner.store.get(key).and_then(|e| {
            let left = e.remaining(timer);
            inner.live(key, e).map(|value| (value, left))
        }))
    }

    fn clear(&self) -> Result<()> {
        self.open()?.store.clear();
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.store.clear();
        Ok(())
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let inner = self.open()?;
        for key in keys {
            check_key(key, 0)?;
        }
        Ok(keys
            .iter()
            .map(|key| inner.store.get(*key).and_then(|e| inner.live(key, e)))
            .collect())
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
        let timer = &inner.settings.timer;
        Ok(keys
            .iter()
            .filter(|key| {
                inner
                    .store
                    .remove(**key)
                    .is_some_and(|(_, e)| !e.is_expired(timer))
            })
            .count() as u64)
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let inner = self.open()?;
        let (deadline, _) = self.checked_entry(key, &value, ttl)?;
        let timer = &inner.settings.timer;
        loop {
            let result = inner.store.entry(key, None, |_, e| {
                if e.is_expired(timer) {
                    EntryAction::ReplaceWithGuard
                } else {
                    EntryAction::Retain(())
                }
            });
            let guard = match result {
                EntryResult::Retained(()) => return Ok(false),
                EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _) => guard,
                EntryResult::Removed(..) | EntryResult::Timeout => continue,
            };
            let Some(deadline) = deadline else {
                // A zero TTL stores nothing, but the key was free: report it as added.
                drop(guard);
                return Ok(true);
            };
            inner.sweeper.note(deadline);
            // The insert fails only if a concurrent set or delete replaced our placeholder:
            // then the key is taken again and we look once more.
            if guard
                .insert(Entry {
                    value: value.clone(),
                    deadline,
                })
                .is_ok()
            {
                return Ok(true);
            }
        }
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let settings = &inner.settings;
        loop {
            // A counter that grows (`9` to `10`) is re-inserted through a placeholder instead of
            // being changed in place: quick_cache re-weighs an entry changed in place but evicts
            // nothing for it, so in-place growth could break the byte bound.
            let mut grown = None;
            let result = inner.store.entry(key, None, |_, e| {
                if e.is_expired(&settings.timer) {
                    return EntryAction::ReplaceWithGuard;
                }
                let next = match apply_increment(key, Some(&e.value), delta) {
                    Ok(n) => n,
                    Err(err) => return EntryAction::Retain(Err(err)),
                };
                let value = format_counter(next);
                if value.len() <= e.value.len() {
                    e.value = value;
                    return EntryAction::Retain(Ok(next));
                }
                if let Err(err) = settings.check_value(key, &value) {
                    return EntryAction::Retain(Err(err));
                }
                grown = Some((next, value));
                EntryAction::ReplaceWithGuard
            });
            let (guard, entry, outcome) = match (result, grown) {
                (EntryResult::Retained(outcome), _) => return outcome,
                (EntryResult::Replaced(guard, old), Some((next, value))) => {
                    let entry = Entry {
                        value,
                        deadline: old.deadline,
                    };
                    (guard, entry, next)
                }
                (EntryResult::Vacant(guard) | EntryResult::Replaced(guard, _), _) => {
                    let Some(deadline) = inner.default_deadline()? else {
                        return Ok(delta);
                    };
                    let value = format_counter(delta);
                    settings.check_value(key, &value)?;
                    inner.sweeper.note(deadline);
                    (guard, Entry { value, deadline }, delta)
                }
                (EntryResult::Removed(..) | EntryResult::Timeout, _) => continue,
            };
            // The insert fails only if a concurrent set or delete replaced our placeholder: the
            // counter was not changed, so look again.
            if guard.insert(entry).is_ok() {
                return Ok(outcome);
            }
        }
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let inner = self.open()?;
        check_key(key, 0)?;
        let deadline = inner.settings.deadline(ttl)?;
        let timer = &inner.settings.timer;
        let result = inner.store.entry(key, None, |_, e| {
            if e.is_expired(timer) {
                return EntryAction::Remove;
            }
            match deadline {
                None => EntryAction::Remove,
                Some(deadline) => {
                    e.deadline = deadline;
                    EntryAction::Retain(())
                }
            }
        });
        Ok(match result {
            EntryResult::Retained(()) => {
                if let Some(deadline) = deadline {
                    inner.sweeper.note(deadline);
                }
                true
            }
            EntryResult::Removed(_, e) => !e.is_expired(timer),
            // Dropping the guard releases the placeholder: the key stays absent.
            EntryResult::Vacant(_) | EntryResult::Replaced(..) | EntryResult::Timeout => false,
        })
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.settings.capabilities(true)
    }
}

/// Removes expired entries before new ones are admitted, once the earliest deadline has passed.
struct Sweeper {
    /// A lower bound of the deadlines of stored entries; `NEVER` when none expires.
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
    fn before_insert(&self, store: &Store, settings: &Settings, now: Option<u64>) {
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
        self.sweep(store, now);
        self.sweeping.store(false, Ordering::Release);
    }

    #[cold]
    fn sweep(&self, store: &Store, now: u64) {
        // Entries inserted during the sweep lower `earliest` themselves.
        self.earliest.store(NEVER, Ordering::Relaxed);
        let remaining = Cell::new(NEVER);
        store.retain(|_, e| {
            if e.deadline != NEVER && now >= e.deadline {
                false
            } else {
                remaining.set(remaining.get().min(e.deadline));
                true
            }
        });
        self.note(remaining.get());
        self.last_sweep.store(now.max(1), Ordering::Relaxed);
    }
}

impl InMemoryEngine {
    /// Removes every expired entry now. The engine also does this by itself before admitting
    /// new entries once a deadline has passed; call it to free memory sooner.
    pub fn remove_expired(&self) {
        let now = self.inner.settings.timer.now_ms();
        self.inner.sweeper.sweep(&self.inner.store, now);
    }

    /// The TTL that [`Ttl::Default`] stands for on this engine.
    pub fn default_ttl(&self) -> Ttl {
        CacheEngine::capabilities(self).default_ttl
    }
}

/// The async face: every operation runs at once when the future is polled (nothing here ever
/// waits on I/O), so it works on any executor, without `spawn_blocking`.
impl NonBlocking for InMemoryEngine {}
