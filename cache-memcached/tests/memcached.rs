//! memcached-specific promises, against real `memcached` processes started by the harness.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, CacheError, Remaining, Ttl};
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

    /// The generation of namespace `ns` (stored under a binary key no caller's key can be).
    fn generation(&mut self, ns: &str) -> Option<String> {
        use base64::Engine as _;
        // The key starts with the raw byte 0xff, which no UTF-8 text holds.
        let key = base64::engine::general_purpose::STANDARD
            .encode([&[0xffu8][..], format!("generation:{ns}:").as_bytes()].concat());
        self.send(&format!("mg {key} b v\r\n"));
        let header = self.line();
        if header.starts_with("EN") {
            return None;
        }
        let len: usize = header.split(' ').nth(1).unwrap().parse().unwrap();
        let mut data = vec![0; len + 2];
        self.0.read_exact(&mut data).unwrap();
        Some(String::from_utf8_lossy(&data[..len]).into_owned())
    }

    fn delete_generation(&mut self, ns: &str) {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .encode([&[0xffu8][..], format!("generation:{ns}:").as_bytes()].concat());
        self.send(&format!("md {key} b\r\n"));
        assert_eq!(self.line(), "HD");
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
    let first = raw.generation("gen").unwrap();
    assert_eq!(first.len(), 16);
    cache.clear().unwrap();
    // The generation key is evicted (here: deleted); the next one is random, not first + 1 or
    // a reset counter, so the old entries stay unreachable.
    raw.delete_generation("gen");
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(cache.get("k").unwrap(), None);
    let reseeded = raw.generation("gen").unwrap();
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

/// The whole seconds of an `After` report, within `range`.
fn secs_left(left: Option<Remaining>, range: std::ops::RangeInclusive<u64>) {
    match left {
        Some(Remaining::After(d)) => assert!(
            d.subsec_nanos() == 0 && range.contains(&d.as_secs()),
            "{d:?} left, not in {range:?} s"
        ),
        other => panic!("{other:?} left, not in {range:?} s"),
    }
}

#[test]
fn remaining_ttls_are_whole_seconds_and_31_days_report_31_days() {
    let Some(server) = server(&[]) else { return };
    let cache = engine(&server, Some("rt"));
    let month = 31 * 24 * 3600;
    cache
        .set("minute", v("m"), Ttl::After(Duration::from_secs(60)))
        .unwrap();
    cache.set("never", v("n"), Ttl::Never).unwrap();
    cache
        .set("month", v("x"), Ttl::After(Duration::from_secs(month)))
        .unwrap();
    // 60 s are stored as 61 (ceil + 1); memcached's clock may tick once in between.
    secs_left(cache.remaining_ttl("minute").unwrap(), 59..=61);
    assert_eq!(
        cache.remaining_ttl("never").unwrap(),
        Some(Remaining::Never)
    );
    assert_eq!(cache.remaining_ttl("absent").unwrap(), None);
    // Sent as a Unix time (beyond 30 days), reported as about 31 days left.
    secs_left(cache.remaining_ttl("month").unwrap(), month - 2..=month + 2);
    let (value, left) = cache.get_with_ttl("month").unwrap().unwrap();
    assert_eq!(value, v("x"));
    secs_left(Some(left), month - 2..=month + 2);
    let got = cache
        .get_many_with_ttl(&["minute", "absent", "never"])
        .unwrap();
    assert_eq!(got.len(), 3);
    secs_left(got[0].as_ref().map(|(_, left)| *left), 59..=61);
    assert_eq!(got[1], None);
    assert_eq!(got[2], Some((v("n"), Remaining::Never)));
    assert!(cache.touch("minute", Ttl::Never).unwrap());
    assert_eq!(
        cache.remaining_ttl("minute").unwrap(),
        Some(Remaining::Never)
    );

    // After a clear the entries are under an older generation: absent, as for get.
    cache.clear().unwrap();
    for key in ["minute", "never", "month"] {
        assert_eq!(cache.get(key).unwrap(), None);
        assert_eq!(cache.remaining_ttl(key).unwrap(), None, "{key}");
        assert_eq!(cache.get_with_ttl(key).unwrap(), None, "{key}");
    }
    assert_eq!(
        cache.get_many_with_ttl(&["minute", "never"]).unwrap(),
        vec![None, None]
    );
    let fresh = engine(&server, Some("rt"));
    assert_eq!(fresh.remaining_ttl("month").unwrap(), None);
}

#[test]
fn remaining_ttls_of_hashed_keys_check_the_original_key() {
    use sha2::{Digest, Sha256};
    let Some(server) = server(&[]) else { return };
    let mut raw = Raw::new(&server);
    let cache = MemcachedEngine::builder()
        .server(server.url())
        .hash_keys(true)
        .build()
        .unwrap();
    let key = "with space";
    let wire: String = std::iter::once("#".to_string())
        .chain(
            Sha256::digest(key.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}")),
        )
        .collect();
    // Another client's value under the hash: not this key's.
    raw.set(&wire, "other");
    assert_eq!(cache.get(key).unwrap(), None);
    assert_eq!(cache.remaining_ttl(key).unwrap(), None);
    assert_eq!(cache.get_with_ttl(key).unwrap(), None);
    assert_eq!(cache.get_many_with_ttl(&[key]).unwrap(), vec![None]);
    cache
        .set(key, v("mine"), Ttl::After(Duration::from_secs(60)))
        .unwrap();
    secs_left(cache.remaining_ttl(key).unwrap(), 59..=61);
    let (value, left) = cache.get_with_ttl(key).unwrap().unwrap();
    assert_eq!(value, v("mine"));
    secs_left(Some(left), 59..=61);
    let long = "k".repeat(400);
    cache.set(&long, v("long"), Ttl::Never).unwrap();
    let got = cache
        .get_many_with_ttl(&[key, &long, "absent key"])
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].as_ref().map(|(value, _)| value.clone()),
        Some(v("mine"))
    );
    secs_left(got[0].as_ref().map(|(_, left)| *left), 59..=61);
    assert_eq!(got[1], Some((v("long"), Remaining::Never)));
    assert_eq!(got[2], None);
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
fn a_black_hole_after_a_healthy_start_is_recovered_from() {
    let Some(server) = server(&[]) else { return };
    let (timeout, connect_timeout) = (Duration::from_millis(500), Duration::from_millis(500));
    let took = cache_tests::faults::recovers_from_a_black_hole(
        &server.address(),
        timeout,
        connect_timeout,
        |address| {
            std::sync::Arc::new(
                MemcachedEngine::builder()
                    .server(address)
                    .timeout(timeout)
                    .connect_timeout(connect_timeout)
                    .build()
                    .unwrap(),
            )
        },
    );
    eprintln!("serving again {took:?} after the network healed");
}

/// The blocking engines check no connection in the background: an idle connection older
/// than `keepalive` is closed instead of reused.
#[test]
fn a_flow_that_died_while_idle_is_not_reused() {
    let Some(server) = server(&[]) else { return };
    let (timeout, keepalive) = (Duration::from_millis(500), Duration::from_secs(1));
    cache_tests::faults::keepalive_finds_a_dead_idle_flow(
        &server.address(),
        timeout,
        keepalive,
        false,
        |address| {
            std::sync::Arc::new(
                MemcachedEngine::builder()
                    .server(address)
                    .timeout(timeout)
                    .keepalive(keepalive)
                    .build()
                    .unwrap(),
            )
        },
    );
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
fn callers_sharing_two_connections_survive_a_freeze() {
    let Some(server) = server(&[]) else { return };
    let engine = MemcachedEngine::builder()
        .server(server.url())
        .namespace("shared")
        .max_connections(2)
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    cache_tests::faults::callers_sharing_connections_survive_a_freeze(
        &server,
        std::sync::Arc::new(engine.clone()),
    );
    assert!(engine.pool_state().peak <= 2, "{:?}", engine.pool_state());
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

/// Reads `keys` (each stored holding its own name) and returns those that came back holding
/// something else: another key's value is the one failure no caller can work around.
fn wrong_values(cache: &MemcachedEngine, keys: &[String]) -> Vec<String> {
    let mut wrong = Vec::new();
    for key in keys {
        match cache.get(key) {
            Ok(Some(value)) if value != key.as_bytes() => {
                wrong.push(format!("{key} = {:?}", String::from_utf8_lossy(&value)));
            }
            Ok(_) => {}
            // A healthy server answers every read: an error here is a reply meant for another
            // request.
            Err(e) => wrong.push(format!("{key}: {e}")),
        }
    }
    wrong
}

/// A value over the server's own item limit (`-I 64k`, learned on connect although the engine is
/// left at its 1 MiB default) is refused with `ValueTooLarge` before anything is sent, so the
/// batch changes nothing and no later reply is shifted.
#[test]
fn a_value_over_the_servers_item_limit_is_refused_before_sending() {
    let Some(server) = server(&["-I", "64k", "-o", "slab_chunk_max=32768"]) else {
        return;
    };
    let cache = engine(&server, None);
    let keys: Vec<String> = (0..10).map(|i| format!("key{i}")).collect();
    for key in &keys {
        cache.set(key, v(key), Ttl::Default).unwrap();
    }
    let result = cache.set_many(
        &[
            ("big", Bytes::from(vec![b'x'; 200 * 1024])),
            ("key0", v("changed")),
            ("key1", v("changed")),
        ],
        Ttl::Default,
    );
    let wrong = [wrong_values(&cache, &keys), wrong_values(&cache, &keys)].concat();
    assert!(wrong.is_empty(), "{} wrong values: {wrong:?}", wrong.len());
    assert!(
        matches!(result, Err(CacheError::ValueTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(
        cache.get("key0").unwrap(),
        Some(v("key0")),
        "nothing changed"
    );
    assert!(cache.capabilities().max_value_size.unwrap() < 64 * 1024);
    let single = cache.set("key2", Bytes::from(vec![b'x'; 100 * 1024]), Ttl::Default);
    assert!(
        matches!(single, Err(CacheError::ValueTooLarge { .. })),
        "{single:?}"
    );
    assert_eq!(
        cache.get("key2").unwrap(),
        Some(v("key2")),
        "old value kept"
    );
}

/// A full server that refuses new items (`-M`) refuses some items of a batch, which no engine can
/// foresee: the call fails (saying the batch may be partly applied) and every later read gets its
/// own key's value or a miss, never another key's.
#[test]
fn a_full_server_refusing_items_never_shifts_replies() {
    let Some(server) = server(&["-m", "8", "-M"]) else {
        return;
    };
    let cache = engine(&server, Some("full"));
    let keys: Vec<String> = (0..20).map(|i| format!("key{i}")).collect();
    // Stored first, so that overwriting them later needs no new memory and succeeds.
    for key in &keys {
        cache.set(key, v(key), Ttl::Never).unwrap();
    }
    let filler = Bytes::from(vec![b'f'; 30_000]);
    let mut filled = 0;
    let refusal = loop {
        match cache.set(&format!("filler{filled}"), filler.clone(), Ttl::Never) {
            Ok(()) => filled += 1,
            Err(e) => break e,
        }
        assert!(filled < 10_000, "the server never filled up");
    };
    // The refusal and the server's words both name the operation.
    assert!(matches!(refusal, CacheError::Refused { .. }), "{refusal}");
    let reason = std::error::Error::source(&refusal).map(ToString::to_string);
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("set: server replied SERVER_ERROR")),
        "{reason:?}"
    );
    for round in 0..5 {
        let mut entries: Vec<(&str, Bytes)> = keys.iter().map(|k| (k.as_str(), v(k))).collect();
        entries.insert(round * 4, ("big", filler.clone()));
        let result = cache.set_many(&entries, Ttl::Default);
        if let Err(e) = &result {
            assert!(
                e.to_string().contains("partly") || matches!(e, CacheError::Backend { .. }),
                "{e}"
            );
        }
        let wrong = wrong_values(&cache, &keys);
        assert!(wrong.is_empty(), "round {round}: {wrong:?}");
    }
}

/// A value this library did not write, stored under the key a namespace's generation would have
/// (here through an engine without a namespace, with a valid key), neither hangs namespaced
/// operations nor reaches the engine's internal key space.
#[test]
fn a_poisoned_generation_key_never_hangs_an_operation() {
    let Some(server) = server(&[]) else { return };
    let plain = engine(&server, None);
    plain
        .set("poisoned:generation", v("hello"), Ttl::Default)
        .unwrap();
    let namespaced: std::sync::Arc<dyn CacheEngine> = std::sync::Arc::new(
        MemcachedEngine::builder()
            .server(server.url())
            .namespace("poisoned")
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let outcome = cache_tests::hostile::timed(namespaced.clone(), "get", Duration::from_secs(10));
    let took = outcome.took.expect("get still running after 10 s");
    assert!(took < Duration::from_millis(1_500), "took {took:?}");
    assert!(matches!(outcome.result, Some(Ok(()))), "{outcome:?}");
    namespaced.set("k", v("x"), Ttl::Default).unwrap();
    assert_eq!(namespaced.get("k").unwrap(), Some(v("x")));
    assert_eq!(
        plain.get("poisoned:generation").unwrap(),
        Some(v("hello")),
        "a user's key is never an internal one"
    );
}

/// A generation refresh that started before a `clear()` and ended after it never brings the
/// cleared generation back for the engine that cleared. A proxy holds the replies to reads, so
/// that a refresh reads the old generation before the clear and stores it after.
#[test]
fn a_clear_is_never_undone_by_a_concurrent_refresh() {
    let Some(server) = server(&[]) else { return };
    let proxy = cache_tests::proxy::FaultProxy::start(&server.address()).unwrap();
    let refresh = Duration::from_millis(200);
    let cache = MemcachedEngine::builder()
        .server(proxy.address())
        .namespace("race")
        .generation_refresh(refresh)
        .build()
        .unwrap();
    let mut undone = 0;
    let rounds = 5;
    for _ in 0..rounds {
        // The set reads the server's generation afresh, and that is the one the refresh below
        // reads again (before the clear replaces it).
        std::thread::sleep(refresh + Duration::from_millis(50));
        cache.set("k", v("old"), Ttl::Default).unwrap();
        std::thread::sleep(refresh + Duration::from_millis(50));
        // The refresh's first read (`mg`) is slow; the clear's write of the generation is not.
        proxy.delay_replies_to(b"mg ", Duration::from_millis(300));
        std::thread::scope(|s| {
            // A refresh: the generation is stale, so this read fetches it, slowly.
            s.spawn(|| cache.get("other"));
            std::thread::sleep(Duration::from_millis(50));
            proxy.delay_replies_to(b"no such request", Duration::ZERO);
            cache.clear().unwrap();
        });
        if cache.get("k").unwrap().is_some() {
            undone += 1;
        }
    }
    assert_eq!(undone, 0, "{undone} of {rounds} clears undone by a refresh");
}

/// At the server's connection limit (`-c`), a refused connection is a transient `Connection`
/// error, never a `Backend` one.
#[test]
fn the_servers_connection_limit_gives_transient_errors() {
    // One worker thread: memcached needs fewer descriptors and so accepts a small `-c`.
    let Some(server) = server(&["-t", "1", "-c", "32"]) else {
        return;
    };
    let cache = MemcachedEngine::builder()
        .server(server.url())
        .max_connections(64)
        .build()
        .unwrap();
    let errors = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..48 {
            let (cache, errors) = (&cache, &errors);
            s.spawn(move || {
                for i in 0..200 {
                    if let Err(e) = cache.set(&format!("t{t}-{i}"), v("x"), Ttl::Default) {
                        errors.lock().unwrap().push(e);
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap();
    let not_transient: Vec<String> = errors
        .iter()
        .filter(|e| !e.is_transient())
        .map(|e| format!("{e:?}"))
        .collect();
    assert!(
        not_transient.is_empty(),
        "{} of {} errors not transient, first: {:?}",
        not_transient.len(),
        errors.len(),
        not_transient.first()
    );
}

#[test]
fn open_connections_never_exceed_the_bound() {
    let Some(server) = server(&[]) else { return };
    let raw = std::sync::Mutex::new(Raw::new(&server));
    let connections = || raw.lock().unwrap().stats()["curr_connections"];
    let baseline = connections();
    let bound = 8;
    let engine = MemcachedEngine::builder()
        .server(server.url())
        .namespace("bound")
        .max_connections(bound)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    cache_tests::faults::connection_bound_holds(
        std::sync::Arc::new(engine.clone()),
        bound,
        baseline,
        connections,
    );
    assert!(
        engine.pool_state().peak <= bound,
        "{:?}",
        engine.pool_state()
    );
}

#[test]
fn an_increment_is_never_applied_twice() {
    let Some(server) = server(&[]) else { return };
    let direct = engine(&server, Some("once"));
    cache_tests::faults::increment_is_never_applied_twice(
        &server.address(),
        b"ms ",
        |address| {
            std::sync::Arc::new(
                MemcachedEngine::builder()
                    .server(address)
                    .namespace("once")
                    .build()
                    .unwrap(),
            )
        },
        &direct,
    );
}

#[test]
fn a_release_is_never_sent_twice() {
    let Some(server) = server(&[]) else { return };
    let direct = engine(&server, Some("once"));
    cache_tests::faults::release_is_never_sent_twice(
        &server.address(),
        b"md ",
        |address| {
            std::sync::Arc::new(
                MemcachedEngine::builder()
                    .server(address)
                    .namespace("once")
                    .build()
                    .unwrap(),
            )
        },
        &direct,
    );
}

/// `delete_if_equals` deletes with the CAS it read: an entry rewritten while its read was on
/// the way (a proxy holds the replies to the release's reads) is read again, and released only
/// if it still holds the expected bytes; rewritten with them round after round, it fails after
/// 5 rounds rather than answer `false` or delete blindly.
#[test]
fn delete_if_equals_deletes_only_what_it_read() {
    let Some(server) = server(&[]) else { return };
    let proxy = cache_tests::proxy::FaultProxy::start(&server.address()).unwrap();
    let through = MemcachedEngine::builder()
        .server(proxy.address())
        .namespace("cas")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let writer = engine(&server, Some("cas"));
    // A release's read is `mg <key> v f c`; no other operation asks for exactly these flags.
    let hold = Duration::from_millis(200);
    proxy.delay_replies_to(b" v f c O", hold);
    let release_while = |rewrite: &(dyn Fn() + Sync)| {
        std::thread::scope(|s| {
            let release = s.spawn(|| through.delete_if_equals("lease", b"token"));
            rewrite();
            release.join().unwrap()
        })
    };

    // Rewritten with another value during the read: not released, the new value kept.
    writer.set("lease", v("token"), Ttl::Default).unwrap();
    let released = release_while(&|| {
        std::thread::sleep(hold / 4);
        writer.set("lease", v("successor"), Ttl::Default).unwrap();
    });
    assert!(!released.unwrap());
    assert_eq!(writer.get("lease").unwrap(), Some(v("successor")));

    // Rewritten once with the same bytes: the delete loses its CAS race, reads again, releases.
    writer.set("lease", v("token"), Ttl::Default).unwrap();
    let released = release_while(&|| {
        std::thread::sleep(hold / 4);
        writer.set("lease", v("token"), Ttl::Default).unwrap();
    });
    assert!(released.unwrap(), "released on the second round");
    assert_eq!(writer.get("lease").unwrap(), None);

    // Rewritten with the same bytes through every round: a typed error, the entry kept.
    writer.set("lease", v("token"), Ttl::Default).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = Instant::now();
    let released = std::thread::scope(|s| {
        let release = s.spawn(|| {
            let result = through.delete_if_equals("lease", b"token");
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            result
        });
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            writer.set("lease", v("token"), Ttl::Default).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        release.join().unwrap()
    });
    let err = released.unwrap_err();
    assert!(
        matches!(err, CacheError::Backend { .. }),
        "after 5 lost rounds: {err:?}"
    );
    assert!(
        started.elapsed() >= hold * 5,
        "5 rounds, each read held {hold:?}: {:?}",
        started.elapsed()
    );
    assert_eq!(
        writer.get("lease").unwrap(),
        Some(v("token")),
        "nothing deleted"
    );
}

/// A release compares what the engine itself stores: under a hashed key, another client's value
/// (without the original key in front of it) is not this key's, and an entry of the namespace's
/// previous generation is gone.
#[test]
fn delete_if_equals_compares_the_stored_layout() {
    use sha2::{Digest, Sha256};
    let Some(server) = server(&[]) else { return };
    let mut raw = Raw::new(&server);
    let cache = MemcachedEngine::builder()
        .server(server.url())
        .hash_keys(true)
        .build()
        .unwrap();
    let key = "with space";
    let wire: String = std::iter::once("#".to_string())
        .chain(
            Sha256::digest(key.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}")),
        )
        .collect();
    raw.set(&wire, "token");
    assert!(!cache.delete_if_equals(key, b"token").unwrap());
    assert_eq!(
        raw.get(&wire).as_deref(),
        Some("token"),
        "another client's value"
    );
    cache.set(key, v("token"), Ttl::Default).unwrap();
    assert!(!cache.delete_if_equals(key, b"with space").unwrap());
    assert!(cache.delete_if_equals(key, b"token").unwrap());
    assert_eq!(raw.get(&wire), None);

    let namespaced = engine(&server, Some("gen"));
    namespaced.set("k", v("token"), Ttl::Default).unwrap();
    namespaced.clear().unwrap();
    assert!(!namespaced.delete_if_equals("k", b"token").unwrap());
    namespaced.set("k", v("token"), Ttl::Default).unwrap();
    assert!(namespaced.delete_if_equals("k", b"token").unwrap());
}
