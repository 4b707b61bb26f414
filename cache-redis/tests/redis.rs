//! Redis-specific promises, against real `redis-server` processes started by the harness.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, CacheError, Remaining, Ttl};
use cache_redis::RedisEngine;
use cache_tests::servers::{OrSkip, ServerKind, TestServer};

fn server() -> Option<TestServer> {
    TestServer::start(ServerKind::Redis, &[]).or_skip()
}

fn admin(server: &TestServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn v(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn engine(server: &TestServer, namespace: Option<&str>) -> RedisEngine {
    let mut builder = RedisEngine::builder().url(server.url());
    if let Some(ns) = namespace {
        builder = builder.namespace(ns);
    }
    builder.build().unwrap()
}

#[test]
fn clear_leaves_other_namespaces_and_plain_keys() {
    let Some(server) = server() else { return };
    let mut raw = admin(&server);
    redis::cmd("SET")
        .arg("outside")
        .arg("canary")
        .exec(&mut raw)
        .unwrap();
    let app = engine(&server, Some("app"));
    let app_b = engine(&server, Some("app:b"));
    let glob = engine(&server, Some("a*"));
    for i in 0..1_200 {
        app.set(&format!("k{i}"), v("x"), Ttl::Default).unwrap();
    }
    app_b.set("k", v("keep"), Ttl::Default).unwrap();
    glob.set("k", v("glob"), Ttl::Default).unwrap();
    app.clear().unwrap();
    assert_eq!(app.get("k0").unwrap(), None);
    assert_eq!(app.get("k1199").unwrap(), None);
    assert_eq!(app_b.get("k").unwrap(), Some(v("keep")));
    assert_eq!(glob.get("k").unwrap(), Some(v("glob")));
    let outside: Option<String> = redis::cmd("GET").arg("outside").query(&mut raw).unwrap();
    assert_eq!(outside.as_deref(), Some("canary"));
    // A namespace with glob characters matches only itself.
    glob.clear().unwrap();
    assert_eq!(app_b.get("k").unwrap(), Some(v("keep")));
    assert_eq!(glob.get("k").unwrap(), None);
}

#[test]
fn keys_are_stored_under_the_escaped_namespace_with_millisecond_ttls() {
    let Some(server) = server() else { return };
    let mut raw = admin(&server);
    let app = engine(&server, Some("app"));
    app.set("user:1", v("ada"), Ttl::After(Duration::from_micros(1_500)))
        .unwrap();
    app.set("forever", v("x"), Ttl::After(Duration::from_secs(60)))
        .unwrap();
    app.set("forever", v("y"), Ttl::Never).unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("app:forever")
        .query(&mut raw)
        .unwrap();
    assert_eq!(pttl, -1, "Never clears the earlier TTL");
    app.set("ttl", v("x"), Ttl::After(Duration::from_millis(1_500)))
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg("app:ttl").query(&mut raw).unwrap();
    assert!(
        (1_400..=1_500).contains(&pttl),
        "PX in milliseconds: {pttl}"
    );
    let nested = engine(&server, Some("app:v2"));
    nested.set("k", v("x"), Ttl::Default).unwrap();
    let exists: u64 = redis::cmd("EXISTS")
        .arg("app%3Av2:k")
        .query(&mut raw)
        .unwrap();
    assert_eq!(exists, 1);
}

/// Calls of each command since the last `CONFIG RESETSTAT`, by name (`exec`, `pttl`).
fn command_calls(raw: &mut redis::Connection) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[test]
fn remaining_ttls_come_from_pttl_and_reads_with_them_are_one_transaction() {
    let Some(server) = server() else { return };
    let mut raw = admin(&server);
    let app = engine(&server, Some("app"));
    redis::cmd("SET")
        .arg("app:expiring")
        .arg("x")
        .arg("PX")
        .arg(1_500)
        .exec(&mut raw)
        .unwrap();
    redis::cmd("SET")
        .arg("app:plain")
        .arg("y")
        .exec(&mut raw)
        .unwrap();
    let in_range = |left: Option<Remaining>| match left {
        Some(Remaining::After(left)) => {
            assert!(
                left > Duration::from_millis(1_000) && left <= Duration::from_millis(1_500),
                "{left:?} left of 1.5 s"
            );
        }
        other => panic!("{other:?} left of 1.5 s"),
    };
    in_range(app.remaining_ttl("expiring").unwrap());
    assert_eq!(app.remaining_ttl("plain").unwrap(), Some(Remaining::Never));
    assert_eq!(app.remaining_ttl("absent").unwrap(), None);

    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut raw)
        .unwrap();
    let (value, left) = app.get_with_ttl("expiring").unwrap().unwrap();
    assert_eq!(value, v("x"));
    in_range(Some(left));
    let got = app
        .get_many_with_ttl(&["expiring", "absent", "plain"])
        .unwrap();
    assert_eq!(got.len(), 3);
    in_range(got[0].as_ref().map(|(_, left)| *left));
    assert_eq!(got[1], None);
    assert_eq!(got[2], Some((v("y"), Remaining::Never)));
    let calls = command_calls(&mut raw);
    for (command, expected) in [("multi", 2), ("exec", 2), ("get", 4), ("pttl", 4)] {
        assert_eq!(
            calls.get(command).copied().unwrap_or(0),
            expected,
            "{command} calls: {calls:?}"
        );
    }

    // A key of another type is an error, never a miss or a panic.
    redis::cmd("RPUSH")
        .arg("app:list")
        .arg("a")
        .exec(&mut raw)
        .unwrap();
    assert!(app.get_with_ttl("list").is_err());
    assert!(app.get_many_with_ttl(&["plain", "list"]).is_err());
    assert_eq!(app.remaining_ttl("list").unwrap(), Some(Remaining::Never));
}

#[test]
fn clear_without_namespace_flushes_only_its_database() {
    let Some(server) = server() else { return };
    let db0 = RedisEngine::builder()
        .url(format!("{}/0", server.url()))
        .build()
        .unwrap();
    let db1 = RedisEngine::builder()
        .url(format!("{}/1", server.url()))
        .build()
        .unwrap();
    db0.set("k", v("zero"), Ttl::Default).unwrap();
    db1.set("k", v("one"), Ttl::Default).unwrap();
    db0.clear().unwrap();
    assert_eq!(db0.get("k").unwrap(), None);
    assert_eq!(db1.get("k").unwrap(), Some(v("one")));
}

#[test]
fn a_restricted_acl_user_can_use_its_namespace() {
    let Some(server) = server() else { return };
    let mut raw = admin(&server);
    redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "tenant",
                "on",
                ">tenant-pw",
                "~tenant:*",
                "+@all",
                "-@dangerous",
            ][..],
        )
        .exec(&mut raw)
        .unwrap();
    redis::cmd("SET")
        .arg("other:secret")
        .arg("canary")
        .exec(&mut raw)
        .unwrap();
    let url = server
        .url()
        .replace("redis://", "redis://tenant:tenant-pw@");
    let tenant = RedisEngine::builder()
        .url(&url)
        .namespace("tenant")
        .build()
        .unwrap();
    tenant.set("a", v("1"), Ttl::Default).unwrap();
    assert_eq!(tenant.increment("n", 2).unwrap(), 2);
    assert!(tenant.add("b", v("2"), Ttl::Default).unwrap());
    assert!(tenant.touch("a", Ttl::Never).unwrap());
    assert_eq!(tenant.get_many(&["a", "b"]).unwrap().len(), 2);
    assert!(tenant.delete_if_equals("b", b"2").unwrap());
    tenant.clear().unwrap();
    assert_eq!(tenant.get("a").unwrap(), None);
    // Outside its namespace the ACL refuses, with a distinct error.
    let outside = RedisEngine::builder().url(&url).build().unwrap();
    let err = outside.get("other:secret").unwrap_err();
    assert!(
        matches!(err, CacheError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
    // The script's key is checked against the ACL as any command's is.
    let err = outside
        .delete_if_equals("other:secret", b"canary")
        .unwrap_err();
    assert!(
        matches!(err, CacheError::PermissionDenied { .. }),
        "{err:?}"
    );
    let err = outside.clear().unwrap_err();
    assert!(
        matches!(err, CacheError::PermissionDenied { .. }),
        "FLUSHDB is @dangerous: {err:?}"
    );
    let secret: Option<String> = redis::cmd("GET")
        .arg("other:secret")
        .query(&mut raw)
        .unwrap();
    assert_eq!(secret.as_deref(), Some("canary"));
}

#[test]
fn a_wrong_password_is_an_authentication_error_without_the_password() {
    let Some(server) = server() else { return };
    let mut raw = admin(&server);
    redis::cmd("ACL")
        .arg(&["SETUSER", "someone", "on", ">right-pw", "~*", "+@all"][..])
        .exec(&mut raw)
        .unwrap();
    let url = server
        .url()
        .replace("redis://", "redis://someone:wrong-pw-42@");
    let start = Instant::now();
    let err = RedisEngine::connect(&url).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, CacheError::Authentication { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wrong-pw-42"), "{shown}");
    let engine = RedisEngine::builder().url(&url).build().unwrap();
    assert!(!format!("{engine:?}").contains("wrong-pw-42"));
}

#[test]
fn relaxed_keys_are_an_opt_in() {
    let Some(server) = server() else { return };
    let strict = engine(&server, Some("keys"));
    assert!(matches!(
        strict.set("with space", v("x"), Ttl::Default),
        Err(CacheError::InvalidKey { .. })
    ));
    let relaxed = RedisEngine::builder()
        .url(server.url())
        .namespace("keys")
        .relaxed_keys(true)
        .build()
        .unwrap();
    relaxed.set("with space\r\n", v("x"), Ttl::Default).unwrap();
    assert_eq!(relaxed.get("with space\r\n").unwrap(), Some(v("x")));
    assert!(matches!(
        relaxed.get(""),
        Err(CacheError::InvalidKey { .. })
    ));
}

#[test]
fn connections_killed_by_the_server_are_replaced() {
    let Some(server) = server() else { return };
    let mut raw = admin(&server);
    let cache = engine(&server, Some("killed"));
    for round in 0..3 {
        // Fill the pool with several live connections, then have the server cut them all.
        std::thread::scope(|s| {
            for i in 0..4 {
                let cache = cache.clone();
                s.spawn(move || {
                    cache
                        .set(&format!("k{i}"), v(&format!("v{i}")), Ttl::Default)
                        .unwrap()
                });
            }
        });
        let killed: u64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"][..])
            .query(&mut raw)
            .unwrap();
        assert!(killed >= 1, "round {round}: nothing to kill");
        // An idempotent read is retried once on a fresh connection; a later request never gets
        // another request's reply.
        let start = Instant::now();
        for i in 0..4 {
            loop {
                match cache.get(&format!("k{i}")) {
                    Ok(value) => {
                        assert_eq!(value, Some(v(&format!("v{i}"))), "round {round}: k{i}");
                        break;
                    }
                    Err(e) => {
                        assert!(e.is_transient(), "{e:?}");
                        assert!(
                            start.elapsed() < Duration::from_secs(3),
                            "still failing: {e}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bad_keys_never_reach_the_server() {
    let Some(server) = server() else { return };
    let mut raw = admin(&server);
    redis::cmd("SET")
        .arg("victim")
        .arg("canary")
        .exec(&mut raw)
        .unwrap();
    let cache = engine(&server, None);
    let calls = |raw: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("commandstats").query(raw).unwrap();
        // Every command but the INFO calls of this test.
        info.lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    let before = calls(&mut raw);
    for key in ["", "a b", "x\r\nDEL victim", "nul\0", &"k".repeat(251)] {
        assert!(matches!(cache.get(key), Err(CacheError::InvalidKey { .. })));
        assert!(matches!(
            cache.set(key, v("x"), Ttl::Default),
            Err(CacheError::InvalidKey { .. })
        ));
        assert!(matches!(
            cache.delete(key),
            Err(CacheError::InvalidKey { .. })
        ));
        assert!(matches!(
            cache.increment(key, 1),
            Err(CacheError::InvalidKey { .. })
        ));
    }
    assert_eq!(calls(&mut raw), before, "a command reached the server");
    let canary: Option<String> = redis::cmd("GET").arg("victim").query(&mut raw).unwrap();
    assert_eq!(canary.as_deref(), Some("canary"));
}

#[test]
fn a_black_hole_after_a_healthy_start_is_recovered_from() {
    let Some(server) = server() else { return };
    let (timeout, connect_timeout) = (Duration::from_millis(500), Duration::from_millis(500));
    let took = cache_tests::faults::recovers_from_a_black_hole(
        &server.address(),
        timeout,
        connect_timeout,
        |address| {
            std::sync::Arc::new(
                RedisEngine::builder()
                    .url(format!("redis://{address}"))
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
    let Some(server) = server() else { return };
    let (timeout, keepalive) = (Duration::from_millis(500), Duration::from_secs(1));
    cache_tests::faults::keepalive_finds_a_dead_idle_flow(
        &server.address(),
        timeout,
        keepalive,
        false,
        |address| {
            std::sync::Arc::new(
                RedisEngine::builder()
                    .url(format!("redis://{address}"))
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
    let Some(server) = server() else { return };
    cache_tests::proxy::survives_faults(&server.address(), |address| {
        std::sync::Arc::new(
            RedisEngine::builder()
                .url(format!("redis://{address}"))
                .namespace("proxy")
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap(),
        )
    });
}

#[test]
fn a_dead_server_fails_fast_naming_the_address() {
    cache_tests::faults::dead_server_fails_fast(|address| {
        RedisEngine::connect(&format!("redis://{address}"))
    });
}

#[test]
fn operations_recover_after_a_server_restart() {
    let Some(server) = server() else { return };
    cache_tests::faults::survives_restart(
        &server,
        std::sync::Arc::new(engine(&server, Some("restart"))),
    );
}

#[test]
fn callers_sharing_two_connections_survive_a_freeze() {
    let Some(server) = server() else { return };
    let engine = RedisEngine::builder()
        .url(server.url())
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
    let Some(server) = server() else { return };
    let engine = RedisEngine::builder()
        .url(server.url())
        .namespace("frozen")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    cache_tests::faults::survives_freeze(&server, std::sync::Arc::new(engine));
}

fn connected_clients(raw: &std::sync::Mutex<redis::Connection>) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("clients")
        .query(&mut *raw.lock().unwrap())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap()
}

#[test]
fn open_connections_never_exceed_the_bound() {
    let Some(server) = server() else { return };
    let raw = std::sync::Mutex::new(admin(&server));
    let baseline = connected_clients(&raw);
    let bound = 8;
    let engine = RedisEngine::builder()
        .url(server.url())
        .namespace("bound")
        .max_connections(bound)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    cache_tests::faults::connection_bound_holds(
        std::sync::Arc::new(engine.clone()),
        bound,
        baseline,
        || connected_clients(&raw),
    );
    assert!(
        engine.pool_state().peak <= bound,
        "{:?}",
        engine.pool_state()
    );
}

#[test]
fn an_increment_is_never_applied_twice() {
    let Some(server) = server() else { return };
    let direct = engine(&server, Some("once"));
    cache_tests::faults::increment_is_never_applied_twice(
        &server.address(),
        b"INCRBY",
        |address| std::sync::Arc::new(engine_at(address, "once")),
        &direct,
    );
}

#[test]
fn a_release_is_never_sent_twice() {
    let Some(server) = server() else { return };
    let direct = engine(&server, Some("once"));
    cache_tests::faults::release_is_never_sent_twice(
        &server.address(),
        b"EVAL",
        |address| std::sync::Arc::new(engine_at(address, "once")),
        &direct,
    );
}

#[test]
fn delete_if_equals_is_one_script_on_the_namespaced_key() {
    let Some(server) = server() else { return };
    let mut raw = admin(&server);
    let app = engine(&server, Some("app"));
    // Written by another client: the script compares what the server holds.
    redis::cmd("SET")
        .arg("app:lease")
        .arg("their-token")
        .exec(&mut raw)
        .unwrap();
    redis::cmd("SET")
        .arg("lease")
        .arg("my-token")
        .exec(&mut raw)
        .unwrap();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .exec(&mut raw)
        .unwrap();
    assert!(!app.delete_if_equals("lease", b"my-token").unwrap());
    assert!(app.delete_if_equals("lease", b"their-token").unwrap());
    assert!(!app.delete_if_equals("lease", b"their-token").unwrap());
    let calls = command_calls(&mut raw);
    assert_eq!(calls.get("eval").copied(), Some(3), "{calls:?}");
    assert_eq!(
        calls.get("del").copied(),
        Some(1),
        "one DEL, from the script: {calls:?}"
    );
    assert_eq!(calls.get("evalsha"), None, "{calls:?}");
    let gone: Option<String> = redis::cmd("GET").arg("app:lease").query(&mut raw).unwrap();
    assert_eq!(gone, None);
    let outside: Option<String> = redis::cmd("GET").arg("lease").query(&mut raw).unwrap();
    assert_eq!(
        outside.as_deref(),
        Some("my-token"),
        "outside the namespace"
    );
    // A key of another type is an error (the script's WRONGTYPE), never a release.
    redis::cmd("RPUSH")
        .arg("app:list")
        .arg("a")
        .exec(&mut raw)
        .unwrap();
    let err = app.delete_if_equals("list", b"a").unwrap_err();
    assert!(matches!(err, CacheError::Backend { .. }), "{err:?}");
    let kept: i64 = redis::cmd("LLEN").arg("app:list").query(&mut raw).unwrap();
    assert_eq!(kept, 1);
}

#[test]
fn a_user_without_scripting_cannot_release_and_is_told_so() {
    let Some(server) = server() else { return };
    let mut raw = admin(&server);
    redis::cmd("ACL")
        .arg(
            &[
                "SETUSER",
                "noscript",
                "on",
                ">noscript-pw",
                "~noscript:*",
                "+@all",
                "-@scripting",
            ][..],
        )
        .exec(&mut raw)
        .unwrap();
    let url = server
        .url()
        .replace("redis://", "redis://noscript:noscript-pw@");
    let user = RedisEngine::builder()
        .url(&url)
        .namespace("noscript")
        .build()
        .unwrap();
    user.set("lease", v("token"), Ttl::Default).unwrap();
    let err = user.delete_if_equals("lease", b"token").unwrap_err();
    match &err {
        CacheError::PermissionDenied { operation, .. } => {
            assert_eq!(*operation, "delete_if_equals");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());
    assert!(err.is_backend_failure());
    assert_eq!(
        user.get("lease").unwrap(),
        Some(v("token")),
        "nothing released"
    );
}

fn engine_at(address: &str, namespace: &str) -> RedisEngine {
    RedisEngine::builder()
        .url(format!("redis://{address}"))
        .namespace(namespace)
        .build()
        .unwrap()
}
