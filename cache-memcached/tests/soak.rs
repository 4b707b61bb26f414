//! A mixed-operation soak against a real server.

use std::sync::Arc;

use cache_memcached::MemcachedEngine;
use cache_tests::servers::{OrSkip, ServerKind, TestServer};
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

/// The soak against a full server (`-m 8 -M`): 1 % of bulk writes carry an item it refuses,
/// which no engine can foresee. Refusals are errors of their own; no reply is ever shifted.
#[test]
fn soak_against_a_full_server_never_shifts_replies() {
    use cache_core::{Bytes, CacheEngine, Ttl};

    let Some(server) = TestServer::start(ServerKind::Memcached, &["-m", "8", "-M"]).or_skip()
    else {
        return;
    };
    let engine = MemcachedEngine::builder()
        .server(server.url())
        .namespace("full")
        .build()
        .expect("valid settings");
    let big = 30_000;
    let filler = Bytes::from(vec![b'f'; big]);
    let mut filled = 0;
    while engine
        .set(&format!("filler{filled}"), filler.clone(), Ttl::Never)
        .is_ok()
    {
        filled += 1;
        assert!(filled < 10_000, "the server never filled up");
    }
    let report = soak::run_refusing(Arc::new(engine), 4, soak::duration(), big);
    assert!(report.operations > 1_000, "{report:?}");
    assert!(report.refused > 0, "nothing was refused: {report:?}");
    eprintln!("full-server soak: {report:?}");
}
