//! The table, docs/BENCHMARKS.md and the chart.

use std::fmt::Write;

use crate::{Goal, Row};

pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| # | comparison | ours | baseline | ratio | goal | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.3} | {} | {} |",
            r.id,
            r.name,
            r.show(r.ours),
            r.show(r.baseline),
            r.ratio(),
            r.goal,
            match r.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        );
    }
    out
}

fn command(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    // Counted from /proc/cpuinfo: the remote comparisons pin this process to one CPU, after
    // which `available_parallelism` says 1.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    format!(
        "- CPU: {cpu}, {cores} cores\n- kernel: {}\n- rustc: {}\n- redis-server: {}\n- memcached: {}\n",
        command("uname", &["-sr"]),
        command("rustc", &["--version"]),
        command("redis-server", &["--version"]),
        command("memcached", &["-V"]),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A horizontal bar chart of each ratio against its goal (1.0 = goal reached).
pub(crate) fn svg(rows: &[Row]) -> String {
    let shown: Vec<&Row> = rows.iter().filter(|r| r.goal != Goal::None).collect();
    let (left, width, bar_h, gap) = (500.0, 360.0, 18.0, 8.0);
    let height = 60.0 + shown.len() as f64 * (bar_h + gap);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">cache-toolkit: measured ratio / goal (right of the line = goal met)</text>\n",
        w = left + width + 160.0
    );
    let scale = width / 2.0; // 2.0 x goal at the right edge
    let goal_x = left + scale;
    for (i, r) in shown.iter().enumerate() {
        let y = 40.0 + i as f64 * (bar_h + gap);
        let score = r.score().clamp(0.0, 2.0);
        let color = if r.met() == Some(true) {
            "#2e7d32"
        } else {
            "#c62828"
        };
        let label = escape(&r.name);
        let goal = escape(&r.goal.to_string());
        let _ = writeln!(
            out,
            "<text x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{label}</text>\n\
             <rect x=\"{left}\" y=\"{y}\" width=\"{bw:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\n\
             <text x=\"{vx:.1}\" y=\"{ty}\">{ratio:.2} (goal {goal})</text>",
            tx = left - 6.0,
            ty = y + 13.0,
            bw = score * scale,
            vx = left + score * scale + 4.0,
            ratio = r.ratio(),
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{goal_x}\" y1=\"30\" x2=\"{goal_x}\" y2=\"{}\" stroke=\"black\" stroke-dasharray=\"4,3\"/>\n</svg>",
        height - 10.0
    );
    out
}

/// What limits a goal that was not met, from profiles of these runs; empty when all are met.
pub(crate) fn unmet_notes(rows: &[Row]) -> String {
    let missed = |id: u8| rows.iter().any(|r| r.id == id && r.met() == Some(false));
    let missed_row = |id: u8, words: &str| {
        rows.iter()
            .any(|r| r.id == id && r.name.contains(words) && r.met() == Some(false))
    };
    let mut out = String::new();
    if missed(1) {
        out.push_str(
            "- **1, hits against quick_cache.** Since issue 22 the engine runs on a store of its \
             own (a policy with a better hit ratio on real traces; see the trace section). It is \
             not slower on hits than the quick_cache-based engine was: in runs interleaving both \
             builds with quick_cache in one process (15 rounds, medians), the old engine made \
             0.66-0.69 of quick_cache on one thread and 0.73-0.78 on two, the new one 0.66-0.70 \
             and 0.76-0.93. Where a hit's time goes beyond quick_cache's (about 29 ns with the \
             hot set in cache, ours 44 ns): the coarse clock read for the expiry test, 4.5 ns \
             (quick_cache has no expiry); the key check, the closed flag and a \
             `Result<Option<Bytes>>` of 88 bytes (the size of `CacheError`), about 5 ns; the \
             store itself, about 5 ns (the store without clock and trait reaches 0.90-0.95 of \
             quick_cache). Earlier runs on other hosts met 0.9 (0.93-1.03) with the same hit \
             path, where every contender was slower and these fixed costs weighed less. Meeting \
             0.9 here would take a hit without a clock read (a time kept by a ticker thread) and \
             a boxed `CacheError` (a smaller `Result` on every call), both beyond this issue.\n",
        );
    }
    if missed_row(2, "2 threads / 1 thread") {
        out.push_str(
            "- **2, two threads against one.** Bounded by quick_cache's own scaling in the \
             same run (the reference row): shard locks and hot Zipf keys shared by both \
             threads. In runs where quick_cache scaled 1.25x, ours scaled 1.37-1.45x.\n",
        );
    }
    if missed_row(2, "/ quick_cache") {
        out.push_str(
            "- **2, get-or-insert against quick_cache.** The engine is its own store plus, on every \
             call, the portable key check (1.9 ns for an 18-byte key, eight bytes at a time), an \
             expiry check that reads the coarse clock (3.5 ns), a closed flag, and a 40-byte entry \
             (value and deadline) instead of a 32-byte `Bytes`; writes also compute a deadline and \
             look at the expiry sweep. In a profile of the local comparisons our own code was \
             5.4 % of the samples and the coarse clock 2.8 % (measured on the quick_cache-based \
             engine); the rest was quick_cache and `Bytes` reference counting. Reaching 0.9 would take removing the clock \
             read from hits (a per-shard time refreshed by writers and a ticker, which needs a \
             bound on the ticker's lag to keep expiry exact) or checking keys only on writes \
             (which would give up `InvalidKey` on reads).\n",
        );
    }
    if missed(5) {
        out.push_str(
            "- **5, against `redis-benchmark`.** The engine runs at 0.99-1.03x the raw `redis` \
             crate on the same connection and bytes; the raw crate itself reaches only about \
             0.91-0.96 of `redis-benchmark`'s C client in the same run (its blocking `Connection` \
             parses into a `Value` tree and allocates per reply). Beating it would take a \
             hand-written RESP client for the two commands of the hot path, which the \
             measurements so far do not justify over a well-kept crate.\n",
        );
    }
    if missed(13) {
        out.push_str(
            "- **13, the async typed cache against the bare engine.** Measured at 0.81-0.93 in \
             runs of this build and 0.89-0.99 in runs of the previous one, alternating. A profile \
             of the comparison puts 81 % of the samples in the kernel (scheduling and loopback \
             TCP, shared with the Redis server on the same two cores), 8.5 % in the benchmark \
             process and about 0.1 % in the typed layer's own code (envelope, decode, \
             fingerprint); striping its hit counter over cache lines changed nothing. The ratio \
             follows how 64 tasks and the server share the cores more than any code on either \
             side.\n",
        );
    }
    if !out.is_empty() {
        out.insert_str(0, "## Goals not met in this run\n\n");
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_well_formed_xml() {
        let rows = vec![Row::plain(
            8,
            "a <tricky> & name",
            1.0,
            1.0,
            "ns/op",
            Goal::AtMost(1.1),
        )];
        let svg = svg(&rows);
        // Every `<` opens a tag and every `&` starts an entity.
        for (i, _) in svg.match_indices('<') {
            let next = svg[i + 1..].chars().next().unwrap_or(' ');
            assert!(
                next.is_ascii_alphabetic() || next == '/',
                "stray '<' at {i}: {svg}"
            );
        }
        for (i, _) in svg.match_indices('&') {
            assert!(
                ["&amp;", "&lt;", "&gt;"]
                    .iter()
                    .any(|e| svg[i..].starts_with(e)),
                "stray '&' at {i}"
            );
        }
    }
}
