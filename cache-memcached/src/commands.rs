//! Every operation as an exchange: the meta commands it sends and what it makes of the
//! replies. The blocking engine runs these; an async one would run the same.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cache_core::counter::{apply_increment, format_counter};
use cache_core::{Bytes, CacheError, KeyDisplay, Remaining, Result, Ttl};
use cache_remote::{
    BATCH_KEYS, BoxExchange, Exchange, ProtocolError, ReplyLimits, Request, Step, batch_ranges,
    batches, ready, single,
};

use crate::keys::{
    BACKEND, ITEM_OVERHEAD, Keys, WireKey, expiration_for_secs, payload, unwrap_payload,
};
use crate::meta::{self, Code, ErrorKind, Flags, Key, Meta, Reply};

/// Rounds of the compare-and-swap loop of `increment` before giving up.
const CAS_ATTEMPTS: usize = 1_000;

/// Rounds of `delete_if_equals` (read the value and its CAS, delete with that CAS) before it
/// gives up. A round is lost only when the entry was rewritten *with the expected value* between
/// the read and the delete (any other value ends it with `false`), so losing several in a row
/// takes writers storing those same bytes again and again.
pub(crate) const DELETE_IF_EQUALS_ATTEMPTS: usize = 5;

/// A reply memcached sent as an error line, kept as the source of a `CacheError`.
#[derive(Debug)]
struct ServerError {
    operation: &'static str,
    message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: server replied SERVER_ERROR {}",
            self.operation, self.message
        )
    }
}

impl std::error::Error for ServerError {}

/// What every operation needs: keys, the generation, TTLs and the value limit.
#[derive(Debug)]
pub(crate) struct Commands {
    pub(crate) keys: Keys,
    pub(crate) default_ttl: Ttl,
    /// The item size limit configured on the builder.
    item_size_limit: usize,
    /// The server's, learned on connect (0 until then).
    learned_item_size: Arc<AtomicUsize>,
}

fn first(replies: Vec<Reply>) -> Option<Reply> {
    replies.into_iter().next()
}

fn request(bytes: Vec<u8>, commands: usize, limits: ReplyLimits) -> Request {
    Request::new(bytes, commands, limits)
}

impl Commands {
    pub(crate) fn new(
        keys: Keys,
        default_ttl: Ttl,
        item_size_limit: usize,
        learned_item_size: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            keys,
            default_ttl,
            item_size_limit,
            learned_item_size,
        }
    }

    fn learned(&self) -> Option<usize> {
        Some(self.learned_item_size.load(Ordering::Relaxed)).filter(|n| *n > 0)
    }

    /// The largest value accepted: the smaller of the configured and the server's item
    /// limits, less room for the item's header, key and envelope.
    pub(crate) fn max_value_size(&self) -> usize {
        let limit = self.learned().map_or(self.item_size_limit, |server| {
            server.min(self.item_size_limit)
        });
        limit.saturating_sub(ITEM_OVERHEAD)
    }

    /// Replies hold at most one item: never more than the larger of the two limits.
    pub(crate) fn limits(&self) -> ReplyLimits {
        let item = self.learned().map_or(self.item_size_limit, |server| {
            server.max(self.item_size_limit)
        });
        ReplyLimits::scalar(item)
    }

    fn unexpected(&self, reply: Option<Reply>, operation: &'static str) -> CacheError {
        // A server that wants a login this connection never made (restarted with `-Y`).
        if let Some(refused) = crate::meta::login_refused(&reply, operation) {
            return refused;
        }
        match reply {
            Some(Reply::Error {
                kind: ErrorKind::Server,
                message,
            }) => CacheError::Backend {
                backend: BACKEND,
                source: Box::new(ServerError { operation, message }),
            },
            other => CacheError::Backend {
                backend: BACKEND,
                source: Box::new(ProtocolError::Unexpected(format!(
                    "{operation} got {other:?}"
                ))),
            },
        }
    }

    /// What a write's reply other than `HD` means: memcached refused the value (out of
    /// memory, too large), or something unexpected.
    fn write_failure(
        &self,
        reply: Option<Reply>,
        operation: &'static str,
        key: &str,
        partly_applied: bool,
    ) -> CacheError {
        match reply {
            Some(Reply::Error {
                kind: ErrorKind::Server,
                message,
            }) => CacheError::Refused {
                backend: BACKEND,
                operation,
                key: KeyDisplay::new(key),
                partly_applied,
                source: Some(Box::new(ServerError { operation, message })),
            },
            other => self.unexpected(other, operation),
        }
    }

    fn push_set(
        &self,
        bytes: &mut Vec<u8>,
        wire: &WireKey,
        value: &[u8],
        exptime: u32,
        opaque: u32,
    ) {
        let (stored, flags) = payload(wire, value);
        let ttl = meta::flag(b'T', i64::from(exptime));
        let client_flags = meta::flag(b'F', flags);
        let all: &[&[u8]] = if flags == 0 {
            &[&ttl]
        } else {
            &[&ttl, &client_flags]
        };
        meta::push_set(bytes, Key::Text(&wire.key), &stored, all, opaque);
    }

    pub(crate) fn ping(&self) -> impl Exchange<Reply, Output = ()> + '_ {
        single(
            request(b"mn\r\n".to_vec(), 1, self.limits()),
            move |replies| match first(replies) {
                Some(Reply::Status { code: Code::Mn, .. }) => Ok(()),
                other => Err(self.unexpected(other, "ping")),
            },
        )
    }

    /// One command on `wire`: `encode` writes it, `parse` reads its reply.
    fn one_command<'a, T, W, P>(
        &'a self,
        wire: &'a WireKey,
        idempotent: bool,
        encode: W,
        parse: P,
    ) -> impl Exchange<Reply, Output = T> + 'a
    where
        T: Send + 'a,
        W: FnOnce(&WireKey, &mut Vec<u8>),
        P: FnOnce(&WireKey, Option<Reply>) -> Result<T> + Send + 'a,
    {
        let mut bytes = Vec::with_capacity(wire.key.len() + 32);
        encode(wire, &mut bytes);
        let mut request = request(bytes, 1, self.limits());
        request.idempotent = idempotent;
        single(request, move |replies| parse(wire, first(replies)))
    }

    pub(crate) fn get<'a>(
        &'a self,
        wire: &'a WireKey,
    ) -> impl Exchange<Reply, Output = Option<Bytes>> + 'a {
        self.one_command(
            wire,
            true,
            |wire, bytes| meta::push_get(bytes, Key::Text(&wire.key), &[b"v", b"f"], 0),
            move |wire, reply| match reply {
                Some(Reply::Value { data, flags }) => {
                    Ok(unwrap_payload(wire, flags.number(b'f'), data))
                }
                Some(Reply::Status { code: Code::En, .. }) => Ok(None),
                other => Err(self.unexpected(other, "get")),
            },
        )
    }

    /// `exptime` from [`exptime`](crate::keys::exptime): `None` deletes.
    pub(crate) fn set<'a>(
        &'a self,
        key: &'a str,
        wire: &'a WireKey,
        value: &'a [u8],
        exptime: Option<u32>,
    ) -> impl Exchange<Reply, Output = ()> + 'a {
        self.one_command(
            wire,
            true,
            move |wire, bytes| match exptime {
                Some(exptime) => self.push_set(bytes, wire, value, exptime, 0),
                None => meta::push_delete(bytes, Key::Text(&wire.key), &[], 0),
            },
            move |_, reply| match reply {
                Some(Reply::Status {
                    code: Code::Hd | Code::Nf,
                    ..
                }) => Ok(()),
                other => Err(self.write_failure(other, "set", key, false)),
            },
        )
    }

    pub(crate) fn delete<'a>(
        &'a self,
        wire: &'a WireKey,
    ) -> impl Exchange<Reply, Output = bool> + 'a {
        self.one_command(
            wire,
            false,
            |wire, bytes| meta::push_delete(bytes, Key::Text(&wire.key), &[], 0),
            move |_, reply| match reply {
                Some(Reply::Status { code: Code::Hd, .. }) => Ok(true),
                Some(Reply::Status { code: Code::Nf, .. }) => Ok(false),
                other => Err(self.unexpected(other, "delete")),
            },
        )
    }

    pub(crate) fn exists<'a>(
        &'a self,
        wire: &'a WireKey,
    ) -> impl Exchange<Reply, Output = bool> + 'a {
        self.one_command(
            wire,
            true,
            |wire, bytes| {
                // A hashed key is checked against the original key stored with the value.
                let flags: &[&[u8]] = if wire.hashed_from.is_some() {
                    &[b"v", b"f"]
                } else {
                    &[]
                };
                meta::push_get(bytes, Key::Text(&wire.key), flags, 0);
            },
            move |wire, reply| match reply {
                Some(Reply::Status { code: Code::Hd, .. }) => Ok(true),
                Some(Reply::Value { data, flags }) => {
                    Ok(unwrap_payload(wire, flags.number(b'f'), data).is_some())
                }
                Some(Reply::Status { code: Code::En, .. }) => Ok(false),
                other => Err(self.unexpected(other, "exists")),
            },
        )
    }

    /// The remaining TTL of a meta reply's `t` flag: `t-1` never expires; `t<secs>` is in
    /// whole seconds (memcached's clock), reported as at least 1 s for a live entry.
    fn remaining(&self, flags: &Flags, operation: &'static str) -> Result<Remaining> {
        match flags.number(b't') {
            Some(-1) => Ok(Remaining::Never),
            Some(secs) if secs >= 0 => Ok(Remaining::After(Duration::from_secs(
                secs.unsigned_abs().max(1),
            ))),
            other => Err(CacheError::Backend {
                backend: BACKEND,
                source: Box::new(ProtocolError::Unexpected(format!(
                    "{operation} got a reply whose remaining TTL is {other:?}"
                ))),
            }),
        }
    }

    /// A reply to `mg <key> v f t`: the value (checked against the original key when the wire
    /// key is a hash) and its remaining TTL; `None` when absent or another key's.
    fn value_and_ttl(
        &self,
        wire: &WireKey,
        reply: Option<Reply>,
        operation: &'static str,
    ) -> Result<Option<(Bytes, Remaining)>> {
        match reply {
            Some(Reply::Value { data, flags }) => {
                match unwrap_payload(wire, flags.number(b'f'), data) {
                    Some(value) => Ok(Some((value, self.remaining(&flags, operation)?))),
                    None => Ok(None),
                }
            }
            Some(Reply::Status { code: Code::En, .. }) => Ok(None),
            other => Err(self.unexpected(other, operation)),
        }
    }

    /// `mg <key> t` (with `v f` for a hashed key, to check the original key as `get` does).
    pub(crate) fn remaining_ttl<'a>(
        &'a self,
        wire: &'a WireKey,
    ) -> impl Exchange<Reply, Output = Option<Remaining>> + 'a {
        self.one_command(
            wire,
            true,
            |wire, bytes| {
                let flags: &[&[u8]] = if wire.hashed_from.is_some() {
                    &[b"v", b"f", b"t"]
                } else {
                    &[b"t"]
                };
                meta::push_get(bytes, Key::Text(&wire.key), flags, 0);
            },
            move |wire, reply| match reply {
                Some(Reply::Status {
                    code: Code::Hd,
                    flags,
                }) if wire.hashed_from.is_none() => {
                    self.remaining(&flags, "remaining_ttl").map(Some)
                }
                other => Ok(self
                    .value_and_ttl(wire, other, "remaining_ttl")?
                    .map(|(_, left)| left)),
            },
        )
    }

    /// `mg <key> v f t`: the value and its remaining TTL in one command.
    pub(crate) fn get_with_ttl<'a>(
        &'a self,
        wire: &'a WireKey,
    ) -> impl Exchange<Reply, Output = Option<(Bytes, Remaining)>> + 'a {
        self.one_command(
            wire,
            true,
            |wire, bytes| meta::push_get(bytes, Key::Text(&wire.key), &[b"v", b"f", b"t"], 0),
            move |wire, reply| self.value_and_ttl(wire, reply, "get_with_ttl"),
        )
    }

    /// `flush_all`: the clear of an engine without a namespace, on one server.
    pub(crate) fn flush_all(&self) -> impl Exchange<Reply, Output = ()> + '_ {
        single(
            request(b"flush_all\r\n".to_vec(), 1, self.limits()),
            move |replies| match first(replies) {
                Some(Reply::Status { code: Code::Ok, .. }) => Ok(()),
                other => Err(self.unexpected(other, "clear")),
            },
        )
    }

    pub(crate) fn get_many<'a>(
        &'a self,
        wires: &'a [&'a WireKey],
    ) -> BoxExchange<'a, Reply, Vec<Option<Bytes>>> {
        self.read_many(
            wires,
            &[b"v", b"f"],
            "get_many",
            |commands, wire, reply| match reply {
                Reply::Value { data, flags } => Ok(unwrap_payload(wire, flags.number(b'f'), data)),
                Reply::Status { code: Code::En, .. } => Ok(None),
                other => Err(commands.unexpected(Some(other), "get_many")),
            },
        )
    }

    /// `mg <key> v f t` of every key: each value with its remaining TTL.
    pub(crate) fn get_many_with_ttl<'a>(
        &'a self,
        wires: &'a [&'a WireKey],
    ) -> BoxExchange<'a, Reply, Vec<Option<(Bytes, Remaining)>>> {
        self.read_many(
            wires,
            &[b"v", b"f", b"t"],
            "get_many_with_ttl",
            |commands, wire, reply| commands.value_and_ttl(wire, Some(reply), "get_many_with_ttl"),
        )
    }

    /// One `mg` with `flags` per key, in batches, each reply read by `parse`.
    fn read_many<'a, V: Send + 'a>(
        &'a self,
        wires: &'a [&'a WireKey],
        flags: &'static [&'static [u8]],
        operation: &'static str,
        parse: fn(&Self, &WireKey, Reply) -> Result<Option<V>>,
    ) -> BoxExchange<'a, Reply, Vec<Option<V>>> {
        if wires.is_empty() {
            return Box::new(ready(Vec::new()));
        }
        let limits = self.limits();
        let requests = wires
            .chunks(BATCH_KEYS)
            .map(|chunk| {
                let mut bytes = Vec::with_capacity(chunk.len() * 32);
                for (i, wire) in chunk.iter().enumerate() {
                    meta::push_get(&mut bytes, Key::Text(&wire.key), flags, Meta::opaque_for(i));
                }
                request(bytes, chunk.len(), limits)
            })
            .collect();
        let mut next = wires.iter();
        Box::new(batches(
            requests,
            Vec::with_capacity(wires.len()),
            move |values: &mut Vec<Option<V>>, replies| {
                for reply in replies {
                    let Some(wire) = next.next() else {
                        return Err(self.unexpected(Some(reply), operation));
                    };
                    values.push(parse(self, wire, reply)?);
                }
                Ok(())
            },
        ))
    }

    /// `items` are `(key, wire key, value)`; `many` tells whether the caller's batch held
    /// other entries (then a refusal may leave it partly applied).
    pub(crate) fn set_many<'a>(
        &'a self,
        items: &'a [(&'a str, WireKey, &'a Bytes)],
        exptime: Option<u32>,
        many: bool,
    ) -> BoxExchange<'a, Reply, ()> {
        if items.is_empty() {
            return Box::new(ready(()));
        }
        let limits = self.limits();
        let requests = batch_ranges(items.iter().map(|(_, _, v)| v.len()))
            .into_iter()
            .map(|range| {
                let mut bytes = Vec::new();
                for (i, (_, wire, value)) in items[range.clone()].iter().enumerate() {
                    let opaque = Meta::opaque_for(i);
                    match exptime {
                        Some(exptime) => self.push_set(&mut bytes, wire, value, exptime, opaque),
                        None => meta::push_delete(&mut bytes, Key::Text(&wire.key), &[], opaque),
                    }
                }
                request(bytes, range.len(), limits)
            })
            .collect();
        let mut index = 0;
        Box::new(batches(
            requests,
            (),
            move |_: &mut (), replies: Vec<Reply>| {
                let mut refused = None;
                for reply in replies {
                    let key = items.get(index).map_or("", |(k, _, _)| *k);
                    index += 1;
                    match reply {
                        Reply::Status {
                            code: Code::Hd | Code::Nf,
                            ..
                        } => {}
                        // Later items of the batch were still read (and may have been stored):
                        // report the first refusal once every reply is in.
                        other => {
                            refused.get_or_insert_with(|| {
                                self.write_failure(Some(other), "set_many", key, many)
                            });
                        }
                    }
                }
                refused.map_or(Ok(()), Err)
            },
        ))
    }

    pub(crate) fn delete_many<'a>(
        &'a self,
        wires: &'a [&'a WireKey],
    ) -> BoxExchange<'a, Reply, u64> {
        if wires.is_empty() {
            return Box::new(ready(0));
        }
        let limits = self.limits();
        let requests = wires
            .chunks(BATCH_KEYS)
            .map(|chunk| {
                let mut bytes = Vec::with_capacity(chunk.len() * 32);
                for (i, wire) in chunk.iter().enumerate() {
                    meta::push_delete(&mut bytes, Key::Text(&wire.key), &[], Meta::opaque_for(i));
                }
                request(bytes, chunk.len(), limits).not_idempotent()
            })
            .collect();
        Box::new(batches(
            requests,
            0u64,
            move |removed: &mut u64, replies: Vec<Reply>| {
                for reply in replies {
                    match reply {
                        Reply::Status { code: Code::Hd, .. } => *removed += 1,
                        Reply::Status { code: Code::Nf, .. } => {}
                        other => return Err(self.unexpected(Some(other), "delete_many")),
                    }
                }
                Ok(())
            },
        ))
    }

    /// `add` with a TTL that keeps the value (`exptime` from [`exptime`](crate::keys::exptime),
    /// not `None`).
    pub(crate) fn add<'a>(
        &'a self,
        key: &'a str,
        wire: &'a WireKey,
        value: &'a [u8],
        exptime: u32,
    ) -> impl Exchange<Reply, Output = bool> + 'a {
        self.one_command(
            wire,
            false,
            move |wire, bytes| {
                let (stored, flags) = payload(wire, value);
                let ttl = meta::flag(b'T', i64::from(exptime));
                let client_flags = meta::flag(b'F', flags);
                let all: &[&[u8]] = &[&ttl, &client_flags, b"ME"];
                meta::push_set(bytes, Key::Text(&wire.key), &stored, all, 0);
            },
            move |_, reply| match reply {
                Some(Reply::Status { code: Code::Hd, .. }) => Ok(true),
                Some(Reply::Status { code: Code::Ns, .. }) => Ok(false),
                other => Err(self.write_failure(other, "add", key, false)),
            },
        )
    }

    /// See [`DeleteIfEquals`].
    pub(crate) fn delete_if_equals<'a>(
        &'a self,
        wire: &'a WireKey,
        expected: &'a [u8],
    ) -> impl Exchange<Reply, Output = bool> + 'a {
        DeleteIfEquals::new(self, wire, expected)
    }

    /// memcached's `incr` is unsigned and stops at zero: Redis's signed arithmetic is
    /// emulated exactly with a compare-and-swap loop that keeps the remaining TTL.
    pub(crate) fn increment<'a>(
        &'a self,
        key: &'a str,
        wire: &'a WireKey,
        delta: i64,
        default_exptime: u32,
    ) -> impl Exchange<Reply, Output = i64> + 'a {
        Increment {
            commands: self,
            wire,
            key,
            delta,
            default_exptime,
            limits: self.limits(),
            attempts: 0,
            writing: None,
        }
    }

    /// `touch` with a TTL that keeps the value.
    pub(crate) fn touch<'a>(
        &'a self,
        wire: &'a WireKey,
        exptime: u32,
    ) -> impl Exchange<Reply, Output = bool> + 'a {
        self.one_command(
            wire,
            true,
            move |wire, bytes| {
                let touch = meta::flag(b'T', i64::from(exptime));
                meta::push_get(bytes, Key::Text(&wire.key), &[&touch], 0);
            },
            move |_, reply| match reply {
                Some(Reply::Status { code: Code::Hd, .. }) => Ok(true),
                Some(Reply::Status { code: Code::En, .. }) => Ok(false),
                other => Err(self.unexpected(other, "touch")),
            },
        )
    }
}

/// `delete_if_equals`: `mg <key> v f c` reads the value and its CAS; a different value (or
/// another key's under a hashed key, or none) ends with `false`; an equal one is deleted with
/// `md <key> C<cas>`, which memcached applies only if the entry was not rewritten since the read.
/// `HD` is `true`; `NF` (deleted or expired since the read) is `false`; `EX` (rewritten since)
/// reads again, at most [`DELETE_IF_EQUALS_ATTEMPTS`] times, then fails with `Backend`: every
/// read found the expected value, so `false` would be untrue, and deleting without the CAS could
/// delete another writer's value.
pub(crate) struct DeleteIfEquals<'a> {
    commands: &'a Commands,
    wire: &'a WireKey,
    expected: &'a [u8],
    limits: ReplyLimits,
    attempts: usize,
    /// Whether the last request was the `md`.
    deleting: bool,
}

impl<'a> DeleteIfEquals<'a> {
    pub(crate) fn new(commands: &'a Commands, wire: &'a WireKey, expected: &'a [u8]) -> Self {
        Self {
            commands,
            wire,
            expected,
            limits: commands.limits(),
            attempts: 0,
            deleting: false,
        }
    }

    fn read(&mut self) -> Result<Step<bool>> {
        if self.attempts == DELETE_IF_EQUALS_ATTEMPTS {
            return Err(CacheError::Backend {
                backend: BACKEND,
                source: format!(
                    "delete_if_equals lost {DELETE_IF_EQUALS_ATTEMPTS} compare-and-swap races in \
                     a row: the entry kept being rewritten with the expected value"
                )
                .into(),
            });
        }
        self.attempts += 1;
        self.deleting = false;
        let mut bytes = Vec::with_capacity(self.wire.key.len() + 24);
        meta::push_get(
            &mut bytes,
            Key::Text(&self.wire.key),
            &[b"v", b"f", b"c"],
            0,
        );
        Ok(Step::Send(request(bytes, 1, self.limits)))
    }
}

impl Exchange<Reply> for DeleteIfEquals<'_> {
    type Output = bool;

    fn start(&mut self) -> Result<Step<bool>> {
        self.read()
    }

    fn next(&mut self, replies: Vec<Reply>) -> Result<Step<bool>> {
        let reply = first(replies);
        if self.deleting {
            return match reply {
                Some(Reply::Status { code: Code::Hd, .. }) => Ok(Step::Done(true)),
                Some(Reply::Status { code: Code::Nf, .. }) => Ok(Step::Done(false)),
                // Rewritten since the read, perhaps with the same bytes: look again.
                Some(Reply::Status { code: Code::Ex, .. }) => self.read(),
                other => Err(self.commands.unexpected(other, "delete_if_equals")),
            };
        }
        match reply {
            Some(Reply::Value { data, flags }) => {
                let current = unwrap_payload(self.wire, flags.number(b'f'), data);
                if current.as_deref() != Some(self.expected) {
                    return Ok(Step::Done(false));
                }
                let Some(cas) = flags.number(b'c') else {
                    return Err(self.commands.unexpected(None, "delete_if_equals"));
                };
                let cas = meta::flag(b'C', cas);
                let mut bytes = Vec::with_capacity(self.wire.key.len() + 32);
                meta::push_delete(&mut bytes, Key::Text(&self.wire.key), &[&cas], 0);
                self.deleting = true;
                Ok(Step::Send(request(bytes, 1, self.limits).not_idempotent()))
            }
            Some(Reply::Status { code: Code::En, .. }) => Ok(Step::Done(false)),
            other => Err(self.commands.unexpected(other, "delete_if_equals")),
        }
    }
}

/// The compare-and-swap loop of `increment`: read the value, its CAS and its remaining TTL;
/// write the new value if nobody wrote in between (or create it with `add`); else read again.
struct Increment<'a> {
    commands: &'a Commands,
    wire: &'a WireKey,
    key: &'a str,
    delta: i64,
    default_exptime: u32,
    limits: ReplyLimits,
    attempts: usize,
    /// The new value, while its write is in flight.
    writing: Option<i64>,
}

impl Increment<'_> {
    fn read(&mut self) -> Result<Step<i64>> {
        self.attempts += 1;
        if self.attempts > CAS_ATTEMPTS {
            return Err(CacheError::Backend {
                backend: BACKEND,
                source: format!("increment lost {CAS_ATTEMPTS} compare-and-swap races in a row")
                    .into(),
            });
        }
        self.writing = None;
        let mut bytes = Vec::with_capacity(self.wire.key.len() + 24);
        meta::push_get(
            &mut bytes,
            Key::Text(&self.wire.key),
            &[b"v", b"f", b"c", b"t"],
            0,
        );
        Ok(Step::Send(request(bytes, 1, self.limits)))
    }

    fn write(&mut self, next: i64, flags: &[&[u8]]) -> Step<i64> {
        let (stored, client_flags) = payload(self.wire, &format_counter(next));
        let client_flags = meta::flag(b'F', client_flags);
        let mut all: Vec<&[u8]> = flags.to_vec();
        all.push(&client_flags);
        let mut bytes = Vec::with_capacity(self.wire.key.len() + 64);
        meta::push_set(&mut bytes, Key::Text(&self.wire.key), &stored, &all, 0);
        self.writing = Some(next);
        Step::Send(request(bytes, 1, self.limits).not_idempotent())
    }
}

impl Exchange<Reply> for Increment<'_> {
    type Output = i64;

    fn start(&mut self) -> Result<Step<i64>> {
        self.read()
    }

    fn next(&mut self, replies: Vec<Reply>) -> Result<Step<i64>> {
        let reply = first(replies);
        if let Some(next) = self.writing.take() {
            return match reply {
                Some(Reply::Status { code: Code::Hd, .. }) => Ok(Step::Done(next)),
                // Someone else wrote or created it first: read again.
                Some(Reply::Status {
                    code: Code::Ex | Code::Ns | Code::Nf,
                    ..
                }) => self.read(),
                other => Err(self
                    .commands
                    .write_failure(other, "increment", self.key, false)),
            };
        }
        match reply {
            Some(Reply::Value { data, flags }) => {
                let Some(current) = unwrap_payload(self.wire, flags.number(b'f'), data) else {
                    // Another key's value under the same hash: not a counter of this key.
                    return Err(CacheError::NotANumber {
                        key: KeyDisplay::new(self.key),
                    });
                };
                let next = apply_increment(self.key, Some(&current), self.delta)?;
                let Some(cas) = flags.number(b'c') else {
                    return Err(self.commands.unexpected(None, "increment"));
                };
                let exptime = match flags.number(b't') {
                    None | Some(-1) => 0,
                    Some(secs) => {
                        expiration_for_secs(u64::try_from(secs.max(1)).unwrap_or(1)).unwrap_or(0)
                    }
                };
                let ttl = meta::flag(b'T', i64::from(exptime));
                let cas = meta::flag(b'C', cas);
                Ok(self.write(next, &[&ttl, &cas]))
            }
            Some(Reply::Status { code: Code::En, .. }) => {
                let next = apply_increment(self.key, None, self.delta)?;
                let ttl = meta::flag(b'T', i64::from(self.default_exptime));
                Ok(self.write(next, &[&ttl, b"ME"]))
            }
            other => Err(self.commands.unexpected(other, "increment")),
        }
    }
}
