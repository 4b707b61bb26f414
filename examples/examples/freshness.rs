//! Freshness without stampedes: two services on one Redis load a cold key once between them
//! (a lease), keep a hot key fresh in the background (refresh ahead), and drop every entry of
//! a tag with one write.
//!
//! ```text
//! cargo run --example freshness -- redis://127.0.0.1:6379
//! ```
//!
//! Everything happens under the namespace `freshness`; nothing else on the server is touched.

use cache_examples::freshness::{service_cache, walkthrough};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let a = service_cache(&url, "freshness")?;
    let b = service_cache(&url, "freshness")?;
    let seen = walkthrough(&a, &b)?;
    println!(
        "cold key, 16 callers in two services: the loader ran {} time(s)",
        seen.cold_loads
    );
    println!(
        "hot key read for 1.5 s (fresh for 500 ms): the loader ran {} time(s), the slowest read took {:?}",
        seen.hot_loads, seen.slowest_hot_read
    );
    println!(
        "one invalidation of tag user:7 dropped its orders and kept the others: {}",
        seen.tag_invalidated
    );
    Ok(())
}
