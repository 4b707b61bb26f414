//! One function per behaviour, grouped by family. Each builds its own engines from the factory
//! and panics with a message saying what the engine did wrong.
//!
//! Every behaviour is listed once, in the macro behind
//! [`conformance_suite!`](crate::conformance_suite); [`BEHAVIOURS`] is that list, and a test of
//! this crate fails when a `pub fn` of a family is missing from it, so a behaviour can never be
//! added and silently never run.

use std::time::Duration;

use cache_core::{Bytes, Operation, Remaining, Ttl};

use crate::Harness;

mod atomic;
mod basics;
mod bulk;
mod lifecycle;
mod namespaces;
mod tags;
mod ttl;
mod values_and_keys;

pub use atomic::*;
pub use basics::*;
pub use bulk::*;
pub use lifecycle::*;
pub use namespaces::*;
pub use tags::*;
pub use ttl::*;
pub use values_and_keys::*;

/// The name of every behaviour `conformance_suite!` runs.
pub const BEHAVIOURS: &[&str] = crate::__with_behaviours!(names);

/// The sources of the families, for the test that checks [`BEHAVIOURS`] against them.
#[doc(hidden)]
pub const FAMILY_SOURCES: &[&str] = &[
    include_str!("atomic.rs"),
    include_str!("basics.rs"),
    include_str!("bulk.rs"),
    include_str!("lifecycle.rs"),
    include_str!("namespaces.rs"),
    include_str!("tags.rs"),
    include_str!("ttl.rs"),
    include_str!("values_and_keys.rs"),
];

/// Whether the engine declares every operation `behaviour` needs. When it does not, the
/// behaviour is skipped, and named as skipped on standard error (`cargo test` shows it with
/// `--nocapture`), so a report never passes off a skipped check as a passed one.
/// [`optional_operations_match_capabilities`] makes sure the declaration tells the truth.
pub(crate) fn offers(h: &Harness, behaviour: &str, needs: &[Operation]) -> bool {
    let missing: Vec<&str> = needs
        .iter()
        .filter(|op| !h.caps.supports(**op))
        .map(|op| op.name())
        .collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!(
        "cache-tests: skipped {behaviour} on {}: the engine does not offer {}",
        h.caps.backend,
        missing.join(", ")
    );
    false
}

/// Whether the engine offers the method named `method`: every required and provided-composed
/// method, and the optional ones it declares.
pub(crate) fn has_method(h: &Harness, method: &str) -> bool {
    let optional = match method {
        "add" => Operation::Add,
        "increment" => Operation::Increment,
        "touch" => Operation::Touch,
        "delete_if_equals" => Operation::DeleteIfEquals,
        "remaining_ttl" | "get_with_ttl" | "get_many_with_ttl" => Operation::RemainingTtl,
        _ => return true,
    };
    h.caps.supports(optional)
}

pub(crate) fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(crate) fn get(h: &Harness, key: &str) -> Option<Bytes> {
    h.engine
        .get(key)
        .unwrap_or_else(|e| panic!("{}: get({key:?}) failed: {e}", h.caps.backend))
}

pub(crate) fn set(h: &Harness, key: &str, value: &str, ttl: Ttl) {
    h.engine
        .set(key, bytes(value), ttl)
        .unwrap_or_else(|e| panic!("{}: set({key:?}) failed: {e}", h.caps.backend));
}

pub(crate) fn exists(h: &Harness, key: &str) -> bool {
    h.engine
        .exists(key)
        .unwrap_or_else(|e| panic!("{}: exists({key:?}) failed: {e}", h.caps.backend))
}

pub(crate) fn remaining(h: &Harness, key: &str) -> Option<Remaining> {
    h.engine
        .remaining_ttl(key)
        .unwrap_or_else(|e| panic!("{}: remaining_ttl({key:?}) failed: {e}", h.caps.backend))
}

pub(crate) fn assert_value(h: &Harness, key: &str, expected: Option<&str>, context: &str) {
    let got = get(h, key);
    assert_eq!(
        got.as_deref(),
        expected.map(str::as_bytes),
        "{}: {context}: get({key:?})",
        h.caps.backend
    );
}

/// The shortest TTL that the kit waits for: the resolution, but at least 50 ms.
pub(crate) fn short_ttl(h: &Harness) -> Duration {
    h.caps.ttl_resolution.max(Duration::from_millis(50))
}

#[cfg(test)]
mod tests {
    use super::{BEHAVIOURS, FAMILY_SOURCES};

    /// Every behaviour function of every family is in the list `conformance_suite!` runs, and
    /// the list names nothing else.
    #[test]
    fn every_behaviour_is_listed_once() {
        let mut defined: Vec<&str> = FAMILY_SOURCES
            .iter()
            .flat_map(|source| source.lines())
            .filter_map(|line| line.strip_prefix("pub fn "))
            .filter_map(|rest| rest.split_once("(factory: &dyn EngineFactory)"))
            .map(|(name, _)| name)
            .collect();
        defined.sort_unstable();
        let mut listed = BEHAVIOURS.to_vec();
        listed.sort_unstable();
        assert_eq!(defined.len(), 35, "{defined:?}");
        assert_eq!(
            defined, listed,
            "behaviours defined (left) and run by conformance_suite! (right) differ"
        );
    }
}
