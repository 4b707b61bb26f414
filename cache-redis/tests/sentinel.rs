//! Both Redis engines through Redis Sentinel (a master, a replica, three sentinels): the whole
//! kit, and a failover under load that the engine follows.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, Ttl};
#[cfg(feature = "tokio")]
use cache_redis::AsyncRedisEngine;
use cache_redis::RedisEngine;
use cache_tests::TestContext;
use cache_tests::servers::OrSkip;
use cache_tests::topologies::RedisSentinels;

fn sentinel(ctx: &TestContext) -> RedisEngine {
    let set = RedisSentinels::shared().expect("checked by `require`");
    RedisEngine::builder()
        .url(set.url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .unwrap()
}

#[cfg(feature = "tokio")]
fn async_sentinel(ctx: &TestContext) -> AsyncRedisEngine {
    let set = RedisSentinels::shared().expect("checked by `require`");
    RedisEngine::async_builder()
        .url(set.url())
        .namespace(ctx.namespace())
        .default_ttl(ctx.default_ttl())
        .max_value_size(1 << 20)
        .build()
        .unwrap()
}

cache_tests::conformance_suite!(
    sentinel_kit,
    sentinel,
    require = RedisSentinels::shared().is_some()
);
#[cfg(feature = "tokio")]
cache_tests::async_conformance_suite!(
    async_sentinel_kit,
    async_sentinel,
    require = RedisSentinels::shared().is_some()
);

/// `SENTINEL FAILOVER` under load: the old master becomes a replica (the sentinels cut its
/// clients), operations fail for a short window, then the engine writes to the new master; no
/// caller ever reads another key's value.
#[test]
fn the_engine_follows_a_failover() {
    let Some(set) = RedisSentinels::start("failover").or_skip() else {
        return;
    };
    let engine = RedisEngine::builder()
        .sentinels(set.sentinel_addresses(), set.name())
        .namespace("load")
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let before = set.master().unwrap();
    engine
        .set("warm", Bytes::from_static(b"up"), Ttl::Default)
        .unwrap();
    let ops = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let wrong = AtomicU64::new(0);
    let window: Mutex<Option<(Instant, Instant)>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let switched = std::thread::scope(|s| {
        for t in 0..8 {
            let (engine, ops, errors, wrong, window, stop) =
                (&engine, &ops, &errors, &wrong, &window, &stop);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("t{t}-k{}", i % 300);
                    let result = if i % 2 == 0 {
                        engine
                            .set(&key, Bytes::from(format!("{key}={i}")), Ttl::Default)
                            .map(drop)
                    } else {
                        engine.get(&key).map(|found| {
                            if found.is_some_and(|v| !v.starts_with(format!("{key}=").as_bytes())) {
                                wrong.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                    };
                    ops.fetch_add(1, Ordering::Relaxed);
                    if result.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        let mut w = window.lock().unwrap();
                        *w = Some(w.map_or((now, now), |(first, _)| (first, now)));
                    }
                    i += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        let asked = set.failover();
        let until = Instant::now() + Duration::from_secs(20);
        let mut switched = None;
        while Instant::now() < until {
            if set.master().is_some_and(|m| m != before) {
                switched = Some(Instant::now());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // How long until the engine's writes land on the new master.
        let followed = switched.and_then(|at| {
            let new_master = RedisEngine::builder()
                .url(format!("redis://{}", set.master()?))
                .namespace("load")
                .build()
                .ok()?;
            let until = at + Duration::from_secs(10);
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let probe = Bytes::from(format!("probe-{n}"));
                if engine.set("probe", probe.clone(), Ttl::Default).is_ok()
                    && new_master.get("probe").ok().flatten() == Some(probe)
                {
                    return Some(at.elapsed());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        });
        // A while of success on the new master.
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        asked.map(|_| (switched, followed))
    });
    let (switched, followed) = switched.unwrap();
    let switched = switched.expect("the sentinels never switched masters");
    let followed = followed.expect("the engine never wrote to the new master");
    eprintln!("the engine followed the new master {followed:?} after the sentinels switched");
    assert!(followed < Duration::from_secs(3), "{followed:?}");
    let lasted = window
        .lock()
        .unwrap()
        .map_or(Duration::ZERO, |(first, last)| last - first);
    eprintln!(
        "sentinel failover: switched {:?} after the request; {} operations, {} errors over {:?}, \
         {} wrong values",
        switched - started - Duration::from_millis(500),
        ops.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        lasted,
        wrong.load(Ordering::Relaxed)
    );
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    assert!(lasted < Duration::from_secs(10), "errors for {lasted:?}");
    // The engine writes to the new master: a write lands there and is read back.
    let after = set.master().unwrap();
    assert_ne!(after, before);
    engine
        .set("after", Bytes::from_static(b"new"), Ttl::Default)
        .unwrap();
    assert_eq!(
        engine.get("after").unwrap(),
        Some(Bytes::from_static(b"new"))
    );
    let direct = RedisEngine::builder()
        .url(format!("redis://{after}"))
        .namespace("load")
        .build()
        .unwrap();
    assert_eq!(
        direct.get("after").unwrap(),
        Some(Bytes::from_static(b"new"))
    );
}

#[test]
fn sentinel_urls_name_a_master() {
    for bad in [
        "redis-sentinel://127.0.0.1:26379",
        "redis-sentinel://127.0.0.1:26379/",
        "redis-sentinel://127.0.0.1:26379/m/x",
    ] {
        assert!(RedisEngine::builder().url(bad).build().is_err(), "{bad}");
    }
    assert!(
        RedisEngine::builder()
            .url("redis-sentinel://:secret@10.0.0.1,10.0.0.2:26380/mymaster/2")
            .build()
            .is_ok()
    );
}
