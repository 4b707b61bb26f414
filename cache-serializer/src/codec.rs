//! Codecs: how a value becomes bytes. Bincode by default, JSON behind the `json` feature.

use std::fmt;

use cache_core::BoxError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Turns serde values into bytes and back.
///
/// The codec's [`ID`](Codec::ID) is recorded in every stored value, so a value written with one
/// codec is never decoded with another. Ids 0 to 127 are reserved for this crate; a codec of
/// your own takes an id from 128 to 255.
///
/// `decode` sees bytes from outside the program: it must return an error, never panic or
/// allocate far beyond the input, on truncated, corrupted or hostile input, and it must refuse
/// trailing bytes.
pub trait Codec: Send + Sync + fmt::Debug + 'static {
    /// The byte recorded in every envelope.
    const ID: u8;
    /// A short name, for messages.
    const NAME: &'static str;

    /// Appends the encoding of `value` to `out`.
    ///
    /// # Errors
    ///
    /// The codec's error when the value cannot be encoded (a map with non-string keys in JSON,
    /// say).
    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError>;

    /// Decodes a whole value from `bytes`.
    ///
    /// # Errors
    ///
    /// The codec's error for invalid, truncated or trailing bytes.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError>;
}

/// Compact binary encoding with `bincode` 2.0.1 (standard configuration: little endian, varints).
///
/// Decoding is bounded: bincode is told a memory limit, and checks every length a value claims
/// against it before allocating, so a length prefix claiming 2^40 bytes fails at once. The
/// limit starts at the first size class (4 KiB, 64 KiB, 1 MiB, 16 MiB, 256 MiB, 1 GiB) that
/// holds 16 times the input, and a value that needs more moves up one class at a time: bincode counts a
/// vector of `n` elements as `n * size_of::<T>()`, which for a `Vec<(u32, String)>` is 16 times
/// its encoded size, so a first class alone refused valid values (found by a test of 100
/// rows). Every class only bounds claims; what is allocated is what the input really holds, so
/// hostile input still costs at most a few failed passes. Values whose claims exceed 1 GiB are
/// refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// The limit classes, smallest first.
const CLASSES: [usize; 6] = [
    4096,
    65_536,
    1_048_576,
    16_777_216,
    268_435_456,
    1_073_741_824,
];

fn decode_within<T: DeserializeOwned>(
    bytes: &[u8],
    class: usize,
) -> Result<(T, usize), bincode::error::DecodeError> {
    macro_rules! at {
        ($($limit:literal),+) => {
            match class {
                $($limit => bincode::serde::decode_from_slice(bytes, BINCODE.with_limit::<$limit>()),)+
                _ => bincode::serde::decode_from_slice(bytes, BINCODE.with_limit::<1_073_741_824>()),
            }
        };
    }
    at!(4096, 65_536, 1_048_576, 16_777_216, 268_435_456)
}

fn finish<T>(
    result: Result<(T, usize), bincode::error::DecodeError>,
    len: usize,
) -> Result<T, BoxError> {
    let (value, read) = result?;
    if read != len {
        return Err(format!("{} trailing bytes after the value", len - read).into());
    }
    Ok(value)
}

impl Codec for Bincode {
    const ID: u8 = 1;
    const NAME: &'static str = "bincode";

    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError> {
        bincode::serde::encode_into_std_write(value, out, BINCODE)?;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError> {
        let len = bytes.len();
        if len > CLASSES[CLASSES.len() - 1] {
            return Err(format!(
                "a bincode value of {len} bytes is larger than the 1 GiB this codec decodes"
            )
            .into());
        }
        // Start where claims of 16 times the input fit: most values then decode in one pass.
        let first = CLASSES
            .iter()
            .position(|&class| len.saturating_mul(16) <= class)
            .unwrap_or(CLASSES.len() - 1);
        let mut last = None;
        for &class in &CLASSES[first..] {
            match decode_within::<T>(bytes, class) {
                Err(bincode::error::DecodeError::LimitExceeded) => {
                    last = Some(bincode::error::DecodeError::LimitExceeded);
                }
                result => return finish(result, len),
            }
        }
        Err(last.map_or_else(|| "no limit class".into(), |e| e.into()))
    }
}

/// JSON with `serde_json` (feature `json`): readable with any tool, larger and slower than
/// bincode.
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
impl Codec for Json {
    const ID: u8 = 2;
    const NAME: &'static str = "json";

    fn encode<T: Serialize + ?Sized>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), BoxError> {
        serde_json::to_writer(out, value)?;
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BoxError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bincode_round_trip() {
        let mut out = Vec::new();
        Bincode
            .encode(&("hello", 42u32, vec![1u8, 2, 3]), &mut out)
            .unwrap();
        let back: (String, u32, Vec<u8>) = Bincode.decode(&out).unwrap();
        assert_eq!(back, ("hello".to_string(), 42, vec![1, 2, 3]));
    }

    #[test]
    fn bincode_refuses_trailing_bytes() {
        let mut out = Vec::new();
        Bincode.encode(&7u32, &mut out).unwrap();
        out.push(0);
        let err = Bincode.decode::<u32>(&out).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn bincode_refuses_a_huge_length_without_allocating() {
        // A varint length prefix of 2^40 for a String, then nothing.
        let hostile = [253u8, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(Bincode.decode::<String>(&hostile).is_err());
        assert!(Bincode.decode::<Vec<u8>>(&hostile).is_err());
        assert!(Bincode.decode::<Vec<String>>(&hostile).is_err());
    }

    #[test]
    fn bincode_decodes_values_larger_in_memory_than_encoded() {
        // 100 rows of (u32, String): about 3 KiB encoded, claims of about 6 KiB.
        let rows: Vec<(u32, String)> = (0..100).map(|i| (i, format!("row {i} of many"))).collect();
        let mut out = Vec::new();
        Bincode.encode(&rows, &mut out).unwrap();
        assert!(out.len() < 4096);
        assert_eq!(Bincode.decode::<Vec<(u32, String)>>(&out).unwrap(), rows);
        // Unit-like elements: one byte each, far larger in memory.
        let sparse: Vec<Option<[u64; 32]>> = vec![None; 3000];
        let mut out = Vec::new();
        Bincode.encode(&sparse, &mut out).unwrap();
        assert_eq!(
            Bincode.decode::<Vec<Option<[u64; 32]>>>(&out).unwrap(),
            sparse
        );
    }

    #[test]
    fn bincode_decodes_large_valid_values() {
        let big = "x".repeat(3 << 20);
        let mut out = Vec::new();
        Bincode.encode(&big, &mut out).unwrap();
        assert_eq!(Bincode.decode::<String>(&out).unwrap(), big);
    }
}
