//! The conformance kit: the behaviours every cache-toolkit engine must show, ours and third
//! parties'.
//!
//! Each behaviour is a `pub fn` in [`behaviours`] that takes an [`EngineFactory`] and panics with
//! a message naming what went wrong. The [`conformance_suite!`] macro expands into one `#[test]`
//! per behaviour, so each failure is reported on its own:
//!
//! ```no_run
//! use cache_local::InMemoryEngine;
//! use cache_tests::TestContext;
//!
//! fn engine(ctx: &TestContext) -> InMemoryEngine {
//!     InMemoryEngine::builder()
//!         .clock(ctx.clock())
//!         .default_ttl(ctx.default_ttl())
//!         .build()
//!         .expect("valid settings")
//! }
//!
//! cache_tests::conformance_suite!(engine);
//! # fn main() {}
//! ```
//!
//! # The factory and its context
//!
//! The factory receives a [`TestContext`] and must build an engine that:
//! - uses [`TestContext::default_ttl`] as its default TTL (2 s, so remote engines can show it
//!   expiring);
//! - lives in [`TestContext::namespace`], when the engine has namespaces: the kit builds several
//!   engines in distinct namespaces (`ns` and `ns:b`, say) and checks that they share nothing;
//!   engines built from contexts of one test share one store (one server);
//! - optionally takes [`TestContext::clock`]: if the factory asks for the manual clock, the kit
//!   moves it instead of sleeping; if not, the kit sleeps for real.
//!
//! # What is checked, and how it is chosen
//!
//! Optional behaviours are chosen from [`Capabilities`], never from the backend's name: engines
//! that share entries across threads must show exactly one `add` winner and no lost `increment`
//! under threads; per-thread engines must show the per-thread equivalent. TTL checks wait
//! `ttl + ttl_resolution` plus a margin; value-size checks use `max_value_size`; key-length checks
//! use `max_key_len`.
//!
//! # Layers come for free
//!
//! Anything that implements an engine trait can be wrapped in the layers of `cache-layers`
//! (fail-open, statistics, metrics, tracing), and a layered engine is an engine again. Layers
//! must not change what an engine does, so run the kit on your engine layered too. Here with
//! [`ReferenceEngine`], which stands for any third-party engine:
//!
//! ```no_run
//! use cache_layers::{FailOpen, LayerExt, Layered, Stats};
//! use cache_tests::{ReferenceEngine, TestContext};
//!
//! type Stacked = Layered<Layered<ReferenceEngine, Stats>, FailOpen>;
//!
//! fn layered(ctx: &TestContext) -> Stacked {
//!     ReferenceEngine::new(ctx).layer(Stats::new()).layer(FailOpen::new())
//! }
//!
//! cache_tests::conformance_suite!(layered);
//! # fn main() {}
//! ```
//!
//! The same engine, used directly:
//!
//! ```
//! use cache_core::{Bytes, CacheEngine, Ttl};
//! use cache_layers::{LayerExt, Stats};
//! use cache_tests::{ReferenceEngine, TestContext};
//!
//! let stats = Stats::new();
//! let engine = ReferenceEngine::new(&TestContext::new()).layer(stats.clone());
//! engine.set("k", Bytes::from_static(b"v"), Ttl::Default)?;
//! assert!(engine.get("k")?.is_some());
//! assert_eq!(stats.snapshot().hits, 1);
//! # Ok::<(), cache_core::CacheError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cache_core::clock::{Clock, ManualClock};
use cache_core::{CacheEngine, Capabilities};

#[cfg(feature = "tokio")]
pub mod asynchronous;
pub mod behaviours;
pub mod certificates;
pub mod faults;
pub mod hostile;
pub mod proxy;
mod reference;
mod required_only;
pub mod servers;
pub mod soak;
#[cfg(feature = "tokio")]
pub mod stalls;
pub mod topologies;

pub use cache_core;
pub use reference::ReferenceEngine;
pub use required_only::RequiredOnly;

/// What the kit hands to a factory: a fresh namespace, the default TTL to configure, and a
/// manual clock the factory may use.
#[derive(Debug, Clone)]
pub struct TestContext {
    namespace: String,
    root: Arc<str>,
    clock: Arc<ManualClock>,
    clock_taken: Arc<AtomicBool>,
}

impl TestContext {
    /// A context with a fresh random namespace (`kit-` and 12 hex digits) and its own clock.
    pub fn new() -> Self {
        let namespace = format!("kit-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        Self {
            root: Arc::from(namespace.as_str()),
            namespace,
            clock: Arc::new(ManualClock::new()),
            clock_taken: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A context in the namespace `self.namespace() + suffix`, sharing this one's clock: for a
    /// second engine on the same store.
    pub fn sibling(&self, suffix: &str) -> Self {
        Self {
            namespace: format!("{}{suffix}", self.namespace),
            root: Arc::clone(&self.root),
            clock: Arc::clone(&self.clock),
            clock_taken: Arc::clone(&self.clock_taken),
        }
    }

    /// The context this one and its siblings came from (same clock, the first namespace).
    pub fn root(&self) -> Self {
        Self {
            namespace: self.root.to_string(),
            root: Arc::clone(&self.root),
            clock: Arc::clone(&self.clock),
            clock_taken: Arc::clone(&self.clock_taken),
        }
    }

    /// The namespace the engine must live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The default TTL the engine must be configured with: 2 seconds.
    pub fn default_ttl(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// The manual clock. A factory that takes it tells the kit to move it instead of sleeping.
    pub fn clock(&self) -> Arc<ManualClock> {
        self.clock_taken.store(true, Ordering::SeqCst);
        Arc::clone(&self.clock)
    }

    /// Whether the factory took the manual clock.
    pub fn uses_manual_clock(&self) -> bool {
        self.clock_taken.load(Ordering::SeqCst)
    }

    /// Lets `duration` pass for the engine: moves the manual clock, or sleeps.
    pub fn pass(&self, duration: Duration) {
        if self.uses_manual_clock() {
            self.clock.advance(duration);
        } else {
            std::thread::sleep(duration);
        }
    }

    /// The engine's current time, for measuring how long ago something happened.
    pub fn now(&self) -> Instant {
        if self.uses_manual_clock() {
            self.clock.now()
        } else {
            Instant::now()
        }
    }

    /// How long to wait beyond `ttl + resolution` before expecting an entry gone: nothing with
    /// the manual clock, a scheduling margin when sleeping.
    pub fn margin(&self) -> Duration {
        if self.uses_manual_clock() {
            Duration::ZERO
        } else {
            Duration::from_millis(250)
        }
    }
}

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds engines for the kit. Implemented for every `Fn(&TestContext) -> E` where `E` is an
/// engine.
pub trait EngineFactory {
    /// Builds an engine for `ctx`.
    fn make(&self, ctx: &TestContext) -> Arc<dyn CacheEngine>;
}

impl<E, F> EngineFactory for F
where
    E: CacheEngine + 'static,
    F: Fn(&TestContext) -> E,
{
    fn make(&self, ctx: &TestContext) -> Arc<dyn CacheEngine> {
        Arc::new(self(ctx))
    }
}

/// Turns a closure into an [`EngineFactory`], fixing its argument type for inference.
pub fn factory<E, F>(f: F) -> F
where
    E: CacheEngine + 'static,
    F: Fn(&TestContext) -> E,
{
    f
}

/// An engine with its context and capabilities, as the behaviours use them.
#[derive(Debug)]
pub struct Harness {
    /// The context the engine was built with.
    pub ctx: TestContext,
    /// The engine.
    pub engine: Arc<dyn CacheEngine>,
    /// Its capabilities, read once.
    pub caps: Capabilities,
}

impl Harness {
    /// Builds an engine in a fresh context.
    pub fn new(factory: &dyn EngineFactory) -> Self {
        Self::with_context(factory, TestContext::new())
    }

    /// Builds an engine for `ctx`.
    pub fn with_context(factory: &dyn EngineFactory, ctx: TestContext) -> Self {
        let engine = factory.make(&ctx);
        let caps = engine.capabilities();
        Self { ctx, engine, caps }
    }

    /// How long to wait after setting `ttl` before the entry must be gone.
    pub fn expiry_wait(&self, ttl: Duration) -> Duration {
        ttl + self.caps.ttl_resolution + self.ctx.margin()
    }
}

/// Expands into one `#[test]` per behaviour of the kit, each building engines with `$factory`
/// (a function or closure taking `&TestContext` and returning an engine).
///
/// The tests are put in a module named `conformance` (or the name given first), which imports
/// everything from the module where the macro is called. With `require = expr`, each test first
/// evaluates `expr` and returns early (passing) when it is false: for engines whose server may be
/// missing outside CI (see [`servers::OrSkip`]).
///
/// ```no_run
/// # use cache_local::ThreadLocalEngine;
/// cache_tests::conformance_suite!(thread_local_kit, |ctx: &cache_tests::TestContext| {
///     ThreadLocalEngine::builder()
///         .clock(ctx.clock())
///         .default_ttl(ctx.default_ttl())
///         .build()
///         .expect("valid settings")
/// });
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($module:ident, $factory:expr, require = $require:expr) => {
        $crate::__with_behaviours!(suite $module, $factory, $require);
    };
    ($module:ident, $factory:expr) => {
        $crate::conformance_suite!($module, $factory, require = true);
    };
    ($factory:expr) => {
        $crate::conformance_suite!(conformance, $factory, require = true);
    };
    (@module $module:ident, $factory:expr, $require:expr; $($name:ident),* $(,)?) => {
        #[allow(unused_imports)]
        mod $module {
            use super::*;
            $(
                #[test]
                fn $name() {
                    if !$require {
                        return;
                    }
                    let factory = $crate::factory($factory);
                    $crate::behaviours::$name(&factory);
                }
            )*
        }
    };
}

/// The one list of behaviours, handed to whoever asks: `conformance_suite!` (one test each) and
/// [`behaviours::BEHAVIOURS`] (their names).
#[doc(hidden)]
#[macro_export]
macro_rules! __with_behaviours {
    (@list [suite $module:ident, $factory:expr, $require:expr] $($name:ident),*) => {
        $crate::conformance_suite!(@module $module, $factory, $require; $($name),*);
    };
    (@list [names] $($name:ident),*) => {
        &[$(stringify!($name)),*]
    };
    ($($then:tt)*) => {
        $crate::__with_behaviours! { @list [$($then)*]
            miss, round_trip, overwrite_is_never_stale, delete_then_delete_again,
            exists_follows_entries, ttl_expiry, ttl_never, ttl_default,
            sub_second_ttl, zero_ttl_removes, ttl_out_of_range,
            remaining_ttl_reports, default_ttl_applies, idle_entries_expire,
            empty_and_binary_values, largest_value, unicode_keys,
            invalid_keys_rejected, clear_removes_own_entries,
            clear_is_scoped_to_namespace, namespaces_are_isolated,
            get_many_order_and_holes, set_many_stores_all_or_nothing,
            delete_many_counts, add_semantics, add_is_atomic_under_threads,
            increment_semantics, increment_keeps_ttl,
            increment_loses_nothing_under_threads, touch_semantics,
            delete_if_equals_compares, tags_invalidate_what_carries_them,
            optional_operations_match_capabilities, concurrency_smoke, close_is_final
        }
    };
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
