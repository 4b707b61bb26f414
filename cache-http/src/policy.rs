//! Whether a response may be stored by a shared cache, for how long, and under which scope
//! (RFC 9111 sections 3, 3.5 and 4.2).

use std::time::{Duration, SystemTime};

use http::header::{AUTHORIZATION, DATE, ETAG, EXPIRES, LAST_MODIFIED, SET_COOKIE, VARY};
use http::{HeaderMap, HeaderName, StatusCode};

use crate::directives::{self, ResponseDirectives};

/// The most `Vary` names a stored response may list; more is refused rather than stored.
pub(crate) const MAX_VARY_NAMES: usize = 32;

/// The share of the time since `Last-Modified` that heuristic freshness grants (RFC 9111
/// section 4.2.2 suggests 10 %).
pub(crate) const HEURISTIC_FRACTION: u32 = 10;
/// The longest heuristic freshness.
pub(crate) const MAX_HEURISTIC: Duration = Duration::from_secs(24 * 60 * 60);

/// Statuses this cache may store without explicit freshness: those RFC 9110 section 15.1
/// makes heuristically cacheable, less 206 (ranges are not assembled here).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses this cache stores at all, given explicit freshness (RFC 9111 section 3): every
/// final status, less 206 (ranges are not assembled here) and 304 (not a whole response).
fn status_is_storable(status: StatusCode) -> bool {
    status.as_u16() >= 200 && !matches!(status.as_u16(), 206 | 304)
}

/// Statuses whose caching rules RFC 9110 defines, which `must-understand` lets this cache store.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421 | 422 | 426 | 500..=505
    )
}

/// Who a stored response may be served to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Any request for the same key.
    Shared,
    /// Only requests with the same `Authorization` value (a response to an authorized request
    /// whose only permission is `must-revalidate`).
    User,
}

/// Why a response to a `GET` is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotStorable {
    Status,
    NoStore,
    Private,
    SetCookie,
    VaryStar,
    Authorization,
    NoFreshness,
    Stale,
    Unreadable,
}

/// What the policy decided for a response that may be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Storable {
    pub(crate) scope: Scope,
    /// The freshness lifetime (s-maxage, max-age, Expires - Date, or the default TTL).
    pub(crate) lifetime: Duration,
    /// The corrected initial age (RFC 9111 section 4.2.3).
    pub(crate) age: Duration,
    /// The `Vary` names, lowercased, sorted and without duplicates.
    pub(crate) vary: Vec<HeaderName>,
    /// Fields that `no-cache="..."` or `private="..."` name: left out of the stored response.
    pub(crate) strip: Vec<HeaderName>,
    /// Whether it carries a validator (`ETag` or `Last-Modified`), so that it can be
    /// revalidated once stale.
    pub(crate) validator: bool,
    /// How long past its freshness its own directives let it be served
    /// (`stale-while-revalidate`, `stale-if-error`, the longer).
    pub(crate) stale_window: Duration,
}

/// Whether a response carries a validator a conditional request can use (RFC 9110 section 8.8).
pub(crate) fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED)
}

/// The inputs of a decision besides the response's headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// Whether the request carried `Authorization`.
    pub(crate) authorized: bool,
    /// How long the inner service took to produce the response head.
    pub(crate) response_delay: Duration,
    /// The freshness given to responses without explicit freshness, if any.
    pub(crate) default_ttl: Option<Duration>,
    /// Whether, without a default, `Last-Modified` gives heuristic freshness.
    pub(crate) heuristic: bool,
    /// Whether every final status but 206 and 304 may be stored with explicit freshness;
    /// otherwise only the heuristically cacheable ones.
    pub(crate) any_status: bool,
    /// The targeted cache-control fields this cache obeys (RFC 9213), in order.
    pub(crate) targeted: &'a [HeaderName],
    /// Whether a response to an authorized request that says only `must-revalidate` is
    /// shared with every request, as RFC 9111 section 3.5 allows, rather than kept for
    /// requests with the same `Authorization`.
    pub(crate) share_must_revalidate: bool,
    pub(crate) now: SystemTime,
}

/// Decides whether a response to a `GET` may be stored by a shared cache.
pub(crate) fn decide(
    status: StatusCode,
    headers: &HeaderMap,
    context: Context<'_>,
) -> Result<Storable, NotStorable> {
    let status_allowed = if context.any_status {
        status_is_storable(status)
    } else {
        heuristically_cacheable(status)
    };
    if !status_allowed {
        return Err(NotStorable::Status);
    }
    let directives = ResponseDirectives::parse(headers, context.targeted);
    if directives.unreadable {
        return Err(NotStorable::Unreadable);
    }
    // `must-understand` overrides `no-store` for a status whose rules this cache knows, and
    // forbids storing any other (RFC 9111 section 5.2.2.3).
    if directives.must_understand && !understood(status) {
        return Err(NotStorable::Status);
    }
    if directives.no_store && !directives.must_understand {
        return Err(NotStorable::NoStore);
    }
    if directives.private {
        return Err(NotStorable::Private);
    }
    if headers.contains_key(SET_COOKIE) {
        return Err(NotStorable::SetCookie);
    }
    let vary = vary_names(headers).ok_or(NotStorable::VaryStar)?;
    // Without credentials, or with a response that says it may be shared (public, s-maxage).
    let shareable = directives.public || directives.s_maxage.is_some();
    let scope = if !context.authorized
        || shareable
        || (directives.must_revalidate && context.share_must_revalidate)
    {
        Scope::Shared
    } else if directives.must_revalidate {
        Scope::User
    } else {
        return Err(NotStorable::Authorization);
    };
    let lifetime = match explicit_lifetime(headers, &directives, &context) {
        Some(lifetime) => lifetime,
        // `no-cache` allows storing a response that is revalidated on every use (RFC 9111
        // section 5.2.2.4); with a validator, that saves the body on a 304.
        None if directives.no_cache && has_validator(headers) => Duration::ZERO,
        // `public` allows heuristics on any status (RFC 9111 section 4.2.2).
        None if heuristically_cacheable(status) || directives.public => {
            heuristic_lifetime(headers, &context).ok_or(NotStorable::NoFreshness)?
        }
        None => return Err(NotStorable::NoFreshness),
    };
    let age = corrected_initial_age(headers, &context);
    let validator = has_validator(headers);
    let stale_window = [directives.stale_while_revalidate, directives.stale_if_error]
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .max()
        .unwrap_or_default();
    // A response stale on arrival is worth storing only to be revalidated, or served stale
    // where its directives allow.
    if lifetime <= age && !validator && stale_window.is_zero() {
        return Err(NotStorable::Stale);
    }
    let strip = directives
        .qualified_fields
        .iter()
        .filter_map(|field| HeaderName::from_bytes(field.as_bytes()).ok())
        .collect();
    Ok(Storable {
        scope,
        lifetime,
        age,
        vary,
        strip,
        validator,
        stale_window,
    })
}

/// RFC 9111 section 4.2.1: s-maxage for a shared cache, then max-age, then Expires - Date;
/// `None` without any. `Some(ZERO)` for malformed values.
fn explicit_lifetime(
    headers: &HeaderMap,
    directives: &ResponseDirectives,
    context: &Context<'_>,
) -> Option<Duration> {
    if let Some(value) = directives.s_maxage.or(directives.max_age) {
        return Some(value.unwrap_or(Duration::ZERO));
    }
    // A targeted field replaces `Expires` as well as `Cache-Control` (RFC 9213 section 2.2).
    if headers.contains_key(EXPIRES) && !directives.targeted {
        // An invalid Expires (such as "0") means already expired (section 5.3).
        let Some(expires) = http_date(headers, &EXPIRES) else {
            return Some(Duration::ZERO);
        };
        let date = http_date(headers, &DATE).unwrap_or(context.now);
        return Some(expires.duration_since(date).unwrap_or(Duration::ZERO));
    }
    None
}

/// Freshness without explicit freshness (RFC 9111 section 4.2.2): the configured default, or
/// else a tenth of the time since `Last-Modified` (at the response's `Date`, or now), at most
/// a day. `None` when neither gives any.
fn heuristic_lifetime(headers: &HeaderMap, context: &Context<'_>) -> Option<Duration> {
    if let Some(ttl) = context.default_ttl {
        return Some(ttl);
    }
    if !context.heuristic {
        return None;
    }
    let modified = http_date(headers, &LAST_MODIFIED)?;
    let date = http_date(headers, &DATE).unwrap_or(context.now);
    let lifetime = (date.duration_since(modified).ok()? / HEURISTIC_FRACTION).min(MAX_HEURISTIC);
    (!lifetime.is_zero()).then_some(lifetime)
}

/// RFC 9111 section 4.2.3, with the response time taken as now: the larger of the apparent age
/// (now - Date) and the `Age` header plus the time the inner service took.
fn corrected_initial_age(headers: &HeaderMap, context: &Context<'_>) -> Duration {
    let apparent = http_date(headers, &DATE)
        .and_then(|date| context.now.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    let corrected = directives::age(headers).unwrap_or(Duration::ZERO) + context.response_delay;
    apparent.max(corrected)
}

/// A header holding one HTTP-date; `None` when absent, repeated or invalid.
pub(crate) fn http_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    crate::date::parse(value.to_str().ok()?)
}

/// The names a response varies on, normalized; `None` for `Vary: *`, an unreadable `Vary`, or
/// more than [`MAX_VARY_NAMES`] names.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for line in headers.get_all(VARY) {
        for item in line.to_str().ok()?.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                return None;
            }
            names.push(HeaderName::from_bytes(item.as_bytes()).ok()?);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    (names.len() <= MAX_VARY_NAMES).then_some(names)
}

/// Whether a request carries credentials that RFC 9111 section 3.5 restricts.
pub(crate) fn is_authorized(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn context() -> Context<'static> {
        Context {
            authorized: false,
            response_delay: Duration::ZERO,
            default_ttl: None,
            heuristic: true,
            any_status: true,
            share_must_revalidate: false,
            targeted: Box::leak(Box::new([HeaderName::from_static(
                crate::targeted::CDN_CACHE_CONTROL,
            )])),
            now: SystemTime::now(),
        }
    }

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn decide_ok(pairs: &[(&str, &str)]) -> Result<Storable, NotStorable> {
        decide(StatusCode::OK, &with(pairs), context())
    }

    #[test]
    fn explicit_freshness_is_stored_and_s_maxage_wins() {
        let s = decide_ok(&[("cache-control", "max-age=60, s-maxage=5")]).unwrap();
        assert_eq!(s.lifetime, Duration::from_secs(5));
        assert_eq!(s.scope, Scope::Shared);
        let s = decide_ok(&[("cache-control", "max-age=60")]).unwrap();
        assert_eq!(s.lifetime, Duration::from_secs(60));
    }

    /// The cases of the conformance suite's `cdn-cache-control` tests (RFC 9213).
    #[test]
    fn cdn_cache_control_replaces_cache_control_and_expires() {
        let past = "Thu, 01 Jan 2015 00:00:00 GMT";
        let lifetime = |pairs: &[(&str, &str)]| decide_ok(pairs).map(|s| s.lifetime.as_secs());
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=1"),
                ("cdn-cache-control", "max-age=3600")
            ]),
            Ok(3600)
        );
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=3600"),
                ("cdn-cache-control", "max-age=1")
            ]),
            Ok(1)
        );
        assert_eq!(
            lifetime(&[("cdn-cache-control", "max-age=3600"), ("expires", past)]),
            Ok(3600)
        );
        // A fresh targeted lifetime stores what Cache-Control alone would not.
        assert_eq!(
            lifetime(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=10000")
            ]),
            Ok(10000)
        );
        for (cdn, refused) in [
            ("no-store", NotStorable::NoStore),
            ("private", NotStorable::Private),
        ] {
            let pairs = [
                ("cache-control", "max-age=10000"),
                ("cdn-cache-control", cdn),
            ];
            assert_eq!(decide_ok(&pairs), Err(refused), "{cdn}");
        }
        // Without a lifetime of its own, the targeted field still replaces Expires.
        let far = "Thu, 01 Jan 2099 00:00:00 GMT";
        assert_eq!(
            lifetime(&[("cdn-cache-control", "max-age=0"), ("expires", far)]),
            Err(NotStorable::Stale)
        );
        // An invalid field is ignored: Cache-Control decides.
        for invalid in ["max-age=10000, &&&&&", "max-age=\"10000\""] {
            let pairs = [
                ("cache-control", "no-store"),
                ("cdn-cache-control", invalid),
            ];
            assert_eq!(decide_ok(&pairs), Err(NotStorable::NoStore), "{invalid}");
        }
        // With no targeted names configured, the field means nothing.
        let off = Context {
            targeted: &[],
            ..context()
        };
        let headers = with(&[
            ("cache-control", "max-age=5"),
            ("cdn-cache-control", "no-store"),
        ]);
        assert!(decide(StatusCode::OK, &headers, off).is_ok());
    }

    #[test]
    fn must_understand_overrides_no_store_for_known_statuses_only() {
        let pairs = [("cache-control", "must-understand, no-store, max-age=60")];
        assert!(decide_ok(&pairs).is_ok());
        let unknown = StatusCode::from_u16(299).unwrap();
        assert_eq!(
            decide(unknown, &with(&pairs), context()),
            Err(NotStorable::Status)
        );
    }

    #[test]
    fn what_a_shared_cache_must_not_store() {
        let cases: &[(&[(&str, &str)], NotStorable)] = &[
            (
                &[("cache-control", "no-store, max-age=60")],
                NotStorable::NoStore,
            ),
            (
                &[("cache-control", "private, max-age=60")],
                NotStorable::Private,
            ),
            (
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
                NotStorable::SetCookie,
            ),
            (
                &[("cache-control", "max-age=60"), ("vary", "accept, *")],
                NotStorable::VaryStar,
            ),
            (&[], NotStorable::NoFreshness),
            (&[("cache-control", "max-age=0")], NotStorable::Stale),
            (&[("cache-control", "max-age=x")], NotStorable::Stale),
            (
                &[("cache-control", "max-age=60"), ("age", "60")],
                NotStorable::Stale,
            ),
            (&[("expires", "0")], NotStorable::Stale),
        ];
        for (headers, why) in cases {
            assert_eq!(decide_ok(headers), Err(*why), "{headers:?}");
        }
        let ok = with(&[("cache-control", "max-age=60")]);
        for status in [206, 304] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(decide(status, &ok, context()), Err(NotStorable::Status));
        }
        // Any other final status is stored with explicit freshness (RFC 9111 section 3), when
        // allowed; by default only the heuristically cacheable ones are.
        let narrow = Context {
            any_status: false,
            ..context()
        };
        for status in [201, 299, 302, 303, 307, 400, 403, 499, 500, 503, 599] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(decide(status, &ok, context()).is_ok(), "{status}");
            assert_eq!(decide(status, &ok, narrow), Err(NotStorable::Status));
        }
        for status in [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(decide(status, &ok, narrow).is_ok(), "{status}");
        }
    }

    #[test]
    fn heuristic_freshness_is_a_tenth_of_the_time_since_last_modified() {
        let now = SystemTime::now();
        let at = |ago: u64| httpdate::fmt_http_date(now - Duration::from_secs(ago));
        let ctx = Context { now, ..context() };
        let (day_old, date) = (at(86_400), at(0));
        let headers = with(&[("last-modified", &day_old), ("date", &date)]);
        let s = decide(StatusCode::OK, &headers, ctx).unwrap();
        assert_eq!(s.lifetime, Duration::from_secs(8_640));
        // Capped at a day.
        let year_old = at(365 * 86_400);
        let old = with(&[("last-modified", &year_old), ("date", &date)]);
        assert_eq!(
            decide(StatusCode::OK, &old, ctx).unwrap().lifetime,
            MAX_HEURISTIC
        );
        // Only for heuristically cacheable statuses, or with `public`.
        for status in [404, 410, 501] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(decide(status, &headers, ctx).is_ok(), "{status}");
        }
        for status in [201, 403, 502, 503, 599] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(
                decide(status, &headers, ctx),
                Err(NotStorable::NoFreshness),
                "{status}"
            );
        }
        let public = with(&[
            ("last-modified", &day_old),
            ("date", &date),
            ("cache-control", "public"),
        ]);
        assert!(decide(StatusCode::from_u16(599).unwrap(), &public, ctx).is_ok());
        // Modified just now, or in the future, or unreadable: no heuristic freshness.
        for modified in [date.as_str(), "tomorrow"] {
            let h = with(&[("last-modified", modified), ("date", &date)]);
            assert_eq!(
                decide(StatusCode::OK, &h, ctx),
                Err(NotStorable::NoFreshness)
            );
        }
        // Turned off, or overridden by a configured default.
        let off = Context {
            heuristic: false,
            ..ctx
        };
        assert_eq!(
            decide(StatusCode::OK, &headers, off),
            Err(NotStorable::NoFreshness)
        );
        let default = Context {
            default_ttl: Some(Duration::from_secs(9)),
            ..ctx
        };
        assert_eq!(
            decide(StatusCode::OK, &headers, default).unwrap().lifetime,
            Duration::from_secs(9)
        );
    }

    #[test]
    fn default_ttl_applies_only_without_explicit_freshness() {
        let mut ctx = context();
        ctx.default_ttl = Some(Duration::from_secs(9));
        let s = decide(StatusCode::NOT_FOUND, &HeaderMap::new(), ctx).unwrap();
        assert_eq!(s.lifetime, Duration::from_secs(9));
        let explicit = with(&[("cache-control", "max-age=0")]);
        assert_eq!(
            decide(StatusCode::OK, &explicit, ctx),
            Err(NotStorable::Stale)
        );
    }

    #[test]
    fn expires_counts_from_date() {
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now - Duration::from_secs(100));
        let expires = httpdate::fmt_http_date(now + Duration::from_secs(100));
        let s = decide_ok(&[("date", &date), ("expires", &expires)]).unwrap();
        assert!(s.lifetime >= Duration::from_secs(199), "{s:?}");
        assert!(s.age >= Duration::from_secs(99), "apparent age {s:?}");
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(decide_ok(&[("expires", &past)]), Err(NotStorable::Stale));
    }

    #[test]
    fn authorization_needs_permission() {
        let mut ctx = context();
        ctx.authorized = true;
        let scope = |cc: &str| {
            decide(StatusCode::OK, &with(&[("cache-control", cc)]), ctx).map(|s| s.scope)
        };
        assert_eq!(scope("max-age=60"), Err(NotStorable::Authorization));
        assert_eq!(scope("public, max-age=60"), Ok(Scope::Shared));
        assert_eq!(scope("s-maxage=60"), Ok(Scope::Shared));
        assert_eq!(scope("must-revalidate, max-age=60"), Ok(Scope::User));
        let shared = Context {
            authorized: true,
            share_must_revalidate: true,
            ..context()
        };
        let headers = with(&[("cache-control", "must-revalidate, max-age=60")]);
        assert_eq!(
            decide(StatusCode::OK, &headers, shared).map(|s| s.scope),
            Ok(Scope::Shared)
        );
    }

    #[test]
    fn vary_names_are_normalized() {
        let names = vary_names(&with(&[
            ("vary", "Accept-Language, accept"),
            ("vary", "ACCEPT"),
        ]))
        .unwrap();
        assert_eq!(names, vec!["accept", "accept-language"]);
        assert_eq!(vary_names(&with(&[("vary", "*")])), None);
        assert_eq!(vary_names(&with(&[("vary", "a b")])), None);
    }
}
