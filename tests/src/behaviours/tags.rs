//! Tags ([`cache_core::tags`]): built from `get_many`, `add` and `set`, so every engine that
//! offers `add` must show them working.

use cache_core::tags::{TagExt, tag_key};
use cache_core::{Bytes, CacheError, Operation, Ttl};

use super::{assert_value, bytes, exists, offers};
use crate::{EngineFactory, Harness};

fn tagged(h: &Harness, key: &str) -> Option<Bytes> {
    h.engine
        .get_tagged(key)
        .unwrap_or_else(|e| panic!("{}: get_tagged({key:?}) failed: {e}", h.caps.backend))
}

fn set_tagged(h: &Harness, key: &str, value: &str, tags: &[&str]) {
    h.engine
        .set_tagged(key, bytes(value), Ttl::Default, tags)
        .unwrap_or_else(|e| {
            panic!(
                "{}: set_tagged({key:?}, {tags:?}) failed: {e}",
                h.caps.backend
            )
        });
}

fn invalidate(h: &Harness, tag: &str) {
    h.engine
        .invalidate_tag(tag)
        .unwrap_or_else(|e| panic!("{}: invalidate_tag({tag:?}) failed: {e}", h.caps.backend));
}

fn assert_tagged(h: &Harness, key: &str, expected: Option<&str>, context: &str) {
    assert_eq!(
        tagged(h, key).as_deref(),
        expected.map(str::as_bytes),
        "{}: {context}: get_tagged({key:?})",
        h.caps.backend
    );
}

/// Invalidating a tag makes every entry carrying it a miss to tag-aware reads, and only those;
/// it writes the tag's version only (the entries stay until rewritten or expired); an entry
/// written again is current again; a lost version makes its entries miss, never come back;
/// tags are per namespace; bad tags are typed errors that write nothing.
pub fn tags_invalidate_what_carries_them(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    if !offers(&h, "tags_invalidate_what_carries_them", &[Operation::Add]) {
        return;
    }
    let backend = h.caps.backend;
    set_tagged(&h, "order:1", "books", &["user:7"]);
    set_tagged(&h, "order:2", "lamp", &["user:7", "eu"]);
    set_tagged(&h, "order:3", "chair", &["user:8", "eu"]);
    h.engine
        .set("plain", bytes("untagged"), Ttl::Default)
        .expect("set plain");
    for (key, value) in [
        ("order:1", "books"),
        ("order:2", "lamp"),
        ("order:3", "chair"),
        ("plain", "untagged"),
    ] {
        assert_tagged(&h, key, Some(value), "before any invalidation");
    }

    invalidate(&h, "user:7");
    assert_tagged(&h, "order:1", None, "its tag was invalidated");
    assert_tagged(&h, "order:2", None, "one of its tags was invalidated");
    assert_tagged(&h, "order:3", Some("chair"), "other tags");
    assert_tagged(&h, "plain", Some("untagged"), "untagged");
    assert!(
        exists(&h, "order:1") && exists(&h, "order:2"),
        "{backend}: an invalidation must write the tag's version only, not touch each entry"
    );

    set_tagged(&h, "order:1", "books again", &["user:7"]);
    assert_tagged(
        &h,
        "order:1",
        Some("books again"),
        "written after the invalidation",
    );
    invalidate(&h, "eu");
    assert_tagged(&h, "order:3", None, "after invalidating its other tag");
    assert_tagged(&h, "order:1", Some("books again"), "not tagged eu");

    // A version that is lost (evicted, deleted) never brings stale entries back.
    assert!(
        h.engine
            .delete(&tag_key("user:7"))
            .expect("delete a version"),
        "{backend}: the tag's version is an ordinary entry"
    );
    assert_tagged(&h, "order:1", None, "its tag's version was lost");
    set_tagged(&h, "order:1", "books", &["user:7"]);
    assert_tagged(&h, "order:1", Some("books"), "written with a new version");

    // Tags are per namespace, like keys.
    let other = Harness::with_context(factory, h.ctx.sibling(":b"));
    set_tagged(&other, "order:1", "elsewhere", &["user:7"]);
    invalidate(&h, "user:7");
    assert_tagged(
        &other,
        "order:1",
        Some("elsewhere"),
        "another namespace's tag",
    );
    assert_tagged(&h, "order:1", None, "this namespace's tag");

    // The longest tag whose version key fits is accepted.
    let room = h
        .caps
        .max_key_len
        .saturating_sub(tag_key("").len())
        .min(200);
    let long = "t".repeat(room);
    set_tagged(&h, "long", "v", &[&long]);
    invalidate(&h, &long);
    assert_tagged(&h, "long", None, "a tag of the longest length");

    // Bad tags: typed errors, nothing written.
    for bad in [
        &["has space"][..],
        &[""][..],
        &["x"; cache_core::tags::MAX_TAGS + 1][..],
    ] {
        let result = h.engine.set_tagged("bad", bytes("v"), Ttl::Default, bad);
        assert!(
            matches!(
                result,
                Err(CacheError::InvalidKey { .. } | CacheError::InvalidConfig { .. })
            ),
            "{backend}: set_tagged with tags {bad:?} gave {result:?}"
        );
    }
    assert_value(&h, "bad", None, "after refused tags");
}
