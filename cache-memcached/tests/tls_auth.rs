//! TLS (`memcacheds://`) and ASCII authentication against a real `memcached -Z -Y`, with a CA
//! made by the test: both faces pass the whole kit through them, and every way of getting
//! them wrong is a typed error within seconds.

#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cache_core::{CacheEngine, CacheError};
use cache_memcached::MemcachedEngine;
use cache_tests::TestContext;
use cache_tests::certificates::Certificates;
use cache_tests::servers::{OrSkip, TestServer};

struct Secure {
    certs: Certificates,
    _server: TestServer,
    tls_port: u16,
}

/// One server for the whole binary: TLS on `tls_port`, logins from an auth file.
fn secure() -> Option<Arc<Secure>> {
    static SECURE: OnceLock<Option<Arc<Secure>>> = OnceLock::new();
    SECURE
        .get_or_init(|| {
            let certs = Certificates::make()?;
            let auth_file = certs.path("auth");
            std::fs::write(&auth_file, "app:s3cret\nother:pw\n").unwrap();
            let (server, tls_port) = TestServer::memcached_tls(
                &certs.path("server.crt"),
                &certs.path("server.key"),
                Some(&auth_file),
            )
            .or_skip()?;
            Some(Arc::new(Secure {
                certs,
                _server: server,
                tls_port,
            }))
        })
        .clone()
}

fn url(user: &str) -> String {
    let secure = secure().expect("checked by `require`");
    format!("memcacheds://{user}@127.0.0.1:{}", secure.tls_port)
}

fn ca() -> Vec<u8> {
    secure().expect("checked by `require`").certs.ca_pem()
}

fn memcached(ctx: &TestContext) -> MemcachedEngine {
    MemcachedEngine::builder()
        .server(url("app:s3cret"))
        .tls_root_certificate(ca())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

cache_tests::conformance_suite!(memcached_tls_kit, memcached, require = secure().is_some());

#[cfg(feature = "tokio")]
fn async_memcached(ctx: &TestContext) -> cache_memcached::AsyncMemcachedEngine {
    MemcachedEngine::async_builder()
        .server(url("app:s3cret"))
        .tls_root_certificate(ca())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

#[cfg(feature = "tokio")]
cache_tests::async_conformance_suite!(
    async_memcached_tls_kit,
    async_memcached,
    require = secure().is_some()
);

/// Runs one operation on `engine` and returns its error, checking it came within seconds.
fn failure(engine: &MemcachedEngine) -> CacheError {
    let started = Instant::now();
    let err = engine.get("k").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{err}");
    err
}

#[test]
fn wrong_settings_are_typed_errors() {
    let Some(secure) = secure() else {
        return;
    };
    let port = secure.tls_port;
    let builder = || MemcachedEngine::builder().timeout(Duration::from_secs(2));

    // Credentials from the builder work as the URL's do.
    let engine = builder()
        .server(format!("memcacheds://127.0.0.1:{port}"))
        .credentials("other", "pw")
        .tls_root_certificate(ca())
        .build()
        .unwrap();
    engine.ping().unwrap();

    // A wrong password, or none, is an authentication error that never shows the password.
    for server in [
        format!("memcacheds://app:hunter2@127.0.0.1:{port}"),
        format!("memcacheds://127.0.0.1:{port}"),
    ] {
        let engine = builder()
            .server(&server)
            .tls_root_certificate(ca())
            .build()
            .unwrap();
        let err = failure(&engine);
        assert!(
            matches!(err, CacheError::Authentication { .. }),
            "{server}: {err}"
        );
        assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
    }

    // The test CA is unknown to the system: refused without it, accepted only when the builder
    // says so.
    let unknown = builder().server(url("app:s3cret")).build().unwrap();
    let err = failure(&unknown);
    assert!(matches!(err, CacheError::Connection { .. }), "{err}");
    let insecure = builder()
        .server(url("app:s3cret"))
        .danger_accept_invalid_certs()
        .build()
        .unwrap();
    insecure.ping().unwrap();

    // Plain text to the TLS port is not mistaken for an answer.
    let plain = builder()
        .server(format!("memcached://app:s3cret@127.0.0.1:{port}"))
        .build()
        .unwrap();
    assert!(!failure(&plain).to_string().is_empty());

    // TLS settings without a memcacheds:// server are a configuration error.
    let err = builder()
        .server(format!("127.0.0.1:{port}"))
        .tls_root_certificate(ca())
        .build()
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
}
