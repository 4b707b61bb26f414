//! The layer, its builder and its statistics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cache_core::{AsyncCacheEngine, CacheError};
use http::HeaderName;
use tower::Layer;

use crate::flight::Flights;
use crate::key::{KEY_PREFIX, Keys, MIN_HEX_DIGITS};
use crate::service::HttpCache;

/// The default limit of a stored body: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 1 << 20;

/// How long past its freshness a response with a validator is kept to be revalidated, unless
/// [`keep_stale`](HttpCacheBuilder::keep_stale) sets another: 5 minutes.
pub const DEFAULT_KEEP_STALE: Duration = Duration::from_secs(300);

/// How long past its freshness the [`reverse_proxy`](HttpCacheBuilder::reverse_proxy) preset
/// serves a response when the inner service fails: 1 hour.
pub const REVERSE_PROXY_STALE_ON_ERROR: Duration = Duration::from_secs(3600);

/// The header that tells a hit from a miss when
/// [`cache_status_header`](HttpCacheBuilder::cache_status_header) is on.
pub const CACHE_STATUS_HEADER: &str = "x-cache";

/// The name the layer gives itself in `Cache-Status` unless
/// [`cache_status_name`](HttpCacheBuilder::cache_status_name) sets another.
pub const DEFAULT_CACHE_NAME: &str = "cache-toolkit";

/// Whether `name` is an RFC 8941 token, as a `Cache-Status` cache name must be.
fn is_token(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b))
}

pub(crate) type ErrorHook = Arc<dyn Fn(&CacheError) + Send + Sync>;

/// A [`tower::Layer`] that caches responses to `GET` (and answers `HEAD` from them) in an
/// [`AsyncCacheEngine`], as a shared cache in the sense of RFC 9111.
///
/// Cloning it is cheap, and every clone and every service it makes share one engine, one set
/// of statistics and one single-flight table. See the [crate docs](crate) for the rules.
pub struct HttpCacheLayer<E> {
    state: Arc<State<E>>,
}

impl<E> Clone for HttpCacheLayer<E> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
        }
    }
}

impl<E: AsyncCacheEngine> fmt::Debug for HttpCacheLayer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheLayer")
            .field("engine", &self.state.engine)
            .field("settings", &self.state.settings)
            .finish_non_exhaustive()
    }
}

impl<E: AsyncCacheEngine> HttpCacheLayer<E> {
    /// A layer over `engine` with the defaults: bodies up to 1 MiB, no key headers, nothing
    /// stored without explicit freshness, request directives honoured, no `x-cache` header.
    ///
    /// # Errors
    ///
    /// As [`HttpCacheBuilder::build`].
    pub fn new(engine: E) -> cache_core::Result<Self> {
        Self::builder(engine).build()
    }

    /// A builder over `engine`.
    pub fn builder(engine: E) -> HttpCacheBuilder<E> {
        HttpCacheBuilder {
            engine,
            max_body_size: DEFAULT_MAX_BODY_SIZE,
            key_headers: Vec::new(),
            default_ttl: None,
            heuristic_freshness: false,
            any_status: false,
            targeted: vec![crate::targeted::CDN_CACHE_CONTROL.to_owned()],
            share_must_revalidate: false,
            keep_stale: DEFAULT_KEEP_STALE,
            stale_on_error: Duration::ZERO,
            max_ttl: None,
            cache_status_header: false,
            cache_name: DEFAULT_CACHE_NAME.to_owned(),
            honour_request_directives: true,
            on_engine_error: None,
        }
    }

    /// What the layer has done so far, counted across every service it made.
    pub fn stats(&self) -> HttpCacheStats {
        self.state.counters.snapshot()
    }

    /// The engine the layer stores in.
    pub fn engine(&self) -> &E {
        &self.state.engine
    }
}

impl<S, E> Layer<S> for HttpCacheLayer<E> {
    type Service = HttpCache<S, E>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpCache::new(inner, Arc::clone(&self.state))
    }
}

/// Configures an [`HttpCacheLayer`]; made by [`HttpCacheLayer::builder`].
#[must_use]
pub struct HttpCacheBuilder<E> {
    engine: E,
    max_body_size: usize,
    key_headers: Vec<String>,
    default_ttl: Option<Duration>,
    heuristic_freshness: bool,
    any_status: bool,
    targeted: Vec<String>,
    share_must_revalidate: bool,
    keep_stale: Duration,
    stale_on_error: Duration,
    max_ttl: Option<Duration>,
    cache_status_header: bool,
    cache_name: String,
    honour_request_directives: bool,
    on_engine_error: Option<ErrorHook>,
}

impl<E: AsyncCacheEngine> fmt::Debug for HttpCacheBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpCacheBuilder")
            .field("engine", &self.engine)
            .field("max_body_size", &self.max_body_size)
            .field("key_headers", &self.key_headers)
            .field("default_ttl", &self.default_ttl)
            .field("heuristic_freshness", &self.heuristic_freshness)
            .field("store_any_status", &self.any_status)
            .field("targeted_cache_control", &self.targeted)
            .field("share_must_revalidate", &self.share_must_revalidate)
            .field("keep_stale", &self.keep_stale)
            .field("serve_stale_on_error", &self.stale_on_error)
            .field("max_ttl", &self.max_ttl)
            .field("cache_status_header", &self.cache_status_header)
            .field("cache_status_name", &self.cache_name)
            .field("honour_request_directives", &self.honour_request_directives)
            .finish_non_exhaustive()
    }
}

impl<E: AsyncCacheEngine> HttpCacheBuilder<E> {
    /// The largest body stored, in bytes (1 MiB by default). A larger response is read up to
    /// this many bytes, then streamed on, whole, and not stored. The engine's own
    /// `max_value_size` lowers it further.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body_size = bytes;
        self
    }

    /// Request headers whose values become part of every key, for example a tenant header
    /// that the inner service reads but its responses do not name in `Vary`. Names are
    /// case-insensitive; they replace any set before. None by default.
    pub fn key_headers<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        self.key_headers = names
            .into_iter()
            .map(|name| name.as_ref().to_owned())
            .collect();
        self
    }

    /// Stores responses that carry no explicit freshness (no `s-maxage`, `max-age` or
    /// `Expires`) for `ttl`: RFC 9111 heuristic freshness, chosen by you, in place of the one
    /// from `Last-Modified` (see [`heuristic_freshness`](Self::heuristic_freshness)). It
    /// applies to the statuses RFC 9110 calls heuristically cacheable (200, 203, 204, 300, 301,
    /// 308, 404, 405, 410, 414, 501) and to responses marked `public`.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Whether a response without explicit freshness but with `Last-Modified` is stored for a
    /// tenth of the time since it was modified, at most a day (RFC 9111 section 4.2.2; the
    /// statuses as for [`default_ttl`](Self::default_ttl)). A response modified an hour ago
    /// is then fresh for six minutes. Off by default (on in the
    /// [`reverse_proxy`](Self::reverse_proxy) preset): such responses are stored only with a
    /// `default_ttl`, since caching what the service never marked cacheable is a change a
    /// service should opt into.
    pub fn heuristic_freshness(mut self, enabled: bool) -> Self {
        self.heuristic_freshness = enabled;
        self
    }

    /// Whether responses with explicit freshness are stored whatever their final status (all
    /// but `206` and `304`: `201`, `302`, `307`, `400`, `403`, `500`, `503`...), as RFC 9111
    /// section 3 allows. Off by default (on in the [`reverse_proxy`](Self::reverse_proxy)
    /// preset): only the statuses RFC 9110 calls heuristically cacheable (200, 203, 204,
    /// 300, 301, 308, 404, 405, 410, 414, 501) are stored, so that an error page that
    /// carries a `max-age` by accident is not served for its lifetime.
    pub fn store_any_status(mut self, enabled: bool) -> Self {
        self.any_status = enabled;
        self
    }

    /// The targeted cache-control fields (RFC 9213) this cache obeys, in order of preference;
    /// `CDN-Cache-Control` by default. When a response carries one of them with a valid
    /// value (a Structured Field Dictionary, RFC 8941), its directives alone decide whether
    /// and for how long the response is stored, in place of `Cache-Control` and `Expires`:
    /// an origin can give its CDN tier a longer or shorter lifetime than browsers get, or keep
    /// it from storing a response at all (`no-store`, `private`). An invalid value is ignored.
    /// The field is passed on to the client unchanged. An empty list turns the feature off.
    /// Names are case-insensitive; they replace any set before.
    pub fn targeted_cache_control<I, N>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: AsRef<str>,
    {
        self.targeted = names
            .into_iter()
            .map(|name| name.as_ref().to_owned())
            .collect();
        self
    }

    /// Whether a response to a request with `Authorization` whose only permission to be
    /// stored is `must-revalidate` is served to every request for the URL, as RFC 9111
    /// section 3.5 allows, or only to requests with the same `Authorization` value. Off by
    /// default (on in the [`reverse_proxy`](Self::reverse_proxy) preset): services send
    /// `must-revalidate` on per-user pages without meaning to share them, and a stale one
    /// revalidated with another user's request would be answered from the first user's
    /// response on a 304. `public` and `s-maxage` share such responses in any case.
    pub fn share_must_revalidate(mut self, enabled: bool) -> Self {
        self.share_must_revalidate = enabled;
        self
    }

    /// How long past its freshness a response with a validator (`ETag` or `Last-Modified`)
    /// stays stored, so that the next request revalidates it with a conditional request
    /// (`If-None-Match`, `If-Modified-Since`) and, on `304 Not Modified`, is served from the
    /// cache with the body the inner service did not send again. 5 minutes by default
    /// ([`DEFAULT_KEEP_STALE`]); zero drops responses when their freshness ends. A response's
    /// own `stale-while-revalidate` or `stale-if-error` keeps it longer if they ask for more.
    pub fn keep_stale(mut self, window: Duration) -> Self {
        self.keep_stale = window;
        self
    }

    /// Serves a stored response up to `window` past its freshness when the inner service
    /// fails or answers 500, 502, 503 or 504 (RFC 9111 section 4.2.4), unless the response
    /// says `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache`. Off (zero) by
    /// default, since a stale page in place of an error is a choice a service makes; one hour
    /// ([`REVERSE_PROXY_STALE_ON_ERROR`]) in the [`reverse_proxy`](Self::reverse_proxy)
    /// preset. A response's own `stale-if-error` (RFC 5861) allows it in any case, for as
    /// long as it says. Responses are kept that long past their freshness.
    pub fn serve_stale_on_error(mut self, window: Duration) -> Self {
        self.stale_on_error = window;
        self
    }

    /// The settings of a reverse proxy in front of an origin you own, whose headers are
    /// written for caches, as a shared cache such as Squid or Varnish runs:
    /// [`heuristic_freshness`](Self::heuristic_freshness) and
    /// [`store_any_status`](Self::store_any_status) and
    /// [`share_must_revalidate`](Self::share_must_revalidate) on, and
    /// [`serve_stale_on_error`](Self::serve_stale_on_error) for an hour. Setters called after
    /// it change single settings back.
    pub fn reverse_proxy(self) -> Self {
        self.heuristic_freshness(true)
            .store_any_status(true)
            .share_must_revalidate(true)
            .serve_stale_on_error(REVERSE_PROXY_STALE_ON_ERROR)
    }

    /// Stores no response for longer than `ttl`, whatever its headers say (the engine's
    /// `max_ttl` applies in any case).
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = Some(ttl);
        self
    }

    /// Adds `x-cache: HIT` to responses served from the cache and `x-cache: MISS` to responses
    /// to `GET` and `HEAD` that reached the inner service, and the same in the standard form,
    /// `Cache-Status` (RFC 9211): `cache-toolkit; hit; ttl=55` (seconds of freshness left),
    /// `cache-toolkit; fwd=uri-miss; stored` (nothing fresh was stored; the response was), or
    /// `fwd=request` (the request's `no-cache`, `max-age=0` or `no-store` sent it on). Off by
    /// default.
    pub fn cache_status_header(mut self, on: bool) -> Self {
        self.cache_status_header = on;
        self
    }

    /// The name this cache gives itself in `Cache-Status`; default `cache-toolkit`. Several
    /// caches on one path each add their own entry, so a name per tier tells them apart. It
    /// must be a token (letters, digits and `!#$%&'*+-.^_`|~:/`, starting with a letter).
    pub fn cache_status_name(mut self, name: impl Into<String>) -> Self {
        self.cache_name = name.into();
        self
    }

    /// Whether requests' `Cache-Control` is honoured (`no-cache`, `no-store`, `max-age`,
    /// `min-fresh`, `only-if-cached`; on by default). Turn it off where clients must not be
    /// able to make every request reach the inner service.
    pub fn honour_request_directives(mut self, on: bool) -> Self {
        self.honour_request_directives = on;
        self
    }

    /// Called with every error of the engine. The request goes on as if the cache missed (or,
    /// for a write, as if it had not been stored) and
    /// [`HttpCacheStats::engine_errors`] counts it; this hook is for logging it.
    pub fn on_engine_error(mut self, hook: impl Fn(&CacheError) + Send + Sync + 'static) -> Self {
        self.on_engine_error = Some(Arc::new(hook));
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// [`CacheError::InvalidConfig`] when the engine does not offer the remaining TTL (a
    /// variant list is rewritten with the lifetime it has left), a key header or a targeted
    /// cache-control name is not a valid header name, or when the engine's keys (`capabilities().max_key_len`) have no room for a key of the layer
    /// (`http:` and at least 32 hex digits of a SHA-256), or the `Cache-Status` name is not a
    /// token.
    pub fn build(self) -> cache_core::Result<HttpCacheLayer<E>> {
        let capabilities = self.engine.capabilities();
        // A variant list keeps its remaining lifetime when a variant is added to it.
        capabilities.require(cache_core::Operation::RemainingTtl, "HTTP caches")?;
        if !is_token(&self.cache_name) {
            return Err(CacheError::invalid_config(format!(
                "the Cache-Status name {:?} is not a token (letters, digits and !#$%&'*+-.^_`|~:/, \
                 starting with a letter)",
                self.cache_name
            )));
        }
        let targeted = self
            .targeted
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    CacheError::invalid_config(format!(
                        "targeted cache-control field {name:?} is not a header name"
                    ))
                })
            })
            .collect::<cache_core::Result<Vec<_>>>()?;
        let mut key_headers = Vec::with_capacity(self.key_headers.len());
        for name in &self.key_headers {
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                CacheError::invalid_config(format!("key header {name:?} is not a header name"))
            })?;
            key_headers.push(header);
        }
        let keys = Keys::new(key_headers, capabilities.max_key_len).ok_or_else(|| {
            CacheError::invalid_config(format!(
                "the engine's keys hold {} bytes; the HTTP cache needs {}",
                capabilities.max_key_len,
                KEY_PREFIX.len() + MIN_HEX_DIGITS
            ))
        })?;
        let max_ttl = self
            .max_ttl
            .map_or(capabilities.max_ttl, |ttl| ttl.min(capabilities.max_ttl));
        let settings = Settings {
            max_body_size: capabilities
                .max_value_size
                .map_or(self.max_body_size, |max| max.min(self.max_body_size)),
            max_value_size: capabilities.max_value_size,
            default_ttl: self.default_ttl,
            heuristic_freshness: self.heuristic_freshness,
            any_status: self.any_status,
            targeted,
            share_must_revalidate: self.share_must_revalidate,
            max_ttl,
            keep_stale: self.keep_stale,
            stale_on_error: self.stale_on_error,
            cache_status_header: self.cache_status_header,
            cache_name: self.cache_name,
            honour_request_directives: self.honour_request_directives,
        };
        Ok(HttpCacheLayer {
            state: Arc::new(State {
                engine: self.engine,
                keys,
                flights: Flights::default(),
                counters: Counters::default(),
                settings,
                on_engine_error: self.on_engine_error,
            }),
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_body_size: usize,
    pub(crate) max_value_size: Option<usize>,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) heuristic_freshness: bool,
    pub(crate) any_status: bool,
    /// The targeted cache-control fields obeyed, in order (RFC 9213).
    pub(crate) targeted: Vec<HeaderName>,
    /// Whether `must-revalidate` alone shares a response to an authorized request.
    pub(crate) share_must_revalidate: bool,
    pub(crate) max_ttl: Duration,
    /// How long past its freshness a response with a validator is kept, to be revalidated.
    pub(crate) keep_stale: Duration,
    /// How long past its freshness a response may be served when the inner service fails.
    pub(crate) stale_on_error: Duration,
    pub(crate) cache_status_header: bool,
    /// This cache's name in `Cache-Status`, a token.
    pub(crate) cache_name: String,
    pub(crate) honour_request_directives: bool,
}

pub(crate) struct State<E> {
    pub(crate) engine: E,
    pub(crate) keys: Keys,
    pub(crate) flights: Flights,
    pub(crate) counters: Counters,
    pub(crate) settings: Settings,
    pub(crate) on_engine_error: Option<ErrorHook>,
}

/// What an [`HttpCacheLayer`] has done, from [`HttpCacheLayer::stats`] or
/// [`HttpCache::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpCacheStats {
    /// Responses served from the engine.
    pub hits: u64,
    /// Requests that waited for another request of the same key and were served its response
    /// without reaching the inner service (single-flight).
    pub coalesced: u64,
    /// `GET` and `HEAD` requests that reached the inner service.
    pub misses: u64,
    /// Responses written to the engine.
    pub stores: u64,
    /// Conditional requests sent to revalidate a stale stored response.
    pub revalidations: u64,
    /// Revalidations answered `304 Not Modified`: the stored response was updated and served
    /// without its body crossing again.
    pub revalidated: u64,
    /// Stale responses served (within `stale-while-revalidate`, `stale-if-error`, a request's
    /// `max-stale`, or [`serve_stale_on_error`](HttpCacheBuilder::serve_stale_on_error));
    /// also counted in `hits`.
    pub stale_served: u64,
    /// Responses to `GET` misses that the rules forbid storing (status, `Cache-Control`,
    /// `Set-Cookie`, `Vary: *`, `Authorization`, no freshness).
    pub not_storable: u64,
    /// Responses that could be stored but whose body was over the size limit.
    pub too_large: u64,
    /// Requests of other methods, passed to the inner service untouched.
    pub passed: u64,
    /// Stored entries removed because an unsafe request (`POST`, `PUT`, `DELETE`...) to the
    /// same URI succeeded.
    pub invalidations: u64,
    /// Errors of the engine, absorbed (the request went on as a miss).
    pub engine_errors: u64,
    /// Values under the layer's keys that were not a valid entry (read as misses).
    pub corrupt_entries: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) revalidations: AtomicU64,
    pub(crate) revalidated: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) not_storable: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) passed: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) engine_errors: AtomicU64,
    pub(crate) corrupt_entries: AtomicU64,
}

pub(crate) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> HttpCacheStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        HttpCacheStats {
            hits: read(&self.hits),
            coalesced: read(&self.coalesced),
            misses: read(&self.misses),
            stores: read(&self.stores),
            revalidations: read(&self.revalidations),
            revalidated: read(&self.revalidated),
            stale_served: read(&self.stale_served),
            not_storable: read(&self.not_storable),
            too_large: read(&self.too_large),
            passed: read(&self.passed),
            invalidations: read(&self.invalidations),
            engine_errors: read(&self.engine_errors),
            corrupt_entries: read(&self.corrupt_entries),
        }
    }
}
