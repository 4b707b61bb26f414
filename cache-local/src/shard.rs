//! One shard of a local store: a hash table of entries and the eviction policy that bounds it.
//!
//! The policy is W-TinyLFU (Einziger, Eytan, Friedman and Manes, "TinyLFU: A Highly Efficient
//! Cache Admission Policy", 2017) with CLOCK queues in place of LRU lists, so that a hit never
//! moves an entry and runs under a shared lock, and with the window sized the way ARC sizes its
//! lists (Megiddo and Modha, FAST 2003), from the misses on recently evicted keys:
//!
//! - New entries enter the **window**. Over its share of the capacity, the window's oldest entry
//!   leaves it: straight into the main area if it was read meanwhile; else, when the shard is
//!   full, it is judged against the main area's **victim** and the one requested less often
//!   lately, by the frequency [sketch](crate::sketch), is evicted. So one-off keys cannot push
//!   popular ones out, while a new key that is requested again gets in.
//! - The main area is **probation** (entries not read since they arrived) and **protected** (60 %
//!   of it at first). The victim is the oldest probation entry not read since it got there; read
//!   ones move to protected as the hand passes them, and protected entries over their share go
//!   back to probation once their reads are used up.
//! - Keys evicted from the window and from the main area are remembered (hashes only, an eighth
//!   of the capacity each). A miss on a key the window dropped says recency would have kept it:
//!   the window grows. A miss on a key the main area dropped says frequency would have: the
//!   window shrinks. On recency-heavy workloads the window grows towards an LRU; on
//!   frequency-heavy ones it shrinks towards an LFU. A returning key that the sketch already
//!   ranks above the main area's next victim does not grow the window: admission lets it in.
//!
//! Reads mark their entry (a saturating count of 0-3) and, until the mark is full, count
//! themselves in the sketch; only
//! writes, under the exclusive lock, move entries.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU8, Ordering};

use hashbrown::HashTable;

use crate::common::{Entry, EntryWeighter};
use crate::listener::{RemovalCause, Removed};
use crate::sketch::Sketch;

/// No node: the end of a queue.
const NIL: u32 = u32::MAX;
/// The largest mark reads leave on an entry.
const MAX_REFS: u8 = 3;
/// The protected share of the main area at first (Caffeine uses 80 %; on the P3 and P6 traces
/// 60 % keeps more room for entries on probation and did better, costing nothing measurable
/// elsewhere).
const PROTECTED: f64 = 0.6;
/// The window's share at first.
const INITIAL_WINDOW: f64 = 0.01;
/// Each list of evicted keys holds this share of the capacity.
const GHOSTS: f64 = 0.125;
/// The most entries one resizing of the window moves; the rest waits for the next.
const MOVES: usize = 1000;
/// A candidate requested at least this often is admitted against a more frequent victim one
/// time in 128, so that an attacker cannot keep a victim in place by colliding in the sketch.
const ADMIT_FLOOR: u8 = 6;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Queue {
    Window = 0,
    Probation = 1,
    Protected = 2,
}

pub(crate) struct Node {
    pub(crate) key: Box<str>,
    pub(crate) entry: Entry,
    prev: u32,
    next: u32,
    queue: Queue,
    refs: AtomicU8,
}

impl Node {
    fn refs(&self) -> u8 {
        self.refs.load(Ordering::Relaxed)
    }

    fn set_refs(&self, refs: u8) {
        self.refs.store(refs, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy)]
struct Links {
    head: u32,
    tail: u32,
    weight: u64,
}

const EMPTY: Links = Links {
    head: NIL,
    tail: NIL,
    weight: 0,
};

/// What [`Shard::update`] does with the key's entry.
pub(crate) enum Update<R> {
    /// Leave it as the closure left it (changed in place, or absent).
    Keep(R),
    /// Remove it.
    Remove(R),
    /// Store this entry in its place.
    Put(Entry, R),
}

/// Recently evicted keys, by hash, oldest first out.
struct Ghosts {
    order: VecDeque<(u64, u32)>,
    members: HashTable<(u64, u32)>,
    capacity: usize,
    stamp: u32,
}

impl Ghosts {
    fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::new(),
            members: HashTable::new(),
            capacity: capacity.max(1),
            stamp: 0,
        }
    }

    fn len(&self) -> usize {
        self.members.len()
    }

    fn add(&mut self, hash: u64) {
        self.stamp = self.stamp.wrapping_add(1);
        let stamp = self.stamp;
        match self.members.entry(hash, |m| m.0 == hash, |m| m.0) {
            hashbrown::hash_table::Entry::Occupied(mut found) => found.get_mut().1 = stamp,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert((hash, stamp));
            }
        }
        self.order.push_back((hash, stamp));
        // Entries taken out early stay in `order` until they reach its front.
        while self.members.len() > self.capacity || self.order.len() > 2 * self.capacity {
            let Some((old, old_stamp)) = self.order.pop_front() else {
                break;
            };
            if let Ok(found) = self
                .members
                .find_entry(old, |m| m.0 == old && m.1 == old_stamp)
            {
                found.remove();
            }
        }
    }

    /// Whether the key was here; it is forgotten.
    fn take(&mut self, hash: u64) -> bool {
        match self.members.find_entry(hash, |m| m.0 == hash) {
            Ok(found) => {
                found.remove();
                true
            }
            Err(_) => false,
        }
    }

    fn clear(&mut self) {
        self.order.clear();
        self.members.clear();
    }
}

pub(crate) struct Shard {
    /// The store's hasher: a node's hash is computed again from its key when needed rather
    /// than kept in every node (8 bytes per entry; hashing a short key takes a few nanoseconds,
    /// and only writes need it).
    hasher: foldhash::fast::RandomState,
    table: HashTable<u32>,
    nodes: Vec<Option<Node>>,
    sketch: Sketch,
    free: Vec<u32>,
    queues: [Links; 3],
    /// The most the shard holds, in weight.
    capacity: u64,
    /// The weight of one entry's share of the capacity: what the window grows or shrinks by.
    unit: u64,
    window_target: u64,
    protected_target: u64,
    weighter: EntryWeighter,
    window_ghosts: Ghosts,
    main_ghosts: Ghosts,
    /// Resizing owed to the window, in entries, not yet a whole one.
    owed: f64,
    /// A xorshift state for the rare random admission.
    random: u64,
}

impl Shard {
    /// A shard holding at most `capacity` in weight, about `entries` entries.
    pub(crate) fn new(
        capacity: u64,
        entries: u64,
        weighter: EntryWeighter,
        hasher: foldhash::fast::RandomState,
    ) -> Self {
        let entries = entries.max(1);
        let unit = (capacity / entries).max(1);
        let window = (capacity - (capacity as f64 * (1.0 - INITIAL_WINDOW)) as u64).max(unit);
        let window = window.min(capacity);
        let ghosts = (entries as f64 * GHOSTS) as usize;
        Self {
            hasher,
            table: HashTable::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            queues: [EMPTY; 3],
            capacity,
            unit,
            window_target: window,
            protected_target: ((capacity - window) as f64 * PROTECTED) as u64,
            weighter,
            sketch: Sketch::new(usize::try_from(entries).unwrap_or(usize::MAX)),
            window_ghosts: Ghosts::new(ghosts),
            main_ghosts: Ghosts::new(ghosts),
            owed: 0.0,
            random: 0x2545_f491_4f6c_dd1d ^ entries,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The weight held.
    pub(crate) fn weight(&self) -> u64 {
        self.queues.iter().map(|q| q.weight).sum()
    }

    #[inline]
    fn node(&self, idx: u32) -> &Node {
        match &self.nodes[idx as usize] {
            Some(node) => node,
            None => unreachable!("a linked or indexed slot holds a node"),
        }
    }

    #[inline]
    fn node_mut(&mut self, idx: u32) -> &mut Node {
        match &mut self.nodes[idx as usize] {
            Some(node) => node,
            None => unreachable!("a linked or indexed slot holds a node"),
        }
    }

    /// The hash of a node's key, as the store computed it.
    #[inline]
    fn hash_of(&self, idx: u32) -> u64 {
        self.hasher.hash_one(&*self.node(idx).key)
    }

    #[inline]
    fn weigh(&self, idx: u32) -> u64 {
        let node = self.node(idx);
        self.weighter.weigh(node.key.len(), node.entry.value.len())
    }

    #[inline]
    fn find(&self, hash: u64, key: &str) -> Option<u32> {
        let nodes = &self.nodes;
        self.table
            .find(hash, |&i| {
                nodes[i as usize].as_ref().is_some_and(|n| &*n.key == key)
            })
            .copied()
    }

    /// The key's entry, under a shared lock; `mark` counts the read for the policy.
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &str, mark: bool) -> Option<&Entry> {
        let nodes = &self.nodes;
        let node = self
            .table
            .find(hash, |&i| {
                nodes[i as usize].as_ref().is_some_and(|n| &*n.key == key)
            })
            .and_then(|&i| nodes[i as usize].as_ref())?;
        if mark {
            // Racing readers may lose a mark: it only undercounts a read. Once an entry's mark
            // is full, further reads are not counted until the hand passes it: a hot entry's
            // hits then cost no writes at all, and its count in the sketch is high already.
            let refs = node.refs();
            if refs < MAX_REFS {
                node.set_refs(refs + 1);
                self.sketch.increment(hash);
            }
        }
        Some(&node.entry)
    }

    fn push_back(&mut self, idx: u32, queue: Queue) {
        let weight = self.weigh(idx);
        let tail = self.queues[queue as usize].tail;
        {
            let node = self.node_mut(idx);
            node.queue = queue;
            node.prev = tail;
            node.next = NIL;
        }
        if tail == NIL {
            self.queues[queue as usize].head = idx;
        } else {
            self.node_mut(tail).next = idx;
        }
        let links = &mut self.queues[queue as usize];
        links.tail = idx;
        links.weight += weight;
    }

    fn unlink(&mut self, idx: u32) {
        let weight = self.weigh(idx);
        let (queue, prev, next) = {
            let node = self.node(idx);
            (node.queue as usize, node.prev, node.next)
        };
        if prev == NIL {
            self.queues[queue].head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.queues[queue].tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
        self.queues[queue].weight -= weight;
    }

    fn move_to(&mut self, idx: u32, queue: Queue) {
        self.unlink(idx);
        self.push_back(idx, queue);
    }

    /// Accounts for a change of the node's weight from `before` to its weight now.
    fn reweigh(&mut self, idx: u32, before: u64) {
        let after = self.weigh(idx);
        let links = &mut self.queues[self.node(idx).queue as usize];
        links.weight = links.weight - before + after;
    }

    /// Takes the node out of the table and the queues.
    fn detach(&mut self, idx: u32) -> Node {
        self.detach_hashed(idx).1
    }

    /// Takes the node out of the table and the queues, with its key's hash.
    fn detach_hashed(&mut self, idx: u32) -> (u64, Node) {
        self.unlink(idx);
        let hash = self.hash_of(idx);
        if let Ok(found) = self.table.find_entry(hash, |&i| i == idx) {
            found.remove();
        }
        self.free.push(idx);
        match self.nodes[idx as usize].take() {
            Some(node) => (hash, node),
            None => unreachable!("a linked slot holds a node"),
        }
    }

    /// Inserts or replaces the key's entry; entries evicted to make room go to `removed`.
    /// Returns the entry it replaced.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: &str,
        entry: Entry,
        removed: &mut Removed,
    ) -> Option<Entry> {
        if let Some(idx) = self.find(hash, key) {
            let old = self.replace(idx, entry);
            self.evict(removed);
            return Some(old);
        }
        self.sketch.increment(hash);
        self.learn(hash);
        let node = Node {
            key: key.into(),
            entry,
            prev: NIL,
            next: NIL,
            queue: Queue::Window,
            refs: AtomicU8::new(0),
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.nodes[idx as usize] = Some(node);
                idx
            }
            None => {
                self.nodes.push(Some(node));
                u32::try_from(self.nodes.len() - 1).unwrap_or(NIL - 1)
            }
        };
        let (nodes, hasher) = (&self.nodes, &self.hasher);
        self.table.insert_unique(hash, idx, |&i| {
            nodes[i as usize]
                .as_ref()
                .map_or(0, |n| hasher.hash_one(&*n.key))
        });
        self.push_back(idx, Queue::Window);
        self.evict(removed);
        None
    }

    /// Swaps the node's entry, keeping its place; an overwrite counts as a read.
    fn replace(&mut self, idx: u32, entry: Entry) -> Entry {
        let before = self.weigh(idx);
        let node = self.node_mut(idx);
        let refs = node.refs();
        node.set_refs((refs + 1).min(MAX_REFS));
        let old = std::mem::replace(&mut node.entry, entry);
        self.reweigh(idx, before);
        old
    }

    /// Removes the key's entry.
    pub(crate) fn remove(&mut self, hash: u64, key: &str) -> Option<Entry> {
        let idx = self.find(hash, key)?;
        Some(self.detach(idx).entry)
    }

    /// Runs `f` on the key's entry (`None` when absent) and does what it returns.
    pub(crate) fn update<R>(
        &mut self,
        hash: u64,
        key: &str,
        removed: &mut Removed,
        f: impl FnOnce(Option<&mut Entry>) -> Update<R>,
    ) -> R {
        let Some(idx) = self.find(hash, key) else {
            return match f(None) {
                Update::Keep(r) | Update::Remove(r) => r,
                Update::Put(entry, r) => {
                    self.insert(hash, key, entry, removed);
                    r
                }
            };
        };
        let before = self.weigh(idx);
        let action = f(Some(&mut self.node_mut(idx).entry));
        // The closure may have changed the entry's size.
        self.reweigh(idx, before);
        match action {
            Update::Keep(r) => {
                self.evict(removed);
                r
            }
            Update::Remove(r) => {
                let node = self.detach(idx);
                removed.push((node.key, node.entry, RemovalCause::Removed));
                r
            }
            Update::Put(entry, r) => {
                let old = self.replace(idx, entry);
                removed.push((key.into(), old, RemovalCause::Replaced));
                self.evict(removed);
                r
            }
        }
    }

    /// Keeps only the entries `keep` accepts; the others go to `removed` with `cause`.
    pub(crate) fn retain(
        &mut self,
        mut keep: impl FnMut(&str, &Entry) -> bool,
        removed: &mut Removed,
        cause: RemovalCause,
    ) {
        let doomed: Vec<u32> = self
            .table
            .iter()
            .copied()
            .filter(|&i| {
                let node = self.node(i);
                !keep(&node.key, &node.entry)
            })
            .collect();
        for idx in doomed {
            let node = self.detach(idx);
            removed.push((node.key, node.entry, cause));
        }
    }

    /// Every key and entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.nodes
            .iter()
            .flatten()
            .map(|node| (&*node.key, &node.entry))
    }

    /// Removes every entry into `removed` and forgets the access history (the window keeps its
    /// size).
    pub(crate) fn clear(&mut self, removed: &mut Removed) {
        self.table.clear();
        removed.extend(
            self.nodes
                .drain(..)
                .flatten()
                .map(|node| (node.key, node.entry, RemovalCause::Cleared)),
        );
        self.free.clear();
        self.queues = [EMPTY; 3];
        self.sketch.clear();
        self.window_ghosts.clear();
        self.main_ghosts.clear();
    }

    /// Learns from a miss on a recently evicted key: the window grows when it was the window
    /// that dropped the key, and shrinks when it was the main area, by one entry or, as in
    /// ARC, by the ratio of the two lists when the other one is longer.
    fn learn(&mut self, hash: u64) {
        let change = if self.window_ghosts.take(hash) {
            // A key that would already win against the main area's next victim gets in by
            // admission next time: its return says nothing about recency.
            let victim = self.queues[Queue::Probation as usize].head;
            if victim != NIL
                && self.sketch.frequency(hash) > self.sketch.frequency(self.hash_of(victim))
            {
                return;
            }
            (self.main_ghosts.len() as f64 / self.window_ghosts.len().max(1) as f64).max(1.0)
        } else if self.main_ghosts.take(hash) {
            -(self.window_ghosts.len() as f64 / self.main_ghosts.len().max(1) as f64).max(1.0)
        } else {
            return;
        };
        self.owed += change;
        let whole = self.owed.trunc();
        if whole != 0.0 {
            self.owed -= whole;
            self.resize_window(whole as i64);
        }
    }

    /// Moves `entries` entries' worth of capacity into the window (or out of it, when negative),
    /// and the entries with it.
    fn resize_window(&mut self, entries: i64) {
        self.demote_protected();
        let amount = entries.unsigned_abs().saturating_mul(self.unit);
        if entries > 0 {
            let quota = amount.min(self.protected_target);
            if quota == 0 {
                return;
            }
            self.protected_target -= quota;
            self.window_target += quota;
            self.demote_protected();
            let mut moved = 0;
            for _ in 0..MOVES {
                let idx = match self.queues[Queue::Probation as usize].head {
                    NIL => self.queues[Queue::Protected as usize].head,
                    idx => idx,
                };
                if idx == NIL || moved >= quota {
                    break;
                }
                moved += self.weigh(idx);
                self.move_to(idx, Queue::Window);
            }
            let unmoved = quota.saturating_sub(moved);
            self.protected_target += unmoved;
            self.window_target -= unmoved;
        } else {
            if self.window_target <= self.unit {
                return;
            }
            let quota = amount.min(self.window_target - self.unit);
            self.protected_target += quota;
            self.window_target -= quota;
            let mut moved = 0;
            for _ in 0..MOVES {
                let idx = self.queues[Queue::Window as usize].head;
                if idx == NIL || moved >= quota {
                    break;
                }
                moved += self.weigh(idx);
                self.node(idx).set_refs(0);
                self.move_to(idx, Queue::Probation);
            }
            let unmoved = quota.saturating_sub(moved);
            self.protected_target -= unmoved;
            self.window_target += unmoved;
        }
    }

    /// Moves protected entries over their share back to probation, each after its reads are
    /// used up.
    fn demote_protected(&mut self) {
        let mut budget = 4 * MOVES;
        while self.queues[Queue::Protected as usize].weight > self.protected_target && budget > 0 {
            budget -= 1;
            let idx = self.queues[Queue::Protected as usize].head;
            if idx == NIL {
                break;
            }
            let refs = self.node(idx).refs();
            if refs > 0 {
                self.node(idx).set_refs(refs - 1);
                self.move_to(idx, Queue::Protected);
            } else {
                self.move_to(idx, Queue::Probation);
            }
        }
    }

    /// The main area's next victim, without removing it: the oldest probation entry not read
    /// since it got there (read ones move to protected on the way), or when probation is empty
    /// the oldest protected entry with its reads used up.
    fn victim(&mut self) -> u32 {
        // Every pass over an entry uses up at least one of its reads, so this ends.
        loop {
            let idx = self.queues[Queue::Probation as usize].head;
            if idx == NIL {
                let idx = self.queues[Queue::Protected as usize].head;
                if idx == NIL {
                    return NIL;
                }
                let refs = self.node(idx).refs();
                if refs == 0 {
                    return idx;
                }
                self.node(idx).set_refs(refs - 1);
                self.move_to(idx, Queue::Protected);
                continue;
            }
            let refs = self.node(idx).refs();
            if refs == 0 {
                return idx;
            }
            self.node(idx).set_refs(0);
            self.move_to(idx, Queue::Protected);
            self.demote_protected();
        }
    }

    /// Brings the window within its share and the shard within its capacity.
    fn evict(&mut self, removed: &mut Removed) {
        while self.queues[Queue::Window as usize].weight > self.window_target {
            let idx = self.queues[Queue::Window as usize].head;
            if idx == NIL {
                break;
            }
            let refs = self.node(idx).refs();
            self.unlink(idx);
            self.node(idx).set_refs(0);
            // Read while in the window, or room to spare: into the main area without a trial.
            if refs > 0 || self.weight() + self.weigh(idx) <= self.capacity {
                self.push_back(idx, Queue::Probation);
                continue;
            }
            let victim = self.victim();
            if victim == NIL {
                self.push_back(idx, Queue::Window);
                self.drop_node(idx, true, removed);
            } else if self.admit(idx, victim) {
                self.drop_node(victim, false, removed);
                self.push_back(idx, Queue::Probation);
            } else {
                self.push_back(idx, Queue::Window);
                self.drop_node(idx, true, removed);
            }
        }
        while self.weight() > self.capacity {
            let victim = self.victim();
            if victim != NIL {
                self.drop_node(victim, false, removed);
                continue;
            }
            let idx = self.queues[Queue::Window as usize].head;
            if idx == NIL {
                break;
            }
            self.drop_node(idx, true, removed);
        }
    }

    /// Evicts the node, remembering its key in the ghosts of the area it left.
    fn drop_node(&mut self, idx: u32, window: bool, removed: &mut Removed) {
        let (hash, node) = self.detach_hashed(idx);
        if window {
            self.window_ghosts.add(hash);
        } else {
            self.main_ghosts.add(hash);
        }
        removed.push((node.key, node.entry, RemovalCause::Size));
    }

    /// Whether the candidate leaving the window should take the victim's place.
    fn admit(&mut self, candidate: u32, victim: u32) -> bool {
        let candidate = self.sketch.frequency(self.hash_of(candidate));
        let victim = self.sketch.frequency(self.hash_of(victim));
        if candidate > victim {
            return true;
        }
        if candidate >= ADMIT_FLOOR {
            self.random ^= self.random << 13;
            self.random ^= self.random >> 7;
            self.random ^= self.random << 17;
            return self.random & 127 == 0;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_core::Bytes;
    use foldhash::fast::RandomState;

    fn entry(len: usize) -> Entry {
        let timer = crate::common::Timer::new(None, None);
        Entry::new(Bytes::from(vec![7u8; len]), crate::common::NEVER, &timer)
    }

    impl Shard {
        /// Checks the bookkeeping: every entry is in one queue, each queue's weight is the sum
        /// of its entries', and the shard is within its capacity.
        fn check(&self) {
            let mut seen = 0;
            for (q, links) in self.queues.iter().enumerate() {
                let (mut idx, mut prev, mut weight) = (links.head, NIL, 0);
                while idx != NIL {
                    let node = self.node(idx);
                    assert_eq!(node.queue as usize, q);
                    assert_eq!(node.prev, prev);
                    weight += self.weigh(idx);
                    seen += 1;
                    prev = idx;
                    idx = node.next;
                }
                assert_eq!(links.tail, prev);
                assert_eq!(links.weight, weight, "queue {q}");
            }
            assert_eq!(seen, self.len());
            assert_eq!(self.nodes.iter().flatten().count(), self.len());
            assert!(self.weight() <= self.capacity);
            assert!(self.window_target + self.protected_target <= self.capacity);
        }

        fn put(&mut self, key: &str, len: usize) -> usize {
            let mut evicted = Vec::new();
            self.insert(self.hasher.hash_one(key), key, entry(len), &mut evicted);
            evicted.len()
        }

        fn read(&self, key: &str) -> bool {
            self.get(self.hasher.hash_one(key), key, true).is_some()
        }
    }

    #[test]
    fn holds_its_bound_in_entries_and_in_bytes() {
        let mut shard = Shard::new(100, 100, EntryWeighter::UNIT, RandomState::default());
        for i in 0..1_000 {
            shard.put(&format!("k{i}"), 3);
            if i % 3 == 0 {
                shard.read(&format!("k{}", i / 2));
            }
            shard.check();
        }
        assert_eq!(shard.len(), 100);

        let mut shard = Shard::new(1_000, 50, EntryWeighter::BYTES, RandomState::default());
        for i in 0..2_000usize {
            shard.put(&format!("k{i}"), (i * 37) % 60);
            shard.read(&format!("k{}", i % 7));
            shard.check();
        }
        assert!(shard.weight() <= 1_000);
    }

    #[test]
    fn a_scan_does_not_flush_the_hot_set() {
        let mut shard = Shard::new(100, 100, EntryWeighter::UNIT, RandomState::default());
        let hot: Vec<String> = (0..50).map(|i| format!("hot{i}")).collect();
        for key in &hot {
            shard.put(key, 1);
        }
        for _ in 0..5 {
            for key in &hot {
                assert!(shard.read(key));
            }
        }
        for i in 0..10_000 {
            shard.put(&format!("scan{i}"), 1);
        }
        let kept = hot.iter().filter(|k| shard.read(k)).count();
        assert!(kept >= 45, "only {kept} of 50 hot keys survived the scan");
        shard.check();
    }

    #[test]
    fn recency_grows_the_window_and_frequency_shrinks_it() {
        // A stream that cycles over 150 keys through a 100-entry shard: each key comes back
        // after the window dropped it, so the window grows towards an LRU.
        let mut shard = Shard::new(100, 100, EntryWeighter::UNIT, RandomState::default());
        let start = shard.window_target;
        for round in 0..50 {
            for i in 0..30 {
                let key = format!("r{round}-{i}");
                shard.put(&key, 1);
                shard.put(&format!("r{round}-{}", i / 2), 1);
            }
        }
        shard.check();
        let grown = shard.window_target;
        assert!(grown > start, "window stayed at {grown}");

        // Now a frequency-heavy stream: a popular set that the main area keeps, and a key the
        // main area dropped coming back shrinks the window again.
        for round in 0..200 {
            for i in 0..90 {
                let key = format!("f{i}");
                if !shard.read(&key) {
                    shard.put(&key, 1);
                }
            }
            shard.put(&format!("once{round}"), 1);
        }
        shard.check();
        assert!(
            shard.window_target < grown,
            "window did not shrink from {grown}"
        );
    }

    #[test]
    fn updates_reweigh_and_evict() {
        let mut shard = Shard::new(100, 10, EntryWeighter::BYTES, RandomState::default());
        for i in 0..9 {
            shard.put(&format!("k{i}"), 8);
        }
        shard.check();
        // Growing one entry in place pushes others out to stay within the bound.
        let mut evicted = Vec::new();
        shard.update(shard.hasher.hash_one("k0"), "k0", &mut evicted, |e| {
            if let Some(e) = e {
                e.value = Bytes::from(vec![1u8; 60]);
            }
            Update::Keep(())
        });
        shard.check();
        assert!(!evicted.is_empty());
        assert!(shard.weight() <= 100);
        // Removing through update, and putting in an absent key's place.
        let present = shard.read("k1");
        evicted.clear();
        let removed = shard.update(
            shard.hasher.hash_one("k1"),
            "k1",
            &mut evicted,
            |e| match e {
                Some(_) => Update::Remove(true),
                None => Update::Keep(false),
            },
        );
        assert_eq!(removed, present);
        assert_eq!(evicted.len(), usize::from(present));
        assert!(
            evicted
                .iter()
                .all(|(k, _, cause)| &**k == "k1" && *cause == RemovalCause::Removed)
        );
        assert!(!shard.read("k1"));
        shard.update(shard.hasher.hash_one("new"), "new", &mut evicted, |e| {
            assert!(e.is_none());
            Update::Put(entry(2), ())
        });
        assert!(shard.read("new"));
        shard.check();
        let mut gone = Vec::new();
        shard.retain(|key, _| key != "new", &mut gone, RemovalCause::Removed);
        assert!(!shard.read("new"));
        assert_eq!(gone.len(), 1);
        let held = shard.len();
        gone.clear();
        shard.clear(&mut gone);
        shard.check();
        assert_eq!(shard.len(), 0);
        assert_eq!(gone.len(), held);
        assert!(gone.iter().all(|(_, _, c)| *c == RemovalCause::Cleared));
    }
}
