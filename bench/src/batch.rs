//! Comparison 22: the batch loader against single-key loads, over Redis. 100 keys of which 90
//! are cached: `entries(keys).or_load_many(..)` (one bulk read, one loader call for the 10
//! missing keys, one bulk write) against 100 `entry(key).or_load(..)` calls. The loader costs
//! nothing here, so the ratio is the cache's side alone; a real database would add one query
//! for the batch against ten for the single loads.

use std::time::{Duration, Instant};

use cache_core::{CacheEngine, Ttl};
use cache_redis::RedisEngine;
use cache_serializer::TypedCache;
use cache_tests::servers::TestServer;

use crate::measure::interleave;
use crate::remote::{Small, small};
use crate::{Goal, Plan, Row};

const KEYS: usize = 100;
const MISSING: usize = 10;

pub(crate) fn run(plan: &Plan, redis: &TestServer, rows: &mut Vec<Row>) -> Result<(), String> {
    let engine = RedisEngine::builder()
        .url(redis.url())
        .namespace("bench-batch")
        .max_connections(1)
        .build()
        .map_err(|e| format!("redis engine: {e}"))?;
    let cache = TypedCache::new(engine);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("item:{i}")).collect();
    let cached: Vec<(&str, Small)> = keys[MISSING..]
        .iter()
        .map(|k| (k.as_str(), small()))
        .collect();
    cache
        .set_many(&cached, Ttl::Default)
        .map_err(|e| format!("set_many: {e}"))?;
    let missing: Vec<&str> = keys[..MISSING].iter().map(String::as_str).collect();
    let batches = (plan.remote_ops / KEYS).max(2);
    // Each batch starts with the same 10 keys missing; clearing them is not timed.
    let reset = || {
        cache
            .engine()
            .delete_many(&missing)
            .unwrap_or_else(|e| panic!("delete_many: {e}"));
    };
    let timed = |run: &mut dyn FnMut()| {
        let mut spent = Duration::ZERO;
        for _ in 0..batches {
            reset();
            let start = Instant::now();
            run();
            spent += start.elapsed();
        }
        batches as f64 / spent.as_secs_f64()
    };
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                timed(&mut || {
                    let got = cache
                        .entries(keys.iter().cloned())
                        .or_load_many(|missing| missing.into_iter().map(|k| (k, small())))
                        .unwrap_or_else(|e| panic!("or_load_many: {e}"));
                    assert_eq!(got.len(), KEYS);
                })
            },
            &mut || {
                timed(&mut || {
                    for key in &keys {
                        let got: Small = cache
                            .entry(key)
                            .or_load(small)
                            .unwrap_or_else(|e| panic!("or_load: {e}"));
                        std::hint::black_box(got);
                    }
                })
            },
        ],
    );
    rows.push(Row::rate(
        22,
        "100 keys, 90 cached, over Redis: entries().or_load_many (one loader call) / 100 entry().or_load",
        r[0],
        r[1],
        Goal::AtLeast(10.0),
    ));
    Ok(())
}
