//! TLS (`rediss://`) against a `redis-server` with a self-signed CA made by the test.

#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use cache_core::{Bytes, CacheEngine, CacheError, Ttl};
use cache_redis::RedisEngine;
use cache_tests::certificates::Certificates;
use cache_tests::servers::{OrSkip, ServerKind, TestServer};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tls_needs_the_ca_and_insecure_mode_only_from_the_builder() {
    let Some(certs) = Certificates::make() else {
        return;
    };
    let tls_port = free_port().to_string();
    let (cert, key, ca) = (
        certs.path("server.crt"),
        certs.path("server.key"),
        certs.path("ca.crt"),
    );
    let Some(_server) = TestServer::start(
        ServerKind::Redis,
        &[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ],
    )
    .or_skip() else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{tls_port}");

    // Without the CA the self-signed certificate is refused.
    let unknown_ca = RedisEngine::builder().url(&url).build().unwrap();
    let err = unknown_ca.ping().unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::Connection { .. } | CacheError::Backend { .. }
        ),
        "{err:?}"
    );

    // With the CA it works.
    let trusted = RedisEngine::builder()
        .url(&url)
        .tls_root_certificate(certs.ca_pem())
        .namespace("tls")
        .build()
        .unwrap();
    trusted
        .set("k", Bytes::from_static(b"secret"), Ttl::Default)
        .unwrap();
    assert_eq!(
        trusted.get("k").unwrap(),
        Some(Bytes::from_static(b"secret"))
    );

    // Insecure mode never comes from a URL...
    let err = RedisEngine::builder()
        .url(format!("{url}/#insecure"))
        .build()
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err:?}");
    // ...only from the explicit builder setting.
    let insecure = RedisEngine::builder()
        .url(&url)
        .danger_accept_invalid_certs(true)
        .namespace("tls")
        .build()
        .unwrap();
    assert_eq!(
        insecure.get("k").unwrap(),
        Some(Bytes::from_static(b"secret"))
    );

    // TLS settings on a plain URL are a configuration mistake.
    let err = RedisEngine::builder()
        .url("redis://127.0.0.1:1")
        .tls_root_certificate(certs.ca_pem())
        .build()
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err:?}");
}
