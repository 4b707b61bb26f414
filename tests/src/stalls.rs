//! Many async callers against servers that stall, stay silent or drop flows (feature `tokio`):
//! the runs behind the async engines' promises on deadlines, queue bounds and per-key order.
//!
//! Each function drives an [`AsyncCacheEngine`] with many tasks on the kit's
//! [`runtime`](crate::asynchronous::runtime()) and reports what they saw; the caller asserts on
//! the report, with its own bounds, so that one run can serve several engines and settings.
//! Runs are bounded in time: each ends within its own length plus the engine's deadlines.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::{AsyncCacheEngine, Bytes, CacheError, Ttl};

use crate::asynchronous::runtime;

/// A short name for an error's kind, for reports.
pub fn kind(error: &CacheError) -> &'static str {
    match error {
        CacheError::Timeout { .. } => "Timeout",
        CacheError::Connection { .. } => "Connection",
        CacheError::Overloaded { .. } => "Overloaded",
        CacheError::Backend { .. } => "Backend",
        CacheError::Closed { .. } => "Closed",
        CacheError::Authentication { .. } => "Authentication",
        _ => "other",
    }
}

/// How many callers of one operation at once fared.
#[derive(Debug, Clone, Default)]
pub struct CallersReport {
    /// Callers started.
    pub callers: usize,
    /// Calls that returned `Ok`.
    pub ok: usize,
    /// Calls that returned `Ok` later than the bound given to the run: an answer the caller
    /// should no longer have waited for.
    pub late_ok: usize,
    /// Errors by kind (see [`kind`]).
    pub errors: BTreeMap<&'static str, usize>,
    /// The longest call.
    pub slowest: Duration,
}

/// `callers` tasks call `get(key)` on `engine` at the same moment (they wait on a barrier
/// first); how each ended, and how long the slowest took. An `Ok` that took longer than
/// `bound` counts as late.
pub fn callers_at_once<E>(engine: &E, key: &str, callers: usize, bound: Duration) -> CallersReport
where
    E: AsyncCacheEngine + Clone + 'static,
{
    type Ended = (Duration, cache_core::Result<()>);
    let results: Arc<Mutex<Vec<Ended>>> = Arc::new(Mutex::new(Vec::with_capacity(callers)));
    runtime().block_on(async {
        let barrier = Arc::new(tokio::sync::Barrier::new(callers));
        let mut handles = Vec::with_capacity(callers);
        for _ in 0..callers {
            let (engine, barrier, results) =
                (engine.clone(), Arc::clone(&barrier), Arc::clone(&results));
            let key = key.to_string();
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let start = Instant::now();
                let result = engine.get(&key).await.map(drop);
                let took = start.elapsed();
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((took, result));
            }));
        }
        for handle in handles {
            let _ = handle.await;
        }
    });
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    let mut report = CallersReport {
        callers,
        ..CallersReport::default()
    };
    for (took, result) in results {
        report.slowest = report.slowest.max(took);
        match result {
            Ok(()) => {
                report.ok += 1;
                if took > bound {
                    report.late_ok += 1;
                }
            }
            Err(e) => *report.errors.entry(kind(&e)).or_default() += 1,
        }
    }
    report
}

/// What a flood of gets did.
#[derive(Debug, Clone, Default)]
pub struct FloodReport {
    /// Gets started.
    pub started: u64,
    /// Gets that returned `Ok`.
    pub ok: u64,
    /// Errors by kind (see [`kind`]).
    pub errors: BTreeMap<&'static str, u64>,
    /// The longest get.
    pub slowest: Duration,
}

/// A steady flood: `rate` gets a second for `length`, each in a task of its own, over 1,000
/// keys; `during` runs on a thread of its own as the flood starts (stop a server, resume it).
/// Waits for every get to end.
pub fn flood<E>(
    engine: &E,
    rate: u64,
    length: Duration,
    during: impl FnOnce() + Send + 'static,
) -> FloodReport
where
    E: AsyncCacheEngine + Clone + 'static,
{
    let ok = Arc::new(AtomicU64::new(0));
    let slowest_us = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<BTreeMap<&'static str, u64>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let side = std::thread::spawn(during);
    let started = runtime().block_on(async {
        let mut handles = Vec::new();
        let start = Instant::now();
        let mut started = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while start.elapsed() < length {
            tick.tick().await;
            let due = u64::try_from(start.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .saturating_mul(rate)
                / 1_000_000;
            while started < due {
                let (engine, ok, slowest_us, errors) = (
                    engine.clone(),
                    Arc::clone(&ok),
                    Arc::clone(&slowest_us),
                    Arc::clone(&errors),
                );
                let key = format!("flood-{}", started % 1000);
                handles.push(tokio::spawn(async move {
                    let begun = Instant::now();
                    let result = engine.get(&key).await;
                    let took = u64::try_from(begun.elapsed().as_micros()).unwrap_or(u64::MAX);
                    slowest_us.fetch_max(took, Ordering::Relaxed);
                    match result {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            *errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(kind(&e))
                                .or_default() += 1;
                        }
                    }
                }));
                started += 1;
            }
            // Finished tasks are let go of as the flood goes on.
            if handles.len() > 4096 {
                handles.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
            }
        }
        for handle in handles {
            let _ = handle.await;
        }
        started
    });
    let _ = side.join();
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
    FloodReport {
        started,
        ok: ok.load(Ordering::Relaxed),
        errors,
        slowest: Duration::from_micros(slowest_us.load(Ordering::Relaxed)),
    }
}

/// What a run of [`order_run`] saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct OrderReport {
    /// Reads checked after an acknowledged write.
    pub reads: u64,
    /// Reads that returned an older version than the acknowledged write before them: must
    /// be 0.
    pub older: u64,
    /// Writes cancelled by their caller (so that they were in flight or never sent).
    pub cancelled: u64,
    /// Operations that failed (the engine's own timeouts, say).
    pub errors: u64,
}

/// `tasks` tasks, each with a key of its own, `rounds` times: a write of version `n` cancelled
/// after a random 0 to 3 ms (often while in flight), an acknowledged write of version `n + 1`,
/// then a read, which must find `n + 1` or later. Run it with several pipelines behind a proxy
/// that jitters both directions ([`crate::proxy::Fault::JitterBoth`]): a cancelled write that
/// landed on another connection than the acknowledged one could reach the server after it.
pub fn order_run<E>(engine: &E, tasks: usize, rounds: u64) -> OrderReport
where
    E: AsyncCacheEngine + Clone + 'static,
{
    let reads = Arc::new(AtomicU64::new(0));
    let older = Arc::new(AtomicU64::new(0));
    let cancelled = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    runtime().block_on(async {
        let mut handles = Vec::with_capacity(tasks);
        for task in 0..tasks {
            let (engine, reads, older, cancelled, errors) = (
                engine.clone(),
                Arc::clone(&reads),
                Arc::clone(&older),
                Arc::clone(&cancelled),
                Arc::clone(&errors),
            );
            handles.push(tokio::spawn(async move {
                let key = format!("order-{task}");
                let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (task as u64 + 1);
                for round in 0..rounds {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let version = round * 2;
                    let budget = Duration::from_micros(seed % 3_000);
                    let first = engine.set(&key, number(version), Ttl::Default);
                    if tokio::time::timeout(budget, first).await.is_err() {
                        cancelled.fetch_add(1, Ordering::Relaxed);
                    }
                    if engine
                        .set(&key, number(version + 1), Ttl::Default)
                        .await
                        .is_err()
                    {
                        errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    match engine.get(&key).await {
                        Ok(found) => {
                            reads.fetch_add(1, Ordering::Relaxed);
                            let seen = found
                                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok());
                            if seen.is_none_or(|seen| seen < version + 1) {
                                older.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        for handle in handles {
            let _ = handle.await;
        }
    });
    OrderReport {
        reads: reads.load(Ordering::Relaxed),
        older: older.load(Ordering::Relaxed),
        cancelled: cancelled.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
    }
}

fn number(n: u64) -> Bytes {
    Bytes::from(n.to_string())
}

/// How a check wants its engine built: the settings the check's bounds are computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// The operation timeout.
    pub timeout: Duration,
    /// The bound on opening a connection, handshake included.
    pub connect_timeout: Duration,
    /// How many pipelines.
    pub pipelines: usize,
    /// The queue bound in requests, if the check sets one.
    pub max_queued_requests: Option<usize>,
    /// The largest value, if the check sets one.
    pub max_value_size: Option<usize>,
    /// Whether every new connection must run a handshake (Redis: choose database 1; memcached
    /// always runs one).
    pub handshake: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            pipelines: 1,
            max_queued_requests: None,
            max_value_size: None,
            handshake: false,
        }
    }
}

/// Slack on every liveness bound below, for a loaded machine.
const SLACK: Duration = Duration::from_millis(750);

/// Against a server that accepts connections and never answers the handshake, 8 and then
/// 1,000 concurrent gets on a new engine each end within `timeout + connect_timeout` (plus
/// slack) of their call, every one with an error: one connection attempt serves them all.
///
/// # Panics
///
/// When a get succeeds or overruns.
pub fn waits_on_a_silent_handshake_end_in_time<E>(
    dialect: crate::hostile::Dialect,
    engine_at: impl Fn(&str, &Setup) -> E,
) where
    E: AsyncCacheEngine + Clone + 'static,
{
    use crate::hostile::{HostileServer, Misbehaviour};

    let server = HostileServer::start(dialect, Misbehaviour::Silent)
        .unwrap_or_else(|e| panic!("hostile server: {e}"));
    let setup = Setup {
        handshake: true,
        ..Setup::default()
    };
    let bound = setup.timeout + setup.connect_timeout;
    for callers in [8, 1000] {
        let engine = engine_at(server.address(), &setup);
        let report = callers_at_once(&engine, "silent", callers, bound);
        eprintln!("{dialect:?}, silent handshake, {callers} callers: {report:?}");
        assert_eq!(report.ok, 0, "{report:?}");
        assert!(
            report.slowest <= bound + SLACK,
            "{callers} callers: the slowest took {:?}, bound {bound:?}: {report:?}",
            report.slowest
        );
    }
}

/// The server is stopped (SIGSTOP) before a new engine opens its first connection, and
/// resumed 3 s later: 1,000 concurrent gets each end within `timeout + connect_timeout` (plus
/// slack), all before the server resumes; none answers `Ok` after that bound. Afterwards the
/// engine serves again.
///
/// # Panics
///
/// When a get overruns, or the engine does not serve after the server resumed.
pub fn a_server_stopped_while_connecting_fails_callers_in_time<E>(
    server: &crate::servers::TestServer,
    engine_at: impl Fn(&str, &Setup) -> E,
) where
    E: AsyncCacheEngine + Clone + 'static,
{
    let setup = Setup {
        handshake: true,
        ..Setup::default()
    };
    let bound = setup.timeout + setup.connect_timeout;
    let engine = engine_at(&server.address(), &setup);
    server.signal("STOP");
    let resumed = {
        let pid = server.pid();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            if let Some(pid) = pid {
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
        })
    };
    let report = callers_at_once(&engine, "stopped", 1000, bound);
    let _ = resumed.join();
    server.signal("CONT");
    eprintln!("server stopped while connecting, 1000 callers: {report:?}");
    assert_eq!(report.late_ok, 0, "answers after the bound: {report:?}");
    assert!(
        report.slowest <= bound + SLACK,
        "the slowest took {:?}, bound {bound:?}: {report:?}",
        report.slowest
    );
    let start = Instant::now();
    loop {
        match runtime().block_on(engine.set("stopped", Bytes::from_static(b"v"), Ttl::Default)) {
            Ok(()) => break,
            Err(e) => assert!(
                start.elapsed() < Duration::from_secs(5),
                "not serving 5 s after the server resumed: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With a queue bound of 100 requests on its one connection, 1,000 concurrent gets against a
/// stopped server: those past the bound fail at once with `Overloaded` (within 100 ms plus
/// slack), the others within their deadline; the bound frees once the stalled connection is
/// replaced, and the engine serves again after the server resumes.
///
/// # Panics
///
/// When no get is refused, a refusal is slow, or the engine does not serve again.
pub fn past_the_queue_bound_operations_fail_at_once<E>(
    server: &crate::servers::TestServer,
    engine_at: impl Fn(&str, &Setup) -> E,
) where
    E: AsyncCacheEngine + Clone + 'static,
{
    let setup = Setup {
        max_queued_requests: Some(100),
        ..Setup::default()
    };
    let engine = engine_at(&server.address(), &setup);
    runtime()
        .block_on(engine.set("bounded", Bytes::from_static(b"v"), Ttl::Default))
        .unwrap_or_else(|e| panic!("set before the stop: {e}"));
    server.signal("STOP");
    let refused = Arc::new(Mutex::new(Vec::new()));
    runtime().block_on(async {
        let mut handles = Vec::new();
        for _ in 0..1000 {
            let (engine, refused) = (engine.clone(), Arc::clone(&refused));
            handles.push(tokio::spawn(async move {
                let start = Instant::now();
                if let Err(CacheError::Overloaded { .. }) = engine.get("bounded").await {
                    refused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(start.elapsed());
                }
            }));
        }
        for handle in handles {
            let _ = handle.await;
        }
    });
    server.signal("CONT");
    let refused = std::mem::take(&mut *refused.lock().unwrap_or_else(|p| p.into_inner()));
    let slowest = refused.iter().max().copied().unwrap_or_default();
    eprintln!(
        "queue bound 100, 1000 gets on a stopped server: {} refused, the slowest refusal in \
         {slowest:?}",
        refused.len()
    );
    assert!(refused.len() >= 800, "only {} refused", refused.len());
    assert!(
        slowest <= Duration::from_millis(100) + SLACK,
        "a refusal took {slowest:?}"
    );
    let error = runtime().block_on(engine.get("bounded"));
    let start = Instant::now();
    let mut last = error.map(drop);
    while last.is_err() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        last = runtime().block_on(engine.get("bounded")).map(drop);
    }
    assert!(
        last.is_ok(),
        "not serving after the server resumed: {last:?}"
    );
}

/// A steady flood of 20,000 gets a second for 8 s, against a server stopped (SIGSTOP) from
/// 1 s to 7 s: every get ends within its bound; resident memory grows by at most
/// `memory_bound` bytes in all, and by at most 12 MiB between 2 s and 7 s, while the stall goes
/// on (it levels off instead of growing with the stall; run it in a child process: see
/// [`run_in_child`](crate::hostile::run_in_child)); and the server, once resumed, runs few of
/// the gets whose callers had gone: at most `executed_bound` in all (those written before
/// their callers gave up).
///
/// # Panics
///
/// When a get overruns, memory grows past the bound, or the server runs too many gets for
/// callers that had gone.
pub fn a_flood_against_a_stopped_server_stays_bounded<E>(
    server: &crate::servers::TestServer,
    memory_bound: u64,
    executed_bound: u64,
    engine_at: impl Fn(&str, &Setup) -> E,
) where
    E: AsyncCacheEngine + Clone + 'static,
{
    use crate::hostile::{peak_rss, reset_peak_rss};

    let setup = Setup::default();
    let bound = setup.timeout + setup.connect_timeout;
    let engine = engine_at(&server.address(), &setup);
    runtime()
        .block_on(engine.set("flood-0", Bytes::from_static(b"v"), Ttl::Default))
        .unwrap_or_else(|e| panic!("set before the flood: {e}"));
    let served_before = server
        .gets_served()
        .unwrap_or_else(|| panic!("server stats"));
    reset_peak_rss();
    let before = peak_rss();
    let pid = server.pid();
    let signal = move |name: &str| {
        if let Some(pid) = pid {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid.to_string()])
                .status();
        }
    };
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampled = Arc::clone(&samples);
    let report = flood(&engine, 20_000, Duration::from_secs(8), move || {
        let sample = || {
            sampled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(crate::hostile::current_rss().unwrap_or(0));
        };
        std::thread::sleep(Duration::from_secs(1));
        signal("STOP");
        std::thread::sleep(Duration::from_secs(1));
        sample();
        std::thread::sleep(Duration::from_millis(4900));
        sample();
        std::thread::sleep(Duration::from_millis(100));
        signal("CONT");
    });
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    let stall_growth = match samples.as_slice() {
        [first, last] if *first > 0 => Some(last.saturating_sub(*first)),
        _ => None,
    };
    server.signal("CONT");
    let grown = peak_rss()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    // What the server still had to read when it resumed, it runs now.
    std::thread::sleep(Duration::from_secs(1));
    let served = server
        .gets_served()
        .unwrap_or_else(|| panic!("server stats"))
        .saturating_sub(served_before);
    let abandoned = served.saturating_sub(report.ok);
    eprintln!(
        "flood of {} gets, server stopped 6 s: {report:?}; the server ran {served} gets, {abandoned} \
         for callers that had gone; peak resident memory grew by {} MiB, by {} KiB from 2 s to \
         7 s",
        report.started,
        grown.unwrap_or_default() >> 20,
        stall_growth.unwrap_or_default() >> 10
    );
    if let Some(stall_growth) = stall_growth {
        assert!(
            stall_growth <= 12 << 20,
            "resident memory grew by {} MiB from 2 s to 7 s, as the stall went on",
            stall_growth >> 20
        );
    }
    assert!(
        report.slowest <= bound + SLACK,
        "a get took {:?}",
        report.slowest
    );
    if let Some(grown) = grown {
        assert!(
            grown <= memory_bound,
            "peak resident memory grew by {} MiB (bound {} MiB)",
            grown >> 20,
            memory_bound >> 20
        );
    }
    assert!(
        abandoned <= executed_bound,
        "the server ran {abandoned} gets for callers that had gone (bound {executed_bound})"
    );
}

/// 16 tasks on an engine of 4 pipelines behind a proxy that jitters both directions, 400
/// rounds each of [`order_run`]: no read ever returns an older version than a write already
/// acknowledged to the same task.
///
/// # Panics
///
/// When a read is older, or too few writes were cancelled for the run to mean something.
pub fn per_key_order_holds_across_pipelines<E>(server: &str, engine_at: impl Fn(&str, &Setup) -> E)
where
    E: AsyncCacheEngine + Clone + 'static,
{
    use crate::proxy::{Fault, FaultProxy};

    let proxy = FaultProxy::start(server).unwrap_or_else(|e| panic!("proxy: {e}"));
    proxy.set(Fault::JitterBoth);
    let setup = Setup {
        timeout: Duration::from_secs(2),
        pipelines: 4,
        ..Setup::default()
    };
    let engine = engine_at(proxy.address(), &setup);
    let report = order_run(&engine, 16, 400);
    eprintln!("per-key order, 4 pipelines: {report:?}");
    assert_eq!(report.older, 0, "{report:?}");
    assert!(
        report.cancelled > 500 && report.reads > 3000,
        "too few cancelled writes or reads to mean something: {report:?}"
    );
}

/// A fake server announces a value of 400 MiB (under a 512 MiB limit) for each get and then
/// sends a byte every 100 ms: 4 concurrent gets on an engine of 4 pipelines each fail in
/// time, and resident memory grows by at most 32 MiB (run it in a child process).
///
/// # Panics
///
/// When a get succeeds or overruns, or memory grows past the bound.
pub fn a_large_announced_reply_takes_memory_as_it_arrives<E>(
    dialect: crate::hostile::Dialect,
    engine_at: impl Fn(&str, &Setup) -> E,
) where
    E: AsyncCacheEngine + Clone + 'static,
{
    use crate::hostile::{HostileServer, Misbehaviour, peak_rss, reset_peak_rss};

    let server = HostileServer::start(
        dialect,
        Misbehaviour::SlowValue {
            announced: 400 << 20,
            every: Duration::from_millis(100),
        },
    )
    .unwrap_or_else(|e| panic!("hostile server: {e}"));
    let setup = Setup {
        pipelines: 4,
        max_value_size: Some(512 << 20),
        ..Setup::default()
    };
    let bound = setup.timeout + setup.connect_timeout;
    let engine = engine_at(server.address(), &setup);
    reset_peak_rss();
    let before = peak_rss();
    let results: Vec<(Duration, bool)> = runtime().block_on(async {
        let mut handles = Vec::new();
        for i in 0..4 {
            let engine = engine.clone();
            handles.push(tokio::spawn(async move {
                let start = Instant::now();
                let ok = engine.get(&format!("large-{i}")).await.is_ok();
                (start.elapsed(), ok)
            }));
        }
        let mut results = Vec::new();
        for handle in handles {
            if let Ok(result) = handle.await {
                results.push(result);
            }
        }
        results
    });
    let grown = peak_rss()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    eprintln!(
        "{dialect:?}: 400 MiB announced, trickled, 4 pipelines: {results:?}; peak resident \
         memory grew by {} MiB",
        grown.unwrap_or_default() >> 20
    );
    assert_eq!(results.len(), 4);
    for (took, ok) in results {
        assert!(!ok, "a get succeeded");
        assert!(took <= bound + SLACK, "a get took {took:?}");
    }
    if let Some(grown) = grown {
        assert!(grown <= 32 << 20, "grew by {} MiB", grown >> 20);
    }
}
