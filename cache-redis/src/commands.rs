//! Every operation as an exchange: the commands it sends and what it makes of the replies. The
//! blocking engine runs these; an async one would run the same.

use std::time::Duration;

use cache_core::key::KeySpace;
use cache_core::ttl::ceil_millis;
use cache_core::{Bytes, CacheError, Expiry, KeyDisplay, Remaining, Result, Ttl};
use cache_remote::{
    BATCH_KEYS, BoxExchange, Exchange, ExchangeExt, ReplyLimits, Request, Step, batch_ranges,
    batches, ready, single,
};

use crate::backend::{BACKEND, reply_error, unexpected};
use crate::resp::{self, Value};

/// The longest TTL accepted: 100 years. Longer ones (`Duration::MAX`) are refused, not clamped.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Redis keeps deadlines in milliseconds and deletes a key once the clock is past it, so a key
/// lives up to 1 ms longer than its TTL, plus 1 ms of rounding the TTL up.
pub(crate) const TTL_RESOLUTION: Duration = Duration::from_millis(2);
/// With relaxed keys: the longest key accepted.
pub(crate) const RELAXED_MAX_KEY_LEN: usize = 64 * 1024;
/// Keys asked for per `SCAN` and removed per `UNLINK` while clearing a namespace.
const CLEAR_BATCH: usize = 500;
/// The most keys one `SCAN` reply may hold: far more than `COUNT` asks, which Redis may
/// exceed, and far less than memory allows.
const SCAN_REPLY_KEYS: usize = 100_000;

/// `delete_if_equals` as a Lua script: `GET` answers `false` for an absent (or expired) key,
/// which equals no string, so only the expected value is deleted. Sent whole with `EVAL` rather
/// than by `EVALSHA`: it is 97 bytes, and `EVALSHA` would need a `NOSCRIPT` fallback for every
/// server that restarted, failed over or ran `SCRIPT FLUSH`.
pub(crate) const DELETE_IF_EQUALS: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) else return 0 end";

/// What every operation needs: the key space, the default TTL, the value limit and the reply
/// limits that follow from it.
#[derive(Debug)]
pub(crate) struct Commands {
    pub(crate) keys: KeySpace,
    pub(crate) default_ttl: Ttl,
    pub(crate) max_value_size: usize,
    pub(crate) address: String,
    pub(crate) limits: ReplyLimits,
    /// Whether the keys live in a cluster: multi-key commands then name one key each (keys of
    /// one request may belong to different slots).
    pub(crate) cluster: bool,
}

/// A value read with its remaining TTL; `None` when absent.
type WithTtl = Option<(Bytes, Remaining)>;

/// The single reply of a one-command request.
fn only(replies: Vec<Value>) -> Value {
    replies.into_iter().next().unwrap_or(Value::Nil)
}

/// What a `PTTL` reply says of a key: `Ok(None)` absent (`-2`), `Never` without expiry (`-1`),
/// else the milliseconds left, at least 1 (Redis answers 0 for a key in its last millisecond).
/// Any other reply is handed back.
pub(crate) fn pttl(reply: Value) -> std::result::Result<Option<Remaining>, Value> {
    match reply {
        Value::Integer(-2) => Ok(None),
        Value::Integer(-1) => Ok(Some(Remaining::Never)),
        Value::Integer(ms) if ms >= 0 => Ok(Some(Remaining::After(Duration::from_millis(
            ms.unsigned_abs().max(1),
        )))),
        other => Err(other),
    }
}

impl Commands {
    pub(crate) fn new(
        keys: KeySpace,
        default_ttl: Ttl,
        max_value_size: usize,
        address: String,
        cluster: bool,
    ) -> Self {
        // Replies hold values (up to the value limit) or keys (up to 64 KiB with relaxed keys).
        let limits = ReplyLimits::scalar(max_value_size.max(RELAXED_MAX_KEY_LEN));
        Self {
            keys,
            default_ttl,
            max_value_size,
            address,
            limits,
            cluster,
        }
    }

    /// The key as stored: checked, with the namespace's prefix.
    pub(crate) fn key(&self, key: &str) -> Result<String> {
        self.keys.prefixed(key)
    }

    fn keys(&self, keys: &[&str]) -> Result<Vec<String>> {
        keys.iter().map(|k| self.key(k)).collect()
    }

    pub(crate) fn check_value(&self, key: &str, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value_size {
            return Err(CacheError::ValueTooLarge {
                backend: BACKEND,
                key: KeyDisplay::new(key),
                size: value.len(),
                limit: self.max_value_size,
            });
        }
        Ok(())
    }

    /// The expiry of `ttl` in milliseconds: `None` never, `Some(0)` not kept.
    pub(crate) fn expiry_ms(&self, ttl: Ttl) -> Result<Option<u64>> {
        match ttl.resolve(self.default_ttl) {
            Expiry::Never => Ok(None),
            Expiry::Now => Ok(Some(0)),
            Expiry::After(d) if d > MAX_TTL => Err(CacheError::InvalidTtl {
                backend: BACKEND,
                ttl: d,
                max: MAX_TTL,
            }),
            // Rounded up, so never shorter than asked and never zero.
            Expiry::After(d) => Ok(Some(ceil_millis(d).unwrap_or(u64::MAX).max(1))),
        }
    }

    /// What a reply that is not the expected one means: an error reply (with the key a write
    /// was refused for), or a reply of the wrong kind.
    pub(crate) fn failure(
        &self,
        value: Value,
        operation: &'static str,
        key: Option<(&str, bool)>,
    ) -> CacheError {
        match value {
            Value::Error(text) => reply_error(&text, operation, &self.address, key),
            other => unexpected(&other, operation),
        }
    }

    pub(crate) fn request(&self, args: &[&[u8]]) -> Request {
        let mut bytes = Vec::with_capacity(args.iter().map(|a| a.len() + 16).sum::<usize>() + 8);
        resp::command(&mut bytes, args);
        Request::new(bytes, 1, self.limits)
    }

    pub(crate) fn set_args<'v>(
        key: &'v [u8],
        value: &'v [u8],
        ms: &'v Option<Vec<u8>>,
    ) -> Vec<&'v [u8]> {
        let mut args: Vec<&[u8]> = vec![b"SET", key, value];
        if let Some(ms) = ms {
            args.push(b"PX");
            args.push(ms);
        }
        args
    }

    pub(crate) fn ping(&self) -> impl Exchange<Value, Output = ()> + '_ {
        single(self.request(&[b"PING"]), move |replies| {
            match only(replies) {
                Value::Simple(_) => Ok(()),
                other => Err(self.failure(other, "ping", None)),
            }
        })
    }

    pub(crate) fn get<'a>(
        &'a self,
        key: &str,
    ) -> Result<impl Exchange<Value, Output = Option<Bytes>> + 'a> {
        let full = self.key(key)?;
        Ok(single(
            self.request(&[b"GET", full.as_bytes()]),
            move |replies| match only(replies) {
                Value::Bulk(value) => Ok(Some(Bytes::from(value))),
                Value::Nil => Ok(None),
                other => Err(self.failure(other, "get", None)),
            },
        ))
    }

    pub(crate) fn set<'a>(
        &'a self,
        key: &'a str,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<impl Exchange<Value, Output = ()> + 'a> {
        let full = self.key(key)?;
        self.check_value(key, value)?;
        let request = match self.expiry_ms(ttl)? {
            Some(0) => self.request(&[b"DEL", full.as_bytes()]),
            ms => {
                let ms = ms.map(|ms| resp::decimal(ms as i64));
                self.request(&Self::set_args(full.as_bytes(), value, &ms))
            }
        };
        Ok(single(request, move |replies| match only(replies) {
            Value::Simple(_) | Value::Integer(_) => Ok(()),
            other => Err(self.failure(other, "set", Some((key, false)))),
        }))
    }

    pub(crate) fn delete<'a>(
        &'a self,
        key: &str,
    ) -> Result<impl Exchange<Value, Output = bool> + 'a> {
        let full = self.key(key)?;
        let request = self.request(&[b"DEL", full.as_bytes()]).not_idempotent();
        Ok(single(request, move |replies| match only(replies) {
            Value::Integer(n) => Ok(n > 0),
            other => Err(self.failure(other, "delete", None)),
        }))
    }

    /// One `EVAL` of [`DELETE_IF_EQUALS`]: the comparison and the `DEL` run as one script, so
    /// no other client's command comes between them. Never sent twice, like `delete`: resent
    /// after the first one deleted, it would report `false` for a delete that happened, or
    /// delete a value stored equal again in between.
    pub(crate) fn delete_if_equals<'a>(
        &'a self,
        key: &'a str,
        expected: &[u8],
    ) -> Result<impl Exchange<Value, Output = bool> + 'a> {
        let full = self.key(key)?;
        let request = self
            .request(&[
                b"EVAL",
                DELETE_IF_EQUALS.as_bytes(),
                b"1",
                full.as_bytes(),
                expected,
            ])
            .not_idempotent();
        Ok(single(request, move |replies| match only(replies) {
            Value::Integer(n) => Ok(n > 0),
            other => Err(self.failure(other, "delete_if_equals", Some((key, false)))),
        }))
    }

    pub(crate) fn exists<'a>(
        &'a self,
        key: &str,
    ) -> Result<impl Exchange<Value, Output = bool> + 'a> {
        let full = self.key(key)?;
        Ok(single(
            self.request(&[b"EXISTS", full.as_bytes()]),
            move |replies| match only(replies) {
                Value::Integer(n) => Ok(n > 0),
                other => Err(self.failure(other, "exists", None)),
            },
        ))
    }

    /// `FLUSHDB` without a namespace; `SCAN` + `UNLINK` in batches with one.
    pub(crate) fn clear(&self) -> BoxExchange<'_, Value, ()> {
        if self.keys.prefix().is_empty() {
            return Box::new(single(
                self.request(&[b"FLUSHDB"]),
                move |replies| match only(replies) {
                    Value::Simple(_) => Ok(()),
                    other => Err(self.failure(other, "clear", None)),
                },
            ));
        }
        Box::new(Clear {
            commands: self,
            pattern: format!("{}*", escape_glob(self.keys.prefix())).into_bytes(),
            cursor: b"0".to_vec(),
            scanned_all: false,
            pending: Vec::new(),
        })
    }

    pub(crate) fn get_many<'a>(
        &'a self,
        keys: &[&str],
    ) -> Result<BoxExchange<'a, Value, Vec<Option<Bytes>>>> {
        let full = self.keys(keys)?;
        if full.is_empty() {
            return Ok(Box::new(ready(Vec::new())));
        }
        let mut sizes = std::collections::VecDeque::new();
        let requests = full
            .chunks(BATCH_KEYS)
            .map(|chunk| {
                let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
                args.push(b"MGET");
                args.extend(chunk.iter().map(|k| k.as_bytes()));
                let mut request = self.request(&args);
                request.limits = self.limits.with_arrays(chunk.len(), 1);
                sizes.push_back(chunk.len());
                request
            })
            .collect();
        let acc = Vec::with_capacity(full.len());
        Ok(Box::new(batches(
            requests,
            acc,
            move |acc: &mut Vec<Option<Bytes>>, replies| {
                let expected = sizes.pop_front().unwrap_or(0);
                match only(replies) {
                    Value::Array(items) if items.len() == expected => {
                        for item in items {
                            acc.push(match item {
                                Value::Bulk(value) => Some(Bytes::from(value)),
                                Value::Nil => None,
                                other => return Err(self.failure(other, "get_many", None)),
                            });
                        }
                        Ok(())
                    }
                    other => Err(self.failure(other, "get_many", None)),
                }
            },
        )))
    }

    pub(crate) fn set_many<'a>(
        &'a self,
        entries: &'a [(&'a str, Bytes)],
        ttl: Ttl,
    ) -> Result<BoxExchange<'a, Value, ()>> {
        let full = entries
            .iter()
            .map(|(k, _)| self.key(k))
            .collect::<Result<Vec<_>>>()?;
        for (key, value) in entries {
            self.check_value(key, value)?;
        }
        let ms = self.expiry_ms(ttl)?;
        if full.is_empty() {
            return Ok(Box::new(ready(())));
        }
        if ms == Some(0) {
            let requests = self.del_requests(&full, true);
            let exchange = batches(requests, 0u64, move |removed: &mut u64, replies| {
                self.count_removed("set_many", removed, replies)
            });
            return Ok(Box::new(exchange.map_output(drop)));
        }
        let ms = ms.map(|ms| resp::decimal(ms as i64));
        let ranges = batch_ranges(entries.iter().map(|(_, v)| v.len()));
        let mut firsts: std::collections::VecDeque<usize> =
            ranges.iter().map(|r| r.start).collect();
        let requests = ranges
            .into_iter()
            .map(|range| {
                let mut bytes = Vec::new();
                for i in range.clone() {
                    resp::command(
                        &mut bytes,
                        &Self::set_args(full[i].as_bytes(), &entries[i].1, &ms),
                    );
                }
                Request::new(bytes, range.len(), self.limits)
            })
            .collect();
        let many = entries.len() > 1;
        Ok(Box::new(batches(
            requests,
            (),
            move |_: &mut (), replies: Vec<Value>| {
                let first = firsts.pop_front().unwrap_or(0);
                for (i, reply) in replies.into_iter().enumerate() {
                    match reply {
                        Value::Simple(_) => {}
                        other => {
                            let key = entries.get(first + i).map_or("", |(k, _)| *k);
                            return Err(self.failure(other, "set_many", Some((key, many))));
                        }
                    }
                }
                Ok(())
            },
        )))
    }

    /// `DEL` of `keys`, in batches.
    fn del_requests(&self, keys: &[String], idempotent: bool) -> Vec<Request> {
        keys.chunks(BATCH_KEYS)
            .map(|chunk| {
                let mut args: Vec<&[u8]> = Vec::with_capacity(chunk.len() + 1);
                args.push(b"DEL");
                args.extend(chunk.iter().map(|k| k.as_bytes()));
                let mut request = self.request(&args);
                request.idempotent = idempotent;
                request
            })
            .collect()
    }

    /// Folds the replies of [`del_requests`](Self::del_requests) into the count removed.
    fn count_removed(
        &self,
        operation: &'static str,
        removed: &mut u64,
        replies: Vec<Value>,
    ) -> Result<()> {
        match only(replies) {
            Value::Integer(n) => {
                *removed += u64::try_from(n).unwrap_or(0);
                Ok(())
            }
            other => Err(self.failure(other, operation, None)),
        }
    }

    pub(crate) fn delete_many<'a>(
        &'a self,
        keys: &[&str],
    ) -> Result<impl Exchange<Value, Output = u64> + use<'a>> {
        let full = self.keys(keys)?;
        let requests = self.del_requests(&full, false);
        Ok(batches(
            requests,
            0u64,
            move |removed: &mut u64, replies| self.count_removed("delete_many", removed, replies),
        ))
    }

    pub(crate) fn add<'a>(
        &'a self,
        key: &'a str,
        value: &[u8],
        ttl: Ttl,
    ) -> Result<BoxExchange<'a, Value, bool>> {
        let full = self.key(key)?;
        self.check_value(key, value)?;
        let ms = match self.expiry_ms(ttl)? {
            // Nothing would be kept: report whether the key was free, store nothing.
            Some(0) => {
                let exists = self.exists(key)?;
                return Ok(Box::new(exists.map_output(|found| !found)));
            }
            ms => ms.map(|ms| resp::decimal(ms as i64)),
        };
        let mut args = Self::set_args(full.as_bytes(), value, &ms);
        args.push(b"NX");
        let request = self.request(&args).not_idempotent();
        Ok(Box::new(single(request, move |replies| {
            match only(replies) {
                Value::Simple(_) => Ok(true),
                Value::Nil => Ok(false),
                other => Err(self.failure(other, "add", Some((key, false)))),
            }
        })))
    }

    /// `MULTI`, `SET key 0 NX` with the default TTL (a missing counter starts at 0 and gets the
    /// default TTL; an existing one keeps its value and TTL), `INCRBY`, `EXEC`: one
    /// transaction, never sent twice.
    pub(crate) fn increment<'a>(
        &'a self,
        key: &'a str,
        delta: i64,
    ) -> Result<impl Exchange<Value, Output = i64> + 'a> {
        let full = self.key(key)?;
        let ms = self
            .expiry_ms(Ttl::Default)?
            .map(|ms| resp::decimal(ms as i64));
        let mut bytes = Vec::new();
        resp::command(&mut bytes, &[b"MULTI"]);
        let mut create = Self::set_args(full.as_bytes(), b"0", &ms);
        create.push(b"NX");
        resp::command(&mut bytes, &create);
        resp::command(
            &mut bytes,
            &[b"INCRBY", full.as_bytes(), &resp::decimal(delta)],
        );
        resp::command(&mut bytes, &[b"EXEC"]);
        let mut request = Request::new(bytes, 4, self.limits.with_arrays(2, 1));
        request.idempotent = false;
        Ok(single(request, move |replies| {
            let mut replies = replies.into_iter();
            let queued: Vec<Value> = replies.by_ref().take(3).collect();
            if let Some(bad) = queued.into_iter().find(|r| !matches!(r, Value::Simple(_))) {
                return Err(self.failure(bad, "increment", Some((key, false))));
            }
            match replies.next() {
                Some(Value::Array(results)) => match results.into_iter().nth(1) {
                    Some(Value::Integer(n)) => Ok(n),
                    Some(Value::Error(text)) if text.contains("overflow") => {
                        Err(CacheError::Overflow {
                            key: KeyDisplay::new(key),
                            delta,
                        })
                    }
                    Some(Value::Error(text)) if text.contains("not an integer") => {
                        Err(CacheError::NotANumber {
                            key: KeyDisplay::new(key),
                        })
                    }
                    Some(other) => Err(self.failure(other, "increment", None)),
                    None => Err(unexpected(&Value::Nil, "increment")),
                },
                Some(other) => Err(self.failure(other, "increment", Some((key, false)))),
                None => Err(unexpected(&Value::Nil, "increment")),
            }
        }))
    }

    pub(crate) fn touch<'a>(
        &'a self,
        key: &'a str,
        ttl: Ttl,
    ) -> Result<BoxExchange<'a, Value, bool>> {
        let full = self.key(key)?;
        match self.expiry_ms(ttl)? {
            Some(0) => Ok(Box::new(self.delete(key)?)),
            Some(ms) => {
                let request =
                    self.request(&[b"PEXPIRE", full.as_bytes(), &resp::decimal(ms as i64)]);
                Ok(Box::new(single(request, move |replies| {
                    match only(replies) {
                        Value::Integer(n) => Ok(n > 0),
                        other => Err(self.failure(other, "touch", Some((key, false)))),
                    }
                })))
            }
            None => {
                // PERSIST answers 0 both for a missing key and one without a TTL: ask EXISTS
                // in the same transaction.
                let mut bytes = Vec::new();
                resp::command(&mut bytes, &[b"MULTI"]);
                resp::command(&mut bytes, &[b"EXISTS", full.as_bytes()]);
                resp::command(&mut bytes, &[b"PERSIST", full.as_bytes()]);
                resp::command(&mut bytes, &[b"EXEC"]);
                let request = Request::new(bytes, 4, self.limits.with_arrays(2, 1));
                Ok(Box::new(single(request, move |replies| {
                    let mut replies = replies.into_iter();
                    let queued: Vec<Value> = replies.by_ref().take(3).collect();
                    if let Some(bad) = queued.into_iter().find(|r| !matches!(r, Value::Simple(_))) {
                        return Err(self.failure(bad, "touch", Some((key, false))));
                    }
                    match replies.next() {
                        Some(Value::Array(results)) => match results.first() {
                            Some(Value::Integer(n)) => Ok(*n > 0),
                            _ => Err(unexpected(&Value::Array(results), "touch")),
                        },
                        Some(other) => Err(self.failure(other, "touch", Some((key, false)))),
                        None => Err(unexpected(&Value::Nil, "touch")),
                    }
                })))
            }
        }
    }

    /// `PTTL`: how long the key has left.
    pub(crate) fn remaining_ttl<'a>(
        &'a self,
        key: &str,
    ) -> Result<impl Exchange<Value, Output = Option<Remaining>> + 'a> {
        let full = self.key(key)?;
        Ok(single(
            self.request(&[b"PTTL", full.as_bytes()]),
            move |replies| {
                pttl(only(replies)).map_err(|other| self.failure(other, "remaining_ttl", None))
            },
        ))
    }

    /// The results of a transaction whose request was `MULTI`, `queued` commands and `EXEC`:
    /// `MULTI`'s `+OK` and each `+QUEUED` are checked (a refused command, a redirection, is the
    /// error), then `EXEC`'s array must hold one result per command.
    fn transaction(
        &self,
        replies: Vec<Value>,
        queued: usize,
        operation: &'static str,
    ) -> Result<Vec<Value>> {
        let mut replies = replies.into_iter();
        for reply in replies.by_ref().take(queued + 1) {
            if !matches!(reply, Value::Simple(_)) {
                return Err(self.failure(reply, operation, None));
            }
        }
        match replies.next() {
            Some(Value::Array(results)) if results.len() == queued => Ok(results),
            Some(Value::Array(results)) => Err(unexpected(&Value::Array(results), operation)),
            Some(other) => Err(self.failure(other, operation, None)),
            None => Err(unexpected(&Value::Nil, operation)),
        }
    }

    /// A value and its `PTTL`, as results of one transaction: `None` when the key is absent.
    fn value_and_ttl(&self, value: Value, ttl: Value, operation: &'static str) -> Result<WithTtl> {
        let value = match value {
            Value::Bulk(value) => Bytes::from(value),
            Value::Nil => return Ok(None),
            other => return Err(self.failure(other, operation, None)),
        };
        match pttl(ttl) {
            Ok(Some(left)) => Ok(Some((value, left))),
            // Read in the same transaction as the value: the key cannot be absent.
            Ok(None) => Err(unexpected(&Value::Integer(-2), operation)),
            Err(other) => Err(self.failure(other, operation, None)),
        }
    }

    /// `MULTI`, `GET`, `PTTL`, `EXEC`: the value and its remaining TTL read atomically, in one
    /// round trip.
    pub(crate) fn get_with_ttl<'a>(
        &'a self,
        key: &str,
    ) -> Result<impl Exchange<Value, Output = WithTtl> + 'a> {
        let full = self.key(key)?;
        let mut bytes = Vec::with_capacity(full.len() * 2 + 64);
        resp::command(&mut bytes, &[b"MULTI"]);
        resp::command(&mut bytes, &[b"GET", full.as_bytes()]);
        resp::command(&mut bytes, &[b"PTTL", full.as_bytes()]);
        resp::command(&mut bytes, &[b"EXEC"]);
        let request = Request::new(bytes, 4, self.limits.with_arrays(2, 1));
        Ok(single(request, move |replies| {
            let mut results = self.transaction(replies, 2, "get_with_ttl")?.into_iter();
            match (results.next(), results.next()) {
                (Some(value), Some(ttl)) => self.value_and_ttl(value, ttl, "get_with_ttl"),
                _ => Err(unexpected(&Value::Nil, "get_with_ttl")),
            }
        }))
    }

    /// One transaction per batch of keys (`MULTI`, `GET` and `PTTL` of each key, `EXEC`), all
    /// keys checked first: for one server (a cluster reads key by key, since the keys of one
    /// request may belong to different slots).
    pub(crate) fn get_many_with_ttl<'a>(
        &'a self,
        keys: &[&str],
    ) -> Result<BoxExchange<'a, Value, Vec<WithTtl>>> {
        let full = self.keys(keys)?;
        if full.is_empty() {
            return Ok(Box::new(ready(Vec::new())));
        }
        let mut sizes = std::collections::VecDeque::new();
        let requests = full
            .chunks(BATCH_KEYS)
            .map(|chunk| {
                let mut bytes = Vec::with_capacity(chunk.iter().map(|k| k.len() * 2 + 48).sum());
                resp::command(&mut bytes, &[b"MULTI"]);
                for key in chunk {
                    resp::command(&mut bytes, &[b"GET", key.as_bytes()]);
                    resp::command(&mut bytes, &[b"PTTL", key.as_bytes()]);
                }
                resp::command(&mut bytes, &[b"EXEC"]);
                sizes.push_back(chunk.len());
                Request::new(
                    bytes,
                    chunk.len() * 2 + 2,
                    self.limits.with_arrays(chunk.len() * 2, 1),
                )
            })
            .collect();
        let acc = Vec::with_capacity(full.len());
        Ok(Box::new(batches(
            requests,
            acc,
            move |acc: &mut Vec<WithTtl>, replies| {
                let count = sizes.pop_front().unwrap_or(0);
                let mut results = self
                    .transaction(replies, count * 2, "get_many_with_ttl")?
                    .into_iter();
                while let (Some(value), Some(ttl)) = (results.next(), results.next()) {
                    acc.push(self.value_and_ttl(value, ttl, "get_many_with_ttl")?);
                }
                Ok(())
            },
        )))
    }
}

/// A namespaced clear: `SCAN` the namespace's pattern, `UNLINK` what it finds, until the
/// cursor comes back to 0. Each request gets its own deadline: the work grows with the
/// namespace, and no single request holds the server for long.
struct Clear<'a> {
    commands: &'a Commands,
    pattern: Vec<u8>,
    cursor: Vec<u8>,
    scanned_all: bool,
    pending: Vec<Vec<u8>>,
}

impl Clear<'_> {
    fn step(&mut self) -> Step<()> {
        let request = if !self.pending.is_empty() {
            let batch: Vec<Vec<u8>> = self
                .pending
                .drain(..self.pending.len().min(CLEAR_BATCH))
                .collect();
            if self.commands.cluster {
                // Keys of one node may be in different slots: one UNLINK each.
                let mut bytes = Vec::with_capacity(batch.iter().map(|k| k.len() + 32).sum());
                for key in &batch {
                    resp::command(&mut bytes, &[b"UNLINK", key]);
                }
                Request::new(bytes, batch.len(), self.commands.limits)
            } else {
                let mut args: Vec<&[u8]> = Vec::with_capacity(batch.len() + 1);
                args.push(b"UNLINK");
                args.extend(batch.iter().map(Vec::as_slice));
                self.commands.request(&args)
            }
        } else if self.scanned_all {
            return Step::Done(());
        } else {
            let count = resp::decimal(CLEAR_BATCH as i64);
            let mut request = self.commands.request(&[
                b"SCAN",
                &self.cursor,
                b"MATCH",
                &self.pattern,
                b"COUNT",
                &count,
            ]);
            request.limits = request.limits.with_arrays(SCAN_REPLY_KEYS, 2);
            request
        };
        Step::Send(request.with_own_deadline())
    }
}

impl Exchange<Value> for Clear<'_> {
    type Output = ();

    fn start(&mut self) -> Result<Step<()>> {
        Ok(self.step())
    }

    fn next(&mut self, replies: Vec<Value>) -> Result<Step<()>> {
        if replies.len() > 1 {
            // One UNLINK per key (a cluster node).
            for reply in replies {
                if !matches!(reply, Value::Integer(_)) {
                    return Err(self.commands.failure(reply, "clear", None));
                }
            }
            return Ok(self.step());
        }
        match only(replies) {
            // UNLINK: SCAN may return a key twice; unlinking a missing key is harmless.
            Value::Integer(_) => {}
            Value::Array(items) => {
                let mut items = items.into_iter();
                match (items.next(), items.next()) {
                    (Some(Value::Bulk(cursor)), Some(Value::Array(keys))) => {
                        self.scanned_all = cursor == b"0";
                        self.cursor = cursor;
                        for key in keys {
                            match key {
                                Value::Bulk(key) => self.pending.push(key),
                                other => return Err(unexpected(&other, "clear")),
                            }
                        }
                    }
                    _ => return Err(unexpected(&Value::Array(Vec::new()), "clear")),
                }
            }
            other => return Err(self.commands.failure(other, "clear", None)),
        }
        Ok(self.step())
    }
}

/// Escapes Redis glob characters so a prefix matches only itself.
pub(crate) fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for ch in text.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pttl_replies_are_read() {
        assert_eq!(pttl(Value::Integer(-2)), Ok(None), "absent");
        assert_eq!(pttl(Value::Integer(-1)), Ok(Some(Remaining::Never)));
        assert_eq!(
            pttl(Value::Integer(1_500)),
            Ok(Some(Remaining::After(Duration::from_millis(1_500))))
        );
        // A key in its last millisecond is alive: never zero.
        assert_eq!(
            pttl(Value::Integer(0)),
            Ok(Some(Remaining::After(Duration::from_millis(1))))
        );
        assert_eq!(pttl(Value::Integer(-3)), Err(Value::Integer(-3)));
        assert_eq!(pttl(Value::Nil), Err(Value::Nil));
    }

    fn commands() -> Commands {
        Commands::new(
            KeySpace::new(Some("ns")).unwrap(),
            Ttl::After(Duration::from_secs(60)),
            1024,
            "127.0.0.1:1".into(),
            false,
        )
    }

    /// Runs a one-request exchange against `replies`: its request's bytes and its output.
    fn run<E: Exchange<Value>>(
        mut exchange: E,
        replies: Vec<Value>,
    ) -> (Vec<u8>, Result<E::Output>) {
        let Ok(Step::Send(request)) = exchange.start() else {
            panic!("the exchange sends a request");
        };
        assert_eq!(request.replies, replies.len(), "replies expected");
        let output = exchange.next(replies).map(|step| match step {
            Step::Done(output) => output,
            Step::Send(_) => panic!("a second request"),
        });
        (request.bytes, output)
    }

    fn queued(n: usize) -> Vec<Value> {
        let mut replies = vec![Value::Simple("OK".into())];
        replies.extend((0..n).map(|_| Value::Simple("QUEUED".into())));
        replies
    }

    #[test]
    fn get_with_ttl_is_one_transaction() {
        let commands = commands();
        let mut replies = queued(2);
        replies.push(Value::Array(vec![
            Value::Bulk(b"v".to_vec()),
            Value::Integer(59_999),
        ]));
        let (bytes, output) = run(commands.get_with_ttl("k").unwrap(), replies);
        let mut expected = Vec::new();
        resp::command(&mut expected, &[b"MULTI"]);
        resp::command(&mut expected, &[b"GET", b"ns:k"]);
        resp::command(&mut expected, &[b"PTTL", b"ns:k"]);
        resp::command(&mut expected, &[b"EXEC"]);
        assert_eq!(bytes, expected);
        assert_eq!(
            output.unwrap(),
            Some((
                Bytes::from_static(b"v"),
                Remaining::After(Duration::from_millis(59_999))
            ))
        );
        // A miss, a key without expiry.
        let mut replies = queued(2);
        replies.push(Value::Array(vec![Value::Nil, Value::Integer(-2)]));
        assert_eq!(
            run(commands.get_with_ttl("k").unwrap(), replies).1.unwrap(),
            None
        );
        let mut replies = queued(2);
        replies.push(Value::Array(vec![
            Value::Bulk(b"v".to_vec()),
            Value::Integer(-1),
        ]));
        assert_eq!(
            run(commands.get_with_ttl("k").unwrap(), replies).1.unwrap(),
            Some((Bytes::from_static(b"v"), Remaining::Never))
        );
    }

    #[test]
    fn broken_transactions_are_errors() {
        let commands = commands();
        let cases: Vec<Vec<Value>> = vec![
            // A command refused while queued (a redirection, say), then EXECABORT.
            vec![
                Value::Simple("OK".into()),
                Value::Error("MOVED 1 127.0.0.1:7001".into()),
                Value::Simple("QUEUED".into()),
                Value::Error("EXECABORT Transaction discarded".into()),
            ],
            // GET on a key of another type.
            {
                let mut replies = queued(2);
                replies.push(Value::Array(vec![
                    Value::Error("WRONGTYPE Operation".into()),
                    Value::Integer(-1),
                ]));
                replies
            },
            // Fewer results than commands, or none.
            {
                let mut replies = queued(2);
                replies.push(Value::Array(vec![Value::Nil]));
                replies
            },
            {
                let mut replies = queued(2);
                replies.push(Value::Nil);
                replies
            },
            // A value whose key is absent in the same transaction.
            {
                let mut replies = queued(2);
                replies.push(Value::Array(vec![
                    Value::Bulk(b"v".to_vec()),
                    Value::Integer(-2),
                ]));
                replies
            },
        ];
        for replies in cases {
            let shown = format!("{replies:?}");
            let (_, output) = run(commands.get_with_ttl("k").unwrap(), replies);
            assert!(output.is_err(), "{shown}: {output:?}");
        }
        let moved = vec![
            Value::Simple("OK".into()),
            Value::Error("MOVED 1 127.0.0.1:7001".into()),
            Value::Simple("QUEUED".into()),
            Value::Error("EXECABORT Transaction discarded".into()),
        ];
        let error = run(commands.get_with_ttl("k").unwrap(), moved)
            .1
            .unwrap_err();
        assert!(
            crate::backend::Redirect::of(&error).is_some(),
            "a redirection is followed: {error}"
        );
    }

    #[test]
    fn get_many_with_ttl_reads_a_batch_in_one_transaction() {
        let commands = commands();
        let mut replies = queued(4);
        replies.push(Value::Array(vec![
            Value::Bulk(b"a".to_vec()),
            Value::Integer(1_000),
            Value::Nil,
            Value::Integer(-2),
        ]));
        let (bytes, output) = run(commands.get_many_with_ttl(&["a", "b"]).unwrap(), replies);
        let mut expected = Vec::new();
        resp::command(&mut expected, &[b"MULTI"]);
        resp::command(&mut expected, &[b"GET", b"ns:a"]);
        resp::command(&mut expected, &[b"PTTL", b"ns:a"]);
        resp::command(&mut expected, &[b"GET", b"ns:b"]);
        resp::command(&mut expected, &[b"PTTL", b"ns:b"]);
        resp::command(&mut expected, &[b"EXEC"]);
        assert_eq!(bytes, expected);
        assert_eq!(
            output.unwrap(),
            vec![
                Some((
                    Bytes::from_static(b"a"),
                    Remaining::After(Duration::from_secs(1))
                )),
                None
            ]
        );
        assert!(matches!(
            commands.get_many_with_ttl(&["a", "bad key"]),
            Err(CacheError::InvalidKey { .. })
        ));
        let (_, pttl_output) = run(
            commands.remaining_ttl("a").unwrap(),
            vec![Value::Integer(-1)],
        );
        assert_eq!(pttl_output.unwrap(), Some(Remaining::Never));
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
