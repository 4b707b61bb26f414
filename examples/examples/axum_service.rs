//! An axum service that caches a slow lookup in Redis with `AsyncTypedCache`.
//!
//! ```text
//! CACHE_REDIS_URL=redis://127.0.0.1:6379 cargo run --example axum_service
//! curl http://127.0.0.1:3000/users/7     # 200 ms: looked up, then cached
//! curl http://127.0.0.1:3000/users/7     # from the cache
//! ```
//!
//! Keys live under the namespace `axum-example`; nothing else on the server is touched.

use cache_examples::service::{AppState, app};
use cache_redis::RedisEngine;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = RedisEngine::async_builder()
        .from_env()?
        .namespace("axum-example")
        .build()?;
    let address = std::env::var("ADDRESS").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    println!("listening on http://{address}/users/7 (Ctrl-C to stop)");
    axum::serve(listener, app(AppState::new(engine)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
