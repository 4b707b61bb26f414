//! The envelope in front of every stored value.
//!
//! ```text
//! byte 0      magic 0xC7
//! byte 1      envelope format version (1)
//! byte 2      codec id (1 bincode, 2 json, 128-255 third-party)
//! bytes 3-10  fingerprint of the type's schema, big endian
//! bytes 11-   the codec's payload
//! ```

use crate::fingerprint::Fingerprint;

pub(crate) const MAGIC: u8 = 0xC7;
pub(crate) const VERSION: u8 = 1;
pub(crate) const HEADER_LEN: usize = 11;

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

/// Checks the header and returns the payload.
pub(crate) fn open(bytes: &[u8], codec: u8, fingerprint: Fingerprint) -> Result<&[u8], Refusal> {
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(Refusal::Foreign);
    };
    if header[0] != MAGIC {
        return Err(Refusal::Foreign);
    }
    if header[1] != VERSION {
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
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut out = Vec::new();
        write_header(&mut out, 1, Fingerprint(0xdead_beef));
        out.extend_from_slice(b"payload");
        assert_eq!(open(&out, 1, Fingerprint(0xdead_beef)), Ok(&b"payload"[..]));
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
        newer[1] = 2;
        assert!(matches!(
            open(&newer, 1, Fingerprint(7)),
            Err(Refusal::Mismatch { .. })
        ));
    }
}
