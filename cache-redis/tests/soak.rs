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

/// The soak against a full server (`maxmemory` with `noeviction`): writes are refused with
/// `OOM` errors, and 1 % of bulk writes carry a large item. Refusals are errors of their own;
/// no reply is ever shifted.
#[test]
fn soak_against_a_full_server_never_shifts_replies() {
    use cache_core::{Bytes, CacheEngine, Ttl};
    use cache_tests::servers::OrSkip;

    let Some(server) = TestServer::start(
        ServerKind::Redis,
        &["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"],
    )
    .or_skip() else {
        return;
    };
    let engine = RedisEngine::builder()
        .url(server.url())
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
