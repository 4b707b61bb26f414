//! The shared store under [`InMemoryEngine`](crate::InMemoryEngine): shards behind
//! reader-writer locks. Reads take a shard's shared lock (a hit only marks its entry); writes
//! take it exclusively and run the eviction policy.

use std::hash::BuildHasher;

use parking_lot::RwLock;

use crate::common::{Entry, EntryWeighter};
use crate::listener::{RemovalCause, Removed};
use crate::shard::{Shard, Update};

/// Keeps each shard's lock on its own cache lines, so that threads on different shards do not
/// slow each other down.
#[repr(align(128))]
struct Padded<T>(T);

pub(crate) struct Store {
    shards: Box<[Padded<RwLock<Shard>>]>,
    hasher: foldhash::fast::RandomState,
    /// `shards - 1`; the count is a power of two.
    mask: usize,
}

impl Store {
    /// `shards` (a power of two) shards of `shard_capacity` in weight and about `shard_entries`
    /// entries each.
    pub(crate) fn new(
        shards: usize,
        shard_capacity: u64,
        shard_entries: u64,
        weighter: EntryWeighter,
    ) -> Self {
        let shards = shards.max(1).next_power_of_two();
        let hasher = foldhash::fast::RandomState::default();
        Self {
            shards: (0..shards)
                .map(|_| {
                    Padded(RwLock::new(Shard::new(
                        shard_capacity,
                        shard_entries,
                        weighter,
                        hasher.clone(),
                    )))
                })
                .collect(),
            hasher,
            mask: shards - 1,
        }
    }

    #[inline]
    fn locate(&self, key: &str) -> (u64, &RwLock<Shard>) {
        let hash = self.hasher.hash_one(key);
        // The table uses the low bits and the top seven; the shard takes bits from the middle.
        let shard = (hash >> 40) as usize & self.mask;
        (hash, &self.shards[shard].0)
    }

    /// Reads the key's entry and, when `mark` is set, counts the read for the policy.
    #[inline]
    pub(crate) fn read<R>(&self, key: &str, mark: bool, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        let (hash, shard) = self.locate(key);
        let shard = shard.read();
        shard.get(hash, key, mark).map(f)
    }

    /// Inserts or replaces the key's entry; returns the entry replaced.
    pub(crate) fn insert(&self, key: &str, entry: Entry, removed: &mut Removed) -> Option<Entry> {
        let (hash, shard) = self.locate(key);
        shard.write().insert(hash, key, entry, removed)
    }

    /// Removes the key's entry.
    pub(crate) fn remove(&self, key: &str) -> Option<Entry> {
        let (hash, shard) = self.locate(key);
        shard.write().remove(hash, key)
    }

    /// Runs `f` on the key's entry under the shard's exclusive lock; see [`Update`].
    pub(crate) fn update<R>(
        &self,
        key: &str,
        removed: &mut Removed,
        f: impl FnOnce(Option<&mut Entry>) -> Update<R>,
    ) -> R {
        let (hash, shard) = self.locate(key);
        shard.write().update(hash, key, removed, f)
    }

    /// Keeps only the entries `keep` accepts, one shard at a time; the others go to `removed`
    /// with `cause`.
    pub(crate) fn retain(
        &self,
        mut keep: impl FnMut(&str, &Entry) -> bool,
        removed: &mut Removed,
        cause: RemovalCause,
    ) {
        for shard in self.shards.iter() {
            shard.0.write().retain(&mut keep, removed, cause);
        }
    }

    /// Calls `f` on every entry, one shard at a time under its shared lock.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&str, &Entry)) {
        for shard in self.shards.iter() {
            for (key, entry) in shard.0.read().iter() {
                f(key, entry);
            }
        }
    }

    /// Removes every entry into `removed`, one shard at a time.
    pub(crate) fn clear(&self, removed: &mut Removed) {
        for shard in self.shards.iter() {
            shard.0.write().clear(removed);
        }
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }

    /// Weight held.
    pub(crate) fn weight(&self) -> u64 {
        self.shards.iter().map(|s| s.0.read().weight()).sum()
    }
}

/// One shard without a lock, for a store that only one thread reaches.
pub(crate) struct Unshared {
    shard: Shard,
    hasher: foldhash::fast::RandomState,
}

impl Unshared {
    /// A store of `capacity` in weight and about `entries` entries.
    pub(crate) fn new(capacity: u64, entries: u64, weighter: EntryWeighter) -> Self {
        let hasher = foldhash::fast::RandomState::default();
        Self {
            shard: Shard::new(capacity, entries, weighter, hasher.clone()),
            hasher,
        }
    }

    /// The key's entry; `mark` counts the read for the policy.
    #[inline]
    pub(crate) fn get(&self, key: &str, mark: bool) -> Option<&Entry> {
        self.shard.get(self.hasher.hash_one(key), key, mark)
    }

    /// Inserts or replaces the key's entry; entries evicted to make room go to `removed`.
    /// Returns the entry it replaced.
    pub(crate) fn insert(
        &mut self,
        key: &str,
        entry: Entry,
        removed: &mut Removed,
    ) -> Option<Entry> {
        let hash = self.hasher.hash_one(key);
        self.shard.insert(hash, key, entry, removed)
    }

    /// Removes the key's entry.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Entry> {
        let hash = self.hasher.hash_one(key);
        self.shard.remove(hash, key)
    }

    /// Runs `f` on the key's entry; see [`Update`].
    pub(crate) fn update<R>(
        &mut self,
        key: &str,
        removed: &mut Removed,
        f: impl FnOnce(Option<&mut Entry>) -> Update<R>,
    ) -> R {
        let hash = self.hasher.hash_one(key);
        self.shard.update(hash, key, removed, f)
    }

    /// Keeps only the entries `keep` accepts; the others go to `removed` with `cause`.
    pub(crate) fn retain(
        &mut self,
        keep: impl FnMut(&str, &Entry) -> bool,
        removed: &mut Removed,
        cause: RemovalCause,
    ) {
        self.shard.retain(keep, removed, cause);
    }

    /// Every key and entry.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.shard.iter()
    }

    /// Removes every entry into `removed`.
    pub(crate) fn clear(&mut self, removed: &mut Removed) {
        self.shard.clear(removed);
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.shard.len()
    }
}
