//! `#[cached]` on blocking functions over a `TypedCache`.

mod support;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, LazyLock, Mutex};
use std::time::Duration;

use cache_core::{CacheEngine, CacheError, Remaining, Ttl};
use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};
use serde::{Deserialize, Serialize};

use support::{FlakyEngine, wait_until};

type Cache = LazyLock<TypedCache<InMemoryEngine>>;

fn new_cache() -> TypedCache<InMemoryEngine> {
    TypedCache::new(InMemoryEngine::new())
}

/// The remaining TTL of `key`, which must be stored with an expiry.
fn remaining(engine: &impl CacheEngine, key: &str) -> Duration {
    match engine.remaining_ttl(key) {
        Ok(Some(Remaining::After(left))) => left,
        other => panic!("{key}: expected an expiry, found {other:?}"),
    }
}

/// Whether `left` is what a TTL of `ttl` leaves a moment after the write (the engine may round
/// a deadline up by its resolution, 10 ms here).
fn about(left: Duration, ttl: Duration) -> bool {
    left <= ttl + Duration::from_millis(50) && left + Duration::from_secs(5) > ttl
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

// --- A free function with a static cache ----------------------------------------------------

static USERS: Cache = LazyLock::new(new_cache);
static USER_LOADS: AtomicUsize = AtomicUsize::new(0);

/// Finds a user (a database query, say).
#[cached(cache = USERS, key = "user:{id}", ttl = "5m")]
fn find_user(id: u64) -> User {
    USER_LOADS.fetch_add(1, Ordering::SeqCst);
    User {
        id,
        name: format!("user {id}"),
    }
}

#[test]
fn a_free_function_runs_once_per_key_and_is_stored_under_its_key() {
    assert_eq!(find_user(1).name, "user 1");
    assert_eq!(find_user(1).name, "user 1");
    assert_eq!(find_user(2).name, "user 2");
    assert_eq!(USER_LOADS.load(Ordering::SeqCst), 2);
    // Under the template's key, readable by hand-written code, for the ttl given.
    assert_eq!(
        USERS.get::<User>("user:1").ok().flatten(),
        Some(find_user(1))
    );
    assert!(about(
        remaining(USERS.engine(), "user:1"),
        Duration::from_secs(300)
    ));
    let stats = USERS.stats();
    assert_eq!((stats.loads, stats.sets), (2, 2));
}

// --- A method with `cache = self.cache` -----------------------------------------------------

struct Directory {
    cache: TypedCache<InMemoryEngine>,
    tenant: &'static str,
    queries: AtomicUsize,
}

impl Directory {
    #[cached(cache = self.cache, key = "{self.tenant}:user:{id}", ttl = 60)]
    fn user(&self, id: u64) -> User {
        self.queries.fetch_add(1, Ordering::SeqCst);
        User {
            id,
            name: format!("{} {id}", self.tenant),
        }
    }

    /// An associated function with a static cache next to the method.
    #[cached(cache = KEYS, key = "directory:version")]
    fn version() -> String {
        "1.0".into()
    }
}

#[test]
fn a_method_uses_its_own_cache_and_self_in_the_key() {
    let directory = Directory {
        cache: new_cache(),
        tenant: "acme",
        queries: AtomicUsize::new(0),
    };
    assert_eq!(directory.user(7).name, "acme 7");
    assert_eq!(directory.user(7).name, "acme 7");
    assert_eq!(directory.queries.load(Ordering::SeqCst), 1);
    assert!(about(
        remaining(directory.cache.engine(), "acme:user:7"),
        Duration::from_secs(60)
    ));
    assert_eq!(Directory::version(), "1.0");
    assert!(
        KEYS.get::<String>("directory:version")
            .ok()
            .flatten()
            .is_some()
    );
}

// --- Result: only Ok is cached --------------------------------------------------------------

static RATES: Cache = LazyLock::new(new_cache);
static RATE_LOADS: AtomicUsize = AtomicUsize::new(0);
static RATE_FAILS: Mutex<bool> = Mutex::new(true);

#[derive(Debug, Clone, PartialEq)]
struct Unavailable(String);

#[cached(cache = RATES, key = "rate:{currency}", ttl = "90s")]
fn rate(currency: &str) -> Result<f64, Unavailable> {
    RATE_LOADS.fetch_add(1, Ordering::SeqCst);
    if *RATE_FAILS.lock().unwrap_or_else(|e| e.into_inner()) {
        return Err(Unavailable(format!("no rate for {currency}")));
    }
    Ok(1.08)
}

#[test]
fn a_failing_call_is_not_cached_and_the_next_call_runs_again() {
    assert_eq!(rate("eur"), Err(Unavailable("no rate for eur".into())));
    assert_eq!(rate("eur"), Err(Unavailable("no rate for eur".into())));
    assert_eq!(
        RATE_LOADS.load(Ordering::SeqCst),
        2,
        "errors are not cached"
    );
    assert!(!RATES.exists("rate:eur").unwrap_or(true));
    *RATE_FAILS.lock().unwrap_or_else(|e| e.into_inner()) = false;
    assert_eq!(rate("eur"), Ok(1.08));
    assert_eq!(rate("eur"), Ok(1.08));
    assert_eq!(RATE_LOADS.load(Ordering::SeqCst), 3, "Ok is cached");
    assert!(about(
        remaining(RATES.engine(), "rate:eur"),
        Duration::from_secs(90)
    ));
}

static PARSED: Cache = LazyLock::new(new_cache);

/// `?` and `return` mean what they mean in the plain function; io::Error is not `Clone`.
#[cached(cache = PARSED, key = "parsed:{text}")]
fn parse_number(text: &str) -> std::io::Result<u64> {
    if text.is_empty() {
        return Err(std::io::Error::other("empty"));
    }
    let n: u64 = text.parse().map_err(std::io::Error::other)?;
    Ok(n)
}

#[test]
fn question_mark_and_return_work_and_errors_need_not_be_clone() {
    assert_eq!(parse_number("42").ok(), Some(42));
    assert_eq!(
        parse_number("").map_err(|e| e.to_string()),
        Err("empty".to_string())
    );
    assert_eq!(
        parse_number("x").map_err(|e| e.kind()),
        Err(std::io::ErrorKind::Other)
    );
    assert_eq!(PARSED.get::<u64>("parsed:42").ok().flatten(), Some(42));
    assert!(!PARSED.exists("parsed:x").unwrap_or(true));
}

// --- cache_err = true: the whole Result is the value ----------------------------------------

static LOOKUPS: Cache = LazyLock::new(new_cache);
static LOOKUP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum LookupError {
    NoSuchDomain,
}

#[cached(cache = LOOKUPS, key = "dns:{host}", ttl = "30s", cache_err = true)]
fn resolve(host: String) -> Result<[u8; 4], LookupError> {
    LOOKUP_RUNS.fetch_add(1, Ordering::SeqCst);
    if host.ends_with(".invalid") {
        Err(LookupError::NoSuchDomain)
    } else {
        Ok([192, 0, 2, 1])
    }
}

#[test]
fn cache_err_caches_errors_too() {
    assert_eq!(resolve("a.invalid".into()), Err(LookupError::NoSuchDomain));
    assert_eq!(resolve("a.invalid".into()), Err(LookupError::NoSuchDomain));
    assert_eq!(resolve("example.org".into()), Ok([192, 0, 2, 1]));
    assert_eq!(LOOKUP_RUNS.load(Ordering::SeqCst), 2);
    let stored = LOOKUPS.get::<Result<[u8; 4], LookupError>>("dns:a.invalid");
    assert_eq!(stored.ok().flatten(), Some(Err(LookupError::NoSuchDomain)));
}

// --- Option: None cached only with none_ttl -------------------------------------------------

static PROFILES: Cache = LazyLock::new(new_cache);
static PROFILE_RUNS: AtomicUsize = AtomicUsize::new(0);
static SESSION_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = PROFILES, key = "profile:{id}", ttl = "10m", none_ttl = "30s")]
fn profile(id: u64) -> Option<String> {
    PROFILE_RUNS.fetch_add(1, Ordering::SeqCst);
    (id == 1).then(|| "Ada".to_string())
}

#[cached(cache = PROFILES, key = "session:{id}", ttl = "10m")]
fn session(id: u64) -> Option<String> {
    SESSION_RUNS.fetch_add(1, Ordering::SeqCst);
    (id == 1).then(|| "s-1".to_string())
}

#[test]
fn none_is_cached_for_none_ttl_and_only_with_it() {
    assert_eq!(profile(2), None);
    assert_eq!(profile(2), None);
    assert_eq!(
        PROFILE_RUNS.load(Ordering::SeqCst),
        1,
        "None cached as an absence"
    );
    assert!(PROFILES.stats().negative_hits >= 1);
    assert!(about(
        remaining(PROFILES.engine(), "profile:2"),
        Duration::from_secs(30)
    ));
    assert_eq!(profile(1).as_deref(), Some("Ada"));
    assert_eq!(profile(1).as_deref(), Some("Ada"));
    assert_eq!(PROFILE_RUNS.load(Ordering::SeqCst), 2);
    assert!(about(
        remaining(PROFILES.engine(), "profile:1"),
        Duration::from_secs(600)
    ));

    assert_eq!(session(2), None);
    assert_eq!(session(2), None);
    assert_eq!(
        SESSION_RUNS.load(Ordering::SeqCst),
        2,
        "without none_ttl, None is not cached"
    );
    assert!(!PROFILES.exists("session:2").unwrap_or(true));
    assert_eq!(session(1).as_deref(), Some("s-1"));
    assert_eq!(session(1).as_deref(), Some("s-1"));
    assert_eq!(SESSION_RUNS.load(Ordering::SeqCst), 3);
}

static ORDERS: Cache = LazyLock::new(new_cache);
static ORDER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = ORDERS, key = "order:{id}", none_ttl = 20)]
fn order(id: u64) -> Result<Option<String>, Unavailable> {
    ORDER_RUNS.fetch_add(1, Ordering::SeqCst);
    match id {
        0 => Err(Unavailable("down".into())),
        1 => Ok(Some("two books".into())),
        _ => Ok(None),
    }
}

#[test]
fn result_of_option_caches_some_and_none_but_not_errors() {
    for _ in 0..2 {
        assert_eq!(order(1), Ok(Some("two books".into())));
        assert_eq!(order(2), Ok(None));
        assert_eq!(order(0), Err(Unavailable("down".into())));
    }
    assert_eq!(ORDER_RUNS.load(Ordering::SeqCst), 4);
    assert!(about(
        remaining(ORDERS.engine(), "order:2"),
        Duration::from_secs(20)
    ));
    // No ttl given: the engine's default (300 s here).
    assert!(about(
        remaining(ORDERS.engine(), "order:1"),
        Duration::from_secs(300)
    ));
}

// --- TTLs -----------------------------------------------------------------------------------

static TTLS: LazyLock<TypedCache<InMemoryEngine>> = LazyLock::new(|| {
    let engine = InMemoryEngine::builder()
        .default_ttl(Duration::from_secs(42))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    TypedCache::new(engine)
});

const SHORT: Duration = Duration::from_secs(7);

#[cached(cache = TTLS, key = "default")]
fn with_default_ttl() -> u8 {
    1
}

#[cached(cache = TTLS, key = "composite", ttl = "1h30m")]
fn with_composite_ttl() -> u8 {
    2
}

#[cached(cache = TTLS, key = "millis", ttl = "1500ms")]
fn with_millisecond_ttl() -> u8 {
    3
}

#[cached(cache = TTLS, key = "expression", ttl = SHORT)]
fn with_expression_ttl() -> u8 {
    4
}

#[cached(cache = TTLS, key = "never", ttl = Ttl::Never)]
fn never_expires() -> u8 {
    5
}

#[test]
fn ttls_are_applied_as_written() {
    with_default_ttl();
    with_composite_ttl();
    with_millisecond_ttl();
    with_expression_ttl();
    never_expires();
    let engine = TTLS.engine();
    assert!(about(remaining(engine, "default"), Duration::from_secs(42)));
    assert!(about(
        remaining(engine, "composite"),
        Duration::from_secs(5400)
    ));
    let millis = remaining(engine, "millis");
    assert!(millis <= Duration::from_millis(1550) && millis > Duration::from_millis(500));
    assert!(about(remaining(engine, "expression"), SHORT));
    assert_eq!(
        engine.remaining_ttl("never").ok().flatten(),
        Some(Remaining::Never)
    );
}

// --- Key templates --------------------------------------------------------------------------

static KEYS: Cache = LazyLock::new(new_cache);

#[derive(Debug)]
struct Point {
    x: i32,
    y: i32,
}

#[cached(cache = KEYS, key = "debug:{name:?}:{n:03}:{{literal}}")]
fn formatted(name: &str, n: u32) -> String {
    format!("{name}{n}")
}

#[cached(cache = KEYS, key = "fields:{point.x}:{point.y}:{pair.1}")]
fn fields(point: &Point, pair: (u8, u8)) -> i64 {
    i64::from(point.x) * i64::from(point.y) + i64::from(pair.1)
}

#[cached(cache = KEYS, key = "patterns:{x}:{y}:{first}")]
fn patterns(Point { x, y }: Point, (first, _): (u8, u8), _: u8) -> i32 {
    x + y + i32::from(first)
}

#[cached(cache = KEYS, key = "generic:{label}:{value}")]
fn generic<T: fmt::Display>(label: impl fmt::Display, value: T) -> String {
    format!("{label}={value}")
}

#[cached(cache = KEYS, key = "type:{r#type}")]
fn raw_identifier(r#type: &str) -> String {
    r#type.to_uppercase()
}

#[test]
fn templates_format_escape_and_reach_fields_and_patterns() {
    assert_eq!(formatted("a:b", 7), "a:b7");
    // Debug quotes strings, so `a:b` + `c` and `a` + `b:c` never share a key.
    assert!(KEYS.exists(r#"debug:"a:b":007:{literal}"#).unwrap_or(false));
    assert_eq!(fields(&Point { x: 2, y: 3 }, (0, 4)), 10);
    assert!(KEYS.exists("fields:2:3:4").unwrap_or(false));
    assert_eq!(patterns(Point { x: 1, y: 2 }, (3, 9), 0), 6);
    assert!(KEYS.exists("patterns:1:2:3").unwrap_or(false));
    assert_eq!(generic("n", 5u8), "n=5");
    assert_eq!(generic('c', "v"), "c=v");
    assert!(KEYS.exists("generic:n:5").unwrap_or(false));
    assert!(KEYS.exists("generic:c:v").unwrap_or(false));
    assert_eq!(raw_identifier("ok"), "OK");
    assert!(KEYS.exists("type:ok").unwrap_or(false));
}

// --- Single flight --------------------------------------------------------------------------

const CALLERS: usize = 8;

static FLIGHTS: Cache = LazyLock::new(new_cache);
static FLIGHT_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Holds its load until every other caller waits for it.
#[cached(cache = FLIGHTS, key = "slow:{id}")]
fn slow(id: u64) -> Result<u64, Unavailable> {
    FLIGHT_RUNS.fetch_add(1, Ordering::SeqCst);
    wait_until("the other callers to wait", || {
        FLIGHTS.stats().coalesced_waits >= (CALLERS - 1) as u64
    });
    Ok(id * 10)
}

#[test]
fn concurrent_calls_with_one_key_run_the_body_once() {
    let barrier = Barrier::new(CALLERS);
    let results: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..CALLERS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    slow(3)
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().ok()).collect()
    });
    assert!(results.iter().all(|r| *r == Some(Ok(30))), "{results:?}");
    assert_eq!(FLIGHT_RUNS.load(Ordering::SeqCst), 1);
}

static FAILING: Cache = LazyLock::new(new_cache);
static CLONED_RUNS: AtomicUsize = AtomicUsize::new(0);
static UNCLONED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = FAILING, key = "cloned")]
fn fails_with_a_clone_error() -> Result<u64, Unavailable> {
    CLONED_RUNS.fetch_add(1, Ordering::SeqCst);
    wait_until("the other callers to wait", || {
        FAILING.stats().coalesced_waits >= (CALLERS - 1) as u64
    });
    Err(Unavailable("down".into()))
}

/// An error that cannot be cloned.
#[derive(Debug, PartialEq)]
struct Opaque(u64);

#[cached(cache = FAILING, key = "uncloned")]
fn fails_with_an_opaque_error() -> Result<u64, Opaque> {
    let run = UNCLONED_RUNS.fetch_add(1, Ordering::SeqCst) as u64;
    if run == 0 {
        wait_until("the other callers to wait", || {
            FAILING.stats().coalesced_waits >= 2 * (CALLERS - 1) as u64
        });
    }
    Err(Opaque(run))
}

fn together<T: Send>(call: impl Fn() -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(CALLERS);
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..CALLERS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    call()
                })
            })
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().unwrap_or_else(|_| panic!("a caller panicked")))
            .collect()
    })
}

#[test]
fn a_failed_load_reaches_the_waiters_when_its_error_can_be_cloned() {
    let results = together(fails_with_a_clone_error);
    assert!(
        results
            .iter()
            .all(|r| *r == Err(Unavailable("down".into())))
    );
    assert_eq!(
        CLONED_RUNS.load(Ordering::SeqCst),
        1,
        "one run for every caller"
    );

    // An error that cannot be copied: each waiter runs the body itself and gets its own.
    let mut errors: Vec<u64> = together(fails_with_an_opaque_error)
        .into_iter()
        .map(|r| r.err().map_or(u64::MAX, |Opaque(run)| run))
        .collect();
    errors.sort_unstable();
    assert_eq!(errors, (0..CALLERS as u64).collect::<Vec<_>>());
}

// --- Recursion ------------------------------------------------------------------------------

static FIB: Cache = LazyLock::new(new_cache);

#[cached(cache = FIB, key = "fib:{n}", ttl = "1h")]
fn fib(n: u64) -> u64 {
    if n < 2 { n } else { fib(n - 1) + fib(n - 2) }
}

#[test]
fn a_recursive_function_memoizes_its_own_calls() {
    assert_eq!(fib(80), 23_416_728_348_467_685);
    assert_eq!(FIB.stats().loads, 81);
}

// --- Cache errors never change what the function returns -------------------------------------

#[derive(Clone)]
struct Service {
    cache: TypedCache<FlakyEngine>,
    runs: Arc<AtomicUsize>,
    absorbed: Arc<Mutex<Vec<String>>>,
}

impl Service {
    fn new(cache: TypedCache<FlakyEngine>) -> Self {
        Self {
            cache,
            runs: Arc::default(),
            absorbed: Arc::default(),
        }
    }

    fn note(&self, error: &CacheError) {
        self.absorbed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(error.to_string());
    }

    fn absorbed(&self) -> usize {
        self.absorbed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }

    #[cached(cache = self.cache, key = "name:{id}", on_error = |e| self.note(e))]
    fn name(&self, id: u64) -> String {
        self.runs.fetch_add(1, Ordering::SeqCst);
        format!("name {id}")
    }

    #[cached(cache = self.cache, key = "user:{name}", on_error = |e| self.note(e))]
    fn by_name(&self, name: &str) -> Result<usize, Unavailable> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(name.len())
    }

    #[cached(cache = self.cache, key = "maybe:{id}", none_ttl = "1m")]
    fn maybe(&self, id: u64) -> Option<u64> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        (id > 0).then_some(id)
    }
}

#[test]
fn a_failing_backend_runs_the_body_and_returns_its_value() {
    let engine = FlakyEngine::new();
    let hooked = Arc::new(AtomicUsize::new(0));
    let counted = hooked.clone();
    // Fail closed: the typed cache returns backend errors, and reports them to its hook.
    let cache = TypedCache::builder(engine.clone())
        .on_backend_error(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let service = Service::new(cache);

    engine.fail_reads(true);
    engine.fail_writes(true);
    assert_eq!(service.name(1), "name 1");
    assert_eq!(service.name(1), "name 1");
    assert_eq!(service.runs(), 2, "each call runs the body once");
    assert_eq!(service.absorbed(), 2, "on_error sees each absorbed error");
    assert!(hooked.load(Ordering::SeqCst) >= 2, "on_backend_error too");
    assert_eq!(service.maybe(0), None);
    assert_eq!(service.maybe(5), Some(5));

    // Reads work, the store fails: the value the body returned is returned, not run again.
    engine.fail_reads(false);
    let runs = service.runs();
    assert_eq!(service.name(2), "name 2");
    assert_eq!(service.runs(), runs + 1);
    assert_eq!(service.maybe(0), None);
    assert_eq!(service.runs(), runs + 2);

    engine.fail_writes(false);
    assert_eq!(service.name(3), "name 3");
    assert_eq!(service.name(3), "name 3");
    assert_eq!(
        service.runs(),
        runs + 3,
        "cached again once the backend is back"
    );
}

#[test]
fn a_value_the_cache_refuses_is_still_returned() {
    // Entries of at most 4 KiB: a larger value is refused with ValueTooLarge.
    let engine = InMemoryEngine::builder()
        .shards(1)
        .max_bytes(4096)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let cache = TypedCache::new(engine);
    let runs = AtomicUsize::new(0);
    let absorbed = Mutex::new(Vec::new());
    struct Big<'a> {
        cache: TypedCache<InMemoryEngine>,
        runs: &'a AtomicUsize,
        absorbed: &'a Mutex<Vec<String>>,
    }
    impl Big<'_> {
        #[cached(cache = self.cache, key = "big:{n}", on_error = |e: &CacheError| {
            self.absorbed.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        })]
        fn big(&self, n: usize) -> Vec<u8> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            vec![7; n]
        }
    }
    let big = Big {
        cache,
        runs: &runs,
        absorbed: &absorbed,
    };
    assert_eq!(big.big(10_000).len(), 10_000);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body ran once");
    let absorbed = absorbed.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(absorbed.len(), 1);
    assert!(absorbed[0].contains("exceeds"), "{}", absorbed[0]);
}

#[test]
fn a_key_that_breaks_the_key_rule_runs_the_body_uncached() {
    let service = Service::new(TypedCache::new(FlakyEngine::new()));
    assert_eq!(service.by_name("Ada Lovelace"), Ok(12));
    assert_eq!(service.by_name("Ada Lovelace"), Ok(12));
    assert_eq!(service.runs(), 2);
    let absorbed = service.absorbed.lock().unwrap_or_else(|e| e.into_inner());
    assert_eq!(absorbed.len(), 2);
    assert!(absorbed[0].starts_with("invalid key"), "{}", absorbed[0]);
}

static PANICS: Cache = LazyLock::new(new_cache);
static PANIC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = PANICS, key = "panics")]
fn panics_once() -> u8 {
    if PANIC_RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
        panic!("first run");
    }
    9
}

#[test]
fn a_panicking_body_panics_its_caller_and_caches_nothing() {
    assert!(std::panic::catch_unwind(panics_once).is_err());
    assert_eq!(panics_once(), 9);
    assert_eq!(panics_once(), 9);
    assert_eq!(PANIC_RUNS.load(Ordering::SeqCst), 2);
}

// --- A service generic over its engine --------------------------------------------------------

struct Catalog<E> {
    cache: Arc<TypedCache<E>>,
}

impl<E: CacheEngine> Catalog<E> {
    #[cached(cache = self.cache, key = "price:{sku:?}", ttl = "1m")]
    fn price(&self, sku: &str) -> Result<u64, Unavailable> {
        if sku.is_empty() {
            return Err(Unavailable("no sku".into()));
        }
        Ok(sku.len() as u64 * 100)
    }
}

#[test]
fn a_method_of_a_generic_impl_through_an_arc() {
    let catalog = Catalog {
        cache: Arc::new(new_cache()),
    };
    assert_eq!(catalog.price("lamp"), Ok(400));
    assert_eq!(catalog.price("lamp"), Ok(400));
    assert_eq!(catalog.price(""), Err(Unavailable("no sku".into())));
    assert_eq!(
        catalog.cache.get::<u64>(r#"price:"lamp""#).ok().flatten(),
        Some(400)
    );
    assert_eq!(catalog.cache.stats().loads, 2);
}
