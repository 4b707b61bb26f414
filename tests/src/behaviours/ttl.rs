//! TTLs: expiry, `Never`, `Default`, sub-second and zero TTLs, and the longest one.

use std::time::Duration;

use cache_core::{CacheError, Ttl};

use super::{assert_value, bytes, exists, get, set, short_ttl};
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
            matches!(
                h.engine.touch("k", Ttl::After(ttl)),
                Err(CacheError::InvalidTtl { .. })
            ),
            "{}: touch with a TTL of {ttl:?} was not refused",
            h.caps.backend
        );
        assert!(
            matches!(
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
