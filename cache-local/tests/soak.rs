//! A mixed-operation soak on both local engines; the in-memory bounds are sampled while it runs.

use std::sync::Arc;

use cache_local::{InMemoryEngine, ThreadLocalEngine};
use cache_tests::soak;

#[test]
fn in_memory_soak_holds_its_bounds() {
    let engine = InMemoryEngine::builder()
        .max_capacity(32)
        .max_bytes(8 * 1024)
        .shards(2)
        .build()
        .expect("valid settings");
    let sampled = engine.clone();
    let report = soak::run(Arc::new(engine), 4, soak::duration(), || {
        // Both read shard by shard under the shards' locks, so they are consistent while the
        // writers run (walking the entries with `weighted_bytes` is not).
        let entries = sampled.entry_count();
        let bytes = sampled.bytes_bound_in_use().unwrap_or(u64::MAX);
        (entries > 32 || bytes > 8 * 1024).then(|| format!("{entries} entries, {bytes} bytes"))
    });
    assert!(
        report.operations > 1_000 && report.checks > 10,
        "{report:?}"
    );
}

#[test]
fn thread_local_soak() {
    let engine = ThreadLocalEngine::builder()
        .max_capacity(32)
        .build()
        .expect("valid settings");
    let report = soak::run(Arc::new(engine), 4, soak::duration(), || None);
    assert!(report.operations > 1_000, "{report:?}");
}
