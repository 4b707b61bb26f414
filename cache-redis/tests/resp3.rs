//! Both faces of the Redis engine pass the whole conformance kit over RESP3 (`HELLO 3`, with
//! its `AUTH` and a database), against a real `redis-server`; the protocol setting is checked,
//! and a server that cannot speak RESP3 is refused with a message that says so.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cache_core::{CacheEngine, CacheError, Ttl};
use cache_redis::{RedisEngine, RedisProtocol};
use cache_tests::TestContext;
use cache_tests::hostile::{Dialect, HostileServer, Misbehaviour};
use cache_tests::servers::{OrSkip, ServerKind, TestServer};

const USER: &str = "resp3-app";
const PASSWORD: &str = "resp3 p@ss";

/// One server for the whole binary, with an ACL user the engines log in as.
fn server() -> Option<Arc<TestServer>> {
    static SERVER: OnceLock<Option<Arc<TestServer>>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let server = TestServer::start(ServerKind::Redis, &[]).or_skip()?;
            redis::cmd("ACL")
                .arg(
                    &[
                        "SETUSER",
                        USER,
                        "on",
                        &format!(">{PASSWORD}"),
                        "~*",
                        "+@all",
                    ][..],
                )
                .exec(&mut admin(&server))
                .expect("the ACL user is created");
            Some(Arc::new(server))
        })
        .clone()
}

fn admin(server: &TestServer) -> redis::Connection {
    redis::Client::open(server.url())
        .and_then(|client| client.get_connection())
        .expect("the test's own connection")
}

/// The user's URL, database 3, RESP3: `HELLO 3 AUTH ...` then `SELECT 3` on every connection.
fn url() -> String {
    let server = server().expect("checked by `require`");
    format!(
        "redis://{USER}:{}@{}/3?protocol=resp3",
        PASSWORD.replace(' ', "%20").replace('@', "%40"),
        server.address()
    )
}

fn redis(ctx: &TestContext) -> RedisEngine {
    RedisEngine::builder()
        .url(url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

cache_tests::conformance_suite!(redis_resp3_kit, redis, require = server().is_some());

#[cfg(feature = "tokio")]
fn async_redis(ctx: &TestContext) -> cache_redis::AsyncRedisEngine {
    RedisEngine::async_builder()
        .url(url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .expect("valid settings")
}

#[cfg(feature = "tokio")]
cache_tests::async_conformance_suite!(
    async_redis_resp3_kit,
    async_redis,
    require = server().is_some()
);

/// The `resp=` field of every connection of `user`, from `CLIENT LIST`.
fn protocols_of_user(server: &TestServer, user: &str) -> Vec<String> {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut admin(server))
        .expect("CLIENT LIST");
    clients
        .lines()
        .filter(|line| line.split(' ').any(|pair| pair == format!("user={user}")))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|pair| pair.strip_prefix("resp="))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn connections_speak_the_protocol_asked_for() {
    let Some(server) = server() else { return };
    // A user of its own, so that the kit's connections running beside are not counted.
    let user = "which-protocol";
    redis::cmd("ACL")
        .arg(&["SETUSER", user, "on", ">pw", "~*", "+@all"][..])
        .exec(&mut admin(&server))
        .unwrap();
    let url = format!("redis://{user}:pw@{}/3?protocol=resp3", server.address());
    let url_without_protocol = url.replace("?protocol=resp3", "");
    for (builder, want) in [
        (RedisEngine::builder().url(&url), "3"),
        (
            RedisEngine::builder()
                .url(&url_without_protocol)
                .protocol(RedisProtocol::Resp3),
            "3",
        ),
        (RedisEngine::builder().url(&url_without_protocol), "2"),
    ] {
        let engine = builder.namespace("which-protocol").build().unwrap();
        engine.set("k", "v".into(), Ttl::Default).unwrap();
        assert_eq!(engine.get("k").unwrap().as_deref(), Some(&b"v"[..]));
        let protocols = protocols_of_user(&server, user);
        assert!(!protocols.is_empty());
        assert!(
            protocols.iter().all(|p| p == want),
            "want resp={want}: {protocols:?}"
        );
        engine.close().unwrap();
        // Closed connections leave the list before the next engine connects.
        let started = std::time::Instant::now();
        while !protocols_of_user(&server, user).is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "connections stay"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The data went to database 3 of the user's server.
    let value: Option<String> = redis::cmd("GET")
        .arg("which-protocol:k")
        .query(&mut {
            let mut raw = admin(&server);
            redis::cmd("SELECT").arg(3).exec(&mut raw).unwrap();
            raw
        })
        .unwrap();
    assert_eq!(value.as_deref(), Some("v"));
}

#[test]
fn a_wrong_password_over_resp3_is_an_authentication_error() {
    if server().is_none() {
        return;
    }
    let engine = RedisEngine::builder()
        .url(url().replace("p%40ss", "wrong"))
        .build()
        .unwrap();
    let err = engine.get("k").unwrap_err();
    assert!(matches!(err, CacheError::Authentication { .. }), "{err:?}");
    assert!(!err.to_string().contains("wrong"), "{err}");
}

#[test]
fn a_protocol_set_twice_differently_is_refused() {
    let err = RedisEngine::builder()
        .url("redis://127.0.0.1:1/?protocol=resp2")
        .protocol(RedisProtocol::Resp3)
        .build()
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
}

/// A server that does not know `HELLO` (as before Redis 6): the connection fails with
/// `InvalidConfig` saying RESP3 is the problem, at once and on both faces.
#[test]
fn a_server_without_resp3_is_refused_with_the_reason() {
    let fake = HostileServer::start(Dialect::Redis, Misbehaviour::NeverAnswer).unwrap();
    let url = format!("redis://{}?protocol=resp3", fake.address());
    let engine = RedisEngine::builder()
        .url(&url)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = engine.get("k").unwrap_err();
    assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("RESP3"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(fake.data_requests(), 0, "no data request was sent");
    #[cfg(feature = "tokio")]
    {
        let runtime = cache_tests::asynchronous::runtime();
        let err = runtime
            .block_on(async {
                let engine = RedisEngine::async_builder()
                    .url(&url)
                    .timeout(Duration::from_secs(2))
                    .build()?;
                cache_core::AsyncCacheEngine::get(&engine, "k").await
            })
            .unwrap_err();
        assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err:?}");
    }
}
