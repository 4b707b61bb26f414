//! The freshness example against a real Redis: the cold key loads once for both services, the
//! hot key is refreshed without a caller waiting for a load, and a tag invalidation drops its
//! entries only.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use cache_examples::freshness::{service_cache, walkthrough};
use cache_tests::servers::{ServerKind, TestServer};

#[test]
fn two_services_load_once_refresh_ahead_and_share_tags() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let a = service_cache(&server.url(), "freshness-example").unwrap();
    let b = service_cache(&server.url(), "freshness-example").unwrap();
    let seen = walkthrough(&a, &b).unwrap();
    assert_eq!(seen.cold_loads, 1, "{seen:?}");
    // 1.5 s of reads with 500 ms freshness: the first load and about one refresh per period,
    // never one per read (about 200 reads).
    assert!((2..=8).contains(&seen.hot_loads), "{seen:?}");
    // Only the first read waits for the 20 ms loader; later ones are served at once (generous
    // ceiling for a loaded machine).
    assert!(seen.slowest_hot_read < Duration::from_secs(1), "{seen:?}");
    assert!(seen.tag_invalidated, "{seen:?}");
}
