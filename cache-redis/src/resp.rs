//! The RESP2 subset the Redis engines speak: commands out, replies in, with limits.
//!
//! I/O-free: [`command`] appends a request to a buffer and [`Resp`] decodes a reply from the
//! start of one. Every size a reply announces is checked against its [`ReplyLimits`] before
//! anything is allocated or waited for.
//!
//! Public (and hidden from the docs) for the fuzz targets and tools only: not part of the
//! crate's API, and free to change in any release.

use cache_remote::{
    Decode, Decoded, ProtocolError, ReplyLimits, line_end, parse_i64, push_decimal,
};

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`: a status line.
    Simple(String),
    /// `-ERR ...`: an error reply (the connection stays usable).
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$5\r\nhello`: a binary-safe string.
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`: no value.
    Nil,
    /// `*2\r\n...`: an array.
    Array(Vec<Value>),
}

impl Value {
    /// The error text, for an error reply.
    pub fn as_error(&self) -> Option<&str> {
        match self {
            Self::Error(text) => Some(text),
            _ => None,
        }
    }

    /// A short description of the kind of reply, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Simple(_) => "status",
            Self::Error(_) => "error",
            Self::Integer(_) => "integer",
            Self::Bulk(_) => "bulk string",
            Self::Nil => "nil",
            Self::Array(_) => "array",
        }
    }
}

/// Appends one command (an array of bulk strings) to `out`.
///
/// ```
/// let mut out = Vec::new();
/// cache_redis::resp::command(&mut out, &[b"GET", b"key"]);
/// assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
/// ```
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let len: usize = args.iter().map(|a| a.len() + 16).sum();
    out.reserve(len + 16);
    out.push(b'*');
    push_decimal(out, args.len() as i64);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(out, arg.len() as i64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// A decimal argument (`PX 1500`) as bytes.
pub fn decimal(n: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    push_decimal(&mut out, n);
    out
}

/// The RESP2 decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resp;

impl Decode for Resp {
    type Reply = Value;

    fn decode(&self, input: &[u8], limits: &ReplyLimits) -> Result<Decoded<Value>, ProtocolError> {
        let mut at = 0;
        match parse(input, &mut at, limits, 0)? {
            Parsed::Done(value) => Ok(Decoded::Reply(value, at)),
            Parsed::Need(needed) => Ok(Decoded::Incomplete { needed }),
        }
    }
}

enum Parsed {
    Done(Value),
    /// The input must hold at least this many bytes.
    Need(usize),
}

fn parse(
    input: &[u8],
    at: &mut usize,
    limits: &ReplyLimits,
    depth: usize,
) -> Result<Parsed, ProtocolError> {
    let start = *at;
    let Some(end) = line_end(input, start + 1, limits.max_line)? else {
        return Ok(Parsed::Need((input.len() + 1).max(start + 3)));
    };
    let Some(&kind) = input.get(start) else {
        return Ok(Parsed::Need(start + 3));
    };
    let line = &input[start + 1..end];
    *at = end + 2;
    let number = |what: &str| {
        parse_i64(line).ok_or_else(|| {
            ProtocolError::Malformed(format!(
                "{what} {:?} is not a number",
                String::from_utf8_lossy(&line[..line.len().min(32)])
            ))
        })
    };
    match kind {
        b'+' => Ok(Parsed::Done(Value::Simple(
            String::from_utf8_lossy(line).into_owned(),
        ))),
        b'-' => Ok(Parsed::Done(Value::Error(
            String::from_utf8_lossy(line).into_owned(),
        ))),
        b':' => Ok(Parsed::Done(Value::Integer(number("integer")?))),
        b'$' => {
            let len = number("bulk length")?;
            if len == -1 {
                return Ok(Parsed::Done(Value::Nil));
            }
            let len = u64::try_from(len)
                .map_err(|_| ProtocolError::Malformed(format!("bulk length {len}")))?;
            if len > limits.max_value as u64 {
                return Err(ProtocolError::ValueTooLong {
                    announced: len,
                    limit: limits.max_value,
                });
            }
            let len = len as usize;
            let body = *at;
            let needed = body + len + 2;
            if input.len() < needed {
                return Ok(Parsed::Need(needed));
            }
            if &input[body + len..needed] != b"\r\n" {
                return Err(ProtocolError::Malformed(
                    "bulk string not followed by CRLF".into(),
                ));
            }
            *at = needed;
            Ok(Parsed::Done(Value::Bulk(input[body..body + len].to_vec())))
        }
        b'*' => {
            let count = number("array length")?;
            if count == -1 {
                return Ok(Parsed::Done(Value::Nil));
            }
            let count = u64::try_from(count)
                .map_err(|_| ProtocolError::Malformed(format!("array length {count}")))?;
            if depth >= limits.max_depth {
                return Err(ProtocolError::TooDeep {
                    limit: limits.max_depth,
                });
            }
            if count > limits.max_elements as u64 {
                return Err(ProtocolError::TooManyElements {
                    announced: count,
                    limit: limits.max_elements,
                });
            }
            let mut items = Vec::with_capacity((count as usize).min(1024));
            for _ in 0..count {
                match parse(input, at, limits, depth + 1)? {
                    Parsed::Done(item) => items.push(item),
                    Parsed::Need(needed) => return Ok(Parsed::Need(needed)),
                }
            }
            Ok(Parsed::Done(Value::Array(items)))
        }
        other => Err(ProtocolError::Malformed(format!(
            "unknown reply type byte {other:#04x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReplyLimits = ReplyLimits::scalar(16).with_arrays(4, 2);

    fn decode(input: &[u8]) -> Result<Decoded<Value>, ProtocolError> {
        Resp.decode(input, &LIMITS)
    }

    #[test]
    fn whole_replies() {
        assert_eq!(
            decode(b"+OK\r\n"),
            Ok(Decoded::Reply(Value::Simple("OK".into()), 5))
        );
        assert_eq!(
            decode(b"-ERR no\r\nrest"),
            Ok(Decoded::Reply(Value::Error("ERR no".into()), 9))
        );
        assert_eq!(
            decode(b":-12\r\n"),
            Ok(Decoded::Reply(Value::Integer(-12), 6))
        );
        assert_eq!(decode(b"$-1\r\n"), Ok(Decoded::Reply(Value::Nil, 5)));
        assert_eq!(
            decode(b"$0\r\n\r\n"),
            Ok(Decoded::Reply(Value::Bulk(Vec::new()), 6))
        );
        assert_eq!(
            decode(b"*2\r\n$1\r\na\r\n$-1\r\n"),
            Ok(Decoded::Reply(
                Value::Array(vec![Value::Bulk(b"a".to_vec()), Value::Nil]),
                16
            ))
        );
    }

    #[test]
    fn partial_replies_ask_for_more() {
        let whole = b"*2\r\n$5\r\nhello\r\n:1\r\n";
        for cut in 0..whole.len() {
            match decode(&whole[..cut]) {
                Ok(Decoded::Incomplete { needed }) => assert!(needed > cut, "{cut}: {needed}"),
                other => panic!("{cut}: {other:?}"),
            }
        }
        assert!(matches!(decode(whole), Ok(Decoded::Reply(_, n)) if n == whole.len()));
        assert_eq!(
            decode(b"$5\r\nhe"),
            Ok(Decoded::Incomplete { needed: 11 }),
            "a bulk string says how much it needs"
        );
    }

    #[test]
    fn limits_are_checked_before_waiting() {
        assert_eq!(
            decode(b"$2147483647\r\n"),
            Err(ProtocolError::ValueTooLong {
                announced: 2147483647,
                limit: 16
            })
        );
        assert_eq!(
            decode(b"*1099511627776\r\n"),
            Err(ProtocolError::TooManyElements {
                announced: 1099511627776,
                limit: 4
            })
        );
        assert_eq!(
            decode(b"*1\r\n*1\r\n*1\r\n"),
            Err(ProtocolError::TooDeep { limit: 2 })
        );
        let endless = [b"+".as_slice(), &[b'y'; 70_000]].concat();
        assert!(matches!(
            decode(&endless),
            Err(ProtocolError::LineTooLong { .. })
        ));
        assert!(matches!(decode(b"?\r\n"), Err(ProtocolError::Malformed(_))));
        assert!(matches!(
            decode(b"$3\r\nabcd\r\n"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode(b":x\r\n"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"$-2\r\n"),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SET", b"k", b"", b"PX", &decimal(1500)]);
        assert_eq!(
            out,
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\nPX\r\n$4\r\n1500\r\n"
        );
    }
}
