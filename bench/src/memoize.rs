//! Comparison 21: a `#[cached]` function on a hit against the hand-written read it replaces,
//! `cache.get::<T>(&format!(...))`, through the same typed cache over an `InMemoryEngine` and
//! with the same key shape, so the difference is what the expansion adds around the read.

use std::time::Instant;

use cache_core::Ttl;
use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};

use crate::measure::{interleave, rate};
use crate::remote::{Small, small};
use crate::{Goal, Plan, Row};

/// Distinct keys the calls cycle through, all present.
const KEYS: u64 = 1_000;

struct Users {
    cache: TypedCache<InMemoryEngine>,
}

impl Users {
    #[cached(cache = self.cache, key = "user:{id}", ttl = "5m")]
    fn user(&self, id: u64) -> Small {
        Small { id, ..small() }
    }
}

pub(crate) fn run(plan: &Plan, rows: &mut Vec<Row>) {
    let engine = InMemoryEngine::builder()
        .max_capacity(10 * KEYS)
        .build()
        .unwrap_or_else(|e| panic!("engine: {e}"));
    let users = Users {
        cache: TypedCache::new(engine),
    };
    for id in 0..KEYS {
        users
            .cache
            .set(
                &format!("user:{id}"),
                &Small { id, ..small() },
                Ttl::Default,
            )
            .unwrap_or_else(|e| panic!("set: {e}"));
    }
    let ops = plan.local_ops;
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                let start = Instant::now();
                for i in 0..ops {
                    let id = std::hint::black_box(i as u64 % KEYS);
                    std::hint::black_box(users.user(id));
                }
                rate(ops, start.elapsed())
            },
            &mut || {
                let start = Instant::now();
                for i in 0..ops {
                    let id = std::hint::black_box(i as u64 % KEYS);
                    let user: Option<Small> = users.cache.get(&format!("user:{id}")).ok().flatten();
                    std::hint::black_box(user);
                }
                rate(ops, start.elapsed())
            },
        ],
    );
    let loads = users.cache.stats().loads;
    assert_eq!(loads, 0, "every memoized call was a hit");
    rows.push(Row::rate(
        21,
        "memoized call on a hit / hand-written get",
        r[0],
        r[1],
        Goal::AtLeast(0.95),
    ));
}
