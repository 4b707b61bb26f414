//! The service: lookups, single-flight, storing, invalidation.

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use cache_core::{AsyncCacheEngine, CacheError, Remaining, Ttl};
use http::header::{
    AGE, CONNECTION, CONTENT_LENGTH, CONTENT_RANGE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use tower::Service;

use crate::body::CacheBody;
use crate::conditional;
use crate::directives::{RequestDirectives, ResponseDirectives};
use crate::entry::{self, Entry, StoredResponse, Variants};
use crate::flight::{self, Fetched, LeaderGuard, Role};
use crate::layer::{CACHE_STATUS_HEADER, HttpCacheStats, State, count};
use crate::policy::{self, Scope};
use crate::range;

/// The [`tower::Service`] an [`HttpCacheLayer`](crate::HttpCacheLayer) wraps around an inner service.
pub struct HttpCache<S, E> {
    inner: S,
    state: Arc<State<E>>,
}

impl<S: Clone, E> Clone for HttpCache<S, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

impl<S: fmt::Debug, E: AsyncCacheEngine> fmt::Debug for HttpCache<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCache")
            .field("inner", &self.inner)
            .field("engine", &self.state.engine)
            .finish_non_exhaustive()
    }
}

impl<S, E> HttpCache<S, E> {
    pub(crate) fn new(inner: S, state: Arc<State<E>>) -> Self {
        Self { inner, state }
    }

    /// What the layer has done so far (shared with the layer and its other services).
    pub fn stats(&self) -> HttpCacheStats {
        self.state.counters.snapshot()
    }
}

type BoxedResponse<B, Error> =
    Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, Error>> + Send>>;

/// The future of [`HttpCache`]'s responses.
pub struct ResponseFuture<B: Body, Error> {
    inner: BoxedResponse<B, Error>,
}

impl<B: Body, Error> Future for ResponseFuture<B, Error> {
    type Output = Result<Response<CacheBody<B>>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B: Body, Error> fmt::Debug for ResponseFuture<B, Error> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, E, ReqBody, ResBody> Service<Request<ReqBody>> for HttpCache<S, E>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    E: AsyncCacheEngine + 'static,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Send,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service that was polled ready serves this request; the clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let state = Arc::clone(&self.state);
        ResponseFuture {
            inner: Box::pin(respond(state, inner, request)),
        }
    }
}

/// What a request for a key brings along to its response: its headers (for `Vary` and its
/// own preconditions), its keys and the variant lists its lookup found.
struct Lookup {
    headers: HeaderMap,
    shared_key: String,
    user_key: Option<String>,
    /// The variant list found under each key, with its remaining TTL.
    shared_list: Option<(Variants, Duration)>,
    user_list: Option<(Variants, Duration)>,
}

/// What a lookup found: the first stored response for the request, if any.
enum Found {
    Stored(StoredResponse),
    Miss,
}

/// What may be done with a stored response for a request (RFC 9111 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Serve it: fresh, or stale within the request's `max-stale`.
    Serve,
    /// Serve it stale, and revalidate it in the background (`stale-while-revalidate`).
    ServeStaleAndRevalidate,
    /// Revalidate it first (stale, `no-cache`, or a request that asks for it).
    Revalidate,
}

/// How a response was served, for `x-cache` and `Cache-Status`.
#[derive(Debug, Clone, Copy)]
enum Served {
    /// From the cache without asking the inner service, with this many seconds of freshness
    /// left (negative: stale by that much).
    Hit(i64),
    /// From the inner service, or from the cache after asking it.
    Forwarded {
        fwd: Fwd,
        /// The inner service's status, when the cache served something else (a `304` that
        /// revalidated the stored response, an error that let a stale one be served).
        status: Option<StatusCode>,
        /// Whether the cache stored (or updated) a response.
        stored: bool,
    },
}

/// Why a request went to the inner service (RFC 9211 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fwd {
    /// Nothing was stored for it.
    UriMiss,
    /// What was stored was stale, or had to be revalidated.
    Stale,
    /// The request's own directives (`no-cache`, `max-age=0`, `no-store`) asked for it.
    Request,
}

/// A stored response being revalidated, and why.
struct Revalidating {
    stored: StoredResponse,
    fwd: Fwd,
}

async fn respond<S, E, ReqBody, ResBody>(
    state: Arc<State<E>>,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    E: AsyncCacheEngine + 'static,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Send,
{
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        count(&state.counters.passed);
        if matches!(method, Method::OPTIONS | Method::TRACE) {
            return Ok(streaming(inner.call(request).await?));
        }
        // RFC 9111 section 4.4: a successful unsafe request invalidates the target URI.
        let (parts, body) = request.into_parts();
        let mut keys = vec![state.keys.primary(&parts, Scope::Shared)];
        if policy::is_authorized(&parts.headers) {
            keys.push(state.keys.primary(&parts, Scope::User));
        }
        let response = inner.call(Request::from_parts(parts, body)).await?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            state.invalidate(&keys).await;
        }
        return Ok(streaming(response));
    }

    let head = method == Method::HEAD;
    let (parts, body) = request.into_parts();
    let directives = if state.settings.honour_request_directives {
        RequestDirectives::parse(&parts.headers)
    } else {
        RequestDirectives::default()
    };
    let authorized = policy::is_authorized(&parts.headers);
    let mut lookup = Lookup {
        headers: HeaderMap::new(),
        shared_key: state.keys.primary(&parts, Scope::Shared),
        user_key: authorized.then(|| state.keys.primary(&parts, Scope::User)),
        shared_list: None,
        user_list: None,
    };
    let mut stale = None;
    if let Found::Stored(stored) = state.lookup(&mut lookup, &parts.headers).await {
        let now = SystemTime::now();
        match state.usable(&stored, &directives, now) {
            Use::Serve => {
                count(&state.counters.hits);
                if stored.staleness(now).is_some() {
                    count(&state.counters.stale_served);
                }
                return Ok(state.serve(stored, head, &parts.headers, None));
            }
            Use::ServeStaleAndRevalidate => {
                let flight_key = lookup
                    .user_key
                    .clone()
                    .unwrap_or_else(|| lookup.shared_key.clone());
                if let Role::Leader(guard) = state.flights.join(&flight_key, || ()) {
                    if head {
                        // A HEAD request has no body the revalidation could be stored with:
                        // the next GET revalidates.
                        drop(guard);
                    } else {
                        let headers = parts.headers.clone();
                        lookup.headers = parts.headers.clone();
                        let request = Request::from_parts(parts, body);
                        let stale = Revalidating {
                            stored: stored.clone(),
                            fwd: Fwd::Stale,
                        };
                        let task =
                            background(Arc::clone(&state), inner, request, lookup, guard, stale);
                        if let Some(task) = task {
                            // No runtime to run it on: revalidate now instead.
                            return task.await;
                        }
                        count(&state.counters.hits);
                        count(&state.counters.stale_served);
                        return Ok(state.serve(stored, false, &headers, None));
                    }
                }
                count(&state.counters.hits);
                count(&state.counters.stale_served);
                return Ok(state.serve(stored, head, &parts.headers, None));
            }
            Use::Revalidate => {
                let fwd = if directives.wants_reload() {
                    Fwd::Request
                } else {
                    Fwd::Stale
                };
                stale = Some(Revalidating { stored, fwd });
            }
        }
    }
    if directives.only_if_cached {
        let mut response = Response::new(CacheBody::full(Bytes::new()));
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        return Ok(response);
    }
    if head || directives.no_store {
        count(&state.counters.misses);
        // A HEAD response has no body a GET could be served from; a no-store request's
        // response must not be stored.
        let fwd = if directives.no_store {
            Fwd::Request
        } else {
            stale.as_ref().map_or(Fwd::UriMiss, |stale| stale.fwd)
        };
        let response = streaming(inner.call(Request::from_parts(parts, body)).await?);
        let served = Served::Forwarded {
            fwd,
            status: None,
            stored: false,
        };
        return Ok(state.mark(response, served));
    }
    lookup.headers = parts.headers.clone();
    let request = Request::from_parts(parts, body);
    if directives.wants_reload() {
        // The client asked for a response from the inner service: it does not wait for
        // another request's, and what it gets replaces what is stored (or revalidates it).
        let stale = stale.map(|stale| Revalidating {
            fwd: Fwd::Request,
            ..stale
        });
        return state.fetch(inner, request, lookup, None, stale).await;
    }
    let flight_key = lookup
        .user_key
        .clone()
        .unwrap_or_else(|| lookup.shared_key.clone());
    loop {
        let flight = match state.flights.join(&flight_key, || ()) {
            Role::Leader(guard) => {
                return state
                    .fetch(inner, request, lookup, Some(guard), stale)
                    .await;
            }
            Role::Waiter(flight) => flight,
        };
        match flight.wait().await {
            Some(Fetched::Stored(shared)) => {
                if state.same_variant(&shared, &lookup) {
                    count(&state.counters.coalesced);
                    return Ok(state.serve(shared.response.clone(), false, &lookup.headers, None));
                }
                return state.fetch(inner, request, lookup, None, stale).await;
            }
            Some(Fetched::NotStored) => {
                return state.fetch(inner, request, lookup, None, stale).await;
            }
            None => {}
        }
    }
}

type Revalidation<B, Error> =
    Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, Error>> + Send>>;

/// Runs a revalidation in the background (on the current tokio runtime); hands it back when
/// there is none to run it on.
fn background<S, E, ReqBody, ResBody>(
    state: Arc<State<E>>,
    inner: S,
    request: Request<ReqBody>,
    lookup: Lookup,
    guard: LeaderGuard,
    stale: Revalidating,
) -> Option<Revalidation<ResBody, S::Error>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    E: AsyncCacheEngine + 'static,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Send,
{
    let task = Box::pin(async move {
        state
            .fetch(inner, request, lookup, Some(guard), Some(stale))
            .await
    });
    #[cfg(feature = "tokio")]
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            // The response goes nowhere: what mattered was storing it.
            let _ = task.await;
        });
        return None;
    }
    Some(task)
}

fn streaming<B: Body>(response: Response<B>) -> Response<CacheBody<B>> {
    response.map(CacheBody::streaming)
}

fn finish(guard: Option<LeaderGuard>, outcome: Fetched) {
    if let Some(guard) = guard {
        guard.finish(outcome);
    }
}

/// The statuses after which a stale response may be served instead, where allowed (RFC 5861
/// section 4).
fn is_error_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

impl<E: AsyncCacheEngine> State<E> {
    fn engine_error(&self, error: &CacheError) {
        count(&self.counters.engine_errors);
        if let Some(hook) = &self.on_engine_error {
            hook(error);
        }
    }

    /// What a request with `directives` may do with `stored` at `now`.
    fn usable(
        &self,
        stored: &StoredResponse,
        directives: &RequestDirectives,
        now: SystemTime,
    ) -> Use {
        let response = ResponseDirectives::parse(&stored.headers, &self.settings.targeted);
        if response.no_cache || directives.wants_reload() {
            return Use::Revalidate;
        }
        let age = stored.age_at(now);
        if let Some(Ok(max_age)) = directives.max_age {
            if age > max_age {
                return Use::Revalidate;
            }
        }
        let Some(staleness) = stored.staleness(now) else {
            if let Some(Ok(min_fresh)) = directives.min_fresh {
                if stored.freshness_left(now) < min_fresh {
                    return Use::Revalidate;
                }
            }
            return Use::Serve;
        };
        if response.forbids_stale() {
            return Use::Revalidate;
        }
        match directives.max_stale {
            Some(None) => return Use::Serve,
            Some(Some(limit)) if staleness <= limit => return Use::Serve,
            _ => {}
        }
        match response.stale_while_revalidate {
            Some(Ok(window)) if staleness < window => Use::ServeStaleAndRevalidate,
            _ => Use::Revalidate,
        }
    }

    /// Whether `stored` may be served in place of an error of the inner service: within its
    /// `stale-if-error`, or the layer's [`serve_stale_on_error`] window, unless its directives
    /// forbid serving it stale.
    ///
    /// [`serve_stale_on_error`]: crate::HttpCacheBuilder::serve_stale_on_error
    fn stale_on_error(&self, stored: &StoredResponse) -> bool {
        let response = ResponseDirectives::parse(&stored.headers, &self.settings.targeted);
        if response.forbids_stale() {
            return false;
        }
        let staleness = stored.staleness(SystemTime::now()).unwrap_or_default();
        let allowed = match response.stale_if_error {
            Some(Ok(window)) => window.max(self.settings.stale_on_error),
            _ => self.settings.stale_on_error,
        };
        staleness <= allowed && !allowed.is_zero()
    }

    /// Adds `x-cache` and `Cache-Status` (RFC 9211) when configured.
    fn mark<B>(&self, mut response: Response<B>, served: Served) -> Response<B> {
        if !self.settings.cache_status_header {
            return response;
        }
        let name = &self.settings.cache_name;
        let (x_cache, status) = match served {
            Served::Hit(ttl) => ("HIT", format!("{name}; hit; ttl={ttl}")),
            Served::Forwarded {
                fwd,
                status,
                stored,
            } => {
                let fwd = match fwd {
                    Fwd::UriMiss => "uri-miss",
                    Fwd::Stale => "stale",
                    Fwd::Request => "request",
                };
                let x_cache = if status.is_some() { "HIT" } else { "MISS" };
                let status = status
                    .map(|status| format!("; fwd-status={}", status.as_u16()))
                    .unwrap_or_default();
                let stored = if stored { "; stored" } else { "" };
                (x_cache, format!("{name}; fwd={fwd}{status}{stored}"))
            }
        };
        let headers = response.headers_mut();
        headers.insert(
            HeaderName::from_static(CACHE_STATUS_HEADER),
            HeaderValue::from_static(x_cache),
        );
        // The name is checked to be a token when the layer is built: always a valid value. An
        // entry from a cache nearer the origin stays first (RFC 9211: a list, nearest the
        // user last).
        if let Ok(value) = HeaderValue::from_str(&status) {
            headers.append(HeaderName::from_static("cache-status"), value);
        }
        response
    }

    /// A stored response as served to a request with these headers: `Age` set, the body left
    /// out for `HEAD`, and `304 Not Modified` when the request's validators match. `forwarded`
    /// says how the inner service was involved, if it was.
    fn serve<B: Body>(
        &self,
        stored: StoredResponse,
        head: bool,
        request: &HeaderMap,
        forwarded: Option<Served>,
    ) -> Response<CacheBody<B>> {
        let now = SystemTime::now();
        let age = stored.age_at(now);
        let served = forwarded.unwrap_or_else(|| {
            // Seconds of freshness left; once stale, minus the seconds since, rounded up.
            let ttl = match stored.staleness(now) {
                None => i64::try_from(stored.freshness_left(now).as_secs()).unwrap_or(i64::MAX),
                Some(stale) => {
                    let millis = i64::try_from(stale.as_millis()).unwrap_or(i64::MAX);
                    -(millis.saturating_add(999) / 1000).max(1)
                }
            };
            Served::Hit(ttl)
        });
        if conditional::not_modified(request, stored.status, &stored.headers) {
            let mut response = Response::new(CacheBody::full(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            let headers = response.headers_mut();
            for name in conditional::KEPT_ON_304 {
                for value in stored.headers.get_all(&name) {
                    headers.append(name.clone(), value.clone());
                }
            }
            headers.insert(AGE, HeaderValue::from(age.as_secs()));
            return self.mark(response, served);
        }
        let mut status = stored.status;
        let mut headers = stored.headers;
        let mut body = stored.body;
        if status == StatusCode::OK {
            let len = body.len() as u64;
            match range::select(request, &headers, len) {
                range::Part::Whole => {}
                range::Part::Bytes { start, end } => {
                    // Both fit in usize: they are offsets into a body in memory.
                    let (from, to) = (
                        usize::try_from(start).unwrap_or(usize::MAX),
                        usize::try_from(end).unwrap_or(usize::MAX),
                    );
                    body = body.slice(from..=to.min(body.len().saturating_sub(1)));
                    status = StatusCode::PARTIAL_CONTENT;
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
                    headers.insert(
                        CONTENT_RANGE,
                        content_range(&format!("bytes {start}-{end}/{len}")),
                    );
                }
                range::Part::Unsatisfiable => {
                    body = Bytes::new();
                    status = StatusCode::RANGE_NOT_SATISFIABLE;
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
                    headers.insert(CONTENT_RANGE, content_range(&format!("bytes */{len}")));
                }
            }
        }
        let body = if head { Bytes::new() } else { body };
        let mut response = Response::new(CacheBody::full(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
            .headers_mut()
            .insert(AGE, HeaderValue::from(age.as_secs()));
        self.mark(response, served)
    }

    /// Reads the entries for a request: the shared key, then (with `Authorization`) the
    /// user's key, following variant lists; the first stored response found. Records the
    /// lists it finds in `lookup`.
    async fn lookup(&self, lookup: &mut Lookup, headers: &HeaderMap) -> Found {
        let found = match &lookup.user_key {
            None => self
                .engine
                .get_with_ttl(&lookup.shared_key)
                .await
                .map(|slot| vec![slot]),
            Some(user_key) => {
                self.engine
                    .get_many_with_ttl(&[&lookup.shared_key, user_key])
                    .await
            }
        };
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                self.engine_error(&error);
                return Found::Miss;
            }
        };
        for (index, slot) in found.into_iter().enumerate() {
            let Some((bytes, remaining)) = slot else {
                continue;
            };
            let primary = if index == 0 {
                &lookup.shared_key
            } else {
                lookup.user_key.as_deref().unwrap_or_default()
            };
            match Entry::decode(&bytes) {
                None => count(&self.counters.corrupt_entries),
                Some(Entry::Outdated) => {}
                Some(Entry::Response(stored)) => return Found::Stored(stored),
                Some(Entry::Variants(list)) => {
                    let key = self
                        .keys
                        .variant(primary, list.generation, &list.names, headers);
                    let left = remaining_duration(remaining);
                    if index == 0 {
                        lookup.shared_list = Some((list, left));
                    } else {
                        lookup.user_list = Some((list, left));
                    }
                    match self.engine.get(&key).await {
                        Ok(None) => {}
                        Ok(Some(bytes)) => match Entry::decode(&bytes) {
                            Some(Entry::Response(stored)) => return Found::Stored(stored),
                            Some(Entry::Outdated) => {}
                            _ => count(&self.counters.corrupt_entries),
                        },
                        Err(error) => self.engine_error(&error),
                    }
                }
            }
        }
        Found::Miss
    }

    /// Whether a waiter's request is served by the response its leader stored.
    fn same_variant(&self, shared: &flight::Shared, lookup: &Lookup) -> bool {
        let Some((generation, names, key)) = &shared.variant else {
            return true;
        };
        // The leader's primary key is the waiter's too (same flight), in the scope it chose.
        [Some(&lookup.shared_key), lookup.user_key.as_ref()]
            .into_iter()
            .flatten()
            .any(|primary| {
                self.keys
                    .variant(primary, *generation, names, &lookup.headers)
                    == *key
            })
    }

    /// How long the engine keeps a response: its freshness left, plus as long as it may
    /// still be of use stale (revalidated with its validator, or served stale where its
    /// directives or the settings allow); at most the layer's `max_ttl`.
    fn engine_ttl(&self, storable: &policy::Storable, forbids_stale: bool) -> Duration {
        let fresh = storable.lifetime.saturating_sub(storable.age);
        let mut keep = storable.stale_window;
        if storable.validator {
            keep = keep.max(self.settings.keep_stale);
        }
        if !forbids_stale {
            keep = keep.max(self.settings.stale_on_error);
        }
        fresh.saturating_add(keep).min(self.settings.max_ttl)
    }

    /// Asks the inner service (conditionally, with the validators of `stale` if it has any),
    /// and stores its response if the rules allow: a `304` updates the stored response, an
    /// error may let it be served stale.
    async fn fetch<S, ReqBody, ResBody>(
        &self,
        mut inner: S,
        request: Request<ReqBody>,
        lookup: Lookup,
        guard: Option<LeaderGuard>,
        stale: Option<Revalidating>,
    ) -> Result<Response<CacheBody<ResBody>>, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        ResBody: Body,
    {
        count(&self.counters.misses);
        let fwd = stale.as_ref().map_or(Fwd::UriMiss, |stale| stale.fwd);
        let (mut parts, body) = request.into_parts();
        let conditional = stale.as_ref().is_some_and(|stale| {
            conditional::add_validators(&mut parts.headers, &stale.stored.headers)
        });
        if conditional {
            count(&self.counters.revalidations);
        }
        let request = Request::from_parts(parts, body);
        let started = Instant::now();
        // An error here drops the guard: the waiters try again themselves.
        let response = match inner.call(request).await {
            Ok(response) => response,
            Err(error) => {
                return match stale {
                    Some(stale) if self.stale_on_error(&stale.stored) => {
                        count(&self.counters.hits);
                        count(&self.counters.stale_served);
                        let served = Served::Forwarded {
                            fwd,
                            status: Some(StatusCode::BAD_GATEWAY),
                            stored: false,
                        };
                        Ok(self.serve(stale.stored, false, &lookup.headers, Some(served)))
                    }
                    _ => Err(error),
                };
            }
        };
        let status = response.status();
        if let Some(stale) = stale {
            if is_error_status(status) && self.stale_on_error(&stale.stored) {
                finish(guard, Fetched::NotStored);
                count(&self.counters.hits);
                count(&self.counters.stale_served);
                let served = Served::Forwarded {
                    fwd,
                    status: Some(status),
                    stored: false,
                };
                return Ok(self.serve(stale.stored, false, &lookup.headers, Some(served)));
            }
            if status == StatusCode::NOT_MODIFIED && conditional {
                return Ok(self
                    .refresh(
                        stale.stored,
                        response.headers(),
                        started,
                        lookup,
                        guard,
                        fwd,
                    )
                    .await);
            }
        }
        let context = self.context(&lookup, started);
        let decision = policy::decide(status, response.headers(), context)
            .ok()
            .and_then(|storable| {
                let forbids =
                    ResponseDirectives::parse(response.headers(), &self.settings.targeted)
                        .forbids_stale();
                let ttl = self.engine_ttl(&storable, forbids);
                (ttl >= Duration::from_millis(1)).then_some((storable, ttl))
            });
        let not_stored = Served::Forwarded {
            fwd,
            status: None,
            stored: false,
        };
        let Some((storable, ttl)) = decision else {
            count(&self.counters.not_storable);
            finish(guard, Fetched::NotStored);
            return Ok(self.mark(streaming(response), not_stored));
        };
        let (mut head, body) = response.into_parts();
        let limit = self.settings.max_body_size;
        if body.size_hint().lower() > limit as u64 {
            count(&self.counters.too_large);
            finish(guard, Fetched::NotStored);
            let response = Response::from_parts(head, CacheBody::streaming(body));
            return Ok(self.mark(response, not_stored));
        }

        // Read up to the limit; past it, or at trailers or an error, give up storing and
        // stream what was read, then the rest.
        let mut body = Box::pin(body);
        let mut read = VecDeque::new();
        let mut len = 0usize;
        loop {
            match poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                None => break,
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        len = len.saturating_add(data.remaining());
                        read.push_back(Frame::data(data.copy_to_bytes(data.remaining())));
                        if len > limit {
                            count(&self.counters.too_large);
                            finish(guard, Fetched::NotStored);
                            let body = CacheBody::resumed(read, None, Some(body));
                            return Ok(self.mark(Response::from_parts(head, body), not_stored));
                        }
                    }
                    Err(frame) => {
                        count(&self.counters.not_storable);
                        finish(guard, Fetched::NotStored);
                        let trailers =
                            frame.map_data(|mut data| data.copy_to_bytes(data.remaining()));
                        read.push_back(trailers);
                        let body = CacheBody::resumed(read, None, Some(body));
                        return Ok(self.mark(Response::from_parts(head, body), not_stored));
                    }
                },
                Some(Err(error)) => {
                    finish(guard, Fetched::NotStored);
                    let body = CacheBody::resumed(read, Some(error), None);
                    return Ok(self.mark(Response::from_parts(head, body), not_stored));
                }
            }
        }
        let body = concat(read, len);

        strip_hop_by_hop(&mut head.headers);
        if head.status != StatusCode::NO_CONTENT {
            head.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        let mut stored_headers = head.headers.clone();
        stored_headers.remove(AGE);
        for name in &storable.strip {
            stored_headers.remove(name);
        }
        let stored = StoredResponse {
            status: head.status,
            headers: stored_headers,
            body: body.clone(),
            stored_at: context.now,
            age: storable.age,
            lifetime: storable.lifetime,
        };
        let (variant, written) = self.store(&stored, &storable, ttl, &lookup).await;
        // Waiters get the response even when the engine failed: it is shareable either way.
        finish(
            guard,
            Fetched::Stored(Arc::new(flight::Shared {
                response: stored.clone(),
                variant,
            })),
        );
        let served = Served::Forwarded {
            fwd,
            status: None,
            stored: written,
        };
        if conditional {
            // The client's own preconditions were replaced by the stored validators: answer
            // them from what was just stored.
            return Ok(self.serve(stored, false, &lookup.headers, Some(served)));
        }
        Ok(self.mark(Response::from_parts(head, CacheBody::full(body)), served))
    }

    /// The policy's inputs for a response received now, to a request that started at `started`.
    fn context(&self, lookup: &Lookup, started: Instant) -> policy::Context<'_> {
        policy::Context {
            authorized: lookup.user_key.is_some(),
            response_delay: started.elapsed(),
            default_ttl: self.settings.default_ttl,
            heuristic: self.settings.heuristic_freshness,
            any_status: self.settings.any_status,
            targeted: &self.settings.targeted,
            share_must_revalidate: self.settings.share_must_revalidate,
            now: SystemTime::now(),
        }
    }

    /// A `304 Not Modified` to a revalidation: the stored response's headers are updated from
    /// it (RFC 9111 sections 3.2 and 4.3.4), it is stored again if the updated headers still
    /// allow it, and served.
    async fn refresh<B: Body>(
        &self,
        stale: StoredResponse,
        update: &HeaderMap,
        started: Instant,
        lookup: Lookup,
        guard: Option<LeaderGuard>,
        fwd: Fwd,
    ) -> Response<CacheBody<B>> {
        count(&self.counters.revalidated);
        let mut headers = stale.headers;
        let mut update = update.clone();
        strip_hop_by_hop(&mut update);
        for name in update.keys() {
            if *name == CONTENT_LENGTH {
                continue;
            }
            headers.remove(name);
        }
        for (name, value) in &update {
            if *name != CONTENT_LENGTH {
                headers.append(name.clone(), value.clone());
            }
        }
        let context = self.context(&lookup, started);
        let decision = policy::decide(stale.status, &headers, context).ok();
        headers.remove(AGE);
        let mut stored = StoredResponse {
            status: stale.status,
            headers,
            body: stale.body,
            stored_at: context.now,
            age: decision
                .as_ref()
                .map_or(Duration::ZERO, |storable| storable.age),
            lifetime: decision
                .as_ref()
                .map_or(Duration::ZERO, |storable| storable.lifetime),
        };
        let mut written = false;
        match decision {
            Some(storable) => {
                for name in &storable.strip {
                    stored.headers.remove(name);
                }
                let forbids = ResponseDirectives::parse(&stored.headers, &self.settings.targeted)
                    .forbids_stale();
                let ttl = self.engine_ttl(&storable, forbids);
                let variant;
                (variant, written) = self.store(&stored, &storable, ttl, &lookup).await;
                finish(
                    guard,
                    Fetched::Stored(Arc::new(flight::Shared {
                        response: stored.clone(),
                        variant,
                    })),
                );
            }
            None => {
                count(&self.counters.not_storable);
                finish(guard, Fetched::NotStored);
            }
        }
        let served = Served::Forwarded {
            fwd,
            status: Some(StatusCode::NOT_MODIFIED),
            stored: written,
        };
        self.serve(stored, false, &lookup.headers, Some(served))
    }

    /// Encodes `stored` and writes it where its scope and `Vary` say; returns the variant
    /// written (for waiters) and whether the engine took it.
    async fn store(
        &self,
        stored: &StoredResponse,
        storable: &policy::Storable,
        ttl: Duration,
        lookup: &Lookup,
    ) -> (Option<(u64, Vec<HeaderName>, String)>, bool) {
        let fits = entry::response_len(&stored.headers, stored.body.len())
            <= self.settings.max_value_size.unwrap_or(usize::MAX);
        let Some(bytes) = stored.encode().filter(|_| fits) else {
            count(&self.counters.too_large);
            return (None, false);
        };
        let (primary, list) = match storable.scope {
            Scope::Shared => (&lookup.shared_key, &lookup.shared_list),
            Scope::User => match &lookup.user_key {
                Some(user_key) => (user_key, &lookup.user_list),
                None => (&lookup.shared_key, &lookup.shared_list),
            },
        };
        self.write(
            primary,
            list.as_ref(),
            storable.vary.clone(),
            &lookup.headers,
            bytes,
            ttl,
        )
        .await
    }

    /// Writes an encoded response under `primary`, or, when it varies, under its variant key
    /// with the variant list under `primary` (reusing the generation of the `list` found, if
    /// it has the same names). Returns the variant written, for the waiters.
    async fn write(
        &self,
        primary: &str,
        list: Option<&(Variants, Duration)>,
        vary: Vec<HeaderName>,
        headers: &HeaderMap,
        bytes: Bytes,
        ttl: Duration,
    ) -> (Option<(u64, Vec<HeaderName>, String)>, bool) {
        let (written, variant) = if vary.is_empty() {
            (self.engine.set(primary, bytes, Ttl::After(ttl)).await, None)
        } else {
            // Without a list from this request's lookup (a reload that skipped it, a waiter of
            // another variant), read the stored one: a new generation would hide every other
            // variant already stored.
            let stored;
            let list = match list {
                Some(list) => Some(list),
                None => {
                    stored = self.stored_variants(primary).await;
                    stored.as_ref()
                }
            };
            let (generation, list_ttl) = match list {
                Some((list, left)) if list.names == vary => (list.generation, ttl.max(*left)),
                _ => (random_generation(), ttl),
            };
            let key = self.keys.variant(primary, generation, &vary, headers);
            let list = Variants {
                generation,
                names: vary,
            };
            // At most MAX_VARY_NAMES valid header names: always encodable.
            let encoded = list.encode().unwrap_or_default();
            let mut written = self.engine.set(&key, bytes, Ttl::After(ttl)).await;
            if written.is_ok() {
                let list_ttl = Ttl::After(list_ttl.min(self.settings.max_ttl));
                written = self.engine.set(primary, encoded, list_ttl).await;
            }
            (written, Some((generation, list.names, key)))
        };
        let stored = match written {
            Ok(()) => {
                count(&self.counters.stores);
                true
            }
            Err(error) => {
                self.engine_error(&error);
                false
            }
        };
        (variant, stored)
    }

    /// The variant list stored under `primary`, with its remaining lifetime, if there is one.
    async fn stored_variants(&self, primary: &str) -> Option<(Variants, Duration)> {
        match self.engine.get_with_ttl(primary).await {
            Ok(Some((bytes, remaining))) => match Entry::decode(&bytes) {
                Some(Entry::Variants(list)) => Some((list, remaining_duration(remaining))),
                _ => None,
            },
            Ok(None) => None,
            Err(error) => {
                self.engine_error(&error);
                None
            }
        }
    }

    async fn invalidate(&self, keys: &[String]) {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        match self.engine.delete_many(&keys).await {
            Ok(removed) => {
                self.counters
                    .invalidations
                    .fetch_add(removed, Ordering::Relaxed);
            }
            Err(error) => self.engine_error(&error),
        }
    }
}

fn remaining_duration(remaining: Remaining) -> Duration {
    match remaining {
        Remaining::After(left) => left,
        // Never written by this layer; read as just stored.
        Remaining::Never => Duration::MAX,
    }
}

fn concat(frames: VecDeque<Frame<Bytes>>, len: usize) -> Bytes {
    let mut chunks = frames
        .into_iter()
        .filter_map(|frame| frame.into_data().ok());
    let Some(first) = chunks.next() else {
        return Bytes::new();
    };
    if first.len() == len {
        return first;
    }
    let mut out = BytesMut::with_capacity(len);
    out.extend_from_slice(&first);
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    out.freeze()
}

/// Removes the fields that describe one connection rather than the response (RFC 9110
/// section 7.6.1): a stored response is served on other connections, with a body of known
/// length.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [CONNECTION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A generation for a new variant list: distinct across lists, processes and restarts.
fn random_generation() -> u64 {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(SEQUENCE.fetch_add(1, Ordering::Relaxed));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

/// A `Content-Range` value; its text is digits and ASCII only.
fn content_range(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("bytes */0"))
}
