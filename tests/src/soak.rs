//! A mixed-operation soak: several threads, every operation, for a bounded time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, CacheError, Ttl};

/// How long a soak runs: `CACHE_SOAK_SECS` (default 20 s).
pub fn duration() -> Duration {
    let secs = std::env::var("CACHE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// What a soak did.
#[derive(Debug, Clone, Copy)]
pub struct SoakReport {
    /// Operations completed by all threads.
    pub operations: u64,
    /// Times `check` was called while the threads ran.
    pub checks: u64,
    /// Writes the server refused ([`CacheError::Refused`]), in [`run_refusing`].
    pub refused: u64,
    /// Values read under a key that were written for another: always 0 in a report (the soak
    /// fails at the first).
    pub wrong_values: u64,
}

/// What the threads of a soak do besides the mixed operations.
#[derive(Debug, Clone, Copy, Default)]
struct Workload {
    /// In 1 % of bulk writes, one more entry of this many bytes: an item a full server refuses
    /// while storing the others, which no engine can foresee.
    refused_item: Option<usize>,
}

/// Runs `threads` threads of random operations on 64 keys for `duration`.
///
/// Every operation must succeed, every value read must be one written for its key, and
/// `check` (an engine's own invariant, such as its bound) is called about every 10 ms while the
/// threads run and must return `None`.
///
/// # Panics
///
/// On any error, wrong value, failed check, or when no thread makes progress for 10 s (a
/// deadlock).
pub fn run(
    engine: Arc<dyn CacheEngine>,
    threads: usize,
    duration: Duration,
    check: impl Fn() -> Option<String> + Sync,
) -> SoakReport {
    soak(engine, threads, duration, check, Workload::default())
}

/// Like [`run`] against a server that refuses some writes (a full memcached started with `-M`,
/// a Redis at `maxmemory` with `noeviction`): in 1 % of bulk writes, one entry of `big_item`
/// bytes that the server refuses while it stores the others. Writes may fail with
/// [`CacheError::Refused`] (counted); every other operation must succeed, and every value read
/// must be its key's: a refused item must never shift the replies of later requests.
///
/// # Panics
///
/// As [`run`], and on any error but a refusal.
pub fn run_refusing(
    engine: Arc<dyn CacheEngine>,
    threads: usize,
    duration: Duration,
    big_item: usize,
) -> SoakReport {
    soak(
        engine,
        threads,
        duration,
        || None,
        Workload {
            refused_item: Some(big_item),
        },
    )
}

fn soak(
    engine: Arc<dyn CacheEngine>,
    threads: usize,
    duration: Duration,
    check: impl Fn() -> Option<String> + Sync,
    workload: Workload,
) -> SoakReport {
    let refused = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let progress: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let start = Instant::now();
    let checks = std::thread::scope(|s| {
        for (t, done) in progress.iter().enumerate() {
            let engine = Arc::clone(&engine);
            let (stop, refused) = (&stop, &refused);
            s.spawn(move || {
                let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (t as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    if step(&*engine, &mut seed, t, workload) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let mut checks = 0u64;
        let mut last_total = 0u64;
        let mut last_progress = Instant::now();
        while start.elapsed() < duration {
            std::thread::sleep(Duration::from_millis(10));
            if let Some(problem) = check() {
                stop.store(true, Ordering::Relaxed);
                panic!("soak check failed after {:?}: {problem}", start.elapsed());
            }
            checks += 1;
            let total: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
            if total != last_total {
                last_total = total;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > Duration::from_secs(10) {
                stop.store(true, Ordering::Relaxed);
                panic!("no operation completed for 10 s: deadlock? ({total} done)");
            }
        }
        stop.store(true, Ordering::Relaxed);
        checks
    });
    SoakReport {
        operations: progress.iter().map(|p| p.load(Ordering::Relaxed)).sum(),
        checks,
        refused: refused.load(Ordering::Relaxed),
        wrong_values: 0,
    }
}

fn fail<T>(op: &str, e: &dyn std::fmt::Display) -> T {
    panic!("{op} failed during the soak: {e}")
}

fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// One random operation; `true` when it was a write the server refused (allowed only with a
/// refused-item workload).
fn step(engine: &dyn CacheEngine, seed: &mut u64, thread: usize, workload: Workload) -> bool {
    let r = next(seed);
    let key = format!("soak-{}", r % 64);
    let counter = format!("soak-n-{}", r % 4);
    let value = || {
        let mut v = format!("{key}#{thread}#").into_bytes();
        v.resize(v.len() + (r as usize >> 8) % 512, b'.');
        Bytes::from(v)
    };
    let ttl = match (r >> 20) % 4 {
        0 => Ttl::Never,
        1 => Ttl::After(Duration::from_millis(1 + (r >> 24) % 50)),
        _ => Ttl::Default,
    };
    let owned = |k: &str, v: &Option<Bytes>| {
        if let Some(v) = v {
            assert!(
                v.starts_with(format!("{k}#").as_bytes()),
                "wrong value: {v:?} read under {k}"
            );
        }
    };
    // Writes may be refused by a full server in a refusing workload; nothing else may fail.
    let write = |op: &str, result: cache_core::Result<()>| match result {
        Ok(()) => false,
        Err(CacheError::Refused { .. }) if workload.refused_item.is_some() => true,
        Err(e) => fail(op, &e),
    };
    match r % 10 {
        0 | 1 => write("set", engine.set(&key, value(), ttl)),
        2 | 3 => {
            owned(&key, &engine.get(&key).unwrap_or_else(|e| fail("get", &e)));
            false
        }
        4 => {
            let _: bool = engine.delete(&key).unwrap_or_else(|e| fail("delete", &e));
            false
        }
        5 => write("add", engine.add(&key, value(), ttl).map(drop)),
        6 => write("increment", engine.increment(&counter, 1).map(drop)),
        7 => write("touch", engine.touch(&key, ttl).map(drop)),
        8 => {
            let other = format!("soak-{}", (r >> 8) % 64);
            let keys = [key.as_str(), other.as_str()];
            let values = engine
                .get_many(&keys)
                .unwrap_or_else(|e| fail("get_many", &e));
            for (k, v) in keys.iter().zip(&values) {
                owned(k, v);
            }
            false
        }
        _ => {
            let other = format!("soak-{}", (r >> 8) % 64);
            let mut entries = vec![
                (key.as_str(), value()),
                (other.as_str(), {
                    let mut v = format!("{other}#{thread}#").into_bytes();
                    v.resize(v.len() + (r as usize >> 16) % 256, b'.');
                    Bytes::from(v)
                }),
            ];
            let big = format!("soak-big-{}", (r >> 32) % 1_000_000);
            if let Some(size) = workload.refused_item {
                if (r >> 40) % 100 == 0 {
                    let mut v = format!("{big}#{thread}#").into_bytes();
                    v.resize(size, b'!');
                    entries.insert(((r >> 48) % 3) as usize, (big.as_str(), Bytes::from(v)));
                }
            }
            let refused = write("set_many", engine.set_many(&entries, ttl));
            let _: bool = engine.exists(&key).unwrap_or_else(|e| fail("exists", &e));
            refused
        }
    }
}
