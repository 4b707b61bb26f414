//! The async example service: an axum app that caches a slow lookup with
//! [`AsyncTypedCache::entry`] over Redis. The `axum_service` example runs it; its test
//! exercises it against a real Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use cache_core::Ttl;
use cache_redis::AsyncRedisEngine;
use cache_serializer::AsyncTypedCache;
use serde::{Deserialize, Serialize};

/// What the service looks up (slowly) and caches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    pub id: u64,
    /// The user's name.
    pub name: String,
}

/// The service's state: the typed cache, and how many slow lookups ran.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Users by id, over Redis.
    pub cache: AsyncTypedCache<AsyncRedisEngine>,
    /// How many times the slow lookup ran.
    pub lookups: Arc<AtomicUsize>,
}

impl AppState {
    /// State over `engine`. The cache fails open: if Redis is down, requests are slower (every
    /// one looks up) but still answered.
    pub fn new(engine: AsyncRedisEngine) -> Self {
        Self {
            // Fail-open asks nothing of the engine, so `build` cannot refuse it.
            cache: AsyncTypedCache::builder(engine)
                .fail_open(true)
                .build()
                .unwrap_or_else(|_| unreachable!("fail-open needs no optional operation")),
            lookups: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// The router: `GET /users/{id}` answers from the cache, or looks the user up (200 ms), caches
/// it for a minute and answers. Concurrent requests for one missing user share one lookup.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/users/{id}", get(user))
        .with_state(state)
}

async fn user(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<User>, (StatusCode, String)> {
    let key = format!("user:{id}");
    let lookups = Arc::clone(&state.lookups);
    state
        .cache
        .entry(&key)
        .ttl(Ttl::After(Duration::from_secs(60)))
        .or_load(|| slow_lookup(id, lookups))
        .await
        .map(Json)
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// A lookup that takes 200 ms: a database query, say.
async fn slow_lookup(id: u64, lookups: Arc<AtomicUsize>) -> User {
    lookups.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    User {
        id,
        name: format!("user {id}"),
    }
}
