//! The memcached protocol subset the memcached engines speak: meta commands (`mg`, `ms`, `md`,
//! `mn`) and `stats settings`, `flush_all`, `version`, with limits.
//!
//! I/O-free: the `push_*` functions append requests to a buffer and [`Meta`] decodes one reply
//! from the start of one. A `VA` reply's size is checked against the limit before anything is
//! allocated or waited for; `stats` blocks are bounded in lines.
//!
//! Every meta command carries an opaque token (`O<n>`) that the server echoes, so a reply can be
//! checked against its request ([`Reply::opaque`]); `SERVER_ERROR` lines carry none, so order
//! still decides which request a reply answers.
//!
//! Public (and hidden from the docs) for the fuzz targets and tools only: not part of the
//! crate's API, and free to change in any release.

use base64::Engine as _;

use cache_remote::{
    Decode, Decoded, ProtocolError, ReplyLimits, line_end, parse_i64, push_decimal,
};

/// A meta status without a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `HD`: done (stored, deleted, found without a value asked for).
    Hd,
    /// `EN`: not found (`mg`).
    En,
    /// `NF`: not found (`md`, `ms` in some modes).
    Nf,
    /// `NS`: not stored (an `ms` in add mode found the key taken).
    Ns,
    /// `EX`: exists (a compare-and-swap lost).
    Ex,
    /// `MN`: the end of a batch (`mn`).
    Mn,
    /// `OK` (`flush_all`).
    Ok,
}

/// Which error line the server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `ERROR`: an unknown command.
    Error,
    /// `CLIENT_ERROR ...`: a malformed request.
    Client,
    /// `SERVER_ERROR ...`: the server could not do it (out of memory, too large).
    Server,
}

/// The flags of a meta reply (`c42 t-1 f0 O7`), as the server sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(Vec<u8>);

impl Flags {
    /// The value of flag `letter` (`c42` gives `42`), if the reply has it.
    pub fn get(&self, letter: u8) -> Option<&[u8]> {
        self.0
            .split(|b| *b == b' ')
            .find(|token| token.first() == Some(&letter))
            .map(|token| &token[1..])
    }

    /// Flag `letter` as a number.
    pub fn number(&self, letter: u8) -> Option<i64> {
        self.get(letter).and_then(parse_i64)
    }
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A status and its flags.
    Status {
        /// The status.
        code: Code,
        /// Its flags.
        flags: Flags,
    },
    /// `VA`: a value and its flags.
    Value {
        /// The value's bytes.
        data: Vec<u8>,
        /// Its flags.
        flags: Flags,
    },
    /// A `stats` block: `STAT name value` lines up to `END`.
    Stats(Vec<(String, String)>),
    /// `VERSION ...`.
    Version(String),
    /// An error line.
    Error {
        /// Which one.
        kind: ErrorKind,
        /// Its text after the keyword.
        message: String,
    },
}

impl Reply {
    /// The opaque token the server echoed, if the reply carries one.
    pub fn opaque(&self) -> Option<&[u8]> {
        match self {
            Self::Status { flags, .. } | Self::Value { flags, .. } => flags.get(b'O'),
            _ => None,
        }
    }

    /// The flags, for a status or a value.
    pub fn flags(&self) -> Option<&Flags> {
        match self {
            Self::Status { flags, .. } | Self::Value { flags, .. } => Some(flags),
            _ => None,
        }
    }
}

/// The memcached decoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta;

impl Decode for Meta {
    type Reply = Reply;

    fn decode(&self, input: &[u8], limits: &ReplyLimits) -> Result<Decoded<Reply>, ProtocolError> {
        let Some(end) = line_end(input, 0, limits.max_line)? else {
            return Ok(Decoded::Incomplete {
                needed: input.len() + 1,
            });
        };
        let line = &input[..end];
        let after = end + 2;
        let (word, rest) = match line.iter().position(|b| *b == b' ') {
            Some(space) => (&line[..space], &line[space + 1..]),
            None => (line, &line[line.len()..]),
        };
        let status = |code| {
            Ok(Decoded::Reply(
                Reply::Status {
                    code,
                    flags: Flags(rest.to_vec()),
                },
                after,
            ))
        };
        match word {
            // `STORED` answers only the text `set` that logs in (`-Y`): the meta `HD`.
            b"HD" | b"STORED" => status(Code::Hd),
            b"EN" => status(Code::En),
            b"NF" => status(Code::Nf),
            b"NS" => status(Code::Ns),
            b"EX" => status(Code::Ex),
            b"MN" => status(Code::Mn),
            b"OK" => status(Code::Ok),
            b"VA" => {
                let (size, flags) = match rest.iter().position(|b| *b == b' ') {
                    Some(space) => (&rest[..space], &rest[space + 1..]),
                    None => (rest, &rest[rest.len()..]),
                };
                let size = parse_i64(size)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| ProtocolError::Malformed("VA without a size".into()))?;
                if size > limits.max_value as u64 {
                    return Err(ProtocolError::ValueTooLong {
                        announced: size,
                        limit: limits.max_value,
                    });
                }
                let size = size as usize;
                let needed = after + size + 2;
                if input.len() < needed {
                    return Ok(Decoded::Incomplete { needed });
                }
                if &input[after + size..needed] != b"\r\n" {
                    return Err(ProtocolError::Malformed(
                        "value not followed by CRLF".into(),
                    ));
                }
                Ok(Decoded::Reply(
                    Reply::Value {
                        data: input[after..after + size].to_vec(),
                        flags: Flags(flags.to_vec()),
                    },
                    needed,
                ))
            }
            b"STAT" | b"END" => decode_stats(input, limits),
            b"VERSION" => Ok(Decoded::Reply(
                Reply::Version(String::from_utf8_lossy(rest).into_owned()),
                after,
            )),
            b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR" => {
                let kind = match word {
                    b"ERROR" => ErrorKind::Error,
                    b"CLIENT_ERROR" => ErrorKind::Client,
                    _ => ErrorKind::Server,
                };
                Ok(Decoded::Reply(
                    Reply::Error {
                        kind,
                        message: String::from_utf8_lossy(rest).into_owned(),
                    },
                    after,
                ))
            }
            other => Err(ProtocolError::Malformed(format!(
                "unknown reply {:?}",
                String::from_utf8_lossy(&other[..other.len().min(32)])
            ))),
        }
    }

    fn check(&self, reply: &Reply, index: usize) -> Result<(), ProtocolError> {
        check_reply(reply, index)
    }
}

impl Meta {
    /// The opaque token command `index` of a request carries: its index.
    pub fn opaque_for(index: usize) -> u32 {
        u32::try_from(index).unwrap_or(u32::MAX)
    }
}

/// Whether a `CLIENT_ERROR` is memcached's answer about authentication (`-Y`): a refused
/// login, or a request on a connection that has not logged in.
/// `Authentication` for a reply refusing a request for want of a login (a server restarted
/// with `-Y` under a connection that never logged in), else `None`.
pub(crate) fn login_refused(
    reply: &Option<Reply>,
    operation: &'static str,
) -> Option<cache_core::CacheError> {
    match reply {
        Some(Reply::Error {
            kind: ErrorKind::Client,
            message,
        }) if is_authentication(message) => Some(cache_core::CacheError::Authentication {
            backend: crate::keys::BACKEND,
            address: "the memcached server".into(),
            source: Some(format!("{operation}: CLIENT_ERROR {message}").into()),
        }),
        _ => None,
    }
}

pub(crate) fn is_authentication(message: &str) -> bool {
    message.starts_with("authentication failure") || message.starts_with("unauthenticated")
}

/// Checks a reply against its command (see [`Decode::check`]): an echoed opaque token must be
/// the command's index in its request, and `ERROR` or `CLIENT_ERROR` (the server did not
/// understand a request, so it may have read part of one as another) drop the connection.
fn check_reply(reply: &Reply, index: usize) -> Result<(), ProtocolError> {
    match reply {
        Reply::Error {
            kind: ErrorKind::Error,
            message,
        } if message.contains("Too many open connections") => {
            Err(ProtocolError::Refused(message.clone()))
        }
        // A refused login, or a request before one: the handshake reports it as such.
        Reply::Error {
            kind: ErrorKind::Client,
            message,
        } if is_authentication(message) => Ok(()),
        Reply::Error {
            kind: kind @ (ErrorKind::Error | ErrorKind::Client),
            message,
        } => Err(ProtocolError::Unexpected(format!(
            "the server did not understand a request ({kind:?} {message})"
        ))),
        _ => match reply.opaque() {
            Some(token) if parse_i64(token) != Some(i64::from(Meta::opaque_for(index))) => {
                Err(ProtocolError::Unexpected(format!(
                    "reply {index} of a request carries another request's token {:?}",
                    String::from_utf8_lossy(token)
                )))
            }
            _ => Ok(()),
        },
    }
}

fn decode_stats(input: &[u8], limits: &ReplyLimits) -> Result<Decoded<Reply>, ProtocolError> {
    let mut stats = Vec::new();
    let mut at = 0;
    loop {
        let Some(end) = line_end(input, at, limits.max_line)? else {
            return Ok(Decoded::Incomplete {
                needed: input.len() + 1,
            });
        };
        let line = &input[at..end];
        at = end + 2;
        if line == b"END" {
            return Ok(Decoded::Reply(Reply::Stats(stats), at));
        }
        let Some(stat) = line.strip_prefix(b"STAT ") else {
            return Err(ProtocolError::Malformed("a stats line without STAT".into()));
        };
        if stats.len() >= limits.max_elements {
            return Err(ProtocolError::TooManyElements {
                announced: stats.len() as u64 + 1,
                limit: limits.max_elements,
            });
        }
        let text = String::from_utf8_lossy(stat);
        let (name, value) = text.split_once(' ').unwrap_or((&text, ""));
        stats.push((name.to_string(), value.to_string()));
    }
}

/// A key as it goes on the wire: text (checked by the key rule, so it holds no whitespace or
/// control character), or bytes that are sent base64-encoded with the `b` flag.
///
/// Binary keys are how engines keep internal keys (a namespace's generation) out of reach of
/// callers' keys: a key holding a byte that never occurs in UTF-8 (`0xff`) cannot be any
/// caller's `&str` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key<'a> {
    /// Sent as it is.
    Text(&'a str),
    /// Sent base64-encoded, with the `b` flag.
    Binary(&'a [u8]),
}

fn push_key(out: &mut Vec<u8>, key: Key<'_>) {
    match key {
        Key::Text(text) => out.extend_from_slice(text.as_bytes()),
        Key::Binary(bytes) => {
            let mut text = String::with_capacity(bytes.len() * 4 / 3 + 4);
            base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut text);
            out.extend_from_slice(text.as_bytes());
        }
    }
}

fn push_flags(out: &mut Vec<u8>, key: Key<'_>, flags: &[&[u8]], opaque: u32) {
    if matches!(key, Key::Binary(_)) {
        out.extend_from_slice(b" b");
    }
    for flag in flags {
        out.push(b' ');
        out.extend_from_slice(flag);
    }
    out.extend_from_slice(b" O");
    push_decimal(out, i64::from(opaque));
    out.extend_from_slice(b"\r\n");
}

/// Appends `mg <key> <flags> O<opaque>`.
///
/// ```
/// use cache_memcached::meta::{Key, push_get};
///
/// let mut out = Vec::new();
/// push_get(&mut out, Key::Text("user:1"), &[b"v", b"f"], 7);
/// assert_eq!(out, b"mg user:1 v f O7\r\n");
/// ```
pub fn push_get(out: &mut Vec<u8>, key: Key<'_>, flags: &[&[u8]], opaque: u32) {
    out.extend_from_slice(b"mg ");
    push_key(out, key);
    push_flags(out, key, flags, opaque);
}

/// Appends `ms <key> <len> <flags> O<opaque>` and the data.
pub fn push_set(out: &mut Vec<u8>, key: Key<'_>, data: &[u8], flags: &[&[u8]], opaque: u32) {
    out.reserve(data.len() + 64);
    out.extend_from_slice(b"ms ");
    push_key(out, key);
    out.push(b' ');
    push_decimal(out, data.len() as i64);
    push_flags(out, key, flags, opaque);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends `md <key> <flags> O<opaque>`.
pub fn push_delete(out: &mut Vec<u8>, key: Key<'_>, flags: &[&[u8]], opaque: u32) {
    out.extend_from_slice(b"md ");
    push_key(out, key);
    push_flags(out, key, flags, opaque);
}

/// Appends a flag with a decimal value (`T300`, `C42`) to a flag list's storage.
pub fn flag(letter: u8, value: i64) -> Vec<u8> {
    let mut out = vec![letter];
    push_decimal(&mut out, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ReplyLimits = ReplyLimits::scalar(8).with_arrays(3, 0);

    fn decode(input: &[u8]) -> Result<Decoded<Reply>, ProtocolError> {
        Meta.decode(input, &LIMITS)
    }

    #[test]
    fn statuses_values_and_errors() {
        assert_eq!(
            decode(b"HD O7\r\n"),
            Ok(Decoded::Reply(
                Reply::Status {
                    code: Code::Hd,
                    flags: Flags(b"O7".to_vec())
                },
                7
            ))
        );
        let Ok(Decoded::Reply(reply, 24)) = decode(b"VA 3 c2 t-1 f0 O9\r\nabc\r\n") else {
            panic!("a value");
        };
        assert_eq!(reply.opaque(), Some(&b"9"[..]));
        assert_eq!(reply.flags().and_then(|f| f.number(b't')), Some(-1));
        assert!(matches!(reply, Reply::Value { ref data, .. } if data == b"abc"));
        assert_eq!(
            decode(b"SERVER_ERROR out of memory storing object\r\n"),
            Ok(Decoded::Reply(
                Reply::Error {
                    kind: ErrorKind::Server,
                    message: "out of memory storing object".into()
                },
                43
            ))
        );
        assert!(matches!(
            decode(b"ERROR\r\n"),
            Ok(Decoded::Reply(
                Reply::Error {
                    kind: ErrorKind::Error,
                    ..
                },
                7
            ))
        ));
        assert_eq!(
            decode(b"STAT item_size_max 65536\r\nSTAT x y\r\nEND\r\n"),
            Ok(Decoded::Reply(
                Reply::Stats(vec![
                    ("item_size_max".into(), "65536".into()),
                    ("x".into(), "y".into())
                ]),
                41
            ))
        );
    }

    #[test]
    fn remaining_ttls_are_read_from_the_t_flag() {
        let flags = |input: &[u8]| match decode(input) {
            Ok(Decoded::Reply(reply, _)) => reply.flags().cloned(),
            other => panic!("{other:?}"),
        };
        // `mg <key> t`: a status with the flag; `mg <key> v f t`: a value with it.
        let month = flags(b"HD t2678401 O3\r\n");
        assert_eq!(month.and_then(|f| f.number(b't')), Some(2_678_401));
        let never = flags(b"HD t-1\r\n");
        assert_eq!(never.and_then(|f| f.number(b't')), Some(-1));
        let value = flags(b"VA 1 f0 t61 O0\r\nx\r\n");
        assert_eq!(value.as_ref().and_then(|f| f.number(b't')), Some(61));
        assert_eq!(value.and_then(|f| f.number(b'f')), Some(0));
        // No flag, or one that is not a number: nothing to read.
        assert_eq!(flags(b"HD O3\r\n").and_then(|f| f.number(b't')), None);
        assert_eq!(flags(b"HD tx\r\n").and_then(|f| f.number(b't')), None);
        assert_eq!(flags(b"EN\r\n").and_then(|f| f.number(b't')), None);
    }

    #[test]
    fn partial_replies_ask_for_more() {
        let whole = b"VA 5 O1\r\nhello\r\n";
        for cut in 0..whole.len() {
            match decode(&whole[..cut]) {
                Ok(Decoded::Incomplete { needed }) => assert!(needed > cut),
                other => panic!("{cut}: {other:?}"),
            }
        }
        assert!(matches!(
            decode(b"STAT a 1\r\nST"),
            Ok(Decoded::Incomplete { .. })
        ));
    }

    #[test]
    fn limits_are_checked_before_waiting() {
        assert_eq!(
            decode(b"VA 1073741824 f0\r\n"),
            Err(ProtocolError::ValueTooLong {
                announced: 1 << 30,
                limit: 8
            })
        );
        assert!(matches!(
            decode(b"STAT a 1\r\nSTAT b 1\r\nSTAT c 1\r\nSTAT d 1\r\n"),
            Err(ProtocolError::TooManyElements { .. })
        ));
        let endless = [b"HD ".as_slice(), &[b'y'; 70_000]].concat();
        assert!(matches!(
            decode(&endless),
            Err(ProtocolError::LineTooLong { .. })
        ));
        assert!(matches!(
            decode(b"WHAT\r\n"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"VA x\r\n"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"VA 1\r\nab\r\n"),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn replies_are_checked_against_their_command() {
        let status = |flags: &[u8]| Reply::Status {
            code: Code::Hd,
            flags: Flags(flags.to_vec()),
        };
        assert!(Meta.check(&status(b"O3"), 3).is_ok());
        assert!(Meta.check(&status(b""), 3).is_ok(), "no token to check");
        assert!(matches!(
            Meta.check(&status(b"c1 O2"), 3),
            Err(ProtocolError::Unexpected(_))
        ));
        let error = |kind, message: &str| Reply::Error {
            kind,
            message: message.into(),
        };
        assert!(matches!(
            Meta.check(&error(ErrorKind::Error, "Too many open connections"), 0),
            Err(ProtocolError::Refused(_))
        ));
        assert!(matches!(
            Meta.check(&error(ErrorKind::Client, "bad data chunk"), 0),
            Err(ProtocolError::Unexpected(_))
        ));
        assert!(
            Meta.check(&error(ErrorKind::Server, "out of memory"), 0)
                .is_ok()
        );
    }

    #[test]
    fn requests() {
        let mut out = Vec::new();
        push_set(&mut out, Key::Text("k"), b"abc", &[b"T0", b"F1"], 3);
        push_get(&mut out, Key::Binary(b"\xffgen"), &[b"v"], 4);
        push_delete(&mut out, Key::Text("k"), &[], 5);
        assert_eq!(
            out,
            b"ms k 3 T0 F1 O3\r\nabc\r\nmg /2dlbg== b v O4\r\nmd k O5\r\n".to_vec()
        );
        assert_eq!(flag(b'T', 300), b"T300");
    }
}
