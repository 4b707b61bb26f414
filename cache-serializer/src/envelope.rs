//! The envelope in front of every stored value.
//!
//! ```text
//! byte 0      magic 0xC7
//! byte 1      envelope format: 1 plain payload, 2 LZ4-compressed payload, 3 a cached
//!             absence (a loader's "not found"; nothing follows the header); plus 0x10
//!             when the value records its load time
//! byte 2      codec id (1 bincode, 2 json, 128-255 third-party)
//! bytes 3-10  fingerprint of the type's schema, big endian
//! bytes 11-14 with 0x10 only: how long the loader took to produce the value, in
//!             microseconds (u32, big endian, saturated), for early refresh
//! then        format 1: the codec's payload
//!             format 2: the payload's length (u32, big endian), then the payload as one LZ4
//!             block
//! ```
//!
//! Format 2 is a new format byte rather than a flag elsewhere so that readers that predate it
//! see a version they do not know (a schema mismatch, so a miss), never garbage.

use std::time::Duration;

use crate::fingerprint::Fingerprint;

pub(crate) const MAGIC: u8 = 0xC7;
pub(crate) const VERSION: u8 = 1;
/// The format of an envelope whose payload is LZ4-compressed.
pub(crate) const COMPRESSED: u8 = 2;
/// The format of a cached absence: a loader said "not found" (no payload).
pub(crate) const ABSENT: u8 = 3;
pub(crate) const HEADER_LEN: usize = 11;
/// Added to the format: the header is followed by the load time.
pub(crate) const TIMED: u8 = 0x10;
const TIME_LEN: usize = 4;
/// LZ4 cannot inflate a block by more than about 255 times: a length claiming more is a lie,
/// refused before anything is allocated.
const LZ4_MAX_RATIO: usize = 255;

/// The payload of an envelope, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload<'a> {
    Plain(&'a [u8]),
    Lz4 {
        inflated: usize,
        block: &'a [u8],
    },
    /// A cached absence of a value of this type.
    Absent,
}

impl<'a> Payload<'a> {
    /// How many bytes the codec's bytes take once inflated (as claimed, for a compressed one).
    pub(crate) fn size(&self) -> usize {
        match self {
            Payload::Plain(bytes) => bytes.len(),
            Payload::Lz4 { inflated, .. } => *inflated,
            Payload::Absent => 0,
        }
    }

    /// The codec's bytes: the plain payload as is, a compressed one inflated, if it claims no
    /// more than `max_inflated` bytes (and no more than LZ4 can produce from its block), and
    /// inflates to exactly what it claims.
    pub(crate) fn inflate(self, max_inflated: usize) -> Result<std::borrow::Cow<'a, [u8]>, String> {
        match self {
            Payload::Plain(bytes) => Ok(std::borrow::Cow::Borrowed(bytes)),
            Payload::Absent => Ok(std::borrow::Cow::Borrowed(&[])),
            Payload::Lz4 { inflated, block } => {
                if inflated > max_inflated {
                    return Err(format!(
                        "a compressed value claims {inflated} bytes, over the {max_inflated}-byte \
                         limit (TypedCacheBuilder::max_inflated_size)"
                    ));
                }
                if inflated > block.len().saturating_mul(LZ4_MAX_RATIO).saturating_add(16) {
                    return Err(format!(
                        "a compressed value of {} bytes claims {inflated} bytes: more than LZ4 \
                         can inflate to",
                        block.len()
                    ));
                }
                let out = lz4_flex::block::decompress(block, inflated)
                    .map_err(|e| format!("a compressed value does not inflate: {e}"))?;
                if out.len() != inflated {
                    return Err(format!(
                        "a compressed value inflated to {} bytes, not the {inflated} it claims",
                        out.len()
                    ));
                }
                Ok(std::borrow::Cow::Owned(out))
            }
        }
    }
}

/// The envelope of a cached absence of a value of the type `fingerprint` names.
pub(crate) fn absent(codec: u8, fingerprint: Fingerprint) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    write_header(&mut out, codec, fingerprint);
    out[1] = ABSENT;
    out
}

/// Compresses the payload of `envelope` (a whole envelope of format 1) in place when that makes
/// it smaller.
pub(crate) fn compress(envelope: &mut Vec<u8>) {
    let start = payload_start(envelope);
    let Some(payload) = envelope.get(start..) else {
        return;
    };
    let Ok(inflated) = u32::try_from(payload.len()) else {
        return;
    };
    let block = lz4_flex::block::compress(payload);
    if block.len() + 4 >= payload.len() {
        return; // incompressible: stored plain
    }
    envelope.truncate(start);
    envelope[1] = COMPRESSED | (envelope[1] & TIMED);
    envelope.extend_from_slice(&inflated.to_be_bytes());
    envelope.extend_from_slice(&block);
}

/// Why the bytes under a key are not a value this reader can decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The bytes were not written by this library (or were cut short).
    Foreign,
    /// Written by this library for another envelope version, codec or schema.
    Mismatch { expected: String, found: String },
}

pub(crate) fn write_header(out: &mut Vec<u8>, codec: u8, fingerprint: Fingerprint) {
    out.push(MAGIC);
    out.push(VERSION);
    out.push(codec);
    out.extend_from_slice(&fingerprint.0.to_be_bytes());
}

/// Writes the header of a value that took `load_time` to load.
pub(crate) fn write_timed_header(
    out: &mut Vec<u8>,
    codec: u8,
    fingerprint: Fingerprint,
    load_time: Duration,
) {
    write_header(out, codec, fingerprint);
    out[1] |= TIMED;
    let micros = u32::try_from(load_time.as_micros()).unwrap_or(u32::MAX);
    out.extend_from_slice(&micros.to_be_bytes());
}

/// Where the payload of a whole envelope starts.
pub(crate) fn payload_start(envelope: &[u8]) -> usize {
    match envelope.get(1) {
        Some(format) if format & TIMED != 0 => HEADER_LEN + TIME_LEN,
        _ => HEADER_LEN,
    }
}

/// The load time an envelope records, if it is one of ours and records one.
pub(crate) fn load_time(bytes: &[u8]) -> Option<Duration> {
    let (header, rest) = bytes.split_first_chunk::<HEADER_LEN>()?;
    if header[0] != MAGIC || header[1] & TIMED == 0 {
        return None;
    }
    let (micros, _) = rest.split_first_chunk::<TIME_LEN>()?;
    Some(Duration::from_micros(u64::from(u32::from_be_bytes(
        *micros,
    ))))
}

/// Checks the header and returns the payload.
pub(crate) fn open(
    bytes: &[u8],
    codec: u8,
    fingerprint: Fingerprint,
) -> Result<Payload<'_>, Refusal> {
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(Refusal::Foreign);
    };
    if header[0] != MAGIC {
        return Err(Refusal::Foreign);
    }
    let format = header[1] & !TIMED;
    if !matches!(format, VERSION | COMPRESSED | ABSENT) {
        return Err(Refusal::Mismatch {
            expected: format!("envelope v{VERSION}"),
            found: format!("envelope v{}", header[1]),
        });
    }
    if header[2] != codec {
        return Err(Refusal::Mismatch {
            expected: format!("codec {codec}"),
            found: format!("codec {}", header[2]),
        });
    }
    let mut found = [0u8; 8];
    found.copy_from_slice(&header[3..]);
    let found = Fingerprint(u64::from_be_bytes(found));
    if found != fingerprint {
        return Err(Refusal::Mismatch {
            expected: format!("schema {fingerprint}"),
            found: format!("schema {found}"),
        });
    }
    let payload = if header[1] & TIMED == 0 {
        payload
    } else {
        match payload.split_first_chunk::<TIME_LEN>() {
            Some((_, payload)) => payload,
            None => return Err(Refusal::Foreign),
        }
    };
    if format == ABSENT {
        return if payload.is_empty() {
            Ok(Payload::Absent)
        } else {
            Err(Refusal::Foreign)
        };
    }
    if format == COMPRESSED {
        let Some((length, block)) = payload.split_first_chunk::<4>() else {
            return Err(Refusal::Foreign);
        };
        let inflated = usize::try_from(u32::from_be_bytes(*length)).unwrap_or(usize::MAX);
        return Ok(Payload::Lz4 { inflated, block });
    }
    Ok(Payload::Plain(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut out = Vec::new();
        write_header(&mut out, 1, Fingerprint(0xdead_beef));
        out.extend_from_slice(b"payload");
        assert_eq!(
            open(&out, 1, Fingerprint(0xdead_beef)),
            Ok(Payload::Plain(&b"payload"[..]))
        );
    }

    #[test]
    fn refusals() {
        let mut out = Vec::new();
        write_header(&mut out, 1, Fingerprint(7));
        assert!(matches!(
            open(&out, 2, Fingerprint(7)),
            Err(Refusal::Mismatch { .. })
        ));
        assert!(matches!(
            open(&out, 1, Fingerprint(8)),
            Err(Refusal::Mismatch { .. })
        ));
        assert_eq!(open(&out[..5], 1, Fingerprint(7)), Err(Refusal::Foreign));
        assert_eq!(
            open(b"plain text, not ours", 1, Fingerprint(7)),
            Err(Refusal::Foreign)
        );
        let mut newer = out.clone();
        newer[1] = 4;
        assert!(matches!(
            open(&newer, 1, Fingerprint(7)),
            Err(Refusal::Mismatch { .. })
        ));
    }

    fn compressed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, 1, Fingerprint(7));
        out.extend_from_slice(payload);
        compress(&mut out);
        out
    }

    #[test]
    fn compressible_payloads_are_compressed_and_inflate_back() {
        let payload = b"order order order order order order order order order order ".repeat(20);
        let out = compressed(&payload);
        assert_eq!(out[1], COMPRESSED);
        assert!(out.len() < payload.len() / 4, "{} bytes", out.len());
        let opened = open(&out, 1, Fingerprint(7)).unwrap();
        assert_eq!(
            opened.inflate(1 << 20).unwrap().as_ref(),
            payload.as_slice()
        );
        // The limit is the reader's: a smaller one refuses the value without inflating it.
        let err = opened.inflate(100).unwrap_err();
        assert!(err.contains("max_inflated_size"), "{err}");
    }

    #[test]
    fn incompressible_payloads_stay_plain() {
        // SplitMix64 output: no repeats for LZ4 to find.
        let mut state = 7u64;
        let payload: Vec<u8> = (0..2000)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as u8
            })
            .collect();
        let out = compressed(&payload);
        assert_eq!(out[1], VERSION);
        assert_eq!(
            open(&out, 1, Fingerprint(7)),
            Ok(Payload::Plain(&payload[..]))
        );
    }

    #[test]
    fn lying_lengths_and_broken_blocks_are_refused_without_a_large_allocation() {
        let payload = b"abcabcabcabcabcabcabcabcabcabcabcabcabcabc".repeat(10);
        let mut out = compressed(&payload);
        // A claim of 4 GiB for a block of a few bytes: refused by the ratio bound.
        out[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let err = open(&out, 1, Fingerprint(7))
            .unwrap()
            .inflate(usize::MAX)
            .unwrap_err();
        assert!(err.contains("more than LZ4"), "{err}");
        // A claim within bounds but wrong: the block does not inflate to it.
        let mut out = compressed(&payload);
        out[HEADER_LEN..HEADER_LEN + 4]
            .copy_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
        assert!(
            open(&out, 1, Fingerprint(7))
                .unwrap()
                .inflate(1 << 20)
                .is_err()
        );
        // A truncated block, and a header cut before the length.
        let out = compressed(&payload);
        assert!(
            open(&out[..out.len() - 3], 1, Fingerprint(7))
                .unwrap()
                .inflate(1 << 20)
                .is_err()
        );
        assert_eq!(
            open(&out[..HEADER_LEN + 2], 1, Fingerprint(7)),
            Err(Refusal::Foreign)
        );
    }

    #[test]
    fn load_times_ride_before_the_payload_plain_or_compressed() {
        let mut out = Vec::new();
        write_timed_header(&mut out, 1, Fingerprint(7), Duration::from_micros(1234));
        out.extend_from_slice(b"payload");
        assert_eq!(out[1], VERSION | TIMED);
        assert_eq!(load_time(&out), Some(Duration::from_micros(1234)));
        assert_eq!(
            open(&out, 1, Fingerprint(7)),
            Ok(Payload::Plain(&b"payload"[..]))
        );
        // Cut inside the load time: not ours.
        assert_eq!(
            open(&out[..HEADER_LEN + 2], 1, Fingerprint(7)),
            Err(Refusal::Foreign)
        );
        assert_eq!(load_time(&out[..HEADER_LEN + 2]), None);

        let payload = b"order order order order order order order order ".repeat(20);
        let mut out = Vec::new();
        write_timed_header(&mut out, 1, Fingerprint(7), Duration::from_secs(3));
        out.extend_from_slice(&payload);
        compress(&mut out);
        assert_eq!(out[1], COMPRESSED | TIMED);
        assert_eq!(load_time(&out), Some(Duration::from_secs(3)));
        let opened = open(&out, 1, Fingerprint(7)).unwrap();
        assert_eq!(
            opened.inflate(1 << 20).unwrap().as_ref(),
            payload.as_slice()
        );

        // Saturated, never wrapped; untimed envelopes record none.
        let mut out = Vec::new();
        write_timed_header(&mut out, 1, Fingerprint(7), Duration::from_secs(1 << 40));
        assert_eq!(
            load_time(&out),
            Some(Duration::from_micros(u64::from(u32::MAX)))
        );
        assert_eq!(load_time(&absent(1, Fingerprint(7))), None);
    }

    #[test]
    fn absences_carry_no_payload() {
        let out = absent(1, Fingerprint(7));
        assert_eq!(open(&out, 1, Fingerprint(7)), Ok(Payload::Absent));
        assert!(matches!(
            open(&out, 1, Fingerprint(8)),
            Err(Refusal::Mismatch { .. })
        ));
        let mut longer = out.clone();
        longer.push(0);
        assert_eq!(open(&longer, 1, Fingerprint(7)), Err(Refusal::Foreign));
    }
}
