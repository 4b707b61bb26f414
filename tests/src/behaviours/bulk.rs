//! Bulk operations: `get_many`, `set_many`, `delete_many`.

use cache_core::{Bytes, CacheError, Ttl};

use super::{assert_value, bytes, set, short_ttl};
use crate::{EngineFactory, Harness};

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
    let start = h.ctx.now();
    h.engine.set_many(&refs, Ttl::After(ttl)).expect("set_many");
    for (key, value) in &entries {
        let got = h.engine.get(key).expect("get");
        // An entry read after its short TTL may be gone: only a read within it is checked (a
        // loaded machine made this fail on Redis).
        if h.ctx.now().duration_since(start) >= ttl {
            break;
        }
        assert_eq!(
            got.as_ref(),
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
