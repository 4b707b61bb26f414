//! Reads, writes, overwrites, deletes and `exists`.

use std::time::Duration;

use cache_core::Ttl;

use super::{assert_value, exists, set};
use crate::{EngineFactory, Harness};

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
