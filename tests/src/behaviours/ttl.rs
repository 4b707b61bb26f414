//! TTLs: expiry, `Never`, `Default`, sub-second and zero TTLs, the longest one, and how long
//! entries have left.

use std::time::Duration;

use cache_core::{CacheError, Expiry, Operation, Remaining, Ttl};

use super::{assert_value, bytes, exists, get, offers, remaining, set, short_ttl};
use crate::{EngineFactory, Harness};

/// An entry set with `Ttl::After(d)` is there before `d` and gone after `d` plus the resolution,
/// whether `get` or `exists` is asked first.
pub fn ttl_expiry(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let ttl = short_ttl(&h);
    let start = h.ctx.now();
    set(&h, "get-first", "v", Ttl::After(ttl));
    set(&h, "exists-first", "v", Ttl::After(ttl));
    set(&h, "forever", "v", Ttl::Never);
    if h.ctx.uses_manual_clock() {
        h.ctx.pass(ttl - Duration::from_millis(1));
    }
    if h.ctx.now().duration_since(start) < ttl {
        assert!(
            exists(&h, "get-first"),
            "{}: gone before its TTL of {ttl:?}",
            h.caps.backend
        );
        assert!(
            get(&h, "exists-first").is_some(),
            "{}: gone before its TTL",
            h.caps.backend
        );
    }
    h.ctx
        .pass(h.expiry_wait(ttl) - h.ctx.now().duration_since(start).min(ttl));
    assert_value(
        &h,
        "get-first",
        None,
        &format!("get {ttl:?} + resolution after set"),
    );
    assert!(
        !exists(&h, "get-first"),
        "{}: exists after expiry (asked second)",
        h.caps.backend
    );
    assert!(
        !exists(&h, "exists-first"),
        "{}: exists after expiry (asked first)",
        h.caps.backend
    );
    assert_value(&h, "exists-first", None, "get after expiry (asked second)");
    assert_value(
        &h,
        "forever",
        Some("v"),
        "a Never entry next to expired ones",
    );
}

/// With a time-to-idle ([`Capabilities::time_to_idle`](cache_core::Capabilities)), an entry that
/// is read lives past it, one left unread expires after it, and `exists` does not count as a
/// read. Engines without a time-to-idle skip this. (The other behaviours assume none: run this
/// one alone on an engine built with one.)
pub fn idle_entries_expire(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let Some(idle) = h.caps.time_to_idle else {
        return;
    };
    let backend = h.caps.backend;
    let start = h.ctx.now();
    set(&h, "read", "v", Ttl::Never);
    set(&h, "looked-at", "v", Ttl::Never);
    h.ctx.pass(idle / 2);
    let read_at = h.ctx.now();
    assert!(
        get(&h, "read").is_some(),
        "{backend}: gone before its idle time of {idle:?}"
    );
    assert!(
        exists(&h, "looked-at"),
        "{backend}: gone before its idle time of {idle:?}"
    );
    // Past the idle time since the writes, not since the read.
    let elapsed = h.ctx.now().duration_since(start);
    h.ctx.pass(h.expiry_wait(idle).saturating_sub(elapsed));
    assert!(
        !exists(&h, "looked-at"),
        "{backend}: unread for {:?} with a time-to-idle of {idle:?}, still there: `exists` \
         must not count as a read",
        h.ctx.now().duration_since(start)
    );
    if h.ctx.now().duration_since(read_at) < idle {
        assert!(
            get(&h, "read").is_some(),
            "{backend}: read {:?} ago with a time-to-idle of {idle:?}, gone: reads must \
             restart the idle time",
            h.ctx.now().duration_since(read_at)
        );
    }
    h.ctx.pass(h.expiry_wait(idle));
    assert_value(&h, "read", None, "unread for the time-to-idle");
}

/// `Ttl::Never` outlives the default TTL and replaces an earlier expiry.
pub fn ttl_never(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let ttl = short_ttl(&h);
    set(&h, "never", "v", Ttl::Never);
    set(&h, "was-expiring", "v", Ttl::After(ttl));
    set(&h, "was-expiring", "w", Ttl::Never);
    h.ctx.pass(h.expiry_wait(h.ctx.default_ttl().max(ttl)));
    assert_value(
        &h,
        "never",
        Some("v"),
        "a Never entry after the default TTL",
    );
    assert_value(
        &h,
        "was-expiring",
        Some("w"),
        "Never set over an expiring entry",
    );
}

/// `Ttl::Default` is the engine's default TTL, which the factory set to the context's.
pub fn ttl_default(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let default = h.ctx.default_ttl();
    assert_eq!(
        h.caps.default_ttl,
        Ttl::After(default),
        "{}: the factory must configure the engine with TestContext::default_ttl()",
        h.caps.backend
    );
    let start = h.ctx.now();
    set(&h, "default", "v", Ttl::Default);
    if h.ctx.uses_manual_clock() {
        h.ctx.pass(default - Duration::from_millis(1));
    }
    if h.ctx.now().duration_since(start) < default {
        assert!(
            exists(&h, "default"),
            "{}: a Default entry gone before the default TTL",
            h.caps.backend
        );
    }
    let waited = h.ctx.now().duration_since(start).min(default);
    h.ctx.pass(h.expiry_wait(default) - waited);
    assert!(
        !exists(&h, "default"),
        "{}: a Default entry outlived the default TTL",
        h.caps.backend
    );
}

/// A sub-second TTL is rounded up, never to "now" and never to "never".
pub fn sub_second_ttl(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let ttl = Duration::from_millis(300);
    let start = h.ctx.now();
    set(&h, "tiny", "v", Ttl::After(Duration::from_nanos(1)));
    set(&h, "short", "v", Ttl::After(ttl));
    if h.ctx.now().duration_since(start) < Duration::from_millis(100) {
        assert!(
            exists(&h, "short"),
            "{}: a 300 ms entry was gone at once",
            h.caps.backend
        );
    }
    if h.ctx.uses_manual_clock() {
        // With time standing still, even a 1 ns entry must be there: rounding never gives "now".
        assert!(
            exists(&h, "tiny"),
            "{}: a 1 ns TTL was rounded to nothing",
            h.caps.backend
        );
    }
    let waited = h.ctx.now().duration_since(start).min(ttl);
    h.ctx.pass(h.expiry_wait(ttl) - waited);
    assert!(
        !exists(&h, "tiny"),
        "{}: a 1 ns TTL never expired (rounded to never?)",
        h.caps.backend
    );
    assert!(
        !exists(&h, "short"),
        "{}: a 300 ms TTL did not expire",
        h.caps.backend
    );
}

/// `Ttl::After(Duration::ZERO)` keeps nothing and removes an existing entry.
pub fn zero_ttl_removes(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    set(&h, "old", "v", Ttl::Never);
    set(&h, "old", "w", Ttl::After(Duration::ZERO));
    assert_value(&h, "old", None, "a zero TTL set over an entry");
    set(&h, "new", "v", Ttl::After(Duration::ZERO));
    assert_value(&h, "new", None, "a zero TTL on a new key");
    h.engine
        .set_many(&[("m1", bytes("v"))], Ttl::Never)
        .expect("set_many");
    h.engine
        .set_many(&[("m1", bytes("w"))], Ttl::After(Duration::ZERO))
        .expect("set_many with a zero TTL");
    assert_value(&h, "m1", None, "set_many with a zero TTL");
}

/// A TTL beyond the engine's maximum is `InvalidTtl` and changes nothing; the maximum works.
pub fn ttl_out_of_range(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    set(&h, "k", "before", Ttl::Never);
    for ttl in [Duration::MAX, h.caps.max_ttl + Duration::from_secs(86_400)] {
        match h.engine.set("k", bytes("after"), Ttl::After(ttl)) {
            Err(CacheError::InvalidTtl { .. }) => {}
            other => panic!(
                "{}: set with a TTL of {ttl:?} gave {other:?}, not InvalidTtl",
                h.caps.backend
            ),
        }
        assert!(
            !h.caps.supports(Operation::Touch)
                || matches!(
                    h.engine.touch("k", Ttl::After(ttl)),
                    Err(CacheError::InvalidTtl { .. })
                ),
            "{}: touch with a TTL of {ttl:?} was not refused",
            h.caps.backend
        );
        assert!(
            !h.caps.supports(Operation::Add)
                || matches!(
                    h.engine.add("fresh", bytes("v"), Ttl::After(ttl)),
                    Err(CacheError::InvalidTtl { .. })
                ),
            "{}: add with a TTL of {ttl:?} was not refused",
            h.caps.backend
        );
    }
    assert_value(&h, "k", Some("before"), "after refused TTLs");
    assert_value(&h, "fresh", None, "after a refused add");
    let longest = h.caps.max_ttl.saturating_sub(Duration::from_secs(60));
    set(&h, "longest", "v", Ttl::After(longest));
    h.ctx.pass(h.expiry_wait(short_ttl(&h)));
    assert_value(
        &h,
        "longest",
        Some("v"),
        "an entry with nearly the longest TTL",
    );
}

/// Checks that `got` reports an entry written with `Ttl::After(ttl)` `elapsed` ago (measured
/// from before the write to after the read): more than zero, at most `ttl` plus the resolution,
/// and at least `ttl` less the time passed and the resolution.
fn assert_after(
    h: &Harness,
    got: Option<Remaining>,
    ttl: Duration,
    elapsed: Duration,
    context: &str,
) {
    let (backend, resolution) = (h.caps.backend, h.caps.ttl_resolution);
    let Some(Remaining::After(left)) = got else {
        panic!("{backend}: {context}: remaining TTL {got:?}, not After(about {ttl:?})");
    };
    assert!(
        !left.is_zero(),
        "{backend}: {context}: a live entry reported no time left"
    );
    assert!(
        left <= ttl + resolution,
        "{backend}: {context}: {left:?} left of a TTL of {ttl:?} (resolution {resolution:?})"
    );
    assert!(
        left + elapsed + resolution >= ttl,
        "{backend}: {context}: only {left:?} left of a TTL of {ttl:?}, {elapsed:?} after \
         writing it (resolution {resolution:?})"
    );
}

/// `remaining_ttl`, `get_with_ttl` and `get_many_with_ttl` report how long entries have left:
/// nothing for an absent, deleted or expired entry, `Never` for `Ttl::Never`, about `d` (never
/// zero, within the resolution) for `Ttl::After(d)`, following `touch`; the value is `get`'s,
/// bulk reads have one slot per key in order, and bad keys are `InvalidKey`.
pub fn remaining_ttl_reports(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    if !offers(
        &h,
        "remaining_ttl_reports",
        &[Operation::RemainingTtl, Operation::Touch],
    ) {
        return;
    }
    let backend = h.caps.backend;
    let minute = Duration::from_secs(60);
    assert_eq!(
        remaining(&h, "absent"),
        None,
        "{backend}: remaining_ttl of an absent key"
    );
    set(&h, "forever", "v", Ttl::Never);
    assert_eq!(
        remaining(&h, "forever"),
        Some(Remaining::Never),
        "{backend}: remaining_ttl of a Never entry"
    );

    let start = h.ctx.now();
    set(&h, "minute", "m", Ttl::After(minute));
    let left = remaining(&h, "minute");
    assert_after(
        &h,
        left,
        minute,
        h.ctx.now().duration_since(start),
        "a 60 s entry",
    );
    if h.ctx.uses_manual_clock() {
        h.ctx.pass(Duration::from_secs(10));
        assert_after(
            &h,
            remaining(&h, "minute"),
            Duration::from_secs(50),
            Duration::ZERO,
            "a 60 s entry 10 s later",
        );
    }

    // touch: the report follows the new TTL.
    let longer = Duration::from_secs(120);
    let start = h.ctx.now();
    assert!(
        h.engine.touch("minute", Ttl::After(longer)).expect("touch"),
        "{backend}: touch of a live entry"
    );
    let left = remaining(&h, "minute");
    let elapsed = h.ctx.now().duration_since(start);
    assert_after(&h, left, longer, elapsed, "touched to 120 s");
    assert!(h.engine.touch("minute", Ttl::Never).expect("touch"));
    assert_eq!(
        remaining(&h, "minute"),
        Some(Remaining::Never),
        "{backend}: touched to Never"
    );
    let start = h.ctx.now();
    assert!(
        h.engine
            .touch("forever", Ttl::After(minute))
            .expect("touch")
    );
    let left = remaining(&h, "forever");
    let elapsed = h.ctx.now().duration_since(start);
    assert_after(&h, left, minute, elapsed, "a Never entry touched to 60 s");
    assert!(h.engine.delete("minute").expect("delete"));
    assert_eq!(
        remaining(&h, "minute"),
        None,
        "{backend}: remaining_ttl after delete"
    );

    // get_with_ttl: get's value, with a consistent TTL.
    let start = h.ctx.now();
    set(&h, "pair", "w", Ttl::After(minute));
    set(&h, "never", "n", Ttl::Never);
    let got = h.engine.get_with_ttl("pair").expect("get_with_ttl");
    let elapsed = h.ctx.now().duration_since(start);
    let Some((value, left)) = got else {
        panic!("{backend}: get_with_ttl of a 60 s entry found nothing");
    };
    assert_eq!(
        Some(value),
        get(&h, "pair"),
        "{backend}: get_with_ttl and get of one entry"
    );
    assert_after(
        &h,
        Some(left),
        minute,
        elapsed,
        "get_with_ttl of a 60 s entry",
    );
    assert_eq!(
        h.engine.get_with_ttl("never").expect("get_with_ttl"),
        Some((bytes("n"), Remaining::Never)),
        "{backend}: get_with_ttl of a Never entry"
    );
    assert_eq!(
        h.engine.get_with_ttl("absent").expect("get_with_ttl"),
        None,
        "{backend}: get_with_ttl of an absent key"
    );

    // get_many_with_ttl: one slot per key, in order, with misses and repeats.
    let keys = ["pair", "absent", "never", "pair"];
    let got = h
        .engine
        .get_many_with_ttl(&keys)
        .expect("get_many_with_ttl");
    let elapsed = h.ctx.now().duration_since(start);
    assert_eq!(
        got.len(),
        keys.len(),
        "{backend}: get_many_with_ttl of {keys:?} gave {got:?}"
    );
    for (key, slot) in keys.iter().zip(&got) {
        let value = slot.as_ref().map(|(value, _)| value.clone());
        assert_eq!(
            value,
            get(&h, key),
            "{backend}: get_many_with_ttl slot of {key:?}"
        );
    }
    for slot in [&got[0], &got[3]] {
        assert_after(
            &h,
            slot.as_ref().map(|(_, left)| *left),
            minute,
            elapsed,
            "get_many_with_ttl of a 60 s entry",
        );
    }
    assert_eq!(
        got[2].as_ref().map(|(_, left)| *left),
        Some(Remaining::Never),
        "{backend}: get_many_with_ttl of a Never entry"
    );
    assert!(
        h.engine
            .get_many_with_ttl(&[])
            .expect("empty get_many_with_ttl")
            .is_empty(),
        "{backend}: get_many_with_ttl of no keys"
    );

    // Bad keys are refused.
    for key in ["", "with space"] {
        let results: [(&str, Result<(), CacheError>); 3] = [
            ("remaining_ttl", h.engine.remaining_ttl(key).map(drop)),
            ("get_with_ttl", h.engine.get_with_ttl(key).map(drop)),
            (
                "get_many_with_ttl",
                h.engine.get_many_with_ttl(&["pair", key]).map(drop),
            ),
        ];
        for (op, result) in results {
            assert!(
                matches!(result, Err(CacheError::InvalidKey { .. })),
                "{backend}: {op} with key {key:?} gave {result:?}, not InvalidKey"
            );
        }
    }

    // An expired entry has nothing left.
    let ttl = short_ttl(&h);
    let start = h.ctx.now();
    set(&h, "short", "s", Ttl::After(ttl));
    if h.ctx.uses_manual_clock() {
        h.ctx.pass(ttl - Duration::from_millis(1));
    }
    let left = remaining(&h, "short");
    let elapsed = h.ctx.now().duration_since(start);
    if elapsed < ttl {
        assert_after(&h, left, ttl, elapsed, "a short entry before its TTL");
    }
    h.ctx.pass(h.expiry_wait(ttl) - elapsed.min(ttl));
    assert_eq!(
        remaining(&h, "short"),
        None,
        "{backend}: remaining_ttl of an expired entry"
    );
    assert_eq!(
        h.engine.get_with_ttl("short").expect("get_with_ttl"),
        None,
        "{backend}: get_with_ttl of an expired entry"
    );
    assert_eq!(
        h.engine
            .get_many_with_ttl(&["short"])
            .expect("get_many_with_ttl"),
        vec![None],
        "{backend}: get_many_with_ttl of an expired entry"
    );
}

/// Entries written with `Ttl::Default` (by `set`, `add` and `set_many`) and a counter that
/// `increment` creates have the engine's default TTL (`Capabilities::default_ttl`) left: what
/// tells a default TTL from `Never` without waiting it out. On an engine without
/// `remaining_ttl` the default TTL is waited out instead (at once on the kit's manual clock);
/// `add` and `increment` take part where the engine offers them.
pub fn default_ttl_applies(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let backend = h.caps.backend;
    let start = h.ctx.now();
    let mut keys = vec!["set", "many"];
    set(&h, "set", "v", Ttl::Default);
    if h.caps.supports(Operation::Add) {
        assert!(
            h.engine.add("add", bytes("v"), Ttl::Default).expect("add"),
            "{backend}: add on a free key"
        );
        keys.push("add");
    }
    h.engine
        .set_many(&[("many", bytes("v"))], Ttl::Default)
        .expect("set_many");
    if h.caps.supports(Operation::Increment) {
        h.engine.increment("counter", 1).expect("increment");
        keys.push("counter");
    }
    if !h.caps.supports(Operation::RemainingTtl) {
        return default_ttl_by_waiting(&h, &keys, start);
    }
    for key in keys {
        let left = remaining(&h, key);
        let elapsed = h.ctx.now().duration_since(start);
        let context = format!(
            "{key:?} written with Ttl::Default, the default TTL being {:?}",
            h.caps.default_ttl
        );
        match Ttl::Default.resolve(h.caps.default_ttl) {
            Expiry::After(d) => assert_after(&h, left, d, elapsed, &context),
            Expiry::Never => assert_eq!(
                left,
                Some(Remaining::Never),
                "{backend}: {context}: remaining TTL"
            ),
            Expiry::Now => assert_eq!(left, None, "{backend}: {context}: remaining TTL"),
        }
    }
}

/// `default_ttl_applies` on an engine that cannot tell how long an entry has left: the entries
/// live until the default TTL and are gone after it (or stay, for a `Never` default).
fn default_ttl_by_waiting(h: &Harness, keys: &[&str], start: std::time::Instant) {
    let context = |key: &str, when: &str| {
        format!(
            "{key:?} written with Ttl::Default, the default TTL being {:?}, {when}",
            h.caps.default_ttl
        )
    };
    match Ttl::Default.resolve(h.caps.default_ttl) {
        Expiry::After(d) => {
            let elapsed = h.ctx.now().duration_since(start);
            if elapsed < d {
                for key in keys {
                    assert!(exists(h, key), "{}", context(key, "before it ends"));
                }
            }
            h.ctx.pass(h.expiry_wait(d) - elapsed.min(d));
            for key in keys {
                assert!(!exists(h, key), "{}", context(key, "after it ended"));
            }
        }
        Expiry::Never => {
            h.ctx.pass(h.expiry_wait(short_ttl(h)));
            for key in keys {
                assert!(exists(h, key), "{}", context(key, "later"));
            }
        }
        Expiry::Now => {
            for key in keys {
                assert!(!exists(h, key), "{}", context(key, "at once"));
            }
        }
    }
}
