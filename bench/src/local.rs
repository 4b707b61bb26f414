//! Comparisons 1-4: the local engines against quick_cache, moka, LRU and a thread-local map.

use std::cell::RefCell;
use std::collections::HashMap;

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_local::{InMemoryEngine, ThreadLocalEngine};

use crate::measure::{interleave, threaded};
use crate::workload::{Zipf, keys};
use crate::{Goal, Plan, Row};

const KEYS: usize = 100_000;
const CAPACITY: usize = 10_000;

/// What the local comparisons need from a cache, so each contender runs on its own fast path
/// (monomorphised, no dynamic dispatch).
trait Contender: Sync {
    fn get(&self, key: &str) -> Option<Bytes>;
    fn insert(&self, key: &str, value: Bytes);
}

struct Ours(InMemoryEngine);
impl Contender for Ours {
    #[inline]
    fn get(&self, key: &str) -> Option<Bytes> {
        self.0.get(key).ok().flatten()
    }
    #[inline]
    fn insert(&self, key: &str, value: Bytes) {
        let _ = self.0.set(key, value, Ttl::Default);
    }
}

struct QuickCache(quick_cache::sync::Cache<String, Bytes>);
impl Contender for QuickCache {
    #[inline]
    fn get(&self, key: &str) -> Option<Bytes> {
        self.0.get(key)
    }
    #[inline]
    fn insert(&self, key: &str, value: Bytes) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Moka(moka::sync::Cache<String, Bytes>);
impl Contender for Moka {
    #[inline]
    fn get(&self, key: &str) -> Option<Bytes> {
        self.0.get(key)
    }
    #[inline]
    fn insert(&self, key: &str, value: Bytes) {
        self.0.insert(key.to_owned(), value);
    }
}

fn ours() -> Ours {
    Ours(
        InMemoryEngine::builder()
            .max_capacity(CAPACITY as u64)
            .build()
            .unwrap_or_else(|e| panic!("engine: {e}")),
    )
}

fn quick_cache() -> QuickCache {
    QuickCache(quick_cache::sync::Cache::new(CAPACITY))
}

fn moka() -> Moka {
    Moka(moka::sync::Cache::new(CAPACITY as u64))
}

fn value() -> Bytes {
    Bytes::from(vec![0x5a; 64])
}

/// Throughput of `get` on keys that are all present, `threads` threads.
fn hits_block<C: Contender>(cache: &C, hot: &[String], threads: usize, ops: usize) -> f64 {
    threaded(threads, ops, |t, i| {
        let key = &hot[(i * 7 + t * 4099) % hot.len()];
        std::hint::black_box(cache.get(key));
    })
}

/// Throughput of get-or-insert on a Zipf stream, on a fresh cache.
fn get_or_insert_block<C: Contender>(
    cache: &C,
    keys: &[String],
    stream: &[u32],
    threads: usize,
    ops: usize,
) -> f64 {
    let v = value();
    threaded(threads, ops, |t, i| {
        let key = &keys[stream[(i + t * stream.len() / threads.max(1)) % stream.len()] as usize];
        if cache.get(key).is_none() {
            cache.insert(key, v.clone());
        }
    })
}

fn filled<C: Contender>(cache: C, hot: &[String]) -> C {
    for key in hot {
        cache.insert(key, value());
        cache.get(key);
    }
    cache
}

pub(crate) fn run(plan: &Plan, rows: &mut Vec<Row>) {
    let keys = keys(KEYS);
    // 1. Hits only, 2 threads. The hot set is smaller than the capacity so that every contender
    //    holds all of it despite its sharding.
    let hot: Vec<String> = keys[..CAPACITY / 2].to_vec();
    let (o, q, m) = (
        filled(ours(), &hot),
        filled(quick_cache(), &hot),
        filled(moka(), &hot),
    );
    // The same with a time-to-idle: every hit also stores its time.
    let idle = filled(
        Ours(
            InMemoryEngine::builder()
                .max_capacity(CAPACITY as u64)
                .default_ttl(Ttl::Never)
                .time_to_idle(std::time::Duration::from_secs(3600))
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
        ),
        &hot,
    );
    let ops = plan.local_ops;
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || hits_block(&o, &hot, 2, ops),
            &mut || hits_block(&q, &hot, 2, ops),
            &mut || hits_block(&m, &hot, 2, ops),
            &mut || hits_block(&o, &hot, 1, ops),
            &mut || hits_block(&q, &hot, 1, ops),
            &mut || hits_block(&idle, &hot, 2, ops),
        ],
    );
    rows.push(Row::rate(
        1,
        "InMemoryEngine get on hits, 2 threads / quick_cache",
        r[0],
        r[1],
        Goal::AtLeast(0.9),
    ));
    rows.push(Row::rate(
        1,
        "InMemoryEngine get on hits, 2 threads / moka",
        r[0],
        r[2],
        Goal::AtLeast(3.0),
    ));
    rows.push(Row::rate(
        1,
        "(reference) same, 1 thread / quick_cache",
        r[3],
        r[4],
        Goal::None,
    ));
    rows.push(Row::rate(
        1,
        "InMemoryEngine with time_to_idle, get on hits, 2 threads / quick_cache",
        r[5],
        r[1],
        Goal::AtLeast(0.9),
    ));
    drop((o, q, m, idle));

    // 2. Get-or-insert on Zipf 1.0, fresh caches each block.
    let zipf = Zipf::new(KEYS, 1.0);
    let stream = zipf.stream(plan.stream_len, 11);
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || get_or_insert_block(&ours(), &keys, &stream, 2, ops),
            &mut || get_or_insert_block(&quick_cache(), &keys, &stream, 2, ops),
            &mut || get_or_insert_block(&ours(), &keys, &stream, 1, ops),
            &mut || get_or_insert_block(&quick_cache(), &keys, &stream, 1, ops),
        ],
    );
    rows.push(Row::rate(
        2,
        "InMemoryEngine get-or-insert, Zipf 1.0, 2 threads / quick_cache",
        r[0],
        r[1],
        Goal::AtLeast(0.9),
    ));
    rows.push(Row::rate(
        2,
        "InMemoryEngine get-or-insert, 2 threads / 1 thread",
        r[0],
        r[2],
        Goal::AtLeast(1.3),
    ));
    rows.push(Row::rate(
        2,
        "(reference) quick_cache get-or-insert, 2 threads / 1 thread",
        r[1],
        r[3],
        Goal::None,
    ));

    // 3. Hit ratio, one thread, after a warm-up.
    for s in [0.8, 1.0] {
        let zipf = Zipf::new(KEYS, s);
        let stream = zipf.stream(plan.ratio_requests, 23);
        let ideal = zipf.ideal_hit_ratio(CAPACITY);
        let ours = hit_ratio(&ours(), &keys, &stream);
        let lru = lru_hit_ratio(&stream);
        let qc = hit_ratio(&quick_cache(), &keys, &stream);
        rows.push(Row::plain(
            3,
            &format!("InMemoryEngine hit ratio / ideal, Zipf {s}"),
            ours,
            ideal,
            "hit ratio",
            if s == 1.0 {
                Goal::AtLeast(0.97)
            } else {
                Goal::None
            },
        ));
        rows.push(Row::plain(
            3,
            &format!("InMemoryEngine hit ratio / LRU, Zipf {s}"),
            ours,
            lru,
            "hit ratio",
            Goal::AtLeast(1.0),
        ));
        rows.push(Row::plain(
            3,
            &format!("(reference) quick_cache hit ratio / ideal, Zipf {s}"),
            qc,
            ideal,
            "hit ratio",
            Goal::None,
        ));
    }

    // 4. ThreadLocalEngine hits / a raw thread_local! HashMap.
    let tl = ThreadLocalEngine::builder()
        .max_capacity(CAPACITY as u64)
        .build()
        .unwrap_or_else(|e| panic!("engine: {e}"));
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                threaded(1, ops, |_, i| {
                    if i == 0 {
                        for key in &hot {
                            let _ = tl.set(key, value(), Ttl::Default);
                        }
                    }
                    std::hint::black_box(tl.get(&hot[(i * 7) % hot.len()]).ok().flatten());
                })
            },
            &mut || {
                threaded(1, ops, |_, i| {
                    if i == 0 {
                        RAW.with(|m| {
                            let mut m = m.borrow_mut();
                            for key in &hot {
                                m.insert(key.clone(), value());
                            }
                        });
                    }
                    std::hint::black_box(
                        RAW.with(|m| m.borrow().get(hot[(i * 7) % hot.len()].as_str()).cloned()),
                    );
                })
            },
        ],
    );
    rows.push(Row::rate(
        4,
        "ThreadLocalEngine get on hits / thread_local! HashMap",
        r[0],
        r[1],
        Goal::AtLeast(0.7),
    ));
}

std::thread_local! {
    static RAW: RefCell<HashMap<String, Bytes>> = RefCell::new(HashMap::new());
}

/// Hit ratio over the second half of `stream` (the first half warms the cache up).
fn hit_ratio<C: Contender>(cache: &C, keys: &[String], stream: &[u32]) -> f64 {
    let v = value();
    let mut hits = 0usize;
    let warm = stream.len() / 2;
    for (i, &k) in stream.iter().enumerate() {
        let key = &keys[k as usize];
        if cache.get(key).is_some() {
            if i >= warm {
                hits += 1;
            }
        } else {
            cache.insert(key, v.clone());
        }
    }
    hits as f64 / (stream.len() - warm) as f64
}

fn lru_hit_ratio(stream: &[u32]) -> f64 {
    let capacity = std::num::NonZeroUsize::new(CAPACITY).unwrap_or(std::num::NonZeroUsize::MIN);
    let mut lru = lru::LruCache::<u32, ()>::new(capacity);
    let warm = stream.len() / 2;
    let mut hits = 0usize;
    for (i, &k) in stream.iter().enumerate() {
        if lru.get(&k).is_some() {
            if i >= warm {
                hits += 1;
            }
        } else {
            lru.put(k, ());
        }
    }
    hits as f64 / (stream.len() - warm) as f64
}
