//! [`MemcachedEngine`].

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_core::counter::{apply_increment, format_counter};
use cache_core::key::{MAX_KEY_LEN, check_key, namespace_prefix};
use cache_core::{
    Bytes, CacheEngine, CacheError, Capabilities, Expiry, KeyDisplay, KeyProblem, Result, Ttl,
};
use memcache::exp::{
    Error as McError, MetaCommand, MetaConnection, MetaOp, MetaResponse, ReturnCode,
};
use sha2::{Digest, Sha256};

use crate::config::{MemcachedEngineBuilder, parse_server};

const BACKEND: &str = "memcached";
/// Above this many seconds memcached reads an expiration as a Unix time.
const RELATIVE_LIMIT: u64 = 30 * 24 * 3600;
/// memcached's clock ticks in whole seconds and TTLs are rounded up to whole seconds, then one
/// second is added: an entry lives at least its TTL and less than 2 s longer.
const TTL_RESOLUTION: Duration = Duration::from_secs(2);
/// Room kept in an item for memcached's header, the key, and the hashed-key envelope.
const ITEM_OVERHEAD: usize = 512;
/// Client flag: the value starts with the original key (the wire key is a hash).
const FLAG_HASHED: u32 = 1;
/// Width of a namespace generation: 16 hex digits.
const GENERATION_LEN: usize = 16;
/// Attempts of the compare-and-swap loop of `increment` before giving up.
const CAS_ATTEMPTS: usize = 1_000;

/// A cache engine on a memcached server.
///
/// Cloning shares the connections; [`close`](CacheEngine::close) closes the engine for every
/// clone. See the [crate docs](crate) for servers, defaults, TTLs and namespaces.
#[derive(Clone)]
pub struct MemcachedEngine {
    inner: Arc<Inner>,
}

struct Inner {
    address: String,
    namespace: Option<String>,
    /// `escaped-namespace:` (empty without a namespace).
    ns_prefix: String,
    /// Bytes every key gets in front: the namespace prefix plus `generation:`.
    prefix_len: usize,
    generation: Option<Generation>,
    default_ttl: Ttl,
    timeout: Duration,
    connect_timeout: Duration,
    pool_size: usize,
    max_value_size: usize,
    hash_keys: bool,
    idle: Mutex<Vec<MetaConnection>>,
    closed: AtomicBool,
}

struct Generation {
    key: String,
    refresh: Duration,
    cached: Mutex<Option<(String, Instant)>>,
}

/// Whether an operation may run again on a fresh connection when the request may have reached
/// the server (a dead pooled connection noticed only after writing).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Idempotent,
    Once,
}

/// A key as it goes on the wire.
struct WireKey {
    key: String,
    /// The original key, when the wire key is its hash.
    hashed_from: Option<String>,
}

impl MemcachedEngineBuilder {
    /// Builds the engine. No connection is opened until the first operation (see
    /// [`MemcachedEngine::ping`]).
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a bad server address, several servers, an invalid namespace, zero
    /// timeouts, an item limit too small, or a zero or out-of-range default TTL.
    pub fn build(self) -> Result<MemcachedEngine> {
        let address = match self.servers.as_slice() {
            [one] => parse_server(one)?,
            [] => return Err(CacheError::invalid_config("no memcached server given")),
            _ => {
                return Err(CacheError::invalid_config(
                    "several memcached servers are not supported yet; give one",
                ));
            }
        };
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(CacheError::invalid_config(
                "timeouts must be longer than zero",
            ));
        }
        if self.item_size_limit <= ITEM_OVERHEAD {
            return Err(CacheError::invalid_config(format!(
                "item_size_limit must be more than {ITEM_OVERHEAD} bytes"
            )));
        }
        if matches!(self.default_ttl.resolve(Ttl::Default), Expiry::Now) {
            return Err(CacheError::invalid_config("default_ttl must not be zero"));
        }
        let (ns_prefix, generation) = match &self.namespace {
            Some(ns) => {
                let prefix = namespace_prefix(ns)?;
                let generation = Generation {
                    // Data keys are `prefix` + 16 hex digits + `:`; this one cannot be one.
                    key: format!("{prefix}generation"),
                    refresh: self.generation_refresh,
                    cached: Mutex::new(None),
                };
                (prefix, Some(generation))
            }
            None => (String::new(), None),
        };
        let prefix_len = ns_prefix.len()
            + if generation.is_some() {
                GENERATION_LEN + 1
            } else {
                0
            };
        let engine = MemcachedEngine {
            inner: Arc::new(Inner {
                address,
                namespace: self.namespace,
                ns_prefix,
                prefix_len,
                generation,
                default_ttl: self.default_ttl,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
                pool_size: self.pool_size,
                max_value_size: self.item_size_limit - ITEM_OVERHEAD,
                hash_keys: self.hash_keys,
                idle: Mutex::new(Vec::new()),
                closed: AtomicBool::new(false),
            }),
        };
        // Refuse a default TTL memcached cannot represent now rather than at every write.
        engine
            .exptime(Ttl::Default)
            .map_err(|e| CacheError::invalid_config(e.to_string()))?;
        Ok(engine)
    }
}

impl MemcachedEngine {
    /// An engine for `127.0.0.1:11211` with every default; no connection is opened until the
    /// first operation.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default settings are valid"))
    }

    /// Builds an engine for `server` with the other defaults and checks that it answers.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a bad address; `Connection` or `Timeout` when the server cannot be
    /// reached (within the connect timeout, 1 s by default).
    pub fn connect(server: &str) -> Result<Self> {
        let engine = Self::builder().server(server).build()?;
        engine.ping()?;
        Ok(engine)
    }

    /// An engine configured from the environment (see the crate docs); no connection is opened.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a variable that cannot be parsed, or as
    /// [`MemcachedEngineBuilder::build`].
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// A builder with every default.
    pub fn builder() -> MemcachedEngineBuilder {
        MemcachedEngineBuilder::default()
    }

    /// Checks that the server answers (a meta no-op).
    ///
    /// # Errors
    ///
    /// `Connection`, `Timeout`, `Closed`.
    pub fn ping(&self) -> Result<()> {
        self.run("ping", Retry::Idempotent, |c| {
            c.execute(&MetaCommand::new(MetaOp::Noop, Vec::new()))
        })
        .map(drop)
    }

    /// The namespace, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.inner.namespace.as_deref()
    }

    // ---- keys, values and TTLs -------------------------------------------------------------

    /// Checks `key` (before any I/O) and builds its wire form.
    fn wire_key(&self, key: &str) -> Result<WireKey> {
        let inner = &*self.inner;
        let (stored, hashed_from) = match check_key(key, inner.prefix_len) {
            Ok(()) => (None, None),
            Err(e) if inner.hash_keys && !key.is_empty() => {
                drop(e);
                let digest = Sha256::digest(key.as_bytes());
                let mut hashed = String::with_capacity(65);
                hashed.push('#');
                for byte in digest {
                    hashed.push_str(&format!("{byte:02x}"));
                }
                (Some(hashed), Some(key.to_string()))
            }
            Err(e) => return Err(e),
        };
        let generation = self.generation()?;
        let mut full = String::with_capacity(inner.prefix_len + key.len().min(70));
        full.push_str(&inner.ns_prefix);
        if let Some(generation) = generation {
            full.push_str(&generation);
            full.push(':');
        }
        full.push_str(stored.as_deref().unwrap_or(key));
        Ok(WireKey {
            key: full,
            hashed_from,
        })
    }

    /// Checks every key before any I/O, then builds the wire forms.
    fn wire_keys(&self, keys: &[&str]) -> Result<Vec<WireKey>> {
        for key in keys {
            self.check_only(key)?;
        }
        keys.iter().map(|k| self.wire_key(k)).collect()
    }

    fn check_only(&self, key: &str) -> Result<()> {
        match check_key(key, self.inner.prefix_len) {
            Err(_) if self.inner.hash_keys && !key.is_empty() => Ok(()),
            other => other,
        }
    }

    /// The stored payload and client flags for `value` under `key`.
    fn payload(&self, key: &WireKey, user_key: &str, value: &[u8]) -> Result<(Vec<u8>, u32)> {
        let mut payload = Vec::new();
        let flags = match &key.hashed_from {
            Some(original) => {
                let len = u32::try_from(original.len()).map_err(|_| {
                    CacheError::invalid_key(
                        user_key,
                        KeyProblem::TooLong {
                            len: original.len(),
                            max: u32::MAX as usize,
                        },
                    )
                })?;
                payload.reserve(4 + original.len() + value.len());
                payload.extend_from_slice(&len.to_be_bytes());
                payload.extend_from_slice(original.as_bytes());
                FLAG_HASHED
            }
            None => 0,
        };
        payload.extend_from_slice(value);
        if payload.len() > self.inner.max_value_size {
            return Err(CacheError::ValueTooLarge {
                backend: BACKEND,
                key: KeyDisplay::new(user_key),
                size: value.len(),
                limit: self
                    .inner
                    .max_value_size
                    .saturating_sub(payload.len() - value.len()),
            });
        }
        Ok((payload, flags))
    }

    /// The user's value from a stored payload; `None` when it belongs to another key (a hash
    /// collision) or is malformed.
    fn unwrap_payload(key: &WireKey, response: MetaResponse) -> Option<Bytes> {
        let flags = flag_number(&response, b'f').unwrap_or(0);
        let value = response.into_value()?;
        let hashed = u32::try_from(flags).unwrap_or(0) & FLAG_HASHED != 0;
        match (&key.hashed_from, hashed) {
            (None, false) => Some(Bytes::from(value)),
            (Some(original), true) => {
                let (len, rest) = value.split_first_chunk::<4>()?;
                let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
                if rest.len() < len || &rest[..len] != original.as_bytes() {
                    return None;
                }
                Some(Bytes::copy_from_slice(&rest[len..]))
            }
            _ => None,
        }
    }

    /// memcached's expiration for `ttl`: `None` when nothing is kept, `Some(0)` for never.
    fn exptime(&self, ttl: Ttl) -> Result<Option<u32>> {
        match ttl.resolve(self.inner.default_ttl) {
            Expiry::Never => Ok(Some(0)),
            Expiry::Now => Ok(None),
            Expiry::After(d) => {
                let secs = cache_core::ttl::ceil_secs(d).and_then(|s| s.checked_add(1));
                match secs.and_then(expiration_for_secs) {
                    Some(exp) => Ok(Some(exp)),
                    None => Err(CacheError::InvalidTtl {
                        backend: BACKEND,
                        ttl: d,
                        max: max_ttl(),
                    }),
                }
            }
        }
    }

    // ---- namespace generation --------------------------------------------------------------

    /// The namespace's current generation (16 hex digits), read from the server at most once
    /// per `generation_refresh`.
    fn generation(&self) -> Result<Option<String>> {
        let Some(generation) = &self.inner.generation else {
            return Ok(None);
        };
        if let Some((value, at)) = lock(&generation.cached).as_ref() {
            if at.elapsed() < generation.refresh {
                return Ok(Some(value.clone()));
            }
        }
        let value = self.run("generation", Retry::Idempotent, |c| {
            loop {
                let read =
                    c.execute(&MetaCommand::new(MetaOp::Get, generation.key.as_bytes()).flag("v"))?;
                if let Some(value) = read.value().filter(|v| is_generation(v)) {
                    return Ok(String::from_utf8_lossy(value).into_owned());
                }
                // Missing (never set, or evicted): seed a random one. `add` so that concurrent
                // seeders agree on one; a random seed means an evicted generation can never
                // make cleared entries visible again.
                let seed = random_generation();
                let added = c.execute(
                    &MetaCommand::new(MetaOp::Set, generation.key.as_bytes())
                        .flag("T0")
                        .flag("ME")
                        .value(seed.as_bytes()),
                )?;
                if added.rc() == ReturnCode::Hd {
                    return Ok(seed);
                }
            }
        })?;
        *lock(&generation.cached) = Some((value.clone(), Instant::now()));
        Ok(Some(value))
    }

    // ---- connections -----------------------------------------------------------------------

    fn connect_one(&self) -> Result<MetaConnection> {
        let inner = &*self.inner;
        let unreachable = |source: Option<std::io::Error>| CacheError::Connection {
            backend: BACKEND,
            address: inner.address.clone(),
            source: source.map(|e| Box::new(e) as cache_core::BoxError),
        };
        let addrs: Vec<SocketAddr> = inner
            .address
            .to_socket_addrs()
            .map_err(|e| unreachable(Some(e)))?
            .collect();
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, inner.connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(|e| unreachable(Some(e)))?;
                    let mut conn = MetaConnection::from_stream(stream);
                    conn.set_io_timeout(Some(inner.timeout));
                    return Ok(conn);
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(CacheError::Timeout {
                        backend: BACKEND,
                        address: inner.address.clone(),
                        after: inner.connect_timeout,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(unreachable(last))
    }

    fn idle(&self) -> MutexGuard<'_, Vec<MetaConnection>> {
        lock(&self.inner.idle)
    }

    /// Runs `op` on a pooled connection. A connection that saw a transport or protocol error is
    /// dropped, never reused. When a pooled connection turns out dead (the server restarted while
    /// it sat idle), the other idle ones are dropped too, and the operation runs once more on a
    /// fresh connection if the request surely did not reach the server, or if running it twice
    /// is harmless.
    fn run<T>(
        &self,
        operation: &'static str,
        retry: Retry,
        mut op: impl FnMut(&mut MetaConnection) -> std::result::Result<T, McError>,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(CacheError::Closed { backend: BACKEND });
            }
            let pooled = self.idle().pop();
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => self.connect_one()?,
            };
            match op(&mut conn) {
                Ok(value) => {
                    self.checkin(conn);
                    return Ok(value);
                }
                Err(e) => {
                    let keep = matches!(e, McError::Server(_));
                    let timed_out = is_timeout(&e);
                    let retryable = e.is_retryable() || retry == Retry::Idempotent;
                    let error = self.error(e, operation);
                    if keep {
                        self.checkin(conn);
                        return Err(error);
                    }
                    drop(conn);
                    let dead_while_idle = reused && !timed_out && error.is_transient();
                    if dead_while_idle {
                        self.idle().clear();
                    }
                    if !(dead_while_idle && retryable && attempt == 1) {
                        return Err(error);
                    }
                }
            }
        }
    }

    fn checkin(&self, conn: MetaConnection) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < self.inner.pool_size {
            idle.push(conn);
        }
    }

    fn error(&self, e: McError, operation: &'static str) -> CacheError {
        let address = self.inner.address.clone();
        if is_timeout(&e) {
            return CacheError::Timeout {
                backend: BACKEND,
                address,
                after: self.inner.timeout,
            };
        }
        match e {
            McError::Io(io) => CacheError::Connection {
                backend: BACKEND,
                address,
                source: Some(Box::new(io)),
            },
            McError::Ambiguous { source, .. } => match *source {
                McError::Io(io) => CacheError::Connection {
                    backend: BACKEND,
                    address,
                    source: Some(Box::new(io)),
                },
                other => CacheError::Backend {
                    backend: BACKEND,
                    source: Box::new(other),
                },
            },
            other => {
                let _ = operation;
                CacheError::Backend {
                    backend: BACKEND,
                    source: Box::new(other),
                }
            }
        }
    }

    fn unexpected(response: &MetaResponse, operation: &str) -> CacheError {
        CacheError::Backend {
            backend: BACKEND,
            source: format!("unexpected reply {:?} to {operation}", response.rc()).into(),
        }
    }

    fn set_command(key: &WireKey, payload: Vec<u8>, flags: u32, exptime: u32) -> MetaCommand {
        let mut cmd = MetaCommand::new(MetaOp::Set, key.key.as_bytes()).flag(format!("T{exptime}"));
        if flags != 0 {
            cmd = cmd.flag(format!("F{flags}"));
        }
        cmd.value(payload)
    }

    fn flush_all(&self) -> Result<()> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(CacheError::Closed { backend: BACKEND });
        }
        let io = |e: std::io::Error| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            ) {
                CacheError::Timeout {
                    backend: BACKEND,
                    address: inner.address.clone(),
                    after: inner.timeout,
                }
            } else {
                CacheError::Connection {
                    backend: BACKEND,
                    address: inner.address.clone(),
                    source: Some(Box::new(e)),
                }
            }
        };
        let addr = inner
            .address
            .to_socket_addrs()
            .map_err(io)?
            .next()
            .ok_or_else(|| io(std::io::Error::other("no address")))?;
        let mut stream = TcpStream::connect_timeout(&addr, inner.connect_timeout).map_err(io)?;
        stream.set_read_timeout(Some(inner.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(inner.timeout)).map_err(io)?;
        stream.write_all(b"flush_all\r\n").map_err(io)?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).map_err(io)?;
        if line.trim_end() == "OK" {
            Ok(())
        } else {
            Err(CacheError::Backend {
                backend: BACKEND,
                source: format!("flush_all answered {line:?}").into(),
            })
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_timeout(e: &McError) -> bool {
    match e {
        McError::Timeout { .. } => true,
        McError::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        McError::Ambiguous { source, .. } => is_timeout(source),
        _ => false,
    }
}

/// A numeric response flag such as `f5` or `c123`.
fn flag_number(response: &MetaResponse, letter: u8) -> Option<i64> {
    response
        .flags()
        .find(|f| f.first() == Some(&letter))
        .and_then(|f| std::str::from_utf8(&f[1..]).ok())
        .and_then(|n| n.parse().ok())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// memcached's expiration for `secs` seconds from now: relative up to 30 days, a Unix time
/// beyond; `None` when it does not fit memcached's expiration, a signed 32-bit number (a larger
/// one was read as negative: already expired).
fn expiration_for_secs(secs: u64) -> Option<u32> {
    let exptime = if secs <= RELATIVE_LIMIT {
        secs
    } else {
        now_unix().checked_add(secs)?
    };
    u32::try_from(exptime)
        .ok()
        .filter(|e| *e <= i32::MAX as u32)
}

/// The longest TTL memcached can represent now: until its signed 32-bit Unix time runs out in
/// January 2038.
fn max_ttl() -> Duration {
    Duration::from_secs(
        (i32::MAX as u64)
            .saturating_sub(now_unix())
            .saturating_sub(2),
    )
}

fn is_generation(value: &[u8]) -> bool {
    value.len() == GENERATION_LEN && value.iter().all(u8::is_ascii_hexdigit)
}

fn random_generation() -> String {
    // RandomState is seeded from the OS's randomness; mixing in the time keeps seeds distinct
    // across processes that start at once.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

impl Default for MemcachedEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemcachedEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        f.debug_struct("MemcachedEngine")
            .field("server", &inner.address)
            .field("namespace", &inner.namespace)
            .field("default_ttl", &inner.default_ttl)
            .field("timeout", &inner.timeout)
            .field("connect_timeout", &inner.connect_timeout)
            .field("pool_size", &inner.pool_size)
            .field("hash_keys", &inner.hash_keys)
            .field("closed", &inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl CacheEngine for MemcachedEngine {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let wire = self.wire_key(key)?;
        let response = self.run("get", Retry::Idempotent, |c| {
            c.execute(
                &MetaCommand::new(MetaOp::Get, wire.key.as_bytes())
                    .flag("v")
                    .flag("f"),
            )
        })?;
        Ok(match response.rc() {
            ReturnCode::Va => Self::unwrap_payload(&wire, response),
            _ => None,
        })
    }

    fn set(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<()> {
        let exptime = self.exptime(ttl)?;
        let wire = self.wire_key(key)?;
        let (payload, flags) = self.payload(&wire, key, &value)?;
        let Some(exptime) = exptime else {
            self.run("delete", Retry::Idempotent, |c| {
                c.execute(&MetaCommand::new(MetaOp::Delete, wire.key.as_bytes()))
            })?;
            return Ok(());
        };
        let command = Self::set_command(&wire, payload, flags, exptime);
        let response = self.run("set", Retry::Idempotent, |c| c.execute(&command))?;
        match response.rc() {
            ReturnCode::Hd => Ok(()),
            _ => Err(Self::unexpected(&response, "set")),
        }
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let wire = self.wire_key(key)?;
        if wire.hashed_from.is_some() && self.get(key)?.is_none() {
            return Ok(false);
        }
        let response = self.run("delete", Retry::Once, |c| {
            c.execute(&MetaCommand::new(MetaOp::Delete, wire.key.as_bytes()))
        })?;
        Ok(response.rc() == ReturnCode::Hd)
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let wire = self.wire_key(key)?;
        if wire.hashed_from.is_some() {
            return Ok(self.get(key)?.is_some());
        }
        let response = self.run("exists", Retry::Idempotent, |c| {
            c.execute(&MetaCommand::new(MetaOp::Get, wire.key.as_bytes()))
        })?;
        Ok(response.rc() == ReturnCode::Hd)
    }

    fn clear(&self) -> Result<()> {
        let Some(generation) = &self.inner.generation else {
            return self.flush_all();
        };
        let fresh = random_generation();
        let response = self.run("clear", Retry::Idempotent, |c| {
            c.execute(
                &MetaCommand::new(MetaOp::Set, generation.key.as_bytes())
                    .flag("T0")
                    .value(fresh.as_bytes()),
            )
        })?;
        if response.rc() != ReturnCode::Hd {
            return Err(Self::unexpected(&response, "clear"));
        }
        *lock(&generation.cached) = Some((fresh, Instant::now()));
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        self.idle().clear();
        Ok(())
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let wires = self.wire_keys(keys)?;
        if wires.is_empty() {
            return Ok(Vec::new());
        }
        let commands: Vec<MetaCommand> = wires
            .iter()
            .map(|w| {
                MetaCommand::new(MetaOp::Get, w.key.as_bytes())
                    .flag("v")
                    .flag("f")
            })
            .collect();
        let responses = self.run("get_many", Retry::Idempotent, |c| {
            c.execute_batch(&commands)
        })?;
        Ok(wires
            .iter()
            .zip(responses)
            .map(|(w, r)| {
                if r.rc() == ReturnCode::Va {
                    Self::unwrap_payload(w, r)
                } else {
                    None
                }
            })
            .collect())
    }

    fn set_many(&self, entries: &[(&str, Bytes)], ttl: Ttl) -> Result<()> {
        let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        let exptime = self.exptime(ttl)?;
        let wires = self.wire_keys(&keys)?;
        let mut commands = Vec::with_capacity(entries.len());
        for (wire, (key, value)) in wires.iter().zip(entries) {
            let (payload, flags) = self.payload(wire, key, value)?;
            commands.push(match exptime {
                Some(exptime) => Self::set_command(wire, payload, flags, exptime),
                None => MetaCommand::new(MetaOp::Delete, wire.key.as_bytes()),
            });
        }
        if commands.is_empty() {
            return Ok(());
        }
        let responses = self.run("set_many", Retry::Idempotent, |c| {
            c.execute_batch(&commands)
        })?;
        match responses
            .iter()
            .find(|r| exptime.is_some() && r.rc() != ReturnCode::Hd)
        {
            Some(r) => Err(Self::unexpected(r, "set_many")),
            None => Ok(()),
        }
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let wires = self.wire_keys(keys)?;
        let mut removed = 0;
        let mut plain = Vec::new();
        for (wire, key) in wires.iter().zip(keys) {
            if wire.hashed_from.is_some() {
                removed += u64::from(self.delete(key)?);
            } else {
                plain.push(MetaCommand::new(MetaOp::Delete, wire.key.as_bytes()));
            }
        }
        if !plain.is_empty() {
            let responses = self.run("delete_many", Retry::Once, |c| c.execute_batch(&plain))?;
            removed += responses
                .iter()
                .filter(|r| r.rc() == ReturnCode::Hd)
                .count() as u64;
        }
        Ok(removed)
    }

    fn add(&self, key: &str, value: Bytes, ttl: Ttl) -> Result<bool> {
        let exptime = self.exptime(ttl)?;
        let wire = self.wire_key(key)?;
        let (payload, flags) = self.payload(&wire, key, &value)?;
        let Some(exptime) = exptime else {
            return Ok(!self.exists(key)?);
        };
        let command = Self::set_command(&wire, payload, flags, exptime).flag("ME");
        let response = self.run("add", Retry::Once, |c| c.execute(&command))?;
        match response.rc() {
            ReturnCode::Hd => Ok(true),
            ReturnCode::Ns => Ok(false),
            _ => Err(Self::unexpected(&response, "add")),
        }
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64> {
        // memcached's own `incr` is unsigned and stops at zero: emulate Redis's signed
        // arithmetic exactly with a compare-and-swap loop that keeps the remaining TTL.
        let wire = self.wire_key(key)?;
        for _ in 0..CAS_ATTEMPTS {
            let read = self.run("increment", Retry::Idempotent, |c| {
                c.execute(
                    &MetaCommand::new(MetaOp::Get, wire.key.as_bytes())
                        .flag("v")
                        .flag("f")
                        .flag("c")
                        .flag("t"),
                )
            })?;
            let (current, cas, remaining) = match read.rc() {
                ReturnCode::Va => {
                    let cas = flag_number(&read, b'c');
                    let remaining = flag_number(&read, b't');
                    match Self::unwrap_payload(&wire, read) {
                        Some(value) => (Some(value), cas, remaining),
                        // A colliding key under the same hash: treat as taken by another key.
                        None => {
                            return Err(CacheError::NotANumber {
                                key: KeyDisplay::new(key),
                            });
                        }
                    }
                }
                _ => (None, None, None),
            };
            let next = apply_increment(key, current.as_deref(), delta)?;
            let (payload, flags) = self.payload(&wire, key, &format_counter(next))?;
            let command = match (current.is_some(), cas) {
                (true, Some(cas)) => {
                    let exptime = match remaining {
                        None | Some(-1) => 0,
                        Some(secs) => expiration_for_secs(u64::try_from(secs.max(1)).unwrap_or(1))
                            .unwrap_or(0),
                    };
                    Self::set_command(&wire, payload, flags, exptime).flag(format!("C{cas}"))
                }
                (true, None) => {
                    return Err(CacheError::Backend {
                        backend: BACKEND,
                        source: "the server sent no CAS value for increment".into(),
                    });
                }
                (false, _) => {
                    let exptime = self.exptime(Ttl::Default)?.unwrap_or(0);
                    Self::set_command(&wire, payload, flags, exptime).flag("ME")
                }
            };
            let written = self.run("increment", Retry::Once, |c| c.execute(&command))?;
            match written.rc() {
                ReturnCode::Hd => return Ok(next),
                // Someone else wrote or created it first: read again.
                ReturnCode::Ex | ReturnCode::Ns | ReturnCode::Nf => continue,
                _ => return Err(Self::unexpected(&written, "increment")),
            }
        }
        Err(CacheError::Backend {
            backend: BACKEND,
            source: format!("increment lost {CAS_ATTEMPTS} compare-and-swap races in a row").into(),
        })
    }

    fn touch(&self, key: &str, ttl: Ttl) -> Result<bool> {
        let exptime = self.exptime(ttl)?;
        let wire = self.wire_key(key)?;
        let Some(exptime) = exptime else {
            return self.delete(key);
        };
        if wire.hashed_from.is_some() && self.get(key)?.is_none() {
            return Ok(false);
        }
        let response = self.run("touch", Retry::Idempotent, |c| {
            c.execute(
                &MetaCommand::new(MetaOp::Get, wire.key.as_bytes()).flag(format!("T{exptime}")),
            )
        })?;
        Ok(response.rc() == ReturnCode::Hd)
    }

    fn capabilities(&self) -> Capabilities {
        let inner = &*self.inner;
        let mut caps = Capabilities::default();
        caps.backend = BACKEND;
        caps.shared_across_threads = true;
        caps.shared_across_processes = true;
        caps.ttl_resolution = TTL_RESOLUTION;
        caps.max_ttl = max_ttl();
        caps.max_value_size = Some(inner.max_value_size);
        caps.max_key_len = MAX_KEY_LEN - inner.prefix_len;
        caps.default_ttl = match inner.default_ttl {
            Ttl::Default => Ttl::After(cache_core::DEFAULT_TTL),
            other => other,
        };
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expirations_follow_memcached_rules() {
        assert_eq!(expiration_for_secs(2), Some(2));
        assert_eq!(
            expiration_for_secs(RELATIVE_LIMIT),
            Some(RELATIVE_LIMIT as u32)
        );
        let absolute = expiration_for_secs(31 * 24 * 3600).unwrap();
        assert!(u64::from(absolute) > now_unix() + 30 * 24 * 3600);
        assert_eq!(expiration_for_secs(u64::from(u32::MAX)), None);
        assert_eq!(expiration_for_secs(i32::MAX as u64), None);
    }

    #[test]
    fn ttls_round_up_and_never_become_never() {
        let engine = MemcachedEngine::new();
        assert_eq!(
            engine
                .exptime(Ttl::After(Duration::from_millis(1)))
                .unwrap(),
            Some(2)
        );
        assert_eq!(
            engine
                .exptime(Ttl::After(Duration::from_millis(1500)))
                .unwrap(),
            Some(3)
        );
        assert_eq!(
            engine.exptime(Ttl::After(Duration::from_secs(2))).unwrap(),
            Some(3)
        );
        assert_eq!(engine.exptime(Ttl::Never).unwrap(), Some(0));
        assert_eq!(engine.exptime(Ttl::After(Duration::ZERO)).unwrap(), None);
        assert_eq!(engine.exptime(Ttl::Default).unwrap(), Some(301));
        assert!(matches!(
            engine.exptime(Ttl::After(Duration::MAX)),
            Err(CacheError::InvalidTtl { .. })
        ));
    }

    #[test]
    fn generations_are_fixed_width_hex() {
        let a = random_generation();
        assert!(is_generation(a.as_bytes()), "{a}");
        assert_ne!(a, random_generation());
    }

    #[test]
    fn several_servers_are_refused_for_now() {
        let err = MemcachedEngine::builder()
            .servers(["a:1", "b:2"])
            .build()
            .unwrap_err();
        assert!(matches!(err, CacheError::InvalidConfig { .. }));
    }
}
