//! The stored forms: a response (status, headers, body and its age) and a variant list (the
//! names a response varies on). A small versioned binary format; any bytes that are not
//! exactly one of them decode to `None`, never to a panic or an allocation larger than the
//! input.
//!
//! ```text
//! magic 0xC9 'H', version 2, kind
//! kind 1, response: status u16, stored_at_ms u64 (since the Unix epoch), age_ms u64,
//!                   lifetime_ms u64, header count u16,
//!                   per header: name length u16, name, value length u32, value;
//!                   body length u32, body
//! kind 2, variants: generation u64, name count u8, per name: length u16, name
//! ```
//! Integers are big-endian. Nothing may follow the last field. Version 1 (written before
//! entries outlived their freshness) decodes as [`Entry::Outdated`], a miss.

use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

const MAGIC: [u8; 2] = [0xC9, b'H'];
const VERSION: u8 = 2;
const OUTDATED_VERSION: u8 = 1;
const KIND_RESPONSE: u8 = 1;
const KIND_VARIANTS: u8 = 2;

/// A response as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// When it was received (the response time of RFC 9111 section 4.2.3), to the
    /// millisecond.
    pub(crate) stored_at: SystemTime,
    /// Its corrected initial age then.
    pub(crate) age: Duration,
    /// Its freshness lifetime.
    pub(crate) lifetime: Duration,
}

impl StoredResponse {
    /// Its current age at `now` (RFC 9111 section 4.2.3): the age it was stored at plus the
    /// time since. A clock set back reads as no time passed.
    pub(crate) fn age_at(&self, now: SystemTime) -> Duration {
        self.age + now.duration_since(self.stored_at).unwrap_or_default()
    }

    /// How much freshness is left at `now`; zero once stale.
    pub(crate) fn freshness_left(&self, now: SystemTime) -> Duration {
        self.lifetime.saturating_sub(self.age_at(now))
    }

    /// How long it has been stale at `now`; `None` while fresh.
    pub(crate) fn staleness(&self, now: SystemTime) -> Option<Duration> {
        let age = self.age_at(now);
        (age >= self.lifetime).then(|| age - self.lifetime)
    }
}

/// The variant list under a primary key: the names the response varies on, and a generation
/// that every variant key includes, so that a list written after an invalidation never finds
/// the variants written before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Variants {
    pub(crate) generation: u64,
    pub(crate) names: Vec<HeaderName>,
}

/// What a stored value is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Entry {
    Response(StoredResponse),
    Variants(Variants),
    /// An entry of an earlier version of this format: read as a miss and replaced.
    Outdated,
}

/// How many bytes the encoded response takes, to check it against the engine's limit first.
pub(crate) fn response_len(headers: &HeaderMap, body_len: usize) -> usize {
    let headers: usize = headers
        .iter()
        .map(|(name, value)| 6 + name.as_str().len() + value.len())
        .sum();
    4 + 2 + 8 + 8 + 8 + 2 + headers + 4 + body_len
}

impl StoredResponse {
    /// `None` when a length does not fit its field (more than 65,535 headers, a body of
    /// 4 GiB): such a response is not stored.
    pub(crate) fn encode(&self) -> Option<Bytes> {
        let mut out = BytesMut::with_capacity(response_len(&self.headers, self.body.len()));
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u8(KIND_RESPONSE);
        out.put_u16(self.status.as_u16());
        out.put_u64(millis(
            self.stored_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        ));
        out.put_u64(millis(self.age));
        out.put_u64(millis(self.lifetime));
        out.put_u16(u16::try_from(self.headers.len()).ok()?);
        for (name, value) in &self.headers {
            out.put_u16(u16::try_from(name.as_str().len()).ok()?);
            out.put_slice(name.as_str().as_bytes());
            out.put_u32(u32::try_from(value.len()).ok()?);
            out.put_slice(value.as_bytes());
        }
        out.put_u32(u32::try_from(self.body.len()).ok()?);
        out.put_slice(&self.body);
        Some(out.freeze())
    }
}

impl Variants {
    pub(crate) fn encode(&self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u8(KIND_VARIANTS);
        out.put_u64(self.generation);
        out.put_u8(u8::try_from(self.names.len()).ok()?);
        for name in &self.names {
            out.put_u16(u16::try_from(name.as_str().len()).ok()?);
            out.put_slice(name.as_str().as_bytes());
        }
        Some(out.freeze())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Entry {
    /// Decodes stored bytes; `None` for anything but a whole entry of this version.
    pub(crate) fn decode(input: &Bytes) -> Option<Self> {
        let mut reader = Reader { input, at: 0 };
        if reader.take(2)? != MAGIC {
            return None;
        }
        match reader.u8()? {
            VERSION => {}
            OUTDATED_VERSION => return Some(Entry::Outdated),
            _ => return None,
        }
        let entry = match reader.u8()? {
            KIND_RESPONSE => {
                let status = StatusCode::from_u16(reader.u16()?).ok()?;
                let stored_at =
                    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(reader.u64()?))?;
                let age = Duration::from_millis(reader.u64()?);
                let lifetime = Duration::from_millis(reader.u64()?);
                let count = reader.u16()?;
                // Each header takes at least 6 bytes: refuse counts the input cannot hold
                // before reserving room for them.
                if usize::from(count) * 6 > reader.left() {
                    return None;
                }
                // `HeaderMap` panics past its own limits (a capacity over 24,576, more than
                // 32,768 entries): reserve a little and append with the fallible calls, so
                // that no stored bytes can make a read panic.
                let mut headers = HeaderMap::try_with_capacity(usize::from(count).min(64)).ok()?;
                for _ in 0..count {
                    let len = usize::from(reader.u16()?);
                    let name = HeaderName::from_bytes(reader.take(len)?).ok()?;
                    let len = usize::try_from(reader.u32()?).ok()?;
                    let value = HeaderValue::from_maybe_shared(reader.slice(len)?).ok()?;
                    headers.try_append(name, value).ok()?;
                }
                let len = usize::try_from(reader.u32()?).ok()?;
                let body = reader.slice(len)?;
                Entry::Response(StoredResponse {
                    status,
                    headers,
                    body,
                    stored_at,
                    age,
                    lifetime,
                })
            }
            KIND_VARIANTS => {
                let generation = reader.u64()?;
                let count = reader.u8()?;
                let mut names = Vec::with_capacity(usize::from(count));
                for _ in 0..count {
                    let len = usize::from(reader.u16()?);
                    names.push(HeaderName::from_bytes(reader.take(len)?).ok()?);
                }
                Entry::Variants(Variants { generation, names })
            }
            _ => return None,
        };
        (reader.left() == 0).then_some(entry)
    }
}

struct Reader<'a> {
    input: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.input.len() - self.at
    }

    fn take(&mut self, len: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(len)?;
        let bytes = self.input.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn slice(&mut self, len: usize) -> Option<Bytes> {
        let start = self.at;
        self.take(len)?;
        Some(self.input.slice(start..self.at))
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("1"));
        headers.append("x-multi", HeaderValue::from_static("2"));
        StoredResponse {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"hello body"),
            stored_at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_765_000_000_123),
            age: Duration::from_millis(1234),
            lifetime: Duration::from_secs(60),
        }
    }

    #[test]
    fn entries_round_trip() {
        let stored = response();
        let bytes = stored.encode().unwrap();
        assert_eq!(
            bytes.len(),
            response_len(&stored.headers, stored.body.len())
        );
        assert_eq!(Entry::decode(&bytes), Some(Entry::Response(stored)));
        let variants = Variants {
            generation: 42,
            names: vec![
                HeaderName::from_static("accept"),
                HeaderName::from_static("x-a"),
            ],
        };
        let bytes = variants.encode().unwrap();
        assert_eq!(Entry::decode(&bytes), Some(Entry::Variants(variants)));
    }

    #[test]
    fn damaged_or_foreign_bytes_are_none() {
        let bytes = response().encode().unwrap();
        for len in 0..bytes.len() {
            assert_eq!(
                Entry::decode(&bytes.slice(..len)),
                None,
                "truncated at {len}"
            );
        }
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert_eq!(Entry::decode(&Bytes::from(longer)), None, "trailing byte");
        // Every single-byte change decodes to something or nothing, never panics.
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut damaged = bytes.to_vec();
                damaged[at] ^= flip;
                let _ = Entry::decode(&Bytes::from(damaged));
            }
        }
        for foreign in [&b""[..], b"hello", b"\xC9H\x03\x01", b"\xC9H\x02\x09"] {
            assert_eq!(Entry::decode(&Bytes::copy_from_slice(foreign)), None);
        }
        // An entry of the previous version is outdated, not damaged.
        assert_eq!(
            Entry::decode(&Bytes::from_static(b"\xC9H\x01\x01\x00\xC8")),
            Some(Entry::Outdated)
        );
        // A header count claiming more than the input holds is refused before any allocation.
        let mut huge = b"\xC9H\x02\x01\x00\xC8".to_vec();
        huge.extend_from_slice(&[0; 24]);
        huge.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(Entry::decode(&Bytes::from(huge)), None);
    }

    /// Header counts past `HeaderMap`'s own limits (its capacity panics above 24,576, its
    /// appends above 32,768 entries), with the bytes to back them: decoded or refused, never a
    /// panic.
    #[test]
    fn header_counts_past_the_header_maps_limits_never_panic() {
        for count in [24_577u16, 40_000, u16::MAX] {
            let mut bytes = b"\xC9H\x02\x01\x00\xC8".to_vec();
            bytes.extend_from_slice(&[0; 24]);
            bytes.extend_from_slice(&count.to_be_bytes());
            for _ in 0..count {
                bytes.extend_from_slice(&1u16.to_be_bytes());
                bytes.push(b'a');
                bytes.extend_from_slice(&0u32.to_be_bytes());
            }
            bytes.extend_from_slice(&0u32.to_be_bytes());
            let decoded = Entry::decode(&Bytes::from(bytes));
            match decoded {
                Some(Entry::Response(stored)) => {
                    assert_eq!(stored.headers.len(), usize::from(count))
                }
                None => assert!(count > 32_768, "{count} headers fit a header map"),
                Some(other) => panic!("{other:?}"),
            }
        }
    }
}
