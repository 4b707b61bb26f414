//! Observability for any engine: a Redis engine with the statistics, metrics and tracing layers,
//! feeding a Prometheus exporter and a `tracing` subscriber. The `observability` example runs
//! it; its test checks what the exporter renders.

use std::time::Duration;

use cache_core::{Bytes, CacheEngine, Result, Ttl};
use cache_layers::{FailOpen, KeyReport, LayerExt, Layered, Metrics, Stats, Tracing};
use cache_redis::RedisEngine;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The layered engine: statistics innermost, then metrics, tracing and fail-open outermost (so
/// metrics and traces see every failure, and callers see misses instead of errors).
pub type ObservedEngine =
    Layered<Layered<Layered<Layered<RedisEngine, Stats>, Metrics>, Tracing>, FailOpen>;

/// Installs a Prometheus recorder for the whole process; its handle renders the metrics page
/// (serve it on `/metrics`).
///
/// # Errors
///
/// When another recorder was installed first.
pub fn install_prometheus() -> std::result::Result<PrometheusHandle, String> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    Ok(handle)
}

/// A Redis engine at `url` in `namespace`, with every layer. Build it after installing the
/// recorder: the metrics layer records only if one was installed.
///
/// # Errors
///
/// As [`RedisEngineBuilder::build`](cache_redis::RedisEngineBuilder::build).
pub fn observed_engine(url: &str, namespace: &str, stats: &Stats) -> Result<ObservedEngine> {
    Ok(RedisEngine::builder()
        .url(url)
        .namespace(namespace)
        .timeout(Duration::from_millis(500))
        .build()?
        .layer(stats.clone())
        .layer(Metrics::new())
        .layer(Tracing::new().keys(KeyReport::Hashed))
        .layer(
            FailOpen::new()
                .on_backend_error(|e| tracing::warn!(error = %e.redacted(), "cache failing open")),
        ))
}

/// A little traffic: writes, hits and misses.
///
/// # Errors
///
/// The engine's.
pub fn traffic(engine: &ObservedEngine) -> Result<()> {
    for i in 0..10 {
        engine.set(
            &format!("page:{i}"),
            Bytes::from(format!("page {i}")),
            Ttl::After(Duration::from_secs(60)),
        )?;
    }
    for i in 0..20 {
        engine.get(&format!("page:{i}"))?;
    }
    Ok(())
}
