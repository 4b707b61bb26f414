//! Quickstart: typed values in the in-memory engine, a TTL expiring, and a single-flight load.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! No server is needed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use cache_core::Ttl;
use cache_local::InMemoryEngine;
use cache_serializer::TypedCache;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    roles: Vec<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. A bounded in-memory engine (300 entries, 300 s default TTL) with typed values on top.
    let cache = TypedCache::new(InMemoryEngine::new());
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

    // 2. A TTL expiring.
    cache.set(
        "session:42",
        &"token-abc".to_string(),
        Ttl::After(Duration::from_millis(500)),
    )?;
    println!(
        "set session:42 with a 500 ms TTL; now: {:?}",
        cache.get::<String>("session:42")?
    );
    thread::sleep(Duration::from_millis(600));
    let expired = cache.get::<String>("session:42")?;
    assert_eq!(expired, None);
    println!("600 ms later it has expired: {expired:?}");

    // 3. A single-flight load: eight threads ask for the same missing key at once; the slow
    //    loader runs once and every thread gets its value.
    let loads = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let cache = cache.clone();
            let loads = Arc::clone(&loads);
            thread::spawn(move || {
                cache.get_or_set_with("report:2026", Ttl::Default, || {
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
    Ok(())
}
