//! `AsyncTypedCache`: the typed API on async engines, single-flight across tasks, and
//! cancellation of the caller whose loader runs.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cache_core::{CacheError, Ttl};
use cache_local::InMemoryEngine;
use cache_redis::RedisEngine;
use cache_serializer::{AsyncTypedCache, LoadError};
use cache_tests::servers::{ServerKind, TestServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn ada() -> User {
    User {
        id: 1,
        name: "Ada".into(),
    }
}

#[tokio::test]
async fn the_typed_api_round_trips() {
    let cache = AsyncTypedCache::new(InMemoryEngine::new());
    cache.set("user:1", &ada(), Ttl::Default).await.unwrap();
    assert_eq!(cache.get::<User>("user:1").await.unwrap(), Some(ada()));
    assert_eq!(
        cache.get::<(u64, u64)>("user:1").await.unwrap(),
        None,
        "another type is a miss"
    );
    assert!(cache.exists("user:1").await.unwrap());
    cache
        .set_many(&[("a", 1u32), ("b", 2u32)], Ttl::Default)
        .await
        .unwrap();
    assert_eq!(
        cache.get_many::<u32>(&["a", "x", "b"]).await.unwrap(),
        vec![Some(1), None, Some(2)]
    );
    assert!(cache.delete("a").await.unwrap());
    cache.clear().await.unwrap();
    assert_eq!(cache.get::<u32>("b").await.unwrap(), None);
    let stats = cache.stats();
    assert_eq!(stats.sets, 3);
    assert_eq!(stats.schema_mismatches, 1);
    assert!(matches!(
        cache.set("bad key", &1u8, Ttl::Default).await,
        Err(CacheError::InvalidKey { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_one_cold_key_one_load() {
    let cache = AsyncTypedCache::new(InMemoryEngine::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (cache, runs) = (cache.clone(), Arc::clone(&runs));
        tasks.push(tokio::spawn(async move {
            cache
                .entry("cold")
                .ttl(Ttl::Default)
                .or_load(|| async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    ada()
                })
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), ada());
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the loader ran more than once"
    );
    assert_eq!(cache.stats().loads, 1);
    assert_eq!(cache.loads_in_flight(), 0);
}

/// The caller whose loader runs is cancelled mid-load (its future dropped by a timeout): the
/// waiters do not hang and do not fail; one of them loads instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_hands_over_to_a_waiter() {
    let cache = AsyncTypedCache::new(InMemoryEngine::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let leader = {
        let (cache, runs) = (cache.clone(), Arc::clone(&runs));
        tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_millis(100),
                cache.entry("slow").ttl(Ttl::Default).or_load(|| async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    ada()
                }),
            )
            .await
        })
    };
    // The waiters join while the leader's load is in flight.
    while cache.loads_in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let mut waiters = Vec::new();
    for _ in 0..16 {
        let (cache, runs) = (cache.clone(), Arc::clone(&runs));
        waiters.push(tokio::spawn(async move {
            cache
                .entry("slow")
                .ttl(Ttl::Default)
                .or_load(|| async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    ada()
                })
                .await
        }));
    }
    assert!(
        leader.await.unwrap().is_err(),
        "the leader's future was cancelled by its timeout"
    );
    for waiter in waiters {
        let result = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("a waiter hung after its leader went away");
        assert_eq!(result.unwrap().unwrap(), ada());
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the cancelled leader's load and one waiter's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_loader_reaches_every_waiter_and_is_not_cached() {
    #[derive(Debug)]
    struct Down;
    let cache = AsyncTypedCache::new(InMemoryEngine::new());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let cache = cache.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .entry("k")
                .ttl(Ttl::Default)
                .or_try_load(|| async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<User, Down>(Down)
                })
                .await
        }));
    }
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Err(LoadError::Loader(_))));
    }
    assert_eq!(cache.get::<User>("k").await.unwrap(), None, "not cached");
}

#[tokio::test]
async fn failing_open_turns_a_dead_server_into_misses() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let engine = RedisEngine::async_builder()
        .url(format!("redis://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let cache = AsyncTypedCache::builder(engine)
        .fail_open(true)
        .build()
        .unwrap();
    assert_eq!(cache.get::<User>("k").await.unwrap(), None);
    cache.set("k", &ada(), Ttl::Default).await.unwrap();
    let user = cache
        .entry("k")
        .ttl(Ttl::Default)
        .or_load(|| async { ada() })
        .await
        .unwrap();
    assert_eq!(user, ada());
    let stats = cache.stats();
    assert!(stats.failed_open_reads >= 2, "{stats:?}");
    assert!(stats.failed_open_writes >= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_real_redis_the_loader_runs_once() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let engine = RedisEngine::async_builder()
        .url(server.url())
        .namespace("async-typed")
        .build()
        .unwrap();
    let cache = AsyncTypedCache::new(engine);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (cache, runs) = (cache.clone(), Arc::clone(&runs));
        tasks.push(tokio::spawn(async move {
            cache
                .entry("report")
                .ttl(Ttl::After(Duration::from_secs(60)))
                .or_load(|| async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    ada()
                })
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), ada());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get::<User>("report").await.unwrap(), Some(ada()));
}
