//! Interleaved measurement: contenders run in short alternating blocks and report medians.

use std::time::{Duration, Instant};

/// Runs each contender's block `rounds` times, rotating which goes first, and returns each
/// contender's median result.
pub(crate) fn interleave(rounds: usize, contenders: &mut [&mut dyn FnMut() -> f64]) -> Vec<f64> {
    let n = contenders.len();
    let mut results = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for i in 0..n {
            let c = (round + i) % n;
            results[c].push((contenders[c])());
        }
    }
    results.into_iter().map(median).collect()
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Operations per second of `ops` operations that took `elapsed`.
pub(crate) fn rate(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64()
}

/// Times `ops` runs of `f` on `threads` threads started together; returns total operations per
/// second. `f(thread, i)` does operation `i` of thread `thread`.
pub(crate) fn threaded<F>(threads: usize, ops_per_thread: usize, f: F) -> f64
where
    F: Fn(usize, usize) + Sync,
{
    let barrier = std::sync::Barrier::new(threads + 1);
    let elapsed = std::thread::scope(|s| {
        for t in 0..threads {
            let (f, barrier) = (&f, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..ops_per_thread {
                    f(t, i);
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    // The scope joined every thread: the time since the barrier is the run's length.
    rate(threads * ops_per_thread, elapsed.elapsed())
}

/// `ops` gets of `keys` in turn on `engine`, as operations per second.
pub(crate) fn gets(engine: &dyn cache_core::CacheEngine, keys: &[String], ops: usize) -> f64 {
    let start = std::time::Instant::now();
    for i in 0..ops {
        std::hint::black_box(engine.get(&keys[i % keys.len()]).ok());
    }
    rate(ops, start.elapsed())
}
