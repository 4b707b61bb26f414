//! A mixed-operation soak: several threads, every operation, for a bounded time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, Ttl};

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
    let stop = AtomicBool::new(false);
    let progress: Vec<AtomicU64> = (0..threads).map(|_| AtomicU64::new(0)).collect();
    let start = Instant::now();
    let checks = std::thread::scope(|s| {
        for (t, done) in progress.iter().enumerate() {
            let engine = Arc::clone(&engine);
            let stop = &stop;
            s.spawn(move || {
                let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (t as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    step(&*engine, &mut seed, t);
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

fn step(engine: &dyn CacheEngine, seed: &mut u64, thread: usize) {
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
                "value {v:?} read under {k}"
            );
        }
    };
    match r % 10 {
        0 | 1 => engine
            .set(&key, value(), ttl)
            .unwrap_or_else(|e| fail("set", &e)),
        2 | 3 => owned(&key, &engine.get(&key).unwrap_or_else(|e| fail("get", &e))),
        4 => drop(engine.delete(&key).unwrap_or_else(|e| fail("delete", &e))),
        5 => drop(
            engine
                .add(&key, value(), ttl)
                .unwrap_or_else(|e| fail("add", &e)),
        ),
        6 => drop(
            engine
                .increment(&counter, 1)
                .unwrap_or_else(|e| fail("increment", &e)),
        ),
        7 => drop(
            engine
                .touch(&key, ttl)
                .unwrap_or_else(|e| fail("touch", &e)),
        ),
        8 => {
            let other = format!("soak-{}", (r >> 8) % 64);
            let keys = [key.as_str(), other.as_str()];
            let values = engine
                .get_many(&keys)
                .unwrap_or_else(|e| fail("get_many", &e));
            for (k, v) in keys.iter().zip(&values) {
                owned(k, v);
            }
        }
        _ => {
            let entries = [(key.as_str(), value())];
            engine
                .set_many(&entries, ttl)
                .unwrap_or_else(|e| fail("set_many", &e));
            let _: bool = engine.exists(&key).unwrap_or_else(|e| fail("exists", &e));
        }
    }
}
