//! `Cache-Control` parsing (RFC 9111 section 5.2), for responses and for requests.

use std::time::Duration;

use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderName};

/// The largest delta-seconds value honoured: RFC 9111 section 1.2.2 asks caches to read larger
/// values as 2^31 seconds.
pub(crate) const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// A delta-seconds value: `Ok` when well formed, `Err` when present but malformed or given
/// twice with different values (RFC 9111 section 4.2.1: then the response is stale).
pub(crate) type Delta = Result<Duration, ()>;

/// What a response's `Cache-Control` says to a shared cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) no_store: bool,
    /// `no-cache` without a field list: stored, but never served without revalidation.
    pub(crate) no_cache: bool,
    /// `private` without a field list: not stored by a shared cache.
    pub(crate) private: bool,
    /// The fields that `no-cache="..."` and `private="..."` name (lowercased): the response may
    /// be stored and served without them (RFC 9111 sections 5.2.2.4 and 5.2.2.7).
    pub(crate) qualified_fields: Vec<String>,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) max_age: Option<Delta>,
    pub(crate) s_maxage: Option<Delta>,
    /// RFC 5861: how long past its freshness the response may be served while it is
    /// revalidated in the background.
    pub(crate) stale_while_revalidate: Option<Delta>,
    /// RFC 5861: how long past its freshness the response may be served when revalidating it
    /// fails (an error, or a 500, 502, 503 or 504).
    pub(crate) stale_if_error: Option<Delta>,
    /// `must-understand`: store only a status whose caching rules this cache knows, and then
    /// regardless of `no-store` (RFC 9111 section 5.2.2.3).
    pub(crate) must_understand: bool,
    /// A `Cache-Control` line that is not visible ASCII (`obs-text`), or not parseable.
    pub(crate) unreadable: bool,
    /// Read from a targeted field such as `CDN-Cache-Control` (RFC 9213): `Cache-Control` and
    /// `Expires` are then ignored.
    pub(crate) targeted: bool,
}

/// What a request's `Cache-Control` asks of the cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub(crate) no_store: bool,
    pub(crate) no_cache: bool,
    pub(crate) max_age: Option<Delta>,
    pub(crate) min_fresh: Option<Delta>,
    /// `max-stale`: `Some(None)` without a value (any staleness), `Some(Some(d))` with one.
    /// A malformed value is ignored.
    pub(crate) max_stale: Option<Option<Duration>>,
    pub(crate) only_if_cached: bool,
}

impl ResponseDirectives {
    /// Whether a stale response may never be served without revalidation, whatever a client
    /// or the layer's settings allow (RFC 9111 sections 4.2.4 and 5.2.2: `must-revalidate`,
    /// `proxy-revalidate`, and `s-maxage`, which implies the latter; `no-cache`, which
    /// requires revalidation even when fresh).
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }

    /// The directives this cache follows: those of the first valid field of `targeted`
    /// (RFC 9213), or else those of `Cache-Control`.
    pub(crate) fn parse(headers: &HeaderMap, targeted: &[HeaderName]) -> Self {
        crate::targeted::directives(headers, targeted)
            .unwrap_or_else(|| Self::parse_cache_control(headers))
    }

    /// The directives of `Cache-Control` alone.
    pub(crate) fn parse_cache_control(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        let readable = each_directive(headers, |name, value| match name {
            "no-store" => out.no_store = true,
            "no-cache" | "private" => match value {
                Some(fields) if !fields.trim().is_empty() => out.qualified_fields.extend(
                    fields
                        .split(',')
                        .map(|field| field.trim().to_ascii_lowercase())
                        .filter(|field| !field.is_empty()),
                ),
                _ if name == "private" => out.private = true,
                _ => out.no_cache = true,
            },
            "public" => out.public = true,
            "must-revalidate" => out.must_revalidate = true,
            "proxy-revalidate" => out.proxy_revalidate = true,
            "must-understand" => out.must_understand = true,
            "max-age" => merge(&mut out.max_age, delta(value)),
            "s-maxage" => merge(&mut out.s_maxage, delta(value)),
            "stale-while-revalidate" => merge(&mut out.stale_while_revalidate, delta(value)),
            "stale-if-error" => merge(&mut out.stale_if_error, delta(value)),
            _ => {}
        });
        out.unreadable = !readable;
        out
    }
}

impl RequestDirectives {
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut out = Self::default();
        each_directive(headers, |name, value| match name {
            "no-store" => out.no_store = true,
            "no-cache" => out.no_cache = true,
            "max-age" => merge(&mut out.max_age, delta(value)),
            "min-fresh" => merge(&mut out.min_fresh, delta(value)),
            "max-stale" => match value {
                None => out.max_stale = Some(None),
                Some(value) => {
                    if let Ok(limit) = delta(Some(value)) {
                        out.max_stale = Some(Some(limit));
                    }
                }
            },
            "only-if-cached" => out.only_if_cached = true,
            _ => {}
        });
        out
    }

    /// Whether the client refuses stored responses without revalidation (`no-cache`, or
    /// `max-age=0`, or a malformed `max-age`, read as 0).
    pub(crate) fn wants_reload(&self) -> bool {
        self.no_cache || matches!(self.max_age, Some(Err(()) | Ok(Duration::ZERO)))
    }
}

/// A second occurrence of a directive must agree with the first, or the value is malformed.
fn merge(slot: &mut Option<Delta>, value: Delta) {
    *slot = match slot.take() {
        None => Some(value),
        Some(Ok(first)) if value == Ok(first) => Some(Ok(first)),
        Some(_) => Some(Err(())),
    };
}

/// delta-seconds (`1*DIGIT`, RFC 9111 section 1.2.2), also accepted in quoted form.
fn delta(value: Option<&str>) -> Delta {
    let value = value.ok_or(())?;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    // Any run of digits: saturate rather than overflow.
    let seconds = value
        .parse::<u64>()
        .unwrap_or(MAX_DELTA_SECONDS)
        .min(MAX_DELTA_SECONDS);
    Ok(Duration::from_secs(seconds))
}

/// Parses the `Age` header (RFC 9111 section 5.1): delta-seconds; `None` when absent or invalid.
///
/// `Age` is a singleton, but a list (`7200, 0`) or several lines are read as the spec says: the
/// first member of the first line counts, the rest is dropped. A parameter after the number
/// (`7200;foo=bar`) is dropped too, as the common caches do. So a response the origin declared
/// old is never taken for a new one; a value that is not a number at all (`abc`, `-5`, `1.5`)
/// is ignored.
pub(crate) fn age(headers: &HeaderMap) -> Option<Duration> {
    let line = headers.get(http::header::AGE)?.to_str().ok()?;
    let first = line.split(',').next().unwrap_or_default();
    let number = first.split(';').next().unwrap_or_default();
    delta(Some(number.trim())).ok()
}

/// Calls `each` with every directive of every `Cache-Control` line: its name lowercased and its
/// value (unquoted) if it has one. Returns `false` when a line could not be read.
fn each_directive(headers: &HeaderMap, mut each: impl FnMut(&str, Option<&str>)) -> bool {
    let mut readable = true;
    for line in headers.get_all(CACHE_CONTROL) {
        let Ok(line) = line.to_str() else {
            readable = false;
            continue;
        };
        if parse_line(line, &mut each).is_none() {
            readable = false;
        }
    }
    readable
}

/// `#cache-directive`: `token [ "=" ( token / quoted-string ) ]`, separated by commas with
/// optional whitespace; empty list elements are allowed (RFC 9110 section 5.6.1).
fn parse_line(line: &str, each: &mut impl FnMut(&str, Option<&str>)) -> Option<()> {
    let bytes = line.as_bytes();
    let mut at = 0;
    let skip_ows = |at: &mut usize| {
        while *at < bytes.len() && (bytes[*at] == b' ' || bytes[*at] == b'\t') {
            *at += 1;
        }
    };
    loop {
        skip_ows(&mut at);
        if at == bytes.len() {
            return Some(());
        }
        if bytes[at] == b',' {
            at += 1;
            continue;
        }
        let start = at;
        while at < bytes.len() && is_tchar(bytes[at]) {
            at += 1;
        }
        if at == start {
            return None;
        }
        let name = line[start..at].to_ascii_lowercase();
        skip_ows(&mut at);
        let mut unquoted = String::new();
        let value = if at < bytes.len() && bytes[at] == b'=' {
            at += 1;
            skip_ows(&mut at);
            if at < bytes.len() && bytes[at] == b'"' {
                at += 1;
                loop {
                    match bytes.get(at)? {
                        b'"' => {
                            at += 1;
                            break;
                        }
                        b'\\' => {
                            unquoted.push(char::from(*bytes.get(at + 1)?));
                            at += 2;
                        }
                        &byte => {
                            unquoted.push(char::from(byte));
                            at += 1;
                        }
                    }
                }
                Some(unquoted.as_str())
            } else {
                let start = at;
                while at < bytes.len() && is_tchar(bytes[at]) {
                    at += 1;
                }
                Some(&line[start..at])
            }
        } else {
            None
        };
        each(&name, value);
        skip_ows(&mut at);
        match bytes.get(at) {
            None => return Some(()),
            Some(b',') => at += 1,
            Some(_) => return None,
        }
    }
}

fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(CACHE_CONTROL, HeaderValue::from_str(line).unwrap());
        }
        map
    }

    #[test]
    fn response_directives_are_read() {
        let d = ResponseDirectives::parse_cache_control(&headers(&[
            "Public, MAX-AGE=60",
            "s-maxage=\"10\"",
        ]));
        assert!(d.public && !d.private && !d.no_store);
        assert_eq!(d.max_age, Some(Ok(Duration::from_secs(60))));
        assert_eq!(d.s_maxage, Some(Ok(Duration::from_secs(10))));
        assert!(!d.unreadable);
    }

    #[test]
    fn quoted_field_lists_are_qualified_not_plain() {
        let d = ResponseDirectives::parse_cache_control(&headers(&[
            r#"private="Set-Cookie, x-a", max-age=5, no-cache="x\"y""#,
        ]));
        assert!(!d.private && !d.no_cache);
        assert_eq!(d.qualified_fields, ["set-cookie", "x-a", "x\"y"]);
        assert_eq!(d.max_age, Some(Ok(Duration::from_secs(5))));
        let d = ResponseDirectives::parse_cache_control(&headers(&["private, no-cache=\"\""]));
        assert!(d.private && d.no_cache && d.qualified_fields.is_empty());
    }

    #[test]
    fn stale_directives_are_read() {
        let d = ResponseDirectives::parse_cache_control(&headers(&[
            "max-age=1, stale-while-revalidate=30, stale-if-error=60",
        ]));
        assert_eq!(d.stale_while_revalidate, Some(Ok(Duration::from_secs(30))));
        assert_eq!(d.stale_if_error, Some(Ok(Duration::from_secs(60))));
        assert!(!d.forbids_stale());
        for line in [
            "must-revalidate",
            "proxy-revalidate",
            "s-maxage=5",
            "no-cache",
        ] {
            assert!(
                ResponseDirectives::parse_cache_control(&headers(&[line])).forbids_stale(),
                "{line}"
            );
        }
        let max_stale = |line| RequestDirectives::parse(&headers(&[line])).max_stale;
        assert_eq!(max_stale("max-stale"), Some(None));
        assert_eq!(max_stale("max-stale=9"), Some(Some(Duration::from_secs(9))));
        assert_eq!(max_stale("max-stale=x"), None);
    }

    #[test]
    fn malformed_or_conflicting_ages_are_errors() {
        for line in [
            "max-age=abc",
            "max-age=",
            "max-age",
            "max-age=-1",
            "max-age=1, max-age=2",
        ] {
            let d = ResponseDirectives::parse_cache_control(&headers(&[line]));
            assert_eq!(d.max_age, Some(Err(())), "{line}");
        }
        let d = ResponseDirectives::parse_cache_control(&headers(&["max-age=7, max-age=7"]));
        assert_eq!(d.max_age, Some(Ok(Duration::from_secs(7))));
        let d =
            ResponseDirectives::parse_cache_control(&headers(&["max-age=99999999999999999999999"]));
        assert_eq!(d.max_age, Some(Ok(Duration::from_secs(1 << 31))));
    }

    #[test]
    fn garbage_is_unreadable() {
        assert!(ResponseDirectives::parse_cache_control(&headers(&["max-age=1 junk"])).unreadable);
        assert!(ResponseDirectives::parse_cache_control(&headers(&["max-age=\"1"])).unreadable);
        assert!(ResponseDirectives::parse_cache_control(&headers(&["=1"])).unreadable);
        assert!(!ResponseDirectives::parse_cache_control(&headers(&[" , ,no-store,"])).unreadable);
    }

    #[test]
    fn request_directives_are_read() {
        let d = RequestDirectives::parse(&headers(&["no-store, min-fresh=3, only-if-cached"]));
        assert!(d.no_store && d.only_if_cached && !d.wants_reload());
        assert_eq!(d.min_fresh, Some(Ok(Duration::from_secs(3))));
        assert!(RequestDirectives::parse(&headers(&["max-age=0"])).wants_reload());
        assert!(RequestDirectives::parse(&headers(&["no-cache"])).wants_reload());
        assert!(!RequestDirectives::parse(&headers(&["max-age=5"])).wants_reload());
    }

    #[test]
    fn age_is_read() {
        let mut map = HeaderMap::new();
        map.insert(http::header::AGE, HeaderValue::from_static("30"));
        assert_eq!(age(&map), Some(Duration::from_secs(30)));
        map.insert(http::header::AGE, HeaderValue::from_static("x"));
        assert_eq!(age(&map), None);
    }

    /// The cases of the HTTP cache conformance suite's `age-parse` tests.
    #[test]
    fn the_first_member_of_the_first_age_line_counts() {
        let age_of = |lines: &[&'static str]| {
            let mut map = HeaderMap::new();
            for line in lines {
                map.append(http::header::AGE, HeaderValue::from_static(line));
            }
            age(&map).map(|d| d.as_secs())
        };
        assert_eq!(age_of(&["7200, 0"]), Some(7200));
        assert_eq!(age_of(&["0, 7200"]), Some(0));
        assert_eq!(age_of(&["7200", "0"]), Some(7200));
        assert_eq!(age_of(&["0", "7200"]), Some(0));
        assert_eq!(age_of(&["7200;foo=bar"]), Some(7200));
        assert_eq!(age_of(&[" 60 "]), Some(60));
        for ignored in ["abc", "-7200", "7200.0", "", ",7200"] {
            assert_eq!(age_of(&[ignored]), None, "{ignored:?}");
        }
        // Too large to represent: saturates, so the response is stale rather than fresh.
        assert_eq!(
            age_of(&["99999999999999999999999"]),
            Some(MAX_DELTA_SECONDS)
        );
    }
}
