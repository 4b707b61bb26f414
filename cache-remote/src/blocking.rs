//! The blocking transport: a bounded pool of connections, every read and write bounded by the
//! operation's deadline. Below the bound each caller has a connection to itself; past it,
//! callers share connections, their requests pipelined and their replies handed out in order
//! (`link.rs`), rather than waiting for a connection to come back.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cache_core::{CacheError, Result};

use crate::backend::{Backend, Broken, Failure, Failures, ReplyOf, Retry};
use crate::buffer::ReadBuffer;
use crate::exchange::{Deadline, Exchange, Request, Step};
use crate::link::{Link, Ticket};
use crate::pool::{Pool, Refusal, Slot};
use crate::protocol::Decode;
use crate::settings::ClientSettings;

/// A byte stream the blocking transport can bound in time: a TCP socket, or TLS over one.
pub trait SyncStream: Read + Write + Send + 'static {
    /// Sets the longest one read may block (`None`: for ever).
    ///
    /// # Errors
    ///
    /// The socket's.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;

    /// Sets the longest one write may block.
    ///
    /// # Errors
    ///
    /// The socket's.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;

    /// A second handle on the same stream, so that one thread may read while another writes
    /// (a duplicated socket). `None` (the default) when the stream cannot be used that way,
    /// as TLS, whose reads and writes share one session: callers then take turns on it.
    fn try_split(&self) -> Option<Box<dyn SyncStream>> {
        None
    }

    /// Shuts the stream down in both directions, waking a thread blocked reading it. The
    /// default does nothing.
    fn shutdown(&self) {}
}

impl SyncStream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }

    fn try_split(&self) -> Option<Box<dyn SyncStream>> {
        self.try_clone()
            .ok()
            .map(|s| Box::new(s) as Box<dyn SyncStream>)
    }

    fn shutdown(&self) {
        // Already shut or reset: nothing left to wake.
        let _ = TcpStream::shutdown(self, std::net::Shutdown::Both);
    }
}

#[cfg(unix)]
impl SyncStream for std::os::unix::net::UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_write_timeout(self, timeout)
    }

    fn try_split(&self) -> Option<Box<dyn SyncStream>> {
        self.try_clone()
            .ok()
            .map(|s| Box::new(s) as Box<dyn SyncStream>)
    }

    fn shutdown(&self) {
        // Already shut or reset: nothing left to wake.
        let _ = std::os::unix::net::UnixStream::shutdown(self, std::net::Shutdown::Both);
    }
}

/// A stream that cannot be split, shared by the read and write sides of one link: they never
/// use it at once, since such a link carries one caller at a time.
struct Turns(std::sync::Arc<std::sync::Mutex<Box<dyn SyncStream>>>);

impl Turns {
    fn with<T>(&self, f: impl FnOnce(&mut Box<dyn SyncStream>) -> T) -> T {
        let mut stream = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut stream)
    }
}

impl Read for Turns {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.with(|s| s.read(buf))
    }
}

impl Write for Turns {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.with(|s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.with(|s| s.flush())
    }
}

impl SyncStream for Turns {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.with(|s| s.set_read_timeout(timeout))
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.with(|s| s.set_write_timeout(timeout))
    }

    fn shutdown(&self) {
        // Never waits: the other side holds it only while its own caller uses it.
        if let Ok(stream) = self.0.try_lock() {
            stream.shutdown();
        }
    }
}

#[cfg(feature = "tls")]
impl SyncStream for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        // A TLS read may write (and a write may read): bound both.
        self.sock.set_read_timeout(timeout)?;
        self.sock.set_write_timeout(timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)?;
        self.sock.set_write_timeout(timeout)
    }

    fn shutdown(&self) {
        // Already shut or reset: nothing left to wake.
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

/// How long a read may wait for bytes that have already arrived, once the deadline passed.
const LAST_LOOK: Duration = Duration::from_millis(1);

/// One connection (or one side of a [`Link`](crate::link::Link)).
pub(crate) struct Conn {
    stream: Box<dyn SyncStream>,
    pub(crate) buf: ReadBuffer,
    /// What the socket's timeouts are set to, so they are changed only when the time left is
    /// shorter: most operations then make no extra system call.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// The stream is shared with another `Conn` that may change its timeouts (a TLS session
    /// taken in turns): they are set before every blocking call instead of remembered.
    forgetful: bool,
}

#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

impl Conn {
    pub(crate) fn new(stream: Box<dyn SyncStream>) -> Self {
        Self {
            stream,
            buf: ReadBuffer::new(),
            read_timeout: None,
            write_timeout: None,
            forgetful: false,
        }
    }

    /// The read side and the write side of this connection, and whether they may be used by
    /// two threads at once (see [`SyncStream::try_split`]).
    pub(crate) fn split(self) -> (Conn, Conn, bool) {
        match self.stream.try_split() {
            Some(write) => {
                let writer = Conn {
                    stream: write,
                    buf: ReadBuffer::new(),
                    read_timeout: None,
                    write_timeout: self.write_timeout,
                    forgetful: false,
                };
                (self, writer, true)
            }
            None => {
                let shared = std::sync::Arc::new(std::sync::Mutex::new(self.stream));
                let side = |buf| Conn {
                    stream: Box::new(Turns(std::sync::Arc::clone(&shared))),
                    buf,
                    read_timeout: None,
                    write_timeout: None,
                    forgetful: true,
                };
                (side(self.buf), side(ReadBuffer::new()), false)
            }
        }
    }

    /// Shuts the stream down, waking a thread blocked reading it.
    pub(crate) fn shutdown(&self) {
        self.stream.shutdown();
    }

    /// Makes the next blocking call end by `deadline`.
    fn arm(
        &mut self,
        direction: Direction,
        deadline: &Deadline,
    ) -> std::result::Result<(), Broken> {
        let left = deadline.remaining().ok_or(Broken::Timeout)?;
        let current = match direction {
            Direction::Read => &mut self.read_timeout,
            Direction::Write => &mut self.write_timeout,
        };
        if self.forgetful || current.is_none_or(|set| set > left) {
            match direction {
                Direction::Read => self.stream.set_read_timeout(Some(left)),
                Direction::Write => self.stream.set_write_timeout(Some(left)),
            }
            .map_err(Broken::Io)?;
            *current = Some(left);
        }
        Ok(())
    }

    /// After a blocking call timed out: the deadline passed, or the timeout set was shorter
    /// than the time left and the call is tried again with the real one.
    fn timed_out(
        &mut self,
        direction: Direction,
        deadline: &Deadline,
    ) -> std::result::Result<(), Broken> {
        let left = deadline.remaining().ok_or(Broken::Timeout)?;
        match direction {
            Direction::Read => self.stream.set_read_timeout(Some(left)),
            Direction::Write => self.stream.set_write_timeout(Some(left)),
        }
        .map_err(Broken::Io)?;
        match direction {
            Direction::Read => self.read_timeout = Some(left),
            Direction::Write => self.write_timeout = Some(left),
        }
        Ok(())
    }

    /// Writes the whole request; `sent` tells whether any byte left.
    pub(crate) fn send(
        &mut self,
        bytes: &[u8],
        deadline: &Deadline,
        sent: &mut bool,
    ) -> std::result::Result<(), Broken> {
        let mut at = 0;
        while at < bytes.len() {
            self.arm(Direction::Write, deadline)?;
            match self.stream.write(&bytes[at..]) {
                Ok(0) => return Err(Broken::Closed),
                Ok(n) => {
                    at += n;
                    *sent = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => self.timed_out(Direction::Write, deadline)?,
                Err(e) => return Err(Broken::Io(e)),
            }
        }
        loop {
            match self.stream.flush() {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => self.timed_out(Direction::Write, deadline)?,
                Err(e) => return Err(Broken::Io(e)),
            }
        }
    }

    /// Reads one reply. Once the deadline has passed, what has already arrived is still read
    /// (one short read): when several servers are read one after another, a slow one must not
    /// make the replies the others already sent count as late.
    fn receive<D: Decode>(
        &mut self,
        decoder: &D,
        request: &Request,
        deadline: &Deadline,
    ) -> std::result::Result<D::Reply, Broken> {
        let mut last_look = false;
        loop {
            if let Some(reply) = self
                .buf
                .decode(decoder, &request.limits)
                .map_err(Broken::Protocol)?
            {
                return Ok(reply);
            }
            if last_look {
                return Err(Broken::Timeout);
            }
            match self.fill(deadline, false) {
                Ok(()) => {}
                Err(Broken::Timeout) => {
                    last_look = true;
                    match self.fill(deadline, true) {
                        Ok(()) | Err(Broken::Timeout) => {}
                        Err(why) => return Err(why),
                    }
                }
                Err(why) => return Err(why),
            }
        }
    }

    /// One read into the buffer, blocking until `deadline` at most; with `last_look`, for
    /// what has already arrived only ([`LAST_LOOK`]). `Ok` may have read nothing (a signal,
    /// or a socket timeout shorter than the time left, now set again).
    ///
    /// # Errors
    ///
    /// `Timeout` once the deadline passed (or the last look found nothing); `Closed`; `Io`.
    pub(crate) fn fill(
        &mut self,
        deadline: &Deadline,
        last_look: bool,
    ) -> std::result::Result<(), Broken> {
        if last_look {
            self.stream
                .set_read_timeout(Some(LAST_LOOK))
                .map_err(Broken::Io)?;
            self.read_timeout = Some(LAST_LOOK);
        } else {
            self.arm(Direction::Read, deadline)?;
        }
        let spare = self.buf.spare();
        match self.stream.read(spare) {
            Ok(0) => Err(Broken::Closed),
            Ok(n) => {
                self.buf.advance(n);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) if is_timeout(&e) && last_look => Err(Broken::Timeout),
            Err(e) if is_timeout(&e) => self.timed_out(Direction::Read, deadline),
            Err(e) => Err(Broken::Io(e)),
        }
    }

    /// Reads every reply of `request` (already sent), checking each.
    fn receive_all<D: Decode>(
        &mut self,
        decoder: &D,
        request: &Request,
        deadline: &Deadline,
    ) -> std::result::Result<Vec<D::Reply>, Broken> {
        let mut replies = Vec::with_capacity(request.replies);
        for index in 0..request.replies {
            let reply = self.receive(decoder, request, deadline)?;
            decoder.check(&reply, index).map_err(Broken::Protocol)?;
            replies.push(reply);
        }
        Ok(replies)
    }

    /// Writes `request`, after checking that no reply is waiting unread (out-of-band frames,
    /// such as RESP3 pushes, are dropped).
    fn send_request<D: Decode>(
        &mut self,
        decoder: &D,
        request: &Request,
        deadline: &Deadline,
    ) -> std::result::Result<(), (Broken, bool)> {
        let mut sent = false;
        match self.buf.holds_only_pushes(decoder) {
            Ok(true) => {}
            // Bytes nobody asked for: the stream is out of step with its requests.
            Ok(false) => {
                return Err((
                    Broken::Protocol(crate::protocol::ProtocolError::Unexpected(
                        "bytes arrived before the request".into(),
                    )),
                    false,
                ));
            }
            Err(e) => return Err((Broken::Protocol(e), false)),
        }
        self.send(&request.bytes, deadline, &mut sent)
            .map_err(|b| (b, sent))
    }

    /// Sends `request` and reads all its replies.
    fn round_trip<D: Decode>(
        &mut self,
        decoder: &D,
        request: &Request,
        deadline: &Deadline,
    ) -> std::result::Result<Vec<D::Reply>, (Broken, bool)> {
        self.send_request(decoder, request, deadline)?;
        self.receive_all(decoder, request, deadline)
            .map_err(|b| (b, true))
    }
}

/// One exchange of [`Client::run_each`], moving between writing its request and reading its
/// replies.
struct Job<'c, B: Backend, E: Exchange<ReplyOf<B>>, F> {
    client: &'c Client<B>,
    make: F,
    attempt: u8,
    deadline: Deadline,
    guard: Option<Lease<'c, ReplyOf<B>>>,
    /// The request in flight, once written.
    ticket: Option<Ticket>,
    exchange: Option<E>,
    /// The request to write next, or whose replies are awaited (`waiting`).
    request: Option<Request>,
    /// The deadline of the request in flight: the operation's, or its own.
    in_flight: Deadline,
    waiting: bool,
    before_idempotent: bool,
    result: Option<Result<E::Output>>,
}

impl<B: Backend, E: Exchange<ReplyOf<B>>, F: FnMut() -> Result<E>> Job<'_, B, E, F> {
    fn finish(&mut self, result: Result<E::Output>) {
        self.guard = None;
        self.ticket = None;
        if result.is_ok() || matches!(&result, Err(e) if !e.is_transient()) {
            // The server answered (perhaps with an error of the operation's own).
            if self.exchange.is_some() {
                self.client.failures.answered();
            }
        }
        self.waiting = false;
        self.request = None;
        self.result = Some(result);
    }

    /// Starts the exchange if it has not started (a connection, its first step), then writes
    /// the pending request.
    fn start_and_send(&mut self, operation: &'static str) {
        if self.waiting {
            return;
        }
        if self.exchange.is_none() {
            if self.client.is_closed() {
                self.result = Some(Err(CacheError::Closed {
                    backend: self.client.backend.name(),
                }));
                return;
            }
            let mut exchange = match (self.make)() {
                Ok(exchange) => exchange,
                Err(e) => {
                    self.result = Some(Err(e));
                    return;
                }
            };
            match self.client.checkout(operation, &mut self.deadline) {
                Ok(guard) => self.guard = Some(guard),
                Err(e) => {
                    self.result = Some(Err(e));
                    return;
                }
            }
            self.before_idempotent = true;
            let step = exchange.start();
            self.exchange = Some(exchange);
            match step {
                Err(e) => return self.finish(Err(e)),
                Ok(Step::Done(output)) => return self.finish(Ok(output)),
                Ok(Step::Send(request)) => self.request = Some(request),
            }
        }
        let Some(request) = self.request.as_ref() else {
            return;
        };
        self.in_flight = if request.own_deadline {
            Deadline::after(self.client.settings.timeout)
        } else {
            self.deadline
        };
        let Some(guard) = self.guard.as_mut() else {
            return;
        };
        match guard.send(self.client.backend.decoder(), request, &self.in_flight) {
            Ok(ticket) => {
                self.ticket = Some(ticket);
                self.waiting = true;
            }
            Err((why, sent)) => self.broken(operation, why, sent),
        }
    }

    /// Reads the replies of the request in flight and takes the exchange's next step.
    fn receive(&mut self, operation: &'static str) {
        let (Some(guard), Some(ticket)) = (self.guard.as_ref(), self.ticket.take()) else {
            return;
        };
        let replies =
            match guard
                .link
                .receive(self.client.backend.decoder(), ticket, &self.in_flight)
            {
                Ok(replies) => replies,
                Err(why) => return self.broken(operation, why, true),
            };
        self.waiting = false;
        self.before_idempotent &= self.request.as_ref().is_none_or(|r| r.idempotent);
        self.request = None;
        let Some(exchange) = self.exchange.as_mut() else {
            return;
        };
        match exchange.next(replies) {
            Err(e) => self.finish(Err(e)),
            Ok(Step::Done(output)) => self.finish(Ok(output)),
            Ok(Step::Send(request)) => self.request = Some(request),
        }
    }

    fn broken(&mut self, operation: &'static str, why: Broken, sent: bool) {
        let retry = Retry {
            attempt: usize::from(self.attempt),
            before_idempotent: self.before_idempotent,
            idempotent: self.request.as_ref().is_none_or(|r| r.idempotent),
            sent,
        };
        self.waiting = false;
        self.request = None;
        self.ticket = None;
        self.exchange = None;
        let Some(guard) = self.guard.take() else {
            return;
        };
        match self
            .client
            .broken(operation, guard, why, retry, &self.deadline)
        {
            Some(error) => self.result = Some(Err(error)),
            // Run again from the start on a new connection, in the next round.
            None => self.attempt += 1,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Runs `exchange`, each request through `round_trip` (write it, read all its replies): each
/// request gets the operation's deadline, or its own.
fn drive<R, E: Exchange<R>>(
    mut round_trip: impl FnMut(&Request, &Deadline) -> std::result::Result<Vec<R>, (Broken, bool)>,
    exchange: &mut E,
    deadline: Deadline,
    timeout: Duration,
) -> std::result::Result<E::Output, Failure> {
    let mut step = exchange.start().map_err(Failure::Reply)?;
    let mut before_idempotent = true;
    loop {
        let request = match step {
            Step::Done(output) => return Ok(output),
            Step::Send(request) => request,
        };
        let this_deadline = if request.own_deadline {
            Deadline::after(timeout)
        } else {
            deadline
        };
        let replies =
            round_trip(&request, &this_deadline).map_err(|(why, sent)| Failure::Broken {
                why,
                sent,
                before_idempotent,
                idempotent: request.idempotent,
            })?;
        before_idempotent &= request.idempotent;
        step = exchange.next(replies).map_err(Failure::Reply)?;
    }
}

/// A pool of blocking connections to one server of backend `B`, and the one place where
/// operations are run: deadlines, the connection bound, retries by idempotency, close.
pub struct Client<B: Backend> {
    backend: B,
    pool: Pool<Link<ReplyOf<B>>>,
    settings: ClientSettings,
    closed: AtomicBool,
    /// Operations in a row that failed on the connection or while opening one.
    failures: Failures,
}

impl<B: Backend> std::fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("backend", &self.backend)
            .field("settings", &self.settings)
            .field("pool", &self.pool_state())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A caller's hold on a pooled link: given back to the pool when dropped (a dead link then
/// leaves the pool).
struct Lease<'a, R> {
    link: Arc<Link<R>>,
    pool: &'a Pool<Link<R>>,
    /// The last request found the link idle (no reply on it since it last went idle): a dead
    /// socket then may mean the server closed it while it sat in the pool.
    after_idle: bool,
}

impl<R> Lease<'_, R> {
    /// Writes `request` and waits for its replies.
    fn round_trip<D: Decode<Reply = R>>(
        &mut self,
        decoder: &D,
        request: &Request,
        deadline: &Deadline,
    ) -> std::result::Result<Vec<R>, (Broken, bool)> {
        let ticket = self.send(decoder, request, deadline)?;
        self.link
            .receive(decoder, ticket, deadline)
            .map_err(|why| (why, true))
    }

    fn send<D: Decode<Reply = R>>(
        &mut self,
        decoder: &D,
        request: &Request,
        deadline: &Deadline,
    ) -> std::result::Result<Ticket, (Broken, bool)> {
        match self.link.send(decoder, request, deadline) {
            Ok(ticket) => {
                self.after_idle = ticket.after_idle;
                Ok(ticket)
            }
            Err((why, sent, after_idle)) => {
                self.after_idle = after_idle;
                Err((why, sent))
            }
        }
    }
}

impl<R> Drop for Lease<'_, R> {
    fn drop(&mut self) {
        self.pool.checkin(&self.link);
    }
}

/// Connection counts of a client, for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Connections open now (idle, busy, or being opened).
    pub open: usize,
    /// Idle ones.
    pub idle: usize,
    /// The most that were ever open at once.
    pub peak: usize,
}

impl<B: Backend> Client<B> {
    /// A client for `backend`; no connection is opened until the first operation.
    pub fn new(backend: B, settings: ClientSettings) -> Self {
        Self {
            pool: Pool::new(
                settings.max_connections,
                settings.max_idle_connections,
                settings.keepalive,
            ),
            backend,
            settings,
            closed: AtomicBool::new(false),
            failures: Failures::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The settings.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Connection counts right now.
    pub fn pool_state(&self) -> PoolState {
        let (open, idle, peak) = self.pool.counts();
        PoolState { open, idle, peak }
    }

    /// How many connections are open right now, idle or in use.
    pub fn open_connections(&self) -> usize {
        self.pool_state().open
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// How many operations in a row failed because the server could not be reached, broke
    /// the connection or did not answer in time; 0 after any operation the server answered.
    /// Waiting for a free connection is not the server's failure and does not count. Routers
    /// over several servers read this to take a failing server out.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.count()
    }

    /// Closes the client: idle connections are closed now, busy ones when their operation
    /// ends, and every later operation is `Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pool.close();
    }

    /// Runs the exchange `make` builds, as operation `operation`.
    ///
    /// The operation gets one deadline, `timeout` from now, covering the wait for a free
    /// connection, the requests and every reply; opening a new connection (handshake
    /// included) adds up to `connect_timeout`. A connection goes back to the pool only when
    /// every reply of its last request was read; any doubt drops it. When a connection taken
    /// from the pool turns out dead (the server restarted while it sat idle), the other idle
    /// ones are dropped too, and the operation runs once more on a new connection if no
    /// request that must not be sent twice may have reached the server.
    ///
    /// # Errors
    ///
    /// `Closed`; `Timeout` (no whole answer in time, or, on a TLS connection, which is never
    /// shared, no free connection in time); `Connection`;
    /// `Backend` for a reply over a limit or malformed; and the exchange's own errors.
    pub fn run<E, F>(&self, operation: &'static str, make: F) -> Result<E::Output>
    where
        E: Exchange<ReplyOf<B>>,
        F: FnMut() -> Result<E>,
    {
        self.run_until(operation, Deadline::after(self.settings.timeout), make)
    }

    /// [`run`](Self::run) within `deadline`, for an operation of several steps (a lookup,
    /// then the command; a redirection) that share one deadline.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub fn run_until<E, F>(
        &self,
        operation: &'static str,
        deadline: Deadline,
        mut make: F,
    ) -> Result<E::Output>
    where
        E: Exchange<ReplyOf<B>>,
        F: FnMut() -> Result<E>,
    {
        let backend = self.backend.name();
        if self.is_closed() {
            return Err(CacheError::Closed { backend });
        }
        let mut deadline = deadline;
        for attempt in 0..2 {
            let mut exchange = make()?;
            let mut guard = self.checkout(operation, &mut deadline)?;
            let decoder = self.backend.decoder();
            match drive(
                |request, deadline| guard.round_trip(decoder, request, deadline),
                &mut exchange,
                deadline,
                self.settings.timeout,
            ) {
                Ok(output) => {
                    drop(guard);
                    self.failures.answered();
                    return Ok(output);
                }
                Err(Failure::Reply(error)) => {
                    drop(guard);
                    self.failures.answered();
                    return Err(error);
                }
                // The blocking transport has no queue: it never refuses for a full one.
                Err(Failure::Full(_)) => {
                    drop(guard);
                    return Err(CacheError::Closed { backend });
                }
                Err(Failure::Broken {
                    why,
                    sent,
                    before_idempotent,
                    idempotent,
                }) => {
                    let retry = Retry {
                        attempt,
                        before_idempotent,
                        idempotent,
                        sent,
                    };
                    if let Some(error) = self.broken(operation, guard, why, retry, &deadline) {
                        return Err(error);
                    }
                }
            }
        }
        Err(CacheError::Closed { backend })
    }

    /// After a connection broke under an operation: drops it (and the idle ones too when it
    /// died while idle), and gives the error to return, or `None` when the retry rule
    /// ([`Retry::allowed`]) lets the operation run again on a new connection.
    fn broken(
        &self,
        operation: &'static str,
        guard: Lease<'_, ReplyOf<B>>,
        why: Broken,
        retry: Retry,
        deadline: &Deadline,
    ) -> Option<CacheError> {
        let dead_while_idle = guard.after_idle && why.is_dead_socket();
        drop(guard);
        if dead_while_idle {
            self.pool.drain_idle();
        }
        if retry.allowed(dead_while_idle) {
            return None;
        }
        self.failures.failed();
        Some(why.into_error(
            self.backend.name(),
            operation,
            self.backend.address(),
            deadline.budget(),
        ))
    }

    /// Runs one exchange on each client of `jobs` at once, as operation `operation`, and gives
    /// each one's result in the same order: the requests of every job are written before any
    /// reply is read, so the servers work on them together and the whole takes about as long
    /// as the slowest. Each job follows the rules of [`run_until`](Self::run_until), within
    /// `deadline`: connection bound and retry rule.
    pub fn run_each<'c, E, F>(
        operation: &'static str,
        deadline: Deadline,
        jobs: Vec<(&'c Client<B>, F)>,
    ) -> Vec<Result<E::Output>>
    where
        E: Exchange<ReplyOf<B>>,
        F: FnMut() -> Result<E>,
    {
        let mut jobs: Vec<Job<'c, B, E, F>> = jobs
            .into_iter()
            .map(|(client, make)| Job {
                deadline,
                in_flight: deadline,
                client,
                make,
                attempt: 0,
                guard: None,
                ticket: None,
                exchange: None,
                request: None,
                waiting: false,
                before_idempotent: true,
                result: None,
            })
            .collect();
        loop {
            for job in jobs.iter_mut().filter(|job| job.result.is_none()) {
                job.start_and_send(operation);
            }
            if jobs.iter().all(|job| job.result.is_some()) {
                break;
            }
            for job in jobs.iter_mut().filter(|job| job.waiting) {
                job.receive(operation);
            }
        }
        jobs.into_iter()
            .map(|job| {
                job.result.unwrap_or(Err(CacheError::Closed {
                    backend: job.client.backend.name(),
                }))
            })
            .collect()
    }

    /// A connection of its own, outside the pool and its bound, opened and handshaken like
    /// the pool's: for a subscriber that sends a few commands and then reads what the server
    /// pushes (Redis pub/sub, client tracking). Nothing is retried on it; when it breaks, open
    /// another.
    ///
    /// # Errors
    ///
    /// `Closed`, and as opening a pooled connection: `Connection`, `Timeout`,
    /// `Authentication`, within `connect_timeout`.
    pub fn dedicated(&self, operation: &'static str) -> Result<Dedicated<'_, B>> {
        if self.is_closed() {
            return Err(CacheError::Closed {
                backend: self.backend.name(),
            });
        }
        let conn = self.open(operation)?;
        Ok(Dedicated {
            client: self,
            conn,
            operation,
        })
    }

    /// A connection: an idle one, a new one (then `deadline` is extended by the time spent
    /// opening it), or, past the bound, a share of a busy one.
    fn checkout(
        &self,
        operation: &'static str,
        deadline: &mut Deadline,
    ) -> Result<Lease<'_, ReplyOf<B>>> {
        let backend = self.backend.name();
        match self.pool.checkout(deadline) {
            Ok(Slot::Taken(link)) => Ok(Lease {
                link,
                pool: &self.pool,
                after_idle: false,
            }),
            Ok(Slot::Vacant) => {
                let started = Instant::now();
                match self.open(operation) {
                    Ok(conn) => {
                        *deadline = deadline.extended(started.elapsed());
                        let link = Arc::new(Link::new(conn, self.settings.timeout));
                        self.pool.opened(Arc::clone(&link));
                        Ok(Lease {
                            link,
                            pool: &self.pool,
                            after_idle: false,
                        })
                    }
                    Err(e) => {
                        self.pool.failed();
                        if e.is_transient() {
                            self.failures.failed();
                        }
                        Err(e)
                    }
                }
            }
            Err(Refusal::Closed) => Err(CacheError::Closed { backend }),
            Err(Refusal::Timeout) => Err(CacheError::Timeout {
                backend,
                operation,
                address: self.backend.address().to_string(),
                after: deadline.budget(),
            }),
        }
    }

    /// The error a caller sees when connecting to `address` failed for `why`.
    fn connect_error(&self, why: Broken, operation: &'static str, address: &str) -> CacheError {
        why.into_error(
            self.backend.name(),
            operation,
            address,
            self.settings.connect_timeout,
        )
    }

    /// Opens a connection and runs the backend's handshake on it, within `connect_timeout`.
    fn open(&self, operation: &'static str) -> Result<Conn> {
        let address = self.backend.address();
        let budget = self.settings.connect_timeout;
        let deadline = Deadline::after(budget);
        let failed = |why: Broken| self.connect_error(why, operation, address);
        let stream = match crate::backend::unix_path(address) {
            Some(path) => connect_unix(path).map_err(|e| failed(Broken::Io(e)))?,
            None => {
                let tcp = self.connect_tcp(address, &deadline, operation)?;
                self.wrap(tcp, &deadline).map_err(failed)?
            }
        };
        let mut conn = Conn::new(stream);
        if let Some(mut handshake) = self.backend.handshake() {
            let decoder = self.backend.decoder();
            match drive(
                |request, deadline| conn.round_trip(decoder, request, deadline),
                &mut handshake,
                deadline,
                budget,
            ) {
                Ok(()) => {}
                Err(Failure::Reply(e)) => return Err(e),
                Err(Failure::Full(_)) => return Err(failed(Broken::Timeout)),
                Err(Failure::Broken { why, .. }) => return Err(failed(why)),
            }
        }
        Ok(conn)
    }

    /// A TCP connection to `address` (`host:port`, every address it resolves to in turn),
    /// with `TCP_NODELAY` and the keepalive setting.
    fn connect_tcp(
        &self,
        address: &str,
        deadline: &Deadline,
        operation: &'static str,
    ) -> Result<TcpStream> {
        let unreachable = |e: io::Error| self.connect_error(Broken::Io(e), operation, address);
        let timed_out = || self.connect_error(Broken::Timeout, operation, address);
        let addrs: Vec<SocketAddr> = address.to_socket_addrs().map_err(unreachable)?.collect();
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            let Some(left) = deadline.remaining() else {
                return Err(timed_out());
            };
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) if is_timeout(&e) => return Err(timed_out()),
                Err(e) => last = Some(e),
            }
        }
        let Some(tcp) = tcp else {
            return Err(unreachable(last.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing")
            })));
        };
        tcp.set_nodelay(true).map_err(unreachable)?;
        crate::settings::set_tcp_keepalive(&tcp, self.settings.keepalive).map_err(unreachable)?;
        Ok(tcp)
    }

    #[cfg(feature = "tls")]
    fn wrap(
        &self,
        tcp: TcpStream,
        deadline: &Deadline,
    ) -> std::result::Result<Box<dyn SyncStream>, Broken> {
        let Some(tls) = self.backend.tls() else {
            return Ok(Box::new(tcp));
        };
        let mut session =
            rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())
                .map_err(|e| Broken::Io(io::Error::other(e)))?;
        let mut tcp = tcp;
        while session.is_handshaking() {
            let left = deadline.remaining().ok_or(Broken::Timeout)?;
            tcp.set_read_timeout(Some(left)).map_err(Broken::Io)?;
            tcp.set_write_timeout(Some(left)).map_err(Broken::Io)?;
            match session.complete_io(&mut tcp) {
                Ok((0, 0)) if session.is_handshaking() => return Err(Broken::Closed),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(Broken::Timeout),
                Err(e) => return Err(Broken::Io(e)),
            }
        }
        Ok(Box::new(rustls::StreamOwned::new(session, tcp)))
    }

    #[cfg(not(feature = "tls"))]
    fn wrap(
        &self,
        tcp: TcpStream,
        _deadline: &Deadline,
    ) -> std::result::Result<Box<dyn SyncStream>, Broken> {
        Ok(Box::new(tcp))
    }
}

/// A connection to the Unix domain socket at `path`. Connecting to a local socket does not
/// wait on a network: it succeeds or fails at once (a full listen queue fails with
/// `EAGAIN`), so the connect timeout has nothing to bound.
#[cfg(unix)]
fn connect_unix(path: &std::path::Path) -> io::Result<Box<dyn SyncStream>> {
    Ok(Box::new(std::os::unix::net::UnixStream::connect(path)?))
}

#[cfg(not(unix))]
fn connect_unix(_path: &std::path::Path) -> io::Result<Box<dyn SyncStream>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "Unix domain sockets need a Unix platform",
    ))
}

/// A connection outside the pool, from [`Client::dedicated`]: the caller sends requests and
/// reads replies (or pushed messages) one at a time, each bounded in time and by limits.
pub struct Dedicated<'c, B: Backend> {
    client: &'c Client<B>,
    conn: Conn,
    operation: &'static str,
}

impl<B: Backend> std::fmt::Debug for Dedicated<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedicated")
            .field("address", &self.client.backend.address())
            .field("operation", &self.operation)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> Dedicated<'_, B> {
    fn error(&self, why: Broken, budget: Duration) -> CacheError {
        let backend = &self.client.backend;
        why.into_error(backend.name(), self.operation, backend.address(), budget)
    }

    /// Writes `bytes` (whole commands), within `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout`, `Connection`; the connection is then unusable.
    pub fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<()> {
        let deadline = Deadline::after(timeout);
        let mut sent = false;
        self.conn
            .send(bytes, &deadline, &mut sent)
            .map_err(|why| self.error(why, timeout))
    }

    /// The next reply or pushed message, waiting at most `wait`: `Ok(None)` when nothing whole
    /// arrived by then (what did arrive is kept for the next call).
    ///
    /// # Errors
    ///
    /// `Connection` when the server closed the connection or the socket failed, `Backend` for a
    /// reply over `limits` or malformed; the connection is then unusable.
    pub fn receive(
        &mut self,
        limits: &crate::protocol::ReplyLimits,
        wait: Duration,
    ) -> Result<Option<ReplyOf<B>>> {
        let deadline = Deadline::after(wait);
        let decoder = self.client.backend.decoder();
        loop {
            match self.conn.buf.decode_any(decoder, limits) {
                Ok(Some(reply)) => return Ok(Some(reply)),
                Ok(None) => {}
                Err(e) => return Err(self.error(Broken::Protocol(e), wait)),
            }
            match self.conn.arm(Direction::Read, &deadline) {
                Ok(()) => {}
                Err(Broken::Timeout) => return Ok(None),
                Err(why) => return Err(self.error(why, wait)),
            }
            let spare = self.conn.buf.spare();
            match self.conn.stream.read(spare) {
                Ok(0) => return Err(self.error(Broken::Closed, wait)),
                Ok(n) => self.conn.buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => {
                    if deadline.remaining().is_none() {
                        return Ok(None);
                    }
                    // The socket's timeout was longer than the time left: set it again.
                    if let Err(why) = self.conn.timed_out(Direction::Read, &deadline) {
                        return match why {
                            Broken::Timeout => Ok(None),
                            why => Err(self.error(why, wait)),
                        };
                    }
                }
                Err(e) => return Err(self.error(Broken::Io(e), wait)),
            }
        }
    }
}
