//! What a wire protocol gives the transports: a decoder with limits, and its errors.

use std::fmt::Debug;

/// Bounds on one reply, checked as soon as a reply announces a size, before anything is
/// allocated for it or waited for.
///
/// A request sets them from what it can produce: a `GET` cannot be answered by an array, an
/// `MGET` of 20 keys by more than 20 elements, and no value is longer than the engine's value
/// limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// The longest value (a bulk string, a memcached data block), in bytes.
    pub max_value: usize,
    /// The longest line (a status, an error, a header), in bytes.
    pub max_line: usize,
    /// The most elements of one array (or lines of one `stats` block).
    pub max_elements: usize,
    /// How deeply arrays may nest; 0 allows none.
    pub max_depth: usize,
}

impl ReplyLimits {
    /// Limits for replies holding at most one value of `max_value` bytes and no array.
    pub const fn scalar(max_value: usize) -> Self {
        Self {
            max_value,
            max_line: 64 * 1024,
            max_elements: 0,
            max_depth: 0,
        }
    }

    /// The same limits, allowing arrays of at most `elements` elements nested `depth` deep.
    #[must_use]
    pub const fn with_arrays(mut self, elements: usize, depth: usize) -> Self {
        self.max_elements = elements;
        self.max_depth = depth;
        self
    }
}

/// The result of trying to decode one reply from the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<R> {
    /// A whole reply, and how many bytes of the input it took.
    Reply(R, usize),
    /// Not enough input yet: try again once the input holds at least this many bytes.
    Incomplete {
        /// The least total input length at which decoding can make progress.
        needed: usize,
    },
}

/// A protocol's reply decoder: pure, incremental, bounded.
pub trait Decode: Send + Sync + Debug + 'static {
    /// One decoded reply.
    type Reply: Send + Debug + 'static;

    /// Decodes one reply from the start of `input`, within `limits`.
    ///
    /// # Errors
    ///
    /// [`ProtocolError`] when the input is not a reply of this protocol, or a reply over a
    /// limit: the stream can no longer be trusted and the connection must be dropped.
    fn decode(
        &self,
        input: &[u8],
        limits: &ReplyLimits,
    ) -> Result<Decoded<Self::Reply>, ProtocolError>;

    /// Checks that `reply` can answer the `index`-th command of its request (an echoed token
    /// matches, the reply does not say the server lost track of the stream). The default
    /// accepts every reply.
    ///
    /// # Errors
    ///
    /// [`ProtocolError`] when it cannot: the connection is dropped.
    fn check(&self, reply: &Self::Reply, index: usize) -> Result<(), ProtocolError> {
        let _ = (reply, index);
        Ok(())
    }

    /// Whether `reply` is an out-of-band frame the server sends on its own (a RESP3 push),
    /// never the answer to a command: the transports set it aside instead of matching it to a
    /// request. The default: no reply is.
    fn is_push(&self, reply: &Self::Reply) -> bool {
        let _ = reply;
        false
    }

    /// Whether `input`, the start of a frame that may not have arrived whole, begins such an
    /// out-of-band frame. The default: none does.
    fn begins_push(&self, input: &[u8]) -> bool {
        let _ = input;
        false
    }
}

/// A reply that cannot be used: the connection it came on is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A value announced longer than the limit.
    #[error("reply announces a value of {announced} bytes, over the limit of {limit} bytes")]
    ValueTooLong {
        /// The announced length.
        announced: u64,
        /// The limit.
        limit: usize,
    },
    /// An array (or `stats` block) with more elements than the request can produce.
    #[error("reply announces {announced} elements, more than the request can produce ({limit})")]
    TooManyElements {
        /// The announced (or counted) number.
        announced: u64,
        /// The limit.
        limit: usize,
    },
    /// Arrays nested deeper than the request can produce.
    #[error("reply nests arrays deeper than {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// A line without its end within the limit.
    #[error("reply line is longer than {limit} bytes")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// Bytes that are not a reply of the protocol.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// A well-formed reply that cannot answer the request it came for (another request's
    /// opaque token, an unexpected kind).
    #[error("reply does not answer its request: {0}")]
    Unexpected(String),
    /// The server refused the connection (at its connection limit, say) and closes it: a
    /// transient failure, reported as a `Connection` error.
    #[error("the server refused the connection: {0}")]
    Refused(String),
}

/// Finds the end of the line that starts at `from`: the index of its `\r`, or `Ok(None)` when
/// the input ends first.
///
/// # Errors
///
/// [`ProtocolError::LineTooLong`] when no line end is within `max_line` bytes.
pub fn line_end(
    input: &[u8],
    from: usize,
    max_line: usize,
) -> Result<Option<usize>, ProtocolError> {
    let rest = input.get(from..).unwrap_or_default();
    let window = &rest[..rest.len().min(max_line.saturating_add(2))];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(at) => Ok(Some(from + at)),
        None if rest.len() > max_line.saturating_add(1) => {
            Err(ProtocolError::LineTooLong { limit: max_line })
        }
        None => Ok(None),
    }
}

/// Parses an ASCII decimal (with an optional `-`, no leading zeros), strictly.
pub fn parse_i64(digits: &[u8]) -> Option<i64> {
    cache_core::counter::parse_counter(digits)
}

/// Appends the decimal form of `n`.
pub fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip() {
        for n in [0, 7, -7, 10, i64::MAX, i64::MIN, 1234567890] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(parse_i64(&out), Some(n));
        }
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"12a"), None);
        assert_eq!(parse_i64(b"9223372036854775808"), None);
    }

    #[test]
    fn lines_are_bounded() {
        assert_eq!(line_end(b"+OK\r\n", 0, 16), Ok(Some(3)));
        assert_eq!(line_end(b"+OK\r", 0, 16), Ok(None));
        assert_eq!(
            line_end(b"+OKxxxxxx", 0, 4),
            Err(ProtocolError::LineTooLong { limit: 4 })
        );
        assert_eq!(line_end(b"ab+OK\r\n", 2, 3), Ok(Some(5)));
    }
}
