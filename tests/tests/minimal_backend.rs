//! The proof that the trait is a contract outside backends can build on: an engine written the
//! way a third party would, with only the six required methods of `CacheEngine`, passes the
//! kit (its optional behaviours skipped, by name), reports `Unsupported` for what it lacks,
//! gets the bulk operations and an async face for free, and works under `TypedCache` for
//! everything that needs no optional operation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cache_core::clock::{Clock, ManualClock};
use cache_core::key::{KeySpace, check_key};
use cache_core::{
    Bytes, CacheEngine, CacheError, Capabilities, NonBlocking, Operation, Result, Ttl,
};
use cache_tests::TestContext;

const BACKEND: &str = "minimal";
const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Entries by full key: the value and its deadline (`None`: never expires).
type Store = Arc<std::sync::Mutex<HashMap<String, (Bytes, Option<Instant>)>>>;

/// A map with TTLs and namespaces, and nothing else.
#[derive(Debug)]
struct Minimal {
    entries: Store,
    prefix: String,
    default_ttl: Duration,
    clock: Arc<ManualClock>,
    closed: AtomicBool,
}

impl Minimal {
    fn new(ctx: &TestContext) -> Self {
        Self::on(Default::default(), ctx)
    }

    /// An engine on `store` (siblings of one context share it, as namespaces of one server do).
    fn on(store: Store, ctx: &TestContext) -> Self {
        Self {
            entries: store,
            prefix: KeySpace::new(Some(ctx.namespace()))
                .expect("the kit's namespaces are valid")
                .prefix()
                .to_owned(),
            default_ttl: ctx.default_ttl(),
            clock: ctx.clock(),
            closed: AtomicBool::new(false),
        }
    }

    fn key(&self, key: &str) -> Result<String> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(CacheError::Closed { backend: BACKEND });
        }
        check_key(key, self.prefix.len())?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Bytes, Option<Instant>)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl CacheEngine for Minimal {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let key = self.key(key)?;
        let now = self.clock.now();
        let mut map = self.lock();
        match map.get(&key) {
            Some((_, Some(deadline))) if *deadline <= now => {
                map.remove(&key);
                Ok(None)
            }
            Some((value, _)) => Ok(Some(value.clone())),
            None => Ok(None),
        }
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let key = self.key(key)?;
        let deadline = match ttl {
            Ttl::Never => None,
            Ttl::Default => Some(self.clock.now() + self.default_ttl),
            Ttl::After(d) if d > MAX_TTL => {
                return Err(CacheError::InvalidTtl {
                    backend: BACKEND,
                    ttl: d,
                    max: MAX_TTL,
                });
            }
            Ttl::After(d) if d.is_zero() => {
                self.lock().remove(&key);
                return Ok(());
            }
            Ttl::After(d) => Some(self.clock.now() + d),
        };
        self.lock().insert(key, (value, deadline));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let key = self.key(key)?;
        let now = self.clock.now();
        Ok(
            matches!(self.lock().remove(&key), Some((_, deadline)) if deadline.is_none_or(|d| d > now)),
        )
    }

    fn clear(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(CacheError::Closed { backend: BACKEND });
        }
        self.lock().retain(|key, _| !key.starts_with(&self.prefix));
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.backend = BACKEND;
        caps.shared_across_threads = true;
        caps.ttl_resolution = Duration::ZERO;
        caps.max_ttl = MAX_TTL;
        caps.max_key_len = cache_core::key::MAX_KEY_LEN - self.prefix.len();
        caps.default_ttl = Ttl::After(self.default_ttl);
        caps
    }
}

/// It never waits, so its async face is the core's adapter.
impl NonBlocking for Minimal {}

/// Siblings of one kit context share one store, as namespaces of one server do.
fn minimal(ctx: &TestContext) -> Minimal {
    use std::sync::{Mutex, OnceLock};
    static STORES: OnceLock<Mutex<HashMap<String, Store>>> = OnceLock::new();
    let root = ctx.root().namespace().to_owned();
    let store = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(root)
        .or_default()
        .clone();
    Minimal::on(store, ctx)
}

cache_tests::conformance_suite!(minimal_kit, minimal);

// Any engine reduced to the required methods passes too, its optional behaviours skipped.
cache_tests::conformance_suite!(required_only_reference_kit, |ctx: &TestContext| {
    cache_tests::RequiredOnly(cache_tests::ReferenceEngine::new(ctx))
});

#[cfg(feature = "tokio")]
cache_tests::async_conformance_suite!(minimal_async_kit, minimal);

#[test]
fn optional_operations_are_unsupported_and_change_nothing() {
    let engine = Minimal::new(&TestContext::new());
    engine
        .set("k", Bytes::from_static(b"7"), Ttl::Default)
        .unwrap();
    let outcomes: [(Operation, Result<()>); 6] = [
        (
            Operation::Add,
            engine.add("k", Bytes::new(), Ttl::Default).map(drop),
        ),
        (Operation::Increment, engine.increment("k", 1).map(drop)),
        (Operation::Touch, engine.touch("k", Ttl::Never).map(drop)),
        (
            Operation::DeleteIfEquals,
            engine.delete_if_equals("k", b"7").map(drop),
        ),
        (Operation::RemainingTtl, engine.remaining_ttl("k").map(drop)),
        (Operation::RemainingTtl, engine.get_with_ttl("k").map(drop)),
    ];
    for (op, outcome) in outcomes {
        match outcome {
            Err(CacheError::Unsupported { backend, operation }) => {
                assert_eq!((backend, operation), (BACKEND, op));
            }
            other => panic!("{op}: {other:?}"),
        }
    }
    let error = engine.increment("k", 1).unwrap_err();
    assert!(!error.is_transient() && !error.is_backend_failure());
    assert_eq!(
        error.to_string(),
        "minimal: the engine does not offer `increment`"
    );
    assert_eq!(engine.get("k").unwrap().as_deref(), Some(&b"7"[..]));
}

#[test]
fn provided_bulk_operations_check_every_key_first() {
    let engine = Minimal::new(&TestContext::new());
    let refused = engine.set_many(
        &[("a", Bytes::from_static(b"1")), ("bad key", Bytes::new())],
        Ttl::Default,
    );
    assert!(matches!(refused, Err(CacheError::InvalidKey { .. })));
    assert_eq!(
        engine.get("a").unwrap(),
        None,
        "a refused batch wrote nothing"
    );
    engine
        .set_many(
            &[
                ("a", Bytes::from_static(b"1")),
                ("b", Bytes::from_static(b"2")),
            ],
            Ttl::Default,
        )
        .unwrap();
    assert_eq!(
        engine.get_many(&["b", "missing", "a"]).unwrap(),
        vec![
            Some(Bytes::from_static(b"2")),
            None,
            Some(Bytes::from_static(b"1"))
        ]
    );
    assert!(matches!(
        engine.delete_many(&["a", ""]),
        Err(CacheError::InvalidKey { .. })
    ));
    assert_eq!(engine.delete_many(&["a", "b", "missing"]).unwrap(), 2);
    assert!(!engine.exists("a").unwrap());
}

#[test]
fn typed_values_work_without_optional_operations() {
    use cache_serializer::TypedCache;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u32,
        name: String,
    }

    let ctx = TestContext::new();
    let cache = TypedCache::new(Minimal::new(&ctx));
    let ada = User {
        id: 1,
        name: "Ada".into(),
    };
    cache.set("user:1", &ada, Ttl::Default).unwrap();
    assert_eq!(cache.get::<User>("user:1").unwrap(), Some(ada));
    let mut loads = 0;
    for _ in 0..3 {
        let user: User = cache
            .entry("user:2")
            .ttl(Ttl::Default)
            .or_load(|| {
                loads += 1;
                User {
                    id: 2,
                    name: "Grace".into(),
                }
            })
            .unwrap();
        assert_eq!(user.id, 2);
    }
    assert_eq!(loads, 1, "the loaded value was cached");
    ctx.clock()
        .advance(ctx.default_ttl() + Duration::from_millis(1));
    assert_eq!(
        cache.get::<User>("user:1").unwrap(),
        None,
        "the default TTL applies"
    );
}

#[cfg(feature = "tokio")]
#[test]
fn the_async_face_comes_from_the_core_adapter() {
    use cache_core::AsyncCacheEngine;
    let engine = Minimal::new(&TestContext::new());
    let got = cache_core::block_on(async {
        AsyncCacheEngine::set(&engine, "k", Bytes::from_static(b"v"), Ttl::Default).await?;
        let value = AsyncCacheEngine::get(&engine, "k").await?;
        let add = AsyncCacheEngine::add(&engine, "k", Bytes::new(), Ttl::Default).await;
        Ok::<_, CacheError>((value, add))
    })
    .unwrap();
    assert_eq!(got.0.as_deref(), Some(&b"v"[..]));
    assert!(matches!(got.1, Err(CacheError::Unsupported { .. })));
}

#[test]
fn what_needs_an_optional_operation_says_so() {
    use cache_serializer::{Lease, TypedCache};

    let ctx = TestContext::new();
    // A lease needs `add` and `delete_if_equals`: refused when the cache is built.
    let refused = TypedCache::builder(Minimal::new(&ctx))
        .lease(Lease::new(Duration::from_secs(5)))
        .build();
    match refused {
        Err(CacheError::InvalidConfig { message }) => {
            assert!(message.contains("`add`"), "{message}");
            assert!(message.contains("minimal"), "{message}");
        }
        other => panic!("a lease on an engine without add: {other:?}"),
    }
    // Tags need `add`: refused when used, with the operation named, and nothing stored.
    let cache = TypedCache::new(Minimal::new(&ctx));
    let tagged = cache.set_tagged("k", &1u32, Ttl::Default, &["t"]);
    assert!(
        matches!(
            tagged,
            Err(CacheError::Unsupported {
                operation: Operation::Add,
                ..
            })
        ),
        "{tagged:?}"
    );
    assert_eq!(cache.get::<u32>("k").unwrap(), None);
}
