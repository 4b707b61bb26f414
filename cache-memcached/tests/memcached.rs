//! memcached-specific promises, against real `memcached` processes started by the harness.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, CacheError, Ttl};
use cache_memcached::MemcachedEngine;
use cache_tests::servers::{OrSkip, ServerKind, TestServer};

fn server(args: &[&str]) -> Option<TestServer> {
    TestServer::start(ServerKind::Memcached, args).or_skip()
}

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn engine(server: &TestServer, namespace: Option<&str>) -> MemcachedEngine {
    let mut builder = MemcachedEngine::builder().server(server.url());
    if let Some(ns) = namespace {
        builder = builder.namespace(ns);
    }
    builder.build().unwrap()
}

/// A raw text-protocol session, to look at the server from outside the engine.
struct Raw(BufReader<TcpStream>);

impl Raw {
    fn new(server: &TestServer) -> Self {
        let stream = TcpStream::connect(server.address()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        Raw(BufReader::new(stream))
    }

    fn send(&mut self, command: &str) {
        self.0.get_mut().write_all(command.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn set(&mut self, key: &str, value: &str) {
        self.send(&format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()));
        assert_eq!(self.line(), "STORED");
    }

    fn get(&mut self, key: &str) -> Option<String> {
        self.send(&format!("get {key}\r\n"));
        let header = self.line();
        if header == "END" {
            return None;
        }
        let len: usize = header.rsplit(' ').next().unwrap().parse().unwrap();
        let mut data = vec![0; len + 2];
        self.0.read_exact(&mut data).unwrap();
        assert_eq!(self.line(), "END");
        Some(String::from_utf8_lossy(&data[..len]).into_owned())
    }

    fn stats(&mut self) -> HashMap<String, u64> {
        self.send("stats\r\n");
        let mut stats = HashMap::new();
        loop {
            let line = self.line();
            if line == "END" {
                return stats;
            }
            let mut parts = line.split(' ').skip(1);
            if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                if let Ok(n) = value.parse() {
                    stats.insert(name.to_string(), n);
                }
            }
        }
    }
}

fn command_counters(raw: &mut Raw) -> Vec<u64> {
    let stats = raw.stats();
    [
        "cmd_get",
        "cmd_set",
        "cmd_touch",
        "delete_misses",
        "delete_hits",
        "incr_misses",
        "incr_hits",
    ]
    .iter()
    .map(|name| stats.get(*name).copied().unwrap_or(0))
    .collect()
}

#[test]
fn injected_commands_never_reach_the_server() {
    let Some(server) = server(&[]) else { return };
    let mut raw = Raw::new(&server);
    raw.set("victim", "canary");
    let cache = engine(&server, None);
    let before = command_counters(&mut raw);
    for key in [
        "nokey\r\ndelete victim",
        "a b",
        "nul\0",
        "tab\tkey",
        "x\ndelete victim\r\n",
        &"k".repeat(251),
    ] {
        for result in [
            cache.delete(key).map(drop),
            cache.get(key).map(drop),
            cache.set(key, v("x"), Ttl::Default),
            cache.touch(key, Ttl::Never).map(drop),
            cache.increment(key, 1).map(drop),
        ] {
            assert!(
                matches!(result, Err(CacheError::InvalidKey { .. })),
                "{key:?}: {result:?}"
            );
        }
    }
    assert_eq!(
        command_counters(&mut raw),
        before,
        "a command reached the server"
    );
    assert_eq!(raw.get("victim").as_deref(), Some("canary"));
}

#[test]
fn clear_leaves_other_namespaces_and_plain_keys() {
    let Some(server) = server(&[]) else { return };
    let mut raw = Raw::new(&server);
    raw.set("outside", "canary");
    let app = engine(&server, Some("app"));
    let app_b = engine(&server, Some("app:b"));
    for i in 0..100 {
        app.set(&format!("k{i}"), v("x"), Ttl::Default).unwrap();
    }
    app_b.set("k", v("keep"), Ttl::Default).unwrap();
    let flushes = raw.stats()["cmd_flush"];
    app.clear().unwrap();
    assert_eq!(
        raw.stats()["cmd_flush"],
        flushes,
        "a namespaced clear must not flush_all"
    );
    assert!((0..100).all(|i| app.get(&format!("k{i}")).unwrap().is_none()));
    assert_eq!(app_b.get("k").unwrap(), Some(v("keep")));
    assert_eq!(raw.get("outside").as_deref(), Some("canary"));
    // The engine keeps working in its new generation.
    app.set("k0", v("new"), Ttl::Default).unwrap();
    assert_eq!(app.get("k0").unwrap(), Some(v("new")));
}

#[test]
fn another_engine_sees_a_clear_within_the_refresh_bound() {
    let Some(server) = server(&[]) else { return };
    let refresh = Duration::from_millis(300);
    let a = MemcachedEngine::builder()
        .server(server.url())
        .namespace("shared")
        .generation_refresh(refresh)
        .build()
        .unwrap();
    let b = MemcachedEngine::builder()
        .server(server.url())
        .namespace("shared")
        .generation_refresh(refresh)
        .build()
        .unwrap();
    a.set("k", v("x"), Ttl::Default).unwrap();
    assert_eq!(
        b.get("k").unwrap(),
        Some(v("x")),
        "same namespace, same entries"
    );
    a.clear().unwrap();
    assert_eq!(
        a.get("k").unwrap(),
        None,
        "at once for the engine that cleared"
    );
    let start = Instant::now();
    while b.get("k").unwrap().is_some() {
        assert!(
            start.elapsed() <= refresh + Duration::from_millis(200),
            "b still saw the entry"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_evicted_generation_never_brings_cleared_entries_back() {
    let Some(server) = server(&[]) else { return };
    let mut raw = Raw::new(&server);
    let cache = MemcachedEngine::builder()
        .server(server.url())
        .namespace("gen")
        .generation_refresh(Duration::from_millis(1))
        .build()
        .unwrap();
    cache.set("k", v("old"), Ttl::Default).unwrap();
    let first = raw.get("gen:generation").unwrap();
    assert_eq!(first.len(), 16);
    cache.clear().unwrap();
    // The generation key is evicted (here: deleted); the next one is random, not first + 1 or
    // a reset counter, so the old entries stay unreachable.
    raw.send("delete gen:generation\r\n");
    assert_eq!(raw.line(), "DELETED");
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(cache.get("k").unwrap(), None);
    let reseeded = raw.get("gen:generation").unwrap();
    assert_ne!(reseeded, first);
    assert_eq!(
        raw.get(&format!("gen:{first}:k")).as_deref(),
        Some("old"),
        "old entries are left to expire"
    );
}

#[test]
fn fractional_and_month_long_ttls() {
    let Some(server) = server(&[]) else { return };
    let mut raw = Raw::new(&server);
    let cache = engine(&server, None);
    let start = Instant::now();
    cache
        .set("short", v("x"), Ttl::After(Duration::from_millis(1_500)))
        .unwrap();
    cache
        .set(
            "month",
            v("x"),
            Ttl::After(Duration::from_secs(31 * 24 * 3600)),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_400).saturating_sub(start.elapsed()));
    assert!(cache.exists("short").unwrap(), "gone before 1.5 s");
    std::thread::sleep(Duration::from_millis(3_600).saturating_sub(start.elapsed()));
    assert!(!cache.exists("short").unwrap(), "alive 2 s after its TTL");
    // The 31-day TTL went as a Unix time: the item is alive with about 31 days left.
    assert!(cache.exists("month").unwrap());
    raw.send("mg month t\r\n");
    let line = raw.line();
    let left: u64 = line.trim_start_matches("HD t").parse().unwrap();
    assert!(
        left > 30 * 24 * 3600 && left <= 31 * 24 * 3600 + 2,
        "{line}"
    );
}

#[test]
fn values_over_the_item_limit_are_refused_and_keep_the_old_value() {
    let Some(server) = server(&["-I", "2m"]) else {
        return;
    };
    let cache = MemcachedEngine::builder()
        .server(server.url())
        .item_size_limit(2 << 20)
        .build()
        .unwrap();
    let limit = cache.capabilities().max_value_size.unwrap();
    cache
        .set("big", Bytes::from(vec![b'x'; 1_500_000]), Ttl::Default)
        .unwrap();
    assert_eq!(cache.get("big").unwrap().map(|b| b.len()), Some(1_500_000));
    cache.set("k", v("old"), Ttl::Default).unwrap();
    let err = cache
        .set("k", Bytes::from(vec![0; limit + 1]), Ttl::Default)
        .unwrap_err();
    assert!(matches!(err, CacheError::ValueTooLarge { .. }), "{err}");
    assert_eq!(cache.get("k").unwrap(), Some(v("old")));
    let full = Bytes::from(vec![b'y'; limit]);
    cache
        .set(&"k".repeat(250), full.clone(), Ttl::Default)
        .unwrap();
    assert_eq!(cache.get(&"k".repeat(250)).unwrap(), Some(full));
}

#[test]
fn hashed_keys_are_an_opt_in_and_never_collide() {
    let Some(server) = server(&[]) else { return };
    let cache = MemcachedEngine::builder()
        .server(server.url())
        .namespace("h")
        .hash_keys(true)
        .build()
        .unwrap();
    let long_a = "a".repeat(400);
    let long_b = "b".repeat(400);
    cache.set(&long_a, v("A"), Ttl::Default).unwrap();
    cache.set(&long_b, v("B"), Ttl::Default).unwrap();
    cache.set("with space\r\n", v("S"), Ttl::Default).unwrap();
    assert_eq!(cache.get(&long_a).unwrap(), Some(v("A")));
    assert_eq!(cache.get(&long_b).unwrap(), Some(v("B")));
    assert_eq!(cache.get("with space\r\n").unwrap(), Some(v("S")));
    assert_eq!(cache.increment(&long_a.replace('a', "c"), 3).unwrap(), 3);
    assert!(cache.delete(&long_a).unwrap());
    assert_eq!(cache.get(&long_a).unwrap(), None);
    assert!(matches!(cache.get(""), Err(CacheError::InvalidKey { .. })));
    // Without the opt-in, the same keys are refused.
    let strict = engine(&server, Some("h"));
    assert!(matches!(
        strict.get(&long_a),
        Err(CacheError::InvalidKey { .. })
    ));
}

#[test]
fn counters_are_signed_and_exact() {
    let Some(server) = server(&[]) else { return };
    let cache = engine(&server, Some("n"));
    assert_eq!(
        cache.increment("c", -5).unwrap(),
        -5,
        "memcached's decr would stop at 0"
    );
    assert_eq!(cache.increment("c", 2).unwrap(), -3);
    assert_eq!(cache.get("c").unwrap(), Some(v("-3")));
    cache
        .set("max", v(&i64::MAX.to_string()), Ttl::Default)
        .unwrap();
    assert!(matches!(
        cache.increment("max", 1),
        Err(CacheError::Overflow { .. })
    ));
    assert_eq!(cache.get("max").unwrap(), Some(v(&i64::MAX.to_string())));
}

#[test]
fn clear_without_namespace_flushes_the_server() {
    let Some(server) = server(&[]) else { return };
    let mut raw = Raw::new(&server);
    raw.set("anything", "x");
    engine(&server, None).clear().unwrap();
    assert_eq!(raw.get("anything"), None);
}

#[test]
fn faults_between_engine_and_server_are_survived() {
    let Some(server) = server(&[]) else { return };
    cache_tests::proxy::survives_faults(&server.address(), |address| {
        std::sync::Arc::new(
            MemcachedEngine::builder()
                .server(address)
                .namespace("proxy")
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
        )
    });
}

#[test]
fn a_dead_server_fails_fast_naming_the_address() {
    cache_tests::faults::dead_server_fails_fast(MemcachedEngine::connect);
}

#[test]
fn operations_recover_after_a_server_restart() {
    let Some(server) = server(&[]) else { return };
    cache_tests::faults::survives_restart(
        &server,
        std::sync::Arc::new(engine(&server, Some("restart"))),
    );
}

#[test]
fn a_frozen_server_times_out_and_the_engine_recovers() {
    let Some(server) = server(&[]) else { return };
    let engine = MemcachedEngine::builder()
        .server(server.url())
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    cache_tests::faults::survives_freeze(&server, std::sync::Arc::new(engine));
}
