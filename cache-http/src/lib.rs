//! HTTP response caching for [tower](https://docs.rs/tower) services (axum, hyper, anything
//! over `http::Request` / `http::Response`), stored in any cache-toolkit
//! [`AsyncCacheEngine`](cache_core::AsyncCacheEngine), with the rules of a **shared cache** in
//! the sense of [RFC 9111](https://www.rfc-editor.org/rfc/rfc9111).
//!
//! [`HttpCacheLayer`] stores responses to `GET` whose headers allow a shared cache to keep
//! them, serves them again (with an `Age` header) while they are fresh, answers `HEAD` from
//! them, and lets concurrent misses of one key reach the inner service once. Over an
//! `InMemoryEngine` the cache is the process's; over `AsyncRedisEngine` (or memcached) every
//! instance of the service shares it.
//!
//! # Example
//!
//! ```no_run
//! use axum::Router;
//! use axum::response::IntoResponse;
//! use axum::routing::get;
//! use cache_http::HttpCacheLayer;
//! use cache_redis::AsyncRedisEngine;
//!
//! async fn product() -> impl IntoResponse {
//!     // The handler decides what may be cached, with the standard header.
//!     ([("cache-control", "public, max-age=60")], "a product page")
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let engine = AsyncRedisEngine::builder()
//!         .url("redis://127.0.0.1:6379")
//!         .namespace("http") // every entry of the layer under `http:`
//!         .build()?;
//!     let cache = HttpCacheLayer::builder(engine)
//!         .max_body_size(512 * 1024)
//!         .key_headers(["x-tenant"])
//!         .cache_status_header(true) // x-cache: HIT / MISS
//!         .on_engine_error(|error| eprintln!("http cache: {error}"))
//!         .build()?;
//!     let app = Router::new()
//!         .route("/products/{id}", get(product))
//!         .layer(cache.clone());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     println!("{:?}", cache.stats());
//!     Ok(())
//! }
//! ```
//!
//! `cache_local::InMemoryEngine::new()` works the same way, without a server.
//!
//! # What is stored, and what is not
//!
//! | request / response | what the layer does |
//! |---|---|
//! | `GET`, status 200, 203, 204, 300, 301, 308, 404, 405, 410, 414 or 501, fresh by `s-maxage`, `max-age` or `Expires` | stored for its freshness lifetime less its age, served while fresh |
//! | `s-maxage` and `max-age` both present | `s-maxage` decides (this is a shared cache) |
//! | no explicit freshness | stored only if [`default_ttl`](HttpCacheBuilder::default_ttl) is set (heuristic freshness of your choosing); not by default |
//! | `Cache-Control: no-store`, `private` or `no-cache` (with or without a field list) | never stored (`no-cache` needs revalidation, which this cache does not do) |
//! | `Set-Cookie` in the response | never stored |
//! | `Vary: *` | never stored |
//! | `Vary: a, b` | stored per variant: requests differing in `a` or `b` get different entries |
//! | request with `Authorization`, response `public` or `s-maxage` | stored, and shared with every request (what those directives mean) |
//! | request with `Authorization`, response `must-revalidate` | stored, served only to requests with the same `Authorization` value |
//! | request with `Authorization`, anything else | never stored (RFC 9111 section 3.5) |
//! | any other status (201, 206, 302, 307, other 4xx and 5xx) | never stored, even with explicit freshness |
//! | malformed or conflicting `max-age`, an `Age` past the lifetime | stale: not stored |
//! | body over [`max_body_size`](HttpCacheBuilder::max_body_size) (1 MiB), trailers, a body error | not stored; streamed to the client whole |
//! | `HEAD` | served from a stored `GET` (same headers, no body); a `HEAD` miss is passed on and its response not stored |
//! | `POST`, `PUT`, `PATCH`, `DELETE` (unsafe methods) | passed on; a 2xx or 3xx answer removes the stored entry of the same URI (section 4.4) |
//! | `OPTIONS`, `TRACE` | passed on untouched |
//! | request `Cache-Control: no-cache` or `max-age=0` | not answered from the cache; the new response replaces the stored one |
//! | request `no-store` | may be answered from the cache; its own response is not stored |
//! | request `max-age=N`, `min-fresh=N` | stored responses older than `N`, or fresh for less than `N`, are not used |
//! | request `only-if-cached` | `504 Gateway Timeout` on a miss |
//!
//! Request directives can be ignored with
//! [`honour_request_directives(false)`](HttpCacheBuilder::honour_request_directives), so that
//! clients cannot make every request reach the inner service. `Pragma` is ignored.
//!
//! A hit is the stored status, headers and body, with `Age` (seconds since the response was
//! generated, including an `Age` it arrived with) and, if configured, `x-cache: HIT`.
//! Connection-specific headers (`Connection` and what it lists, `Transfer-Encoding`,
//! `Keep-Alive`, `TE`, `Trailer`, `Upgrade`) are not stored, and `Content-Length` is set
//! (except on 204).
//!
//! # Keys
//!
//! A key is `http:` and the SHA-256 (in hex) of the request's identity: method class (`GET`
//! and `HEAD` share), scheme and authority when the URI has them, otherwise the `Host`
//! header (case-insensitive), path and query (as sent: `?a=1&b=2` and `?b=2&a=1` differ), the
//! values of the [`key_headers`](HttpCacheBuilder::key_headers), and for per-user entries a
//! digest of the `Authorization` value. Any URL or header value thus gives a key that obeys
//! the engine's key rule; the engine's namespace is added in front as for every key. The
//! digest is cut to fit `capabilities().max_key_len` (64 hex digits when there is room, never
//! fewer than 32: [`build`](HttpCacheBuilder::build) refuses an engine with less room).
//! Credentials are never stored or sent to the engine in the clear.
//!
//! With `Vary`, the primary key holds the list of varied names and a generation; each variant
//! is stored under a key that adds the request's values of those names (absent and empty
//! differ; surrounding whitespace does not). A lookup reads the list, then the variant. An
//! invalidation deletes the list; the next list gets a new generation, so variants stored
//! before the invalidation are never found again (they expire on their own).
//!
//! Other request headers are not part of the key. A response that depends on one (a cookie,
//! `X-Forwarded-Host`, a tenant header) must name it in `Vary`, say `private`, or the header
//! must be one of the key headers; otherwise one client's response is served to others.
//!
//! # Single-flight
//!
//! Concurrent misses of one key (and one user, with `Authorization`) in one process reach the
//! inner service once: the others wait, then get the stored response if it is the variant
//! they asked for, and ask the inner service themselves otherwise (a response that may not be
//! stored, another variant). Waiting is cancellation-safe: if the request that reached the
//! inner service is dropped or fails, one waiter takes its place. Waiters wait as long as it
//! takes; put a timeout inside the layer if the inner service can hang. Requests with
//! `Cache-Control: no-cache`, `HEAD` and `no-store` requests do not wait for others.
//!
//! # Limits and failures
//!
//! - **Bodies**: read up to `max_body_size` (1 MiB by default, and never more than the
//!   engine's `max_value_size`); a body announced larger is streamed from the start, and one
//!   that grows past the limit is streamed on from where reading stopped: never buffered
//!   beyond the limit, never cut.
//! - **TTLs**: the freshness lifetime less the response's age, less the engine's
//!   `ttl_resolution` (so an engine that keeps entries a little longer than asked never serves
//!   a stale one; on memcached, with its 2 s resolution, a `max-age` of 2 s or less is not
//!   stored), capped by [`max_ttl`](HttpCacheBuilder::max_ttl) and the engine's `max_ttl`.
//!   Age on a hit is computed from the engine's remaining TTL, so processes never compare
//!   clocks.
//! - **Stored format**: a small versioned binary format (status, headers, body, age, TTL).
//!   Bytes under a key that are not exactly such an entry (another program's, a damaged
//!   value, a future version) are a miss and counted in
//!   [`HttpCacheStats::corrupt_entries`], never a panic; no length in them is trusted
//!   before it is checked against the bytes there.
//! - **Engine errors** fail open: a failed read is a miss, a failed write leaves the response
//!   unstored, a failed invalidation is skipped; each is counted in
//!   [`HttpCacheStats::engine_errors`] and passed to
//!   [`on_engine_error`](HttpCacheBuilder::on_engine_error).
//!
//! # Not implemented
//!
//! Honestly listed, so that nobody relies on them:
//!
//! - **Revalidation**: the cache never sends conditional requests (`If-None-Match`,
//!   `If-Modified-Since`) to the inner service. A stale entry is simply gone, and
//!   `no-cache` responses are not stored at all.
//! - **Serving stale content**: no `stale-while-revalidate` or `stale-if-error` (RFC 5861);
//!   the request directive `max-stale` is ignored (nothing stale is served).
//! - **Answering conditional requests**: a hit is always the full stored response, never a
//!   `304` (which is valid, only larger). A conditional request that misses goes to the inner
//!   service as it is; a `304` it gets is passed on and not stored.
//! - **Ranges**: `206` is never stored; a `Range` request may get the full stored response.
//! - **Field-qualified `private="..."` and `no-cache="..."`**: treated as unqualified (not
//!   stored) rather than stored without the named fields.
//! - **Heuristic freshness** is a fixed `default_ttl`, not a fraction of `Last-Modified`.
//! - **Invalidation** covers only the target URI with the unsafe request's own key headers,
//!   not `Location` or `Content-Location`; a `GET` in flight while the unsafe request runs
//!   may store what it read before it.
//! - `HEAD` responses do not update stored `GET`s; `Cache-Status` (RFC 9211) is not emitted.
//! - Single-flight is per process; across processes each may reach its inner service once.
//!
//! # Other stacks
//!
//! The service's response body is [`CacheBody<B>`] (data [`Bytes`](bytes::Bytes), the inner
//! body's errors), which axum and hyper take as it is. gRPC (tonic) calls are `POST` and pass
//! through untouched; a stack that insists on one body type needs this one mapped back.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod directives;
mod entry;
mod flight;
mod key;
mod layer;
mod policy;
mod service;

pub use body::CacheBody;
pub use layer::{
    CACHE_STATUS_HEADER, DEFAULT_MAX_BODY_SIZE, HttpCacheBuilder, HttpCacheLayer, HttpCacheStats,
};
pub use service::{HttpCache, ResponseFuture};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
