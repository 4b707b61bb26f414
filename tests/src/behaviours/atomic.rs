//! Atomic operations: `add`, `increment`, `touch`, alone and under threads.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use cache_core::{CacheError, Ttl};

use super::{assert_value, bytes, exists, set, short_ttl};
use crate::{EngineFactory, Harness};

/// `add` stores only when the key is free, and an expired entry counts as free.
pub fn add_semantics(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    assert!(
        h.engine
            .add("a", bytes("first"), Ttl::Default)
            .expect("add"),
        "{}: add on a free key",
        h.caps.backend
    );
    assert!(
        !h.engine
            .add("a", bytes("second"), Ttl::Default)
            .expect("add"),
        "{}: add on a taken key",
        h.caps.backend
    );
    assert_value(&h, "a", Some("first"), "a losing add must not write");
    let ttl = short_ttl(&h);
    set(&h, "expiring", "old", Ttl::After(ttl));
    h.ctx.pass(h.expiry_wait(ttl));
    assert!(
        h.engine
            .add("expiring", bytes("new"), Ttl::Default)
            .expect("add"),
        "{}: add over an expired entry",
        h.caps.backend
    );
    assert_value(&h, "expiring", Some("new"), "add over an expired entry");
}

/// Under threads, exactly one `add` wins (per thread on a per-thread engine).
pub fn add_is_atomic_under_threads(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let threads = 8;
    for round in 0..10 {
        let key = format!("race-{round}");
        let barrier = Arc::new(Barrier::new(threads));
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let engine = Arc::clone(&h.engine);
                    let barrier = Arc::clone(&barrier);
                    let key = key.clone();
                    s.spawn(move || {
                        barrier.wait();
                        usize::from(
                            engine
                                .add(&key, bytes(&format!("t{t}")), Ttl::Default)
                                .expect("add"),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        let expected = if h.caps.shared_across_threads {
            1
        } else {
            threads
        };
        assert_eq!(
            winners, expected,
            "{}: add winners in round {round}",
            h.caps.backend
        );
    }
}

/// `increment` follows Redis's arithmetic and leaves bad values alone.
pub fn increment_semantics(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    assert_eq!(
        h.engine.increment("n", 5).expect("increment"),
        5,
        "{}: missing counts as 0",
        h.caps.backend
    );
    assert_eq!(
        h.engine.increment("n", -8).expect("increment"),
        -3,
        "{}: negative delta",
        h.caps.backend
    );
    assert_value(&h, "n", Some("-3"), "a counter is ASCII decimal");
    assert_eq!(h.engine.increment("n", 0).expect("increment"), -3);
    set(&h, "written", "41", Ttl::Default);
    assert_eq!(
        h.engine.increment("written", 1).expect("increment"),
        42,
        "{}: a decimal written by set",
        h.caps.backend
    );
    for bad in [
        "abc",
        "1.5",
        " 1",
        "01",
        "+1",
        "-0",
        "",
        "99999999999999999999",
    ] {
        set(&h, "bad", bad, Ttl::Default);
        assert!(
            matches!(
                h.engine.increment("bad", 1),
                Err(CacheError::NotANumber { .. })
            ),
            "{}: increment of {bad:?} was not NotANumber",
            h.caps.backend
        );
        assert_value(
            &h,
            "bad",
            Some(bad),
            "a value that is not a number is left alone",
        );
    }
    set(&h, "max", &i64::MAX.to_string(), Ttl::Default);
    assert!(
        matches!(
            h.engine.increment("max", 1),
            Err(CacheError::Overflow { .. })
        ),
        "{}: overflow",
        h.caps.backend
    );
    assert_value(
        &h,
        "max",
        Some(&i64::MAX.to_string()),
        "an overflowing counter is left unchanged",
    );
    set(&h, "min", &i64::MIN.to_string(), Ttl::Default);
    assert!(
        matches!(
            h.engine.increment("min", -1),
            Err(CacheError::Overflow { .. })
        ),
        "{}: underflow",
        h.caps.backend
    );
    assert_eq!(h.engine.increment("min", i64::MAX).expect("increment"), -1);
    assert_eq!(
        h.engine.increment("big", i64::MIN).expect("increment"),
        i64::MIN
    );
}

/// A counter created by `increment` gets the default TTL; an existing one keeps its own.
pub fn increment_keeps_ttl(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let start = h.ctx.now();
    h.engine.increment("created", 1).expect("increment");
    set(&h, "forever", "1", Ttl::Never);
    h.engine.increment("forever", 1).expect("increment");
    let ttl = short_ttl(&h);
    set(&h, "short", "1", Ttl::After(ttl));
    h.engine.increment("short", 1).expect("increment");
    let default = h.ctx.default_ttl();
    let waited = h.ctx.now().duration_since(start).min(ttl);
    h.ctx.pass(h.expiry_wait(ttl) - waited);
    assert_value(
        &h,
        "short",
        None,
        "an incremented counter kept its short TTL",
    );
    let waited = h.ctx.now().duration_since(start).min(default);
    h.ctx.pass(h.expiry_wait(default) - waited);
    assert_value(
        &h,
        "created",
        None,
        "a counter created by increment has the default TTL",
    );
    assert_value(&h, "forever", Some("2"), "an incremented Never counter");
}

/// Concurrent increments lose no update (per thread on a per-thread engine): 8 threads x 1,000
/// increments started together behind a barrier, twice.
pub fn increment_loses_nothing_under_threads(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let threads = 8;
    let per_thread = 1_000;
    for round in 0..2 {
        let key = format!("shared-counter-{round}");
        let barrier = Arc::new(Barrier::new(threads));
        let finals: Vec<i64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let engine = Arc::clone(&h.engine);
                    let barrier = Arc::clone(&barrier);
                    let key = key.clone();
                    s.spawn(move || {
                        barrier.wait();
                        let mut last = 0;
                        for _ in 0..per_thread {
                            last = engine.increment(&key, 1).expect("increment");
                        }
                        last
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        if h.caps.shared_across_threads {
            let total = h.engine.increment(&key, 0).expect("read counter");
            assert_eq!(
                total,
                (threads * per_thread) as i64,
                "{}: lost increments in round {round}",
                h.caps.backend
            );
            assert_eq!(
                finals.iter().max().copied(),
                Some(total),
                "{}: the last increment saw the total",
                h.caps.backend
            );
        } else {
            assert!(
                finals.iter().all(|&n| n == per_thread as i64),
                "{}: per-thread counters {finals:?}",
                h.caps.backend
            );
        }
    }
}

/// `touch` gives a live entry a new TTL; a zero TTL removes it; a missing entry is `false`.
pub fn touch_semantics(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    assert!(
        !h.engine.touch("missing", Ttl::Default).expect("touch"),
        "{}: touch of a missing key",
        h.caps.backend
    );
    assert!(
        !exists(&h, "missing"),
        "{}: touch created an entry",
        h.caps.backend
    );
    let ttl = short_ttl(&h);
    set(&h, "extended", "v", Ttl::After(ttl));
    assert!(
        h.engine.touch("extended", Ttl::Never).expect("touch"),
        "{}: touch of a live key",
        h.caps.backend
    );
    set(&h, "shortened", "v", Ttl::Never);
    assert!(h.engine.touch("shortened", Ttl::After(ttl)).expect("touch"));
    set(&h, "removed", "v", Ttl::Never);
    assert!(
        h.engine
            .touch("removed", Ttl::After(Duration::ZERO))
            .expect("touch"),
        "{}: touch with a zero TTL",
        h.caps.backend
    );
    assert_value(&h, "removed", None, "touch with a zero TTL removes");
    set(&h, "expired", "v", Ttl::After(ttl));
    h.ctx.pass(h.expiry_wait(ttl));
    assert_value(&h, "extended", Some("v"), "touch extended to Never");
    assert_value(&h, "shortened", None, "touch shortened to a short TTL");
    assert!(
        !h.engine.touch("expired", Ttl::Never).expect("touch"),
        "{}: touch revived an expired entry",
        h.caps.backend
    );
    assert_value(&h, "expired", None, "touch of an expired entry");
}
