//! Leases across processes, on a real Redis (and memcached): two real processes x 32 callers on
//! one cold key run the loader exactly once; a crashed leader's lease expires and a waiter
//! takes over; a waiter gives up after its bound; a leader that outlived its lease does not
//! delete the next leader's; a failed loader releases the lease at once; the async face.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_redis::RedisEngine;
#[cfg(feature = "tokio")]
use cache_serializer::AsyncTypedCache;
use cache_serializer::{LEASE_KEY_PREFIX, Lease, LoadError, TypedCache};
use cache_tests::servers::{ServerKind, TestServer};

const CHILD: &str = "CACHE_SERIALIZER_LEASE_CHILD";
const CALLERS: usize = 32;

fn engine(url: &str, namespace: &str) -> RedisEngine {
    RedisEngine::builder()
        .url(url)
        .namespace(namespace)
        .build()
        .unwrap()
}

fn leased(url: &str, namespace: &str, lease: Lease) -> TypedCache<RedisEngine> {
    TypedCache::builder(engine(url, namespace))
        .lease(lease)
        .build()
        .unwrap()
}

fn minutes(n: u64) -> Ttl {
    Ttl::After(Duration::from_secs(60 * n))
}

/// 32 threads of one process ask for the cold key at once; the loader counts its runs in
/// Redis (shared by both processes) and takes 300 ms. Returns what every caller got.
fn callers(url: &str, start: Option<&mut dyn FnMut()>) -> Vec<String> {
    let cache = leased(url, "lease-2p", Lease::new(Duration::from_secs(10)));
    let counter = engine(url, "lease-2p-count");
    let barrier = Arc::new(Barrier::new(CALLERS + 1));
    let threads: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, counter, barrier) = (cache.clone(), counter.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache
                    .entry("cold")
                    .ttl(minutes(5))
                    .or_load(|| {
                        counter.increment("runs", 1).unwrap();
                        std::thread::sleep(Duration::from_millis(300));
                        format!("loaded by {}", std::process::id())
                    })
                    .unwrap()
            })
        })
        .collect();
    if let Some(start) = start {
        start();
    }
    barrier.wait();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn two_processes_of_32_callers_load_a_cold_key_once() {
    if let Ok(url) = std::env::var(CHILD) {
        // The second process: ready, wait for "go", run the callers, print what they got.
        println!("ready");
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
        let got = callers(&url, None);
        println!("got {}", got.join("|"));
        return;
    }
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "two_processes_of_32_callers_load_a_cold_key_once",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, server.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdin = child.stdin.take().unwrap();
    loop {
        let line = lines.next().expect("the child exited early").unwrap();
        if line.trim().ends_with("ready") {
            break;
        }
    }
    let mut go = || {
        writeln!(stdin, "go").unwrap();
        stdin.flush().unwrap();
    };
    let mine = callers(&server.url(), Some(&mut go));
    // Read to the end, so the child never writes into a closed pipe.
    let rest: Vec<String> = lines.map_while(|line| line.ok()).collect();
    let theirs = rest
        .iter()
        .find_map(|line| line.strip_prefix("got ").map(str::to_owned))
        .expect("the child printed what its callers got");
    assert!(child.wait().unwrap().success());
    let theirs: Vec<&str> = theirs.split('|').collect();
    assert_eq!((mine.len(), theirs.len()), (CALLERS, CALLERS));
    let counter = engine(&server.url(), "lease-2p-count");
    assert_eq!(
        counter.get("runs").unwrap().as_deref(),
        Some(&b"1"[..]),
        "the loader ran once for 64 callers in two processes"
    );
    assert!(
        mine.iter().all(|v| v == &mine[0]) && theirs.iter().all(|v| *v == mine[0]),
        "every caller got the one loaded value: {:?} / {:?}",
        mine[0],
        theirs[0]
    );
}

#[test]
fn a_crashed_leaders_lease_expires_and_a_waiter_takes_over() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let raw = engine(&server.url(), "lease-crash");
    let cache = leased(
        &server.url(),
        "lease-crash",
        Lease::new(Duration::from_secs(5)),
    );
    // A leader that took the lease for 500 ms and died.
    let lease_key = format!("{LEASE_KEY_PREFIX}k");
    assert!(
        raw.add(
            &lease_key,
            Bytes::from_static(b"dead leader"),
            Ttl::After(Duration::from_millis(500))
        )
        .unwrap()
    );
    let started = Instant::now();
    let v: u32 = cache.entry("k").ttl(minutes(5)).or_load(|| 7).unwrap();
    let took = started.elapsed();
    assert_eq!(v, 7);
    assert!(
        took >= Duration::from_millis(400),
        "waited for the lease: {took:?}"
    );
    assert!(
        took < Duration::from_secs(3),
        "took over once it expired: {took:?}"
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.lease_waits, stats.lease_timeouts, stats.loads),
        (1, 0, 1),
        "{stats:?}"
    );
    assert!(!raw.exists(&lease_key).unwrap(), "released after storing");
}

#[test]
fn a_waiter_gives_up_after_its_bound_and_leaves_the_lease_alone() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let raw = engine(&server.url(), "lease-bound");
    let lease = Lease::new(Duration::from_secs(30)).wait(Duration::from_millis(300));
    let cache = leased(&server.url(), "lease-bound", lease);
    let lease_key = format!("{LEASE_KEY_PREFIX}k");
    raw.set(
        &lease_key,
        Bytes::from_static(b"slow leader"),
        Ttl::After(Duration::from_secs(30)),
    )
    .unwrap();
    let started = Instant::now();
    let v: u32 = cache.entry("k").ttl(minutes(5)).or_load(|| 8).unwrap();
    let took = started.elapsed();
    assert_eq!(v, 8);
    assert!(
        (Duration::from_millis(250)..Duration::from_secs(3)).contains(&took),
        "loaded after the 300 ms bound: {took:?}"
    );
    assert_eq!(cache.stats().lease_timeouts, 1);
    assert_eq!(
        raw.get(&lease_key).unwrap().as_deref(),
        Some(&b"slow leader"[..]),
        "not ours to delete"
    );
}

#[test]
fn a_leader_that_outlived_its_lease_does_not_delete_the_next_leaders() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let raw = engine(&server.url(), "lease-outlived");
    let cache = leased(
        &server.url(),
        "lease-outlived",
        Lease::new(Duration::from_millis(200)),
    );
    let lease_key = format!("{LEASE_KEY_PREFIX}k");
    let next = raw.clone();
    let key = lease_key.clone();
    let v: u32 = cache
        .entry("k")
        .ttl(minutes(5))
        .or_load(move || {
            std::thread::sleep(Duration::from_millis(400)); // longer than the lease
            // Our lease expired; the next leader took it.
            assert!(
                next.add(
                    &key,
                    Bytes::from_static(b"next leader"),
                    Ttl::After(Duration::from_secs(30))
                )
                .unwrap()
            );
            9
        })
        .unwrap();
    assert_eq!(v, 9);
    assert_eq!(
        raw.get(&lease_key).unwrap().as_deref(),
        Some(&b"next leader"[..])
    );
}

#[test]
fn a_failed_loader_releases_its_lease_at_once() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let raw = engine(&server.url(), "lease-fail");
    let cache = leased(
        &server.url(),
        "lease-fail",
        Lease::new(Duration::from_secs(30)),
    );
    let err = cache
        .entry("k")
        .ttl(minutes(5))
        .or_try_load(|| Err::<u32, _>("db down"))
        .unwrap_err();
    assert!(matches!(err, LoadError::Loader(_)));
    assert!(!raw.exists(&format!("{LEASE_KEY_PREFIX}k")).unwrap());
    // A second process does not wait 30 s for it.
    let other = leased(
        &server.url(),
        "lease-fail",
        Lease::new(Duration::from_secs(30)),
    );
    let started = Instant::now();
    let v: u32 = other.entry("k").ttl(minutes(5)).or_load(|| 10).unwrap();
    assert_eq!(v, 10);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(other.stats().lease_waits, 0);
}

#[test]
fn over_memcached_two_caches_load_once() {
    let Some(server) = TestServer::shared(ServerKind::Memcached) else {
        return;
    };
    let connect = || {
        let engine = cache_memcached::MemcachedEngine::builder()
            .server(server.url())
            .namespace("lease")
            .build()
            .unwrap();
        TypedCache::builder(engine)
            .lease(Lease::new(Duration::from_secs(10)))
            .build()
            .unwrap()
    };
    let (a, b) = (connect(), connect());
    let runs = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (runs, barrier) = (runs.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache
                    .entry("cold")
                    .ttl(minutes(5))
                    .or_load(|| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        11u32
                    })
                    .unwrap()
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 11);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Async leases sleep on tokio's timer: the `tokio` feature.
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_two_caches_of_32_tasks_load_once() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let connect = || {
        let engine = cache_redis::RedisEngine::async_builder()
            .url(server.url())
            .namespace("lease-async")
            .build()
            .unwrap();
        AsyncTypedCache::builder(engine)
            .lease(Lease::new(Duration::from_secs(10)))
            .build()
            .unwrap()
    };
    let (a, b) = (connect(), connect());
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..2 * CALLERS)
        .map(|i| {
            let cache = if i % 2 == 0 { a.clone() } else { b.clone() };
            let runs = runs.clone();
            tokio::spawn(async move {
                cache
                    .entry("cold")
                    .ttl(minutes(5))
                    .or_load(|| async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        12u32
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 12);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(a.stats().lease_waits + b.stats().lease_waits >= 1);
}

/// A lease is released by a guard on both faces: a blocking loader that panics releases it at
/// once, on its own thread.
#[test]
fn a_panicking_loader_releases_its_lease_at_once() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let raw = engine(&server.url(), "lease-panic");
    let cache = leased(
        &server.url(),
        "lease-panic",
        Lease::new(Duration::from_secs(30)),
    );
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cache
            .entry("k")
            .ttl(minutes(5))
            .or_load(|| -> u32 { panic!("loader bug") })
    }));
    assert!(panicked.is_err());
    assert!(
        !raw.exists(&format!("{LEASE_KEY_PREFIX}k")).unwrap(),
        "the panicking loader's lease is still held"
    );
    let v: u32 = cache.entry("k").ttl(minutes(5)).or_load(|| 3).unwrap();
    assert_eq!(v, 3);
    assert_eq!(cache.stats().lease_waits, 0);
}

/// On the async face, a caller whose future is dropped while its loader runs (a timeout) does
/// not leave its lease to expire: the cache's next load that takes a lease releases it first.
#[cfg(feature = "tokio")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_a_dropped_future_does_not_keep_its_lease() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let raw = engine(&server.url(), "lease-dropped");
    let engine = cache_redis::RedisEngine::async_builder()
        .url(server.url())
        .namespace("lease-dropped")
        .build()
        .unwrap();
    let cache = AsyncTypedCache::builder(engine)
        .lease(Lease::new(Duration::from_secs(30)))
        .build()
        .unwrap();
    let lease_key = format!("{LEASE_KEY_PREFIX}slow");
    let timed_out = tokio::time::timeout(
        Duration::from_millis(300),
        cache.entry("slow").ttl(minutes(5)).or_load(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            1u32
        }),
    )
    .await;
    assert!(timed_out.is_err(), "the slow load was cut short");
    assert!(
        raw.exists(&lease_key).unwrap(),
        "the lease was taken (or this test proves nothing)"
    );
    let started = Instant::now();
    let v: u32 = cache
        .entry("other")
        .ttl(minutes(5))
        .or_load(|| async { 2 })
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert!(
        !raw.exists(&lease_key).unwrap(),
        "the dropped caller's lease was not released by the next load"
    );
    // And the key itself loads at once, without waiting 30 s for the lease.
    let v: u32 = cache
        .entry("slow")
        .ttl(minutes(5))
        .or_load(|| async { 4 })
        .await
        .unwrap();
    assert_eq!(v, 4);
    assert!(started.elapsed() < Duration::from_secs(5));
}
