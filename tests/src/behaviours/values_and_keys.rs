//! Values (empty, binary, the largest) and keys (Unicode, and those the rule refuses).

use cache_core::{Bytes, CacheError, Ttl};

use super::{assert_value, bytes, has_method, set};
use crate::{EngineFactory, Harness};

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
    let add = has_method(&h, "add").then(|| {
        h.engine
            .add("other", too_big.clone(), Ttl::Default)
            .map(|_| ())
    });
    for result in [
        h.engine.set("small", too_big.clone(), Ttl::Default),
        h.engine
            .set_many(&[("small", too_big.clone())], Ttl::Default),
    ]
    .into_iter()
    .chain(add)
    {
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
            (
                "delete_if_equals",
                h.engine.delete_if_equals(k, b"alive").map(drop),
            ),
            ("exists", h.engine.exists(k).map(drop)),
            ("add", h.engine.add(k, bytes("v"), Ttl::Default).map(drop)),
            ("increment", h.engine.increment(k, 1).map(drop)),
            ("touch", h.engine.touch(k, Ttl::Default).map(drop)),
            ("remaining_ttl", h.engine.remaining_ttl(k).map(drop)),
            ("get_with_ttl", h.engine.get_with_ttl(k).map(drop)),
            ("get_many", h.engine.get_many(&["canary", k]).map(drop)),
            (
                "get_many_with_ttl",
                h.engine.get_many_with_ttl(&["canary", k]).map(drop),
            ),
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
        for (op, result) in results.into_iter().filter(|(op, _)| has_method(&h, op)) {
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
