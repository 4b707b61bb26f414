//! Both local engines pass the whole conformance kit.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use cache_local::{InMemoryEngine, ThreadLocalEngine};
use cache_tests::TestContext;

fn in_memory(ctx: &TestContext) -> InMemoryEngine {
    InMemoryEngine::builder()
        .clock(ctx.clock())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

fn in_memory_byte_bounded(ctx: &TestContext) -> InMemoryEngine {
    InMemoryEngine::builder()
        .max_capacity(1_000)
        .max_bytes(4 << 20)
        .clock(ctx.clock())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

fn in_memory_real_clock(ctx: &TestContext) -> InMemoryEngine {
    InMemoryEngine::builder()
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

fn thread_local(ctx: &TestContext) -> ThreadLocalEngine {
    ThreadLocalEngine::builder()
        .clock(ctx.clock())
        .default_ttl(ctx.default_ttl())
        .build()
        .expect("valid settings")
}

cache_tests::conformance_suite!(in_memory_kit, in_memory);
cache_tests::conformance_suite!(in_memory_byte_bounded_kit, in_memory_byte_bounded);
cache_tests::conformance_suite!(in_memory_real_clock_kit, in_memory_real_clock);
cache_tests::conformance_suite!(thread_local_kit, thread_local);

// The async face of `InMemoryEngine`, through the same behaviours.
cache_tests::async_conformance_suite!(in_memory_async_kit, in_memory);

/// With a time-to-idle, the idle behaviour (the others assume entries live out their TTL).
mod idle {
    use std::time::Duration;

    use cache_local::{InMemoryEngine, ThreadLocalEngine};
    use cache_tests::{TestContext, behaviours, factory};

    #[test]
    fn in_memory_manual_clock() {
        behaviours::idle_entries_expire(&factory(|ctx: &TestContext| {
            InMemoryEngine::builder()
                .clock(ctx.clock())
                .time_to_idle(Duration::from_secs(30))
                .build()
                .expect("valid settings")
        }));
    }

    #[test]
    fn in_memory_real_clock() {
        behaviours::idle_entries_expire(&factory(|_: &TestContext| {
            InMemoryEngine::builder()
                .time_to_idle(Duration::from_secs(2))
                .build()
                .expect("valid settings")
        }));
    }

    #[test]
    fn thread_local_manual_clock() {
        behaviours::idle_entries_expire(&factory(|ctx: &TestContext| {
            ThreadLocalEngine::builder()
                .clock(ctx.clock())
                .time_to_idle(Duration::from_secs(30))
                .build()
                .expect("valid settings")
        }));
    }
}
