//! Quickstart: typed values in a cache, a TTL expiring, and a single-flight load.
//!
//! ```text
//! cargo run --example quickstart                                   # in-memory, no server
//! cargo run --example quickstart -- redis://127.0.0.1:6379         # a Redis server
//! cargo run --example quickstart -- memcached://127.0.0.1:11211    # a memcached server
//! ```
//!
//! With a server, everything happens under the namespace `quickstart`, which is cleared at the
//! end; nothing else on the server is touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cache_toolkit::{CacheEngine, InMemoryEngine, MemcachedEngine, RedisEngine, Ttl, TypedCache};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    roles: Vec<String>,
}

/// The engine named by the first argument: none for in-memory, or a server URL.
fn engine() -> Result<(Box<dyn CacheEngine>, String), Box<dyn std::error::Error>> {
    let Some(url) = std::env::args().nth(1) else {
        return Ok((
            Box::new(InMemoryEngine::new()),
            "the in-memory engine".into(),
        ));
    };
    if url.starts_with("redis://") || url.starts_with("rediss://") {
        let engine = RedisEngine::builder()
            .url(&url)
            .namespace("quickstart")
            .build()?;
        engine.ping()?;
        Ok((
            Box::new(engine),
            format!("Redis at {url} (namespace `quickstart`)"),
        ))
    } else if url.starts_with("memcached://") || url.starts_with("memcache://") {
        let engine = MemcachedEngine::builder()
            .server(&url)
            .namespace("quickstart")
            .build()?;
        engine.ping()?;
        Ok((
            Box::new(engine),
            format!("memcached at {url} (namespace `quickstart`)"),
        ))
    } else {
        Err(format!("unknown URL {url:?}: use redis://host:port or memcached://host:port").into())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (engine, what) = engine()?;
    println!("using {what}");
    let resolution = engine.capabilities().ttl_resolution;

    // 1. Typed values on top of the engine.
    let cache = TypedCache::new(engine);
    let ada = User {
        id: 1,
        name: "Ada Lovelace".into(),
        roles: vec!["admin".into()],
    };
    cache.set("user:1", &ada, Ttl::Default)?;
    let read: Option<User> = cache.get("user:1")?;
    assert_eq!(read.as_ref(), Some(&ada));
    println!("stored and read back a typed struct: {read:?}");

    // Reading the bytes as another type is a miss, never a wrongly decoded value.
    let wrong: Option<(u64, u64)> = cache.get("user:1")?;
    assert_eq!(wrong, None);
    println!("read as another type it is a miss: {wrong:?}");

    // 2. A TTL expiring (after the TTL plus the engine's declared resolution).
    let ttl = Duration::from_millis(500);
    cache.set("session:42", &"token-abc".to_string(), Ttl::After(ttl))?;
    println!(
        "set session:42 with a 500 ms TTL; now: {:?}",
        cache.get::<String>("session:42")?
    );
    let wait = ttl + resolution + Duration::from_millis(100);
    thread::sleep(wait);
    let expired = cache.get::<String>("session:42")?;
    assert_eq!(expired, None);
    println!("{wait:?} later it has expired: {expired:?}");

    // 3. A single-flight load: eight threads ask for the same missing key at once; the slow
    //    loader runs once and every thread gets its value.
    let loads = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let cache = cache.clone();
            let loads = Arc::clone(&loads);
            thread::spawn(move || {
                cache.entry("report:2026").ttl(Ttl::Default).or_load(|| {
                    loads.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(200)); // a slow query
                    vec![3u32, 1, 4, 1, 5]
                })
            })
        })
        .collect();
    for handle in handles {
        let report = handle.join().map_err(|_| "a thread panicked")??;
        assert_eq!(report, vec![3, 1, 4, 1, 5]);
    }
    let runs = loads.load(Ordering::SeqCst);
    assert_eq!(runs, 1);
    println!(
        "8 threads asked for report:2026 at once: the loader ran {runs} time, all got the value in {:?}",
        start.elapsed()
    );
    println!("stats: {:?}", cache.stats());
    cache.clear()?;
    Ok(())
}
