//! Namespace generations: how a namespaced `clear()` is O(1), on one server or many.
//!
//! Every key of a namespace is `prefix + generation + ":" + key`; `clear()` moves the namespace
//! to a new generation, and the old entries become unreachable (they expire or are evicted). The
//! generation lives under a binary key (`0xff` + `generation:` + the prefix, sent
//! base64-encoded), which no caller's key, being UTF-8, can ever be.
//!
//! **Generations are ordered** (a `u64`, written as 16 hex digits) and **kept on every server**
//! of the engine: a server that was out while a `clear()` happened, or that lost the key, holds
//! an older generation or none, and the newest one wins. A lookup reads every server in the
//! ring, takes the largest, and raises the servers that are behind (by compare-and-swap, so a
//! lookup never lowers what a concurrent `clear()` wrote). A new generation is always larger
//! than every generation the engine has seen: its first bits are the time in milliseconds, and
//! a `clear()` or a lost generation moves past the largest known.
//!
//! **A lost generation is never reused.** When every server has lost the key (evicted, or the
//! servers restarted) while this engine still knows a generation, the namespace moves to a new
//! one, as if cleared: entries of the old generation that survived elsewhere are never read
//! again.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_core::{CacheError, Result};
use cache_remote::{Exchange, ReplyLimits, Request, Step};

use crate::keys::{BACKEND, GENERATION_LEN};
use crate::meta::{self, Code, Key, Reply};

/// Rounds of read and compare-and-swap before raising a server's generation gives up (each is
/// bounded by the operation's deadline too).
const ATTEMPTS: usize = 8;

/// A namespace's generation, as one engine knows it.
#[derive(Debug)]
pub(crate) struct Generation {
    key: Vec<u8>,
    refresh: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    value: Option<u64>,
    fetched: Instant,
}

impl Generation {
    pub(crate) fn new(prefix: &str, refresh: Duration) -> Self {
        let mut key = b"\xffgeneration:".to_vec();
        key.extend_from_slice(prefix.as_bytes());
        Self {
            key,
            refresh,
            state: Mutex::new(State {
                value: None,
                fetched: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key the generation is stored under.
    pub(crate) fn key(&self) -> Key<'_> {
        Key::Binary(&self.key)
    }

    /// The generation, while the one cached is fresh.
    pub(crate) fn fresh(&self) -> Option<u64> {
        let state = self.lock();
        state
            .value
            .filter(|_| state.fetched.elapsed() < self.refresh)
    }

    /// The generation cached, fresh or not.
    pub(crate) fn known(&self) -> Option<u64> {
        self.lock().value
    }

    /// Keeps `value` read from the servers (or written by this engine), unless a larger one is
    /// known: the generation this engine uses never moves back. Returns the one kept.
    pub(crate) fn store(&self, value: u64) -> u64 {
        let mut state = self.lock();
        let kept = state.value.map_or(value, |known| known.max(value));
        state.value = Some(kept);
        state.fetched = Instant::now();
        kept
    }
}

/// A generation larger than `above` (if any) and than every one made before now: the time in
/// milliseconds in its first 44 bits, then 20 random bits.
pub(crate) fn next_generation(above: Option<u64>) -> u64 {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX >> 20)
    });
    let random = rand::random::<u64>() & 0xf_ffff;
    let seed = (millis << 20) | random;
    match above {
        Some(above) => seed.max(above.saturating_add(1 + random)),
        None => seed,
    }
}

/// The wire form of a generation: 16 hex digits.
pub(crate) fn format_generation(value: u64) -> String {
    format!("{value:016x}")
}

fn parse_generation(value: &[u8]) -> Option<u64> {
    if value.len() != GENERATION_LEN || !value.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(value).ok()?, 16).ok()
}

/// What one server holds under the generation key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    /// Nothing.
    Missing,
    /// A value this library did not write, with its CAS token.
    Garbage,
    /// A generation.
    Generation(u64),
}

impl Held {
    pub(crate) fn generation(self) -> Option<u64> {
        match self {
            Self::Generation(value) => Some(value),
            Self::Missing | Self::Garbage => None,
        }
    }
}

/// Reads one server's generation.
#[derive(Debug)]
pub(crate) struct Read<'a> {
    generation: &'a Generation,
    limits: ReplyLimits,
    sent: bool,
}

impl<'a> Read<'a> {
    pub(crate) fn new(generation: &'a Generation, limits: ReplyLimits) -> Self {
        Self {
            generation,
            limits,
            sent: false,
        }
    }
}

fn read_request(generation: &Generation, limits: ReplyLimits) -> Request {
    let mut bytes = Vec::with_capacity(64);
    meta::push_get(&mut bytes, generation.key(), &[b"v", b"c"], 0);
    Request::new(bytes, 1, limits)
}

/// What a read's reply says, with the CAS token of a held value.
fn held(reply: Option<Reply>) -> Result<(Held, Option<i64>)> {
    match reply {
        Some(Reply::Value { data, flags }) => {
            let cas = flags.number(b'c');
            Ok(match parse_generation(&data) {
                Some(value) => (Held::Generation(value), cas),
                None => (Held::Garbage, cas),
            })
        }
        Some(Reply::Status { code: Code::En, .. }) => Ok((Held::Missing, None)),
        other => Err(unexpected(other)),
    }
}

impl Exchange<Reply> for Read<'_> {
    type Output = Held;

    fn start(&mut self) -> Result<Step<Held>> {
        if self.sent {
            return Err(CacheError::invalid_config("an exchange was started twice"));
        }
        self.sent = true;
        Ok(Step::Send(read_request(self.generation, self.limits)))
    }

    fn next(&mut self, replies: Vec<Reply>) -> Result<Step<Held>> {
        held(replies.into_iter().next()).map(|(held, _)| Step::Done(held))
    }
}

/// Makes sure one server holds a generation of at least `floor`: writes `target` where there
/// is none (with `add`), or where the one held is smaller than `floor` or not one this library
/// wrote (by compare-and-swap), and leaves any other. Its result is what the server holds
/// afterwards.
///
/// A seed (the namespace has no generation yet) has a floor of 0: concurrent seeders then keep
/// whichever seed reached each server first, and agree. A `clear()` has `floor == target`: it
/// moves every server past what it held, never lowering a concurrent, larger one.
#[derive(Debug)]
pub(crate) struct Raise<'a> {
    generation: &'a Generation,
    floor: u64,
    target: u64,
    limits: ReplyLimits,
    attempts: usize,
    writing: bool,
}

impl<'a> Raise<'a> {
    pub(crate) fn new(
        generation: &'a Generation,
        floor: u64,
        target: u64,
        limits: ReplyLimits,
    ) -> Self {
        Self {
            generation,
            floor,
            target,
            limits,
            attempts: 0,
            writing: false,
        }
    }

    fn read(&mut self) -> Result<Step<u64>> {
        self.attempts += 1;
        if self.attempts > ATTEMPTS {
            return Err(CacheError::Backend {
                backend: BACKEND,
                source: format!(
                    "the namespace generation changed under {ATTEMPTS} updates in a row"
                )
                .into(),
            });
        }
        self.writing = false;
        Ok(Step::Send(read_request(self.generation, self.limits)))
    }

    fn write(&mut self, mode: &[u8]) -> Step<u64> {
        let value = format_generation(self.target);
        let mut bytes = Vec::with_capacity(96);
        meta::push_set(
            &mut bytes,
            self.generation.key(),
            value.as_bytes(),
            &[b"T0", mode],
            0,
        );
        self.writing = true;
        Step::Send(Request::new(bytes, 1, self.limits))
    }
}

impl Exchange<Reply> for Raise<'_> {
    type Output = u64;

    fn start(&mut self) -> Result<Step<u64>> {
        self.read()
    }

    fn next(&mut self, replies: Vec<Reply>) -> Result<Step<u64>> {
        let reply = replies.into_iter().next();
        if self.writing {
            return match reply {
                Some(Reply::Status { code: Code::Hd, .. }) => Ok(Step::Done(self.target)),
                // Another engine wrote first: look again.
                Some(Reply::Status {
                    code: Code::Ns | Code::Ex | Code::Nf,
                    ..
                }) => self.read(),
                other => Err(unexpected(other)),
            };
        }
        match held(reply)? {
            (Held::Generation(value), _) if value >= self.floor => Ok(Step::Done(value)),
            (Held::Missing, _) => Ok(self.write(b"ME")),
            (Held::Generation(_) | Held::Garbage, Some(cas)) => {
                let cas = meta::flag(b'C', cas);
                Ok(self.write(&cas))
            }
            (Held::Generation(_) | Held::Garbage, None) => Err(unexpected(None)),
        }
    }
}

fn unexpected(reply: Option<Reply>) -> CacheError {
    if let Some(refused) = meta::login_refused(&reply, "a generation lookup") {
        return refused;
    }
    CacheError::Backend {
        backend: BACKEND,
        source: format!("unexpected reply to a generation lookup: {reply:?}").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_an_engine_uses_never_moves_back() {
        let generation = Generation::new("ns:", Duration::from_secs(60));
        assert_eq!(generation.fresh(), None);
        assert_eq!(generation.store(10), 10);
        assert_eq!(generation.store(7), 10);
        assert_eq!(generation.store(12), 12);
        assert_eq!(generation.fresh(), Some(12));
    }

    #[test]
    fn new_generations_are_larger_than_what_they_replace() {
        let a = next_generation(None);
        let b = next_generation(Some(a));
        assert!(b > a);
        assert!(next_generation(Some(u64::MAX - 1)) >= u64::MAX - 1);
        let far = next_generation(Some(a << 2));
        assert!(far > a << 2);
    }

    #[test]
    fn generations_are_fixed_width_hex() {
        let a = next_generation(None);
        let text = format_generation(a);
        assert_eq!(parse_generation(text.as_bytes()), Some(a));
        assert_eq!(parse_generation(format_generation(1).as_bytes()), Some(1));
        assert_eq!(parse_generation(b"hello"), None);
        assert_eq!(parse_generation(b"zzzzzzzzzzzzzzzz"), None);
    }
}
