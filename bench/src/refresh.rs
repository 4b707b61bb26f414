//! Comparisons 19 and 20: 64 callers on one hot key through its expiry. The same key, loader
//! (20 ms) and callers (each reads every millisecond) under four ways of reading:
//!
//! - get, then load and set on a miss (no single-flight): what a hand-written cache does;
//! - `entry(key).or_load` (single-flight in the process);
//! - `entry(key).refresh(..)` with a stale window (stale-while-revalidate, no early refresh);
//! - `entry(key).refresh(..)` with early refresh only (XFetch, beta 1).
//!
//! Per trial: how many times the loader ran, how many callers waited for a load (a read that
//! took over 10 ms), and whether the first reload started before the value's freshness ended.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cache_core::Ttl;
use cache_local::InMemoryEngine;
use cache_serializer::{Refresh, TypedCache};

use crate::{Goal, Plan, Row};

const CALLERS: usize = 64;
const FRESH: Duration = Duration::from_millis(500);
const LOAD: Duration = Duration::from_millis(20);
/// How long callers keep reading after the first load: through the expiry and past it.
const WINDOW: Duration = Duration::from_millis(700);
const WAITED: Duration = Duration::from_millis(10);

type Loader = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    GetThenSet,
    SingleFlight,
    StaleWhileRevalidate,
    XFetch,
}

impl Mode {
    const ALL: [Mode; 4] = [
        Mode::GetThenSet,
        Mode::SingleFlight,
        Mode::StaleWhileRevalidate,
        Mode::XFetch,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::GetThenSet => "get, then load and set (no single-flight)",
            Mode::SingleFlight => "`entry().or_load` (single-flight)",
            Mode::StaleWhileRevalidate => "`entry().refresh()`, stale window 200 ms",
            Mode::XFetch => "`entry().refresh()`, early refresh (XFetch, beta 1)",
        }
    }
}

/// What one trial saw.
#[derive(Debug, Default, Clone, Copy)]
struct Trial {
    runs: usize,
    waited: usize,
    before_expiry: bool,
}

fn trial(mode: Mode) -> Trial {
    let cache = TypedCache::new(InMemoryEngine::new());
    let runs = Arc::new(AtomicUsize::new(0));
    // When the first reload started, in microseconds after the first load ended (0: none).
    let first_reload = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let loader = {
        let (runs, first_reload) = (runs.clone(), first_reload.clone());
        move || {
            let n = runs.fetch_add(1, Ordering::SeqCst);
            if n == 1 {
                let at = origin.elapsed().as_micros().max(1) as u64;
                first_reload.store(at, Ordering::SeqCst);
            }
            std::thread::sleep(LOAD);
            n as u64
        }
    };
    let refresh = match mode {
        Mode::StaleWhileRevalidate => {
            Some(Refresh::after(FRESH).serve_stale_for(Duration::from_millis(200)))
        }
        Mode::XFetch => Some(Refresh::after(FRESH).early(1.0)),
        _ => None,
    };
    let read = {
        let cache = cache.clone();
        move |load: &Loader| -> u64 {
            match (mode, refresh) {
                (Mode::GetThenSet, _) => match cache.get::<u64>("hot").ok().flatten() {
                    Some(v) => v,
                    None => {
                        let v = load();
                        let _ = cache.set("hot", &v, Ttl::After(FRESH));
                        v
                    }
                },
                (Mode::SingleFlight, _) => cache
                    .entry("hot")
                    .ttl(Ttl::After(FRESH))
                    .or_load(|| load())
                    .unwrap_or_default(),
                (_, Some(refresh)) => {
                    let load = Arc::clone(load);
                    cache
                        .entry("hot")
                        .refresh(refresh)
                        .or_load(move || load())
                        .unwrap_or_default()
                }
                (_, None) => 0,
            }
        }
    };
    let loader: Loader = Arc::new(loader);
    // The first load, timed by the loader as every later one (its time is in the envelope).
    read(&loader);
    let loaded_at = Instant::now();
    let origin_offset = loaded_at.duration_since(origin);
    let waited = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(CALLERS));
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (read, loader, waited, start) =
                (read.clone(), loader.clone(), waited.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut blocked = false;
                while loaded_at.elapsed() < WINDOW {
                    let t = Instant::now();
                    read(&loader);
                    blocked |= t.elapsed() > WAITED;
                    std::thread::sleep(Duration::from_millis(1));
                }
                if blocked {
                    waited.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    // Let a background refresh that is still running finish before the next trial.
    let deadline = Instant::now() + Duration::from_secs(2);
    while cache.refreshes_in_flight() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let reload = first_reload.load(Ordering::SeqCst);
    let before_expiry = reload != 0 && Duration::from_micros(reload) < origin_offset + FRESH;
    Trial {
        runs: runs.load(Ordering::SeqCst) - 1,
        waited: waited.load(Ordering::SeqCst),
        before_expiry,
    }
}

/// Runs the trials; adds rows 19 and 20; returns the section for docs/BENCHMARKS.md.
pub(crate) fn run(plan: &Plan, rows: &mut Vec<Row>) -> String {
    let trials = plan.refresh_trials.max(1);
    let mut table = String::from(
        "| reading with | loader runs per expiry | callers that waited for a load | trials reloaded before expiry |\n|---|---|---|---|\n",
    );
    let mut means = Vec::new();
    for mode in Mode::ALL {
        let results: Vec<Trial> = (0..trials).map(|_| trial(mode)).collect();
        let n = results.len() as f64;
        let runs = results.iter().map(|t| t.runs as f64).sum::<f64>() / n;
        let waited = results.iter().map(|t| t.waited as f64).sum::<f64>() / n;
        let early = results.iter().filter(|t| t.before_expiry).count();
        table.push_str(&format!(
            "| {} | {runs:.1} | {waited:.1} of {CALLERS} | {early} of {trials} |\n",
            mode.name()
        ));
        means.push((runs, waited));
    }
    let (naive_runs, _) = means[0];
    let (_, flight_waited) = means[1];
    let (xfetch_runs, xfetch_waited) = means[3];
    rows.push(Row::plain(
        19,
        "hot key through expiry, 64 callers: loader runs, XFetch / get-then-set",
        xfetch_runs,
        naive_runs.max(f64::MIN_POSITIVE),
        "runs",
        Goal::AtMost(0.1),
    ));
    rows.push(Row::plain(
        20,
        "hot key through expiry, 64 callers: callers that waited, XFetch / single-flight",
        xfetch_waited,
        flight_waited.max(1.0),
        "callers",
        Goal::AtMost(0.1),
    ));
    format!(
        "## Refresh ahead: 64 callers through an expiry\n\n\
         One hot key, fresh for 500 ms, a loader of 20 ms, 64 threads each reading it every\n\
         millisecond for 700 ms after it was loaded, {trials} trials per way of reading (means per trial).\n\
         A caller waited when one of its reads took over 10 ms. XFetch draws its refresh from the\n\
         load time recorded with the value, so with 64 callers the refresh starts well before the\n\
         end; the stale window instead refreshes at the first read after it, and no caller waits either.\n\n\
         {table}\n"
    )
}
