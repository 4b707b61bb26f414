//! A caching reverse proxy: `HttpCacheLayer` with the `reverse_proxy` preset over an
//! `InMemoryEngine`, in front of one HTTP origin. Every request goes to the origin with its
//! method, path, query and headers unchanged; responses come back through the cache.
//!
//! This is the proxy the HTTP cache conformance suite (`http-tests/cache-tests`) is run
//! against; `docs/HTTP-CACHE-TESTS.md` says how.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::Response;
use cache_http::HttpCacheLayer;
use cache_local::InMemoryEngine;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::service_fn;

/// How many responses the proxy's cache holds.
pub const PROXY_CAPACITY: u64 = 100_000;

/// The request headers that describe the proxy's own connection with the client (RFC 9110
/// section 7.6.1), not the request: not sent on to the origin.
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
];

/// The proxy's router and its cache layer (for its statistics).
pub type Proxy = (Router, HttpCacheLayer<Arc<InMemoryEngine>>);

/// Which settings the proxy's cache layer starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settings {
    /// `HttpCacheLayer::builder(..).reverse_proxy()`: heuristic freshness, every final status
    /// storable with explicit freshness, an hour of stale-on-error.
    ReverseProxy,
    /// The layer's defaults, as a service that adds the layer without choosing anything gets.
    Defaults,
}

/// The proxy: a router whose every route forwards to `origin` (`http://host:port`) through a
/// cache layer over `engine`, with `Cache-Status` on.
///
/// # Errors
///
/// `origin` is not an `http://` URL with a host, or the layer refused the engine.
pub fn proxy(
    origin: &str,
    engine: Arc<InMemoryEngine>,
    settings: Settings,
) -> Result<Proxy, Box<dyn std::error::Error>> {
    let origin: Uri = origin.parse()?;
    if origin.scheme() != Some(&Scheme::HTTP) {
        return Err(format!("the origin {origin} is not an http:// URL").into());
    }
    let authority = origin
        .authority()
        .cloned()
        .ok_or_else(|| format!("the origin {origin} has no host"))?;
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let mut builder = HttpCacheLayer::builder(engine);
    if settings == Settings::ReverseProxy {
        builder = builder.reverse_proxy();
    }
    let layer = builder.cache_status_header(true).build()?;
    let forward = service_fn(move |request: Request| {
        let client = client.clone();
        let authority = authority.clone();
        async move { Ok::<_, Infallible>(forward(&client, authority, request).await) }
    });
    let router = Router::new().fallback_service(
        tower::ServiceBuilder::new()
            .layer(layer.clone())
            .service(forward),
    );
    Ok((router, layer))
}

/// Sends `request` to the origin at `authority`; an origin that cannot be reached is a
/// `502 Bad Gateway`.
async fn forward(
    client: &Client<HttpConnector, Body>,
    authority: Authority,
    request: Request,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let mut uri = parts.uri.into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    let Ok(uri) = Uri::from_parts(uri) else {
        return status(StatusCode::BAD_REQUEST);
    };
    parts.uri = uri;
    for name in HOP_BY_HOP {
        parts.headers.remove(name);
    }
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => response.map(Body::new),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    }
}

fn status(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-length", HeaderValue::from_static("0"));
    response
}
