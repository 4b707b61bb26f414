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
