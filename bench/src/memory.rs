//! Comparison 9: resident memory per entry, each cache measured alone in a fresh process.

use std::process::Command;

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_local::InMemoryEngine;

use crate::measure::median;
use crate::{Goal, Plan, Row};

const ENTRIES: usize = 100_000;

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Run in a child process: fills one cache with 100k entries of 64-byte values and prints the
/// growth of resident memory per entry.
pub(crate) fn probe(which: &str) -> Option<f64> {
    let keys: Vec<String> = (0..ENTRIES).map(|i| format!("key:{i:08}")).collect();
    let values: Vec<Bytes> = (0..ENTRIES)
        .map(|i| Bytes::from(vec![i as u8; 64]))
        .collect();
    let before = resident_bytes()?;
    let held: Box<dyn std::any::Any> = match which {
        "in-memory" | "in-memory-idle" => {
            let mut builder = InMemoryEngine::builder().max_capacity(2 * ENTRIES as u64);
            if which == "in-memory-idle" {
                builder = builder.time_to_idle(std::time::Duration::from_secs(3600));
            }
            let cache = builder.build().ok()?;
            for (k, v) in keys.iter().zip(&values) {
                cache.set(k, v.clone(), Ttl::Default).ok()?;
            }
            Box::new(cache)
        }
        "moka" => {
            let cache = moka::sync::Cache::<String, Bytes>::new(2 * ENTRIES as u64);
            for (k, v) in keys.iter().zip(&values) {
                cache.insert(k.clone(), v.clone());
            }
            cache.run_pending_tasks();
            Box::new(cache)
        }
        _ => return None,
    };
    // The keys and values were allocated before `before`; what grew is the cache's own copy of
    // each key and its entry bookkeeping (values are shared, as `Bytes` clones).
    let after = resident_bytes()?;
    drop(held);
    Some((after.saturating_sub(before)) as f64 / ENTRIES as f64)
}

fn measure(which: &str) -> f64 {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let out = Command::new(exe).args(["--memory-probe", which]).output();
    out.ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(f64::NAN)
}

pub(crate) fn run(plan: &Plan, rows: &mut Vec<Row>) {
    let mut ours = Vec::new();
    let mut idle = Vec::new();
    let mut moka = Vec::new();
    for _ in 0..plan.memory_rounds {
        ours.push(measure("in-memory"));
        idle.push(measure("in-memory-idle"));
        moka.push(measure("moka"));
    }
    let moka = median(moka);
    rows.push(Row::plain(
        9,
        "InMemoryEngine bytes per entry (100k x 64 B values) / moka",
        median(ours),
        moka,
        "B/entry",
        Goal::AtMost(1.0),
    ));
    rows.push(Row::plain(
        9,
        "InMemoryEngine with time_to_idle, bytes per entry / moka",
        median(idle),
        moka,
        "B/entry",
        Goal::AtMost(1.0),
    ));
}
