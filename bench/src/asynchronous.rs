//! Comparisons 11-13: the async faces. 64 tasks on one AsyncRedisEngine against the `redis`
//! crate's multiplexed connection and against the blocking engine with 64 threads; the same for
//! memcached; one task (latency); InMemoryEngine through the async trait; AsyncTypedCache against
//! the bare engine with bincode.

use std::sync::Arc;
use std::time::Instant;

use cache_core::{AsyncCacheEngine, Bytes, CacheEngine, Ttl};
use cache_local::InMemoryEngine;
use cache_memcached::MemcachedEngine;
use cache_redis::{AsyncRedisEngine, RedisEngine};
use cache_serializer::AsyncTypedCache;
use cache_tests::servers::TestServer;

use crate::measure::{interleave, rate, threaded};
use crate::remote::{Small, small};
use crate::{Goal, Plan, Row};

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// One worker thread: the benchmark is pinned to one CPU (the servers to the other), so every
/// contender runs its tasks on the same single core.
fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(fail("tokio runtime"))
}

/// Operations per second of `tasks` tasks each running `each` operations made by `op`.
fn tasks<F, Fut>(rt: &tokio::runtime::Runtime, tasks: usize, each: usize, op: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let op = op.clone();
                tokio::spawn(async move {
                    for _ in 0..each {
                        op().await;
                    }
                })
            })
            .collect();
        for handle in handles {
            let _ = handle.await;
        }
    });
    rate(tasks * each, start.elapsed())
}

pub(crate) fn run_local(plan: &Plan, rows: &mut Vec<Row>) {
    // 12. InMemoryEngine get on hits through the async trait / through the sync trait, one
    // thread (the future is ready at once: this measures what the async face adds).
    let engine = InMemoryEngine::builder()
        .max_capacity(10_000)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<String> = (0..1_000).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        let _ = CacheEngine::set(&engine, key, Bytes::from_static(&[7; 64]), Ttl::Never);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let ops = plan.local_ops;
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                let start = Instant::now();
                rt.block_on(async {
                    for i in 0..ops {
                        std::hint::black_box(
                            AsyncCacheEngine::get(&engine, &keys[i % 1_000]).await.ok(),
                        );
                    }
                });
                rate(ops, start.elapsed())
            },
            &mut || {
                let start = Instant::now();
                for i in 0..ops {
                    std::hint::black_box(CacheEngine::get(&engine, &keys[i % 1_000]).ok());
                }
                rate(ops, start.elapsed())
            },
        ],
    );
    rows.push(Row::rate(
        12,
        "InMemoryEngine get on hits through AsyncCacheEngine / through CacheEngine, 1 thread",
        r[0],
        r[1],
        Goal::AtLeast(0.9),
    ));
}

pub(crate) fn run_remote(
    plan: &Plan,
    redis: &TestServer,
    memcached: &TestServer,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let rt = runtime()?;
    let each = (plan.remote_ops / 4).max(8);
    let value = Bytes::from(vec![0x42; 64]);

    // 11. Redis: 64 tasks on one engine (one pipelined connection) / the redis crate's
    // multiplexed connection with the same 64 tasks / the blocking engine with 64 threads.
    let ours = RedisEngine::async_builder()
        .url(redis.url())
        .namespace("bench-async")
        .build()
        .map_err(fail("async redis"))?;
    let blocking = RedisEngine::builder()
        .url(redis.url())
        .namespace("bench-async")
        .build()
        .map_err(fail("redis"))?;
    CacheEngine::set(&blocking, "k", value.clone(), Ttl::Never).map_err(fail("set"))?;
    let raw = rt.block_on(async {
        redis::Client::open(redis.url())
            .map_err(fail("raw redis"))?
            .get_multiplexed_async_connection()
            .await
            .map_err(fail("raw redis"))
    })?;
    let raw_get = |raw: redis::aio::MultiplexedConnection| {
        move || {
            let mut raw = raw.clone();
            async move {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg("bench-async:k")
                    .query_async(&mut raw)
                    .await
                    .ok()
                    .flatten();
                std::hint::black_box(v);
            }
        }
    };
    // The engine on the crate's multiplexed connection (feature redis-crate).
    let over_crate = RedisEngine::async_builder()
        .redis_connection(raw.clone())
        .namespace("bench-async")
        .build()
        .map_err(fail("async redis over the redis crate"))?;
    let our_get = |engine: AsyncRedisEngine| {
        move || {
            let engine = engine.clone();
            async move {
                std::hint::black_box(engine.get("k").await.ok());
            }
        }
    };
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || tasks(&rt, 64, each, our_get(ours.clone())),
            &mut || tasks(&rt, 64, each, raw_get(raw.clone())),
            &mut || {
                threaded(64, each, |_, _| {
                    std::hint::black_box(CacheEngine::get(&blocking, "k").ok());
                })
            },
            &mut || tasks(&rt, 64, each, our_get(over_crate.clone())),
        ],
    );
    rows.push(Row::rate(
        11,
        "AsyncRedisEngine on the redis crate's multiplexed connection (redis_connection), gets, \
         64 tasks / the crate's connection used directly",
        r[3],
        r[1],
        Goal::None,
    ));
    rows.push(Row::rate(
        11,
        "AsyncRedisEngine gets, 64 tasks / redis crate multiplexed connection, 64 tasks",
        r[0],
        r[1],
        Goal::AtLeast(0.9),
    ));
    rows.push(Row::rate(
        11,
        "AsyncRedisEngine gets, 64 tasks / RedisEngine, 64 threads",
        r[0],
        r[2],
        Goal::AtLeast(4.0),
    ));
    let single = (plan.remote_ops).max(8);
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || tasks(&rt, 1, single, our_get(ours.clone())),
            &mut || tasks(&rt, 1, single, raw_get(raw.clone())),
            &mut || tasks(&rt, 1, single, our_get(over_crate.clone())),
        ],
    );
    rows.push(Row::rate(
        11,
        "AsyncRedisEngine on the redis crate's multiplexed connection, gets, 1 task / the \
         crate's connection used directly",
        r[2],
        r[1],
        Goal::None,
    ));
    rows.push(Row::rate(
        11,
        "AsyncRedisEngine gets, 1 task / redis crate multiplexed connection, 1 task",
        r[0],
        r[1],
        Goal::AtLeast(0.93),
    ));

    // Memcached: 64 tasks / the blocking engine with 64 threads.
    let ours = MemcachedEngine::async_builder()
        .server(memcached.url())
        .namespace("bench-async")
        .build()
        .map_err(fail("async memcached"))?;
    let blocking = MemcachedEngine::builder()
        .server(memcached.url())
        .namespace("bench-async")
        .build()
        .map_err(fail("memcached"))?;
    CacheEngine::set(&blocking, "k", value.clone(), Ttl::Never).map_err(fail("set"))?;
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                let engine = ours.clone();
                tasks(&rt, 64, each, move || {
                    let engine = engine.clone();
                    async move {
                        std::hint::black_box(engine.get("k").await.ok());
                    }
                })
            },
            &mut || {
                threaded(64, each, |_, _| {
                    std::hint::black_box(CacheEngine::get(&blocking, "k").ok());
                })
            },
        ],
    );
    rows.push(Row::rate(
        11,
        "AsyncMemcachedEngine gets, 64 tasks / MemcachedEngine, 64 threads",
        r[0],
        r[1],
        Goal::AtLeast(3.0),
    ));

    // 13. AsyncTypedCache over Redis / the same engine with bare bincode, 64 tasks.
    let engine = RedisEngine::async_builder()
        .url(redis.url())
        .namespace("bench-typed")
        .build()
        .map_err(fail("async redis"))?;
    let typed = Arc::new(AsyncTypedCache::new(engine.clone()));
    rt.block_on(typed.set("small", &small(), Ttl::Never))
        .map_err(fail("typed set"))?;
    let plain = bincode::serde::encode_to_vec(small(), bincode::config::standard())
        .map_err(fail("bincode"))?;
    rt.block_on(engine.set("plain", Bytes::from(plain), Ttl::Never))
        .map_err(fail("set"))?;
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                let typed = Arc::clone(&typed);
                tasks(&rt, 64, each, move || {
                    let typed = Arc::clone(&typed);
                    async move {
                        std::hint::black_box(typed.get::<Small>("small").await.ok());
                    }
                })
            },
            &mut || {
                let engine = engine.clone();
                tasks(&rt, 64, each, move || {
                    let engine = engine.clone();
                    async move {
                        let bytes = engine.get("plain").await.ok().flatten();
                        let value: Option<Small> = bytes.and_then(|b| {
                            bincode::serde::decode_from_slice(&b, bincode::config::standard())
                                .ok()
                                .map(|(v, _)| v)
                        });
                        std::hint::black_box(value);
                    }
                })
            },
        ],
    );
    rows.push(Row::rate(
        13,
        "AsyncTypedCache<AsyncRedisEngine> get, 64 tasks / the engine with bare bincode",
        r[0],
        r[1],
        Goal::AtLeast(0.93),
    ));
    Ok(())
}
