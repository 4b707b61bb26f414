//! The metrics layer records what it promises, and listens only when a recorder is installed.

#![cfg(feature = "metrics")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_layers::{LayerExt, Metrics};
use cache_local::InMemoryEngine;

#[test]
fn metrics_record_operations_hits_and_durations() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let layer = Metrics::new();
        assert!(layer.is_listening());
        let engine = InMemoryEngine::builder().build().unwrap().layer(layer);
        engine
            .set("k", Bytes::from_static(b"v"), Ttl::Default)
            .unwrap();
        engine.get("k").unwrap();
        engine.get("missing").unwrap();
        let _ = engine.get("bad key");
    });
    let mut found = std::collections::HashMap::new();
    for (key, _, _, value) in snapshot_entries(snapshotter.snapshot()) {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        found.insert(format!("{} {}", key.key().name(), labels.join(",")), value);
    }
    let counter = |name: &str| match found.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!(
            "{name}: {other:?} in {:?}",
            found.keys().collect::<Vec<_>>()
        ),
    };
    assert_eq!(counter("cache_hits_total backend=in-memory,namespace="), 1);
    assert_eq!(
        counter("cache_misses_total backend=in-memory,namespace="),
        1
    );
    assert_eq!(
        counter("cache_operations_total backend=in-memory,namespace=,operation=get,outcome=ok"),
        2
    );
    assert_eq!(
        counter("cache_errors_total backend=in-memory,namespace=,operation=get,kind=caller"),
        1
    );
    match found.get("cache_operation_duration_seconds backend=in-memory,namespace=,operation=get") {
        Some(DebugValue::Histogram(values)) => assert_eq!(values.len(), 3),
        other => panic!("{other:?}"),
    }
}

fn snapshot_entries(
    snapshot: metrics_util::debugging::Snapshot,
) -> Vec<(
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    metrics_util::debugging::DebugValue,
)> {
    snapshot.into_vec()
}

#[test]
fn with_no_recorder_the_metrics_layer_does_not_listen() {
    assert!(!Metrics::new().is_listening());
}
