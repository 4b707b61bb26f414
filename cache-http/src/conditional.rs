//! A client's conditional `GET` or `HEAD` answered from a stored response (RFC 9110 section
//! 13.2.1, RFC 9111 section 4.3.2): when the stored response's validators satisfy the request's
//! `If-None-Match`, or, without one, its `If-Modified-Since`, the client gets `304 Not Modified`
//! instead of the whole body.

use http::header::{
    CACHE_CONTROL, CONTENT_LOCATION, DATE, ETAG, EXPIRES, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LAST_MODIFIED, VARY,
};
use http::{HeaderMap, HeaderName, StatusCode};

use crate::policy::http_date;

/// The stored headers a 304 carries (RFC 9110 section 15.4.5): those a cache needs to update
/// its own copy, and nothing that describes a body.
pub(crate) const KEPT_ON_304: [HeaderName; 7] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    DATE,
    ETAG,
    EXPIRES,
    LAST_MODIFIED,
    VARY,
];

/// Makes `request` conditional on the validators of a stored response (RFC 9111 section
/// 4.3.1): `If-None-Match` with its `ETag`, `If-Modified-Since` with its `Last-Modified`. The
/// client's own `If-None-Match` and `If-Modified-Since` are removed: they are answered from
/// the response the revalidation leaves stored. Returns `false`, and leaves the request as
/// it was, when the stored response has no validator.
pub(crate) fn add_validators(request: &mut HeaderMap, stored: &HeaderMap) -> bool {
    let etag = stored.get(ETAG).cloned();
    let modified = stored
        .get(LAST_MODIFIED)
        .filter(|_| http_date(stored, &LAST_MODIFIED).is_some())
        .cloned();
    if etag.is_none() && modified.is_none() {
        return false;
    }
    request.remove(IF_NONE_MATCH);
    request.remove(IF_MODIFIED_SINCE);
    if let Some(etag) = etag {
        request.insert(IF_NONE_MATCH, etag);
    }
    if let Some(modified) = modified {
        request.insert(IF_MODIFIED_SINCE, modified);
    }
    true
}

/// Whether a request with these headers is answered `304 Not Modified` from a stored response
/// with this status and these headers. A precondition the cache cannot read is not taken as
/// satisfied: the client then gets the whole response, which is always correct.
pub(crate) fn not_modified(request: &HeaderMap, status: StatusCode, stored: &HeaderMap) -> bool {
    if status != StatusCode::OK {
        return false;
    }
    if request.contains_key(IF_NONE_MATCH) {
        // If-None-Match takes precedence: If-Modified-Since is then ignored (section 13.2.2).
        return none_match_fails(request, stored);
    }
    let Some(since) = http_date(request, &IF_MODIFIED_SINCE) else {
        return false;
    };
    // Without Last-Modified, the stored Date stands for it (RFC 9111 section 4.3.2).
    let modified = http_date(stored, &LAST_MODIFIED).or_else(|| http_date(stored, &DATE));
    modified.is_some_and(|modified| modified <= since)
}

/// Whether `If-None-Match` names the stored entity tag (weak comparison) or is `*`.
fn none_match_fails(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let stored_tag = stored
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut tags = EntityTags::new(v);
            let tag = tags.next()?;
            tags.next().is_none().then_some(tag)
        });
    for line in request.get_all(IF_NONE_MATCH) {
        let Ok(line) = line.to_str() else {
            return false;
        };
        if line.trim() == "*" {
            return true;
        }
        let Some(stored_tag) = stored_tag else {
            continue;
        };
        let mut tags = EntityTags::new(line);
        for tag in tags.by_ref() {
            if tag.opaque == stored_tag.opaque {
                return true;
            }
        }
        if !tags.rest().is_empty() {
            // A list the cache cannot read: do not answer 304 on part of it.
            return false;
        }
    }
    false
}

/// An entity tag's opaque part, quotes included; a weak one's `W/` is dropped, as the weak
/// comparison that `If-None-Match` uses ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    opaque: &'a str,
}

/// The entity tags of a comma-separated list (RFC 9110 section 8.8.3). Stops at the first thing
/// that is not one; [`rest`](Self::rest) then holds what was left unread.
struct EntityTags<'a> {
    rest: &'a str,
}

impl<'a> EntityTags<'a> {
    fn new(list: &'a str) -> Self {
        Self { rest: list }
    }

    fn rest(&self) -> &'a str {
        self.rest
            .trim_matches(|c: char| c == ',' || c == ' ' || c == '\t')
    }
}

impl<'a> Iterator for EntityTags<'a> {
    type Item = EntityTag<'a>;

    fn next(&mut self) -> Option<EntityTag<'a>> {
        let rest = self.rest();
        let tag = rest.strip_prefix("W/").unwrap_or(rest);
        // An opaque tag is a quoted run of visible characters other than the quote itself
        // (commas included, so the list cannot simply be split on them).
        let inner = tag.strip_prefix('"')?;
        let end = inner.find('"')?;
        let opaque = &tag[..end + 2];
        if !opaque[1..end + 1]
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
        {
            return None;
        }
        let after = &tag[end + 2..];
        let after_trimmed = after.trim_start_matches([' ', '\t']);
        if !(after_trimmed.is_empty() || after_trimmed.starts_with(',')) {
            return None;
        }
        self.rest = after;
        Some(EntityTag { opaque })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append((*name).clone(), HeaderValue::from_static(value));
        }
        map
    }

    fn tags(list: &str) -> Vec<&str> {
        EntityTags::new(list).map(|t| t.opaque).collect()
    }

    #[test]
    fn entity_tag_lists_are_read_with_commas_inside_tags() {
        assert_eq!(tags(r#""a""#), [r#""a""#]);
        assert_eq!(
            tags(r#"W/"a", "b,c" ,W/"""#),
            [r#""a""#, r#""b,c""#, r#""""#]
        );
        assert!(tags("a").is_empty());
        assert!(tags(r#""a"x"#).is_empty());
        assert!(tags(r#""a"#).is_empty());
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_precedence() {
        let stored = headers(&[
            (&ETAG, r#"W/"v1""#),
            (&LAST_MODIFIED, "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let ok = StatusCode::OK;
        for list in [r#""v1""#, r#"W/"v1""#, r#""v2", "v1""#, "*"] {
            assert!(
                not_modified(&headers(&[(&IF_NONE_MATCH, list)]), ok, &stored),
                "{list}"
            );
        }
        for list in [r#""v2""#, r#""V1""#, "garbage", r#""v2", garbage, "v1""#] {
            assert!(
                !not_modified(&headers(&[(&IF_NONE_MATCH, list)]), ok, &stored),
                "{list}"
            );
        }
        // A matching If-Modified-Since does not help a failing If-None-Match.
        let both = headers(&[
            (&IF_NONE_MATCH, r#""v2""#),
            (&IF_MODIFIED_SINCE, "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        assert!(!not_modified(&both, ok, &stored));
        // Only a stored 200 is answered 304.
        let inm = headers(&[(&IF_NONE_MATCH, r#""v1""#)]);
        assert!(!not_modified(&inm, StatusCode::NOT_FOUND, &stored));
        // No stored ETag: only `*` matches.
        let untagged = headers(&[(&DATE, "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert!(!not_modified(&inm, ok, &untagged));
        assert!(not_modified(
            &headers(&[(&IF_NONE_MATCH, "*")]),
            ok,
            &untagged
        ));
    }

    #[test]
    fn if_modified_since_compares_with_last_modified_or_date() {
        let ok = StatusCode::OK;
        let stored = headers(&[(&LAST_MODIFIED, "Sun, 06 Nov 1994 08:49:37 GMT")]);
        let since = |date: &'static str| headers(&[(&IF_MODIFIED_SINCE, date)]);
        assert!(not_modified(
            &since("Sun, 06 Nov 1994 08:49:37 GMT"),
            ok,
            &stored
        ));
        assert!(not_modified(
            &since("Mon, 07 Nov 1994 08:49:37 GMT"),
            ok,
            &stored
        ));
        assert!(!not_modified(
            &since("Sat, 05 Nov 1994 08:49:37 GMT"),
            ok,
            &stored
        ));
        assert!(!not_modified(&since("yesterday"), ok, &stored));
        let dated = headers(&[(&DATE, "Sun, 06 Nov 1994 08:49:37 GMT")]);
        assert!(not_modified(
            &since("Mon, 07 Nov 1994 08:49:37 GMT"),
            ok,
            &dated
        ));
        assert!(!not_modified(
            &since("Mon, 07 Nov 1994 08:49:37 GMT"),
            ok,
            &HeaderMap::new()
        ));
    }
}
