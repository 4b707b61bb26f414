//! A real axum server behind the cache layer, a real HTTP client, and engines to run it on.

#![allow(dead_code)] // Each test file uses part of it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{any, get};
use bytes::Bytes;
use cache_core::DynAsyncCacheEngine;
use cache_http::{HttpCacheBuilder, HttpCacheLayer};
use cache_local::InMemoryEngine;
use cache_redis::RedisEngine;
use cache_tests::servers::{ServerKind, TestServer};
use http_body::{Frame, SizeHint};

/// Every test runs on a type-erased engine, so one harness serves both.
pub type Engine = Arc<dyn DynAsyncCacheEngine>;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    Redis,
}

/// A namespace no other test uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh engine: an `InMemoryEngine`, or an `AsyncRedisEngine` on the kit's shared Redis
/// (never the one on 6379) under a namespace of its own; `None` when Redis is not installed.
pub fn engine(backend: Backend) -> Option<Engine> {
    match backend {
        Backend::Memory => Some(Arc::new(InMemoryEngine::new())),
        Backend::Redis => {
            let server = TestServer::shared(ServerKind::Redis)?;
            let engine = RedisEngine::async_builder()
                .url(server.url())
                .namespace(unique("http"))
                .build()
                .unwrap();
            Some(Arc::new(engine))
        }
    }
}

/// How many times the handlers ran, per `METHOD path?query`.
#[derive(Debug, Default)]
pub struct Calls(Mutex<HashMap<String, usize>>);

impl Calls {
    fn record(&self, key: String) -> usize {
        let mut map = self.0.lock().unwrap();
        let count = map.entry(key).or_default();
        *count += 1;
        *count
    }
}

pub struct App {
    pub base: String,
    pub calls: Arc<Calls>,
    pub layer: HttpCacheLayer<Engine>,
    pub client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// One response, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn hit(&self) -> bool {
        self.header("x-cache") == Some("HIT")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn age(&self) -> Option<u64> {
        self.header("age").map(|age| age.parse().unwrap())
    }
}

impl App {
    /// Starts the app on 127.0.0.1:0 behind a layer from `configure` (which starts with
    /// `cache_status_header(true)`); `None` when the backend is not available.
    pub async fn start(
        backend: Backend,
        configure: impl FnOnce(HttpCacheBuilder<Engine>) -> HttpCacheBuilder<Engine>,
    ) -> Option<Self> {
        let engine = engine(backend)?;
        Some(Self::start_on(engine, configure).await)
    }

    pub async fn start_on(
        engine: Engine,
        configure: impl FnOnce(HttpCacheBuilder<Engine>) -> HttpCacheBuilder<Engine>,
    ) -> Self {
        let layer = configure(HttpCacheLayer::builder(engine).cache_status_header(true))
            .build()
            .unwrap();
        let calls = Arc::new(Calls::default());
        let router = Router::new()
            .route("/big", get(big))
            .route("/{*path}", any(echo))
            .layer(layer.clone())
            .with_state(Arc::clone(&calls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        Self {
            base: format!("http://{address}"),
            calls,
            layer,
            // Redirects are responses to check, not to follow.
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            server,
        }
    }

    /// How many times a handler ran for `method` and `target` (path and query).
    pub fn calls(&self, method: &str, target: &str) -> usize {
        let key = format!("{method} {target}");
        self.calls.0.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    pub async fn get(&self, target: &str) -> Reply {
        self.send(reqwest::Method::GET, target, &[]).await
    }

    pub async fn get_with(&self, target: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(reqwest::Method::GET, target, headers).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        target: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{target}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }
}

fn query(request: &Request) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| {
            // The few escapes tests use in header values.
            let value = value
                .replace("%20", " ")
                .replace("%22", "\"")
                .replace("%2C", ",")
                .replace("%3B", ";")
                .replace("%26", "&");
            (name.to_owned(), value)
        })
        .collect()
}

fn header_or_dash(request: &Request, name: &str) -> String {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

fn target(request: &Request) -> String {
    request
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |target| target.as_str().to_owned())
}

/// Answers as its query says: `cc` (Cache-Control), `cdn` (CDN-Cache-Control), `expires` (an
/// `Expires` value as given), `vary`, `status`, `age`, `etag`,
/// `modified_ago` (seconds), `last_modified` (Unix seconds), `cookie`, `secret` (an
/// `x-secret` header), `expires_in` (seconds, negative for the past), `sleep_ms`, `fail_after`
/// (503 from that many calls on). Its body names the call and the request headers a test
/// varies on; `x-call` numbers the call. A request whose `If-None-Match` or
/// `If-Modified-Since` matches `etag` or `last_modified` gets 304 without a body.
async fn echo(State(calls): State<Arc<Calls>>, request: Request) -> Response {
    let call = calls.record(format!("{} {}", request.method(), target(&request)));
    let query = query(&request);
    if let Some(ms) = query.get("sleep_ms") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
    }
    let body = format!(
        "call {call} of {} {} lang={} user={} other={} tenant={}",
        request.method(),
        target(&request),
        header_or_dash(&request, "accept-language"),
        header_or_dash(&request, "authorization"),
        header_or_dash(&request, "x-other"),
        header_or_dash(&request, "x-tenant"),
    );
    let failing = query
        .get("fail_after")
        .is_some_and(|after| call > after.parse().unwrap());
    let status: u16 = if failing {
        503
    } else {
        query.get("status").map_or(200, |s| s.parse().unwrap())
    };
    let status = StatusCode::from_u16(status).unwrap();
    let body = if status == StatusCode::NO_CONTENT {
        Body::empty()
    } else {
        Body::from(body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(cc) = query.get("cc") {
        headers.insert("cache-control", HeaderValue::from_str(cc).unwrap());
    }
    if let Some(cdn) = query.get("cdn") {
        headers.insert("cdn-cache-control", HeaderValue::from_str(cdn).unwrap());
    }
    if let Some(expires) = query.get("expires") {
        headers.insert("expires", HeaderValue::from_str(expires).unwrap());
    }
    if let Some(vary) = query.get("vary") {
        headers.insert("vary", HeaderValue::from_str(vary).unwrap());
    }
    if let Some(age) = query.get("age") {
        headers.insert("age", HeaderValue::from_str(age).unwrap());
    }
    if let Some(status) = query.get("upstream_status") {
        headers.insert("cache-status", HeaderValue::from_str(status).unwrap());
    }
    headers.insert("x-call", HeaderValue::from(call));
    if query.contains_key("secret") {
        headers.insert("x-secret", HeaderValue::from_static("s3cr3t"));
    }
    if let Some(etag) = query.get("etag") {
        headers.insert("etag", HeaderValue::from_str(etag).unwrap());
    }
    if let Some(seconds) = query.get("last_modified") {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.parse().unwrap());
        let value = httpdate::fmt_http_date(at);
        headers.insert("last-modified", HeaderValue::from_str(&value).unwrap());
    }
    if let Some(seconds) = query.get("modified_ago") {
        let at = SystemTime::now() - Duration::from_secs(seconds.parse().unwrap());
        let value = httpdate::fmt_http_date(at);
        headers.insert("last-modified", HeaderValue::from_str(&value).unwrap());
    }
    if query.contains_key("cookie") {
        headers.insert("set-cookie", HeaderValue::from_static("session=abc"));
    }
    if status.is_redirection() {
        headers.insert("location", HeaderValue::from_static("/elsewhere"));
    }
    if let Some(seconds) = query.get("expires_in") {
        let seconds: i64 = seconds.parse().unwrap();
        let now = SystemTime::now();
        let at = if seconds >= 0 {
            now + Duration::from_secs(seconds.unsigned_abs())
        } else {
            now - Duration::from_secs(seconds.unsigned_abs())
        };
        let date = httpdate::fmt_http_date(now);
        headers.insert("date", HeaderValue::from_str(&date).unwrap());
        let expires = httpdate::fmt_http_date(at);
        headers.insert("expires", HeaderValue::from_str(&expires).unwrap());
    }
    // Preconditions, as an origin that honours them answers: 304 with the headers but no body.
    let conditional = request.headers();
    let etag_matches = conditional
        .get("if-none-match")
        .zip(query.get("etag"))
        .is_some_and(|(sent, etag)| sent.as_bytes() == etag.as_bytes());
    let unmodified = conditional
        .get("if-modified-since")
        .and_then(|since| httpdate::parse_http_date(since.to_str().ok()?).ok())
        .zip(query.get("last_modified"))
        .is_some_and(|(since, at)| {
            since >= SystemTime::UNIX_EPOCH + Duration::from_secs(at.parse().unwrap())
        });
    if !failing && (etag_matches || unmodified) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.body_mut() = Body::empty();
    }
    response
}

/// The byte at `offset` of every `/big` body.
pub fn pattern_byte(offset: usize) -> u8 {
    (offset % 251) as u8
}

pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(pattern_byte).collect()
}

/// `/big?size=N[&cc=...][&exact]`: N pattern bytes in 16 KiB chunks, streamed (its length
/// known in advance only with `exact`).
async fn big(State(calls): State<Arc<Calls>>, request: Request) -> Response {
    calls.record(format!("{} {}", request.method(), target(&request)));
    let query = query(&request);
    let size: usize = query["size"].parse().unwrap();
    let body = Pattern {
        offset: 0,
        len: size,
        exact: query.contains_key("exact"),
    };
    let mut response = Response::new(Body::new(body));
    if let Some(cc) = query.get("cc") {
        response
            .headers_mut()
            .insert("cache-control", HeaderValue::from_str(cc).unwrap());
    }
    response
}

struct Pattern {
    offset: usize,
    len: usize,
    exact: bool,
}

impl http_body::Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.offset == self.len {
            return Poll::Ready(None);
        }
        let end = (self.offset + 16 * 1024).min(self.len);
        let chunk: Vec<u8> = (self.offset..end).map(pattern_byte).collect();
        self.offset = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact((self.len - self.offset) as u64)
        } else {
            SizeHint::new()
        }
    }
}
