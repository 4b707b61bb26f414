//! Comparison 25: the remote engines through a Unix domain socket against loopback TCP, one
//! connection each, gets of a 64-byte value. Redis: one server listening on both. memcached
//! (whose `-s` turns the network off): a socket-only server beside a TCP one, started alike.

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_memcached::MemcachedEngine;
use cache_redis::RedisEngine;
use cache_tests::servers::{ServerKind, TestServer};

use crate::measure::{interleave, rate};
use crate::remote::pin;
use crate::{Goal, Plan, Row};

fn gets(engine: &dyn CacheEngine, ops: usize) -> f64 {
    let start = std::time::Instant::now();
    for _ in 0..ops {
        std::hint::black_box(engine.get("small").ok().flatten());
    }
    rate(ops, start.elapsed())
}

pub(crate) fn run(
    plan: &Plan,
    memcached_tcp: &TestServer,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let redis = TestServer::start_unix(ServerKind::Redis).map_err(|e| e.to_string())?;
    let memcached = TestServer::start_unix(ServerKind::Memcached).map_err(|e| e.to_string())?;
    pin(&[&redis, &memcached, memcached_tcp]);
    let value = Bytes::from_static(&[7; 64]);
    let redis_url = |url: String| {
        RedisEngine::builder()
            .url(url)
            .namespace("bench-unix")
            .max_connections(1)
            .build()
            .map_err(|e| e.to_string())
    };
    let socket = redis.unix_url().ok_or("no socket")?;
    let (over_unix, over_tcp) = (redis_url(socket)?, redis_url(redis.url())?);
    over_unix
        .set("small", value.clone(), Ttl::Never)
        .map_err(|e| e.to_string())?;
    let ops = plan.remote_ops;
    let r = interleave(
        plan.rounds,
        &mut [&mut || gets(&over_unix, ops), &mut || gets(&over_tcp, ops)],
    );
    rows.push(Row::rate(
        25,
        "RedisEngine get through a Unix socket / through loopback TCP, one connection",
        r[0],
        r[1],
        Goal::AtLeast(1.0),
    ));

    let memcached_url = |url: String| {
        MemcachedEngine::builder()
            .server(url)
            .namespace("bench-unix")
            .max_connections(1)
            .build()
            .map_err(|e| e.to_string())
    };
    let socket = memcached.unix_url().ok_or("no socket")?;
    let (over_unix, over_tcp) = (memcached_url(socket)?, memcached_url(memcached_tcp.url())?);
    for engine in [&over_unix, &over_tcp] {
        engine
            .set("small", value.clone(), Ttl::Never)
            .map_err(|e| e.to_string())?;
    }
    let r = interleave(
        plan.rounds,
        &mut [&mut || gets(&over_unix, ops), &mut || gets(&over_tcp, ops)],
    );
    rows.push(Row::rate(
        25,
        "MemcachedEngine get through a Unix socket / through loopback TCP, one connection",
        r[0],
        r[1],
        Goal::AtLeast(1.0),
    ));
    Ok(())
}
