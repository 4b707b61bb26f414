//! Comparison 14: what the metrics and tracing layers cost. First with no recorder and no
//! subscriber installed (a layer nobody listens to must cost nothing), then with a Prometheus
//! recorder and an `info` subscriber installed for the rest of the process.

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_layers::{LayerExt, Metrics, Tracing};
use cache_local::InMemoryEngine;
use cache_redis::RedisEngine;
use cache_tests::servers::TestServer;

use crate::measure::{gets, interleave};
use crate::{Goal, Plan, Row};

fn in_memory() -> InMemoryEngine {
    let engine = InMemoryEngine::builder()
        .max_capacity(10_000)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    for i in 0..1_000 {
        let _ = engine.set(
            &format!("key:{i}"),
            Bytes::from_static(&[7; 64]),
            Ttl::Never,
        );
    }
    engine
}

pub(crate) fn run(plan: &Plan, redis: &TestServer, rows: &mut Vec<Row>) -> Result<(), String> {
    let keys: Vec<String> = (0..1_000).map(|i| format!("key:{i}")).collect();
    let bare = in_memory();
    let layered = in_memory().layer(Metrics::new()).layer(Tracing::new());
    let ops = plan.local_ops;
    let r = interleave(
        plan.rounds,
        &mut [&mut || gets(&layered, &keys, ops), &mut || {
            gets(&bare, &keys, ops)
        }],
    );
    rows.push(Row::rate(
        14,
        "InMemoryEngine get on hits in metrics + tracing layers, nobody listening / bare",
        r[0],
        r[1],
        Goal::AtLeast(0.95),
    ));

    // From here on, a Prometheus recorder and an `info` subscriber listen.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| format!("recorder: {e}"))?;
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish(),
    )
    .map_err(|e| format!("subscriber: {e}"))?;

    let layered = in_memory().layer(Metrics::new()).layer(Tracing::new());
    let r = interleave(
        plan.rounds,
        &mut [&mut || gets(&layered, &keys, ops), &mut || {
            gets(&bare, &keys, ops)
        }],
    );
    rows.push(Row::rate(
        14,
        "(reference) same, with a Prometheus recorder and an info subscriber installed",
        r[0],
        r[1],
        Goal::None,
    ));

    let bare = RedisEngine::builder()
        .url(redis.url())
        .namespace("bench-layers")
        .max_connections(1)
        .build()
        .map_err(|e| format!("redis: {e}"))?;
    let layered = bare.clone().layer(Metrics::new()).layer(Tracing::new());
    for key in &keys[..16] {
        bare.set(key, Bytes::from_static(&[7; 64]), Ttl::Never)
            .map_err(|e| format!("set: {e}"))?;
    }
    let remote = plan.remote_ops;
    let r = interleave(
        plan.rounds,
        &mut [&mut || gets(&layered, &keys[..16], remote), &mut || {
            gets(&bare, &keys[..16], remote)
        }],
    );
    rows.push(Row::rate(
        14,
        "RedisEngine get in metrics + tracing layers, recorder and info subscriber installed / bare",
        r[0],
        r[1],
        Goal::AtLeast(0.95),
    ));
    if !handle.render().contains("cache_operations_total") {
        return Err("the metrics layer recorded nothing".into());
    }
    Ok(())
}
