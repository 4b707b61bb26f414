//! Namespace generations: how a namespaced `clear()` is O(1).
//!
//! Every key of a namespace is `prefix + generation + ":" + key`; `clear()` writes a new random
//! generation, and the old entries become unreachable. The generation lives under a binary key
//! (`0xff` + `generation:` + the prefix, sent base64-encoded): no caller's key, which is UTF-8,
//! can ever be it.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cache_core::{CacheError, Result};
use cache_remote::meta::{self, Code, Key, Reply};
use cache_remote::{Exchange, ReplyLimits, Request, Step};

use crate::keys::{BACKEND, GENERATION_LEN};

/// Rounds of read, seed or replace before a generation lookup gives up (each is bounded by
/// the operation's deadline too).
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
    value: Option<String>,
    fetched: Instant,
    /// Counts this engine's clears. A lookup that began before a clear must not store what it
    /// read after the clear: it may be the generation the clear replaced.
    epoch: u64,
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
                epoch: 0,
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

    /// The cached generation while it is fresh; otherwise the epoch a lookup starts in.
    pub(crate) fn cached(&self) -> std::result::Result<String, u64> {
        let state = self.lock();
        match &state.value {
            Some(value) if state.fetched.elapsed() < self.refresh => Ok(value.clone()),
            _ => Err(state.epoch),
        }
    }

    /// Keeps what a lookup begun in `epoch` read, unless this engine cleared since: then the
    /// clear's generation is newer, and stays.
    pub(crate) fn store(&self, value: &str, epoch: u64) -> String {
        let mut state = self.lock();
        if state.epoch == epoch {
            state.value = Some(value.to_string());
            state.fetched = Instant::now();
            value.to_string()
        } else {
            state.value.clone().unwrap_or_else(|| value.to_string())
        }
    }

    /// Records a generation this engine wrote in `clear()`.
    pub(crate) fn cleared(&self, value: String) {
        let mut state = self.lock();
        state.epoch += 1;
        state.value = Some(value);
        state.fetched = Instant::now();
    }
}

/// A fresh random generation.
pub(crate) fn random_generation() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn is_generation(value: &[u8]) -> bool {
    value.len() == GENERATION_LEN && value.iter().all(u8::is_ascii_hexdigit)
}

/// Reads the generation; seeds a random one when it is missing (evicted, never set) and
/// replaces one this library did not write. Concurrent lookups agree: seeding uses `add` and
/// replacing a compare-and-swap.
#[derive(Debug)]
pub(crate) struct Lookup<'a> {
    generation: &'a Generation,
    limits: ReplyLimits,
    attempts: usize,
    /// The generation being written, while a seed or replacement is in flight.
    writing: Option<String>,
}

impl<'a> Lookup<'a> {
    pub(crate) fn new(generation: &'a Generation, limits: ReplyLimits) -> Self {
        Self {
            generation,
            limits,
            attempts: 0,
            writing: None,
        }
    }

    fn read(&mut self) -> Result<Step<String>> {
        self.attempts += 1;
        if self.attempts > ATTEMPTS {
            return Err(CacheError::Backend {
                backend: BACKEND,
                source: format!(
                    "the namespace generation changed under {ATTEMPTS} lookups in a row"
                )
                .into(),
            });
        }
        self.writing = None;
        let mut bytes = Vec::with_capacity(64);
        meta::push_get(&mut bytes, self.generation.key(), &[b"v", b"c"], 0);
        Ok(Step::Send(Request::new(bytes, 1, self.limits)))
    }

    fn write(&mut self, flags: &[&[u8]]) -> Step<String> {
        let fresh = random_generation();
        let mut bytes = Vec::with_capacity(96);
        let mut all: Vec<&[u8]> = vec![b"T0"];
        all.extend_from_slice(flags);
        meta::push_set(&mut bytes, self.generation.key(), fresh.as_bytes(), &all, 0);
        self.writing = Some(fresh);
        Step::Send(Request::new(bytes, 1, self.limits))
    }
}

impl Exchange<Reply> for Lookup<'_> {
    type Output = String;

    fn start(&mut self) -> Result<Step<String>> {
        self.read()
    }

    fn next(&mut self, replies: Vec<Reply>) -> Result<Step<String>> {
        let reply = replies.into_iter().next();
        if let Some(written) = self.writing.take() {
            return match reply {
                Some(Reply::Status { code: Code::Hd, .. }) => Ok(Step::Done(written)),
                // Another engine seeded or replaced it first: read theirs.
                Some(Reply::Status {
                    code: Code::Ns | Code::Ex | Code::Nf,
                    ..
                }) => self.read(),
                other => Err(unexpected(other)),
            };
        }
        match reply {
            Some(Reply::Value { data, flags }) => {
                if is_generation(&data) {
                    return Ok(Step::Done(String::from_utf8_lossy(&data).into_owned()));
                }
                // Not a generation this library wrote: replace it, unless someone else does
                // first. Forgetting the namespace's entries is a safe reading of garbage.
                let cas = flags.number(b'c').unwrap_or(0);
                let cas = meta::flag(b'C', cas);
                Ok(self.write(&[&cas]))
            }
            Some(Reply::Status { code: Code::En, .. }) => {
                // Missing: seed a random one with `add`, so concurrent seeders agree; random, so
                // an evicted generation can never make cleared entries visible again.
                Ok(self.write(&[b"ME"]))
            }
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: Option<Reply>) -> CacheError {
    CacheError::Backend {
        backend: BACKEND,
        source: format!("unexpected reply to a generation lookup: {reply:?}").into(),
    }
}

/// An operation that needs the namespace's generation: it runs the lookup first when the
/// cached one is stale, on the same connection and within the same deadline.
pub(crate) struct WithGeneration<'a, F, E> {
    generation: Option<&'a Generation>,
    /// The generation, when it was cached and fresh as the exchange was made.
    known: Option<String>,
    lookup: Option<(Lookup<'a>, u64)>,
    build: Option<F>,
    inner: Option<E>,
}

/// Runs the exchange `build` makes from the generation (`None` without a namespace).
pub(crate) fn with_generation<'a, F, E>(
    generation: Option<&'a Generation>,
    limits: ReplyLimits,
    build: F,
) -> WithGeneration<'a, F, E>
where
    F: FnOnce(Option<&str>) -> E + Send,
    E: Exchange<Reply>,
{
    let (known, lookup) = match generation.map(Generation::cached) {
        None => (None, None),
        Some(Ok(value)) => (Some(value), None),
        Some(Err(epoch)) => (None, generation.map(|g| (Lookup::new(g, limits), epoch))),
    };
    WithGeneration {
        generation,
        known,
        lookup,
        build: Some(build),
        inner: None,
    }
}

impl<F, E> WithGeneration<'_, F, E>
where
    F: FnOnce(Option<&str>) -> E + Send,
    E: Exchange<Reply>,
{
    fn begin(&mut self, generation: Option<String>) -> Result<Step<E::Output>> {
        let Some(build) = self.build.take() else {
            return Err(CacheError::invalid_config("an exchange was started twice"));
        };
        let inner = self.inner.insert(build(generation.as_deref()));
        inner.start()
    }
}

impl<F, E> Exchange<Reply> for WithGeneration<'_, F, E>
where
    F: FnOnce(Option<&str>) -> E + Send,
    E: Exchange<Reply>,
{
    type Output = E::Output;

    fn start(&mut self) -> Result<Step<E::Output>> {
        match self.lookup.as_mut() {
            Some((lookup, _)) => match lookup.start()? {
                Step::Send(request) => Ok(Step::Send(request)),
                Step::Done(value) => self.begin(Some(value)),
            },
            None => {
                let known = self.known.take();
                self.begin(known)
            }
        }
    }

    fn next(&mut self, replies: Vec<Reply>) -> Result<Step<E::Output>> {
        if let Some(inner) = self.inner.as_mut() {
            return inner.next(replies);
        }
        let Some((lookup, epoch)) = self.lookup.as_mut() else {
            return Err(CacheError::invalid_config(
                "an exchange was resumed before it started",
            ));
        };
        match lookup.next(replies)? {
            Step::Send(request) => Ok(Step::Send(request)),
            Step::Done(value) => {
                let epoch = *epoch;
                let kept = match self.generation {
                    Some(g) => g.store(&value, epoch),
                    None => value,
                };
                self.lookup = None;
                self.begin(Some(kept))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_begun_before_a_clear_never_replaces_its_generation() {
        let generation = Generation::new("ns:", Duration::from_secs(60));
        let Err(epoch) = generation.cached() else {
            panic!("nothing cached yet");
        };
        generation.cleared("bbbbbbbbbbbbbbbb".into());
        assert_eq!(
            generation.store("aaaaaaaaaaaaaaaa", epoch),
            "bbbbbbbbbbbbbbbb"
        );
        assert_eq!(
            generation.cached().ok().as_deref(),
            Some("bbbbbbbbbbbbbbbb")
        );
    }

    #[test]
    fn generations_are_fixed_width_hex() {
        let a = random_generation();
        assert!(is_generation(a.as_bytes()), "{a}");
        assert_ne!(a, random_generation());
        assert!(!is_generation(b"hello"));
    }
}
