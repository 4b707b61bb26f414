//! RESP, as the Redis engines speak it: commands out, replies in (RESP2 and RESP3), with limits.
//!
//! I/O-free: [`command`] appends a request to a buffer and [`Resp`] decodes a reply from the
//! start of one. Every size a reply announces is checked against its [`ReplyLimits`] before
//! anything is allocated or waited for.
//!
//! RESP3's types are read into the shapes RESP2 gives the same data, as Redis itself does for a
//! RESP2 client: a null is [`Value::Nil`], a map a flat array of keys and values, a set an
//! array, a boolean the integer 1 or 0, a double or big number its text, a verbatim string its
//! text without the format, a blob error an error; attributes are read and dropped. So every
//! exchange reads replies of either protocol with one code path. Push frames (`>`) alone stay
//! apart, as [`Value::Push`]: the transports route them away from the replies.
//!
//! Public (and hidden from the docs) for the fuzz targets and tools only: not part of the
//! crate's API, and free to change in any release.

use cache_remote::{
    Decode, Decoded, ProtocolError, ReplyLimits, line_end, parse_i64, push_decimal,
};

/// One reply (RESP3's types in their RESP2 shapes; see the [module docs](self)).
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
    /// `*2\r\n...`: an array (and a RESP3 map or set).
    Array(Vec<Value>),
    /// `>2\r\n...`: a RESP3 push frame (an invalidation, a pub/sub message): never the reply
    /// to a command.
    Push(Vec<Value>),
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
            Self::Push(_) => "push",
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

/// The RESP decoder (RESP2 and RESP3).
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

    fn is_push(&self, reply: &Value) -> bool {
        matches!(reply, Value::Push(_))
    }

    fn begins_push(&self, input: &[u8]) -> bool {
        input.first() == Some(&b'>')
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
    let text = || String::from_utf8_lossy(line).into_owned();
    match kind {
        b'+' => Ok(Parsed::Done(Value::Simple(text()))),
        b'-' => Ok(Parsed::Done(Value::Error(text()))),
        b':' => Ok(Parsed::Done(Value::Integer(number("integer")?))),
        // RESP3 scalars, in their RESP2 shapes.
        b'_' if line.is_empty() => Ok(Parsed::Done(Value::Nil)),
        b'_' => Err(ProtocolError::Malformed("a null has no payload".into())),
        b'#' => match line {
            b"t" => Ok(Parsed::Done(Value::Integer(1))),
            b"f" => Ok(Parsed::Done(Value::Integer(0))),
            _ => Err(ProtocolError::Malformed("a boolean is #t or #f".into())),
        },
        b',' | b'(' if is_number_text(kind, line) => Ok(Parsed::Done(Value::Bulk(line.to_vec()))),
        b',' | b'(' => Err(ProtocolError::Malformed(format!(
            "{:?} is not a number",
            String::from_utf8_lossy(&line[..line.len().min(32)])
        ))),
        b'$' | b'!' | b'=' => {
            let len = number("string length")?;
            if len == -1 && kind == b'$' {
                return Ok(Parsed::Done(Value::Nil));
            }
            let len = u64::try_from(len)
                .map_err(|_| ProtocolError::Malformed(format!("string length {len}")))?;
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
                    "string not followed by CRLF".into(),
                ));
            }
            *at = needed;
            let bytes = &input[body..body + len];
            match kind {
                b'!' => Ok(Parsed::Done(Value::Error(
                    String::from_utf8_lossy(bytes).into_owned(),
                ))),
                // `=15\r\ntxt:Some string`: three bytes of format and a colon, then the text.
                b'=' => match bytes.get(3) {
                    Some(b':') => Ok(Parsed::Done(Value::Bulk(bytes[4..].to_vec()))),
                    _ => Err(ProtocolError::Malformed(
                        "a verbatim string starts with its format and a colon".into(),
                    )),
                },
                _ => Ok(Parsed::Done(Value::Bulk(bytes.to_vec()))),
            }
        }
        b'*' | b'~' | b'%' | b'>' | b'|' => {
            let count = number("aggregate length")?;
            if count == -1 && kind == b'*' {
                return Ok(Parsed::Done(Value::Nil));
            }
            let count = u64::try_from(count)
                .map_err(|_| ProtocolError::Malformed(format!("aggregate length {count}")))?;
            // A map or an attribute announces pairs: each is two elements.
            let elements = if matches!(kind, b'%' | b'|') {
                count.saturating_mul(2)
            } else {
                count
            };
            if depth >= limits.max_depth {
                return Err(ProtocolError::TooDeep {
                    limit: limits.max_depth,
                });
            }
            if elements > limits.max_elements as u64 {
                return Err(ProtocolError::TooManyElements {
                    announced: elements,
                    limit: limits.max_elements,
                });
            }
            let mut items = Vec::with_capacity((elements as usize).min(1024));
            for _ in 0..elements {
                match parse(input, at, limits, depth + 1)? {
                    Parsed::Done(item) => items.push(item),
                    Parsed::Need(needed) => return Ok(Parsed::Need(needed)),
                }
            }
            match kind {
                b'>' => Ok(Parsed::Done(Value::Push(items))),
                // An attribute describes the reply that follows it: read it and keep the reply
                // (one level deeper, so that a chain of attributes is bounded too).
                b'|' => parse(input, at, limits, depth + 1),
                _ => Ok(Parsed::Done(Value::Array(items))),
            }
        }
        other => Err(ProtocolError::Malformed(format!(
            "unknown reply type byte {other:#04x}"
        ))),
    }
}

/// Whether `line` is a RESP3 double (`,`: digits, a sign, a point, an exponent, `inf`, `nan`)
/// or big number (`(`: a sign and digits).
fn is_number_text(kind: u8, line: &[u8]) -> bool {
    let digits = line.strip_prefix(b"-").unwrap_or(line);
    if kind == b'(' {
        return !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
    }
    matches!(digits, b"inf" | b"nan")
        || (!digits.is_empty()
            && digits
                .iter()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')))
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
    fn resp3_types_read_as_their_resp2_shapes() {
        let bulk = |text: &str| Value::Bulk(text.as_bytes().to_vec());
        let cases: [(&[u8], Value); 12] = [
            (b"_\r\n", Value::Nil),
            (b"#t\r\n", Value::Integer(1)),
            (b"#f\r\n", Value::Integer(0)),
            (b",3.25\r\n", bulk("3.25")),
            (b",-inf\r\n", bulk("-inf")),
            (b",1.5e-3\r\n", bulk("1.5e-3")),
            (b"(-3492890328409238509\r\n", bulk("-3492890328409238509")),
            (b"!9\r\nERR no it\r\n", Value::Error("ERR no it".into())),
            (b"=8\r\ntxt:some\r\n", bulk("some")),
            (
                b"%2\r\n+a\r\n:1\r\n+b\r\n_\r\n",
                Value::Array(vec![
                    Value::Simple("a".into()),
                    Value::Integer(1),
                    Value::Simple("b".into()),
                    Value::Nil,
                ]),
            ),
            (
                b"~2\r\n$1\r\nx\r\n$1\r\ny\r\n",
                Value::Array(vec![bulk("x"), bulk("y")]),
            ),
            // An attribute before a reply is read and dropped.
            (b"|1\r\n+ttl\r\n:3\r\n$2\r\nok\r\n", bulk("ok")),
        ];
        for (wire, value) in cases {
            assert_eq!(
                decode(wire),
                Ok(Decoded::Reply(value, wire.len())),
                "{}",
                String::from_utf8_lossy(wire)
            );
        }
        for bad in [
            b"#x\r\n".as_slice(),
            b"_x\r\n",
            b",1.2.x\r\n",
            b"(12a\r\n",
            b"=3\r\nabc\r\n",
        ] {
            assert!(
                matches!(decode(bad), Err(ProtocolError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(
            matches!(decode(b"!-1\r\n"), Err(ProtocolError::Malformed(_))),
            "only RESP2's $-1 and *-1 are nulls"
        );
    }

    #[test]
    fn resp3_aggregates_are_bounded_like_arrays() {
        // A map of 3 pairs is 6 elements: over the limit of 4.
        assert_eq!(
            decode(b"%3\r\n"),
            Err(ProtocolError::TooManyElements {
                announced: 6,
                limit: 4
            })
        );
        assert_eq!(
            decode(b"~1\r\n~1\r\n~1\r\n"),
            Err(ProtocolError::TooDeep { limit: 2 })
        );
        // A chain of attributes nests too.
        assert_eq!(
            decode(b"|0\r\n|0\r\n|0\r\n:1\r\n"),
            Err(ProtocolError::TooDeep { limit: 2 })
        );
        assert_eq!(
            decode(b"=2147483647\r\n"),
            Err(ProtocolError::ValueTooLong {
                announced: 2147483647,
                limit: 16
            })
        );
        let whole = b"%1\r\n$3\r\nkey\r\n~1\r\n#t\r\n";
        for cut in 0..whole.len() {
            assert!(
                matches!(decode(&whole[..cut]), Ok(Decoded::Incomplete { needed }) if needed > cut),
                "{cut}"
            );
        }
    }

    #[test]
    fn pushes_are_told_apart_from_replies() {
        let wire = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n";
        let Ok(Decoded::Reply(push, used)) = decode(wire) else {
            panic!("{:?}", decode(wire));
        };
        assert_eq!(used, wire.len());
        assert!(Resp.is_push(&push));
        assert!(Resp.begins_push(b">2\r\n$10"));
        assert!(!Resp.begins_push(b"*2\r\n"));
        assert!(!Resp.is_push(&Value::Array(Vec::new())));
        assert_eq!(
            push,
            Value::Push(vec![
                Value::Bulk(b"invalidate".to_vec()),
                Value::Array(vec![Value::Bulk(b"k".to_vec())])
            ])
        );
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
