//! Behaviour specific to the local engines: bounds, eviction, expiry sweeps, sharing, freeing.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use cache_core::clock::ManualClock;
use cache_core::{Bytes, CacheEngine, CacheError, Ttl};
use cache_local::{InMemoryEngine, ThreadLocalEngine};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn value(n: usize) -> Bytes {
    Bytes::from(vec![b'v'; n])
}

#[test]
fn defaults_are_the_documented_ones() {
    let engine = InMemoryEngine::new();
    let caps = engine.capabilities();
    assert_eq!(caps.default_ttl, Ttl::After(Duration::from_secs(300)));
    assert!(caps.shared_across_threads);
    assert!(
        !ThreadLocalEngine::new()
            .capabilities()
            .shared_across_threads
    );
    for i in 0..1_000 {
        engine
            .set(&format!("k{i}"), value(1), Ttl::Default)
            .unwrap();
    }
    assert!(engine.entry_count() <= 300, "{}", engine.entry_count());
    assert!(engine.entry_count() >= 250, "{}", engine.entry_count());
}

#[test]
fn the_entry_bound_holds_at_all_times_under_threads() {
    let engine = InMemoryEngine::builder()
        .max_capacity(1_000)
        .build()
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let max_seen = thread::scope(|s| {
        for t in 0..4 {
            let engine = engine.clone();
            s.spawn(move || {
                for i in 0..20_000 {
                    engine
                        .set(&format!("t{t}-{i}"), value(8), Ttl::Default)
                        .unwrap();
                }
            });
        }
        let sampler = {
            let engine = engine.clone();
            let done = Arc::clone(&done);
            s.spawn(move || {
                let mut max = 0;
                while !done.load(Ordering::Relaxed) {
                    max = max.max(engine.entry_count());
                    thread::yield_now();
                }
                max
            })
        };
        thread::sleep(Duration::from_millis(1));
        // The writers are joined when the scope ends; stop the sampler after them.
        s.spawn({
            let done = Arc::clone(&done);
            let engine = engine.clone();
            move || {
                while engine.entry_count() < 900 {
                    thread::yield_now();
                }
                thread::sleep(Duration::from_millis(50));
                done.store(true, Ordering::Relaxed);
            }
        });
        sampler.join().unwrap()
    });
    assert!(
        max_seen <= 1_000,
        "saw {max_seen} entries with a bound of 1000"
    );
    assert!(engine.entry_count() <= 1_000);
}

#[test]
fn the_byte_bound_holds_and_oversized_values_are_refused() {
    let engine = InMemoryEngine::builder()
        .max_capacity(10_000)
        .max_bytes(64 * 1024)
        .shards(4)
        .build()
        .unwrap();
    let limit = engine
        .capabilities()
        .max_value_size
        .expect("a byte bound declares a value limit");
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..5_000 {
        let size = rng.random_range(0..=limit.min(2_000));
        engine
            .set(&format!("k{i}"), value(size), Ttl::Default)
            .unwrap();
        assert!(
            engine.weighted_bytes() <= 64 * 1024,
            "{} bytes held",
            engine.weighted_bytes()
        );
    }
    engine.set("keep", value(10), Ttl::Default).unwrap();
    let err = engine
        .set("keep", value(limit + 1), Ttl::Default)
        .unwrap_err();
    assert!(
        matches!(err, CacheError::ValueTooLarge { limit: l, .. } if l == limit),
        "{err}"
    );
    assert!(err.to_string().contains("\"keep\""), "{err}");
    assert_eq!(
        engine.get("keep").unwrap(),
        Some(value(10)),
        "the previous value is kept"
    );
}

#[test]
fn impossible_bounds_are_configuration_errors() {
    for result in [
        InMemoryEngine::builder().max_capacity(0).build(),
        InMemoryEngine::builder().max_bytes(100).build(),
        InMemoryEngine::builder()
            .default_ttl(Duration::ZERO)
            .build(),
        InMemoryEngine::builder().default_ttl(Duration::MAX).build(),
    ] {
        assert!(
            matches!(result, Err(CacheError::InvalidConfig { .. })),
            "{result:?}"
        );
    }
    assert!(
        ThreadLocalEngine::builder()
            .max_capacity(0)
            .build()
            .is_err()
    );
    assert!(
        InMemoryEngine::builder()
            .default_ttl(Ttl::Never)
            .build()
            .is_ok()
    );
}

#[test]
fn expired_entries_do_not_crowd_out_live_ones() {
    for shards in [1, 4] {
        let clock = Arc::new(ManualClock::new());
        let engine = InMemoryEngine::builder()
            .max_capacity(1_000)
            .shards(shards)
            .clock(clock.clone())
            .build()
            .unwrap();
        for i in 0..1_000 {
            engine
                .set(
                    &format!("old{i}"),
                    value(1),
                    Ttl::After(Duration::from_secs(1)),
                )
                .unwrap();
            // Read them so they are hot: a policy would rather keep them than new entries.
            engine.get(&format!("old{i}")).unwrap();
        }
        clock.advance(Duration::from_secs(2));
        for i in 0..500 {
            engine
                .set(&format!("new{i}"), value(1), Ttl::Never)
                .unwrap();
        }
        let kept = (0..500)
            .filter(|i| engine.exists(&format!("new{i}")).unwrap())
            .count();
        assert_eq!(
            kept, 500,
            "{shards} shards: live entries were evicted while expired ones stayed"
        );
    }
}

#[test]
fn thread_local_expired_entries_do_not_crowd_out_live_ones() {
    let clock = Arc::new(ManualClock::new());
    let engine = ThreadLocalEngine::builder()
        .max_capacity(500)
        .clock(clock.clone())
        .build()
        .unwrap();
    for i in 0..500 {
        engine
            .set(
                &format!("old{i}"),
                value(1),
                Ttl::After(Duration::from_secs(1)),
            )
            .unwrap();
        engine.get(&format!("old{i}")).unwrap();
    }
    clock.advance(Duration::from_secs(2));
    for i in 0..250 {
        engine
            .set(&format!("new{i}"), value(1), Ttl::Never)
            .unwrap();
    }
    assert_eq!(
        (0..250)
            .filter(|i| engine.exists(&format!("new{i}")).unwrap())
            .count(),
        250
    );
}

/// A Zipf sampler over `n` keys by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u)
    }

    /// The share of requests that go to the `capacity` most popular keys.
    fn ideal_hit_ratio(&self, capacity: usize) -> f64 {
        self.cdf[capacity - 1]
    }
}

fn hit_ratios(s: f64) -> (f64, f64, f64) {
    let (keys, capacity, requests) = (100_000, 10_000, 400_000);
    let zipf = Zipf::new(keys, s);
    let engine = InMemoryEngine::builder()
        .max_capacity(capacity as u64)
        .build()
        .unwrap();
    let mut lru = lru::LruCache::<usize, ()>::new(std::num::NonZeroUsize::new(capacity).unwrap());
    let mut rng = StdRng::seed_from_u64(42);
    let (mut ours, mut theirs) = (0u32, 0u32);
    let v = value(8);
    for _ in 0..requests {
        let k = zipf.sample(&mut rng);
        let key = k.to_string();
        if engine.get(&key).unwrap().is_some() {
            ours += 1;
        } else {
            engine.set(&key, v.clone(), Ttl::Never).unwrap();
        }
        if lru.get(&k).is_some() {
            theirs += 1;
        } else {
            lru.put(k, ());
        }
    }
    let n = f64::from(requests);
    (
        f64::from(ours) / n,
        f64::from(theirs) / n,
        zipf.ideal_hit_ratio(capacity),
    )
}

#[test]
fn eviction_beats_lru_on_skewed_workloads() {
    for s in [0.8, 1.0] {
        let (ours, lru, ideal) = hit_ratios(s);
        println!("zipf s={s}: in-memory {ours:.3}, lru {lru:.3}, ideal {ideal:.3}");
        assert!(
            ours >= lru,
            "s={s}: hit ratio {ours:.3} below LRU's {lru:.3}"
        );
    }
}

#[test]
fn clones_share_entries_and_close() {
    let engine = InMemoryEngine::new();
    let clone = engine.clone();
    let shared: Arc<dyn CacheEngine> = Arc::new(engine.clone());
    engine.set("k", value(3), Ttl::Default).unwrap();
    assert_eq!(clone.get("k").unwrap(), Some(value(3)));
    let seen = thread::spawn({
        let shared = Arc::clone(&shared);
        move || shared.get("k").unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(seen, Some(value(3)));
    clone.close().unwrap();
    assert!(matches!(engine.get("k"), Err(CacheError::Closed { .. })));
    assert!(matches!(
        shared.set("k", value(1), Ttl::Default),
        Err(CacheError::Closed { .. })
    ));
    assert_eq!(engine.entry_count(), 0, "close frees the entries");
}

/// A value whose bytes are freed with a counter, to see when an engine drops its entries.
fn counted(drops: &Arc<AtomicUsize>) -> Bytes {
    struct Owner(Arc<AtomicUsize>, [u8; 4]);
    impl AsRef<[u8]> for Owner {
        fn as_ref(&self) -> &[u8] {
            &self.1
        }
    }
    impl Drop for Owner {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    Bytes::from_owner(Owner(Arc::clone(drops), *b"data"))
}

#[test]
fn thread_local_entries_stay_with_their_thread() {
    let engine = ThreadLocalEngine::new();
    engine.set("mine", value(1), Ttl::Default).unwrap();
    let other = engine.clone();
    let seen = thread::spawn(move || {
        let before = other.get("mine").unwrap();
        other.set("theirs", value(2), Ttl::Default).unwrap();
        before
    })
    .join()
    .unwrap();
    assert_eq!(seen, None);
    assert_eq!(engine.get("theirs").unwrap(), None);
    assert_eq!(engine.get("mine").unwrap(), Some(value(1)));
    let unrelated = ThreadLocalEngine::new();
    assert_eq!(
        unrelated.get("mine").unwrap(),
        None,
        "two engines share nothing"
    );
}

#[test]
fn a_new_thread_never_sees_an_exited_threads_entries() {
    let engine = ThreadLocalEngine::new();
    for round in 0..20 {
        let writer = engine.clone();
        thread::spawn(move || writer.set("secret", value(round), Ttl::Never).unwrap())
            .join()
            .unwrap();
        // thread_local hands the exited thread's slot to the next new thread.
        let reader = engine.clone();
        let seen = thread::spawn(move || reader.get("secret").unwrap())
            .join()
            .unwrap();
        assert_eq!(
            seen, None,
            "round {round}: a new thread saw an exited thread's entry"
        );
    }
}

#[test]
fn thread_local_clear_is_per_thread_and_close_frees_all() {
    let drops = Arc::new(AtomicUsize::new(0));
    let engine = ThreadLocalEngine::new();
    engine.set("main", counted(&drops), Ttl::Default).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let worker = {
        let engine = engine.clone();
        let drops = Arc::clone(&drops);
        thread::spawn(move || {
            engine.set("worker", counted(&drops), Ttl::Default).unwrap();
            engine.clear().unwrap();
            assert_eq!(engine.get("worker").unwrap(), None);
            engine.set("worker", counted(&drops), Ttl::Default).unwrap();
            ready_tx.send(()).unwrap();
            rx.recv().unwrap();
            matches!(engine.get("worker"), Err(CacheError::Closed { .. }))
        })
    };
    ready_rx.recv().unwrap();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the worker's clear freed its first entry"
    );
    assert!(
        engine.get("main").unwrap().is_some(),
        "another thread's clear left ours"
    );
    engine.close().unwrap();
    assert_eq!(
        drops.load(Ordering::SeqCst),
        3,
        "close frees every thread's entries"
    );
    tx.send(()).unwrap();
    assert!(worker.join().unwrap(), "the worker sees the engine closed");
}

#[test]
fn dropping_the_engine_frees_every_threads_entries() {
    let drops = Arc::new(AtomicUsize::new(0));
    let engine = ThreadLocalEngine::new();
    // The threads stay alive together so each keeps its own slot (an exited thread's slot is
    // taken over, and emptied, by the next new thread).
    let stored = Arc::new(std::sync::Barrier::new(4));
    let dropped = Arc::new(std::sync::Barrier::new(4));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let engine = engine.clone();
            let drops = Arc::clone(&drops);
            let (stored, dropped) = (Arc::clone(&stored), Arc::clone(&dropped));
            thread::spawn(move || {
                engine.set("k", counted(&drops), Ttl::Default).unwrap();
                drop(engine);
                stored.wait();
                dropped.wait();
            })
        })
        .collect();
    stored.wait();
    assert_eq!(drops.load(Ordering::SeqCst), 0);
    drop(engine);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        3,
        "dropping the engine frees all threads' entries"
    );
    dropped.wait();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn thread_local_bound_is_per_thread() {
    let engine = ThreadLocalEngine::builder()
        .max_capacity(100)
        .build()
        .unwrap();
    for i in 0..1_000 {
        engine
            .set(&format!("k{i}"), value(1), Ttl::Default)
            .unwrap();
    }
    assert!(engine.entry_count() <= 100);
    let other = engine.clone();
    let count = thread::spawn(move || {
        for i in 0..50 {
            other.set(&format!("k{i}"), value(1), Ttl::Default).unwrap();
        }
        other.entry_count()
    })
    .join()
    .unwrap();
    assert_eq!(count, 50);
}

#[test]
fn debug_output_names_the_settings() {
    let text = format!(
        "{:?}",
        InMemoryEngine::builder().max_capacity(42).build().unwrap()
    );
    assert!(text.contains("max_capacity: 42"), "{text}");
    let text = format!("{:?}", ThreadLocalEngine::new());
    assert!(text.contains("ThreadLocalEngine"), "{text}");
}

/// Growing a counter in place (`"0"` to `"-9223372036854775808"`) goes through the same bound as
/// a `set`: the byte bound holds, as the store's own accounting and a walk of the entries see it.
#[test]
fn increment_respects_the_byte_bound() {
    const MAX_BYTES: u64 = 1 << 20;
    let engine = InMemoryEngine::builder()
        .max_capacity(200_000)
        .max_bytes(MAX_BYTES)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..100_000).map(|i| format!("counter-{i:06}")).collect();
    for key in &keys {
        engine
            .set(key, Bytes::from_static(b"0"), Ttl::Never)
            .unwrap();
    }
    // Only counters still held: growing them in place must evict others.
    let held: Vec<&String> = keys.iter().filter(|k| engine.exists(k).unwrap()).collect();
    assert!(held.len() > 10_000, "{} held", held.len());
    for key in held {
        match engine.increment(key, i64::MIN) {
            Ok(n) => assert!(n == i64::MIN || n == 0, "{key}: {n}"),
            Err(e) => panic!("{key}: {e}"),
        }
    }
    let in_use = engine.bytes_bound_in_use().unwrap();
    let walked = engine.weighted_bytes();
    assert!(
        in_use <= MAX_BYTES,
        "bytes_bound_in_use {in_use} > {MAX_BYTES}"
    );
    assert!(walked <= MAX_BYTES, "weighted_bytes {walked} > {MAX_BYTES}");
    engine.set("one-more", value(10), Ttl::Never).unwrap();
    assert!(engine.weighted_bytes() <= MAX_BYTES);
}

/// The same for the per-thread engine.
#[test]
fn increment_respects_the_byte_bound_per_thread() {
    const MAX_BYTES: u64 = 1 << 20;
    let engine = ThreadLocalEngine::builder()
        .max_capacity(200_000)
        .max_bytes(MAX_BYTES)
        .build()
        .unwrap();
    let keys: Vec<String> = (0..100_000).map(|i| format!("counter-{i:06}")).collect();
    for key in &keys {
        engine
            .set(key, Bytes::from_static(b"0"), Ttl::Never)
            .unwrap();
    }
    let held: Vec<&String> = keys.iter().filter(|k| engine.exists(k).unwrap()).collect();
    assert!(held.len() > 10_000, "{} held", held.len());
    for key in held {
        engine.increment(key, i64::MIN).unwrap();
    }
    let walked = engine.weighted_bytes();
    assert!(walked <= MAX_BYTES, "weighted_bytes {walked} > {MAX_BYTES}");
}

/// A release frees the entry's room in the bounds; a mismatch keeps it; an expired entry is
/// absent for it (and dropped, since nothing can read it again).
#[test]
fn delete_if_equals_frees_room_and_treats_expired_entries_as_absent() {
    let clock = Arc::new(ManualClock::new());
    let memory = InMemoryEngine::builder()
        .max_capacity(1_000)
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .unwrap();
    memory.set("lease", value(1_000), Ttl::Never).unwrap();
    let held = memory.bytes_bound_in_use().unwrap();
    assert!(held >= 1_005, "{held}");
    assert!(!memory.delete_if_equals("lease", &value(999)).unwrap());
    assert_eq!(
        memory.bytes_bound_in_use(),
        Some(held),
        "a mismatch keeps it"
    );
    assert!(memory.delete_if_equals("lease", &value(1_000)).unwrap());
    assert_eq!(memory.entry_count(), 0);
    assert_eq!(
        memory.bytes_bound_in_use(),
        Some(0),
        "a release frees its room"
    );
    memory
        .set("expiring", value(10), Ttl::After(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(!memory.delete_if_equals("expiring", &value(10)).unwrap());
    assert_eq!(memory.entry_count(), 0, "the expired entry is dropped");

    let per_thread = ThreadLocalEngine::builder()
        .max_bytes(1 << 20)
        .clock(clock.clone())
        .build()
        .unwrap();
    per_thread.set("lease", value(1_000), Ttl::Never).unwrap();
    assert!(!per_thread.delete_if_equals("lease", &value(1_001)).unwrap());
    assert_eq!(per_thread.weighted_bytes(), 1_005);
    let other = per_thread.clone();
    let elsewhere = thread::spawn(move || other.delete_if_equals("lease", &value(1_000)))
        .join()
        .unwrap()
        .unwrap();
    assert!(!elsewhere, "another thread's entry is not there to release");
    assert!(per_thread.delete_if_equals("lease", &value(1_000)).unwrap());
    assert_eq!(per_thread.weighted_bytes(), 0);
    per_thread
        .set("expiring", value(10), Ttl::After(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    assert!(!per_thread.delete_if_equals("expiring", &value(10)).unwrap());
    assert_eq!(per_thread.entry_count(), 0, "the expired entry is dropped");
}
