//! The example service against a real Redis, through a real HTTP client: the second request for
//! a user is served from the cache, and concurrent first requests share one lookup.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::atomic::Ordering;

use cache_examples::service::{AppState, User, app};
use cache_redis::RedisEngine;
use cache_tests::servers::{ServerKind, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_request_is_served_from_the_cache() {
    let Some(server) = TestServer::shared(ServerKind::Redis) else {
        return;
    };
    let engine = RedisEngine::async_builder()
        .url(server.url())
        .namespace("axum-test")
        .build()
        .unwrap();
    let state = AppState::new(engine);
    let lookups = state.lookups.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let service = tokio::spawn(async move { axum::serve(listener, app(state)).await });

    let client = reqwest::Client::new();
    let url = format!("http://{address}/users/7");
    let first: User = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(first.id, 7);
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let second: User = response.json().await.unwrap();
    assert_eq!(second, first);
    assert_eq!(lookups.load(Ordering::SeqCst), 1, "served from the cache");

    // Eight concurrent first requests for another user: one lookup.
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), format!("http://{address}/users/8"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().json::<User>().await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().id, 8);
    }
    assert_eq!(
        lookups.load(Ordering::SeqCst),
        2,
        "one lookup for eight requests"
    );
    service.abort();
}
