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
/// Decoding is bounded: bincode is told a memory limit of the first size class (4 KiB, 64 KiB,
/// 1 MiB, 16 MiB, 256 MiB, 1 GiB) that holds the input, so a length prefix claiming 2^40 bytes
/// fails at once instead of allocating. Through serde only strings and byte buffers count against
/// that limit, and a valid value never claims more than its own length, so valid values always
/// decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

const BINCODE: bincode::config::Configuration = bincode::config::standard();

macro_rules! bounded_decode {
    ($bytes:expr, $($limit:expr),+) => {{
        let len = $bytes.len();
        $(
            if len <= $limit {
                return finish(
                    bincode::serde::decode_from_slice($bytes, BINCODE.with_limit::<$limit>()),
                    len,
                );
            }
        )+
        Err(format!("a bincode value of {len} bytes is larger than the 1 GiB this codec decodes").into())
    }};
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
        bounded_decode!(
            bytes,
            4096,
            65_536,
            1_048_576,
            16_777_216,
            268_435_456,
            1_073_741_824
        )
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
    fn bincode_decodes_large_valid_values() {
        let big = "x".repeat(3 << 20);
        let mut out = Vec::new();
        Bincode.encode(&big, &mut out).unwrap();
        assert_eq!(Bincode.decode::<String>(&out).unwrap(), big);
    }
}
