//! The async transport on tokio: every caller's requests pipelined on one connection (or a few),
//! replies matched by order, the same exchanges, deadlines, limits and retry rule as the
//! blocking transport.
//!
//! Each connection has two tasks. The writer takes requests from a channel, records each one's
//! place in the queue of expected replies *before* writing it, and writes as many as are waiting
//! in one system call. The reader decodes replies with the request's limits and hands each
//! request its replies, in order. A caller only sends a request and awaits its replies, so a
//! caller that is dropped at any point (a timeout, a `select!`) leaves the connection in step: its
//! request is still written whole and its replies still read, then discarded. No reply can
//! reach another caller: a reply belongs to the oldest request not yet answered.
//!
//! A connection whose stream is in doubt (a reply over a limit, malformed, or carrying another
//! command's token; the server closing it; an I/O error) is closed and every request waiting on
//! it fails; none gets a wrong reply. A connection whose oldest reply is overdue by a whole
//! timeout past its deadline is closed too (the server stalled); callers do not wait for that:
//! each one's deadline ends its wait. The next operation opens a new connection.
//!
//! This module needs a tokio runtime: operations started elsewhere fail with a `Connection`
//! error saying so.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use ::tokio::sync::{mpsc, oneshot};
use ::tokio::task::JoinHandle;
use ::tokio::time::Instant;
use cache_core::{CacheError, Result};

use crate::backend::{Backend, Broken, Failure, ReplyOf};
use crate::buffer::ReadBuffer;
use crate::exchange::{Exchange, Request, Step};
use crate::protocol::{Decode, ProtocolError, ReplyLimits};
use crate::settings::ClientSettings;
use crate::transport::Make;

/// Requests of at most this many bytes are gathered into one write; larger ones are written on
/// their own, without a copy.
const GATHER: usize = 64 * 1024;

type Replies<R> = std::result::Result<Vec<R>, Broken>;

/// A request on its way to the writer.
struct Job<R> {
    bytes: Vec<u8>,
    replies: usize,
    limits: ReplyLimits,
    deadline: Instant,
    done: oneshot::Sender<Replies<R>>,
}

/// A request written (or about to be), waiting for its replies.
struct Pending<R> {
    replies: usize,
    limits: ReplyLimits,
    deadline: Instant,
    got: Vec<R>,
    done: Option<oneshot::Sender<Replies<R>>>,
}

/// What a connection's tasks share.
struct Shared<R> {
    pending: Mutex<VecDeque<Pending<R>>>,
    dead: AtomicBool,
}

impl<R> Shared<R> {
    fn pending(&self) -> MutexGuard<'_, VecDeque<Pending<R>>> {
        // Every critical section leaves the queue consistent.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the connection dead and fails every request waiting on it.
    fn kill(&self, why: &Broken) {
        self.dead.store(true, Ordering::Release);
        let waiting: Vec<Pending<R>> = self.pending().drain(..).collect();
        for mut pending in waiting {
            if let Some(done) = pending.done.take() {
                let _ = done.send(Err(why.duplicate()));
            }
        }
    }
}

/// One multiplexed connection: its request channel and its tasks.
struct Pipe<R> {
    jobs: mpsc::UnboundedSender<Job<R>>,
    shared: Arc<Shared<R>>,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl<R> Drop for Pipe<R> {
    fn drop(&mut self) {
        self.writer.abort();
        self.reader.abort();
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

/// One connection slot: the live pipe, and a lock so that one caller at a time opens a new one.
struct Slot<R> {
    current: Mutex<Option<Arc<Pipe<R>>>>,
    opening: ::tokio::sync::Mutex<()>,
}

/// An async client of one server of backend `B`: callers' requests pipelined on
/// [`ClientSettings::pipelines`] connections, and the one place where operations are run.
pub struct Client<B: Backend> {
    backend: Arc<B>,
    settings: ClientSettings,
    slots: Vec<Slot<ReplyOf<B>>>,
    next: AtomicUsize,
    closed: AtomicBool,
    /// Operations in a row that failed on the connection or while opening one.
    failures: AtomicU32,
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

impl Broken {
    /// The same failure, for another waiter.
    fn duplicate(&self) -> Broken {
        match self {
            Self::Timeout => Self::Timeout,
            Self::Closed => Self::Closed,
            Self::Io(e) => Self::Io(std::io::Error::new(e.kind(), e.to_string())),
            Self::Protocol(e) => Self::Protocol(e.clone()),
        }
    }
}

impl<B: Backend> Client<B> {
    /// A client for `backend`; no connection is opened until the first operation.
    pub fn new(backend: B, settings: ClientSettings) -> Self {
        let slots = (0..settings.pipelines.max(1))
            .map(|_| Slot {
                current: Mutex::new(None),
                opening: ::tokio::sync::Mutex::new(()),
            })
            .collect();
        Self {
            backend: Arc::new(backend),
            settings,
            slots,
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            failures: AtomicU32::new(0),
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
    pub fn consecutive_failures(&self) -> u32 {
        self.failures.load(Ordering::Relaxed)
    }

    fn answered(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        self.slots
            .iter()
            .filter(|slot| {
                lock(&slot.current)
                    .as_ref()
                    .is_some_and(|pipe| !pipe.is_dead())
            })
            .count()
    }

    /// Closes the client: connections are closed (requests in flight fail), and every later
    /// operation is `Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in &self.slots {
            if let Some(pipe) = lock(&slot.current).take() {
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
    /// As the blocking client's.
    pub async fn run<E, F>(&self, operation: &'static str, make: F) -> Result<E::Output>
    where
        E: Exchange<ReplyOf<B>>,
        F: FnMut() -> Result<E> + Send,
    {
        self.run_until(
            operation,
            crate::exchange::Deadline::after(self.settings.timeout),
            make,
        )
        .await
    }

    /// [`run`](Self::run) within `deadline`, with any [`Make`]: for an operation of several
    /// steps that share one deadline.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub async fn run_until<M>(
        &self,
        operation: &'static str,
        given: crate::exchange::Deadline,
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
        let mut deadline = given;
        for attempt in 0..2 {
            let mut exchange = make.make()?;
            let (pipe, opened) = match self.pipe(operation).await {
                Ok(pipe) => pipe,
                Err(e) => {
                    if e.is_transient() {
                        self.failures.fetch_add(1, Ordering::Relaxed);
                    }
                    return Err(e);
                }
            };
            if let Some(opened) = opened {
                // Opening a connection has its own bound and does not eat the operation's.
                deadline = given.extended(opened - started);
            }
            match self
                .drive(&pipe, &mut exchange, Instant::from_std(deadline.instant()))
                .await
            {
                Ok(output) => {
                    self.answered();
                    return Ok(output);
                }
                Err(Failure::Reply(error)) => {
                    self.answered();
                    return Err(error);
                }
                Err(Failure::Broken { .. }) if self.is_closed() => {
                    return Err(CacheError::Closed { backend });
                }
                Err(Failure::Broken {
                    why,
                    sent,
                    before_idempotent,
                    idempotent,
                }) => {
                    let dead_while_idle = opened.is_none() && why.is_dead_socket();
                    let again = attempt == 0
                        && dead_while_idle
                        && before_idempotent
                        && (idempotent || !sent);
                    if !again {
                        self.failures.fetch_add(1, Ordering::Relaxed);
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

    /// Sends each request of `exchange` on `pipe` and hands it the replies.
    async fn drive<E: Exchange<ReplyOf<B>>>(
        &self,
        pipe: &Pipe<ReplyOf<B>>,
        exchange: &mut E,
        deadline: Instant,
    ) -> std::result::Result<E::Output, Failure> {
        let mut step = exchange.start().map_err(Failure::Reply)?;
        let mut before_idempotent = true;
        loop {
            let request = match step {
                Step::Done(output) => return Ok(output),
                Step::Send(request) => request,
            };
            let this_deadline = if request.own_deadline {
                Instant::now() + self.settings.timeout
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
                Err(why) => return Err(broken(why, false)),
                Ok(receiver) => match ::tokio::time::timeout_at(this_deadline, receiver).await {
                    // The deadline passed: this caller stops waiting; its replies will be read
                    // and dropped, and the connection stays in step.
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

    /// A live connection of the next slot, and when it was opened if this operation waited
    /// for that (`None`: it was already open).
    async fn pipe(
        &self,
        operation: &'static str,
    ) -> Result<(Arc<Pipe<ReplyOf<B>>>, Option<Instant>)> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[index];
        if let Some(pipe) = live(slot) {
            return Ok((pipe, None));
        }
        let _opening = slot.opening.lock().await;
        if let Some(pipe) = live(slot) {
            return Ok((pipe, Some(Instant::now())));
        }
        if self.is_closed() {
            return Err(CacheError::Closed {
                backend: self.backend.name(),
            });
        }
        let pipe = Arc::new(self.open(operation).await?);
        *lock(&slot.current) = Some(Arc::clone(&pipe));
        Ok((pipe, Some(Instant::now())))
    }

    /// Opens a connection, starts its tasks and runs the backend's handshake on it, within
    /// `connect_timeout`.
    async fn open(&self, operation: &'static str) -> Result<Pipe<ReplyOf<B>>> {
        let backend = self.backend.name();
        let address = self.backend.address();
        let budget = self.settings.connect_timeout;
        let deadline = Instant::now() + budget;
        let timed_out = || CacheError::Timeout {
            backend,
            operation,
            address: address.to_string(),
            after: budget,
        };
        if ::tokio::runtime::Handle::try_current().is_err() {
            return Err(CacheError::Connection {
                backend,
                operation,
                address: address.to_string(),
                source: Some("the async engines need a tokio runtime, and none is running".into()),
            });
        }
        let tcp =
            match ::tokio::time::timeout_at(deadline, ::tokio::net::TcpStream::connect(address))
                .await
            {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => {
                    return Err(Broken::Io(e).into_error(backend, operation, address, budget));
                }
                Ok(Ok(tcp)) => tcp,
            };
        tcp.set_nodelay(true)
            .map_err(|e| Broken::Io(e).into_error(backend, operation, address, budget))?;
        let (read, write) = match ::tokio::time::timeout_at(deadline, self.wrap(tcp)).await {
            Err(_) => return Err(timed_out()),
            Ok(halves) => {
                halves.map_err(|why| why.into_error(backend, operation, address, budget))?
            }
        };
        let pipe = start(
            Arc::clone(&self.backend),
            read,
            write,
            self.settings.timeout,
        );
        if let Some(mut handshake) = self.backend.handshake() {
            match self.drive(&pipe, &mut handshake, deadline).await {
                Ok(()) => {}
                Err(Failure::Reply(e)) => return Err(e),
                Err(Failure::Broken { why, .. }) => {
                    return Err(why.into_error(backend, operation, address, budget));
                }
            }
        }
        Ok(pipe)
    }

    #[cfg(feature = "tls")]
    async fn wrap(
        &self,
        tcp: ::tokio::net::TcpStream,
    ) -> std::result::Result<(ReadHalf, WriteHalf), Broken> {
        let Some(tls) = self.backend.tls() else {
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
    async fn wrap(
        &self,
        tcp: ::tokio::net::TcpStream,
    ) -> std::result::Result<(ReadHalf, WriteHalf), Broken> {
        let (read, write) = tcp.into_split();
        Ok((Box::new(read), Box::new(write)))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn live<R>(slot: &Slot<R>) -> Option<Arc<Pipe<R>>> {
    lock(&slot.current)
        .as_ref()
        .filter(|pipe| !pipe.is_dead())
        .cloned()
}

/// Queues `request` on `pipe`; the receiver gets its replies.
fn send<R>(
    pipe: &Pipe<R>,
    request: &Request,
    deadline: Instant,
) -> std::result::Result<oneshot::Receiver<Replies<R>>, Broken> {
    if pipe.is_dead() {
        return Err(Broken::Closed);
    }
    let (done, receiver) = oneshot::channel();
    let job = Job {
        bytes: request.bytes.clone(),
        replies: request.replies,
        limits: request.limits,
        deadline,
        done,
    };
    pipe.jobs.send(job).map_err(|_| Broken::Closed)?;
    Ok(receiver)
}

/// Starts the writer and the reader of a new connection.
fn start<B: Backend>(
    backend: Arc<B>,
    read: ReadHalf,
    write: WriteHalf,
    timeout: Duration,
) -> Pipe<ReplyOf<B>> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(VecDeque::new()),
        dead: AtomicBool::new(false),
    });
    let (jobs, inbox) = mpsc::unbounded_channel();
    let writer = ::tokio::spawn(write_loop(inbox, write, Arc::clone(&shared)));
    let reader = ::tokio::spawn(read_loop(backend, read, Arc::clone(&shared), timeout));
    Pipe {
        jobs,
        shared,
        writer,
        reader,
    }
}

/// Takes requests from `inbox`, queues each one's expected replies, and writes as many as are
/// waiting at once.
async fn write_loop<R: Send + 'static>(
    mut inbox: mpsc::UnboundedReceiver<Job<R>>,
    mut write: WriteHalf,
    shared: Arc<Shared<R>>,
) {
    let mut gathered: Vec<u8> = Vec::with_capacity(GATHER);
    while let Some(first) = inbox.recv().await {
        // Let the callers that are ready to run queue their requests first: tokio runs a task
        // it just woke before the others, so without this the writer would take requests one
        // at a time, one system call each, when many callers are busy.
        ::tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match inbox.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut requests = Vec::with_capacity(batch.len());
        {
            let mut pending = shared.pending();
            // Checked under the queue's lock: `kill` marks the connection dead before it
            // empties the queue, so a batch is either queued before (and failed by `kill`) or
            // sees the mark (and is dropped here: its callers learn the request never left).
            if shared.dead.load(Ordering::Acquire) {
                return;
            }
            for job in batch {
                pending.push_back(Pending {
                    replies: job.replies,
                    limits: job.limits,
                    deadline: job.deadline,
                    got: Vec::with_capacity(job.replies),
                    done: Some(job.done),
                });
                requests.push(job.bytes);
            }
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

/// Reads replies and hands each request its own, oldest first; closes the connection when the
/// stream is in doubt or stalls.
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
                if !buffer.is_empty() {
                    shared.kill(&Broken::Protocol(ProtocolError::Unexpected(
                        "bytes arrived that no request asked for".into(),
                    )));
                    return;
                }
                break;
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
                    let _ = done.send(Ok(finished.got));
                }
            }
        }
        // A request answered long after its deadline means the server stalled: give up on the
        // connection rather than keep every later request waiting behind it.
        let stall = shared.pending().front().map(|p| p.deadline + timeout);
        let spare = buffer.spare();
        let read_result = match stall {
            Some(at) => match ::tokio::time::timeout_at(at, read.read(spare)).await {
                Ok(result) => result,
                Err(_) => {
                    shared.kill(&Broken::Timeout);
                    return;
                }
            },
            None => read.read(spare).await,
        };
        match read_result {
            Ok(0) => {
                shared.kill(&Broken::Closed);
                return;
            }
            Ok(n) => buffer.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                shared.kill(&Broken::Io(e));
                return;
            }
        }
    }
}
