//! The async transport on tokio: every caller's requests pipelined on one connection (or a few),
//! replies matched by order, the same exchanges, deadlines, limits and retry rule as the
//! blocking transport.
//!
//! Each connection has two tasks. The writer takes requests from a channel, records each one's
//! place in the queue of expected replies *before* writing it, and writes as many as are waiting
//! in one system call. The reader decodes replies with the request's limits and hands each
//! request its replies, in order. A caller only sends a request and awaits its replies, so a
//! caller that is dropped at any point (a timeout, a `select!`) leaves the connection in step: its
//! request, once the writer took it, is written whole and its replies read, then discarded. No
//! reply can reach another caller: a reply belongs to the oldest request not yet answered.
//!
//! What the rules promise, each checked by a test (see `docs/RELIABILITY.md`):
//!
//! - **A stalled connection is replaced.** The reader watches the oldest unanswered request,
//!   whenever it was queued: once it is a whole `timeout` past its deadline, the connection is
//!   closed and every request on it fails; the next operation opens a new one. So the engine
//!   serves again within `2 x timeout + connect_timeout` of a healthy server being reachable.
//!   A connection without traffic for [`ClientSettings::keepalive`] is checked with the
//!   backend's [`Backend::keepalive`] request under the same rule, and its socket has TCP
//!   keepalive on.
//! - **One connection attempt serves every waiter.** A connection is opened by a task of its
//!   own; callers that find it opening wait for that attempt, each until its own deadline
//!   (`timeout + connect_timeout` after its call). A failed attempt fails them all with its
//!   error; the next operation tries again.
//! - **Bounded queues, no work for callers that have gone.** What waits on a connection is
//!   bounded in requests ([`ClientSettings::max_queued_requests`], counted until answered) and
//!   in bytes ([`ClientSettings::max_queued_bytes`], counted until written); past either bound
//!   an operation fails at once with [`CacheError::Overloaded`]. A request whose caller was
//!   cancelled, or whose deadline passed, before the writer took it is never written.
//! - **Per-key order.** An operation on one key goes on the connection its key hashes to
//!   ([`Make::route`]), so the operations on a key reach the server in the order they were
//!   issued while that connection lives.
//!
//! This module needs a tokio runtime: operations started elsewhere fail with a `Connection`
//! error saying so.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ::tokio::sync::{Notify, mpsc, oneshot, watch};
use ::tokio::task::AbortHandle;
use ::tokio::time::Instant;
use cache_core::{CacheError, Result};

use crate::backend::{Backend, Broken, Failure, Failures, QueueFull as Full, ReplyOf, Retry};
use crate::buffer::ReadBuffer;
use crate::exchange::{Deadline, Exchange, Request, Step};
use crate::protocol::{Decode, ProtocolError, ReplyLimits};
use crate::settings::ClientSettings;
use crate::transport::Make;

/// Requests of at most this many bytes are gathered into one write; larger ones are written on
/// their own, without a copy.
const GATHER: usize = 64 * 1024;
/// The most requests the writer takes from its channel for one write.
const BATCH: usize = 1024;

type Replies<R> = std::result::Result<Vec<R>, Broken>;

/// A request on its way to the writer.
struct Job<R> {
    bytes: Vec<u8>,
    replies: usize,
    limits: ReplyLimits,
    deadline: Instant,
    done: oneshot::Sender<Replies<R>>,
    ticket: Ticket,
}

/// A request written (or about to be), waiting for its replies.
struct Pending<R> {
    replies: usize,
    limits: ReplyLimits,
    deadline: Instant,
    got: Vec<R>,
    /// `None` for the transport's own keepalive request.
    done: Option<oneshot::Sender<Replies<R>>>,
    /// Its place in the queue bound, given back when the request is answered or fails.
    _ticket: Option<Ticket>,
}

/// What waits on one connection, against its bounds.
#[derive(Debug)]
struct Queue {
    requests: AtomicUsize,
    bytes: AtomicUsize,
    max_requests: usize,
    max_bytes: usize,
}

impl Queue {
    /// A place for a request of `bytes` bytes, if both bounds allow it. A request larger than
    /// the byte bound is admitted when nothing else waits, so that every request the engine
    /// accepts can be sent.
    fn admit(self: &Arc<Self>, bytes: usize) -> std::result::Result<Ticket, Full> {
        if self.requests.fetch_add(1, Ordering::AcqRel) >= self.max_requests {
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Requests(self.max_requests));
        }
        let before = self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if before > 0 && before.saturating_add(bytes) > self.max_bytes {
            self.bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Bytes(self.max_bytes));
        }
        Ok(Ticket {
            queue: Arc::clone(self),
            bytes,
        })
    }
}

/// A request's place in its connection's [`Queue`]: its bytes count until written, the request
/// until it is answered, fails or is dropped.
struct Ticket {
    queue: Arc<Queue>,
    bytes: usize,
}

impl Ticket {
    fn written(&mut self) {
        self.queue.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.bytes = 0;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.queue.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.queue.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a connection's tasks share.
struct Shared<R> {
    pending: Mutex<VecDeque<Pending<R>>>,
    dead: AtomicBool,
    /// Wakes the reader when a request joins an empty queue, so that it watches its deadline.
    queued: Notify,
    /// The writer and the reader, stopped when the connection dies.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl<R> Shared<R> {
    fn pending(&self) -> MutexGuard<'_, VecDeque<Pending<R>>> {
        lock(&self.pending)
    }

    /// Marks the connection dead, fails every request waiting on it and stops its tasks (a
    /// writer blocked on a stalled socket included): the requests it had not taken yet are
    /// dropped, and their callers learn that they never left.
    fn kill(&self, why: &Broken) {
        self.dead.store(true, Ordering::Release);
        let waiting: Vec<Pending<R>> = self.pending().drain(..).collect();
        for mut pending in waiting {
            if let Some(done) = pending.done.take() {
                let _ = done.send(Err(why.duplicate()));
            }
        }
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
    }

    /// Queues the replies of requests about to be written; wakes the reader when the queue
    /// was empty.
    fn expect(&self, requests: impl Iterator<Item = Pending<R>>) -> bool {
        let mut pending = self.pending();
        // Checked under the queue's lock: `kill` marks the connection dead before it empties
        // the queue, so requests are either queued before (and failed by `kill`) or see the
        // mark (and are dropped: their callers learn the request never left).
        if self.dead.load(Ordering::Acquire) {
            return false;
        }
        let was_empty = pending.is_empty();
        pending.extend(requests);
        drop(pending);
        if was_empty {
            self.queued.notify_one();
        }
        true
    }
}

/// One multiplexed connection: its request channel, what its tasks share, its queue bound.
struct Pipe<R> {
    jobs: mpsc::UnboundedSender<Job<R>>,
    shared: Arc<Shared<R>>,
    queue: Arc<Queue>,
}

impl<R> Drop for Pipe<R> {
    fn drop(&mut self) {
        for task in lock(&self.shared.tasks).drain(..) {
            task.abort();
        }
    }
}

impl<R> Pipe<R> {
    fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::Acquire)
    }
}

/// A byte stream the async transport can split into a reading and a writing half.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// How an attempt to open a connection ended, for every caller waiting on it.
type Opened<R> = Option<std::result::Result<Arc<Pipe<R>>, Arc<CacheError>>>;

/// One connection slot: the live pipe, or the attempt under way to open one.
struct Slot<R> {
    state: Mutex<SlotState<R>>,
}

struct SlotState<R> {
    pipe: Option<Arc<Pipe<R>>>,
    opening: Option<watch::Receiver<Opened<R>>>,
}

/// An async client of one server of backend `B`: callers' requests pipelined on
/// [`ClientSettings::pipelines`] connections, and the one place where operations are run.
pub struct Client<B: Backend> {
    backend: Arc<B>,
    settings: ClientSettings,
    slots: Vec<Arc<Slot<ReplyOf<B>>>>,
    next: AtomicUsize,
    closed: Arc<AtomicBool>,
    /// Operations in a row that failed on the connection or while opening one.
    failures: Failures,
}

impl<B: Backend> std::fmt::Debug for Client<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("backend", &self.backend)
            .field("settings", &self.settings)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Why a request could not be queued.
enum NotSent {
    /// The connection is dead.
    Broken(Broken),
    /// A bound of the queue is reached.
    Full(Full),
}

impl<B: Backend> Client<B> {
    /// A client for `backend`; no connection is opened until the first operation.
    pub fn new(backend: B, settings: ClientSettings) -> Self {
        let slots = (0..settings.pipelines.max(1))
            .map(|_| {
                Arc::new(Slot {
                    state: Mutex::new(SlotState {
                        pipe: None,
                        opening: None,
                    }),
                })
            })
            .collect();
        Self {
            backend: Arc::new(backend),
            settings,
            slots,
            next: AtomicUsize::new(0),
            closed: Arc::new(AtomicBool::new(false)),
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

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// How many operations in a row failed because the server could not be reached, broke
    /// the connection or did not answer in time; 0 after any operation the server answered
    /// (as [`blocking::Client::consecutive_failures`](crate::blocking::Client::consecutive_failures)).
    /// An operation refused because the queue was full does not count.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.count()
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| {
                lock(&slot.state)
                    .pipe
                    .as_ref()
                    .is_some_and(|pipe| !pipe.is_dead())
            })
            .count()
    }

    /// How many requests wait on the client's connections now (queued, or written and not yet
    /// answered), and how many of their bytes are not yet written.
    pub fn queued(&self) -> (usize, usize) {
        self.slots
            .iter()
            .filter_map(|slot| lock(&slot.state).pipe.clone())
            .filter(|pipe| !pipe.is_dead())
            .fold((0, 0), |(requests, bytes), pipe| {
                (
                    requests + pipe.queue.requests.load(Ordering::Acquire),
                    bytes + pipe.queue.bytes.load(Ordering::Acquire),
                )
            })
    }

    /// Closes the client: connections are closed (requests in flight fail), and every later
    /// operation is `Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in &self.slots {
            let pipe = lock(&slot.state).pipe.take();
            if let Some(pipe) = pipe {
                pipe.shared.kill(&Broken::Closed);
            }
        }
    }

    /// Runs the exchange `make` builds, as operation `operation`: the async twin of
    /// [`blocking::Client::run`](crate::blocking::Client::run), with the same deadline, limits
    /// and retry rule.
    ///
    /// # Errors
    ///
    /// As the blocking client's, and [`CacheError::Overloaded`] when the connection's queue is
    /// full.
    pub async fn run<E, F>(&self, operation: &'static str, make: F) -> Result<E::Output>
    where
        E: Exchange<ReplyOf<B>>,
        F: FnMut() -> Result<E> + Send,
    {
        self.run_until(operation, Deadline::after(self.settings.timeout), make)
            .await
    }

    /// [`run`](Self::run) within `deadline`, with any [`Make`]: for an operation of several
    /// steps that share one deadline. The operation goes on the connection of its
    /// [`Make::route`], or on the next connection in turn when it has none.
    ///
    /// The operation ends by `deadline`, moved later by the time spent waiting for a connection
    /// to open, but by no more than `connect_timeout`: whether it opens the connection, waits
    /// for another caller's attempt, or both, it ends within `timeout + connect_timeout` of
    /// its call.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub async fn run_until<M>(
        &self,
        operation: &'static str,
        given: Deadline,
        mut make: M,
    ) -> Result<crate::transport::Output<B, M>>
    where
        M: Make<ReplyOf<B>>,
    {
        let backend = self.backend.name();
        if self.is_closed() {
            return Err(CacheError::Closed { backend });
        }
        let started = Instant::now();
        let latest = Instant::from_std(given.instant()) + self.settings.connect_timeout;
        let mut deadline = given;
        let route = make.route();
        for attempt in 0..2 {
            let mut exchange = make.make()?;
            let (pipe, opened) = match self.pipe(operation, route, latest, &given).await {
                Ok(pipe) => pipe,
                Err(e) => {
                    if e.is_transient() {
                        self.failures.failed();
                    }
                    return Err(e);
                }
            };
            if let Some(opened) = opened {
                // Opening a connection has its own bound and does not eat the operation's.
                let waited = (opened - started).min(self.settings.connect_timeout);
                deadline = given.extended(waited);
            }
            match drive(
                &pipe,
                &mut exchange,
                Instant::from_std(deadline.instant()),
                self.settings.timeout,
            )
            .await
            {
                Ok(output) => {
                    self.failures.answered();
                    return Ok(output);
                }
                Err(Failure::Reply(error)) => {
                    self.failures.answered();
                    return Err(error);
                }
                Err(Failure::Full(full)) => return Err(self.overloaded(operation, &full)),
                Err(Failure::Broken { .. }) if self.is_closed() => {
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
                    if !retry.allowed(opened.is_none() && why.is_dead_socket()) {
                        self.failures.failed();
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

    fn overloaded(&self, operation: &'static str, full: &Full) -> CacheError {
        CacheError::Overloaded {
            backend: self.backend.name(),
            operation,
            address: self.backend.address().to_string(),
            bound: match full {
                Full::Requests(n) => format!("{n} requests"),
                Full::Bytes(n) => format!("{n} bytes"),
            },
        }
    }

    /// The slot an operation with `route` goes to.
    fn slot(&self, route: Option<u64>) -> &Arc<Slot<ReplyOf<B>>> {
        let count = self.slots.len();
        let index = match route {
            // The remainder is below `count`, a usize.
            Some(route) => usize::try_from(route % count as u64).unwrap_or(0),
            None => self.next.fetch_add(1, Ordering::Relaxed) % count,
        };
        &self.slots[index]
    }

    /// A live connection of the slot of `route`, and when it was opened if this operation
    /// waited for that (`None`: it was already open). Waits until `latest` at most.
    async fn pipe(
        &self,
        operation: &'static str,
        route: Option<u64>,
        latest: Instant,
        given: &Deadline,
    ) -> Result<(Arc<Pipe<ReplyOf<B>>>, Option<Instant>)> {
        let backend = self.backend.name();
        let slot = self.slot(route);
        let mut opening = {
            let mut state = lock(&slot.state);
            if let Some(pipe) = state.pipe.as_ref().filter(|pipe| !pipe.is_dead()) {
                return Ok((Arc::clone(pipe), None));
            }
            if self.is_closed() {
                return Err(CacheError::Closed { backend });
            }
            match state.opening.as_ref() {
                // An attempt under way (its task still holds the sender).
                Some(opening) if opening.has_changed().is_ok() => opening.clone(),
                _ => {
                    if ::tokio::runtime::Handle::try_current().is_err() {
                        return Err(CacheError::Connection {
                            backend,
                            operation,
                            address: self.backend.address().to_string(),
                            source: Some(
                                "the async engines need a tokio runtime, and none is running"
                                    .into(),
                            ),
                        });
                    }
                    let (sender, receiver) = watch::channel(None);
                    state.opening = Some(receiver.clone());
                    ::tokio::spawn(open_into(
                        Arc::clone(slot),
                        Arc::clone(&self.backend),
                        self.settings.clone(),
                        Arc::clone(&self.closed),
                        operation,
                        sender,
                    ));
                    receiver
                }
            }
        };
        let timed_out = || CacheError::Timeout {
            backend,
            operation,
            address: self.backend.address().to_string(),
            after: given.budget() + self.settings.connect_timeout,
        };
        let outcome =
            match ::tokio::time::timeout_at(latest, opening.wait_for(std::option::Option::is_some))
                .await
            {
                Err(_) => return Err(timed_out()),
                // The attempt's task was dropped (the runtime is shutting down).
                Ok(Err(_)) => return Err(CacheError::Closed { backend }),
                Ok(Ok(outcome)) => outcome.clone(),
            };
        match outcome {
            Some(Ok(pipe)) => Ok((pipe, Some(Instant::now()))),
            Some(Err(error)) => Err(for_waiter(&error, operation)),
            None => Err(timed_out()),
        }
    }
}

/// The error of a failed connection attempt, for one of the callers that waited on it.
fn for_waiter(error: &CacheError, operation: &'static str) -> CacheError {
    use std::error::Error as _;
    let source = || {
        error
            .source()
            .map(|s| -> cache_core::BoxError { s.to_string().into() })
    };
    match error {
        CacheError::Timeout {
            backend,
            address,
            after,
            ..
        } => CacheError::Timeout {
            backend,
            operation,
            address: address.clone(),
            after: *after,
        },
        CacheError::Connection {
            backend, address, ..
        } => CacheError::Connection {
            backend,
            operation,
            address: address.clone(),
            source: source(),
        },
        CacheError::Authentication {
            backend, address, ..
        } => CacheError::Authentication {
            backend,
            address: address.clone(),
            source: source(),
        },
        CacheError::PermissionDenied { backend, .. } => CacheError::PermissionDenied {
            backend,
            operation,
            source: source(),
        },
        CacheError::Closed { backend } => CacheError::Closed { backend },
        CacheError::InvalidConfig { message } => CacheError::invalid_config(message.clone()),
        other => CacheError::Backend {
            backend: match other {
                CacheError::Backend { backend, .. } => backend,
                _ => "remote",
            },
            source: other.to_string().into(),
        },
    }
}

/// Opens a connection for `slot` and tells every caller waiting on `sender` how it went.
async fn open_into<B: Backend>(
    slot: Arc<Slot<ReplyOf<B>>>,
    backend: Arc<B>,
    settings: ClientSettings,
    closed: Arc<AtomicBool>,
    operation: &'static str,
    sender: watch::Sender<Opened<ReplyOf<B>>>,
) {
    let opened = open(&backend, &settings, operation).await;
    let outcome = {
        let mut state = lock(&slot.state);
        state.opening = None;
        match opened {
            Ok(pipe) if closed.load(Ordering::Acquire) => {
                pipe.shared.kill(&Broken::Closed);
                Err(Arc::new(CacheError::Closed {
                    backend: backend.name(),
                }))
            }
            Ok(pipe) => {
                let pipe = Arc::new(pipe);
                state.pipe = Some(Arc::clone(&pipe));
                Ok(pipe)
            }
            Err(error) => Err(Arc::new(error)),
        }
    };
    sender.send_replace(Some(outcome));
}

/// Opens a connection, starts its tasks and runs the backend's handshake on it, within
/// `connect_timeout`.
async fn open<B: Backend>(
    backend: &Arc<B>,
    settings: &ClientSettings,
    operation: &'static str,
) -> Result<Pipe<ReplyOf<B>>> {
    let name = backend.name();
    let address = backend.address();
    let budget = settings.connect_timeout;
    let deadline = Instant::now() + budget;
    let timed_out = || CacheError::Timeout {
        backend: name,
        operation,
        address: address.to_string(),
        after: budget,
    };
    let (read, write) = match crate::backend::unix_path(address) {
        Some(path) => match ::tokio::time::timeout_at(deadline, connect_unix(path)).await {
            Err(_) => return Err(timed_out()),
            Ok(halves) => {
                halves.map_err(|e| Broken::Io(e).into_error(name, operation, address, budget))?
            }
        },
        None => {
            let tcp = match ::tokio::time::timeout_at(
                deadline,
                ::tokio::net::TcpStream::connect(address),
            )
            .await
            {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => {
                    return Err(Broken::Io(e).into_error(name, operation, address, budget));
                }
                Ok(Ok(tcp)) => tcp,
            };
            tcp.set_nodelay(true)
                .map_err(|e| Broken::Io(e).into_error(name, operation, address, budget))?;
            crate::settings::set_tcp_keepalive(&tcp, settings.keepalive)
                .map_err(|e| Broken::Io(e).into_error(name, operation, address, budget))?;
            match ::tokio::time::timeout_at(deadline, wrap(&**backend, tcp)).await {
                Err(_) => return Err(timed_out()),
                Ok(halves) => {
                    halves.map_err(|why| why.into_error(name, operation, address, budget))?
                }
            }
        }
    };
    let pipe = start(Arc::clone(backend), read, write, settings);
    if let Some(mut handshake) = backend.handshake() {
        match drive(&pipe, &mut handshake, deadline, settings.timeout).await {
            Ok(()) => {}
            Err(Failure::Reply(e)) => return Err(e),
            Err(Failure::Full(_)) => return Err(timed_out()),
            Err(Failure::Broken { why, .. }) => {
                return Err(why.into_error(name, operation, address, budget));
            }
        }
    }
    Ok(pipe)
}

/// A connection to the Unix domain socket at `path`, split in halves.
#[cfg(unix)]
async fn connect_unix(path: &std::path::Path) -> std::io::Result<(ReadHalf, WriteHalf)> {
    let stream = ::tokio::net::UnixStream::connect(path).await?;
    let (read, write) = stream.into_split();
    Ok((Box::new(read), Box::new(write)))
}

#[cfg(not(unix))]
async fn connect_unix(_path: &std::path::Path) -> std::io::Result<(ReadHalf, WriteHalf)> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "Unix domain sockets need a Unix platform",
    ))
}

#[cfg(feature = "tls")]
async fn wrap<B: Backend>(
    backend: &B,
    tcp: ::tokio::net::TcpStream,
) -> std::result::Result<(ReadHalf, WriteHalf), Broken> {
    let Some(tls) = backend.tls() else {
        let (read, write) = tcp.into_split();
        return Ok((Box::new(read), Box::new(write)));
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
    let stream = connector
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(Broken::Io)?;
    let (read, write) = ::tokio::io::split(stream);
    Ok((Box::new(read), Box::new(write)))
}

#[cfg(not(feature = "tls"))]
async fn wrap<B: Backend>(
    _backend: &B,
    tcp: ::tokio::net::TcpStream,
) -> std::result::Result<(ReadHalf, WriteHalf), Broken> {
    let (read, write) = tcp.into_split();
    Ok((Box::new(read), Box::new(write)))
}

/// Sends each request of `exchange` on `pipe` and hands it the replies.
async fn drive<R: Send + 'static, E: Exchange<R>>(
    pipe: &Pipe<R>,
    exchange: &mut E,
    deadline: Instant,
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
            Instant::now() + timeout
        } else {
            deadline
        };
        let broken = |why, sent| Failure::Broken {
            why,
            sent,
            before_idempotent,
            idempotent: request.idempotent,
        };
        let replies = match send(pipe, &request, this_deadline) {
            Err(NotSent::Broken(why)) => return Err(broken(why, false)),
            Err(NotSent::Full(full)) => return Err(Failure::Full(full)),
            Ok(receiver) => match ::tokio::time::timeout_at(this_deadline, receiver).await {
                // The deadline passed: this caller stops waiting. A request the writer has not
                // taken yet is never written; one it took is read and dropped, and the
                // connection stays in step.
                Err(_) => return Err(broken(Broken::Timeout, true)),
                // The request never reached the writer: the connection died first.
                Ok(Err(_)) => return Err(broken(Broken::Closed, false)),
                Ok(Ok(Err(why))) => return Err(broken(why, true)),
                Ok(Ok(Ok(replies))) => replies,
            },
        };
        before_idempotent &= request.idempotent;
        step = exchange.next(replies).map_err(Failure::Reply)?;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Queues `request` on `pipe`; the receiver gets its replies.
fn send<R>(
    pipe: &Pipe<R>,
    request: &Request,
    deadline: Instant,
) -> std::result::Result<oneshot::Receiver<Replies<R>>, NotSent> {
    if pipe.is_dead() {
        return Err(NotSent::Broken(Broken::Closed));
    }
    let ticket = pipe
        .queue
        .admit(request.bytes.len())
        .map_err(NotSent::Full)?;
    let (done, receiver) = oneshot::channel();
    let job = Job {
        bytes: request.bytes.clone(),
        replies: request.replies,
        limits: request.limits,
        deadline,
        done,
        ticket,
    };
    pipe.jobs
        .send(job)
        .map_err(|_| NotSent::Broken(Broken::Closed))?;
    Ok(receiver)
}

/// The transport's own check of an idle connection.
struct Keepalive {
    every: Duration,
    request: Request,
}

/// Starts the writer and the reader of a new connection.
fn start<B: Backend>(
    backend: Arc<B>,
    read: ReadHalf,
    write: WriteHalf,
    settings: &ClientSettings,
) -> Pipe<ReplyOf<B>> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(VecDeque::new()),
        dead: AtomicBool::new(false),
        queued: Notify::new(),
        tasks: Mutex::new(Vec::with_capacity(2)),
    });
    let queue = Arc::new(Queue {
        requests: AtomicUsize::new(0),
        bytes: AtomicUsize::new(0),
        max_requests: settings.max_queued_requests.max(1),
        max_bytes: settings.max_queued_bytes,
    });
    let keepalive = settings.keepalive.and_then(|every| {
        backend
            .keepalive()
            .map(|request| Keepalive { every, request })
    });
    let (jobs, inbox) = mpsc::unbounded_channel();
    let writer = ::tokio::spawn(write_loop(inbox, write, Arc::clone(&shared), keepalive));
    let reader = ::tokio::spawn(read_loop(
        backend,
        read,
        Arc::clone(&shared),
        settings.timeout,
    ));
    {
        let mut tasks = lock(&shared.tasks);
        tasks.push(writer.abort_handle());
        tasks.push(reader.abort_handle());
    }
    // A task that ended before its handle was kept (the connection died at once) is aborted
    // harmlessly; one that runs is stopped by `kill` or when the pipe is dropped.
    if shared.dead.load(Ordering::Acquire) {
        writer.abort();
        reader.abort();
    }
    Pipe {
        jobs,
        shared,
        queue,
    }
}

/// Takes requests from `inbox`, queues each one's expected replies, and writes as many as are
/// waiting at once. Requests whose callers have gone are dropped unwritten. After `keepalive`
/// without a request, sends the backend's keepalive request.
async fn write_loop<R: Send + 'static>(
    mut inbox: mpsc::UnboundedReceiver<Job<R>>,
    mut write: WriteHalf,
    shared: Arc<Shared<R>>,
    keepalive: Option<Keepalive>,
) {
    let mut gathered: Vec<u8> = Vec::with_capacity(GATHER);
    loop {
        let first = match &keepalive {
            None => inbox.recv().await,
            Some(keepalive) => {
                match ::tokio::time::timeout(keepalive.every, inbox.recv()).await {
                    Ok(job) => job,
                    Err(_) => {
                        // No request for a while: check that the server still answers. The
                        // reply is due within `timeout`, or the reader closes the connection.
                        let check = Pending {
                            replies: keepalive.request.replies,
                            limits: keepalive.request.limits,
                            deadline: Instant::now(),
                            got: Vec::new(),
                            done: None,
                            _ticket: None,
                        };
                        if !shared.expect(std::iter::once(check)) {
                            return;
                        }
                        if let Err(e) = write_flush(&mut write, &keepalive.request.bytes).await {
                            shared.kill(&Broken::Io(e));
                            return;
                        }
                        continue;
                    }
                }
            }
        };
        let Some(first) = first else { break };
        // Let the callers that are ready to run queue their requests first: tokio runs a task
        // it just woke before the others, so without this the writer would take requests one
        // at a time, one system call each, when many callers are busy.
        ::tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match inbox.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A request whose caller has gone (cancelled, or past its deadline) is never written.
        let now = Instant::now();
        let mut requests = Vec::with_capacity(batch.len());
        let mut expected = Vec::with_capacity(batch.len());
        for job in batch {
            if job.done.is_closed() {
                continue;
            }
            if job.deadline <= now {
                let _ = job.done.send(Err(Broken::Timeout));
                continue;
            }
            let mut ticket = job.ticket;
            ticket.written();
            requests.push(job.bytes);
            expected.push(Pending {
                replies: job.replies,
                limits: job.limits,
                deadline: job.deadline,
                got: Vec::with_capacity(job.replies),
                done: Some(job.done),
                _ticket: Some(ticket),
            });
        }
        if expected.is_empty() {
            continue;
        }
        if !shared.expect(expected.into_iter()) {
            return;
        }
        let mut result = Ok(());
        for bytes in requests {
            if bytes.len() > GATHER {
                if !gathered.is_empty() {
                    result = result.and(write.write_all(&gathered).await);
                    gathered.clear();
                }
                result = result.and(write.write_all(&bytes).await);
            } else {
                if gathered.len() + bytes.len() > GATHER {
                    result = result.and(write.write_all(&gathered).await);
                    gathered.clear();
                }
                gathered.extend_from_slice(&bytes);
            }
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() && !gathered.is_empty() {
            result = write.write_all(&gathered).await;
        }
        gathered.clear();
        if result.is_ok() {
            result = write.flush().await;
        }
        if let Err(e) = result {
            shared.kill(&Broken::Io(e));
            return;
        }
    }
    // Every sender is gone: the client dropped this connection.
    let _ = write.shutdown().await;
}

async fn write_flush(write: &mut WriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    write.write_all(bytes).await?;
    write.flush().await
}

/// What the reader waits for next.
enum Woken {
    Read(std::io::Result<usize>),
    Stalled,
    Queued,
}

/// Reads replies and hands each request its own, oldest first; closes the connection when the
/// stream is in doubt or the oldest unanswered request is a whole `timeout` past its deadline.
async fn read_loop<B: Backend>(
    backend: Arc<B>,
    mut read: ReadHalf,
    shared: Arc<Shared<ReplyOf<B>>>,
    timeout: Duration,
) {
    let decoder = backend.decoder();
    let mut buffer = ReadBuffer::new();
    loop {
        // Decode every whole reply buffered.
        loop {
            let front = shared.pending().front().map(|p| (p.limits, p.got.len()));
            let Some((limits, index)) = front else {
                // Out-of-band frames (RESP3 pushes) may come while nothing is asked; any
                // other byte means the stream is out of step with its requests.
                match buffer.holds_only_pushes(decoder) {
                    Ok(true) => break,
                    Ok(false) => shared.kill(&Broken::Protocol(ProtocolError::Unexpected(
                        "bytes arrived that no request asked for".into(),
                    ))),
                    Err(e) => shared.kill(&Broken::Protocol(e)),
                }
                return;
            };
            let reply = match buffer.decode(decoder, &limits) {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(e) => {
                    shared.kill(&Broken::Protocol(e));
                    return;
                }
            };
            if let Err(e) = decoder.check(&reply, index) {
                shared.kill(&Broken::Protocol(e));
                return;
            }
            let finished = {
                let mut pending = shared.pending();
                match pending.front_mut() {
                    Some(front) => {
                        front.got.push(reply);
                        if front.got.len() >= front.replies {
                            pending.pop_front()
                        } else {
                            None
                        }
                    }
                    None => None,
                }
            };
            if let Some(mut finished) = finished {
                if let Some(done) = finished.done.take() {
                    // The caller may have gone (timed out, cancelled): then the replies drop.
                    let _ = done.send(Ok(std::mem::take(&mut finished.got)));
                }
            }
        }
        // A request answered long after its deadline means the server stalled, or the flow
        // died without closing: give up on the connection rather than keep every later request
        // waiting behind it. The oldest request is watched whenever it was queued: a request
        // that joins an empty queue wakes this loop.
        let stall = shared.pending().front().map(|p| p.deadline + timeout);
        let spare = buffer.spare();
        let woken = ::tokio::select! {
            biased;
            read = read.read(spare) => Woken::Read(read),
            () = ::tokio::time::sleep_until(stall.unwrap_or_else(Instant::now)), if stall.is_some() => {
                Woken::Stalled
            }
            () = shared.queued.notified(), if stall.is_none() => Woken::Queued,
        };
        match woken {
            Woken::Stalled => {
                shared.kill(&Broken::Timeout);
                return;
            }
            Woken::Queued => {}
            Woken::Read(Ok(0)) => {
                shared.kill(&Broken::Closed);
                return;
            }
            Woken::Read(Ok(n)) => buffer.advance(n),
            Woken::Read(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Woken::Read(Err(e)) => {
                shared.kill(&Broken::Io(e));
                return;
            }
        }
    }
}
