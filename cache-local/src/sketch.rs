//! A count-min sketch of recent access frequencies, with 4-bit counters that age by halving.
//!
//! The admission filter of the eviction policy (TinyLFU: Einziger, Friedman and Manes, "TinyLFU:
//! A Highly Efficient Cache Admission Policy", 2017) asks it how often a key was requested
//! lately. A key's four counters sit in one 64-byte block, so counting a request touches one
//! cache line; its frequency is the smallest of them. After `10 * capacity` counted requests
//! every counter is halved, so the sketch forgets old popularity at the pace the cache turns
//! over.
//!
//! Reads count themselves while holding only a shard's shared lock, so the counters are atomics
//! updated with plain relaxed loads and stores: two threads counting at once in the same word
//! can lose one of the two counts (or, rarely, undo a halving of that word). That is noise in a
//! statistic that is approximate by design, and costs far less than a compare-and-swap per
//! counter.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// The largest value a counter holds.
const MAX: u64 = 15;
/// Keeps the low three bits of every counter after a shift right by one: halves them all.
const HALF_MASK: u64 = 0x7777_7777_7777_7777;
/// The low bit of every counter.
const ONES: u64 = 0x1111_1111_1111_1111;
/// Words per block: 8 words of 8 bytes, one cache line.
const BLOCK: usize = 8;

pub(crate) struct Sketch {
    table: Box<[AtomicU64]>,
    /// 64 minus log2 of the number of blocks: a block index is the top bits of a remixed hash.
    block_shift: u32,
    /// Counted requests since the last halving.
    additions: AtomicU32,
    /// Counted requests after which every counter is halved.
    sample: u32,
}

impl Sketch {
    /// A sketch for a cache of `capacity` entries: 16 counters per entry (at least 256 entries'
    /// worth), rounded up to a power of two.
    pub(crate) fn new(capacity: usize) -> Self {
        let words = capacity.clamp(256, 1 << 26).next_power_of_two();
        Self {
            table: (0..words).map(|_| AtomicU64::new(0)).collect(),
            block_shift: 64 - (words / BLOCK).trailing_zeros(),
            additions: AtomicU32::new(0),
            sample: u32::try_from(capacity.clamp(256, 1 << 26) * 10).unwrap_or(u32::MAX),
        }
    }

    /// The four (word, shift) places of a key's counters, all in the key's block.
    #[inline]
    fn places(&self, hash: u64) -> [(usize, u32); 4] {
        // The block comes from the top bits of one remix of the whole hash, the counters from
        // another. Not from the hash's own bits: a store picks the key's shard from some of
        // those, fixed for every key of a shard, and a block index sharing them would leave
        // most blocks of each shard's sketch unused (8 shards used an eighth of each sketch).
        let block = (hash.wrapping_mul(0xff51_afd7_ed55_8ccd) >> self.block_shift) as usize * BLOCK;
        let mut mixed = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        mixed ^= mixed >> 29;
        let mut places = [(0, 0); 4];
        for (i, place) in places.iter_mut().enumerate() {
            let bits = (mixed >> (i * 8)) as u32;
            // Counter i lives in word 2i or 2i + 1 of the block, at one of its 16 nibbles.
            let word = block + 2 * i + (bits & 1) as usize;
            let shift = ((bits >> 1) & 15) * 4;
            *place = (word, shift);
        }
        places
    }

    /// How often the key was counted lately (0 to 15).
    #[inline]
    pub(crate) fn frequency(&self, hash: u64) -> u8 {
        self.places(hash)
            .iter()
            .map(|&(word, shift)| (self.table[word].load(Ordering::Relaxed) >> shift) & MAX)
            .min()
            .unwrap_or(0) as u8
    }

    /// Counts one request for the key.
    #[inline]
    pub(crate) fn increment(&self, hash: u64) {
        let mut added = false;
        for (word, shift) in self.places(hash) {
            let cell = &self.table[word];
            let value = cell.load(Ordering::Relaxed);
            if (value >> shift) & MAX != MAX {
                cell.store(value + (1 << shift), Ordering::Relaxed);
                added = true;
            }
        }
        if added {
            let additions = self.additions.load(Ordering::Relaxed) + 1;
            self.additions.store(additions, Ordering::Relaxed);
            if additions >= self.sample {
                self.halve();
            }
        }
    }

    #[cold]
    fn halve(&self) {
        let mut odd = 0u64;
        for cell in self.table.iter() {
            let value = cell.load(Ordering::Relaxed);
            odd += u64::from((value & ONES).count_ones());
            cell.store((value >> 1) & HALF_MASK, Ordering::Relaxed);
        }
        // Each halving of an odd counter dropped a quarter of a request (four counters each).
        let additions = u64::from(self.additions.load(Ordering::Relaxed));
        let kept = additions.saturating_sub(odd / 4) / 2;
        self.additions
            .store(u32::try_from(kept).unwrap_or(0), Ordering::Relaxed);
    }

    /// Forgets every count.
    pub(crate) fn clear(&self) {
        for cell in self.table.iter() {
            cell.store(0, Ordering::Relaxed);
        }
        self.additions.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_saturate_and_age() {
        let sketch = Sketch::new(64);
        assert_eq!(sketch.frequency(42), 0);
        for _ in 0..5 {
            sketch.increment(42);
        }
        assert_eq!(sketch.frequency(42), 5);
        for _ in 0..20 {
            sketch.increment(42);
        }
        assert_eq!(sketch.frequency(42), 15);
        sketch.halve();
        assert_eq!(sketch.frequency(42), 7);
        assert_eq!(sketch.frequency(7 << 40), 0);
    }

    #[test]
    fn keys_sharing_high_bits_use_every_block() {
        // As in a shard of a store: bits 40-42 are the same for every key.
        let sketch = Sketch::new(16_384);
        let blocks = sketch.table.len() / BLOCK;
        let mut used = vec![false; blocks];
        for i in 0..(blocks as u64 * 8) {
            let hash = i.wrapping_mul(0x2545_f491_4f6c_dd1d) & !(7 << 40) | (3 << 40);
            used[sketch.places(hash)[0].0 / BLOCK] = true;
        }
        let share = used.iter().filter(|u| **u).count() as f64 / blocks as f64;
        assert!(share > 0.99, "{share}");
    }

    #[test]
    fn halves_after_the_sample() {
        let sketch = Sketch::new(256);
        for _ in 0..15 {
            sketch.increment(1);
        }
        assert_eq!(sketch.frequency(1), 15);
        // The sample is 10 * 256 counted requests: spread over many keys, they end in a halving.
        for key in 2..=2_560u64 {
            sketch.increment(key.wrapping_mul(0x1234_5678_9abc_def1));
        }
        assert!(sketch.frequency(1) < 15, "{}", sketch.frequency(1));
    }
}
