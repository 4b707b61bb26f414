//! [`ThreadLocalEngine`]: each thread its own entries.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cache_core::clock::Clock;
use cache_core::counter::{apply_increment, format_counter};
use cache_core::key::check_key;
use cache_core::{Bytes, CacheEngine, Capabilities, Remaining, Result, Ttl};
use quick_cache::DefaultHashBuilder;
use quick_cache::unsync::Cache;
use thread_local::ThreadLocal;

use crate::common::{DEFAULT_MAX_CAPACITY, Entry, EntryWeighter, NEVER, Settings, closed};

const BACKEND: &str = "thread-local";

type Store = Cache<String, Entry, EntryWeighter, DefaultHashBuilder>;

/// A cache in which each thread sees only the entries it wrote itself.
///
/// The handle is `Send + Sync` and cheap to clone: share it across threads, and each thread gets
/// its own private, bounded store (the bound applies per thread). There is no locking between
/// threads on the hot path; use it for per-thread memoisation where sharing is not wanted.
///
/// - Same TTL rules, clock, key rule and eviction policy as
///   [`InMemoryEngine`](crate::InMemoryEngine).
/// - [`clear`](CacheEngine::clear) clears **the calling thread's** entries only.
/// - [`close`](CacheEngine::close) frees every thread's entries and closes the engine for all.
/// - An entry is never visible to another thread, including a new thread that takes over an
///   exited thread's slot: every slot remembers the thread that filled it and is emptied when
///   another thread takes it over. An exited thread's entries stay in memory until its slot is
///   reused or the engine is dropped.
/// - Dropping the last handle frees every thread's entries; two engines never see each other's
///   entries.
///
/// ```
/// use cache_core::{Bytes, CacheEngine, Ttl};
/// use cache_local::ThreadLocalEngine;
///
/// # fn main() -> cache_core::Result<()> {
/// let cache = ThreadLocalEngine::new();
/// cache.set("scratch", Bytes::from_static(b"mine"), Ttl::Default)?;
/// let other = cache.clone();
/// let seen = std::thread::spawn(move || other.get("scratch")).join().unwrap()?;
/// assert_eq!(seen, None); // another thread has its own entries
/// assert!(cache.get("scratch")?.is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ThreadLocalEngine {
    inner: Arc<Inner>,
}

struct Inner {
    slots: ThreadLocal<Mutex<Slot>>,
    settings: Settings,
    options: quick_cache::Options,
    closed: AtomicBool,
}

struct Slot {
    /// The thread that filled this slot (see [`thread_token`]).
    owner: u64,
    store: Store,
    earliest: u64,
}

/// A number that identifies the current thread for the whole life of the process. Unlike
/// `thread_local`'s thread ids, it is never reused by a later thread.
fn thread_token() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    std::thread_local! {
        static TOKEN: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    TOKEN.with(|t| *t)
}

/// Builds a [`ThreadLocalEngine`]; every setter has a default.
#[must_use]
#[derive(Default)]
pub struct ThreadLocalEngineBuilder {
    max_capacity: Option<u64>,
    max_bytes: Option<u64>,
    default_ttl: Option<Ttl>,
    clock: Option<Arc<dyn Clock>>,
}

impl fmt::Debug for ThreadLocalEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadLocalEngineBuilder")
            .field("max_capacity", &self.max_capacity)
            .field("max_bytes", &self.max_bytes)
            .field("default_ttl", &self.default_ttl)
            .field("clock", &self.clock)
            .finish()
    }
}

impl ThreadLocalEngineBuilder {
    /// The most entries each thread holds; default 300.
    pub fn max_capacity(mut self, entries: u64) -> Self {
        self.max_capacity = Some(entries);
        self
    }

    /// An upper bound on the bytes of keys plus values each thread holds; default none.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The TTL that [`Ttl::Default`] stands for; default 300 s.
    pub fn default_ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.default_ttl = Some(ttl.into());
        self
    }

    /// The clock entries expire by; default the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the engine.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`](cache_core::CacheError::InvalidConfig) as for
    /// [`InMemoryEngineBuilder::build`](crate::InMemoryEngineBuilder::build).
    pub fn build(self) -> Result<ThreadLocalEngine> {
        let settings = Settings::new(
            BACKEND,
            self.max_capacity.unwrap_or(DEFAULT_MAX_CAPACITY),
            self.max_bytes,
            self.default_ttl.unwrap_or(Ttl::Default),
            self.clock,
            1,
        )?;
        let options = settings.options()?;
        Ok(ThreadLocalEngine {
            inner: Arc::new(Inner {
                slots: ThreadLocal::new(),
                settings,
                options,
                closed: AtomicBool::new(false),
            }),
        })
    }
}

impl ThreadLocalEngine {
    /// An engine with the defaults: 300 entries per thread, no byte bound, 300 s default TTL.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// A builder to set the bounds, the default TTL and the clock.
    pub fn builder() -> ThreadLocalEngineBuilder {
        ThreadLocalEngineBuilder::default()
    }

    /// How many entries the calling thread holds, counting expired ones not yet removed.
    pub fn entry_count(&self) -> u64 {
        self.slot().map_or(0, |slot| slot.store.len() as u64)
    }

    /// The bytes of keys plus values the calling thread holds, counting expired entries not yet
    /// removed: never more than [`max_bytes`](ThreadLocalEngineBuilder::max_bytes).
    pub fn weighted_bytes(&self) -> u64 {
        self.slot().map_or(0, |slot| {
            slot.store
                .iter()
                .map(|(k, e)| (k.len() + e.value.len()) as u64)
                .sum()
        })
    }

    /// The calling thread's slot, emptied first if another thread filled it.
    #[inline]
    fn slot(&self) -> Result<MutexGuard<'_, Slot>> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(closed(BACKEND));
        }
        let token = thread_token();
        let slot = inner.slots.get_or(|| {
            Mutex::new(Slot {
                owner: token,
                store: new_store(&inner.settings, &inner.options),
                earliest: NEVER,
            })
        });
        // Only this thread and `close` ever lock the slot; a panic while holding it leaves
        // entries that are still consistent, so a poisoned lock is taken over.
        let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.owner != token {
            slot.store.clear();
            slot.owner = token;
            slot.earliest = NEVER;
        }
        Ok(slot)
    }
}

fn new_store(settings: &Settings, options: &quick_cache::Options) -> Store {
    Store::with_options(
        options.clone(),
        settings.weighter,
        DefaultHashBuilder::default(),
        Default::default(),
    )
}

impl Slot {
    #[inline]
    fn live(&mut self, key: &str, settings: &Settings) -> Option<Bytes> {
        let entry = self.store.get(key)?;
        if entry.is_expired(&settings.timer) {
            self.store.remove(key);
            None
        } else {
            Some(entry.value.clone())
        }
    }

    fn insert(&mut self, key: &str, value: Bytes, deadline: Option<u64>, settings: &Settings) {
        let Some(deadline) = deadline else {
            self.store.remove(key);
            return;
        };
        if self.earliest != NEVER && settings.timer.now_ms() >= self.earliest {
            self.sweep(settings);
        }
        self.earliest = self.earliest.min(deadline);
        self.store.insert(key.into(), Entry { value, deadline });
    }

    #[cold]
    fn sweep(&mut self, settings: &Settings) {
        let now = settings.timer.now_ms();
        let earliest = std::cell::Cell::new(NEVER);
        self.store.retain(|_, e| {
            let keep = e.deadline == NEVER || now < e.deadline;
            if keep {
                earliest.set(earliest.get().min(e.deadline));
            }
            keep
        });
        self.earliest = earliest.get();
    }

    fn remove_live(&mut self, key: &str, settings: &Settings) -> bool {
        self.store
            .remove(key)
            .is_some_and(|(_, e)| !e.is_expired(&settings.timer))
    }
}

impl Default for ThreadLocalEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ThreadLocalEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.settings;
        f.debug_struct("ThreadLocalEngine")
            .field("max_capacity_per_thread", &s.max_capacity)
            .field("max_bytes_per_thread", &s.max_bytes)
            .field("default_ttl", &s.default_ttl)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl CacheEngine for ThreadLocalEngine {
    #[inline]
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        check_key(key, 0)?;
        let mut slot = self.slot()?;
        Ok(slot.live(key, &self.inner.settings))
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let settings = &self.inner.settings;
        check_key(key, 0)?;
        settings.check_value(key, &value)?;
        let deadline = settings.deadline(ttl)?;
        self.slot()?.insert(key, value, deadline, settings);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        check_key(key, 0)?;
        Ok(self.slot()?.remove_live(key, &self.inner.settings))
    }

    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        check_key(key, 0)?;
        let timer = &self.inner.settings.timer;
        // Only this thread reaches its slot, and the lock is held throughout.
        let mut removed_live = false;
        self.slot()?.store.remove_if(key, |e| {
            if e.is_expired(timer) {
                return true;
            }
            removed_live = e.value == expected;
            removed_live
        });
        Ok(removed_live)
    }

    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        check_key(key, 0)?;
        let settings = &self.inner.settings;
        let slot = self.slot()?;
        Ok(slot
            .store
            .peek(key)
            .filter(|e| !e.is_expired(&settings.timer))
            .map(|e| e.remaining(&settings.timer)))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key(key, 0)?;
        let settings = &self.inner.settings;
        let mut slot = self.slot()?;
        let expired = match slot.store.peek(key) {
            None => return Ok(false),
            Some(e) => e.is_expired(&settings.timer),
        };
        if expired {
            slot.store.remove(key);
        }
        Ok(!expired)
    }

    fn clear(&self) -> Result<()> {
        let mut slot = self.slot()?;
        slot.store.clear();
        slot.earliest = NEVER;
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        for slot in self.inner.slots.iter() {
            let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slot.store.clear();
            slot.earliest = NEVER;
        }
        Ok(())
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        for key in keys {
            check_key(key, 0)?;
        }
        let mut slot = self.slot()?;
        Ok(keys
            .iter()
            .map(|key| slot.live(key, &self.inner.settings))
            .collect())
    }

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let settings = &self.inner.settings;
        for (key, value) in entries {
            check_key(key, 0)?;
            settings.check_value(key, value)?;
        }
        let deadline = settings.deadline(ttl)?;
        let mut slot = self.slot()?;
        for (key, value) in entries {
            slot.insert(key, value.clone(), deadline, settings);
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        for key in keys {
            check_key(key, 0)?;
        }
        let mut slot = self.slot()?;
        Ok(keys
            .iter()
            .filter(|key| slot.remove_live(key, &self.inner.settings))
            .count() as u64)
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let settings = &self.inner.settings;
        check_key(key, 0)?;
        settings.check_value(key, &value)?;
        let deadline = settings.deadline(ttl)?;
        let mut slot = self.slot()?;
        if slot.live(key, settings).is_some() {
            return Ok(false);
        }
        slot.insert(key, value, deadline, settings);
        Ok(true)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let settings = &self.inner.settings;
        check_key(key, 0)?;
        let mut slot = self.slot()?;
        let current = slot.live(key, settings);
        let next = apply_increment(key, current.as_deref(), delta)?;
        let value = format_counter(next);
        settings.check_value(key, &value)?;
        // Re-inserted rather than changed in place, so that growth goes through the bounds.
        let deadline = match slot.store.peek(key) {
            Some(entry) if current.is_some() => Some(entry.deadline),
            _ => settings.deadline(Ttl::Default)?,
        };
        slot.insert(key, value, deadline, settings);
        Ok(next)
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let settings = &self.inner.settings;
        check_key(key, 0)?;
        let deadline = settings.deadline(ttl)?;
        let mut slot = self.slot()?;
        if slot.live(key, settings).is_none() {
            return Ok(false);
        }
        match deadline {
            None => {
                slot.store.remove(key);
            }
            Some(deadline) => {
                if let Some(mut entry) = slot.store.peek_mut(key) {
                    entry.deadline = deadline;
                }
                slot.earliest = slot.earliest.min(deadline);
            }
        }
        Ok(true)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.settings.capabilities(false)
    }
}
