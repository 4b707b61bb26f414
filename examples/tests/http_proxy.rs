//! The caching reverse proxy in front of a real axum origin, through a real HTTP client: a
//! fresh response is served from the cache, a stale one with an `ETag` is revalidated with a
//! conditional request and its 304 served as the stored 200, and an origin that fails is served
//! stale with the preset and passed on with the defaults.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use cache_examples::http_proxy::{PROXY_CAPACITY, Settings, proxy};
use cache_local::InMemoryEngine;
use tokio::task::JoinHandle;

/// What the origin saw: calls, and how many of them were conditional; `down` makes it answer
/// 503 to everything, as an origin that is failing.
#[derive(Default)]
struct Seen {
    calls: AtomicU64,
    conditional: AtomicU64,
    down: AtomicBool,
}

/// `/fresh`: an hour of freshness. `/stale`: `max-age=0` with an `ETag`, so every use after
/// the first is a revalidation; the origin answers a matching `If-None-Match` with 304.
async fn origin() -> (SocketAddr, Arc<Seen>, JoinHandle<()>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route(
            "/fresh",
            get(|State(seen): State<Arc<Seen>>| async move {
                seen.calls.fetch_add(1, Ordering::SeqCst);
                ([("cache-control", "max-age=3600")], "fresh body")
            }),
        )
        .route(
            "/stale",
            get(
                |State(seen): State<Arc<Seen>>, headers: HeaderMap| async move {
                    seen.calls.fetch_add(1, Ordering::SeqCst);
                    if seen.down.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    let tag = "\"v1\"";
                    if headers
                        .get("if-none-match")
                        .is_some_and(|value| value == tag)
                    {
                        seen.conditional.fetch_add(1, Ordering::SeqCst);
                        return (StatusCode::NOT_MODIFIED, [("etag", tag)]).into_response();
                    }
                    (
                        [("cache-control", "max-age=0"), ("etag", tag)],
                        "x".repeat(10_000),
                    )
                        .into_response()
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (address, seen, task)
}

async fn start_proxy(origin: SocketAddr, settings: Settings) -> (SocketAddr, JoinHandle<()>) {
    let engine = Arc::new(
        InMemoryEngine::builder()
            .max_capacity(PROXY_CAPACITY)
            .build()
            .unwrap(),
    );
    let (router, _layer) = proxy(&format!("http://{origin}"), engine, settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (address, task)
}

fn cache_status(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("cache-status")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn fetch(client: &reqwest::Client, url: &str) -> (StatusCode, String, String) {
    let response = client.get(url).send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let cache_status = cache_status(&response);
    (status, cache_status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_hits_revalidated_stale_entries_and_stale_on_error() {
    let (origin_address, seen, origin_task) = origin().await;
    let (address, proxy_task) = start_proxy(origin_address, Settings::ReverseProxy).await;
    let client = reqwest::Client::new();

    let url = format!("http://{address}/fresh");
    let (status, first, body) = fetch(&client, &url).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fresh body"));
    assert!(first.contains("fwd=uri-miss"), "{first}");
    let (status, second, body) = fetch(&client, &url).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fresh body"));
    assert!(second.contains("hit"), "{second}");
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        1,
        "the hit stayed in the proxy"
    );

    let url = format!("http://{address}/stale");
    let (status, _, body) = fetch(&client, &url).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 10_000));
    let (status, revalidated, body) = fetch(&client, &url).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 10_000));
    assert!(revalidated.contains("fwd=stale"), "{revalidated}");
    assert!(revalidated.contains("fwd-status=304"), "{revalidated}");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);
    assert_eq!(seen.conditional.load(Ordering::SeqCst), 1);

    // The origin fails: the preset serves the stored response rather than the 503.
    seen.down.store(true, Ordering::SeqCst);
    let (status, on_error, body) = fetch(&client, &url).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 10_000), "{on_error}");
    assert!(on_error.contains("fwd-status=503"), "{on_error}");
    proxy_task.abort();
    origin_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_defaults_a_failing_origin_is_passed_on() {
    let (origin_address, seen, origin_task) = origin().await;
    let (address, proxy_task) = start_proxy(origin_address, Settings::Defaults).await;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/stale");
    let (status, _, _) = fetch(&client, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    seen.down.store(true, Ordering::SeqCst);
    let (status, cache_status, _) = fetch(&client, &url).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{cache_status}");
    proxy_task.abort();
    origin_task.abort();
}
