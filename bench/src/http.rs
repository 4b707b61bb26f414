//! Comparisons 23 and 24: the HTTP cache layer.
//!
//! 23. A hit through `HttpCacheLayer` over an `InMemoryEngine` against the same handler
//!     without the layer, 1 KiB body, over real HTTP (axum server, hyper client, one keep-alive
//!     connection, requests one after another), and in process (`tower::Service::call`, no
//!     network) as a reference.
//! 24. What the origin sends for a revalidated hit (a stale response with an `ETag`, answered
//!     `304`) against a full miss, 100 KiB body: status line, headers and body bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::routing::get;
use cache_core::Bytes;
use cache_http::HttpCacheLayer;
use cache_local::InMemoryEngine;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};

use crate::measure::{interleave, rate};
use crate::{Goal, Plan, Row};

const SMALL: usize = 1024;
const LARGE: usize = 100 * 1024;

fn engine() -> Result<Arc<InMemoryEngine>, String> {
    InMemoryEngine::builder()
        .max_capacity(10_000)
        .build()
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The handler both contenders run: a 1 KiB body, fresh for an hour.
fn routes() -> Router {
    let body = Bytes::from(vec![b'x'; SMALL]);
    Router::new().route(
        "/item",
        get(move || {
            let body = body.clone();
            async move { ([("cache-control", "max-age=3600")], body) }
        }),
    )
}

pub(crate) fn run(plan: &Plan, rows: &mut Vec<Row>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let layer = HttpCacheLayer::new(engine()?).map_err(|e| e.to_string())?;
    let bare = routes();
    let cached = routes().layer(layer.clone());

    // Over HTTP.
    let (bare_url, cached_url) = rt.block_on(async {
        let mut urls = Vec::new();
        for router in [bare.clone(), cached.clone()] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let address = listener.local_addr().map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            urls.push(format!("http://{address}/item"));
        }
        Ok::<_, String>((urls[0].clone(), urls[1].clone()))
    })?;
    let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).build_http();
    let fetch = |url: &str, ops: usize| -> Result<f64, String> {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..ops {
                let response = client
                    .get(url.parse().map_err(|e| format!("{e}"))?)
                    .await
                    .map_err(|e| e.to_string())?;
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
                if body.to_bytes().len() != SMALL {
                    return Err("a response without its 1 KiB body".into());
                }
            }
            Ok(rate(ops, start.elapsed()))
        })
    };
    fetch(&cached_url, 1)?;
    let ops = plan.remote_ops;
    let mut failed = None;
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                fetch(&cached_url, ops).unwrap_or_else(|e| {
                    failed = Some(e);
                    f64::NAN
                })
            },
            &mut || fetch(&bare_url, ops).unwrap_or(f64::NAN),
        ],
    );
    if let Some(e) = failed {
        return Err(format!("http hits: {e}"));
    }
    if layer.stats().hits == 0 {
        return Err("the cached route never hit".into());
    }
    rows.push(Row::rate(
        23,
        "HttpCacheLayer hit over InMemoryEngine / the handler without the layer, 1 KiB, over HTTP",
        r[0],
        r[1],
        Goal::AtLeast(0.7),
    ));

    // In process: what the layer costs without a network around it.
    let in_process = |router: &Router, ops: usize| -> f64 {
        rt.block_on(async {
            let mut service = router.clone().into_service::<Body>();
            let start = Instant::now();
            for _ in 0..ops {
                let request = Request::get("/item").body(Body::empty());
                let Ok(request) = request else {
                    return f64::NAN;
                };
                let Ok(service) = service.ready().await;
                let Ok(response) = service.call(request).await;
                let Ok(body) = response.into_body().collect().await else {
                    return f64::NAN;
                };
                std::hint::black_box(body.to_bytes());
            }
            rate(ops, start.elapsed())
        })
    };
    let ops = plan.local_ops / 20;
    let r = interleave(
        plan.rounds,
        &mut [&mut || in_process(&cached, ops), &mut || {
            in_process(&bare, ops)
        }],
    );
    rows.push(Row::rate(
        23,
        "(reference) same, in process (tower call, no network)",
        r[0],
        r[1],
        Goal::None,
    ));

    revalidation(&rt, rows)
}

/// Row 24: bytes the origin sends for a revalidated hit and for a full miss.
fn revalidation(rt: &tokio::runtime::Runtime, rows: &mut Vec<Row>) -> Result<(), String> {
    let sent = Arc::new(AtomicU64::new(0));
    let body = Bytes::from(vec![b'y'; LARGE]);
    let origin = {
        let sent = Arc::clone(&sent);
        tower::service_fn(move |request: Request<Body>| {
            let (sent, body) = (Arc::clone(&sent), body.clone());
            async move {
                let tag = "\"v1\"";
                let mut response = if request
                    .headers()
                    .get("if-none-match")
                    .is_some_and(|value| value == tag)
                {
                    let mut response = Response::new(Body::empty());
                    *response.status_mut() = StatusCode::NOT_MODIFIED;
                    response
                } else {
                    let mut response = Response::new(Body::from(body.clone()));
                    response
                        .headers_mut()
                        .insert("content-length", body.len().into());
                    response
                };
                let headers = response.headers_mut();
                headers.insert("etag", tag.parse().map_err(|_| "etag")?);
                headers.insert("cache-control", "max-age=0".parse().map_err(|_| "cc")?);
                let is_full = response.status() == StatusCode::OK;
                let bytes = wire_size(response.headers()) + if is_full { LARGE } else { 0 };
                sent.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok::<_, &'static str>(response)
            }
        })
    };
    let layer = HttpCacheLayer::new(engine()?).map_err(|e| e.to_string())?;
    let mut service = layer.layer(origin);
    let mut get = |sent: &AtomicU64| -> Result<u64, String> {
        let before = sent.load(Ordering::Relaxed);
        let served = rt.block_on(async {
            let request = Request::get("http://origin/large")
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
            let response = service
                .ready()
                .await
                .map_err(|e| e.to_string())?
                .call(request)
                .await
                .map_err(|e| e.to_string())?;
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| "body".to_owned())?;
            Ok::<_, String>(body.to_bytes().len())
        })?;
        if served != LARGE {
            return Err(format!("served {served} bytes, not {LARGE}"));
        }
        Ok(sent.load(Ordering::Relaxed) - before)
    };
    let miss = get(&sent)?;
    let rounds = 10;
    let mut revalidated = 0;
    for _ in 0..rounds {
        revalidated += get(&sent)?;
    }
    let stats = layer.stats();
    if stats.revalidated < rounds {
        return Err(format!("{} of {rounds} revalidated", stats.revalidated));
    }
    rows.push(Row::plain(
        24,
        "HttpCacheLayer origin bytes for a revalidated hit (304) / a full miss, 100 KiB body",
        revalidated as f64 / rounds as f64,
        miss as f64,
        "B",
        Goal::AtMost(0.01),
    ));
    Ok(())
}

/// The bytes of an HTTP/1.1 response head: status line, `name: value\r\n` lines, blank line.
fn wire_size(headers: &HeaderMap) -> usize {
    let status_line = "HTTP/1.1 200 OK\r\n".len();
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    status_line + fields + 2
}
