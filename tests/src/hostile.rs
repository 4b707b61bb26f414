//! Hostile servers: fakes that speak just enough of the Redis or memcached protocol for an engine
//! to connect, then answer its requests as a broken or malicious server would.
//!
//! A [`HostileServer`] answers the requests engines send while connecting (`PING`, `AUTH`,
//! `SELECT`, `HELLO`, `CLIENT`; memcached's `version`, `stats settings`, `mn`) the way a real
//! server does, and every other request with its [`Misbehaviour`]. Behaviour checks that use it,
//! for any remote backend, are the functions of this module ([`every_operation_ends_in_time`]).
//!
//! ```no_run
//! use cache_tests::hostile::{Dialect, HostileServer, Misbehaviour};
//!
//! let server = HostileServer::start(Dialect::Redis, Misbehaviour::NeverAnswer)
//!     .expect("a free port");
//! // Point an engine at server.address(): its operations must fail within their timeout.
//! ```
//!
//! These fakes are for replies no real server sends. Everything else is tested against real
//! servers ([`crate::servers`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::{Bytes, CacheEngine, CacheError, Ttl};

/// Which protocol the fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// RESP2, as `redis-server` speaks it; `HELLO` is an unknown command, as before Redis 6.
    Redis,
    /// RESP3, as `redis-server` speaks it after `HELLO 3`: misbehaviours use RESP3's types
    /// (nulls, verbatim strings, maps, sets, doubles) where RESP2 has its own.
    Resp3,
    /// memcached's text and meta protocol.
    Memcached,
}

/// How the fake answers every request that is not part of connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Reads requests and never answers them; the connection stays open.
    NeverAnswer,
    /// Sends a well-formed reply (a miss) one byte every `every`.
    Trickle {
        /// Time between two bytes.
        every: Duration,
    },
    /// Announces a value of `announced` bytes (a Redis bulk string, a memcached `VA`), then
    /// streams filler bytes as fast as the engine reads them, without end.
    OversizedValue {
        /// The announced length in bytes.
        announced: u64,
    },
    /// Redis: announces an array of `announced` elements and streams small elements without end.
    /// memcached: streams `STAT` lines without end.
    EndlessArray {
        /// The announced number of elements.
        announced: u64,
    },
    /// Redis: arrays nested `depth` deep (`*1\r\n*1\r\n...`), then a miss.
    DeepArray {
        /// How deep.
        depth: usize,
    },
    /// A reply line that never ends: filler bytes without `\r\n`.
    EndlessLine,
    /// Accepts connections and never answers anything, not even what engines send while
    /// connecting (memcached's `stats settings`, Redis's `AUTH` or `SELECT`): a handshake
    /// never ends.
    Silent,
    /// Redis dialects: answers with push frames (`>2 invalidate [key]`, as RESP3 tracking
    /// sends them) without end, never with the reply. memcached: never answers.
    PushFlood,
    /// Answers every data request as a server that wants a login the connection never made
    /// (a server restarted with authentication on, say): memcached's
    /// `CLIENT_ERROR unauthenticated`, Redis's `-NOAUTH Authentication required.`, one line
    /// per command, the connection kept open.
    Unauthenticated,
    /// Redis dialects: answers every data request with a miss between two push frames (one
    /// before it, one after, which arrives while the connection is idle): nothing hostile
    /// once pushes are set apart from replies, so every `get` must be a miss. memcached: a
    /// plain miss.
    PushAroundMiss,
    /// Announces a value of `announced` bytes (within the engine's limit), then sends its
    /// bytes one every `every`.
    SlowValue {
        /// The announced length in bytes.
        announced: u64,
        /// Time between two bytes.
        every: Duration,
    },
}

/// A fake server on a free loopback port; see the [module docs](self).
#[derive(Debug)]
pub struct HostileServer {
    address: String,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    requests: Arc<AtomicU64>,
}

impl HostileServer {
    /// Starts a fake of `dialect` that answers data requests with `misbehaviour`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub fn start(dialect: Dialect, misbehaviour: Misbehaviour) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicU64::new(0));
        {
            let (stop, streams, requests) = (
                Arc::clone(&stop),
                Arc::clone(&streams),
                Arc::clone(&requests),
            );
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    if let Ok(held) = client.try_clone() {
                        streams.lock().unwrap_or_else(|p| p.into_inner()).push(held);
                    }
                    let misbehaviour = misbehaviour.clone();
                    let (stop, requests) = (Arc::clone(&stop), Arc::clone(&requests));
                    std::thread::spawn(move || {
                        serve(client, dialect, &misbehaviour, &stop, &requests);
                    });
                }
            });
        }
        Ok(Self {
            address,
            stop,
            streams,
            requests,
        })
    }

    /// `host:port` to point an engine at.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// How many data requests (not connection set-up) the fake has received.
    pub fn data_requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(addr) = self.address.parse() {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(100));
        }
        for stream in self
            .streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// One request as the fake read it: its words (the command first).
type Request = Vec<Vec<u8>>;

fn serve(
    client: TcpStream,
    dialect: Dialect,
    misbehaviour: &Misbehaviour,
    stop: &AtomicBool,
    requests: &AtomicU64,
) {
    let Ok(writer) = client.try_clone() else {
        return;
    };
    let mut writer = writer;
    let mut reader = BufReader::new(client);
    if *misbehaviour == Misbehaviour::Silent {
        let mut sink = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            match reader.read(&mut sink) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        let request = match dialect {
            Dialect::Redis | Dialect::Resp3 => read_resp_request(&mut reader),
            Dialect::Memcached => read_memcached_request(&mut reader),
        };
        let Some(request) = request else { return };
        if let Some(answer) = connection_setup_answer(dialect, misbehaviour, &request) {
            if writer.write_all(&answer).is_err() {
                return;
            }
            continue;
        }
        requests.fetch_add(1, Ordering::SeqCst);
        if !misbehave(&mut writer, dialect, misbehaviour, stop) {
            return;
        }
    }
}

/// The answer to a request engines send while connecting, or `None` for a data request. A
/// memcached fake says its item limit is 1 MiB, or 1 GiB for [`Misbehaviour::SlowValue`],
/// whose announced values must be within the engine's reply limit.
fn connection_setup_answer(
    dialect: Dialect,
    misbehaviour: &Misbehaviour,
    request: &Request,
) -> Option<Vec<u8>> {
    let command = request.first()?.to_ascii_lowercase();
    let answer: &[u8] = match (dialect, command.as_slice()) {
        (Dialect::Redis | Dialect::Resp3, b"ping") => b"+PONG\r\n",
        (Dialect::Redis | Dialect::Resp3, b"auth" | b"select" | b"client" | b"readonly") => {
            b"+OK\r\n"
        }
        (Dialect::Redis, b"hello") => b"-ERR unknown command 'HELLO'\r\n",
        (Dialect::Resp3, b"hello") => b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n",
        (Dialect::Memcached, b"version") => b"VERSION 1.6.99-hostile\r\n",
        (Dialect::Memcached, b"mn") => b"MN\r\n",
        (Dialect::Memcached, b"stats") => match misbehaviour {
            Misbehaviour::SlowValue { .. } => {
                b"STAT item_size_max 1073741824\r\nSTAT maxconns 1024\r\nEND\r\n"
            }
            _ => b"STAT item_size_max 1048576\r\nSTAT maxconns 1024\r\nEND\r\n",
        },
        _ => return None,
    };
    Some(answer.to_vec())
}

/// Misbehaves on one data request; `false` when the connection is gone.
fn misbehave(
    writer: &mut TcpStream,
    dialect: Dialect,
    misbehaviour: &Misbehaviour,
    stop: &AtomicBool,
) -> bool {
    let miss: &[u8] = match dialect {
        Dialect::Redis => b"$-1\r\n",
        Dialect::Resp3 => b"_\r\n",
        Dialect::Memcached => b"EN\r\n",
    };
    match misbehaviour {
        Misbehaviour::NeverAnswer => true,
        Misbehaviour::Trickle { every } => {
            for byte in miss {
                if stop.load(Ordering::SeqCst) || writer.write_all(&[*byte]).is_err() {
                    return false;
                }
                std::thread::sleep(*every);
            }
            true
        }
        Misbehaviour::OversizedValue { announced } => {
            let head = match dialect {
                Dialect::Redis => format!("${announced}\r\n"),
                Dialect::Resp3 => format!("={announced}\r\n"),
                Dialect::Memcached => format!("VA {announced} f0\r\n"),
            };
            writer.write_all(head.as_bytes()).is_ok() && stream_filler(writer, b'x', stop)
        }
        Misbehaviour::EndlessArray { announced } => match dialect {
            Dialect::Redis => {
                let head = format!("*{announced}\r\n");
                writer.write_all(head.as_bytes()).is_ok()
                    && stream_repeated(writer, b":1\r\n", stop)
            }
            Dialect::Resp3 => {
                let head = format!("%{announced}\r\n");
                writer.write_all(head.as_bytes()).is_ok()
                    && stream_repeated(writer, b"#t\r\n,1.5\r\n", stop)
            }
            Dialect::Memcached => stream_repeated(writer, b"STAT filler 1\r\n", stop),
        },
        Misbehaviour::DeepArray { depth } => match dialect {
            Dialect::Redis | Dialect::Resp3 => {
                let level: &[u8] = if dialect == Dialect::Redis {
                    b"*1\r\n"
                } else {
                    b"~1\r\n"
                };
                let mut reply = level.repeat(*depth);
                reply.extend_from_slice(miss);
                writer.write_all(&reply).is_ok()
            }
            Dialect::Memcached => writer.write_all(miss).is_ok(),
        },
        Misbehaviour::Silent => true,
        Misbehaviour::PushFlood => match dialect {
            Dialect::Redis | Dialect::Resp3 => stream_repeated(
                writer,
                b">2\r\n$10\r\ninvalidate\r\n*1\r\n$8\r\nhostile:\r\n",
                stop,
            ),
            Dialect::Memcached => true,
        },
        Misbehaviour::Unauthenticated => {
            let refusal: &[u8] = match dialect {
                Dialect::Redis | Dialect::Resp3 => b"-NOAUTH Authentication required.\r\n",
                Dialect::Memcached => b"CLIENT_ERROR unauthenticated\r\n",
            };
            writer.write_all(refusal).is_ok()
        }
        Misbehaviour::PushAroundMiss => {
            let push: &[u8] = match dialect {
                Dialect::Redis | Dialect::Resp3 => {
                    b">3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
                }
                Dialect::Memcached => b"",
            };
            writer.write_all(&[push, miss].concat()).is_ok() && {
                // The second push comes once the reply has been read.
                std::thread::sleep(Duration::from_millis(5));
                writer.write_all(push).is_ok()
            }
        }
        Misbehaviour::SlowValue { announced, every } => {
            let head = match dialect {
                Dialect::Redis => format!("${announced}\r\n"),
                Dialect::Resp3 => format!("={announced}\r\n"),
                Dialect::Memcached => format!("VA {announced} f0\r\n"),
            };
            if writer.write_all(head.as_bytes()).is_err() {
                return false;
            }
            while !stop.load(Ordering::SeqCst) {
                if writer.write_all(b"z").is_err() {
                    return false;
                }
                std::thread::sleep(*every);
            }
            false
        }
        Misbehaviour::EndlessLine => {
            let head: &[u8] = match dialect {
                Dialect::Redis => b"+",
                Dialect::Resp3 => b",",
                Dialect::Memcached => b"HD ",
            };
            writer.write_all(head).is_ok() && stream_filler(writer, b'y', stop)
        }
    }
}

fn stream_filler(writer: &mut TcpStream, byte: u8, stop: &AtomicBool) -> bool {
    let chunk = vec![byte; 64 * 1024];
    stream_repeated(writer, &chunk, stop)
}

/// Writes `chunk` again and again until the peer goes away or the server stops.
fn stream_repeated(writer: &mut TcpStream, chunk: &[u8], stop: &AtomicBool) -> bool {
    let chunk = if chunk.len() < 4096 {
        chunk.repeat(4096 / chunk.len())
    } else {
        chunk.to_vec()
    };
    let _ = writer.set_write_timeout(Some(Duration::from_millis(200)));
    let started = Instant::now();
    // Bounded so that a broken engine that never stops reading cannot keep a test running for
    // ever: 60 s of streaming is far beyond any engine's timeout.
    while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
        match writer.write_all(&chunk) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    }
    false
}

fn read_line(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let n = reader.read_until(b'\n', &mut line).ok()?;
    if n == 0 {
        return None;
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Some(line)
}

fn read_resp_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let line = read_line(reader)?;
    let Some(count) = line.strip_prefix(b"*") else {
        // An inline command.
        return Some(line.split(|b| *b == b' ').map(<[u8]>::to_vec).collect());
    };
    let count: usize = std::str::from_utf8(count).ok()?.parse().ok()?;
    let mut words = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let header = read_line(reader)?;
        let len: usize = std::str::from_utf8(header.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        let mut word = vec![0; len + 2];
        reader.read_exact(&mut word).ok()?;
        word.truncate(len);
        words.push(word);
    }
    Some(words)
}

fn read_memcached_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let line = read_line(reader)?;
    let mut words: Request = line
        .split(|b| *b == b' ')
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let data_len = match words.first().map(Vec::as_slice) {
        Some(b"ms") => words.get(2),
        Some(b"set" | b"add" | b"replace" | b"append" | b"prepend") => words.get(4),
        Some(b"cas") => words.get(4),
        _ => None,
    };
    if let Some(len) = data_len {
        let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
        let mut data = vec![0; len + 2];
        reader.read_exact(&mut data).ok()?;
        data.truncate(len);
        words.push(data);
    }
    Some(words)
}

/// Peak resident memory of this process, in bytes, since the last [`reset_peak_rss`] (Linux;
/// `None` elsewhere).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resident memory of this process now, in bytes (Linux; `None` elsewhere).
pub fn current_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak that [`peak_rss`] reports to the current resident memory (Linux).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The variable that tells a test binary it runs as [`run_in_child`]'s child.
const CHILD: &str = "CACHE_TESTS_CHILD";

/// Runs the test named `test` (its full name, as `cargo test` lists it) again in a child
/// process of its own, and waits at most `limit` for it (then kills it and fails): for checks
/// of resident memory, which is counted per process, so that other tests running at the same
/// time do not count. Returns `true` in the child, which then does the work and asserts, and
/// `false` in the parent once the child passed.
///
/// ```no_run
/// #[test]
/// fn memory_stays_bounded() {
///     if !cache_tests::hostile::run_in_child("memory_stays_bounded", std::time::Duration::from_secs(30)) {
///         return;
///     }
///     // Only the child gets here: measure with `peak_rss`, assert.
/// }
/// ```
///
/// # Panics
///
/// In the parent, when the child fails, runs past `limit`, or did not run the test.
pub fn run_in_child(test: &str, limit: Duration) -> bool {
    if is_child(test) {
        return true;
    }
    match child_outcome(test, limit) {
        ChildOutcome::Passed => false,
        ChildOutcome::Killed { output } => {
            panic!("the child process running {test} was killed after {limit:?}:\n{output}")
        }
        ChildOutcome::Failed { output } => panic!("{test} failed in its child process:\n{output}"),
    }
}

/// Whether this process is the child [`child_outcome`] (or [`run_in_child`]) started for
/// `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var(CHILD).ok().as_deref() == Some(test)
}

/// How a test run in a child process of its own ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutcome {
    /// The test ran and passed.
    Passed,
    /// The test failed, or the process ended otherwise (a panic, an abort, a signal such as a
    /// stack overflow's), or did not run the test; with what it printed.
    Failed {
        /// Its standard output and error.
        output: String,
    },
    /// It ran past its time limit and was killed.
    Killed {
        /// Its standard output and error.
        output: String,
    },
}

/// Runs the test named `test` in a child process of its own (where [`is_child`] is `true`) and
/// tells how it ended, waiting at most `limit`: for checks whose failure may take the process
/// down (an abort, a stack overflow), or whose memory is counted per process.
///
/// # Panics
///
/// When this test binary or the child process cannot be started.
pub fn child_outcome(test: &str, limit: Duration) -> ChildOutcome {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("this test binary: {e}"));
    let mut child = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the child process: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for the child process: {e}"),
        }
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    let output = format!("{out}\n{err}");
    match status {
        None => ChildOutcome::Killed { output },
        Some(status) if status.success() && out.contains("1 passed") => ChildOutcome::Passed,
        Some(status) => ChildOutcome::Failed {
            output: format!("{status}\n{output}"),
        },
    }
}

/// The operations every engine offers, each run once by [`every_operation_ends_in_time`].
pub const OPERATIONS: &[&str] = &[
    "get",
    "set",
    "delete",
    "exists",
    "get_many",
    "set_many(50)",
    "delete_many",
    "add",
    "increment",
    "touch(never)",
    "touch(60s)",
    "remaining_ttl",
    "get_with_ttl",
    "get_many_with_ttl",
    "delete_if_equals",
    "clear",
];

/// Runs the operation named `name` (one of [`OPERATIONS`]) once.
///
/// # Errors
///
/// The engine's error.
pub fn run_operation(engine: &dyn CacheEngine, name: &str) -> cache_core::Result<()> {
    let value = || Bytes::from_static(b"value");
    match name {
        "get" => engine.get("hostile").map(drop),
        "set" => engine.set("hostile", value(), Ttl::Default),
        "delete" => engine.delete("hostile").map(drop),
        "exists" => engine.exists("hostile").map(drop),
        "get_many" => engine.get_many(&["a", "b", "c"]).map(drop),
        "set_many(50)" => {
            let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
            let entries: Vec<(&str, Bytes)> = keys.iter().map(|k| (k.as_str(), value())).collect();
            engine.set_many(&entries, Ttl::Default)
        }
        "delete_many" => engine.delete_many(&["a", "b", "c"]).map(drop),
        "add" => engine.add("hostile", value(), Ttl::Default).map(drop),
        "increment" => engine.increment("counter", 1).map(drop),
        "touch(never)" => engine.touch("hostile", Ttl::Never).map(drop),
        "touch(60s)" => engine
            .touch("hostile", Ttl::After(Duration::from_secs(60)))
            .map(drop),
        "remaining_ttl" => engine.remaining_ttl("hostile").map(drop),
        "get_with_ttl" => engine.get_with_ttl("hostile").map(drop),
        "get_many_with_ttl" => engine.get_many_with_ttl(&["a", "b", "c"]).map(drop),
        "delete_if_equals" => engine.delete_if_equals("hostile", b"value").map(drop),
        "clear" => engine.clear(),
        other => panic!("no operation named {other:?}"),
    }
}

/// Against a fake answering every data request as a server that wants a login
/// ([`Misbehaviour::Unauthenticated`]): every operation fails with
/// [`CacheError::Authentication`] within `timeout` plus `margin` (never a timeout, never
/// another error), and the connection stays in step (the next operation gets its own refusal,
/// not another's reply).
///
/// # Panics
///
/// When an operation succeeds, takes too long, or fails otherwise.
pub fn every_operation_says_authentication(
    dialect: Dialect,
    timeout: Duration,
    margin: Duration,
    engine_at: impl Fn(&str) -> Arc<dyn CacheEngine>,
) {
    let server = HostileServer::start(dialect, Misbehaviour::Unauthenticated)
        .unwrap_or_else(|e| panic!("hostile server: {e}"));
    let engine = engine_at(server.address());
    let mut problems = Vec::new();
    for round in 0..2 {
        for operation in OPERATIONS {
            let outcome = timed(Arc::clone(&engine), operation, timeout * 10 + margin * 10);
            match (&outcome.took, &outcome.result) {
                (Some(took), Some(Err(CacheError::Authentication { .. })))
                    if *took <= timeout + margin => {}
                (took, result) => {
                    problems.push(format!(
                        "round {round}, {operation}: {result:?} in {took:?}"
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{dialect:?}, a server that wants a login:\n{}",
        problems.join("\n")
    );
}

/// What one operation against a hostile server did.
#[derive(Debug)]
pub struct Outcome {
    /// The operation.
    pub operation: &'static str,
    /// How long it took; `None` when it was still running at the watchdog's limit.
    pub took: Option<Duration>,
    /// Its result, when it ended.
    pub result: Option<cache_core::Result<()>>,
}

/// Runs `operation` on `engine` in a thread and waits at most `limit` for it.
pub fn timed(engine: Arc<dyn CacheEngine>, operation: &'static str, limit: Duration) -> Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let result = run_operation(&*engine, operation);
        let _ = tx.send((result, start.elapsed()));
    });
    match rx.recv_timeout(limit) {
        Ok((result, took)) => Outcome {
            operation,
            took: Some(took),
            result: Some(result),
        },
        Err(_) => Outcome {
            operation,
            took: None,
            result: None,
        },
    }
}

/// Against a fake showing `misbehaviour`, every operation of [`OPERATIONS`] ends with an error
/// (`Timeout`, `Connection` or `Backend`) within `timeout + margin`, and the process's peak
/// resident memory grows by less than `memory_bound` bytes while they run.
///
/// `engine_at` builds an engine for a server address (`host:port`) with an operation timeout of
/// `timeout` and a value limit well under `memory_bound` (a namespace is welcome: it exercises
/// more of the engine). Run such checks one at a time in their own test binary: the memory bound
/// is measured for the whole process.
///
/// # Panics
///
/// When an operation succeeds, hangs, overruns, gives another error, or memory grows too much.
pub fn every_operation_ends_in_time(
    dialect: Dialect,
    misbehaviour: Misbehaviour,
    timeout: Duration,
    margin: Duration,
    memory_bound: u64,
    engine_at: impl Fn(&str) -> Arc<dyn CacheEngine>,
) {
    every_operation_ends_in_time_for_callers(
        dialect,
        misbehaviour,
        timeout,
        margin,
        memory_bound,
        1,
        engine_at,
    );
}

/// [`every_operation_ends_in_time`], with `callers` threads running each operation at once on
/// the one engine: build it with fewer connections than callers (`max_connections(2)` for 8
/// callers, say) to check that callers sharing a connection each keep their own deadline.
///
/// # Panics
///
/// As [`every_operation_ends_in_time`], for any caller.
pub fn every_operation_ends_in_time_for_callers(
    dialect: Dialect,
    misbehaviour: Misbehaviour,
    timeout: Duration,
    margin: Duration,
    memory_bound: u64,
    callers: usize,
    engine_at: impl Fn(&str) -> Arc<dyn CacheEngine>,
) {
    let server = HostileServer::start(dialect, misbehaviour.clone())
        .unwrap_or_else(|e| panic!("hostile server: {e}"));
    let engine = engine_at(server.address());
    reset_peak_rss();
    let before = peak_rss();
    let mut problems = Vec::new();
    for operation in OPERATIONS {
        let outcomes: Vec<Outcome> = std::thread::scope(|s| {
            let running: Vec<_> = (0..callers.max(1))
                .map(|_| {
                    let engine = Arc::clone(&engine);
                    s.spawn(move || timed(engine, operation, timeout * 10 + margin * 10))
                })
                .collect();
            running.into_iter().filter_map(|t| t.join().ok()).collect()
        });
        if outcomes.len() < callers.max(1) {
            problems.push(format!("{operation}: a caller's thread panicked"));
        }
        for outcome in outcomes {
            match (&outcome.took, &outcome.result) {
                (None, _) => problems.push(format!(
                    "{operation}: still running after {:?}",
                    timeout * 10 + margin * 10
                )),
                (Some(took), _) if *took > timeout + margin => {
                    problems.push(format!("{operation}: took {took:?}"));
                }
                (
                    _,
                    Some(Err(
                        CacheError::Timeout { .. }
                        | CacheError::Connection { .. }
                        | CacheError::Backend { .. },
                    )),
                ) => {}
                (_, result) => problems.push(format!("{operation}: {result:?}")),
            }
        }
    }
    if let (Some(before), Some(after)) = (before, peak_rss()) {
        let grown = after.saturating_sub(before);
        if grown > memory_bound {
            problems.push(format!(
                "peak resident memory grew by {} MiB (bound {} MiB)",
                grown >> 20,
                memory_bound >> 20
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{dialect:?} {misbehaviour:?}, timeout {timeout:?}:\n{}",
        problems.join("\n")
    );
}
