//! The benchmark harness runs end to end (with tiny workloads) and prints every comparison.
//! No timing is asserted: these machines are too noisy for that.

#[test]
fn the_harness_runs_and_prints_every_comparison() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cache-bench"))
        .arg("--smoke")
        .output()
        .expect("run cache-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cache-bench failed:\n{stdout}\n{stderr}"
    );
    for id in 1..=9 {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("| {id} |"))),
            "comparison {id} missing from:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("| NaN") && !stdout.contains(" NaN "),
        "a comparison produced no number:\n{stdout}"
    );
}
