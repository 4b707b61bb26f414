//! `clear` and namespaces: what is removed, and what is never shared.

use cache_core::Ttl;

use super::{assert_value, exists, has_method, set};
use crate::{EngineFactory, Harness};

/// `clear` removes every entry of the engine.
pub fn clear_removes_own_entries(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let keys: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    for key in &keys {
        set(&h, key, "v", Ttl::Default);
    }
    if has_method(&h, "increment") {
        h.engine.increment("counter", 5).expect("increment");
    } else {
        set(&h, "counter", "5", Ttl::Default);
    }
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
    if has_method(&a, "increment") {
        assert_eq!(a.engine.increment("n", 1).expect("increment"), 1);
        assert_eq!(ab.engine.increment("n", 10).expect("increment"), 10);
    }
}
