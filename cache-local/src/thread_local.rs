//! [`ThreadLocalEngine`]: each thread its own entries.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cache_core::clock::Clock;
use cache_core::key::check_key;
use cache_core::{Bytes, CacheEngine, Capabilities, Remaining, Result, Ttl};
use thread_local::ThreadLocal;

use crate::common::{Entry, NEVER, Options, Settings, closed, collect_live, keep_unless};
use crate::listener::{RemovalCause, Removed};
use crate::shard::Update;
use crate::store::Unshared as Store;

const BACKEND: &str = "thread-local";

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
    options: Options,
}

impl fmt::Debug for ThreadLocalEngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("ThreadLocalEngineBuilder");
        self.options.describe(&mut out);
        out.finish()
    }
}

impl ThreadLocalEngineBuilder {
    /// The most entries each thread holds; default 300.
    pub fn max_capacity(mut self, entries: u64) -> Self {
        self.options.max_capacity = Some(entries);
        self
    }

    /// An upper bound on the bytes of keys plus values each thread holds; default none.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.options.max_bytes = Some(bytes);
        self
    }

    /// The TTL that [`Ttl::Default`] stands for; default 300 s.
    pub fn default_ttl(mut self, ttl: impl Into<Ttl>) -> Self {
        self.options.default_ttl = Some(ttl.into());
        self
    }

    /// The clock entries expire by; default the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.options.clock = Some(clock);
        self
    }

    /// Entries not read for this long expire; default none. As
    /// [`InMemoryEngineBuilder::time_to_idle`](crate::InMemoryEngineBuilder::time_to_idle).
    pub fn time_to_idle(mut self, idle: Duration) -> Self {
        self.options.time_to_idle = Some(idle);
        self
    }

    /// Calls `listener` for every entry that leaves a thread's store, on that thread, after the
    /// store is released. As
    /// [`InMemoryEngineBuilder::removal_listener`](crate::InMemoryEngineBuilder::removal_listener);
    /// a thread's entries freed by [`close`](CacheEngine::close) are reported on the closing
    /// thread, and those of a slot another thread takes over on that thread, as
    /// [`RemovalCause::Cleared`].
    pub fn removal_listener(
        mut self,
        listener: impl Fn(&str, &Bytes, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.options.listener = Some(Arc::new(listener));
        self
    }

    /// Builds the engine.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`](cache_core::CacheError::InvalidConfig) as for
    /// [`InMemoryEngineBuilder::build`](crate::InMemoryEngineBuilder::build).
    pub fn build(self) -> Result<ThreadLocalEngine> {
        let settings = Settings::new(BACKEND, self.options, 1)?;
        Ok(ThreadLocalEngine {
            inner: Arc::new(Inner {
                slots: ThreadLocal::new(),
                settings,
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
        self.with_slot(|slot, _| slot.store.len() as u64)
            .unwrap_or(0)
    }

    /// The bytes of keys plus values the calling thread holds, counting expired entries not yet
    /// removed: never more than [`max_bytes`](ThreadLocalEngineBuilder::max_bytes).
    pub fn weighted_bytes(&self) -> u64 {
        self.with_slot(|slot, _| {
            slot.store
                .iter()
                .map(|(k, e)| (k.len() + e.value.len()) as u64)
                .sum()
        })
        .unwrap_or(0)
    }

    /// How many times the removal listener panicked (each panic is caught).
    pub fn listener_panics(&self) -> u64 {
        self.inner
            .settings
            .listener
            .as_ref()
            .map_or(0, |listener| listener.panics())
    }

    /// The keys of the calling thread's live entries (other threads' entries are theirs alone).
    /// A true snapshot: no other thread writes to this thread's store. Reading the keys does
    /// not count as a read of the entries (for eviction or idle time).
    pub fn keys(&self) -> Result<Vec<String>> {
        let timer = &self.inner.settings.timer;
        self.with_slot(|slot, _| {
            let mut keys = Vec::new();
            let mut push = collect_live(timer, &mut keys, |key, _| key.to_string());
            slot.store.iter().for_each(|(key, entry)| push(key, entry));
            drop(push);
            keys
        })
    }

    /// The calling thread's live entries as key and value pairs, a snapshot like
    /// [`keys`](Self::keys).
    pub fn entries(&self) -> Result<Vec<(String, Bytes)>> {
        let timer = &self.inner.settings.timer;
        self.with_slot(|slot, _| {
            let mut entries = Vec::new();
            let mut push = collect_live(timer, &mut entries, |key, entry| {
                (key.to_string(), entry.value.clone())
            });
            slot.store.iter().for_each(|(key, entry)| push(key, entry));
            drop(push);
            entries
        })
    }

    /// Removes every live entry of the calling thread for which `doomed(key, value)` is true
    /// and returns how many it removed (expired entries go too, uncounted); other threads'
    /// entries are left alone. The removal listener hears of each as
    /// [`RemovalCause::Removed`], after the thread's store is released.
    pub fn invalidate_if(&self, doomed: impl FnMut(&str, &Bytes) -> bool) -> Result<u64> {
        let timer = &self.inner.settings.timer;
        self.with_slot(|slot, removed| {
            let mut count = 0;
            slot.store.retain(
                keep_unless(timer, &mut count, doomed),
                removed,
                RemovalCause::Removed,
            );
            count
        })
    }

    /// Runs `f` on the calling thread's slot (emptied first if another thread filled it), then
    /// tells the listener what left, once the slot is released: the listener may use the engine.
    #[inline]
    fn with_slot<R>(&self, f: impl FnOnce(&mut Slot, &mut Removed) -> R) -> Result<R> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(closed(BACKEND));
        }
        let token = thread_token();
        let slot = inner.slots.get_or(|| {
            Mutex::new(Slot {
                owner: token,
                store: new_store(&inner.settings),
                earliest: NEVER,
            })
        });
        let mut removed = Removed::new();
        let result = {
            // Only this thread and `close` ever lock the slot; a panic while holding it leaves
            // entries that are still consistent, so a poisoned lock is taken over.
            let mut slot: MutexGuard<'_, Slot> =
                slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if slot.owner != token {
                slot.store.clear(&mut removed);
                slot.owner = token;
                slot.earliest = NEVER;
            }
            f(&mut slot, &mut removed)
        };
        inner.settings.notify(removed);
        Ok(result)
    }
}

fn new_store(settings: &Settings) -> Store {
    Store::new(
        settings.weight_capacity,
        settings.max_capacity,
        settings.weighter,
    )
}

impl Slot {
    /// The key's value if it is live, counting the read; an expired entry found is removed.
    #[inline]
    fn live(&mut self, key: &str, settings: &Settings, removed: &mut Removed) -> Option<Bytes> {
        let timer = &settings.timer;
        let found = self
            .store
            .get(key, true)
            .map(|e| e.read(timer).then(|| e.value.clone()))?;
        if found.is_none() {
            self.remove(key, settings, removed);
        }
        found
    }

    /// Removes the key's entry; whether a live one was there.
    fn remove(&mut self, key: &str, settings: &Settings, removed: &mut Removed) -> bool {
        let Some(old) = self.store.remove(key) else {
            return false;
        };
        let live = !old.is_expired(&settings.timer);
        if settings.listening() {
            removed.push((key.into(), old, RemovalCause::Removed));
        }
        live
    }

    fn insert(
        &mut self,
        key: &str,
        value: Bytes,
        deadline: Option<u64>,
        settings: &Settings,
        removed: &mut Removed,
    ) {
        let Some(deadline) = deadline else {
            self.remove(key, settings, removed);
            return;
        };
        let timer = &settings.timer;
        if self.earliest != NEVER && timer.now_ms() >= self.earliest {
            self.sweep(settings, removed);
        }
        let idle_end = timer
            .idle
            .map_or(NEVER, |idle| timer.now_ms().saturating_add(idle));
        self.earliest = self.earliest.min(deadline).min(idle_end);
        let entry = Entry::new(value, deadline, timer);
        if let Some(old) = self.store.insert(key, entry, removed) {
            if settings.listening() {
                removed.push((key.into(), old, RemovalCause::Replaced));
            }
        }
    }

    #[cold]
    fn sweep(&mut self, settings: &Settings, removed: &mut Removed) {
        let timer = &settings.timer;
        let now = timer.now_ms();
        let mut earliest = NEVER;
        self.store.retain(
            |_, e| {
                let keep = !e.is_expired_at(timer, now);
                if keep {
                    earliest = earliest.min(e.end(timer));
                }
                keep
            },
            removed,
            RemovalCause::Expired,
        );
        self.earliest = earliest;
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
        let settings = &self.inner.settings;
        self.with_slot(|slot, removed| slot.live(key, settings, removed))
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let settings = &self.inner.settings;
        check_key(key, 0)?;
        settings.check_value(key, &value)?;
        let deadline = settings.deadline(ttl)?;
        self.with_slot(|slot, removed| slot.insert(key, value, deadline, settings, removed))
    }

    fn delete(&self, key: &str) -> Result<bool> {
        check_key(key, 0)?;
        let settings = &self.inner.settings;
        self.with_slot(|slot, removed| slot.remove(key, settings, removed))
    }

    fn delete_if_equals(&self, key: &str, expected: &[u8]) -> Result<bool> {
        check_key(key, 0)?;
        let timer = &self.inner.settings.timer;
        // Only this thread reaches its slot, and the lock is held throughout.
        self.with_slot(|slot, removed| {
            slot.store.update(key, removed, |e| match e {
                Some(e) if e.is_expired(timer) => Update::Remove(false),
                Some(e) if e.value == expected => Update::Remove(true),
                _ => Update::Keep(false),
            })
        })
    }

    fn remaining_ttl(&self, key: &str) -> Result<Option<Remaining>> {
        check_key(key, 0)?;
        let timer = &self.inner.settings.timer;
        self.with_slot(|slot, _| {
            slot.store
                .get(key, false)
                .filter(|e| !e.is_expired(timer))
                .map(|e| e.remaining(timer))
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        check_key(key, 0)?;
        let settings = &self.inner.settings;
        self.with_slot(|slot, removed| {
            let expired = match slot.store.get(key, false) {
                None => return false,
                Some(e) => e.is_expired(&settings.timer),
            };
            if expired {
                slot.remove(key, settings, removed);
            }
            !expired
        })
    }

    fn clear(&self) -> Result<()> {
        self.with_slot(|slot, removed| {
            slot.store.clear(removed);
            slot.earliest = NEVER;
        })
    }

    fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let mut removed = Removed::new();
        for slot in self.inner.slots.iter() {
            let mut slot = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            slot.store.clear(&mut removed);
            slot.earliest = NEVER;
        }
        self.inner.settings.notify(removed);
        Ok(())
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        for key in keys {
            check_key(key, 0)?;
        }
        let settings = &self.inner.settings;
        self.with_slot(|slot, removed| {
            keys.iter()
                .map(|key| slot.live(key, settings, removed))
                .collect()
        })
    }

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let settings = &self.inner.settings;
        for (key, value) in entries {
            check_key(key, 0)?;
            settings.check_value(key, value)?;
        }
        let deadline = settings.deadline(ttl)?;
        self.with_slot(|slot, removed| {
            for (key, value) in entries {
                slot.insert(key, value.clone(), deadline, settings, removed);
            }
        })
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        for key in keys {
            check_key(key, 0)?;
        }
        let settings = &self.inner.settings;
        self.with_slot(|slot, removed| {
            keys.iter()
                .filter(|key| slot.remove(key, settings, removed))
                .count() as u64
        })
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let settings = &self.inner.settings;
        check_key(key, 0)?;
        settings.check_value(key, &value)?;
        let deadline = settings.deadline(ttl)?;
        self.with_slot(|slot, removed| {
            let live = slot
                .store
                .get(key, false)
                .is_some_and(|e| !e.is_expired(&settings.timer));
            if live {
                return false;
            }
            slot.insert(key, value, deadline, settings, removed);
            true
        })
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        let settings = &self.inner.settings;
        check_key(key, 0)?;
        let fresh = settings.deadline(Ttl::Default)?;
        self.with_slot(|slot, removed| {
            if let Some(deadline) = fresh {
                slot.earliest = slot.earliest.min(deadline);
            }
            // Changed in place under the slot's lock; the store re-weighs a counter that grew
            // and evicts to stay within the bounds.
            slot.store
                .update(key, removed, |e| settings.increment(key, delta, fresh, e))
        })?
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let settings = &self.inner.settings;
        check_key(key, 0)?;
        let deadline = settings.deadline(ttl)?;
        self.with_slot(|slot, removed| {
            let timer = &settings.timer;
            match slot.store.get(key, false).map(|e| e.is_expired(timer)) {
                None => return false,
                Some(true) => {
                    slot.remove(key, settings, removed);
                    return false;
                }
                Some(false) => {}
            }
            match deadline {
                None => {
                    slot.remove(key, settings, removed);
                }
                Some(deadline) => {
                    slot.store.update(key, removed, |e| {
                        if let Some(e) = e {
                            e.deadline = deadline;
                        }
                        Update::Keep(())
                    });
                    slot.earliest = slot.earliest.min(deadline);
                }
            }
            true
        })
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.settings.capabilities(false)
    }
}
