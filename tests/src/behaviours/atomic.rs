//! Atomic operations: `add`, `increment`, `touch`, `delete_if_equals`, alone and under threads.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use cache_core::{Bytes, CacheError, Operation, Remaining, Ttl};

use super::{assert_value, bytes, exists, offers, remaining, set, short_ttl};
use crate::{EngineFactory, Harness};

/// `add` stores only when the key is free, and an expired entry counts as free.
pub fn add_semantics(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    if !offers(&h, "add_semantics", &[Operation::Add]) {
        return;
    }
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
    if !offers(&h, "add_is_atomic_under_threads", &[Operation::Add]) {
        return;
    }
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
    if !offers(&h, "increment_semantics", &[Operation::Increment]) {
        return;
    }
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
    if !offers(&h, "increment_keeps_ttl", &[Operation::Increment]) {
        return;
    }
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
    if !offers(
        &h,
        "increment_loses_nothing_under_threads",
        &[Operation::Increment],
    ) {
        return;
    }
    let threads = 8;
    let per_thread = 1_000;
    // The counter outlives the check however slow the machine: created by `increment`, it
    // would get the kit's short default TTL and could expire while the threads still count.
    let lifetime = Ttl::After(Duration::from_secs(600).min(h.caps.max_ttl));
    for round in 0..2 {
        let key = format!("shared-counter-{round}");
        h.engine
            .set(&key, Bytes::from_static(b"0"), lifetime)
            .expect("create the counter");
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
    if !offers(&h, "touch_semantics", &[Operation::Touch]) {
        return;
    }
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

/// `delete_if_equals` removes an entry only when its value is exactly the one given: not a
/// prefix of it, not a longer value, not an expired entry, not an absent key, and a mismatch
/// leaves the entry and its TTL as they were. Empty and binary values compare byte for byte;
/// bad keys fail as `delete` fails. Under threads on a shared engine, of 8 callers releasing the
/// same value exactly one succeeds, and a value written after a caller read the old one is never
/// deleted (per thread on a per-thread engine: each thread releases its own).
pub fn delete_if_equals_compares(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    if !offers(
        &h,
        "delete_if_equals_compares",
        &[Operation::DeleteIfEquals],
    ) {
        return;
    }
    let backend = h.caps.backend;
    let cas = |key: &str, expected: &[u8]| {
        h.engine
            .delete_if_equals(key, expected)
            .unwrap_or_else(|e| panic!("{backend}: delete_if_equals({key:?}) failed: {e}"))
    };

    assert!(!cas("absent", b"token"), "{backend}: an absent key");
    assert!(
        !exists(&h, "absent"),
        "{backend}: an absent key was created"
    );

    set(&h, "lease", "token-123", Ttl::Never);
    for other in [
        &b"token-12"[..],
        b"token-1234",
        b"TOKEN-123",
        b"",
        b"token-123\0",
    ] {
        assert!(
            !cas("lease", other),
            "{backend}: deleted \"token-123\" when asked for {:?}",
            String::from_utf8_lossy(other)
        );
        assert_value(&h, "lease", Some("token-123"), "after a mismatched release");
    }
    if h.caps.supports(Operation::RemainingTtl) {
        assert_eq!(
            remaining(&h, "lease"),
            Some(Remaining::Never),
            "{backend}: a mismatched release changed the entry's TTL"
        );
    }
    assert!(cas("lease", b"token-123"), "{backend}: the equal value");
    assert_value(&h, "lease", None, "after a release with the equal value");
    assert!(!cas("lease", b"token-123"), "{backend}: a second release");

    h.engine
        .set("empty", Bytes::new(), Ttl::Default)
        .expect("set empty");
    assert!(
        !cas("empty", b"x"),
        "{backend}: an empty value is not \"x\""
    );
    assert!(cas("empty", b""), "{backend}: an empty value equals \"\"");
    assert_value(&h, "empty", None, "after releasing an empty value");

    let all: Vec<u8> = (0..=255u8).chain(*b"\r\nEND\r\n").collect();
    let mut off_by_one = all.clone();
    off_by_one[200] ^= 1;
    h.engine
        .set("binary", Bytes::from(all.clone()), Ttl::Default)
        .expect("set binary");
    assert!(
        !cas("binary", &off_by_one),
        "{backend}: binary values differing in one byte"
    );
    assert!(
        !cas("binary", &all[..all.len() - 1]),
        "{backend}: a binary prefix"
    );
    assert!(cas("binary", &all), "{backend}: the same binary value");
    assert_value(&h, "binary", None, "after releasing a binary value");

    let ttl = short_ttl(&h);
    set(&h, "expiring", "token", Ttl::After(ttl));
    h.ctx.pass(h.expiry_wait(ttl));
    assert!(!cas("expiring", b"token"), "{backend}: an expired entry");
    assert_value(&h, "expiring", None, "an expired entry stays absent");

    set(&h, "canary", "alive", Ttl::Default);
    let too_long = "x".repeat(h.caps.max_key_len + 1);
    for key in [
        "",
        "with space",
        "crlf\r\ndelete canary",
        "nul\0",
        &too_long,
    ] {
        let by_value = h.engine.delete_if_equals(key, b"alive");
        let plain = h.engine.delete(key);
        let same = match (&by_value, &plain) {
            (Err(a), Err(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        assert!(
            same,
            "{backend}: key {key:?}: delete_if_equals gave {by_value:?}, delete {plain:?}"
        );
    }
    assert_value(&h, "canary", Some("alive"), "after releases of bad keys");

    let threads = 8;
    for round in 0..10 {
        let key = format!("release-{round}");
        if h.caps.shared_across_threads {
            set(&h, &key, "holder", Ttl::Default);
        }
        let barrier = Arc::new(Barrier::new(threads));
        let released: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (engine, barrier, key) =
                        (Arc::clone(&h.engine), Arc::clone(&barrier), key.clone());
                    let shared = h.caps.shared_across_threads;
                    s.spawn(move || {
                        if !shared {
                            engine
                                .set(&key, bytes("holder"), Ttl::Default)
                                .expect("set");
                        }
                        barrier.wait();
                        usize::from(engine.delete_if_equals(&key, b"holder").expect("release"))
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
            released, expected,
            "{backend}: successful releases of one value in round {round}"
        );
    }
    if h.caps.shared_across_threads {
        rewrites_are_never_deleted(&h);
    }
}

/// A writer stores `bait-i` then `kept-i` under one key, and reads the key back; releasers
/// read the key and release whatever `bait-*` value they saw. Nobody ever releases a `kept-*`
/// value, so the writer must always find a value: an engine that compares and then deletes in
/// two steps deletes `kept-i` when the writer's second write falls in between. (Which value it
/// finds is not checked here: a two-tier engine may show, for a moment, a value a concurrent
/// reader fetched just before the write.)
///
/// The writer leaves each bait in place for a millisecond (so the releasers see it however
/// loaded the machine) and waits two after writing `kept-i` before reading it back, so a
/// release that compared during the first pause and deletes a little later lands in the
/// second: the check no longer needs the machine's scheduling to line up (it missed a racy
/// engine in 20 runs of 300 back-to-back rounds on a loaded CI machine).
fn rewrites_are_never_deleted(h: &Harness) {
    use std::sync::atomic::{AtomicBool, Ordering};

    let backend = h.caps.backend;
    let key = "rewritten";
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..3 {
            let (engine, done) = (Arc::clone(&h.engine), &done);
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    match engine.get(key).expect("get") {
                        Some(seen) if seen.starts_with(b"bait-") => {
                            engine.delete_if_equals(key, &seen).expect("release");
                        }
                        _ => std::thread::yield_now(),
                    }
                }
            });
        }
        let engine = &h.engine;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for i in 0..60 {
                engine
                    .set(key, bytes(&format!("bait-{i}")), Ttl::Default)
                    .expect("set");
                std::thread::sleep(Duration::from_millis(1));
                engine
                    .set(key, bytes(&format!("kept-{i}")), Ttl::Default)
                    .expect("set");
                std::thread::sleep(Duration::from_millis(2));
                assert!(
                    engine.get(key).expect("get").is_some(),
                    "{backend}: a value written after a release read the old one was deleted \
                     (round {i})"
                );
            }
        }));
        done.store(true, Ordering::Relaxed);
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    });
}

/// An engine declares exactly the optional operations it implements: each declared one does
/// something other than answer `Unsupported`, and each undeclared one answers `Unsupported` and
/// changes nothing. (The behaviours of the declared ones are checked by their own functions;
/// the others are skipped, by name.)
pub fn optional_operations_match_capabilities(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let backend = h.caps.backend;
    set(&h, "probe", "7", Ttl::Never);
    for op in Operation::ALL {
        let result = match op {
            Operation::Add => h
                .engine
                .add("probe-add", bytes("v"), Ttl::Default)
                .map(drop),
            Operation::Increment => h.engine.increment("probe", 1).map(drop),
            Operation::Touch => h.engine.touch("probe", Ttl::Never).map(drop),
            Operation::DeleteIfEquals => h.engine.delete_if_equals("probe-absent", b"v").map(drop),
            Operation::RemainingTtl => h.engine.remaining_ttl("probe").map(drop),
            _ => continue,
        };
        let unsupported = matches!(
            &result,
            Err(CacheError::Unsupported { operation, .. }) if *operation == op
        );
        if h.caps.supports(op) {
            assert!(
                !unsupported,
                "{backend}: declares `{op}` in its capabilities but answers Unsupported"
            );
            assert!(
                result.is_ok(),
                "{backend}: `{op}` on valid input failed: {:?}",
                result.err()
            );
        } else {
            assert!(
                unsupported,
                "{backend}: `{op}` is not declared in its capabilities, but answered {result:?} \
                 instead of Unsupported (declare what you implement)"
            );
        }
    }
    if !h.caps.supports(Operation::RemainingTtl) {
        assert!(
            matches!(
                h.engine.get_with_ttl("probe"),
                Err(CacheError::Unsupported { .. })
            ),
            "{backend}: get_with_ttl without a declared remaining TTL"
        );
    }
    if !h.caps.supports(Operation::Add) {
        assert_value(&h, "probe-add", None, "an unsupported add stored something");
    }
    let expected = if h.caps.supports(Operation::Increment) {
        "8"
    } else {
        "7"
    };
    assert_value(&h, "probe", Some(expected), "after the optional operations");
}
