//! A mixed-operation soak against a real server.

use std::sync::Arc;

use cache_memcached::MemcachedEngine;
use cache_tests::servers::{ServerKind, TestServer};
use cache_tests::soak;

#[test]
fn soak_without_errors_or_deadlocks() {
    let Some(server) = TestServer::shared(ServerKind::Memcached) else {
        return;
    };
    let engine = MemcachedEngine::builder()
        .server(server.url())
        .namespace("soak")
        .build()
        .expect("valid settings");
    let report = soak::run(Arc::new(engine), 4, soak::duration(), || None);
    assert!(report.operations > 1_000, "{report:?}");
}
