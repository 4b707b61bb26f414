//! Two real processes and a real Redis: process A (this test) overwrites and deletes a key
//! 10,000 times through a tiered engine, while process B (this test binary again, started as
//! a reader) reads it in a loop through its own tiered engine, and both processes' Redis
//! connections, B's invalidation feed included, are killed with `CLIENT KILL` every second.
//!
//! The same runs on a Redis Cluster (3 masters with a replica each) under topology faults: the
//! key's slot is migrated to another master, then that master is killed (SIGKILL) and its
//! replica takes over.
//!
//! For each change, the staleness is how long after A's write returned B still served an older
//! state. The test fails if any exceeds B's stated staleness bound, or if B ever went back to
//! an older state; it prints p50, p99 and max (and writes them to
//! `target/<test name>.txt`).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_local::InMemoryEngine;
use cache_redis::RedisEngine;
use cache_tests::servers::{OrSkip, ServerKind, TestServer};
use cache_tests::topologies::RedisCluster;
use cache_tiered::TieredEngine;

const READER: &str = "CACHE_TIERED_TWO_PROCESSES_READER";
/// The key the reader reads, when not [`KEY`].
const READER_KEY: &str = "CACHE_TIERED_TWO_PROCESSES_KEY";
const CHANGES: u64 = 10_000;
const NAMESPACE: &str = "two-processes";
const KEY: &str = "k";

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn tiered(url: &str) -> TieredEngine<InMemoryEngine, RedisEngine> {
    let shared = RedisEngine::builder()
        .url(url)
        .namespace(NAMESPACE)
        .build()
        .unwrap();
    let feed = shared.invalidations();
    TieredEngine::builder(InMemoryEngine::new(), shared)
        .invalidations(feed)
        .build()
        .unwrap()
}

/// A run of reads that saw one state: `state` is the version read, or -1 for "absent".
struct Run {
    state: i64,
    first_start: u64,
    last_end: u64,
}

/// Process B: reads until its standard input closes, then prints its runs.
fn reader(url: &str) {
    let key = std::env::var(READER_KEY).unwrap_or_else(|_| KEY.to_string());
    let key = key.as_str();
    let cache = tiered(url);
    let start = Instant::now();
    while !cache.is_caching_locally() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the feed never came up"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        flag.store(true, Ordering::Release);
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut runs: Vec<Run> = Vec::with_capacity(2 * CHANGES as usize);
    let mut errors = 0u64;
    let mut reads = 0u64;
    // A's last change is a delete when CHANGES is a multiple of five.
    let last_state = if CHANGES % 5 == 0 { -1 } else { CHANGES as i64 };
    let mut stopping: Option<Instant> = None;
    // The reads after A is done start a run of their own (a run of "absent" must not reach
    // back before that), so the last run shows only what B read once every change was made.
    let mut split = false;
    loop {
        // After A is done, read on until the last change shows (a busy machine can hold this
        // process off the CPU right then), within the staleness bound and a second.
        if stopping.is_none() && done.load(Ordering::Acquire) {
            stopping = Some(Instant::now());
            split = true;
        }
        if let Some(since) = stopping {
            let caught_up = !split && runs.last().is_some_and(|run| run.state == last_state);
            if caught_up || since.elapsed() > cache.staleness_bound() + Duration::from_secs(1) {
                break;
            }
        }
        let started = now_ns();
        let state = match cache.get(key) {
            Ok(Some(value)) => std::str::from_utf8(&value).unwrap().parse::<i64>().unwrap(),
            Ok(None) => -1,
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        let ended = now_ns();
        reads += 1;
        let fresh = std::mem::take(&mut split);
        match runs.last_mut() {
            Some(run) if run.state == state && !fresh => run.last_end = ended,
            _ => runs.push(Run {
                state,
                first_start: started,
                last_end: ended,
            }),
        }
        // Leave the other core some room: A, Redis and this process's feed share two.
        std::thread::sleep(Duration::from_micros(20));
    }
    let mut out = std::io::stdout().lock();
    for run in &runs {
        writeln!(
            out,
            "run {} {} {}",
            run.state, run.first_start, run.last_end
        )
        .unwrap();
    }
    let stats = cache.stats();
    writeln!(
        out,
        "end reads={reads} errors={errors} feed_lost={} bound_ms={}",
        stats.feed_lost,
        cache.staleness_bound().as_millis()
    )
    .unwrap();
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// What a fault thread reports once A is done writing.
struct Faults {
    /// What happened, for the report.
    summary: String,
    /// Whether every fault meant to happen did.
    happened: bool,
}

#[test]
fn staleness_across_two_processes() {
    if let Ok(url) = std::env::var(READER) {
        reader(&url);
        return;
    }
    let Some(server) = TestServer::start(ServerKind::Redis, &[]).or_skip() else {
        return;
    };
    let url = server.url();
    // Kill every client but the admin one, alternately the feeds and the normal connections,
    // every second while A writes.
    let killer_url = url.clone();
    let faults = move |writing: Arc<AtomicBool>, _paused: Arc<AtomicBool>| {
        let mut raw = redis::Client::open(killer_url)
            .unwrap()
            .get_connection()
            .unwrap();
        let (mut rounds, mut kills) = (0u64, 0u64);
        let mut last = Instant::now();
        while writing.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(10));
            if last.elapsed() < Duration::from_secs(1) {
                continue;
            }
            last = Instant::now();
            let kind = if rounds % 2 == 0 { "pubsub" } else { "normal" };
            rounds += 1;
            let killed: u64 = redis::cmd("CLIENT")
                .arg(&["KILL", "TYPE", kind, "SKIPME", "yes"][..])
                .query(&mut raw)
                .unwrap();
            kills += killed;
        }
        Faults {
            summary: format!("{kills} connections killed in {rounds} rounds"),
            happened: rounds >= 4 && kills >= rounds,
        }
    };
    two_processes("staleness_across_two_processes", &url, KEY, faults);
}

/// On a cluster: the key's slot migrates to another master a second into A's writes, and that
/// master is killed a second after, so that its replica takes over. A pauses while the kill is
/// made: Redis loses writes a master acknowledged just before it died (asynchronous
/// replication), which would show here as B going back, not as a fault of the tiers.
#[test]
fn staleness_across_two_processes_on_a_cluster() {
    if let Ok(url) = std::env::var(READER) {
        reader(&url);
        return;
    }
    let Some(cluster) = RedisCluster::start(3, 1).or_skip() else {
        return;
    };
    let cluster = Arc::new(cluster);
    let url = cluster.url();
    let mut admin = redis::Client::open(format!("redis://{}", cluster.addresses()[0]))
        .unwrap()
        .get_connection()
        .unwrap();
    let masters = cluster.masters();
    let slot_of = |raw: &mut redis::Connection, key: &str| -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(raw)
            .unwrap()
    };
    // The slots of the master holding slot 0, lowest first: `reshard` moves the lowest ones.
    let first_master = cluster
        .cluster_nodes()
        .lines()
        .find(|line| {
            line.contains("master") && line.split_whitespace().any(|f| f.starts_with("0-"))
        })
        .and_then(|line| line.split_whitespace().next().map(str::to_string))
        .expect("a master serves slot 0");
    let key = (0..)
        .map(|n| format!("k{n}"))
        .find(|k| slot_of(&mut admin, &format!("{NAMESPACE}:{k}")) < 500)
        .unwrap();
    let other = masters
        .iter()
        .find(|(_, id)| *id != first_master)
        .map(|(_, id)| id.clone())
        .unwrap();
    let faults_cluster = Arc::clone(&cluster);
    let faults = move |writing: Arc<AtomicBool>, paused: Arc<AtomicBool>| {
        let cluster = faults_cluster;
        let started = Instant::now();
        let wait_until = |at: Duration| {
            while started.elapsed() < at && writing.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
            }
            writing.load(Ordering::Acquire)
        };
        if !wait_until(Duration::from_secs(1)) {
            return Faults {
                summary: "A was done before the faults".into(),
                happened: false,
            };
        }
        let moved = cluster
            .reshard(&first_master, &other, 1000)
            .is_ok_and(|out| out.contains("Moving slot"));
        let resharded = started.elapsed();
        if !wait_until(resharded + Duration::from_secs(1)) {
            return Faults {
                summary: format!("slot migrated: {moved}; A was done before the kill"),
                happened: false,
            };
        }
        // The key's master now: the one the slot moved to.
        let victim = cluster
            .masters()
            .into_iter()
            .find(|(_, id)| *id == other)
            .map(|(address, _)| address);
        paused.store(true, Ordering::Release);
        // Let A's last write replicate before the kill.
        std::thread::sleep(Duration::from_millis(200));
        let killed = victim
            .as_deref()
            .and_then(|address| cluster.node(address))
            .map(|node| node.stop())
            .is_some();
        paused.store(false, Ordering::Release);
        let failed_over = victim
            .as_deref()
            .is_some_and(|address| cluster.wait_for_failover(address, Duration::from_secs(30)));
        Faults {
            summary: format!(
                "slot migrated: {moved} (after {resharded:?}), master killed: {killed}, \
                 failed over: {failed_over}"
            ),
            happened: moved && killed && failed_over,
        }
    };
    two_processes(
        "staleness_across_two_processes_on_a_cluster",
        &url,
        &key,
        faults,
    );
}

/// Runs A here and B as a child process (this test binary again, running `test`), with
/// `faults` in a thread of A beside the writes, and checks B's staleness.
fn two_processes<F>(test: &str, url: &str, key: &str, faults: F)
where
    F: FnOnce(Arc<AtomicBool>, Arc<AtomicBool>) -> Faults + Send + 'static,
{
    let writer = tiered(url);
    writer
        .set(key, Bytes::from_static(b"0"), Ttl::Never)
        .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(READER, url)
        .env(READER_KEY, key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the reader said nothing").unwrap();
        // The harness may print its own words before ours on the line.
        if line.ends_with("ready") {
            break;
        }
    }

    let writing = Arc::new(AtomicBool::new(true));
    let paused = Arc::new(AtomicBool::new(false));
    let fault_thread = {
        let (writing, paused) = (Arc::clone(&writing), Arc::clone(&paused));
        std::thread::spawn(move || faults(writing, paused))
    };

    // A: every fifth change is a delete; a write cut by a kill is retried (the retry is
    // harmless for both kinds) and counts from when one succeeded.
    let mut acked = vec![0u64; CHANGES as usize + 1];
    let mut deleted = vec![false; CHANGES as usize + 1];
    let mut retries = 0u64;
    for version in 1..=CHANGES {
        while paused.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let is_delete = version % 5 == 0;
        deleted[version as usize] = is_delete;
        loop {
            let result = if is_delete {
                writer.delete(key).map(drop)
            } else {
                writer.set(key, Bytes::from(version.to_string()), Ttl::Never)
            };
            match result {
                Ok(()) => break,
                Err(e) => {
                    assert!(e.is_transient(), "{e}");
                    retries += 1;
                    // While a master is replaced, every try fails for seconds.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        acked[version as usize] = now_ns();
        std::thread::sleep(Duration::from_micros(300));
    }
    writing.store(false, Ordering::Release);
    let faults = fault_thread.join().unwrap();
    drop(child.stdin.take());

    let mut runs = Vec::new();
    let mut end = String::new();
    for line in lines {
        let line = line.unwrap();
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("run") => {
                let mut num = || parts.next().unwrap().parse::<i64>().unwrap();
                let (state, first_start, last_end) = (num(), num(), num());
                runs.push(Run {
                    state,
                    first_start: first_start as u64,
                    last_end: last_end as u64,
                });
            }
            Some("end") => end = line.clone(),
            _ => {}
        }
    }
    assert!(child.wait().unwrap().success(), "the reader failed");
    assert!(!runs.is_empty(), "the reader read nothing");

    // The version each run saw: a value names its own; "absent" is the first delete after
    // the previous run's version (deletes are seen in order, or the check below fails).
    let mut versions = Vec::with_capacity(runs.len());
    let mut previous = 0u64;
    for (i, run) in runs.iter().enumerate() {
        let version = if run.state >= 0 {
            run.state as u64
        } else if i + 1 == runs.len() && deleted[CHANGES as usize] {
            // The last run holds only reads made after every change: absent there is the
            // last change itself.
            CHANGES
        } else {
            (previous + 1..=CHANGES)
                .find(|&d| deleted[d as usize])
                .unwrap_or(CHANGES)
        };
        assert!(
            version >= previous,
            "B went back from version {previous} to {version}: a stale value stuck"
        );
        versions.push(version);
        previous = version;
    }
    assert_eq!(previous, CHANGES, "B saw the last change");

    // For change v: the last time B still served a version older than v, after v was acked.
    let mut last_end_below = vec![0u64; CHANGES as usize + 2];
    for (run, &version) in runs.iter().zip(&versions) {
        let slot = &mut last_end_below[version as usize + 1];
        *slot = (*slot).max(run.last_end);
    }
    for v in 1..last_end_below.len() {
        last_end_below[v] = last_end_below[v].max(last_end_below[v - 1]);
    }
    let mut stale: Vec<u64> = (1..=CHANGES as usize)
        .map(|v| last_end_below[v].saturating_sub(acked[v]))
        .collect();
    stale.sort_unstable();
    let (p50, p99, max) = (
        percentile(&stale, 0.50),
        percentile(&stale, 0.99),
        *stale.last().unwrap(),
    );
    let bound_ms: u64 = end
        .split_whitespace()
        .find_map(|f| f.strip_prefix("bound_ms="))
        .and_then(|b| b.parse().ok())
        .expect("the reader reported its bound");
    let report = format!(
        "two processes ({test}), {CHANGES} changes (every 5th a delete), {}: staleness p50 \
         {:.3} ms, \
         p99 {:.3} ms, max {:.3} ms; bound {bound_ms} ms; changes with any staleness {}; \
         writer retries {retries}; reader {end}",
        faults.summary,
        p50 as f64 / 1e6,
        p99 as f64 / 1e6,
        max as f64 / 1e6,
        stale.iter().filter(|&&s| s > 0).count(),
    );
    eprintln!("{report}");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::write(target.join(format!("{test}.txt")), format!("{report}\n"));
    assert!(faults.happened, "the faults happened: {report}");
    assert!(
        max <= bound_ms * 1_000_000,
        "B served an old value longer than its stated bound: {report}"
    );
}
