//! The kit passes a correct engine and fails engines with known faults, each in the behaviour
//! meant to catch it.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use cache_tests::{EngineFactory, TestContext, behaviours};
use common::{Fault, ReferenceEngine};

fn with_fault(fault: Fault) -> impl Fn(&TestContext) -> ReferenceEngine {
    move |ctx: &TestContext| ReferenceEngine::new(ctx, fault)
}

cache_tests::conformance_suite!(reference_kit, with_fault(Fault::None));

/// Runs `behaviour` against an engine with `fault` and returns its panic message.
fn failure(fault: Fault, behaviour: fn(&dyn EngineFactory)) -> String {
    let factory = with_fault(fault);
    let result = catch_unwind(AssertUnwindSafe(|| behaviour(&factory)));
    match result {
        Ok(()) => panic!("the kit passed an engine with fault {fault:?}"),
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    }
}

#[test]
fn an_engine_that_ignores_ttls_fails() {
    let message = failure(Fault::IgnoresTtl, behaviours::ttl_expiry);
    assert!(message.contains("after set"), "{message}");
    failure(Fault::IgnoresTtl, behaviours::ttl_default);
    failure(Fault::IgnoresTtl, behaviours::touch_semantics);
}

#[test]
fn an_engine_that_clears_too_much_fails() {
    let message = failure(
        Fault::ClearsTooMuch,
        behaviours::clear_is_scoped_to_namespace,
    );
    assert!(message.contains("after clearing a"), "{message}");
}

#[test]
fn an_engine_that_clears_too_little_fails() {
    let message = failure(
        Fault::ClearsTooLittle,
        behaviours::clear_removes_own_entries,
    );
    assert!(message.contains("after clear"), "{message}");
}

#[test]
fn an_engine_that_returns_stale_data_fails() {
    let message = failure(Fault::StaleOverwrite, behaviours::overwrite_is_never_stale);
    assert!(message.contains("after an overwrite"), "{message}");
}

#[test]
fn an_engine_whose_namespaces_collide_fails() {
    let message = failure(Fault::NaiveNamespace, behaviours::namespaces_are_isolated);
    assert!(message.contains("namespace a"), "{message}");
    failure(
        Fault::NaiveNamespace,
        behaviours::clear_is_scoped_to_namespace,
    );
}

#[test]
fn an_engine_that_loses_increments_fails() {
    // The race is likely but not certain in one run; the behaviour repeats enough to catch it.
    let mut caught = false;
    for _ in 0..20 {
        let factory = with_fault(Fault::RacyIncrement);
        if catch_unwind(AssertUnwindSafe(|| {
            behaviours::increment_loses_nothing_under_threads(&factory)
        }))
        .is_err()
        {
            caught = true;
            break;
        }
    }
    assert!(caught, "the kit never caught a racy increment in 20 runs");
}

#[test]
fn an_engine_that_rounds_short_ttls_to_never_fails() {
    let message = failure(Fault::SubSecondIsNever, behaviours::sub_second_ttl);
    assert!(message.contains("never expired"), "{message}");
}
