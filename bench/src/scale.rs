//! Comparisons 15 and 16: the engines over several servers against the same engine over one.
//! A Redis Cluster of 3 masters (no replicas) and 3 memcached servers, all on this machine's
//! server core (the benchmark pins itself to the other), so several servers share the one core
//! a single server has to itself: the ratios show what routing and fan-out cost, not what more
//! machines would add.

use std::time::Instant;

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_memcached::MemcachedEngine;
use cache_redis::RedisEngine;
use cache_tests::servers::TestServer;
use cache_tests::topologies::RedisCluster;

use crate::measure::{interleave, rate};
use crate::remote::pin;
use crate::{Goal, Plan, Row};

fn fill(engine: &dyn CacheEngine, keys: &[String]) -> Result<(), String> {
    let payload = Bytes::from(vec![0x5a; 64]);
    for key in keys {
        engine
            .set(key, payload.clone(), Ttl::Never)
            .map_err(|e| format!("fill: {e}"))?;
    }
    Ok(())
}

/// Keys per second fetched with `get_many` of all `keys` at a time.
fn many(engine: &dyn CacheEngine, keys: &[&str], calls: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        std::hint::black_box(engine.get_many(keys).ok());
    }
    rate(calls * keys.len(), start.elapsed())
}

fn singles(engine: &dyn CacheEngine, keys: &[&str], ops: usize) -> f64 {
    let start = Instant::now();
    for i in 0..ops {
        std::hint::black_box(engine.get(keys[i % keys.len()]).ok());
    }
    rate(ops, start.elapsed())
}

pub(crate) fn run(
    plan: &Plan,
    redis: &TestServer,
    memcached: &TestServer,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let cluster = RedisCluster::start(3, 0).map_err(|e| format!("cluster: {e}"))?;
    let memcached_set = TestServer::memcached_set(3).map_err(|e| format!("memcached: {e}"))?;
    let mut servers: Vec<&TestServer> = vec![redis, memcached];
    servers.extend(cluster.nodes());
    servers.extend(memcached_set.iter());
    if !pin(&servers) {
        eprintln!("warning: could not pin every server to the server core");
    }

    let keys: Vec<String> = (0..64).map(|i| format!("scale:{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let one_redis = RedisEngine::builder()
        .url(redis.url())
        .namespace("scale")
        .build()
        .map_err(|e| e.to_string())?;
    let clustered = RedisEngine::builder()
        .url(cluster.url())
        .namespace("scale")
        .build()
        .map_err(|e| e.to_string())?;
    let one_memcached = MemcachedEngine::builder()
        .server(memcached.url())
        .namespace("scale")
        .build()
        .map_err(|e| e.to_string())?;
    let ring = MemcachedEngine::builder()
        .servers(memcached_set.iter().map(TestServer::url))
        .namespace("scale")
        .build()
        .map_err(|e| e.to_string())?;
    for engine in [
        &one_redis as &dyn CacheEngine,
        &clustered,
        &one_memcached,
        &ring,
    ] {
        fill(engine, &keys)?;
    }
    let calls = (plan.remote_ops / 8).max(4);

    let r = interleave(
        plan.rounds,
        &mut [&mut || many(&clustered, &refs, calls), &mut || {
            many(&one_redis, &refs, calls)
        }],
    );
    rows.push(Row::rate(
        15,
        "Redis get_many(64), 3-master cluster / one server, per key",
        r[0],
        r[1],
        Goal::AtLeast(0.5),
    ));
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || singles(&clustered, &refs, plan.remote_ops),
            &mut || singles(&one_redis, &refs, plan.remote_ops),
        ],
    );
    rows.push(Row::rate(
        15,
        "Redis get, 3-master cluster / one server",
        r[0],
        r[1],
        Goal::AtLeast(0.9),
    ));
    let r = interleave(
        plan.rounds,
        &mut [&mut || many(&ring, &refs, calls), &mut || {
            many(&one_memcached, &refs, calls)
        }],
    );
    rows.push(Row::rate(
        16,
        "memcached get_many(64), 3 servers / one server, per key",
        r[0],
        r[1],
        Goal::AtLeast(0.5),
    ));
    let r = interleave(
        plan.rounds,
        &mut [&mut || singles(&ring, &refs, plan.remote_ops), &mut || {
            singles(&one_memcached, &refs, plan.remote_ops)
        }],
    );
    rows.push(Row::rate(
        16,
        "(reference) memcached get, 3 servers / one server",
        r[0],
        r[1],
        Goal::None,
    ));
    Ok(())
}
