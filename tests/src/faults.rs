//! Server faults every remote engine must survive, as functions any backend's tests can call
//! with a [`TestServer`] the harness started.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, CacheError, Result, Ttl};

use crate::servers::TestServer;

fn value(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Retries `op` until it succeeds; panics if it still fails after `within`.
fn eventually<T>(within: Duration, what: &str, mut op: impl FnMut() -> Result<T>) -> T {
    let start = Instant::now();
    loop {
        match op() {
            Ok(value) => return value,
            Err(e) => assert!(
                start.elapsed() < within,
                "{what}: still failing after {within:?}: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connecting to a port where nothing listens fails within 2 s with a transient `Connection`
/// error naming the address. `connect` is the engine's connecting constructor (one that checks
/// the server answers) given `host:port`.
///
/// # Panics
///
/// When it succeeds, takes 2 s or more, or gives another error.
pub fn dead_server_fails_fast<E>(connect: impl Fn(&str) -> Result<E>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"));
    let address = format!("127.0.0.1:{port}");
    let start = Instant::now();
    let err = match connect(&address) {
        Ok(_) => panic!("connecting to {address}, where nothing listens, succeeded"),
        Err(e) => e,
    };
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(err, CacheError::Connection { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&address),
        "the error does not name {address}: {err}"
    );
    assert!(err.is_transient());
}

/// With its pool full of connections, `server` is killed: operations fail fast with a transient
/// error; after it restarts on the same port, they succeed again within 3 s without rebuilding
/// the engine.
///
/// # Panics
///
/// When an operation hangs, gives a non-transient error, or does not recover.
pub fn survives_restart(server: &TestServer, engine: Arc<dyn CacheEngine>) {
    std::thread::scope(|s| {
        for i in 0..4 {
            let engine = Arc::clone(&engine);
            s.spawn(move || {
                engine
                    .set(&format!("warm{i}"), value("x"), Ttl::Default)
                    .unwrap_or_else(|e| panic!("set before the restart: {e}"))
            });
        }
    });
    server.stop();
    let start = Instant::now();
    let err = match engine.get("warm0") {
        Ok(v) => panic!("a get on a stopped server answered {v:?}"),
        Err(e) => e,
    };
    assert!(err.is_transient(), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    server.restart().unwrap_or_else(|e| panic!("restart: {e}"));
    eventually(Duration::from_secs(3), "set after the restart", || {
        engine.set("after", value("y"), Ttl::Default)
    });
    assert_eq!(engine.get("after").ok().flatten(), Some(value("y")));
    assert_eq!(
        engine.get("warm0").ok().flatten(),
        None,
        "the restarted server keeps nothing"
    );
}

/// `server` is frozen (SIGSTOP): an operation fails with `Timeout` within 2 s (the engine's
/// timeout must be under that); after SIGCONT, the next requests get their own replies, never
/// a late one.
///
/// # Panics
///
/// When the operation hangs, gives another error, or a later request gets a wrong value.
pub fn survives_freeze(server: &TestServer, engine: Arc<dyn CacheEngine>) {
    engine
        .set("k", value("x"), Ttl::Default)
        .unwrap_or_else(|e| panic!("set before the freeze: {e}"));
    server.signal("STOP");
    let start = Instant::now();
    let result = engine.get("k");
    let waited = start.elapsed();
    server.signal("CONT");
    assert!(
        matches!(result, Err(CacheError::Timeout { .. })),
        "{result:?}"
    );
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    engine
        .set("other", value("y"), Ttl::Default)
        .unwrap_or_else(|e| panic!("set after SIGCONT: {e}"));
    assert_eq!(engine.get("k").ok().flatten(), Some(value("x")));
    assert_eq!(engine.get("other").ok().flatten(), Some(value("y")));
}

/// 16 threads share `engine`, whose connection bound must be 2 (so that callers share
/// connections), each writing and reading keys of its own; then `server` is frozen (SIGSTOP)
/// for 1.5 s. During the freeze every operation fails with a transient error within 2 s (the
/// engine's timeout must be under 1 s); after SIGCONT every thread is served again within 3 s,
/// and from then on every read gets its own key's value, never a late reply meant for
/// another caller.
///
/// # Panics
///
/// When an operation hangs, fails outside the freeze, or reads a value it did not write.
pub fn callers_sharing_connections_survive_a_freeze(
    server: &TestServer,
    engine: Arc<dyn CacheEngine>,
) {
    use std::sync::Barrier;

    let round = |engine: &dyn CacheEngine, t: usize, i: usize| -> Result<Option<String>> {
        let key = format!("shared-{t}-{}", i % 8);
        let text = format!("{key}={i}");
        engine.set(&key, value(&text), Ttl::Default)?;
        let got = engine.get(&key)?;
        Ok(match got {
            Some(v) if v == value(&text) => None,
            Some(_) => Some(format!("{key}: read another value than its own write")),
            None => Some(format!("{key}: a miss right after the set")),
        })
    };
    let threads = 16;
    let ready = Barrier::new(threads + 1);
    let frozen = Barrier::new(threads + 1);
    let thawed = Barrier::new(threads + 1);
    let problems = std::sync::Mutex::new(Vec::<String>::new());
    let note = |p: String| problems.lock().unwrap_or_else(|e| e.into_inner()).push(p);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (engine, ready, frozen, thawed, note) =
                (Arc::clone(&engine), &ready, &frozen, &thawed, &note);
            s.spawn(move || {
                for i in 0..50 {
                    match round(&*engine, t, i) {
                        Ok(None) => {}
                        Ok(Some(p)) => note(p),
                        Err(e) => note(format!("before the freeze: {e}")),
                    }
                }
                ready.wait();
                frozen.wait();
                let start = Instant::now();
                match engine.get(&format!("shared-{t}-0")) {
                    Err(e) if e.is_transient() => {}
                    other => note(format!("during the freeze: {other:?}")),
                }
                if start.elapsed() >= Duration::from_secs(2) {
                    note(format!(
                        "an operation took {:?} in the freeze",
                        start.elapsed()
                    ));
                }
                thawed.wait();
                let start = Instant::now();
                let mut served = false;
                let mut i = 50;
                while start.elapsed() < Duration::from_secs(3) && !served {
                    match round(&*engine, t, i) {
                        Ok(None) => served = true,
                        Ok(Some(p)) => note(p),
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                    i += 1;
                }
                if !served {
                    note(format!("thread {t} not served 3 s after the freeze"));
                }
                for i in i..i + 50 {
                    match round(&*engine, t, i) {
                        Ok(None) => {}
                        Ok(Some(p)) => note(p),
                        Err(e) => note(format!("after the freeze: {e}")),
                    }
                }
            });
        }
        ready.wait();
        server.signal("STOP");
        frozen.wait();
        std::thread::sleep(Duration::from_millis(1500));
        server.signal("CONT");
        thawed.wait();
    });
    let problems = problems.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(
        problems.is_empty(),
        "{} problems, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(3)]
    );
}

/// 256 threads share `engine`, whose connection bound is `bound`, each running sets and gets:
/// every operation succeeds and reads its own key's value, and the server never counts more
/// than `bound` connections from it.
/// `connections` asks the server how many client connections it has (Redis
/// `connected_clients`, memcached `curr_connections`) and `baseline` is its answer before the
/// engine connected (its own connection included).
///
/// # Panics
///
/// When an operation fails or the server sees more connections than the bound.
pub fn connection_bound_holds(
    engine: Arc<dyn CacheEngine>,
    bound: usize,
    baseline: u64,
    connections: impl Fn() -> u64 + Sync,
) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let stop = AtomicBool::new(false);
    let peak = AtomicU64::new(0);
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(connections().saturating_sub(baseline), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let workers: Vec<_> = (0..256)
            .map(|t| {
                let (engine, errors) = (Arc::clone(&engine), &errors);
                s.spawn(move || {
                    for i in 0..20 {
                        let key = format!("bound-{t}-{i}");
                        let result = engine
                            .set(&key, value(&key), Ttl::Default)
                            .and_then(|()| engine.get(&key));
                        match result {
                            Ok(Some(got)) if got == value(&key) => {}
                            // Callers share connections past the bound: a reply handed to
                            // the wrong caller shows here.
                            Ok(Some(_)) => errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("{key}: another key's value")),
                            Ok(None) => errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("{key}: a miss right after the set")),
                            Err(e) => errors
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("{key}: {e}")),
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            let _ = worker.join();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(
        errors.is_empty(),
        "{} of 5120 operations failed, first: {:?}",
        errors.len(),
        errors.first()
    );
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak <= bound as u64,
        "the server saw {peak} connections from an engine bounded to {bound}"
    );
}

/// Through a proxy that lets the request carrying the counter's write (the first request that
/// contains `write_pattern`, such as `INCRBY` or `ms `) reach the server but drops its reply,
/// closing the connection, an `increment` fails and is applied exactly once: the engine never
/// sends a non-idempotent request again once it may have arrived. `engine_at` builds an engine
/// for a server address; `direct` is an engine on the server itself, in the same namespace.
///
/// # Panics
///
/// When the increment succeeds through the proxy, or was applied twice (or not at all).
pub fn increment_is_never_applied_twice(
    server: &str,
    write_pattern: &[u8],
    engine_at: impl Fn(&str) -> Arc<dyn CacheEngine>,
    direct: &dyn CacheEngine,
) {
    use crate::proxy::FaultProxy;

    let proxy = FaultProxy::start(server).unwrap_or_else(|e| panic!("proxy: {e}"));
    let engine = engine_at(proxy.address());
    direct
        .set("once", value("10"), Ttl::Default)
        .unwrap_or_else(|e| panic!("set: {e}"));
    // A pooled connection, so that the failure looks like one that died while idle: the case
    // in which engines may retry.
    engine
        .get("once")
        .unwrap_or_else(|e| panic!("get through the proxy: {e}"));
    proxy.drop_replies_to(write_pattern);
    let result = engine.increment("once", 1);
    proxy.delay_replies_to(b"no request has this", Duration::ZERO);
    assert!(result.is_err(), "the reply was dropped, yet: {result:?}");
    let stored = direct.get("once").unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(
        stored.as_deref(),
        Some(&b"11"[..]),
        "the increment must be applied exactly once"
    );
}

/// Through a proxy that lets the request carrying a release's delete (the first request that
/// contains `delete_pattern`, such as `EVAL` or `md `) reach the server but drops its reply,
/// closing the connection, and answers every later request, a `delete_if_equals` fails: it is
/// never sent again, which would answer `false` for a release that happened (or delete an
/// equal value stored again in between). The entry is gone, released once. `engine_at` and
/// `direct` are as for [`increment_is_never_applied_twice`].
///
/// # Panics
///
/// When the release answers through the proxy (`Ok(false)` is the mark of a second sending),
/// or the entry is still there.
pub fn release_is_never_sent_twice(
    server: &str,
    delete_pattern: &[u8],
    engine_at: impl Fn(&str) -> Arc<dyn CacheEngine>,
    direct: &dyn CacheEngine,
) {
    use crate::proxy::FaultProxy;

    let proxy = FaultProxy::start(server).unwrap_or_else(|e| panic!("proxy: {e}"));
    let engine = engine_at(proxy.address());
    direct
        .set("lease", value("token"), Ttl::Default)
        .unwrap_or_else(|e| panic!("set: {e}"));
    // A pooled connection, so that the failure looks like one that died while idle.
    engine
        .get("lease")
        .unwrap_or_else(|e| panic!("get through the proxy: {e}"));
    proxy.drop_one_reply_to(delete_pattern);
    let result = engine.delete_if_equals("lease", b"token");
    assert!(
        result.is_err(),
        "the reply was dropped, yet the release answered {result:?}"
    );
    let stored = direct.get("lease").unwrap_or_else(|e| panic!("get: {e}"));
    assert_eq!(stored, None, "the release reached the server once");
}

/// The network between engine and server turns into a black hole after a healthy start:
/// connections stay open and nothing passes either way (a NAT or load balancer that forgot the
/// flow, a failed-over address that stopped answering). Operations fail with a transient error
/// within `timeout + connect_timeout` (plus a second of slack); when the network heals (new
/// connections pass; the black-holed ones stay dead), the same engine serves again within
/// `2 x timeout + connect_timeout` (plus a second), without being rebuilt.
///
/// `engine_at` builds an engine with these `timeout` and `connect_timeout` for a server
/// address. Returns how long recovery took.
///
/// # Panics
///
/// When an operation succeeds in the black hole, overruns, or the engine does not recover in
/// time (or reads a wrong value).
pub fn recovers_from_a_black_hole(
    server: &str,
    timeout: Duration,
    connect_timeout: Duration,
    engine_at: impl Fn(&str) -> Arc<dyn CacheEngine>,
) -> Duration {
    use crate::proxy::{Fault, FaultProxy};

    let slack = Duration::from_secs(1);
    let proxy = FaultProxy::start(server).unwrap_or_else(|e| panic!("proxy: {e}"));
    let engine = engine_at(proxy.address());
    engine
        .set("hole", value("v"), Ttl::Default)
        .unwrap_or_else(|e| panic!("set before the black hole: {e}"));
    for _ in 0..5 {
        assert_eq!(engine.get("hole").ok().flatten(), Some(value("v")));
    }
    proxy.set(Fault::BlackHole);
    for round in 0..4 {
        let start = Instant::now();
        let result = engine.get("hole");
        let took = start.elapsed();
        match result {
            Err(e) if e.is_transient() => {}
            other => panic!("get {round} in the black hole: {other:?}"),
        }
        assert!(
            took <= timeout + connect_timeout + slack,
            "get {round} in the black hole took {took:?}"
        );
    }
    proxy.set(Fault::None);
    let healed = Instant::now();
    let bound = timeout * 2 + connect_timeout + slack;
    loop {
        let start = Instant::now();
        let result = engine.get("hole");
        assert!(
            start.elapsed() <= timeout + connect_timeout + slack,
            "a get after healing took {:?}",
            start.elapsed()
        );
        match result {
            Ok(found) => {
                assert_eq!(found, Some(value("v")), "another reply after healing");
                break;
            }
            Err(e) => assert!(
                healed.elapsed() <= bound,
                "not serving {:?} after the network healed (bound {bound:?}): {e}",
                healed.elapsed()
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    healed.elapsed()
}

/// A connection left idle while its flow silently dies is found dead before the next request
/// needs it: after `keepalive + timeout` (plus slack) in a black hole without any operation,
/// the first operation once the network heals succeeds at once, without waiting out a
/// timeout on the dead connection. With `in_background` (the async engines, which ping idle
/// connections), the engine has also closed the dead connection by then.
///
/// `engine_at` builds an engine with this `timeout` and `keepalive` for a server address.
///
/// # Panics
///
/// When the first operation after the quiet spell fails, or (with `in_background`) the dead
/// connection is still open.
pub fn keepalive_finds_a_dead_idle_flow(
    server: &str,
    timeout: Duration,
    keepalive: Duration,
    in_background: bool,
    engine_at: impl Fn(&str) -> Arc<dyn CacheEngine>,
) {
    use crate::proxy::{Fault, FaultProxy};

    let proxy = FaultProxy::start(server).unwrap_or_else(|e| panic!("proxy: {e}"));
    let engine = engine_at(proxy.address());
    engine
        .set("quiet", value("v"), Ttl::Default)
        .unwrap_or_else(|e| panic!("set before the quiet spell: {e}"));
    assert_eq!(engine.get("quiet").ok().flatten(), Some(value("v")));
    assert!(proxy.open_connections() >= 1);
    proxy.set(Fault::BlackHole);
    std::thread::sleep(keepalive + timeout + Duration::from_millis(1500));
    if in_background {
        assert_eq!(
            proxy.open_connections(),
            0,
            "the connection whose flow died while idle is still open"
        );
    }
    proxy.set(Fault::None);
    let start = Instant::now();
    let result = engine.get("quiet");
    assert_eq!(
        result.as_ref().ok().cloned().flatten(),
        Some(value("v")),
        "the first get after a quiet spell in which the flow died: {result:?}"
    );
    assert!(
        start.elapsed() < timeout,
        "the first get after the quiet spell took {:?}",
        start.elapsed()
    );
}
