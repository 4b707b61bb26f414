//! Targeted cache control (RFC 9213): `CDN-Cache-Control` and the like, whose value is a
//! Structured Field Dictionary (RFC 8941) of cache directives.
//!
//! The parser is strict, as RFC 8941 section 4.2 asks: any syntax error makes the whole field
//! invalid, and an invalid field is ignored (the response's `Cache-Control` and `Expires` then
//! apply).

use std::time::Duration;

use http::{HeaderMap, HeaderName};

use crate::directives::{MAX_DELTA_SECONDS, ResponseDirectives};

/// The targeted field a cache reads unless configured otherwise.
pub(crate) const CDN_CACHE_CONTROL: &str = "cdn-cache-control";

/// The bare value of a dictionary member, as far as cache directives need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    Integer(i64),
    Boolean(bool),
    /// A decimal, string, token, byte sequence or inner list.
    Other,
}

/// The directives of the first field in `names` that is present, valid and not empty; `None`
/// when there is none, so that `Cache-Control` applies.
pub(crate) fn directives(headers: &HeaderMap, names: &[HeaderName]) -> Option<ResponseDirectives> {
    names.iter().find_map(|name| field(headers, name))
}

fn field(headers: &HeaderMap, name: &HeaderName) -> Option<ResponseDirectives> {
    // Several lines are one field, joined with commas (RFC 8941 section 4.2).
    let mut joined = String::new();
    for line in headers.get_all(name) {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(line.to_str().ok()?);
    }
    let members = parse_dictionary(&joined)?;
    if members.is_empty() {
        return None;
    }
    let mut out = ResponseDirectives {
        targeted: true,
        ..ResponseDirectives::default()
    };
    // Later members replace earlier ones of the same name (RFC 8941 section 3.2).
    for (key, value) in members {
        let flag = match value {
            Value::Boolean(on) => on,
            // A list of fields (`private="set-cookie"`) is not the form this header defines;
            // read as the whole directive, the stricter reading.
            Value::Other => true,
            Value::Integer(_) => false,
        };
        // A lifetime that is not a non-negative integer makes the field invalid, as a parse
        // error does (so `max-age="60"` leaves `Cache-Control` in charge).
        let delta = || match value {
            Value::Integer(seconds) => u64::try_from(seconds)
                .ok()
                .map(|seconds| Some(Ok(Duration::from_secs(seconds.min(MAX_DELTA_SECONDS))))),
            _ => None,
        };
        match key.as_str() {
            "no-store" => out.no_store = flag,
            "no-cache" => out.no_cache = flag,
            "private" => out.private = flag,
            "public" => out.public = matches!(value, Value::Boolean(true)),
            "must-revalidate" => out.must_revalidate = flag,
            "proxy-revalidate" => out.proxy_revalidate = flag,
            "must-understand" => out.must_understand = matches!(value, Value::Boolean(true)),
            "max-age" => out.max_age = delta()?,
            "s-maxage" => out.s_maxage = delta()?,
            "stale-while-revalidate" => out.stale_while_revalidate = delta()?,
            "stale-if-error" => out.stale_if_error = delta()?,
            _ => {}
        }
    }
    Some(out)
}

/// An `sf-dictionary` (RFC 8941 section 4.2.2): its members in order, or `None` on any syntax
/// error. Parameters are checked and dropped.
fn parse_dictionary(input: &str) -> Option<Vec<(String, Value)>> {
    let mut parser = Parser {
        bytes: input.trim_matches(' ').as_bytes(),
        at: 0,
    };
    let mut members = Vec::new();
    while !parser.done() {
        let key = parser.key()?;
        let value = if parser.eat(b'=') {
            parser.item_or_inner_list()?
        } else {
            parser.parameters()?;
            Value::Boolean(true)
        };
        members.push((key, value));
        parser.skip_ows();
        if parser.done() {
            break;
        }
        if !parser.eat(b',') {
            return None;
        }
        parser.skip_ows();
        if parser.done() {
            // A trailing comma.
            return None;
        }
    }
    Some(members)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    /// `key = ( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`
    fn key(&mut self) -> Option<String> {
        let start = self.at;
        match self.peek()? {
            b'a'..=b'z' | b'*' => self.at += 1,
            _ => return None,
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.at += 1;
        }
        std::str::from_utf8(&self.bytes[start..self.at])
            .ok()
            .map(str::to_owned)
    }

    fn item_or_inner_list(&mut self) -> Option<Value> {
        if self.eat(b'(') {
            loop {
                self.skip_sp();
                if self.eat(b')') {
                    self.parameters()?;
                    return Some(Value::Other);
                }
                self.bare_item()?;
                self.parameters()?;
                if !matches!(self.peek()?, b' ' | b')') {
                    return None;
                }
            }
        }
        let value = self.bare_item()?;
        self.parameters()?;
        Some(value)
    }

    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip_sp();
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn bare_item(&mut self) -> Option<Value> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string(),
            b'A'..=b'Z' | b'a'..=b'z' | b'*' => {
                self.at += 1;
                while self
                    .peek()
                    .is_some_and(|b| is_tchar(b) || b == b':' || b == b'/')
                {
                    self.at += 1;
                }
                Some(Value::Other)
            }
            b':' => {
                self.at += 1;
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                {
                    self.at += 1;
                }
                self.eat(b':').then_some(Value::Other)
            }
            b'?' => {
                self.at += 1;
                let value = match self.peek()? {
                    b'0' => false,
                    b'1' => true,
                    _ => return None,
                };
                self.at += 1;
                Some(Value::Boolean(value))
            }
            _ => None,
        }
    }

    /// `sf-integer` (at most 15 digits) or `sf-decimal` (at most 12 digits, a dot, 1 to 3).
    fn number(&mut self) -> Option<Value> {
        let negative = self.eat(b'-');
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let whole = self.at - start;
        if whole == 0 {
            return None;
        }
        if self.eat(b'.') {
            let fraction_start = self.at;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.at += 1;
            }
            let fraction = self.at - fraction_start;
            return (whole <= 12 && (1..=3).contains(&fraction)).then_some(Value::Other);
        }
        if whole > 15 {
            return None;
        }
        let digits = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        let magnitude: i64 = digits.parse().ok()?;
        Some(Value::Integer(if negative {
            -magnitude
        } else {
            magnitude
        }))
    }

    fn string(&mut self) -> Option<Value> {
        self.at += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(Value::Other);
                }
                b'\\' => {
                    self.at += 1;
                    if !matches!(self.peek()?, b'"' | b'\\') {
                        return None;
                    }
                    self.at += 1;
                }
                0x20..=0x7e => self.at += 1,
                _ => return None,
            }
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

    fn cdn() -> HeaderName {
        HeaderName::from_static(CDN_CACHE_CONTROL)
    }

    fn read(lines: &[&'static str]) -> Option<ResponseDirectives> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(cdn(), HeaderValue::from_static(line));
        }
        directives(&headers, &[cdn()])
    }

    #[test]
    fn directives_are_read_from_a_dictionary() {
        let d = read(&["max-age=60, no-store, private=?0", "s-maxage=5;x=1"]).unwrap();
        assert!(d.targeted && d.no_store && !d.private);
        assert_eq!(d.max_age, Some(Ok(Duration::from_secs(60))));
        assert_eq!(d.s_maxage, Some(Ok(Duration::from_secs(5))));
        let d = read(&["max-age=1, max-age=99999999999"]).unwrap();
        assert_eq!(d.max_age, Some(Ok(Duration::from_secs(MAX_DELTA_SECONDS))));
    }

    #[test]
    fn lifetimes_of_the_wrong_type_make_the_field_invalid() {
        for line in [
            "max-age=\"60\"",
            "max-age=-1",
            "max-age=1.5",
            "max-age=(1 2)",
        ] {
            assert_eq!(read(&[line]), None, "{line}");
        }
        // Restrictive directives with a value are read as the whole directive.
        assert!(read(&["private=\"set-cookie\""]).unwrap().private);
    }

    #[test]
    fn an_invalid_or_empty_field_is_ignored() {
        for line in [
            "max-age=10000, &&&&&",
            "Max-Age=5",
            "max-age=5,",
            "max-age=5 no-store",
            "max-age=1234567890123456",
            "a=\"unterminated",
            "a=?2",
            "",
        ] {
            assert_eq!(read(&[line]), None, "{line:?}");
        }
        assert_eq!(read(&[]), None);
    }

    #[test]
    fn the_first_valid_name_in_the_list_counts() {
        let mut headers = HeaderMap::new();
        let first = HeaderName::from_static("x-first");
        headers.insert(&first, HeaderValue::from_static("&&"));
        headers.insert(cdn(), HeaderValue::from_static("max-age=9"));
        let d = directives(&headers, &[first, cdn()]).unwrap();
        assert_eq!(d.max_age, Some(Ok(Duration::from_secs(9))));
        assert_eq!(directives(&headers, &[]), None);
    }
}
