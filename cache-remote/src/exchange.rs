//! Operations as I/O-free conversations: the requests they send and what they make of the
//! replies, so that the blocking and the async transports run the same code.

use std::time::{Duration, Instant};

use cache_core::Result;

use crate::protocol::ReplyLimits;

/// The instant by which an operation must end, and the budget it was given (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    /// `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self {
            at: Instant::now() + budget,
            budget,
        }
    }

    /// The time left, or `None` once the deadline has passed.
    pub fn remaining(&self) -> Option<Duration> {
        let left = self.at.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// The instant.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The budget the deadline was set with.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// This deadline moved later by `by` (the time spent opening a connection).
    #[must_use]
    pub fn extended(self, by: Duration) -> Self {
        Self {
            at: self.at + by,
            budget: self.budget + by,
        }
    }
}

/// One request of an exchange: its bytes and what its replies may be.
#[derive(Debug, Clone)]
pub struct Request {
    /// The encoded request (one or more commands, sent together).
    pub bytes: Vec<u8>,
    /// How many replies it gets: one per command.
    pub replies: usize,
    /// The bounds on each reply.
    pub limits: ReplyLimits,
    /// Whether sending it again after a broken connection is harmless: true when running it
    /// twice leaves the same state and gives the same answer (`GET`, `SET`), false when the
    /// second run could differ (`INCRBY`, `SET NX`, `DEL` counting removals).
    pub idempotent: bool,
    /// Whether this request gets a deadline of its own instead of sharing the operation's:
    /// for operations whose work grows with their input, such as a namespaced clear, each of
    /// whose batches gets the engine's timeout.
    pub own_deadline: bool,
}

impl Request {
    /// A request of `replies` commands with these limits, idempotent, sharing the operation's
    /// deadline.
    pub fn new(bytes: Vec<u8>, replies: usize, limits: ReplyLimits) -> Self {
        Self {
            bytes,
            replies,
            limits,
            idempotent: true,
            own_deadline: false,
        }
    }

    /// Marks the request as one that must not be sent twice.
    #[must_use]
    pub fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// Gives the request a deadline of its own.
    #[must_use]
    pub fn with_own_deadline(mut self) -> Self {
        self.own_deadline = true;
        self
    }
}

/// What an exchange does next.
#[derive(Debug)]
pub enum Step<T> {
    /// Send this request and come back with its replies.
    Send(Request),
    /// The operation's result.
    Done(T),
}

/// An operation's conversation with a server, without any I/O.
///
/// A transport calls [`start`](Self::start), sends each [`Step::Send`] request on one
/// connection, and hands the replies to [`next`](Self::next) until [`Step::Done`]. An error
/// returned by the exchange means the replies were read in full (the connection stays usable)
/// and the operation failed (a server error reply, a counter that is not a number).
pub trait Exchange<R>: Send {
    /// The operation's result.
    type Output: Send;

    /// The first request, or a result that needs none.
    ///
    /// # Errors
    ///
    /// The operation's error.
    fn start(&mut self) -> Result<Step<Self::Output>>;

    /// The replies to the last request, one per command in order; the next request or the
    /// result.
    ///
    /// # Errors
    ///
    /// The operation's error.
    fn next(&mut self, replies: Vec<R>) -> Result<Step<Self::Output>>;
}

/// An exchange of one request, whose replies `parse` turns into the result.
pub struct Single<P> {
    request: Option<Request>,
    parse: Option<P>,
}

impl<P> std::fmt::Debug for Single<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Single")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// An exchange of `request` alone, whose replies `parse` turns into the result.
pub fn single<R, T, P>(request: Request, parse: P) -> Single<P>
where
    P: FnOnce(Vec<R>) -> Result<T> + Send,
{
    Single {
        request: Some(request),
        parse: Some(parse),
    }
}

impl<R, T: Send, P> Exchange<R> for Single<P>
where
    P: FnOnce(Vec<R>) -> Result<T> + Send,
{
    type Output = T;

    fn start(&mut self) -> Result<Step<T>> {
        match self.request.take() {
            Some(request) => Ok(Step::Send(request)),
            None => Err(cache_core::CacheError::invalid_config(
                "an exchange was started twice",
            )),
        }
    }

    fn next(&mut self, replies: Vec<R>) -> Result<Step<T>> {
        match self.parse.take() {
            Some(parse) => parse(replies).map(Step::Done),
            None => Err(cache_core::CacheError::invalid_config(
                "an exchange was resumed after it ended",
            )),
        }
    }
}

/// An exchange that needs no request: its result is known.
#[derive(Debug)]
pub struct Ready<T>(Option<T>);

/// An exchange whose result is `value`, without any request.
pub fn ready<T>(value: T) -> Ready<T> {
    Ready(Some(value))
}

impl<R, T: Send> Exchange<R> for Ready<T> {
    type Output = T;

    fn start(&mut self) -> Result<Step<T>> {
        self.0
            .take()
            .map(Step::Done)
            .ok_or_else(|| cache_core::CacheError::invalid_config("an exchange was started twice"))
    }

    fn next(&mut self, _replies: Vec<R>) -> Result<Step<T>> {
        <Self as Exchange<R>>::start(self)
    }
}

/// A boxed exchange, for operations that choose among several kinds at run time. It may
/// borrow (the engine, the caller's keys) for `'a`.
pub type BoxExchange<'a, R, T> = Box<dyn Exchange<R, Output = T> + 'a>;

impl<R, T: Send> Exchange<R> for Box<dyn Exchange<R, Output = T> + '_> {
    type Output = T;

    fn start(&mut self) -> Result<Step<T>> {
        (**self).start()
    }

    fn next(&mut self, replies: Vec<R>) -> Result<Step<T>> {
        (**self).next(replies)
    }
}

/// An exchange of several requests sent one after another on one connection (the batches of
/// a bulk operation), each of whose replies `on_replies` folds into an accumulator, which is the
/// result. The first request shares the operation's deadline; later ones get their own, so a
/// bulk operation's time is bounded per batch.
pub struct Batches<A, F> {
    requests: std::collections::VecDeque<Request>,
    acc: Option<A>,
    on_replies: F,
}

impl<A, F> std::fmt::Debug for Batches<A, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("requests", &self.requests.len())
            .finish_non_exhaustive()
    }
}

/// An exchange of `requests` in order, folding each one's replies into `acc`.
pub fn batches<R, A, F>(requests: Vec<Request>, acc: A, on_replies: F) -> Batches<A, F>
where
    F: FnMut(&mut A, Vec<R>) -> Result<()> + Send,
    A: Send,
{
    let mut requests: std::collections::VecDeque<Request> = requests.into();
    for later in requests.iter_mut().skip(1) {
        later.own_deadline = true;
    }
    Batches {
        requests,
        acc: Some(acc),
        on_replies,
    }
}

impl<R, A: Send, F> Exchange<R> for Batches<A, F>
where
    F: FnMut(&mut A, Vec<R>) -> Result<()> + Send,
{
    type Output = A;

    fn start(&mut self) -> Result<Step<A>> {
        match self.requests.pop_front() {
            Some(request) => Ok(Step::Send(request)),
            None => self.finish(),
        }
    }

    fn next(&mut self, replies: Vec<R>) -> Result<Step<A>> {
        let Some(acc) = self.acc.as_mut() else {
            return Err(cache_core::CacheError::invalid_config(
                "an exchange was resumed after it ended",
            ));
        };
        (self.on_replies)(acc, replies)?;
        <Self as Exchange<R>>::start(self)
    }
}

impl<A, F> Batches<A, F> {
    fn finish(&mut self) -> Result<Step<A>> {
        self.acc.take().map(Step::Done).ok_or_else(|| {
            cache_core::CacheError::invalid_config("an exchange was resumed after it ended")
        })
    }
}

/// An exchange whose result is another's, passed through a function.
pub struct MapOutput<E, F> {
    inner: E,
    map: Option<F>,
}

impl<E: std::fmt::Debug, F> std::fmt::Debug for MapOutput<E, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapOutput")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Adapters for every exchange.
pub trait ExchangeExt<R>: Exchange<R> + Sized {
    /// The same conversation, its result passed through `map`.
    fn map_output<T, F>(self, map: F) -> MapOutput<Self, F>
    where
        F: FnOnce(Self::Output) -> T + Send,
    {
        MapOutput {
            inner: self,
            map: Some(map),
        }
    }
}

impl<R, E: Exchange<R>> ExchangeExt<R> for E {}

impl<R, E, T, F> Exchange<R> for MapOutput<E, F>
where
    E: Exchange<R>,
    T: Send,
    F: FnOnce(E::Output) -> T + Send,
{
    type Output = T;

    fn start(&mut self) -> Result<Step<T>> {
        let step = self.inner.start()?;
        self.map_step(step)
    }

    fn next(&mut self, replies: Vec<R>) -> Result<Step<T>> {
        let step = self.inner.next(replies)?;
        self.map_step(step)
    }
}

impl<E, F> MapOutput<E, F> {
    fn map_step<O, T>(&mut self, step: Step<O>) -> Result<Step<T>>
    where
        F: FnOnce(O) -> T,
    {
        match step {
            Step::Send(request) => Ok(Step::Send(request)),
            Step::Done(output) => match self.map.take() {
                Some(map) => Ok(Step::Done(map(output))),
                None => Err(cache_core::CacheError::invalid_config(
                    "an exchange was resumed after it ended",
                )),
            },
        }
    }
}
