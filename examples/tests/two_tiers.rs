//! The two-tier example against a real Redis: B's second read is local, its local copy lives no
//! longer than the shared entry, and A's update reaches B through the feed.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::time::Duration;

use cache_core::Remaining;
use cache_examples::two_tiers::{service_cache, walkthrough};
use cache_tests::servers::{ServerKind, TestServer};

#[test]
fn an_update_in_one_service_reaches_the_other() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let a = service_cache(&server.url(), "two-tiers-example").unwrap();
    let b = service_cache(&server.url(), "two-tiers-example").unwrap();
    let seen = walkthrough(&a, &b).unwrap();
    assert!(seen.second_read_local, "{seen:?}");
    assert!(seen.coherent, "{seen:?}");
    let Some(Remaining::After(left)) = seen.local_ttl_after_refill else {
        panic!("{seen:?}");
    };
    assert!(
        left <= Duration::from_secs(10) + Duration::from_millis(20),
        "{seen:?}"
    );
    assert!(seen.update_seen_after < Duration::from_secs(2), "{seen:?}");
}
