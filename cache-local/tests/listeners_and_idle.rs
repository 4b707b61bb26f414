//! Removal listeners, time-to-idle and iteration on the local engines.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::clock::ManualClock;
use cache_core::{Bytes, CacheEngine, CacheError, Remaining, Ttl};
use cache_local::{InMemoryEngine, RemovalCause, ThreadLocalEngine};

type Log = Arc<Mutex<Vec<(String, Bytes, RemovalCause)>>>;

fn logged() -> (
    Log,
    impl Fn(&str, &Bytes, RemovalCause) + Send + Sync + 'static,
) {
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    (log, move |key: &str, value: &Bytes, cause| {
        sink.lock()
            .unwrap()
            .push((key.to_string(), value.clone(), cause));
    })
}

fn causes(log: &Log) -> Vec<(String, RemovalCause)> {
    log.lock()
        .unwrap()
        .iter()
        .map(|(k, _, c)| (k.clone(), *c))
        .collect()
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn every_cause_is_reported_with_the_callers_key_and_value() {
    let clock = Arc::new(ManualClock::new());
    let (log, listener) = logged();
    let cache = InMemoryEngine::builder()
        .clock(clock.clone())
        .max_capacity(1_000)
        .removal_listener(listener)
        .build()
        .unwrap();

    cache.set("user:1", b("a"), Ttl::Default).unwrap();
    cache.set("user:1", b("b"), Ttl::Default).unwrap();
    assert_eq!(
        log.lock().unwrap()[0],
        ("user:1".to_string(), b("a"), RemovalCause::Replaced)
    );
    assert!(cache.delete("user:1").unwrap());
    cache.set("eq", b("x"), Ttl::Default).unwrap();
    assert!(cache.delete_if_equals("eq", b"x").unwrap());
    cache.set("touched", b("x"), Ttl::Default).unwrap();
    assert!(cache.touch("touched", Ttl::After(Duration::ZERO)).unwrap());
    cache.set("many", b("x"), Ttl::Default).unwrap();
    assert_eq!(cache.delete_many(&["many", "absent"]).unwrap(), 1);
    cache.set("short", b("x"), Ttl::After(SECOND)).unwrap();
    clock.advance(2 * SECOND);
    assert_eq!(cache.get("short").unwrap(), None);
    // An expired entry overwritten is reported as expired.
    cache.set("stale", b("old"), Ttl::After(SECOND)).unwrap();
    clock.advance(2 * SECOND);
    cache.set("stale", b("new"), Ttl::Default).unwrap();
    cache.set("kept", b("x"), Ttl::Default).unwrap();
    cache.clear().unwrap();

    let log_now = causes(&log);
    assert_eq!(
        log_now[..7],
        [
            ("user:1".to_string(), RemovalCause::Replaced),
            ("user:1".to_string(), RemovalCause::Removed),
            ("eq".to_string(), RemovalCause::Removed),
            ("touched".to_string(), RemovalCause::Removed),
            ("many".to_string(), RemovalCause::Removed),
            ("short".to_string(), RemovalCause::Expired),
            ("stale".to_string(), RemovalCause::Expired),
        ]
    );
    // Clearing reports the two entries left, in no particular order.
    assert_eq!(log_now.len(), 9);
    assert!(
        log_now[7..]
            .iter()
            .all(|(_, c)| *c == RemovalCause::Cleared)
    );
    let mut cleared: Vec<String> = causes(&log)[7..].iter().map(|(k, _)| k.clone()).collect();
    cleared.sort();
    assert_eq!(cleared, ["kept", "stale"]);
    assert_eq!(cache.listener_panics(), 0);
}

#[test]
fn operations_that_remove_nothing_report_nothing() {
    let (log, listener) = logged();
    let cache = InMemoryEngine::builder()
        .removal_listener(listener)
        .build()
        .unwrap();
    assert!(cache.add("a", b("1"), Ttl::Default).unwrap());
    assert!(!cache.add("a", b("2"), Ttl::Default).unwrap());
    assert_eq!(cache.increment("n", 1).unwrap(), 1);
    assert_eq!(cache.increment("n", 9).unwrap(), 10);
    assert!(!cache.delete("absent").unwrap());
    assert!(!cache.delete_if_equals("a", b"other").unwrap());
    assert!(cache.touch("a", Ttl::After(SECOND * 60)).unwrap());
    assert_eq!(cache.get("a").unwrap(), Some(b("1")));
    assert!(causes(&log).is_empty(), "{:?}", causes(&log));
}

#[test]
fn evictions_for_size_are_reported_once_each() {
    let (log, listener) = logged();
    let cache = InMemoryEngine::builder()
        .max_capacity(100)
        .removal_listener(listener)
        .build()
        .unwrap();
    for i in 0..1_000 {
        cache.set(&format!("k{i}"), b("v"), Ttl::Default).unwrap();
    }
    let log = causes(&log);
    assert_eq!(log.len() as u64 + cache.entry_count(), 1_000);
    assert!(log.iter().all(|(_, c)| *c == RemovalCause::Size));
    let mut keys: Vec<&String> = log.iter().map(|(k, _)| k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), log.len(), "an entry was reported twice");
}

#[test]
fn the_listener_runs_outside_the_lock_and_may_use_the_engine() {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let slot: Arc<Mutex<Option<InMemoryEngine>>> = Arc::default();
        let inside = Arc::clone(&slot);
        let cache = InMemoryEngine::builder()
            .removal_listener(move |key, value, _| {
                // Reads and writes the same shard: a listener called under its lock would
                // deadlock here.
                if let Some(cache) = inside.lock().unwrap().as_ref() {
                    let _ = cache.get(key);
                    let _ = cache.set(&format!("echo:{key}"), value.clone(), Ttl::Default);
                }
            })
            .shards(1)
            .build()
            .unwrap();
        *slot.lock().unwrap() = Some(cache.clone());
        cache.set("a", b("1"), Ttl::Default).unwrap();
        cache.delete("a").unwrap();
        let echoed = cache.get("echo:a").unwrap();
        *slot.lock().unwrap() = None;
        done.send(echoed).unwrap();
    });
    let echoed = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("the listener deadlocked");
    assert_eq!(echoed, Some(b("1")));
}

#[test]
fn a_panicking_listener_is_counted_and_the_operation_still_succeeds() {
    let cache = InMemoryEngine::builder()
        .removal_listener(|key, _, _| {
            if key.starts_with("boom") {
                panic!("listener failure for {key}");
            }
        })
        .build()
        .unwrap();
    cache.set("boom1", b("x"), Ttl::Default).unwrap();
    cache.set("boom2", b("x"), Ttl::Default).unwrap();
    cache.set("fine", b("x"), Ttl::Default).unwrap();
    assert_eq!(cache.delete_many(&["boom1", "boom2", "fine"]).unwrap(), 3);
    assert_eq!(cache.listener_panics(), 2);
    assert!(!cache.exists("boom1").unwrap());
}

#[test]
fn thread_local_engine_reports_too() {
    let clock = Arc::new(ManualClock::new());
    let (log, listener) = logged();
    let cache = ThreadLocalEngine::builder()
        .clock(clock.clone())
        .max_capacity(10)
        .removal_listener(listener)
        .build()
        .unwrap();
    cache.set("a", b("1"), Ttl::Default).unwrap();
    cache.set("a", b("2"), Ttl::Default).unwrap();
    cache.delete("a").unwrap();
    cache.set("t", b("1"), Ttl::After(SECOND)).unwrap();
    clock.advance(2 * SECOND);
    assert!(!cache.exists("t").unwrap());
    assert_eq!(cache.increment("n", 5).unwrap(), 5);
    assert_eq!(cache.increment("n", 5).unwrap(), 10);
    assert_eq!(
        causes(&log),
        [
            ("a".to_string(), RemovalCause::Replaced),
            ("a".to_string(), RemovalCause::Removed),
            ("t".to_string(), RemovalCause::Expired),
        ]
    );
    for i in 0..20 {
        cache.set(&format!("k{i}"), b("v"), Ttl::Default).unwrap();
    }
    assert!(causes(&log).iter().any(|(_, c)| *c == RemovalCause::Size));
    cache.close().unwrap();
    assert!(
        causes(&log)
            .iter()
            .any(|(_, c)| *c == RemovalCause::Cleared)
    );
}

fn idle_engine(clock: &Arc<ManualClock>) -> InMemoryEngine {
    InMemoryEngine::builder()
        .clock(clock.clone())
        .time_to_idle(10 * SECOND)
        .default_ttl(60 * SECOND)
        .build()
        .unwrap()
}

#[test]
fn reads_keep_an_entry_alive_and_idleness_expires_it() {
    let clock = Arc::new(ManualClock::new());
    let cache = idle_engine(&clock);
    cache.set("k", b("v"), Ttl::Default).unwrap();
    for _ in 0..5 {
        clock.advance(9 * SECOND);
        assert_eq!(
            cache.get("k").unwrap(),
            Some(b("v")),
            "a read resets the idle time"
        );
    }
    // 45 s in, well past the idle time since the write, within the TTL.
    clock.advance(10 * SECOND);
    assert_eq!(cache.get("k").unwrap(), None);

    // Every reading method resets it; exists and remaining_ttl do not.
    cache.set("many", b("v"), Ttl::Default).unwrap();
    cache.set("with_ttl", b("v"), Ttl::Default).unwrap();
    cache.set("looked_at", b("v"), Ttl::Default).unwrap();
    for _ in 0..3 {
        clock.advance(6 * SECOND);
        assert_eq!(cache.get_many(&["many"]).unwrap(), [Some(b("v"))]);
        assert!(cache.get_with_ttl("with_ttl").unwrap().is_some());
        let _ = cache.exists("looked_at").unwrap();
        let _ = cache.remaining_ttl("looked_at").unwrap();
    }
    assert!(cache.exists("many").unwrap());
    assert!(cache.exists("with_ttl").unwrap());
    assert!(
        !cache.exists("looked_at").unwrap(),
        "exists must not reset the idle time"
    );
}

#[test]
fn the_remaining_ttl_is_whichever_ends_first() {
    let clock = Arc::new(ManualClock::new());
    let cache = idle_engine(&clock);
    cache.set("idle_first", b("v"), Ttl::Default).unwrap();
    cache
        .set("ttl_first", b("v"), Ttl::After(4 * SECOND))
        .unwrap();
    cache.set("forever", b("v"), Ttl::Never).unwrap();
    assert_eq!(
        cache.remaining_ttl("idle_first").unwrap(),
        Some(Remaining::After(10 * SECOND))
    );
    assert_eq!(
        cache.remaining_ttl("ttl_first").unwrap(),
        Some(Remaining::After(4 * SECOND))
    );
    // No TTL, but the idle time still ends it.
    assert_eq!(
        cache.remaining_ttl("forever").unwrap(),
        Some(Remaining::After(10 * SECOND))
    );
    clock.advance(3 * SECOND);
    let (_, left) = cache.get_with_ttl("forever").unwrap().unwrap();
    assert_eq!(left, Remaining::After(10 * SECOND));
}

#[test]
fn idle_entries_are_swept_and_reported() {
    let clock = Arc::new(ManualClock::new());
    let (log, listener) = logged();
    let cache = InMemoryEngine::builder()
        .clock(clock.clone())
        .time_to_idle(10 * SECOND)
        .removal_listener(listener)
        .build()
        .unwrap();
    for i in 0..50 {
        cache.set(&format!("k{i}"), b("v"), Ttl::Never).unwrap();
    }
    clock.advance(11 * SECOND);
    cache.remove_expired();
    assert_eq!(cache.entry_count(), 0);
    assert_eq!(causes(&log).len(), 50);
    assert!(
        causes(&log)
            .iter()
            .all(|(_, c)| *c == RemovalCause::Expired)
    );
}

#[test]
fn thread_local_engine_has_an_idle_time_too() {
    let clock = Arc::new(ManualClock::new());
    let cache = ThreadLocalEngine::builder()
        .clock(clock.clone())
        .time_to_idle(10 * SECOND)
        .build()
        .unwrap();
    cache.set("k", b("v"), Ttl::Never).unwrap();
    clock.advance(9 * SECOND);
    assert!(cache.get("k").unwrap().is_some());
    clock.advance(9 * SECOND);
    assert!(cache.get("k").unwrap().is_some());
    clock.advance(11 * SECOND);
    assert!(cache.get("k").unwrap().is_none());
    assert_eq!(cache.capabilities().time_to_idle, Some(10 * SECOND));
}

#[test]
fn a_zero_or_endless_idle_time_is_refused() {
    for idle in [Duration::ZERO, Duration::from_secs(200 * 365 * 24 * 3600)] {
        let err = InMemoryEngine::builder()
            .time_to_idle(idle)
            .build()
            .unwrap_err();
        assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
        let err = ThreadLocalEngine::builder()
            .time_to_idle(idle)
            .build()
            .unwrap_err();
        assert!(matches!(err, CacheError::InvalidConfig { .. }), "{err}");
    }
}

/// The iteration both engines offer, to run one test on each.
trait Iterable: CacheEngine {
    fn keys(&self) -> cache_core::Result<Vec<String>>;
    fn entries(&self) -> cache_core::Result<Vec<(String, Bytes)>>;
    fn invalidate_if(&self, doomed: impl FnMut(&str, &Bytes) -> bool) -> cache_core::Result<u64>;
}

macro_rules! iterable {
    ($engine:ty) => {
        impl Iterable for $engine {
            fn keys(&self) -> cache_core::Result<Vec<String>> {
                <$engine>::keys(self)
            }
            fn entries(&self) -> cache_core::Result<Vec<(String, Bytes)>> {
                <$engine>::entries(self)
            }
            fn invalidate_if(
                &self,
                doomed: impl FnMut(&str, &Bytes) -> bool,
            ) -> cache_core::Result<u64> {
                <$engine>::invalidate_if(self, doomed)
            }
        }
    };
}
iterable!(InMemoryEngine);
iterable!(ThreadLocalEngine);

#[test]
fn keys_entries_and_invalidate_if() {
    let clock = Arc::new(ManualClock::new());
    let (log, listener) = logged();
    let cache = InMemoryEngine::builder()
        .clock(clock.clone())
        .max_capacity(10_000)
        .shards(8)
        .removal_listener(listener)
        .build()
        .unwrap();
    iteration(&cache, &clock, &log);
}

#[test]
fn thread_local_keys_entries_and_invalidate_if_see_the_calling_thread_only() {
    let clock = Arc::new(ManualClock::new());
    let (log, listener) = logged();
    let cache = ThreadLocalEngine::builder()
        .clock(clock.clone())
        .max_capacity(10_000)
        .removal_listener(listener)
        .build()
        .unwrap();
    let (stored, on_stored) = mpsc::channel();
    let (go, on_go) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let cache = &cache;
        // Another thread's entries, which this thread neither lists nor removes.
        s.spawn(move || {
            cache.set("user:0", b("other"), Ttl::Default).unwrap();
            cache.set("theirs", b("x"), Ttl::Default).unwrap();
            stored.send(()).unwrap();
            on_go.recv().unwrap();
            assert_eq!(cache.get("user:0").unwrap(), Some(b("other")));
            let mut keys = cache.keys().unwrap();
            keys.sort();
            assert_eq!(keys, ["theirs", "user:0"]);
        });
        on_stored.recv().unwrap();
        iteration_until_close(cache, &clock, &log);
        go.send(()).unwrap();
    });
    cache.close().unwrap();
    assert!(matches!(cache.keys(), Err(CacheError::Closed { .. })));
}

fn iteration<E: Iterable>(cache: &E, clock: &ManualClock, log: &Log) {
    iteration_until_close(cache, clock, log);
    cache.close().unwrap();
    assert!(matches!(cache.keys(), Err(CacheError::Closed { .. })));
}

/// Lists and removes by predicate on 100 live entries and one expired one.
fn iteration_until_close<E: Iterable>(cache: &E, clock: &ManualClock, log: &Log) {
    for i in 0..100 {
        cache
            .set(&format!("user:{i}"), b(&i.to_string()), Ttl::Default)
            .unwrap();
    }
    cache.set("gone", b("x"), Ttl::After(SECOND)).unwrap();
    clock.advance(2 * SECOND);

    let mut keys = cache.keys().unwrap();
    keys.sort();
    assert_eq!(keys.len(), 100, "expired keys are not listed");
    assert!(keys.iter().all(|k| k.starts_with("user:")));
    let entries = cache.entries().unwrap();
    assert_eq!(entries.len(), 100);
    for (key, value) in &entries {
        assert_eq!(key.strip_prefix("user:").unwrap().as_bytes(), &value[..]);
    }

    let even = cache
        .invalidate_if(|_, value| {
            std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u32>().ok())
                .is_some_and(|n| n % 2 == 0)
        })
        .unwrap();
    assert_eq!(even, 50);
    assert_eq!(cache.keys().unwrap().len(), 50);
    assert!(cache.get("user:3").unwrap().is_some());
    assert!(cache.get("user:4").unwrap().is_none());
    let removed = causes(log)
        .iter()
        .filter(|(k, c)| k.starts_with("user:") && *c == RemovalCause::Removed)
        .count();
    assert_eq!(removed, 50);
    assert!(
        causes(log)
            .iter()
            .any(|(k, c)| k == "gone" && *c == RemovalCause::Expired)
    );
}
