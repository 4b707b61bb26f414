//! The read buffer both transports decode from.

use crate::protocol::{Decode, Decoded, ProtocolError, ReplyLimits};

/// The smallest read asked of the socket.
const MIN_READ: usize = 16 * 1024;
/// A buffer that grew past this for one large reply shrinks back once it is empty.
const KEEP: usize = 256 * 1024;
/// The most the buffer grows beyond what has arrived: a reply announcing a large value (under
/// the limit) is given room as its bytes come, never all at once before they do.
const MAX_GROWTH: usize = 1024 * 1024;

/// The bounds on an out-of-band frame (a RESP3 push) on a connection that carries requests:
/// decoded apart from any request's own bounds, since it answers none.
pub(crate) const PUSH_LIMITS: ReplyLimits = ReplyLimits::scalar(64 * 1024).with_arrays(1024, 4);

/// Bytes read from a connection and not yet decoded.
///
/// Like `BufReader`, it keeps its memory initialized, so reading into it costs no zeroing; it
/// grows to hold a whole reply (whose size the decoder has checked against its limits) and
/// shrinks back after a large one.
#[derive(Debug, Default)]
pub struct ReadBuffer {
    data: Vec<u8>,
    start: usize,
    end: usize,
    /// The decoder needs at least this many buffered bytes before it can make progress.
    needed: usize,
    /// Out-of-band frames dropped.
    pushes: u64,
}

impl ReadBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no undecoded byte is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Decodes the next reply if the buffer holds a whole one. Out-of-band frames (RESP3
    /// pushes, see [`Decode::is_push`]) before it are decoded within bounds of their own
    /// (64 KiB values, 1,024 elements) and dropped: they never answer a request, and a
    /// connection that carries requests has not asked for any.
    ///
    /// # Errors
    ///
    /// The decoder's [`ProtocolError`].
    pub fn decode<D: Decode>(
        &mut self,
        decoder: &D,
        limits: &ReplyLimits,
    ) -> Result<Option<D::Reply>, ProtocolError> {
        loop {
            let front = &self.data[self.start..self.end];
            let limits = if decoder.begins_push(front) {
                &PUSH_LIMITS
            } else {
                limits
            };
            match self.decode_any(decoder, limits)? {
                Some(reply) if decoder.is_push(&reply) => self.pushes += 1,
                other => return Ok(other),
            }
        }
    }

    /// Decodes the next frame if the buffer holds a whole one, out-of-band frames included.
    ///
    /// # Errors
    ///
    /// The decoder's [`ProtocolError`].
    pub fn decode_any<D: Decode>(
        &mut self,
        decoder: &D,
        limits: &ReplyLimits,
    ) -> Result<Option<D::Reply>, ProtocolError> {
        let filled = self.end - self.start;
        if filled == 0 || filled < self.needed {
            return Ok(None);
        }
        match decoder.decode(&self.data[self.start..self.end], limits)? {
            Decoded::Reply(reply, used) => {
                self.start += used.min(filled);
                self.needed = 0;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                    if self.data.len() > KEEP {
                        self.data.truncate(KEEP);
                        self.data.shrink_to(KEEP);
                    }
                }
                Ok(Some(reply))
            }
            Decoded::Incomplete { needed } => {
                self.needed = needed;
                Ok(None)
            }
        }
    }

    /// Drops the whole out-of-band frames at the front of the buffer (decoded within their
    /// own bounds), and says whether nothing else is buffered: no byte, or only the start
    /// of another such frame. `false` means bytes of a reply that no request asked for.
    ///
    /// # Errors
    ///
    /// The decoder's [`ProtocolError`] for a malformed frame.
    pub fn holds_only_pushes<D: Decode>(&mut self, decoder: &D) -> Result<bool, ProtocolError> {
        loop {
            if self.is_empty() {
                return Ok(true);
            }
            if !decoder.begins_push(&self.data[self.start..self.end]) {
                return Ok(false);
            }
            match self.decode_any(decoder, &PUSH_LIMITS)? {
                Some(frame) if decoder.is_push(&frame) => self.pushes += 1,
                Some(_) => return Ok(false),
                None => return Ok(true),
            }
        }
    }

    /// How many out-of-band frames were dropped.
    pub fn pushes_dropped(&self) -> u64 {
        self.pushes
    }

    /// Room to read into: at least 16 KiB, or what the reply being decoded still needs, up
    /// to 1 MiB more than has arrived.
    pub fn spare(&mut self) -> &mut [u8] {
        let filled = self.end - self.start;
        let want = self
            .needed
            .saturating_sub(filled)
            .clamp(MIN_READ, MAX_GROWTH.max(MIN_READ));
        if self.data.len() - self.end < want {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = filled;
            }
            if self.data.len() - self.end < want {
                self.data.resize(self.end + want, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// Marks `n` bytes of [`spare`](Self::spare) as read.
    pub fn advance(&mut self, n: usize) {
        self.end = (self.end + n).min(self.data.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Decode, Decoded, ProtocolError, line_end, parse_i64};

    /// A reply of the test protocol: `+line` or `$<length>` followed by that many bytes, or
    /// an out-of-band `>line`.
    #[derive(Debug, PartialEq, Eq)]
    enum Value {
        Simple(String),
        Bulk(Vec<u8>),
        Push(String),
    }

    /// The test protocol's decoder (the two RESP forms the tests need).
    #[derive(Debug)]
    struct Resp;

    impl Decode for Resp {
        type Reply = Value;

        fn decode(
            &self,
            input: &[u8],
            limits: &ReplyLimits,
        ) -> Result<Decoded<Value>, ProtocolError> {
            let Some(end) = line_end(input, 0, limits.max_line)? else {
                return Ok(Decoded::Incomplete {
                    needed: input.len() + 1,
                });
            };
            let line = &input[1..end];
            match input[0] {
                b'+' => Ok(Decoded::Reply(
                    Value::Simple(String::from_utf8_lossy(line).into_owned()),
                    end + 2,
                )),
                b'>' => Ok(Decoded::Reply(
                    Value::Push(String::from_utf8_lossy(line).into_owned()),
                    end + 2,
                )),
                b'$' => {
                    let len = parse_i64(line)
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| ProtocolError::Malformed("bad length".into()))?;
                    if len > limits.max_value {
                        return Err(ProtocolError::ValueTooLong {
                            announced: len as u64,
                            limit: limits.max_value,
                        });
                    }
                    let total = end + 2 + len + 2;
                    if input.len() < total {
                        return Ok(Decoded::Incomplete { needed: total });
                    }
                    Ok(Decoded::Reply(
                        Value::Bulk(input[end + 2..end + 2 + len].to_vec()),
                        total,
                    ))
                }
                _ => Err(ProtocolError::Malformed("unknown reply".into())),
            }
        }

        fn is_push(&self, reply: &Value) -> bool {
            matches!(reply, Value::Push(_))
        }

        fn begins_push(&self, input: &[u8]) -> bool {
            input.first() == Some(&b'>')
        }
    }

    fn fill(buf: &mut ReadBuffer, bytes: &[u8]) {
        buf.spare()[..bytes.len()].copy_from_slice(bytes);
        buf.advance(bytes.len());
    }

    #[test]
    fn pushes_are_set_apart_from_replies() {
        let limits = ReplyLimits::scalar(64);
        let mut buf = ReadBuffer::new();
        fill(&mut buf, b">one\r\n+OK\r\n>two\r\n>thr");
        assert_eq!(
            buf.decode(&Resp, &limits).unwrap(),
            Some(Value::Simple("OK".into()))
        );
        assert_eq!(buf.decode(&Resp, &limits).unwrap(), None);
        assert_eq!(buf.pushes_dropped(), 2);
        // What is left is the start of a push: no reply waits unread.
        assert!(buf.holds_only_pushes(&Resp).unwrap());
        fill(&mut buf, b"ee\r\n$2\r\nhi\r\n");
        assert!(!buf.holds_only_pushes(&Resp).unwrap());
        assert_eq!(buf.pushes_dropped(), 3);
        // A dedicated reader sees the pushes.
        let mut buf = ReadBuffer::new();
        fill(&mut buf, b">one\r\n+OK\r\n");
        assert_eq!(
            buf.decode_any(&Resp, &limits).unwrap(),
            Some(Value::Push("one".into()))
        );
        assert!(!buf.holds_only_pushes(&Resp).unwrap());
    }

    #[test]
    fn replies_split_across_reads() {
        let limits = ReplyLimits::scalar(1 << 20);
        let mut buf = ReadBuffer::new();
        let mut wire = b"$5\r\nhello\r\n+OK\r\n".to_vec();
        let big = vec![b'x'; 100_000];
        wire.extend_from_slice(format!("${}\r\n", big.len()).as_bytes());
        wire.extend_from_slice(&big);
        wire.extend_from_slice(b"\r\n");
        let mut replies = Vec::new();
        for chunk in wire.chunks(7) {
            let spare = buf.spare();
            spare[..chunk.len()].copy_from_slice(chunk);
            buf.advance(chunk.len());
            while let Some(reply) = buf.decode(&Resp, &limits).unwrap() {
                replies.push(reply);
            }
        }
        assert_eq!(
            replies,
            vec![
                Value::Bulk(b"hello".to_vec()),
                Value::Simple("OK".into()),
                Value::Bulk(big)
            ]
        );
        assert!(buf.is_empty());
        assert!(buf.data.len() <= KEEP);
    }

    #[test]
    fn a_large_announced_reply_grows_the_buffer_as_it_arrives() {
        let limits = ReplyLimits::scalar(1 << 30);
        let mut buf = ReadBuffer::new();
        let head = b"$400000000\r\n";
        buf.spare()[..head.len()].copy_from_slice(head);
        buf.advance(head.len());
        assert_eq!(buf.decode(&Resp, &limits).unwrap(), None);
        // 400 MB announced, 12 bytes arrived: room for at most 1 MiB more.
        assert!(buf.spare().len() <= MAX_GROWTH, "{}", buf.data.len());
        assert!(buf.data.len() <= head.len() + MAX_GROWTH);
    }
}
