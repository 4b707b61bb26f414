//! The blocking transport: pooled connections, each carrying one request at a time, every read
//! and write bounded by the operation's deadline.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cache_core::{CacheError, Result};

use crate::backend::{Backend, Broken, Failure, ReplyOf};
use crate::buffer::ReadBuffer;
use crate::exchange::{Deadline, Exchange, Request, Step};
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
}

impl SyncStream for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }

    fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
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
}

/// One connection.
struct Conn {
    stream: Box<dyn SyncStream>,
    buf: ReadBuffer,
    /// What the socket's timeouts are set to, so they are changed only when the time left is
    /// shorter: most operations then make no extra system call.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

impl Conn {
    fn new(stream: Box<dyn SyncStream>) -> Self {
        Self {
            stream,
            buf: ReadBuffer::new(),
            read_timeout: None,
            write_timeout: None,
        }
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
        if current.is_none_or(|set| set > left) {
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
    fn send(
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

    /// Reads one reply.
    fn receive<D: Decode>(
        &mut self,
        decoder: &D,
        request: &Request,
        deadline: &Deadline,
    ) -> std::result::Result<D::Reply, Broken> {
        loop {
            if let Some(reply) = self
                .buf
                .decode(decoder, &request.limits)
                .map_err(Broken::Protocol)?
            {
                return Ok(reply);
            }
            self.arm(Direction::Read, deadline)?;
            let spare = self.buf.spare();
            match self.stream.read(spare) {
                Ok(0) => return Err(Broken::Closed),
                Ok(n) => self.buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => self.timed_out(Direction::Read, deadline)?,
                Err(e) => return Err(Broken::Io(e)),
            }
        }
    }

    /// Sends `request` and reads all its replies.
    fn round_trip<D: Decode>(
        &mut self,
        decoder: &D,
        request: &Request,
        deadline: &Deadline,
    ) -> std::result::Result<Vec<D::Reply>, (Broken, bool)> {
        let mut sent = false;
        if !self.buf.is_empty() {
            // Bytes nobody asked for: the stream is out of step with its requests.
            return Err((
                Broken::Protocol(crate::protocol::ProtocolError::Unexpected(
                    "bytes arrived before the request".into(),
                )),
                false,
            ));
        }
        self.send(&request.bytes, deadline, &mut sent)
            .map_err(|b| (b, sent))?;
        let mut replies = Vec::with_capacity(request.replies);
        for index in 0..request.replies {
            let reply = self
                .receive(decoder, request, deadline)
                .map_err(|b| (b, true))?;
            decoder
                .check(&reply, index)
                .map_err(|e| (Broken::Protocol(e), true))?;
            replies.push(reply);
        }
        Ok(replies)
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Runs `exchange` on `conn`: each request gets the operation's deadline, or its own.
fn drive<D: Decode, E: Exchange<D::Reply>>(
    conn: &mut Conn,
    decoder: &D,
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
            conn.round_trip(decoder, &request, &this_deadline)
                .map_err(|(why, sent)| Failure::Broken {
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
    pool: Pool<Conn>,
    settings: ClientSettings,
    closed: AtomicBool,
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

/// A connection counted against the pool's bound: it goes back with [`Lease::checkin`], and
/// gives its room back when dropped otherwise (a broken connection, a panic).
struct Lease<'a> {
    conn: Option<Conn>,
    pool: &'a Pool<Conn>,
    reused: bool,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut Conn {
        // Present until `checkin` consumes the lease.
        self.conn
            .get_or_insert_with(|| unreachable!("a lease holds its connection"))
    }

    fn checkin(mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.checkin(conn);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.pool.release();
        }
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
            pool: Pool::new(settings.max_connections, settings.max_idle_connections),
            backend,
            settings,
            closed: AtomicBool::new(false),
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

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
    /// `Closed`; `Timeout` (no free connection in time, or no whole answer); `Connection`;
    /// `Backend` for a reply over a limit or malformed; and the exchange's own errors.
    pub fn run<E, F>(&self, operation: &'static str, mut make: F) -> Result<E::Output>
    where
        E: Exchange<ReplyOf<B>>,
        F: FnMut() -> Result<E>,
    {
        let backend = self.backend.name();
        if self.is_closed() {
            return Err(CacheError::Closed { backend });
        }
        let mut deadline = Deadline::after(self.settings.timeout);
        for attempt in 0..2 {
            let mut exchange = make()?;
            let mut lease = self.checkout(operation, &mut deadline)?;
            match drive(
                lease.conn(),
                self.backend.decoder(),
                &mut exchange,
                deadline,
                self.settings.timeout,
            ) {
                Ok(output) => {
                    lease.checkin();
                    return Ok(output);
                }
                Err(Failure::Reply(error)) => {
                    lease.checkin();
                    return Err(error);
                }
                Err(Failure::Broken {
                    why,
                    sent,
                    before_idempotent,
                    idempotent,
                }) => {
                    let dead_while_idle = lease.reused && why.is_dead_socket();
                    drop(lease);
                    if dead_while_idle {
                        self.pool.drain_idle();
                    }
                    let again = attempt == 0
                        && dead_while_idle
                        && before_idempotent
                        && (idempotent || !sent);
                    if !again {
                        return Err(why.into_error(
                            backend,
                            operation,
                            self.backend.address(),
                            deadline.budget(),
                        ));
                    }
                }
            }
        }
        Err(CacheError::Closed { backend })
    }

    /// A connection: an idle one, or a new one (then `deadline` is extended by the time spent
    /// opening it).
    fn checkout(&self, operation: &'static str, deadline: &mut Deadline) -> Result<Lease<'_>> {
        let backend = self.backend.name();
        match self.pool.checkout(deadline) {
            Ok(Slot::Idle(conn)) => Ok(Lease {
                conn: Some(conn),
                pool: &self.pool,
                reused: true,
            }),
            Ok(Slot::Vacant) => {
                let started = Instant::now();
                match self.open(operation) {
                    Ok(conn) => {
                        *deadline = deadline.extended(started.elapsed());
                        Ok(Lease {
                            conn: Some(conn),
                            pool: &self.pool,
                            reused: false,
                        })
                    }
                    Err(e) => {
                        self.pool.release();
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

    /// Opens a connection and runs the backend's handshake on it, within `connect_timeout`.
    fn open(&self, operation: &'static str) -> Result<Conn> {
        let backend = self.backend.name();
        let address = self.backend.address();
        let budget = self.settings.connect_timeout;
        let deadline = Deadline::after(budget);
        let unreachable = |e: io::Error| CacheError::Connection {
            backend,
            operation,
            address: address.to_string(),
            source: Some(Box::new(e)),
        };
        let timed_out = || CacheError::Timeout {
            backend,
            operation,
            address: address.to_string(),
            after: budget,
        };
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
        let stream = self
            .wrap(tcp, &deadline)
            .map_err(|why| why.into_error(backend, operation, address, budget))?;
        let mut conn = Conn::new(stream);
        if let Some(mut handshake) = self.backend.handshake() {
            match drive(
                &mut conn,
                self.backend.decoder(),
                &mut handshake,
                deadline,
                budget,
            ) {
                Ok(()) => {}
                Err(Failure::Reply(e)) => return Err(e),
                Err(Failure::Broken { why, .. }) => {
                    return Err(why.into_error(backend, operation, address, budget));
                }
            }
        }
        Ok(conn)
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
