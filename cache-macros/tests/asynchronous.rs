//! `#[cached]` on async functions over an `AsyncTypedCache`, on tokio.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cache_core::{CacheEngine, Remaining};
use cache_local::InMemoryEngine;
use cache_serializer::{AsyncTypedCache, cached};
use serde::{Deserialize, Serialize};

use support::FlakyEngine;

type Cache = LazyLock<AsyncTypedCache<InMemoryEngine>>;

fn new_cache() -> AsyncTypedCache<InMemoryEngine> {
    AsyncTypedCache::new(InMemoryEngine::new())
}

fn remaining(engine: &InMemoryEngine, key: &str) -> Duration {
    match CacheEngine::remaining_ttl(engine, key) {
        Ok(Some(Remaining::After(left))) => left,
        other => panic!("{key}: expected an expiry, found {other:?}"),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Unavailable;

static USERS: Cache = LazyLock::new(new_cache);
static USER_LOADS: AtomicUsize = AtomicUsize::new(0);

#[cached(cache = USERS, key = "user:{id}", ttl = "2m")]
async fn find_user(id: u64) -> User {
    USER_LOADS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1)).await;
    User {
        id,
        name: format!("user {id}"),
    }
}

#[tokio::test]
async fn an_async_function_runs_once_per_key() {
    assert_eq!(find_user(1).await.name, "user 1");
    assert_eq!(find_user(1).await.name, "user 1");
    assert_eq!(USER_LOADS.load(Ordering::SeqCst), 1);
    assert_eq!(
        USERS.get::<User>("user:1").await.ok().flatten(),
        Some(find_user(1).await)
    );
    let left = remaining(USERS.engine(), "user:1");
    assert!(left <= Duration::from_millis(120_050) && left > Duration::from_secs(110));
}

static LOADS: Cache = LazyLock::new(new_cache);
static RUNS: AtomicUsize = AtomicUsize::new(0);
const TASKS: usize = 16;

/// Holds its load until every other task waits for it.
#[cached(cache = LOADS, key = "slow:{id}")]
async fn slow(id: u64) -> Result<u64, Unavailable> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), async {
        while LOADS.stats().coalesced_waits < (TASKS - 1) as u64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .map_err(|_| Unavailable)?;
    Ok(id + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_with_one_key_run_the_body_once() {
    // Spawned: the memoized function's future is Send.
    let tasks: Vec<_> = (0..TASKS).map(|_| tokio::spawn(slow(41))).collect();
    for task in tasks {
        assert_eq!(task.await.ok(), Some(Ok(42)));
    }
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
}

struct Repository {
    cache: AsyncTypedCache<FlakyEngine>,
    queries: AtomicUsize,
}

impl Repository {
    #[cached(cache = self.cache, key = "order:{id}", ttl = 60, none_ttl = "5s")]
    async fn order(&self, id: u64) -> Result<Option<String>, Unavailable> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        match id {
            0 => Err(Unavailable),
            1 => Ok(Some("a lamp".into())),
            _ => Ok(None),
        }
    }
}

#[tokio::test]
async fn a_method_caches_ok_values_and_absences_not_errors() {
    let engine = FlakyEngine::new();
    let repository = Repository {
        cache: AsyncTypedCache::new(engine.clone()),
        queries: AtomicUsize::new(0),
    };
    for _ in 0..2 {
        assert_eq!(repository.order(1).await, Ok(Some("a lamp".into())));
        assert_eq!(repository.order(2).await, Ok(None));
        assert_eq!(repository.order(0).await, Err(Unavailable));
    }
    assert_eq!(repository.queries.load(Ordering::SeqCst), 4);
    let left = remaining(engine.inner(), "order:2");
    assert!(left <= Duration::from_millis(5050) && left > Duration::from_secs(1));

    // A failing backend: every call runs the body, and returns what it returned.
    engine.fail_reads(true);
    engine.fail_writes(true);
    assert_eq!(repository.order(1).await, Ok(Some("a lamp".into())));
    assert_eq!(repository.order(3).await, Ok(None));
    assert_eq!(repository.order(0).await, Err(Unavailable));
    assert_eq!(repository.queries.load(Ordering::SeqCst), 7);
    assert!(engine.failures() >= 3);
}

static SHARED: Cache = LazyLock::new(new_cache);

#[cached(cache = SHARED, key = "arc:{name}")]
async fn by_reference(name: &str, seen: Arc<AtomicUsize>) -> usize {
    seen.fetch_add(1, Ordering::SeqCst);
    name.len()
}

#[tokio::test]
async fn borrowed_arguments_and_unkeyed_context_arguments() {
    let seen = Arc::new(AtomicUsize::new(0));
    assert_eq!(by_reference("abc", seen.clone()).await, 3);
    assert_eq!(by_reference("abc", seen.clone()).await, 3);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}
