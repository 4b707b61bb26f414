//! A TCP proxy on loopback that injects faults between an engine and its server.
//!
//! ```no_run
//! use cache_tests::proxy::{Fault, FaultProxy};
//!
//! let proxy = FaultProxy::start("127.0.0.1:6379").expect("a free port");
//! // Point the engine at proxy.address() ...
//! proxy.set(Fault::TruncateReplies);
//! // ... operations now fail with a typed error ...
//! proxy.set(Fault::None);
//! ```
//!
//! Each client connection gets its own connection to the server and two forwarding threads.
//! Faults apply to replies (server to client) as they pass, so a fault can hit in the middle of
//! a reply. Connections are closed when the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward everything.
    None = 0,
    /// Hold every reply for 2 s before forwarding it (longer than the engines' 1 s timeout).
    DelayReplies = 1,
    /// Forward the first half of a reply, then close the connection.
    TruncateReplies = 2,
    /// Close the connection as soon as a request arrives, before any reply.
    CutConnections = 3,
    /// Forward replies one byte every 400 ms.
    TrickleReplies = 4,
    /// Forward requests to the server (which carries them out) but close the client's
    /// connection instead of forwarding the reply: the request may have been applied, and the
    /// engine cannot know.
    DropReplies = 5,
    /// Hold each piece of reply data for a random 0 to 3 ms before forwarding it.
    JitterReplies = 6,
    /// Hold each piece of data, requests and replies, for a random 0 to 3 ms before forwarding
    /// it: requests sent on two connections may reach the server in another order.
    JitterBoth = 7,
    /// A black hole: connections stay open and nothing passes, either way. A connection that
    /// carried data while this was set (or was opened meanwhile) stays a black hole for good,
    /// as a flow a NAT or load balancer forgot; connections opened after the fault ends pass.
    BlackHole = 8,
}

impl Fault {
    fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::DelayReplies,
            2 => Self::TruncateReplies,
            3 => Self::CutConnections,
            4 => Self::TrickleReplies,
            5 => Self::DropReplies,
            6 => Self::JitterReplies,
            7 => Self::JitterBoth,
            8 => Self::BlackHole,
            _ => Self::None,
        }
    }
}

/// A proxy in front of one server; see the [module docs](self).
#[derive(Debug)]
pub struct FaultProxy {
    address: String,
    fault: Arc<AtomicU8>,
    slow: Arc<Mutex<Option<Slow>>>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    /// Client connections open now (both pumps still running).
    open: Arc<AtomicU64>,
}

/// Replies to requests holding `pattern` are held for `delay`, or dropped (the connection
/// closed instead) when `delay` is `None`; with `once`, only the first such request's.
#[derive(Debug, Clone)]
struct Slow {
    pattern: Vec<u8>,
    delay: Option<Duration>,
    once: bool,
}

/// What the two pumps of one proxied connection share.
#[derive(Debug, Default)]
struct Link {
    /// The last request held the slow pattern: hold the next reply this many milliseconds.
    hold_next_reply_ms: AtomicU64,
    /// The last request held the pattern of replies to drop.
    drop_next_reply: AtomicBool,
    /// The connection is a black hole for good.
    holed: AtomicBool,
    /// How many of its two pumps still run.
    pumps: AtomicU8,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `server` (`host:port`).
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub fn start(server: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?.to_string();
        let fault = Arc::new(AtomicU8::new(Fault::None as u8));
        let slow: Arc<Mutex<Option<Slow>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicU64::new(0));
        let server = server.to_string();
        {
            let (fault, slow, stop, streams, open) = (
                Arc::clone(&fault),
                Arc::clone(&slow),
                Arc::clone(&stop),
                Arc::clone(&streams),
                Arc::clone(&open),
            );
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(upstream) = TcpStream::connect(&server) else {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    };
                    if let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) {
                        let mut held = streams.lock().unwrap_or_else(|p| p.into_inner());
                        held.push(c);
                        held.push(u);
                    }
                    let link = Arc::new(Link::default());
                    if Fault::from_u8(fault.load(Ordering::SeqCst)) == Fault::BlackHole {
                        link.holed.store(true, Ordering::SeqCst);
                    }
                    link.pumps.store(2, Ordering::SeqCst);
                    open.fetch_add(1, Ordering::SeqCst);
                    let pumps = Pumps {
                        fault: Arc::clone(&fault),
                        slow: Arc::clone(&slow),
                        link,
                        open: Arc::clone(&open),
                    };
                    spawn_pump(&client, &upstream, Direction::Requests, pumps.clone());
                    spawn_pump(&upstream, &client, Direction::Replies, pumps);
                }
            });
        }
        Ok(Self {
            address,
            fault,
            slow,
            stop,
            streams,
            open,
        })
    }

    /// How many client connections are open now: a connection the engine closed is counted
    /// out once the proxy has seen it close.
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    /// From now on, holds each reply to a request that contains `pattern` for `delay` before
    /// forwarding it (other replies pass at once). A request seen before the next call keeps
    /// the delay it was seen with. For engines that send one request at a time
    /// per connection: a request's reply is the next data from the server on its connection.
    pub fn delay_replies_to(&self, pattern: &[u8], delay: Duration) {
        *self.slow.lock().unwrap_or_else(|p| p.into_inner()) = Some(Slow {
            pattern: pattern.to_vec(),
            delay: Some(delay),
            once: false,
        });
    }

    /// From now on, forwards each request that contains `pattern` to the server (which acts on
    /// it) but closes the client's connection instead of forwarding its reply: the engine
    /// cannot know whether the request was applied.
    pub fn drop_replies_to(&self, pattern: &[u8]) {
        *self.slow.lock().unwrap_or_else(|p| p.into_inner()) = Some(Slow {
            pattern: pattern.to_vec(),
            delay: None,
            once: false,
        });
    }

    /// As [`drop_replies_to`](Self::drop_replies_to), for the next request that contains
    /// `pattern` only: later ones, a retry of it included, are answered as usual. This tells a
    /// request sent twice from one sent once when both would change the same thing.
    pub fn drop_one_reply_to(&self, pattern: &[u8]) {
        *self.slow.lock().unwrap_or_else(|p| p.into_inner()) = Some(Slow {
            pattern: pattern.to_vec(),
            delay: None,
            once: true,
        });
    }

    /// `host:port` to point an engine at.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sets the fault for the data that passes from now on.
    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(
            &self
                .address
                .parse()
                .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into()),
            Duration::from_millis(100),
        );
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Requests,
    Replies,
}

/// What the pumps of one connection read: the proxy's settings and their shared link.
#[derive(Clone)]
struct Pumps {
    fault: Arc<AtomicU8>,
    slow: Arc<Mutex<Option<Slow>>>,
    link: Arc<Link>,
    open: Arc<AtomicU64>,
}

impl Pumps {
    /// Whether `request` holds the slow pattern; a pattern for one request is used up.
    fn matches(&self, request: &[u8]) -> Option<Slow> {
        let mut slow = self.slow.lock().unwrap_or_else(|p| p.into_inner());
        let found = slow.as_ref().is_some_and(|slow| {
            request
                .windows(slow.pattern.len().max(1))
                .any(|w| w == slow.pattern.as_slice())
        });
        if !found {
            return None;
        }
        if slow.as_ref().is_some_and(|s| s.once) {
            return slow.take();
        }
        slow.clone()
    }
}

/// Copies `from` to `to`; faults apply to replies (server to client).
fn spawn_pump(from: &TcpStream, to: &TcpStream, direction: Direction, pumps: Pumps) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let current = Fault::from_u8(pumps.fault.load(Ordering::SeqCst));
            if current == Fault::BlackHole {
                pumps.link.holed.store(true, Ordering::SeqCst);
            }
            if pumps.link.holed.load(Ordering::SeqCst) {
                // Swallowed; the connection stays open.
                continue;
            }
            if current == Fault::JitterBoth {
                std::thread::sleep(Duration::from_micros(rand::random::<u64>() % 3_000));
            }
            if direction == Direction::Requests {
                if current == Fault::CutConnections {
                    break;
                }
                if let Some(slow) = pumps.matches(&buf[..n]) {
                    match slow.delay {
                        Some(delay) => {
                            let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                            pumps.link.hold_next_reply_ms.store(ms, Ordering::SeqCst);
                        }
                        None => pumps.link.drop_next_reply.store(true, Ordering::SeqCst),
                    }
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
                continue;
            }
            if pumps.link.drop_next_reply.swap(false, Ordering::SeqCst) {
                break;
            }
            let hold = pumps.link.hold_next_reply_ms.swap(0, Ordering::SeqCst);
            if hold > 0 {
                std::thread::sleep(Duration::from_millis(hold));
            }
            match current {
                Fault::None | Fault::CutConnections | Fault::JitterBoth | Fault::BlackHole => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Fault::DelayReplies => {
                    std::thread::sleep(Duration::from_secs(2));
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Fault::TruncateReplies => {
                    let _ = to.write_all(&buf[..n.div_ceil(2)]);
                    break;
                }
                Fault::TrickleReplies => {
                    let mut failed = false;
                    for byte in &buf[..n] {
                        if to.write_all(std::slice::from_ref(byte)).is_err() {
                            failed = true;
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(400));
                    }
                    if failed {
                        break;
                    }
                }
                Fault::DropReplies => break,
                Fault::JitterReplies => {
                    std::thread::sleep(Duration::from_micros(rand::random::<u64>() % 3_000));
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
        if pumps.link.pumps.fetch_sub(1, Ordering::SeqCst) == 1 {
            pumps.open.fetch_sub(1, Ordering::SeqCst);
        }
    });
}

/// Checks that an engine behind a [`FaultProxy`] survives each fault: while it lasts, operations
/// fail with a typed error within a few seconds (`get`, and `get_with_ttl`, an exchange of
/// several replies on Redis); after it ends, operations succeed again within 3 s and every key
/// reads back its own value through both (a late or partial reply never answers a later
/// request).
///
/// `engine_at` builds an engine (with an operation timeout of at most 1 s) for a server address.
///
/// # Panics
///
/// When the engine hangs, returns a wrong value, or does not recover.
pub fn survives_faults(
    server: &str,
    engine_at: impl Fn(&str) -> std::sync::Arc<dyn cache_core::CacheEngine>,
) {
    use cache_core::{Bytes, CacheError, Ttl};
    use std::time::Instant;

    let proxy = FaultProxy::start(server).unwrap_or_else(|e| panic!("proxy: {e}"));
    let engine = engine_at(proxy.address());
    let value = |i: usize| Bytes::from(format!("value-{i}"));
    for i in 0..4 {
        engine
            .set(&format!("fault-{i}"), value(i), Ttl::Default)
            .unwrap_or_else(|e| panic!("set through the proxy: {e}"));
    }
    for fault in [
        Fault::TruncateReplies,
        Fault::CutConnections,
        Fault::DelayReplies,
    ] {
        proxy.set(fault);
        let start = Instant::now();
        match engine.get("fault-0") {
            Err(
                CacheError::Connection { .. }
                | CacheError::Timeout { .. }
                | CacheError::Backend { .. },
            ) => {}
            other => {
                panic!("{fault:?}: expected a connection, timeout or backend error, got {other:?}")
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{fault:?}: took {:?}",
            start.elapsed()
        );
        // A multi-reply exchange (Redis: MULTI, GET, PTTL, EXEC) under the same fault.
        let start = Instant::now();
        match engine.get_with_ttl("fault-1") {
            Err(
                CacheError::Connection { .. }
                | CacheError::Timeout { .. }
                | CacheError::Backend { .. },
            ) => {}
            other => panic!(
                "{fault:?}: get_with_ttl: expected a connection, timeout or backend error, got \
                 {other:?}"
            ),
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{fault:?}: get_with_ttl took {:?}",
            start.elapsed()
        );
        // A compare-and-delete (Redis: a script; memcached: a read, then a CAS delete) under
        // the same fault, with a token that matches nothing: an error, never another reply.
        let start = Instant::now();
        match engine.delete_if_equals("fault-2", b"matches nothing") {
            Err(
                CacheError::Connection { .. }
                | CacheError::Timeout { .. }
                | CacheError::Backend { .. },
            ) => {}
            other => panic!(
                "{fault:?}: delete_if_equals: expected a connection, timeout or backend error, \
                 got {other:?}"
            ),
        }
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{fault:?}: delete_if_equals took {:?}",
            start.elapsed()
        );
        proxy.set(Fault::None);
        let start = Instant::now();
        for i in 0..4 {
            loop {
                match engine.get_with_ttl(&format!("fault-{i}")) {
                    Ok(got) => {
                        assert_eq!(
                            got.map(|(v, _)| v),
                            Some(value(i)),
                            "{fault:?}: get_with_ttl of fault-{i} got another reply"
                        );
                        break;
                    }
                    Err(e) => assert!(
                        start.elapsed() < Duration::from_secs(3),
                        "{fault:?}: get_with_ttl not recovered after 3 s: {e}"
                    ),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for i in (0..4).rev() {
            loop {
                match engine.get(&format!("fault-{i}")) {
                    Ok(got) => {
                        assert_eq!(
                            got,
                            Some(value(i)),
                            "{fault:?}: fault-{i} got another reply"
                        );
                        break;
                    }
                    Err(e) => assert!(
                        start.elapsed() < Duration::from_secs(3),
                        "{fault:?}: not recovered after 3 s: {e}"
                    ),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
