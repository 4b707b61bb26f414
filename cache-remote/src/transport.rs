//! One way to write routing once for both faces: [`Transport`] runs exchanges on a client of
//! the blocking or the async face, and code over several servers (a cluster's slots, a ring of
//! memcached servers, a master found through sentinels) is written as `async` code generic over
//! it. On the blocking face every future it builds is ready at its first poll: [`block_on`]
//! runs it on the calling thread without any runtime.

use std::future::Future;
use std::time::Duration;

#[cfg(feature = "tokio")]
use cache_core::Async;
use cache_core::{Blocking, Result};

use crate::backend::{Backend, ReplyOf};
use crate::exchange::{Deadline, Exchange};
use crate::settings::ClientSettings;

/// What makes an operation's exchange, again when the operation runs a second time on a new
/// connection: any `FnMut() -> Result<E>` closure.
///
/// A trait of its own, with the exchange as an associated type, rather than a closure bound:
/// futures holding such makers then prove `Send` without tripping over the closures' lifetimes.
pub trait Make<R>: Send {
    /// The exchange made.
    type Exchange: Exchange<R>;

    /// Makes the exchange.
    ///
    /// # Errors
    ///
    /// The operation's, before anything is sent.
    fn make(&mut self) -> Result<Self::Exchange>;

    /// Which connection the operation belongs on, for a client that spreads its operations
    /// over several (the async transport's pipelines): operations of one route go on one
    /// connection, in the order they were issued. `None` (the default): any connection.
    /// Operations on a key are routed by [`route_of`] the key, with [`routed`].
    fn route(&self) -> Option<u64> {
        None
    }
}

impl<R, E, F> Make<R> for F
where
    F: FnMut() -> Result<E> + Send,
    E: Exchange<R>,
{
    type Exchange = E;

    fn make(&mut self) -> Result<E> {
        self()
    }
}

/// A maker whose operations go on the connection of one route: see [`routed`].
#[derive(Debug, Clone)]
pub struct Routed<M> {
    make: M,
    route: u64,
}

/// `make`, its operations sent on the connection of `route` (see [`Make::route`]).
pub fn routed<M>(route: u64, make: M) -> Routed<M> {
    Routed { make, route }
}

impl<R, M: Make<R>> Make<R> for Routed<M> {
    type Exchange = M::Exchange;

    fn make(&mut self) -> Result<M::Exchange> {
        self.make.make()
    }

    fn route(&self) -> Option<u64> {
        Some(self.route)
    }
}

/// The route of the operations on `key`: a hash of it, the same for the life of the process.
pub fn route_of(key: &[u8]) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(key)
}

/// The indices of `keys` grouped by the connection of a client of `pipelines` connections
/// each one goes on (see [`route_of`]), in first-seen order, with a route for each group: a
/// bulk operation sends each group on its own connection, so that every key keeps its order.
///
/// ```
/// let keys: [&[u8]; 3] = [b"a", b"b", b"c"];
/// assert_eq!(cache_remote::by_pipeline(keys, 1).len(), 1);
/// let groups = cache_remote::by_pipeline(keys, 4);
/// let mut all: Vec<usize> = groups.iter().flat_map(|(_, members)| members.clone()).collect();
/// all.sort_unstable();
/// assert_eq!(all, [0, 1, 2]);
/// ```
pub fn by_pipeline<'k>(
    keys: impl IntoIterator<Item = &'k [u8]>,
    pipelines: usize,
) -> Vec<(u64, Vec<usize>)> {
    let pipelines = pipelines.max(1) as u64;
    let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
    for (index, key) in keys.into_iter().enumerate() {
        let route = if pipelines == 1 { 0 } else { route_of(key) };
        match groups
            .iter_mut()
            .find(|(r, _)| *r % pipelines == route % pipelines)
        {
            Some((_, members)) => members.push(index),
            None => groups.push((route, vec![index])),
        }
    }
    groups
}

/// How one face of the engines runs exchanges: [`Blocking`] with [`blocking::Client`]
/// (the calling thread does the I/O), [`Async`] with [`asynchronous::Client`] (tokio).
///
/// [`blocking::Client`]: crate::blocking::Client
/// [`asynchronous::Client`]: crate::asynchronous::Client
pub trait Transport: Send + Sync + Sized + 'static {
    /// A client of one server.
    type Client<B: Backend>: Send + Sync + std::fmt::Debug;

    /// A client of `backend`; no connection is opened until the first operation.
    fn client<B: Backend>(backend: B, settings: ClientSettings) -> Self::Client<B>;

    /// The client's backend.
    fn backend<B: Backend>(client: &Self::Client<B>) -> &B;

    /// Runs the exchange `make` builds on `client` within `deadline`, as `run_until` of the
    /// face's client does.
    fn run<B, M>(
        client: &Self::Client<B>,
        operation: &'static str,
        deadline: Deadline,
        make: M,
    ) -> impl Future<Output = Result<Output<B, M>>> + Send
    where
        B: Backend,
        M: Make<ReplyOf<B>>;

    /// Runs one exchange on each client of `jobs` at once within `deadline`; each result in the
    /// order of `jobs`.
    fn run_each<B, M>(
        operation: &'static str,
        deadline: Deadline,
        jobs: Vec<(&Self::Client<B>, M)>,
    ) -> impl Future<Output = Vec<Result<Output<B, M>>>> + Send
    where
        B: Backend,
        M: Make<ReplyOf<B>>;

    /// Runs `task` in the background: on a thread of its own for the blocking face, as a tokio
    /// task for the async one (when called outside a runtime, the task does not run).
    fn spawn(task: impl Future<Output = ()> + Send + 'static);

    /// Waits `duration`: the thread sleeps on the blocking face, the task on the async one.
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send;

    /// How many connections a client with `settings` spreads routed operations over (see
    /// [`Make::route`]): 1 for the blocking face, whose callers each hold a connection of
    /// their own for an operation; the number of pipelines for the async face.
    fn pipelines(settings: &ClientSettings) -> usize;

    /// Operations in a row that failed on the client's connections (see
    /// [`blocking::Client::consecutive_failures`](crate::blocking::Client::consecutive_failures)).
    fn consecutive_failures<B: Backend>(client: &Self::Client<B>) -> u32;

    /// How many connections the client has open now.
    fn open_connections<B: Backend>(client: &Self::Client<B>) -> usize;

    /// Closes the client.
    fn close<B: Backend>(client: &Self::Client<B>);

    /// Whether the client was closed.
    fn is_closed<B: Backend>(client: &Self::Client<B>) -> bool;
}

impl Transport for Blocking {
    type Client<B: Backend> = crate::blocking::Client<B>;

    fn client<B: Backend>(backend: B, settings: ClientSettings) -> Self::Client<B> {
        crate::blocking::Client::new(backend, settings)
    }

    fn backend<B: Backend>(client: &Self::Client<B>) -> &B {
        client.backend()
    }

    fn run<B, M>(
        client: &Self::Client<B>,
        operation: &'static str,
        deadline: Deadline,
        mut make: M,
    ) -> impl Future<Output = Result<Output<B, M>>> + Send
    where
        B: Backend,
        M: Make<ReplyOf<B>>,
    {
        std::future::ready(client.run_until(operation, deadline, || make.make()))
    }

    fn run_each<B, M>(
        operation: &'static str,
        deadline: Deadline,
        jobs: Vec<(&Self::Client<B>, M)>,
    ) -> impl Future<Output = Vec<Result<Output<B, M>>>> + Send
    where
        B: Backend,
        M: Make<ReplyOf<B>>,
    {
        let jobs = jobs
            .into_iter()
            .map(|(client, mut make)| (client, move || make.make()))
            .collect();
        std::future::ready(crate::blocking::Client::run_each(operation, deadline, jobs))
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        // Without a thread the task cannot run; the caller sees the same as a task that never
        // got to run (the engine keeps working without it).
        let _ = std::thread::Builder::new()
            .name("cache-toolkit".into())
            .spawn(move || cache_core::block_on(task));
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send {
        std::thread::sleep(duration);
        std::future::ready(())
    }

    fn pipelines(_settings: &ClientSettings) -> usize {
        1
    }

    fn consecutive_failures<B: Backend>(client: &Self::Client<B>) -> u32 {
        client.consecutive_failures()
    }

    fn open_connections<B: Backend>(client: &Self::Client<B>) -> usize {
        client.open_connections()
    }

    fn close<B: Backend>(client: &Self::Client<B>) {
        client.close();
    }

    fn is_closed<B: Backend>(client: &Self::Client<B>) -> bool {
        client.is_closed()
    }
}

#[cfg(feature = "tokio")]
impl Transport for Async {
    type Client<B: Backend> = crate::asynchronous::Client<B>;

    fn client<B: Backend>(backend: B, settings: ClientSettings) -> Self::Client<B> {
        crate::asynchronous::Client::new(backend, settings)
    }

    fn backend<B: Backend>(client: &Self::Client<B>) -> &B {
        client.backend()
    }

    fn run<B, M>(
        client: &Self::Client<B>,
        operation: &'static str,
        deadline: Deadline,
        make: M,
    ) -> impl Future<Output = Result<Output<B, M>>> + Send
    where
        B: Backend,
        M: Make<ReplyOf<B>>,
    {
        client.run_until(operation, deadline, make)
    }

    fn run_each<B, M>(
        operation: &'static str,
        deadline: Deadline,
        jobs: Vec<(&Self::Client<B>, M)>,
    ) -> impl Future<Output = Vec<Result<Output<B, M>>>> + Send
    where
        B: Backend,
        M: Make<ReplyOf<B>>,
    {
        futures_util::future::join_all(
            jobs.into_iter()
                .map(move |(client, make)| client.run_until(operation, deadline, make)),
        )
    }

    fn spawn(task: impl Future<Output = ()> + Send + 'static) {
        if let Ok(runtime) = ::tokio::runtime::Handle::try_current() {
            runtime.spawn(task);
        }
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send {
        ::tokio::time::sleep(duration)
    }

    fn pipelines(settings: &ClientSettings) -> usize {
        settings.pipelines.max(1)
    }

    fn consecutive_failures<B: Backend>(client: &Self::Client<B>) -> u32 {
        client.consecutive_failures()
    }

    fn open_connections<B: Backend>(client: &Self::Client<B>) -> usize {
        client.open_connections()
    }

    fn close<B: Backend>(client: &Self::Client<B>) {
        client.close();
    }

    fn is_closed<B: Backend>(client: &Self::Client<B>) -> bool {
        client.is_closed()
    }
}

/// The output of the exchanges `M` makes for backend `B`.
pub type Output<B, M> = <<M as Make<ReplyOf<B>>>::Exchange as Exchange<ReplyOf<B>>>::Output;
