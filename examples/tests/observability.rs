//! The observability example against a real Redis: the Prometheus page shows the engine's
//! operations, hits and misses with backend and namespace labels. In a test binary of its own:
//! the recorder is installed for the whole process.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use cache_examples::observability::{install_prometheus, observed_engine, traffic};
use cache_layers::Stats;
use cache_tests::servers::{ServerKind, TestServer};

#[test]
fn the_prometheus_page_shows_operations_hits_and_misses() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let prometheus = install_prometheus().unwrap();
    let stats = Stats::new();
    let engine = observed_engine(&server.url(), "observability", &stats).unwrap();
    traffic(&engine).unwrap();
    let counts = stats.snapshot();
    assert_eq!((counts.hits, counts.misses, counts.writes), (10, 10, 10));
    let page = prometheus.render();
    for line in [
        r#"cache_hits_total{backend="redis",namespace="observability"} 10"#,
        r#"cache_misses_total{backend="redis",namespace="observability"} 10"#,
        r#"cache_operations_total{backend="redis",namespace="observability",operation="get",outcome="ok"} 20"#,
        r#"cache_operations_total{backend="redis",namespace="observability",operation="set",outcome="ok"} 10"#,
    ] {
        assert!(page.contains(line), "missing {line} in:\n{page}");
    }
    assert!(page.contains("cache_operation_duration_seconds"), "{page}");
}
