//! Row 26: hit ratios on real traces, replayed as a read-through cache (a miss inserts; one entry
//! per block), for `InMemoryEngine` beside LRU, moka (W-TinyLFU) and the clairvoyant optimum.
//!
//! The traces are not in the repository; pass their paths with `--traces` (see
//! `docs/BENCHMARKS.md` for where to get them). Two formats, by file name, each optionally
//! compressed (`.zst`, `.gz`):
//! - `*.lis`: the ARC paper's traces; a line `start count ...` requests the blocks
//!   `start..start + count`.
//! - anything else: the LIRS traces; one block number per line (other lines are skipped).

use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_local::InMemoryEngine;

/// One trace, read into memory.
pub(crate) struct Trace {
    pub(crate) name: String,
    keys: Vec<u64>,
    /// For each request, the index of the next request for the same key (`usize::MAX`: none).
    next: Vec<usize>,
    unique: usize,
}

impl Trace {
    pub(crate) fn load(path: &Path) -> std::io::Result<Self> {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let file = std::fs::File::open(path)?;
        let reader: Box<dyn Read> = if file_name.ends_with(".zst") {
            Box::new(zstd::stream::read::Decoder::new(file)?)
        } else if file_name.ends_with(".gz") {
            Box::new(flate2::read::GzDecoder::new(file))
        } else {
            Box::new(file)
        };
        let base = file_name
            .trim_end_matches(".zst")
            .trim_end_matches(".gz")
            .to_string();
        let arc = base.ends_with(".lis");
        let name = base.split('.').next().unwrap_or_default().to_string();
        let mut keys = Vec::new();
        for line in BufReader::with_capacity(1 << 20, reader).lines() {
            let line = line?;
            let mut fields = line.split_ascii_whitespace();
            let Some(Ok(first)) = fields.next().map(str::parse::<u64>) else {
                continue;
            };
            if arc {
                let count = fields
                    .next()
                    .and_then(|c| c.parse::<u64>().ok())
                    .unwrap_or(1);
                keys.extend(first..first.saturating_add(count));
            } else {
                keys.push(first);
            }
        }
        let mut next = vec![usize::MAX; keys.len()];
        let mut last: HashMap<u64, usize> = HashMap::with_capacity(keys.len() / 4);
        for (i, key) in keys.iter().enumerate().rev() {
            if let Some(j) = last.insert(*key, i) {
                next[i] = j;
            }
        }
        Ok(Self {
            name,
            unique: last.len(),
            keys,
            next,
        })
    }

    /// The cache sizes to replay: the ARC paper's for its traces, and eight sizes spread over
    /// the footprint for the others.
    pub(crate) fn sizes(&self) -> Vec<usize> {
        match self.name.as_str() {
            "OLTP" => vec![1_000, 2_000, 5_000, 10_000, 15_000],
            n if n.starts_with('P') || n.starts_with('S') || n == "DS1" => {
                (10..=17).map(|p| 1usize << p).collect()
            }
            _ => {
                // The LIRS traces have footprints of a few thousand blocks: 1/16 .. 1/2 of it.
                let step = (self.unique / 16).max(1);
                (1..=8).map(|k| (k * step).max(1)).collect()
            }
        }
    }
}

/// A policy replayed over a trace.
#[derive(Clone, Debug)]
pub(crate) enum Policy {
    /// `InMemoryEngine` at its defaults with the shard count it picks on this many cores.
    Ours {
        cores: usize,
    },
    /// `InMemoryEngine` with this many shards, for tuning.
    OursShards {
        shards: usize,
    },
    Lru,
    Moka,
    Optimum,
    /// quick_cache itself with explicit options, for tuning: hot and ghost allocations, shards.
    QuickCache {
        hot: f64,
        ghost: f64,
        shards: usize,
    },
}

impl Policy {
    pub(crate) fn label(&self) -> String {
        match self {
            Policy::Ours { cores } => format!("ours ({cores} cores)"),
            Policy::OursShards { shards } => format!("ours ({shards} shards)"),
            Policy::Lru => "LRU".into(),
            Policy::Moka => "moka".into(),
            Policy::Optimum => "optimum".into(),
            Policy::QuickCache { hot, ghost, shards } => {
                format!("quick_cache {hot}/{ghost}/{shards}")
            }
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(':');
        Some(match parts.next()? {
            "ours" => Policy::Ours {
                cores: parts.next().map_or(Some(2), |c| c.parse().ok())?,
            },
            "shards" => Policy::OursShards {
                shards: parts.next()?.parse().ok()?,
            },
            "lru" => Policy::Lru,
            "moka" => Policy::Moka,
            "opt" => Policy::Optimum,
            "qc" => Policy::QuickCache {
                hot: parts.next()?.parse().ok()?,
                ghost: parts.next()?.parse().ok()?,
                shards: parts.next()?.parse().ok()?,
            },
            _ => return None,
        })
    }

    /// The policies to replay: `CACHE_TRACE_POLICIES=ours:2,ours:64,lru,moka,opt,qc:0.9:0.5:1`
    /// overrides the default set.
    pub(crate) fn selected() -> Vec<Self> {
        let default = vec![
            Policy::Ours { cores: 2 },
            Policy::Ours { cores: 64 },
            Policy::Lru,
            Policy::Moka,
            Policy::Optimum,
        ];
        match std::env::var("CACHE_TRACE_POLICIES") {
            Ok(list) => list.split(',').filter_map(Self::parse).collect(),
            Err(_) => default,
        }
    }

    /// The hit ratio in percent over the whole trace: for the policies whose hashes are seeded
    /// per instance (ours, moka), on traces of up to [`SHORT_TRACE`] requests, where one seed's
    /// figure strays by up to about a point, the mean of enough replays to replay about
    /// [`REPLAYED_REQUESTS`] requests (at least [`MIN_REPLAYS`], at most [`MAX_REPLAYS`]).
    pub(crate) fn replay(&self, trace: &Trace, size: usize) -> f64 {
        let seeded = matches!(
            self,
            Policy::Ours { .. } | Policy::OursShards { .. } | Policy::Moka
        );
        let replays = if seeded && trace.keys.len() <= SHORT_TRACE {
            (REPLAYED_REQUESTS / trace.keys.len().max(1)).clamp(MIN_REPLAYS, MAX_REPLAYS)
        } else {
            1
        };
        let hits: u64 = (0..replays).map(|_| self.replay_once(trace, size)).sum();
        100.0 * hits as f64 / (replays * trace.keys.len()).max(1) as f64
    }

    fn replay_once(&self, trace: &Trace, size: usize) -> u64 {
        match self {
            Policy::Ours { cores } => replay_ours(
                trace,
                size,
                cache_local::default_shards_for(size as u64, *cores),
            ),
            Policy::OursShards { shards } => replay_ours(trace, size, *shards),
            Policy::Lru => replay_lru(trace, size),
            Policy::Moka => replay_moka(trace, size),
            Policy::Optimum => replay_optimum(trace, size),
            Policy::QuickCache { hot, ghost, shards } => {
                replay_quick_cache(trace, size, *hot, *ghost, *shards)
            }
        }
    }
}

/// Requests replayed for a seeded policy on a short trace, in as many replays as that takes:
/// the spread of a mean over replays shrinks with their number, and the short traces are
/// cheap to replay (a cell of the LIRS traces then moves by about 0.1 between runs).
const REPLAYED_REQUESTS: usize = 5_000_000;
/// The fewest replays averaged for a seeded policy on a short trace.
const MIN_REPLAYS: usize = 10;
/// The most replays averaged for a seeded policy on a short trace.
const MAX_REPLAYS: usize = 100;
/// The longest trace replayed more than once: the LIRS traces and OLTP (the other ARC traces
/// have 4-13 million requests and are replayed once).
const SHORT_TRACE: usize = 1_000_000;

fn replay_ours(trace: &Trace, size: usize, shards: usize) -> u64 {
    let engine = InMemoryEngine::builder()
        .max_capacity(size as u64)
        .shards(shards)
        .default_ttl(Ttl::Never)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut key = String::with_capacity(24);
    read_through(trace, |k| {
        key.clear();
        let _ = write!(key, "{k}");
        matches!(engine.get(&key), Ok(Some(_))) || {
            let _ = engine.set(&key, Bytes::new(), Ttl::Default);
            false
        }
    })
}

fn replay_lru(trace: &Trace, size: usize) -> u64 {
    let cap = std::num::NonZeroUsize::new(size.max(1)).unwrap_or(std::num::NonZeroUsize::MIN);
    let mut lru = lru::LruCache::new(cap);
    read_through(trace, |k| {
        lru.get(&k).is_some() || {
            lru.put(k, ());
            false
        }
    })
}

/// Replays the trace as a read-through cache: `access` looks a key up, inserts it on a miss and
/// says whether it hit; returns the hits.
fn read_through(trace: &Trace, mut access: impl FnMut(u64) -> bool) -> u64 {
    trace.keys.iter().filter(|&&k| access(k)).count() as u64
}

fn replay_moka(trace: &Trace, size: usize) -> u64 {
    let cache = moka::sync::Cache::builder()
        .max_capacity(size as u64)
        .build();
    read_through(trace, |k| {
        cache.get(&k).is_some() || {
            cache.insert(k, ());
            false
        }
    })
}

fn replay_quick_cache(trace: &Trace, size: usize, hot: f64, ghost: f64, shards: usize) -> u64 {
    // quick_cache keeps `ghost_allocation * estimated_items_capacity` ghosts, the allocation at
    // most 1: a larger estimate gives more ghosts (it sizes nothing else in advance).
    let scale = ghost.max(1.0);
    let options = quick_cache::OptionsBuilder::new()
        .estimated_items_capacity((size as f64 * scale).ceil() as usize)
        .weight_capacity(size as u64)
        .hot_allocation(hot)
        .ghost_allocation(ghost / scale)
        .shards(shards)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let cache: quick_cache::sync::Cache<u64, ()> = quick_cache::sync::Cache::with_options(
        options,
        quick_cache::UnitWeighter,
        quick_cache::DefaultHashBuilder::default(),
        quick_cache::sync::DefaultLifecycle::default(),
    );
    read_through(trace, |k| {
        cache.get(&k).is_some() || {
            cache.insert(k, ());
            false
        }
    })
}

/// Belady's clairvoyant policy, allowed to not admit: on a miss with the cache full it drops
/// whichever of the resident blocks and the new one is requested furthest in the future.
fn replay_optimum(trace: &Trace, size: usize) -> u64 {
    // Resident key -> its next request; the heap holds (next request, key), stale pairs
    // skipped when popped.
    let mut resident: HashMap<u64, usize> = HashMap::with_capacity(size * 2);
    let mut heap: BinaryHeap<(usize, u64)> = BinaryHeap::with_capacity(size * 2);
    let mut hits = 0;
    for (i, (&key, &next)) in trace.keys.iter().zip(&trace.next).enumerate() {
        let _ = i;
        if let Some(slot) = resident.get_mut(&key) {
            hits += 1;
            *slot = next;
            heap.push((next, key));
            continue;
        }
        if resident.len() >= size {
            // Find the resident block requested furthest ahead.
            let furthest = loop {
                match heap.peek() {
                    Some(&(when, k)) if resident.get(&k) == Some(&when) => break Some(when),
                    Some(_) => {
                        heap.pop();
                    }
                    None => break None,
                }
            };
            match furthest {
                Some(when) if when > next => {
                    if let Some((_, k)) = heap.pop() {
                        resident.remove(&k);
                    }
                }
                // The new block is needed no sooner than every resident one: do not admit it.
                _ => continue,
            }
        }
        resident.insert(key, next);
        heap.push((next, key));
    }
    hits
}

/// The ARC paper's own ARC column for OLTP (Megiddo and Modha, FAST 2003, table VI).
fn arc_paper(trace: &str, size: usize) -> Option<f64> {
    if trace != "OLTP" {
        return None;
    }
    match size {
        1_000 => Some(38.93),
        2_000 => Some(46.08),
        5_000 => Some(55.25),
        10_000 => Some(61.87),
        15_000 => Some(65.40),
        _ => None,
    }
}

/// One trace's results: a hit ratio per size and policy.
struct Results {
    trace: String,
    requests: usize,
    unique: usize,
    sizes: Vec<usize>,
    ratios: Vec<Vec<f64>>,
}

/// Replays every selected policy at every size of every trace, on all cores, and returns the
/// markdown section for `docs/BENCHMARKS.md`.
pub(crate) fn run(paths: &[String]) -> Result<String, String> {
    let policies = Policy::selected();
    let mut all = Vec::new();
    for path in paths {
        let started = std::time::Instant::now();
        let trace =
            Trace::load(Path::new(path)).map_err(|e| format!("cannot read trace {path}: {e}"))?;
        let sizes = trace.sizes();
        let jobs: Vec<(usize, usize)> = (0..sizes.len())
            .flat_map(|s| (0..policies.len()).map(move |p| (s, p)))
            .collect();
        let results = Mutex::new(vec![vec![f64::NAN; policies.len()]; sizes.len()]);
        let next_job = AtomicUsize::new(0);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let j = next_job.fetch_add(1, Ordering::Relaxed);
                        let Some(&(s, p)) = jobs.get(j) else { break };
                        let ratio = policies[p].replay(&trace, sizes[s]);
                        if let Ok(mut r) = results.lock() {
                            r[s][p] = ratio;
                        }
                    }
                });
            }
        });
        let results = Results {
            trace: trace.name.clone(),
            requests: trace.keys.len(),
            unique: trace.unique,
            sizes,
            ratios: results.into_inner().unwrap_or_default(),
        };
        eprintln!(
            "{}(trace {} in {:.1} s)",
            table(&policies, &results),
            trace.name,
            started.elapsed().as_secs_f64()
        );
        all.push(results);
    }
    Ok(section(&policies, &all))
}

/// Where a cell stands against the goal: ours (the worse of its shard counts) within one point
/// of the better of LRU and moka, and on OLTP at or above the ARC paper's ARC.
fn shortfall(policies: &[Policy], trace: &str, size: usize, ratios: &[f64]) -> Option<f64> {
    let of = |want: fn(&Policy) -> bool| -> Vec<f64> {
        policies
            .iter()
            .zip(ratios)
            .filter(|(p, _)| want(p))
            .map(|(_, r)| *r)
            .collect()
    };
    let ours = of(|p| matches!(p, Policy::Ours { .. }));
    let rivals = of(|p| matches!(p, Policy::Lru | Policy::Moka));
    if ours.is_empty() || rivals.is_empty() {
        return None;
    }
    let ours = ours.iter().copied().fold(f64::INFINITY, f64::min);
    let mut target = rivals.iter().copied().fold(f64::NEG_INFINITY, f64::max) - 1.0;
    if let Some(arc) = arc_paper(trace, size) {
        target = target.max(arc);
    }
    Some(target - ours)
}

fn table(policies: &[Policy], r: &Results) -> String {
    let arc = r.sizes.iter().any(|s| arc_paper(&r.trace, *s).is_some());
    let mut out = format!(
        "{} ({} requests, {} blocks), hit ratio %:\n\n| entries |",
        r.trace, r.requests, r.unique
    );
    for p in policies {
        let _ = write!(out, " {} |", p.label());
    }
    if arc {
        out.push_str(" ARC (paper) |");
    }
    out.push_str(" goal met |\n|---|");
    for _ in 0..policies.len() + usize::from(arc) + 1 {
        out.push_str("---|");
    }
    out.push('\n');
    for (size, ratios) in r.sizes.iter().zip(&r.ratios) {
        let _ = write!(out, "| {size} |");
        for ratio in ratios {
            let _ = write!(out, " {ratio:.2} |");
        }
        if arc {
            match arc_paper(&r.trace, *size) {
                Some(a) => {
                    let _ = write!(out, " {a:.2} |");
                }
                None => out.push_str(" |"),
            }
        }
        match shortfall(policies, &r.trace, *size, ratios) {
            Some(short) if short > 0.0 => {
                let _ = writeln!(out, " **no** ({short:.2} short) |");
            }
            Some(_) => out.push_str(" yes |\n"),
            None => out.push_str(" - |\n"),
        }
    }
    out.push('\n');
    out
}

fn section(policies: &[Policy], all: &[Results]) -> String {
    let mut out = String::from(
        "## Hit ratios on real traces\n\n\
         Written by `cargo run -p cache-bench --release -- --traces FILE...`. Each trace is replayed as a\n\
         read-through cache (a miss inserts; one entry per block) through `InMemoryEngine` at its\n\
         defaults, with the shard counts it picks on 2 and on 64 cores, beside LRU (the `lru` crate),\n\
         moka (W-TinyLFU) and the clairvoyant optimum (Belady, allowed not to admit). The goal: ours,\n\
         at both shard counts, within one point of the better of LRU and moka, and on OLTP at or\n\
         above the ARC paper's ARC. The traces are not in this repository: the ARC paper's are the\n\
         `arc/*.lis.zst` files of <https://github.com/moka-rs/cache-trace>, the LIRS ones the\n\
         `*.trace.gz` files under `simulator/src/main/resources/com/github/benmanes/caffeine/cache/simulator/parser/lirs/`\n\
         of <https://github.com/ben-manes/caffeine>; pass them as they are (compressed).\n\n",
    );
    let mut missed = Vec::new();
    for r in all {
        out.push_str(&table(policies, r));
        for (size, ratios) in r.sizes.iter().zip(&r.ratios) {
            if let Some(short) = shortfall(policies, &r.trace, *size, ratios).filter(|s| *s > 0.0) {
                missed.push(format!("{} @ {size} ({short:.2})", r.trace));
            }
        }
    }
    let cells: usize = all.iter().map(|r| r.sizes.len()).sum();
    let _ = writeln!(
        out,
        "Cells short of the goal: {} of {cells}{}{}\n",
        missed.len(),
        if missed.is_empty() { "" } else { ": " },
        missed.join(", ")
    );
    if !missed.is_empty() {
        out.push_str(
            "The engine's hasher (and moka's) is seeded per instance: on one seed a cell of the \
             short traces moves by up to about a point, so on traces of up to a million requests \
             (OLTP and the LIRS ones) their figures are the mean of 10 to 100 replays (about 5 \
             million requests replayed). Why cells fall short, and what was tried, is in \
             `docs/DESIGN.md` (\"InMemoryEngine: our own store and policy\").\n\n",
        );
    }
    out
}

/// Marks the trace section in `docs/BENCHMARKS.md`, so that a full run without traces keeps it.
pub(crate) const BEGIN: &str = "<!-- traces: begin -->";
pub(crate) const END: &str = "<!-- traces: end -->";

/// The trace section of an existing `docs/BENCHMARKS.md`, markers included.
pub(crate) fn existing_section(doc: &str) -> Option<&str> {
    let start = doc.find(BEGIN)?;
    let end = doc[start..].find(END)? + start + END.len();
    Some(&doc[start..end])
}
