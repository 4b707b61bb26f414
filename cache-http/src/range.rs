//! Answering a `Range` request from a complete stored `200` (RFC 9110 section 14).
//!
//! One byte range is served as `206 Partial Content`; a range past the end is
//! `416 Range Not Satisfiable`. Anything else this cache does not take apart (several ranges,
//! another unit, a malformed header, an `If-Range` that does not match) gets the whole
//! response, which RFC 9110 section 14.2 allows: a server may ignore `Range`.

use http::HeaderMap;
use http::header::{ETAG, IF_RANGE, LAST_MODIFIED, RANGE};

use crate::policy::http_date;

/// What part of a stored body of a given length a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The whole response.
    Whole,
    /// Bytes `start..=end`.
    Bytes { start: u64, end: u64 },
    /// A range that starts past the end.
    Unsatisfiable,
}

/// The part of a stored `200` with headers `stored` and a body of `len` bytes that a request
/// with headers `request` is answered with.
pub(crate) fn select(request: &HeaderMap, stored: &HeaderMap, len: u64) -> Part {
    let mut lines = request.get_all(RANGE).iter();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Part::Whole;
    };
    let Ok(line) = line.to_str() else {
        return Part::Whole;
    };
    if !if_range_holds(request, stored) {
        return Part::Whole;
    }
    let Some((unit, specs)) = line.trim().split_once('=') else {
        return Part::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Part::Whole;
    }
    let mut specs = specs
        .split(',')
        .map(str::trim)
        .filter(|spec| !spec.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return Part::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Part::Whole;
    };
    if first.is_empty() {
        // `-n`: the last n bytes.
        let Some(suffix) = number(last) else {
            return Part::Whole;
        };
        if suffix == 0 || len == 0 {
            return Part::Unsatisfiable;
        }
        return Part::Bytes {
            start: len - suffix.min(len),
            end: len - 1,
        };
    }
    let Some(start) = number(first) else {
        return Part::Whole;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(end) if end >= start => end,
            // An invalid range: ignored.
            _ => return Part::Whole,
        }
    };
    if start >= len {
        return Part::Unsatisfiable;
    }
    Part::Bytes {
        start,
        end: end.min(len - 1),
    }
}

/// `If-Range` (RFC 9110 section 13.1.5): the range applies only if the stored response is
/// the one the client holds part of, by strong entity tag or by `Last-Modified` date.
fn if_range_holds(request: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(condition) = request.get(IF_RANGE) else {
        return true;
    };
    let Ok(condition) = condition.to_str() else {
        return false;
    };
    let condition = condition.trim();
    if condition.starts_with('"') {
        return stored
            .get(ETAG)
            .and_then(|tag| tag.to_str().ok())
            .is_some_and(|tag| tag.trim() == condition);
    }
    if condition.starts_with("W/") {
        return false;
    }
    let Some(date) = crate::date::parse(condition) else {
        return false;
    };
    http_date(stored, &LAST_MODIFIED) == Some(date)
}

/// `1*DIGIT`, without overflow.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Longer than any body: saturate.
    Some(text.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use http::header::HeaderName;

    fn headers(pairs: &[(HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    fn part(range: &'static str, len: u64) -> Part {
        select(&headers(&[(RANGE, range)]), &HeaderMap::new(), len)
    }

    #[test]
    fn one_range_is_a_part() {
        assert_eq!(part("bytes=0-1", 11), Part::Bytes { start: 0, end: 1 });
        assert_eq!(part("bytes=1-", 11), Part::Bytes { start: 1, end: 10 });
        assert_eq!(part("bytes=-5", 11), Part::Bytes { start: 6, end: 10 });
        assert_eq!(part("bytes=-50", 11), Part::Bytes { start: 0, end: 10 });
        assert_eq!(part("Bytes = 3-99", 11), Part::Bytes { start: 3, end: 10 });
        assert_eq!(
            part("bytes=0-99999999999999999999999", 11),
            Part::Bytes { start: 0, end: 10 }
        );
    }

    #[test]
    fn past_the_end_is_unsatisfiable() {
        assert_eq!(part("bytes=11-", 11), Part::Unsatisfiable);
        assert_eq!(part("bytes=-0", 11), Part::Unsatisfiable);
        assert_eq!(part("bytes=0-", 0), Part::Unsatisfiable);
    }

    #[test]
    fn what_is_not_one_byte_range_gets_the_whole_response() {
        for range in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=2-1",
            "bytes=a-b",
            "bytes 0-1",
            "bytes=-",
        ] {
            assert_eq!(part(range, 11), Part::Whole, "{range}");
        }
        assert_eq!(
            select(&HeaderMap::new(), &HeaderMap::new(), 11),
            Part::Whole
        );
    }

    #[test]
    fn if_range_must_match_strongly() {
        let stored = headers(&[
            (ETAG, "\"v1\""),
            (LAST_MODIFIED, "Sun, 06 Nov 1994 08:49:37 GMT"),
        ]);
        let with = |condition: &'static str| {
            select(
                &headers(&[(RANGE, "bytes=0-1"), (IF_RANGE, condition)]),
                &stored,
                11,
            )
        };
        let ranged = Part::Bytes { start: 0, end: 1 };
        assert_eq!(with("\"v1\""), ranged);
        assert_eq!(with("Sun, 06 Nov 1994 08:49:37 GMT"), ranged);
        assert_eq!(with("\"v2\""), Part::Whole);
        assert_eq!(with("W/\"v1\""), Part::Whole);
        assert_eq!(with("Mon, 07 Nov 1994 08:49:37 GMT"), Part::Whole);
    }
}
