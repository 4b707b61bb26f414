//! Cache keys: a SHA-256 of the request's identity, so that any URL and header value gives a
//! key that obeys the key rule (no whitespace or control characters, bounded length).

use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use crate::policy::Scope;

/// What every key starts with, so that entries of this layer are recognizable in an engine
/// shared with other uses.
pub(crate) const KEY_PREFIX: &str = "http:";
/// The fewest hex digits of the digest a key keeps: 128 bits.
pub(crate) const MIN_HEX_DIGITS: usize = 32;
const MAX_HEX_DIGITS: usize = 64;

/// Builds the keys of one layer.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// Request headers whose values are part of every key, in the configured order.
    headers: Vec<HeaderName>,
    /// How many hex digits of the digest fit in the engine's keys.
    hex_digits: usize,
}

impl Keys {
    /// `None` when the engine's keys have no room for [`MIN_HEX_DIGITS`].
    pub(crate) fn new(headers: Vec<HeaderName>, max_key_len: usize) -> Option<Self> {
        let room = max_key_len.checked_sub(KEY_PREFIX.len())?;
        (room >= MIN_HEX_DIGITS).then_some(Self {
            headers,
            hex_digits: room.min(MAX_HEX_DIGITS),
        })
    }

    /// The primary key of a `GET` (or `HEAD`, which shares it) for `scope`: the target URI
    /// (scheme and authority when known, else the `Host` header; path and query), the
    /// configured headers, and for [`Scope::User`] a digest of the `Authorization` value.
    pub(crate) fn primary(&self, request: &Parts, scope: Scope) -> String {
        let mut hasher = Hasher::new(b"primary/1");
        hasher.field(b"GET");
        hasher.field(request.uri.scheme_str().unwrap_or("").as_bytes());
        let host = match request.uri.authority() {
            Some(authority) => Some(authority.as_str().to_ascii_lowercase()),
            None => request
                .headers
                .get(HOST)
                .map(|host| String::from_utf8_lossy(host.as_bytes()).to_ascii_lowercase()),
        };
        hasher.optional(host.as_deref().map(str::as_bytes));
        let target = request
            .uri
            .path_and_query()
            .map_or("/", |target| target.as_str());
        hasher.field(target.as_bytes());
        for name in &self.headers {
            hasher.field(name.as_str().as_bytes());
            hasher.header_values(&request.headers, name);
        }
        match scope {
            Scope::Shared => hasher.field(b"shared"),
            Scope::User => {
                hasher.field(b"user");
                hasher.header_values(&request.headers, &AUTHORIZATION);
            }
        }
        hasher.finish(self.hex_digits)
    }

    /// The key of one variant under `primary`: the names a response varies on, the request's
    /// values of them, and the generation of the primary key's variant list.
    pub(crate) fn variant(
        &self,
        primary: &str,
        generation: u64,
        names: &[HeaderName],
        headers: &HeaderMap,
    ) -> String {
        let mut hasher = Hasher::new(b"variant/1");
        hasher.field(primary.as_bytes());
        hasher.field(&generation.to_be_bytes());
        for name in names {
            hasher.field(name.as_str().as_bytes());
            hasher.header_values(headers, name);
        }
        hasher.finish(self.hex_digits)
    }
}

/// Request fields whose values are case-insensitive tokens, compared without case.
const CASE_INSENSITIVE: [&str; 3] = ["accept-language", "accept-encoding", "accept-charset"];

/// The members of a comma-separated list, each without the whitespace around it; commas in
/// quoted strings do not separate. A value that is not a list is its one member.
fn list_members(value: &[u8]) -> Vec<&[u8]> {
    let mut members = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, &byte) in value.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            quoted = !quoted;
        } else if byte == b',' && !quoted {
            members.push(value[start..at].trim_ascii());
            start = at + 1;
        }
    }
    members.push(value[start..].trim_ascii());
    members
}

/// SHA-256 over length-prefixed fields, so that no two different field lists hash alike.
struct Hasher(Sha256);

impl Hasher {
    fn new(domain: &[u8]) -> Self {
        let mut hasher = Self(Sha256::new());
        hasher.field(b"cache-http");
        hasher.field(domain);
        hasher
    }

    fn field(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
    }

    fn optional(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.0.update([0]),
            Some(bytes) => {
                self.0.update([1]);
                self.field(bytes);
            }
        }
    }

    /// The value of `name`, its lines joined as one list; absent and empty differ. Values
    /// that mean the same to any recipient hash alike (the normalization RFC 9111 section
    /// 4.1 allows): whitespace around list members and commas does not count, nor does case
    /// in the fields whose values are case-insensitive tokens (`Accept-Language`,
    /// `Accept-Encoding`, `Accept-Charset`). Order does count: RFC 9110 section 12.5.4 notes
    /// that servers read it as preference.
    fn header_values(&mut self, headers: &HeaderMap, name: &HeaderName) {
        let mut values = headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            self.0.update([0]);
            return;
        }
        self.0.update([1]);
        let lowercase = CASE_INSENSITIVE.contains(&name.as_str());
        let mut normalized = Vec::new();
        for value in values {
            // Credentials are compared exactly.
            let members = if *name == AUTHORIZATION {
                vec![value.as_bytes()]
            } else {
                list_members(value.as_bytes())
            };
            for member in members {
                if !normalized.is_empty() {
                    normalized.push(b',');
                }
                if lowercase {
                    normalized.extend(member.iter().map(u8::to_ascii_lowercase));
                } else {
                    normalized.extend_from_slice(member);
                }
            }
        }
        self.field(&normalized);
    }

    fn finish(self, hex_digits: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = self.0.finalize();
        let mut key = String::with_capacity(KEY_PREFIX.len() + hex_digits);
        key.push_str(KEY_PREFIX);
        for byte in digest.iter() {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        key.truncate(KEY_PREFIX.len() + hex_digits);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn keys_obey_the_key_rule_for_any_url() {
        let keys = Keys::new(vec![HeaderName::from_static("x-tenant")], 250).unwrap();
        let long = format!("/{}?q={}", "a".repeat(10_000), "%20%0D%0A");
        let key = keys.primary(&parts(&long, &[("x-tenant", "a b\tc")]), Scope::Shared);
        assert_eq!(key.len(), KEY_PREFIX.len() + 64);
        cache_core::key::check_key(&key, 0).unwrap();
        let short = Keys::new(Vec::new(), 40).unwrap();
        assert_eq!(short.primary(&parts("/", &[]), Scope::Shared).len(), 40);
        assert!(Keys::new(Vec::new(), 36).is_none());
    }

    #[test]
    fn what_makes_keys_differ() {
        let keys = Keys::new(vec![HeaderName::from_static("x-tenant")], 250).unwrap();
        let base = keys.primary(&parts("/a?x=1", &[("host", "example.com")]), Scope::Shared);
        let same = keys.primary(
            &parts("/a?x=1", &[("host", "EXAMPLE.com"), ("accept", "x")]),
            Scope::Shared,
        );
        assert_eq!(base, same, "host case and unlisted headers do not matter");
        for other in [
            parts("/a?x=2", &[("host", "example.com")]),
            parts("/a", &[("host", "example.com")]),
            parts("/a?x=1", &[("host", "example.org")]),
            parts("/a?x=1", &[("host", "example.com"), ("x-tenant", "")]),
            parts("http://example.com/a?x=1", &[]),
        ] {
            assert_ne!(base, keys.primary(&other, Scope::Shared), "{other:?}");
        }
        let alice = parts("/a", &[("authorization", "Bearer alice")]);
        let bob = parts("/a", &[("authorization", "Bearer bob")]);
        assert_ne!(
            keys.primary(&alice, Scope::User),
            keys.primary(&bob, Scope::User)
        );
        assert_eq!(
            keys.primary(&alice, Scope::Shared),
            keys.primary(&bob, Scope::Shared)
        );
        assert_ne!(
            keys.primary(&alice, Scope::User),
            keys.primary(&alice, Scope::Shared)
        );
    }

    #[test]
    fn variants_follow_the_varied_values_only() {
        let keys = Keys::new(Vec::new(), 250).unwrap();
        let names = [HeaderName::from_static("accept-language")];
        let en = parts("/", &[("accept-language", "en"), ("x-other", "1")]);
        let en2 = parts("/", &[("accept-language", " en "), ("x-other", "2")]);
        let fr = parts("/", &[("accept-language", "fr")]);
        let none = parts("/", &[]);
        let empty = parts("/", &[("accept-language", "")]);
        let variant = |p: &Parts, generation| keys.variant("p", generation, &names, &p.headers);
        assert_eq!(variant(&en, 1), variant(&en2, 1));
        assert_ne!(variant(&en, 1), variant(&fr, 1));
        assert_ne!(variant(&none, 1), variant(&empty, 1));
        // Whitespace around members, lines, and case where values are case-insensitive.
        let spaced = parts("/", &[("accept-language", " EN ,   de"), ("foo", " 1, 2 ")]);
        let lines = parts(
            "/",
            &[
                ("accept-language", "en"),
                ("accept-language", "de"),
                ("foo", "1,2"),
            ],
        );
        let both = [
            HeaderName::from_static("accept-language"),
            HeaderName::from_static("foo"),
        ];
        let variant2 = |p: &Parts| keys.variant("p", 1, &both, &p.headers);
        assert_eq!(variant2(&spaced), variant2(&lines));
        // Order, case elsewhere, and whitespace inside quotes count.
        let reordered = parts("/", &[("accept-language", "de, en"), ("foo", "1,2")]);
        assert_ne!(variant2(&spaced), variant2(&reordered));
        let quoted = |v: &'static str| parts("/", &[("foo", v)]);
        let foo = [HeaderName::from_static("foo")];
        let variant3 = |p: &Parts| keys.variant("p", 1, &foo, &p.headers);
        assert_ne!(variant3(&quoted("\"a , b\"")), variant3(&quoted("\"a,b\"")));
        assert_eq!(
            variant3(&quoted("\"a,b\" , c")),
            variant3(&quoted("\"a,b\",c"))
        );
        assert_ne!(variant3(&quoted("A")), variant3(&quoted("a")));
        assert_ne!(
            variant(&en, 1),
            variant(&en, 2),
            "a new generation hides old variants"
        );
    }
}
