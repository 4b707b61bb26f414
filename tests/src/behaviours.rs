//! One function per behaviour. Each builds its own engines from the factory and panics with a
//! message saying what the engine did wrong.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use cache_core::{Bytes, CacheEngine, CacheError, Ttl};

use crate::{EngineFactory, Harness};

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn get(h: &Harness, key: &str) -> Option<Bytes> {
    h.engine
        .get(key)
        .unwrap_or_else(|e| panic!("{}: get({key:?}) failed: {e}", h.caps.backend))
}

fn set(h: &Harness, key: &str, value: &str, ttl: Ttl) {
    h.engine
        .set(key, bytes(value), ttl)
        .unwrap_or_else(|e| panic!("{}: set({key:?}) failed: {e}", h.caps.backend));
}

fn exists(h: &Harness, key: &str) -> bool {
    h.engine
        .exists(key)
        .unwrap_or_else(|e| panic!("{}: exists({key:?}) failed: {e}", h.caps.backend))
}

fn assert_value(h: &Harness, key: &str, expected: Option<&str>, context: &str) {
    let got = get(h, key);
    assert_eq!(
        got.as_deref(),
        expected.map(str::as_bytes),
        "{}: {context}: get({key:?})",
        h.caps.backend
    );
}

/// The shortest TTL that the kit waits for: the resolution, but at least 50 ms.
fn short_ttl(h: &Harness) -> Duration {
    h.caps.ttl_resolution.max(Duration::from_millis(50))
}

/// A missing key is a miss, not an error.
pub fn miss(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    assert_value(&h, "never-set", None, "a key never set");
    assert!(
        !exists(&h, "never-set"),
        "{}: exists on a key never set",
        h.caps.backend
    );
    assert!(
        !h.engine.delete("never-set").expect("delete"),
        "{}: delete of a key never set returned true",
        h.caps.backend
    );
}

/// A value set is read back byte for byte.
pub fn round_trip(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    set(&h, "greeting", "hello, world", Ttl::Default);
    assert_value(&h, "greeting", Some("hello, world"), "after set");
    assert!(
        exists(&h, "greeting"),
        "{}: exists after set",
        h.caps.backend
    );
}

/// Every overwrite is visible at once: no stale value is ever read back.
pub fn overwrite_is_never_stale(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    for i in 0..50 {
        let value = format!("value-{i}-{}", "x".repeat(i % 7));
        set(&h, "k", &value, Ttl::Default);
        assert_value(&h, "k", Some(&value), "after an overwrite");
        let many = h.engine.get_many(&["k"]).expect("get_many");
        assert_eq!(
            many[0].as_deref(),
            Some(value.as_bytes()),
            "{}: get_many after an overwrite",
            h.caps.backend
        );
    }
    set(&h, "k", "v", Ttl::Never);
    set(&h, "k", "w", Ttl::After(Duration::from_secs(3600)));
    assert_value(&h, "k", Some("w"), "overwrite with another TTL");
}

/// `delete` says `true` once, then `false`.
pub fn delete_then_delete_again(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    set(&h, "doomed", "v", Ttl::Default);
    set(&h, "kept", "v", Ttl::Default);
    assert!(
        h.engine.delete("doomed").expect("delete"),
        "{}: first delete",
        h.caps.backend
    );
    assert_value(&h, "doomed", None, "after delete");
    assert!(
        !h.engine.delete("doomed").expect("delete"),
        "{}: second delete",
        h.caps.backend
    );
    assert_value(&h, "kept", Some("v"), "another key after a delete");
}

/// `exists` follows sets, deletes and overwrites.
pub fn exists_follows_entries(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    assert!(!exists(&h, "e"));
    set(&h, "e", "", Ttl::Default);
    assert!(
        exists(&h, "e"),
        "{}: exists of an empty value",
        h.caps.backend
    );
    h.engine.delete("e").expect("delete");
    assert!(!exists(&h, "e"), "{}: exists after delete", h.caps.backend);
}

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

/// Empty values and every byte value round-trip.
pub fn empty_and_binary_values(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    h.engine
        .set("empty", Bytes::new(), Ttl::Default)
        .expect("set empty");
    assert_eq!(
        h.engine.get("empty").expect("get").as_deref(),
        Some(&b""[..]),
        "{}: empty value",
        h.caps.backend
    );
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    h.engine
        .set("binary", Bytes::from(all.clone()), Ttl::Default)
        .expect("set binary");
    assert_eq!(
        h.engine.get("binary").expect("get").as_deref(),
        Some(&all[..]),
        "{}: binary value",
        h.caps.backend
    );
    let tricky = Bytes::from_static(b"\r\nEND\r\nVALUE x 0 1\r\n\0");
    h.engine
        .set("tricky", tricky.clone(), Ttl::Default)
        .expect("set tricky");
    assert_eq!(
        h.engine.get("tricky").expect("get"),
        Some(tricky),
        "{}: protocol-like value",
        h.caps.backend
    );
}

/// The largest value the engine declares is stored; one byte more is `ValueTooLarge` and keeps
/// the previous value.
pub fn largest_value(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let Some(limit) = h.caps.max_value_size else {
        let big = Bytes::from(vec![7u8; 1 << 20]);
        h.engine
            .set("big", big.clone(), Ttl::Default)
            .expect("set 1 MiB");
        assert_eq!(
            h.engine.get("big").expect("get"),
            Some(big),
            "{}: 1 MiB value",
            h.caps.backend
        );
        return;
    };
    let key = "k".repeat(h.caps.max_key_len);
    let largest = Bytes::from(vec![b'x'; limit]);
    h.engine
        .set(&key, largest.clone(), Ttl::Default)
        .unwrap_or_else(|e| {
            panic!(
                "{}: a value of the declared maximum {limit} bytes: {e}",
                h.caps.backend
            )
        });
    assert_eq!(
        h.engine.get(&key).expect("get"),
        Some(largest),
        "{}: the largest value",
        h.caps.backend
    );
    set(&h, "small", "keep me", Ttl::Default);
    let too_big = Bytes::from(vec![b'y'; limit + 1]);
    for result in [
        h.engine.set("small", too_big.clone(), Ttl::Default),
        h.engine
            .set_many(&[("small", too_big.clone())], Ttl::Default),
        h.engine
            .add("other", too_big.clone(), Ttl::Default)
            .map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(CacheError::ValueTooLarge { .. })),
            "{}: a value of {} bytes over a limit of {limit} gave {result:?}",
            h.caps.backend,
            limit + 1
        );
    }
    assert_value(
        &h,
        "small",
        Some("keep me"),
        "after a refused oversized value",
    );
    assert_value(&h, "other", None, "after a refused oversized add");
}

/// Unicode keys are distinct and round-trip.
pub fn unicode_keys(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let keys = [
        "ключ",
        "キー",
        "🔑",
        "naïve",
        "nai\u{308}ve",
        "Straße",
        "STRASSE",
    ];
    for (i, key) in keys.iter().enumerate() {
        set(&h, key, &format!("v{i}"), Ttl::Default);
    }
    for (i, key) in keys.iter().enumerate() {
        assert_value(&h, key, Some(&format!("v{i}")), "a Unicode key");
    }
}

/// Keys that break the portable rule are `InvalidKey` for every operation, and nothing changes.
pub fn invalid_keys_rejected(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    set(&h, "canary", "alive", Ttl::Default);
    let too_long = "x".repeat(h.caps.max_key_len + 1);
    let bad: Vec<String> = [
        "",
        "with space",
        "crlf\r\ndelete canary",
        "nul\0",
        "tab\t",
        "del\u{7f}",
        "nbsp\u{a0}",
        "line\u{2028}",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([too_long])
    .collect();
    for key in &bad {
        let k = key.as_str();
        let results: Vec<(&str, Result<(), CacheError>)> = vec![
            ("get", h.engine.get(k).map(drop)),
            ("set", h.engine.set(k, bytes("v"), Ttl::Default)),
            ("delete", h.engine.delete(k).map(drop)),
            ("exists", h.engine.exists(k).map(drop)),
            ("add", h.engine.add(k, bytes("v"), Ttl::Default).map(drop)),
            ("increment", h.engine.increment(k, 1).map(drop)),
            ("touch", h.engine.touch(k, Ttl::Default).map(drop)),
            ("get_many", h.engine.get_many(&["canary", k]).map(drop)),
            (
                "set_many",
                h.engine.set_many(
                    &[("canary", bytes("overwritten")), (k, bytes("v"))],
                    Ttl::Default,
                ),
            ),
            (
                "delete_many",
                h.engine.delete_many(&["canary", k]).map(drop),
            ),
        ];
        for (op, result) in results {
            assert!(
                matches!(result, Err(CacheError::InvalidKey { .. })),
                "{}: {op} with key {k:?} gave {result:?}, not InvalidKey",
                h.caps.backend
            );
        }
        assert_value(
            &h,
            "canary",
            Some("alive"),
            &format!("after operations on bad key {k:?}"),
        );
    }
    let longest = "y".repeat(h.caps.max_key_len);
    set(&h, &longest, "v", Ttl::Default);
    assert_value(
        &h,
        &longest,
        Some("v"),
        "a key of exactly max_key_len bytes",
    );
}

/// `clear` removes every entry of the engine.
pub fn clear_removes_own_entries(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let keys: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    for key in &keys {
        set(&h, key, "v", Ttl::Default);
    }
    h.engine.increment("counter", 5).expect("increment");
    h.engine.clear().expect("clear");
    for key in &keys {
        assert_value(&h, key, None, "after clear");
    }
    assert!(
        !exists(&h, "counter"),
        "{}: a counter survived clear",
        h.caps.backend
    );
    set(&h, "after", "v", Ttl::Default);
    assert_value(&h, "after", Some("v"), "a set after clear");
}

/// `clear` on one namespace leaves other namespaces alone, `a` and `a:b` included.
pub fn clear_is_scoped_to_namespace(factory: &dyn EngineFactory) {
    let a = Harness::new(factory);
    let ab = Harness::with_context(factory, a.ctx.sibling(":b"));
    let other = Harness::with_context(factory, a.ctx.sibling("-other"));
    set(&a, "b:k", "from-a", Ttl::Default);
    set(&a, "only-a", "v", Ttl::Default);
    set(&ab, "k", "from-ab", Ttl::Default);
    set(&ab, "only-ab", "v", Ttl::Default);
    set(&other, "k", "from-other", Ttl::Default);
    a.engine.clear().expect("clear a");
    assert_value(&a, "b:k", None, "namespace a after clearing a");
    assert_value(&a, "only-a", None, "namespace a after clearing a");
    assert_value(&ab, "k", Some("from-ab"), "namespace a:b after clearing a");
    assert_value(&ab, "only-ab", Some("v"), "namespace a:b after clearing a");
    assert_value(
        &other,
        "k",
        Some("from-other"),
        "another namespace after clearing a",
    );
    set(&a, "again", "v", Ttl::Default);
    ab.engine.clear().expect("clear a:b");
    assert_value(&ab, "k", None, "namespace a:b after clearing a:b");
    assert_value(&a, "again", Some("v"), "namespace a after clearing a:b");
    assert_value(
        &other,
        "k",
        Some("from-other"),
        "another namespace after clearing a:b",
    );
}

/// Two namespaces never share a key, even when naive concatenation would make them collide.
pub fn namespaces_are_isolated(factory: &dyn EngineFactory) {
    let a = Harness::new(factory);
    let ab = Harness::with_context(factory, a.ctx.sibling(":b"));
    set(&a, "b:k", "from-a", Ttl::Default);
    set(&ab, "k", "from-ab", Ttl::Default);
    assert_value(&a, "b:k", Some("from-a"), "namespace a");
    assert_value(&ab, "k", Some("from-ab"), "namespace a:b");
    assert!(ab.engine.delete("k").expect("delete"));
    assert_value(
        &a,
        "b:k",
        Some("from-a"),
        "namespace a after a delete in a:b",
    );
    assert_eq!(a.engine.increment("n", 1).expect("increment"), 1);
    assert_eq!(ab.engine.increment("n", 10).expect("increment"), 10);
}

/// `get_many` answers in the order asked, with holes for misses and repeats.
pub fn get_many_order_and_holes(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    set(&h, "k1", "one", Ttl::Default);
    set(&h, "k3", "three", Ttl::Default);
    let got = h
        .engine
        .get_many(&["k3", "k2", "k1", "k3", "k4"])
        .expect("get_many");
    let got: Vec<Option<&[u8]>> = got.iter().map(|v| v.as_deref()).collect();
    assert_eq!(
        got,
        vec![
            Some(&b"three"[..]),
            None,
            Some(&b"one"[..]),
            Some(&b"three"[..]),
            None
        ],
        "{}: get_many order and holes",
        h.caps.backend
    );
    assert!(h.engine.get_many(&[]).expect("empty get_many").is_empty());
}

/// `set_many` stores every entry with the TTL, or nothing when one key is bad.
pub fn set_many_stores_all_or_nothing(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let ttl = short_ttl(&h);
    let entries: Vec<(String, Bytes)> = (0..16)
        .map(|i| (format!("m{i}"), bytes(&format!("v{i}"))))
        .collect();
    let refs: Vec<(&str, Bytes)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    h.engine.set_many(&refs, Ttl::After(ttl)).expect("set_many");
    for (key, value) in &entries {
        assert_eq!(
            h.engine.get(key).expect("get").as_ref(),
            Some(value),
            "{}: set_many entry {key}",
            h.caps.backend
        );
    }
    let bad = [
        ("good-1", bytes("v")),
        ("bad key", bytes("v")),
        ("good-2", bytes("v")),
    ];
    assert!(matches!(
        h.engine.set_many(&bad, Ttl::Default),
        Err(CacheError::InvalidKey { .. })
    ));
    assert_value(
        &h,
        "good-1",
        None,
        "set_many with a bad key stored its first entry",
    );
    assert_value(
        &h,
        "good-2",
        None,
        "set_many with a bad key stored its last entry",
    );
    h.engine
        .set_many(&[], Ttl::Default)
        .expect("empty set_many");
    h.ctx.pass(h.expiry_wait(ttl));
    assert_value(&h, "m0", None, "set_many TTL");
}

/// `delete_many` counts what it removed.
pub fn delete_many_counts(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    for key in ["d1", "d2", "d3"] {
        set(&h, key, "v", Ttl::Default);
    }
    let removed = h
        .engine
        .delete_many(&["d1", "d2", "missing"])
        .expect("delete_many");
    assert_eq!(removed, 2, "{}: delete_many count", h.caps.backend);
    assert_value(&h, "d1", None, "after delete_many");
    assert_value(&h, "d3", Some("v"), "a key not in delete_many");
    assert_eq!(h.engine.delete_many(&[]).expect("empty delete_many"), 0);
}

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

/// Several threads mixing every operation see no error and only values written for each key.
pub fn concurrency_smoke(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let engine = Arc::clone(&h.engine);
            s.spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ t as u64;
                for i in 0..400 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let key = format!("smoke-{}", seed % 32);
                    let value = format!("{key}={t}/{i}");
                    match seed % 7 {
                        0 => engine.set(&key, bytes(&value), Ttl::Default).expect("set"),
                        1 => {
                            if let Some(v) = engine.get(&key).expect("get") {
                                assert!(v.starts_with(key.as_bytes()), "value {v:?} under {key}");
                            }
                        }
                        2 => drop(engine.delete(&key).expect("delete")),
                        3 => drop(engine.add(&key, bytes(&value), Ttl::Default).expect("add")),
                        4 => drop(engine.exists(&key).expect("exists")),
                        5 => {
                            let keys = [key.as_str(), "smoke-0", "smoke-1"];
                            for (k, v) in keys.iter().zip(engine.get_many(&keys).expect("get_many"))
                            {
                                if let Some(v) = v {
                                    assert!(v.starts_with(k.as_bytes()), "value {v:?} under {k}");
                                }
                            }
                        }
                        _ => drop(engine.touch(&key, Ttl::Default).expect("touch")),
                    }
                }
            });
        }
    });
}

/// After `close`, every operation is a `Closed` error, at once; closing again is fine.
pub fn close_is_final(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    set(&h, "k", "v", Ttl::Default);
    h.engine.close().expect("close");
    let results: Vec<(&str, Result<(), CacheError>)> = vec![
        ("get", h.engine.get("k").map(drop)),
        ("set", h.engine.set("k", bytes("v"), Ttl::Default)),
        ("exists", h.engine.exists("k").map(drop)),
        ("delete", h.engine.delete("k").map(drop)),
        ("increment", h.engine.increment("n", 1).map(drop)),
        ("get_many", h.engine.get_many(&["k"]).map(drop)),
        ("clear", h.engine.clear()),
    ];
    for (op, result) in results {
        assert!(
            matches!(result, Err(CacheError::Closed { .. })),
            "{}: {op} after close gave {result:?}, not Closed",
            h.caps.backend
        );
    }
    h.engine.close().expect("closing twice");
}
