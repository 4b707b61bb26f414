//! A mixed-operation soak against a real server.

use std::sync::Arc;

use cache_redis::RedisEngine;
use cache_tests::servers::{ServerKind, TestServer};
use cache_tests::soak;

#[test]
fn soak_without_errors_or_deadlocks() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let engine = RedisEngine::builder()
        .url(server.url())
        .namespace("soak")
        .build()
        .expect("valid settings");
    let report = soak::run(Arc::new(engine), 4, soak::duration(), || None);
    assert!(report.operations > 1_000, "{report:?}");
}
