//! A caching reverse proxy in front of one HTTP origin, with the `reverse_proxy` preset.
//!
//! ```text
//! cargo run --release --example http_proxy -- 127.0.0.1:8080 http://127.0.0.1:8000
//! # the layer's defaults instead of the reverse-proxy preset:
//! cargo run --release --example http_proxy -- 127.0.0.1:8080 http://127.0.0.1:8000 defaults
//! curl -i http://127.0.0.1:8080/some/path   # Cache-Status tells a hit from a miss
//! ```
//!
//! It is the proxy the HTTP cache conformance suite runs against (docs/HTTP-CACHE-TESTS.md).

use std::sync::Arc;

use cache_examples::http_proxy::{PROXY_CAPACITY, Settings, proxy};
use cache_local::InMemoryEngine;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let origin = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8000".into());
    let settings = match args.next().as_deref() {
        None | Some("reverse-proxy") => Settings::ReverseProxy,
        Some("defaults") => Settings::Defaults,
        Some(other) => {
            return Err(format!("unknown settings {other:?}: reverse-proxy or defaults").into());
        }
    };
    let engine = Arc::new(
        InMemoryEngine::builder()
            .max_capacity(PROXY_CAPACITY)
            .build()?,
    );
    let (router, layer) = proxy(&origin, engine, settings)?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("caching {origin} on http://{listen} with {settings:?} (Ctrl-C to stop)");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    println!("{:?}", layer.stats());
    Ok(())
}
