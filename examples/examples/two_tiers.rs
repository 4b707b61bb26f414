//! Two services with a local tier each in front of one Redis, kept coherent by Redis's
//! invalidation feed.
//!
//! ```text
//! cargo run --example two_tiers -- redis://127.0.0.1:6379
//! ```
//!
//! Everything happens under the namespace `two-tiers`; nothing else on the server is touched.

use cache_core::CacheEngine;
use cache_examples::two_tiers::{service_cache, walkthrough};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let a = service_cache(&url, "two-tiers")?;
    let b = service_cache(&url, "two-tiers")?;
    if !b.is_caching_locally() {
        eprintln!("no answer from {url}: the feed is down, so nothing would be kept locally");
    }
    let seen = walkthrough(&a, &b)?;
    println!(
        "B refilled user:1 from Redis with {:?} left locally (the shared entry's remaining TTL)",
        seen.local_ttl_after_refill
    );
    println!(
        "B's second read came from its local tier: {}",
        seen.second_read_local
    );
    println!(
        "A updated user:1; B read the new value {:?} later (feed connected throughout: {})",
        seen.update_seen_after, seen.coherent
    );
    a.delete("user:1")?;
    Ok(())
}
