//! Side-by-side benchmarks of cache-toolkit against the crates a user would pick instead.
//!
//! ```text
//! cargo run -p cache-bench --release -- [--quick]
//! ```
//!
//! Starts its own `redis-server` and `memcached` on free loopback ports, runs every comparison
//! in one process, interleaving the contenders in short alternating blocks and reporting
//! medians, and prints one table of ratios with the absolute figures beside them. The full run
//! (without `--quick`) also writes `docs/BENCHMARKS.md` and `docs/benchmarks.svg`.
#![forbid(unsafe_code)]

mod asynchronous;
mod batch;
mod compression;
mod http;
mod layers;
mod local;
mod measure;
mod memoize;
mod memory;
mod refresh;
mod remote;
mod report;
mod scale;
mod tiered;
mod traces;
mod typed;
mod unix;
mod workload;

use std::fmt;
use std::time::Instant;

use cache_tests::servers::{ServerKind, TestServer};

/// How much work each comparison does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    name: &'static str,
    rounds: usize,
    local_ops: usize,
    stream_len: usize,
    ratio_requests: usize,
    remote_ops: usize,
    codec_ops: usize,
    memory_rounds: usize,
    /// Trials of each way of reading through an expiry (rows 19 and 20), 0.7 s each.
    refresh_trials: usize,
}

impl Plan {
    fn full() -> Self {
        Self {
            name: "full",
            rounds: 9,
            local_ops: 2_000_000,
            stream_len: 4_000_000,
            ratio_requests: 2_000_000,
            remote_ops: 10_000,
            codec_ops: 400_000,
            memory_rounds: 3,
            refresh_trials: 18,
        }
    }
    fn quick() -> Self {
        Self {
            name: "quick",
            rounds: 3,
            local_ops: 400_000,
            stream_len: 1_000_000,
            ratio_requests: 600_000,
            remote_ops: 2_000,
            codec_ops: 100_000,
            memory_rounds: 1,
            refresh_trials: 3,
        }
    }
    fn smoke() -> Self {
        Self {
            name: "smoke",
            rounds: 1,
            local_ops: 2_000,
            stream_len: 10_000,
            ratio_requests: 20_000,
            remote_ops: 32,
            codec_ops: 200,
            memory_rounds: 1,
            refresh_trials: 2,
        }
    }
}

/// What a comparison aims for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Goal {
    AtLeast(f64),
    AtMost(f64),
    None,
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Goal::AtLeast(g) => write!(f, ">= {g}"),
            Goal::AtMost(g) => write!(f, "<= {g}"),
            Goal::None => f.write_str("-"),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    id: u8,
    name: String,
    ours: f64,
    baseline: f64,
    unit: &'static str,
    goal: Goal,
}

impl Row {
    fn rate(id: u8, name: &str, ours: f64, baseline: f64, goal: Goal) -> Self {
        Self {
            id,
            name: name.into(),
            ours,
            baseline,
            unit: "ops/s",
            goal,
        }
    }

    fn plain(id: u8, name: &str, ours: f64, baseline: f64, unit: &'static str, goal: Goal) -> Self {
        Self {
            id,
            name: name.into(),
            ours,
            baseline,
            unit,
            goal,
        }
    }

    fn ratio(&self) -> f64 {
        self.ours / self.baseline
    }

    fn met(&self) -> Option<bool> {
        match self.goal {
            Goal::AtLeast(g) => Some(self.ratio() >= g),
            Goal::AtMost(g) => Some(self.ratio() <= g),
            Goal::None => None,
        }
    }

    /// Ratio over goal, oriented so that >= 1 means met.
    fn score(&self) -> f64 {
        match self.goal {
            Goal::AtLeast(g) if g > 0.0 => self.ratio() / g,
            Goal::AtMost(g) => g / self.ratio(),
            _ => 1.0,
        }
    }

    fn show(&self, v: f64) -> String {
        match self.unit {
            "ops/s" if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
            "ops/s" => format!("{:.1} k/s", v / 1e3),
            "hit ratio" => format!("{v:.3}"),
            unit => format!("{v:.1} {unit}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-probe") {
        let which = args.get(i + 1).map(String::as_str).unwrap_or_default();
        match memory::probe(which) {
            Some(bytes) => println!("{bytes}"),
            None => std::process::exit(1),
        }
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--traces") {
        let paths: Vec<String> = args[i + 1..]
            .iter()
            .take_while(|a| !a.starts_with("--"))
            .cloned()
            .collect();
        match traces::run(&paths) {
            Ok(section) => {
                println!("{section}");
                if std::env::var_os("CACHE_TRACE_POLICIES").is_none() {
                    write_trace_section(&section);
                }
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let plan = if args.iter().any(|a| a == "--smoke") {
        Plan::smoke()
    } else if args.iter().any(|a| a == "--quick") {
        Plan::quick()
    } else {
        Plan::full()
    };
    if cfg!(debug_assertions) && plan.name != "smoke" {
        eprintln!("warning: a debug build; run with --release for meaningful numbers");
    }
    let start = Instant::now();
    let mut rows = Vec::new();
    let mut sections: Vec<String> = Vec::new();
    // CACHE_BENCH_ONLY=local,typed,remote,memory runs a subset, for profiling (`tiered` alone:
    // row 17 by itself; `async` alone: rows 11 and 13).
    let only = std::env::var("CACHE_BENCH_ONLY").ok();
    let wanted = |part: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == part))
    };
    let step = |what: &str| eprintln!("[{:>5.1}s] {what}", start.elapsed().as_secs_f64());
    if wanted("local") {
        step("local engines");
        local::run(&plan, &mut rows);
        asynchronous::run_local(&plan, &mut rows);
    }
    if wanted("http") {
        step("http cache");
        if let Err(e) = http::run(&plan, &mut rows) {
            eprintln!("http comparisons failed: {e}");
            std::process::exit(1);
        }
    }
    if wanted("typed") {
        step("typed layer");
        typed::run(&plan, &mut rows);
        compression::run(&plan, &mut rows);
        memoize::run(&plan, &mut rows);
        step("refresh ahead");
        sections.push(refresh::run(&plan, &mut rows));
    }
    if wanted("remote") {
        step("remote engines");
        let redis = TestServer::start(ServerKind::Redis, &[]);
        let memcached = TestServer::start(ServerKind::Memcached, &[]);
        match (redis, memcached) {
            (Ok(redis), Ok(memcached)) => {
                if let Err(e) = remote::run(&plan, &redis, &memcached, &mut rows)
                    .and_then(|()| asynchronous::run_remote(&plan, &redis, &memcached, &mut rows))
                    .and_then(|()| layers::run(&plan, &redis, &mut rows))
                    .and_then(|()| batch::run(&plan, &redis, &mut rows))
                    .and_then(|()| {
                        step("tiered");
                        tiered::run(&plan, &redis, &mut rows)
                    })
                    .and_then(|()| {
                        step("several servers");
                        scale::run(&plan, &redis, &memcached, &mut rows)
                    })
                    .and_then(|()| {
                        step("unix sockets");
                        unix::run(&plan, &memcached, &mut rows)
                    })
                {
                    eprintln!("remote comparisons failed: {e}");
                    std::process::exit(1);
                }
            }
            (redis, memcached) => {
                eprintln!(
                    "remote comparisons failed: no test servers ({} / {})",
                    redis.err().map(|e| e.to_string()).unwrap_or_default(),
                    memcached.err().map(|e| e.to_string()).unwrap_or_default()
                );
                std::process::exit(1);
            }
        }
    }
    if only.as_deref() == Some("async") {
        // Rows 11 and 13 alone, for profiling (the full run has them among the remote rows).
        step("async remote engines");
        let redis = TestServer::start(ServerKind::Redis, &[]).unwrap_or_else(|e| panic!("{e}"));
        let memcached =
            TestServer::start(ServerKind::Memcached, &[]).unwrap_or_else(|e| panic!("{e}"));
        if let Err(e) = asynchronous::run_remote(&plan, &redis, &memcached, &mut rows) {
            eprintln!("async comparisons failed: {e}");
            std::process::exit(1);
        }
    }
    if only.as_deref() == Some("tiered") {
        // Row 17 alone, for profiling (the full run has it among the remote rows).
        step("tiered");
        let redis = TestServer::start(ServerKind::Redis, &[]).unwrap_or_else(|e| panic!("{e}"));
        remote::pin(&[&redis]);
        if let Err(e) = tiered::run(&plan, &redis, &mut rows) {
            eprintln!("tiered comparisons failed: {e}");
            std::process::exit(1);
        }
    }
    if wanted("memory") {
        step("memory");
        memory::run(&plan, &mut rows);
    }
    rows.sort_by_key(|r| r.id);
    let table = report::table(&rows);
    println!(
        "\n{} run, {:.1} s\n\n{table}\n{}",
        plan.name,
        start.elapsed().as_secs_f64(),
        sections.concat()
    );
    if plan.name == "full" {
        write_docs(&table, &rows, &sections, start.elapsed().as_secs_f64());
    }
}

const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs");

/// Puts a trace run's section into `docs/BENCHMARKS.md`, in place of the previous one.
fn write_trace_section(section: &str) {
    let path = format!("{DOCS}/BENCHMARKS.md");
    let marked = format!("{}\n{section}{}", traces::BEGIN, traces::END);
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let doc = match traces::existing_section(&doc) {
        Some(old) => doc.replacen(old, &marked, 1),
        None => match doc.find("## Machine") {
            Some(at) => format!("{}{marked}\n\n{}", &doc[..at], &doc[at..]),
            None => format!("{doc}\n{marked}\n"),
        },
    };
    match std::fs::write(&path, doc) {
        Ok(()) => eprintln!("wrote the trace section of docs/BENCHMARKS.md"),
        Err(e) => eprintln!("could not write docs: {e}"),
    }
}

fn write_docs(table: &str, rows: &[Row], sections: &[String], seconds: f64) {
    let root = DOCS;
    // The trace section comes from a separate run (`--traces`): keep the one written last.
    let kept = std::fs::read_to_string(format!("{root}/BENCHMARKS.md"))
        .ok()
        .and_then(|doc| traces::existing_section(&doc).map(|s| format!("{s}\n\n")))
        .unwrap_or_default();
    let doc = format!(
        "# Benchmarks\n\n\
         Written by `cargo run -p cache-bench --release` (the full run, {seconds:.0} s). Every line is a ratio\n\
         measured in one process run: the contenders run in short alternating blocks and each figure is\n\
         the median of the blocks. Absolute numbers drift 20-40 % between runs on these machines; the\n\
         ratios are what to read. Baselines run on their own fast paths (their default hashers, `Bytes`\n\
         values of the same sizes).\n\n\
         On these 2-vCPU machines the two-thread local comparisons fall into one of two modes for\n\
         minutes at a time, depending on how the host places the vCPUs: in one, quick_cache itself\n\
         scales 1.25x from one thread to two; in the other it drops to about 0.42x, and so does\n\
         every ratio that depends on cross-core traffic (our hits ratio was 0.93 in the first mode\n\
         and 0.70 in the second). The reference rows show which mode a run was in.\n\n\
         The HTTP cache's result on the standard conformance suite, beside the published caches, is in\n\
         [HTTP-CACHE-TESTS.md](HTTP-CACHE-TESTS.md).\n\n\
         ![ratios against goals](benchmarks.svg)\n\n\
         {table}\n\
         {}\
         {}\
         {kept}\
         ## Machine\n\n{}\n\
         ## Workloads\n\n\
         - Local: 100k keys, capacity 10k, Zipf s = 0.8 and 1.0 from a fixed-seed SplitMix64, 64-byte values;\n\
           hits on a hot set of 5k present keys; hit ratios measured over the second half of the stream.\n\
         - Remote: one connection, a ~64-byte struct (bincode plus the 11-byte envelope), 64-byte raw values for\n\
           `get_many`; the servers are started by the harness on free loopback ports.\n\
         - Memory: 100k entries with 64-byte values, resident memory growth in a fresh process per cache.\n\n\
         ## Rerun\n\n\
         ```sh\ncargo run -p cache-bench --release            # full run, rewrites this file and the chart\n\
         cargo run -p cache-bench --release -- --quick # under 45 s (the build aside), prints the table only\n\
         cargo run -p cache-bench --release -- --traces OLTP.lis.zst P3.lis.zst loop.trace.gz ...\n\
         # hit ratios on real traces: rewrites the trace section only\n```\n",
        report::unmet_notes(rows),
        sections.concat(),
        report::machine()
    );
    let written = std::fs::write(format!("{root}/BENCHMARKS.md"), doc)
        .and_then(|()| std::fs::write(format!("{root}/benchmarks.svg"), report::svg(rows)));
    match written {
        Ok(()) => eprintln!("wrote docs/BENCHMARKS.md and docs/benchmarks.svg"),
        Err(e) => eprintln!("could not write docs: {e}"),
    }
}
