//! The `redis` crate as a transport (feature `redis-crate`): the engine's exchanges, run on a
//! connection the user already holds (`redis::aio::ConnectionManager`,
//! `redis::aio::MultiplexedConnection`, or anything else implementing
//! `redis::aio::ConnectionLike`).
//!
//! The exchanges stay I/O-free and the same as on our own transports: each request they emit
//! is read back into its commands (arrays of bulk strings, the only thing our encoder writes),
//! sent as one `redis::Pipeline`, and the crate's replies are turned into ours
//! ([`Value`]), then checked against the request's reply limits.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use cache_core::{CacheError, Result};
use cache_remote::{
    Deadline, Decode, Decoded, Exchange, Make, ProtocolError, ReplyLimits, Request, Step,
};

use crate::backend::BACKEND;
use crate::resp::{Resp, Value};

/// A future of the external transport.
pub(crate) type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs requests on a connection of the `redis` crate.
pub(crate) trait External: Send + Sync + fmt::Debug {
    /// Refuses, with the reason, a connection the engine cannot run on.
    ///
    /// # Errors
    ///
    /// `InvalidConfig`.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// Whether every request must go to one slot's master: the engine then needs a co-located
    /// namespace, and tells its hash tag with [`use_tag`](Self::use_tag).
    fn one_slot(&self) -> bool {
        false
    }

    /// The co-located namespace's key prefix (`{namespace}:`, escaped as stored), whose hash
    /// tag's slot every request goes to (see [`one_slot`](Self::one_slot)).
    fn use_tag(&self, prefix: &str) {
        let _ = prefix;
    }

    /// Sends the commands of `request` as one pipeline; the replies, one per command.
    fn send<'a>(
        &'a self,
        request: &'a Request,
        deadline: Deadline,
    ) -> Pending<'a, Result<Vec<Value>>>;
}

/// A `redis` crate connection, cloned for each request (cheap for the multiplexed and
/// managed connections, which share one socket).
pub(crate) struct CrateConnection<C> {
    pub(crate) connection: C,
    pub(crate) name: &'static str,
}

impl<C> fmt::Debug for CrateConnection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrateConnection")
            .field("connection", &self.name)
            .finish()
    }
}

impl<C> External for CrateConnection<C>
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    fn check(&self) -> Result<()> {
        // The crate's `cluster_async::ClusterConnection`, built by the user: its retry
        // settings cannot be read, and by default it resends commands on its own.
        if self.name.contains("cluster_async") || self.name.contains("ClusterConnection") {
            return Err(CacheError::invalid_config(
                "a redis crate cluster connection built elsewhere may resend commands on its \
                 own (an add or an increment could apply twice): hand the engine its \
                 ClusterClientBuilder with redis_cluster(), which turns retries off, or use a \
                 redis-cluster:// URL with the engine's own connections",
            ));
        }
        Ok(())
    }

    fn send<'a>(
        &'a self,
        request: &'a Request,
        deadline: Deadline,
    ) -> Pending<'a, Result<Vec<Value>>> {
        Box::pin(run(request, deadline, move |commands, count| async move {
            let mut connection = self.connection.clone();
            send_on(&mut connection, commands, count).await
        }))
    }
}

/// The crate's cluster connection, made from the user's `ClusterClientBuilder` with retries
/// off (the crate then never sends a command twice, redirections included) and opened at the
/// first request. Every request goes to the master of one slot, the co-located namespace's.
pub(crate) struct CrateCluster {
    client: std::result::Result<redis::cluster::ClusterClient, String>,
    connection: tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>,
    /// The co-located namespace's key prefix and its slot.
    tag: std::sync::OnceLock<(String, u16)>,
}

impl CrateCluster {
    pub(crate) fn new(builder: redis::cluster::ClusterClientBuilder) -> Self {
        Self {
            client: builder.retries(0).build().map_err(|e| e.to_string()),
            connection: tokio::sync::OnceCell::new(),
            tag: std::sync::OnceLock::new(),
        }
    }
}

impl fmt::Debug for CrateCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrateCluster")
            .field("tag", &self.tag.get())
            .field("connected", &self.connection.initialized())
            .finish_non_exhaustive()
    }
}

impl External for CrateCluster {
    fn check(&self) -> Result<()> {
        match &self.client {
            Ok(_) => Ok(()),
            Err(e) => Err(CacheError::invalid_config(format!(
                "the redis crate cluster client cannot be built: {e}"
            ))),
        }
    }

    fn one_slot(&self) -> bool {
        true
    }

    fn use_tag(&self, prefix: &str) {
        let _ = self.tag.set((
            prefix.to_string(),
            crate::cluster::key_slot(prefix.as_bytes()),
        ));
    }

    fn send<'a>(
        &'a self,
        request: &'a Request,
        deadline: Deadline,
    ) -> Pending<'a, Result<Vec<Value>>> {
        use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
        Box::pin(run(request, deadline, move |commands, count| async move {
            let (Ok(client), Some((tag, slot))) = (&self.client, self.tag.get()) else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "the cluster transport was not set up by the engine's builder",
                )));
            };
            let mut connection = self
                .connection
                .get_or_try_init(|| client.get_async_connection())
                .await?
                .clone();
            let mut node = SingleNodeRoutingInfo::SpecificNode(Route::new(*slot, SlotAddr::Master));
            let mut asking = false;
            // A command without a key (`SCAN`) is answered by any node, right or wrong: a key
            // of the slot goes first (`EXISTS` of the bare prefix), so that a node that does not
            // serve the slot says so, and the request follows the redirection.
            let anchored = commands.iter().any(|command| {
                command.args_iter().next().is_some_and(|name| {
                    matches!(name, redis::Arg::Simple(name) if name.eq_ignore_ascii_case(b"SCAN"))
                })
            });
            // The crate's retries are off, so a redirection comes back: nothing was applied
            // (a transaction whose commands were redirected is aborted at EXEC), and the
            // request goes where the redirection says, as the engine's own cluster
            // connections do (the deadline bounds the whole).
            let mut redirections = 0;
            loop {
                let sent = if commands.len() == 1 && !asking && !anchored {
                    let command = commands[0].clone();
                    connection
                        .route_command(command, RoutingInfo::SingleNode(node.clone()))
                        .await
                        .map(|reply| vec![reply])
                } else {
                    let mut pipeline = redis::pipe();
                    if asking {
                        pipeline.add_command(redis::cmd("ASKING"));
                    }
                    if anchored {
                        pipeline.add_command(redis::cmd("EXISTS").arg(tag.as_str()).clone());
                    }
                    for command in &commands {
                        pipeline.add_command(command.clone());
                    }
                    // The anchor's reply comes back too (the crate checks only the replies it
                    // returns for redirections); ASKING's does not.
                    connection
                        .route_pipeline(
                            pipeline,
                            usize::from(asking),
                            count + usize::from(anchored),
                            node.clone(),
                        )
                        .await
                };
                let redirect = if redirections < MAX_REDIRECTIONS {
                    redirection(&sent, anchored)
                } else {
                    None
                };
                match redirect {
                    Some((host, port, ask)) => {
                        node = SingleNodeRoutingInfo::ByAddress { host, port };
                        asking = ask;
                        redirections += 1;
                    }
                    None => {
                        // The anchor's reply is not the request's.
                        let sent = sent.map(|replies| {
                            replies
                                .into_iter()
                                .skip(usize::from(anchored))
                                .collect::<Vec<_>>()
                        });
                        if commands.len() == 1 {
                            return lone(sent.and_then(|replies| {
                                replies.into_iter().next().ok_or_else(|| {
                                    redis::RedisError::from((
                                        redis::ErrorKind::Parse,
                                        "no reply to a command",
                                    ))
                                })
                            }));
                        }
                        return sent.map(|replies| replies.into_iter().map(convert).collect());
                    }
                }
            }
        }))
    }
}

/// Where a request sent through the crate's cluster connection was redirected, if it was:
/// `(host, port, ask)`, from the crate's error or, for an anchored request, from the anchor's
/// own reply.
fn redirection(
    sent: &redis::RedisResult<Vec<redis::Value>>,
    anchored: bool,
) -> Option<(String, u16, bool)> {
    let (address, ask) = match sent {
        Err(error) => {
            let (address, _) = error.redirect_node()?;
            let ask = matches!(
                error.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::Ask)
            );
            (address.to_string(), ask)
        }
        Ok(replies) if anchored => match replies.first() {
            Some(redis::Value::ServerError(error)) if matches!(error.code(), "MOVED" | "ASK") => {
                let address = error.details()?.split_ascii_whitespace().nth(1)?;
                (address.to_string(), error.code() == "ASK")
            }
            _ => return None,
        },
        Ok(_) => return None,
    };
    let (host, port) = address.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?, ask))
}

/// How many redirections one request follows through the crate's cluster connection.
const MAX_REDIRECTIONS: usize = 5;

/// The master some sentinels name, through the crate's `SentinelClient`: a multiplexed
/// connection to the master of the moment, forgotten when it fails, times out or the server
/// says it is no longer the master (`READONLY`), so that the next request asks the sentinels
/// again. Nothing is resent.
pub(crate) struct CrateSentinel {
    sentinel: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
    current: std::sync::Mutex<Option<Master>>,
}

/// The connection to the master the sentinels named, with its address and when they were
/// last asked.
#[derive(Clone)]
struct Master {
    connection: redis::aio::MultiplexedConnection,
    address: redis::ConnectionAddr,
    asked: std::time::Instant,
}

impl CrateSentinel {
    pub(crate) fn new(sentinel: redis::sentinel::SentinelClient) -> Self {
        Self {
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: std::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Master>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection to the master, asking the sentinels when there is none, and again once
    /// a second while in use: a failover whose old master still accepts writes for a while
    /// (it is demoted after its replica is promoted) is noticed within about a second, as the
    /// engine's own sentinel support does.
    async fn connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let current = self.current().clone();
        let due = match &current {
            Some(master) if master.asked.elapsed() < crate::sentinel::CHECK_EVERY => {
                return Ok(master.connection.clone());
            }
            Some(master) => Some(master),
            None => None,
        };
        let mut sentinel = match (due, self.sentinel.try_lock()) {
            (_, Ok(sentinel)) => sentinel,
            // Another request is asking: this one goes on with the connection it has.
            (Some(master), Err(_)) => return Ok(master.connection.clone()),
            (None, Err(_)) => self.sentinel.lock().await,
        };
        // Another request may have asked while this one waited for the sentinels.
        if let Some(master) = self.current().clone()
            && master.asked.elapsed() < crate::sentinel::CHECK_EVERY
        {
            return Ok(master.connection);
        }
        let client = match sentinel.async_get_client().await {
            Ok(client) => client,
            // The sentinels did not answer: the master of the moment keeps serving.
            Err(_) if current.is_some() => {
                let mut now = self.current();
                if let Some(master) = now.as_mut() {
                    master.asked = std::time::Instant::now();
                    return Ok(master.connection.clone());
                }
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "the connection to the master was dropped",
                )));
            }
            Err(error) => return Err(error),
        };
        let address = client.get_connection_info().addr().clone();
        if let Some(master) = current.filter(|m| m.address == address) {
            let mut now = self.current();
            if let Some(kept) = now.as_mut() {
                kept.asked = std::time::Instant::now();
            }
            return Ok(master.connection);
        }
        let connection = client.get_multiplexed_async_connection().await?;
        *self.current() = Some(Master {
            connection: connection.clone(),
            address,
            asked: std::time::Instant::now(),
        });
        Ok(connection)
    }
}

impl fmt::Debug for CrateSentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrateSentinel")
            .field("connected", &self.current().is_some())
            .finish_non_exhaustive()
    }
}

/// Forgets the sentinel transport's connection when dropped armed: a request that failed on
/// it, or was cut off by its deadline (the master may be frozen, or gone behind a silent
/// network).
struct Forget<'a>(Option<&'a CrateSentinel>);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Some(sentinel) = self.0.take() {
            *sentinel.current() = None;
        }
    }
}

impl External for CrateSentinel {
    fn send<'a>(
        &'a self,
        request: &'a Request,
        deadline: Deadline,
    ) -> Pending<'a, Result<Vec<Value>>> {
        Box::pin(run(request, deadline, move |commands, count| async move {
            let mut forget = Forget(Some(self));
            let mut connection = self.connection().await?;
            let sent = send_on(&mut connection, commands, count).await;
            let keep = match &sent {
                Ok(replies) => !replies.iter().any(
                    |reply| matches!(reply, Value::Error(text) if text.starts_with("READONLY")),
                ),
                Err(error) => {
                    !(error.is_io_error()
                        || error.is_connection_dropped()
                        || error.is_connection_refusal()
                        || matches!(
                            error.kind(),
                            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                        ))
                }
            };
            if keep {
                forget.0 = None;
            }
            sent
        }))
    }
}

/// Sends `commands` on a connection of the crate: one command alone (the crate's shorter path
/// for a lone command), several as one pipeline of `count` replies.
async fn send_on<C: redis::aio::ConnectionLike>(
    connection: &mut C,
    mut commands: Vec<redis::Cmd>,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    match (commands.len(), commands.pop()) {
        (1, Some(command)) => lone(connection.req_packed_command(&command).await),
        (_, last) => {
            let mut pipeline = redis::pipe();
            for command in commands.into_iter().chain(last) {
                pipeline.add_command(command);
            }
            connection
                .req_packed_commands(&pipeline, 0, count)
                .await
                .map(|replies| replies.into_iter().map(convert).collect())
        }
    }
}

/// A lone command's reply. The crate may hand an error reply over as an error: it is a reply
/// all the same, which the exchange reads.
fn lone(reply: redis::RedisResult<redis::Value>) -> redis::RedisResult<Vec<Value>> {
    match reply {
        Ok(reply) => Ok(vec![convert(reply)]),
        Err(error) if error.code().is_some() => {
            let text = match (error.code(), error.detail()) {
                (Some(code), Some(detail)) => format!("{code} {detail}"),
                (code, _) => code.unwrap_or("ERR").to_string(),
            };
            Ok(vec![Value::Error(text)])
        }
        Err(error) => Err(error),
    }
}

/// Runs `request` through `send` (given its commands and their count) within `deadline`, and
/// checks the replies: one per command, each within the request's limits.
async fn run<F, S>(request: &Request, deadline: Deadline, send: S) -> Result<Vec<Value>>
where
    S: FnOnce(Vec<redis::Cmd>, usize) -> F,
    F: Future<Output = redis::RedisResult<Vec<Value>>>,
{
    let commands = commands_of(request)?;
    let count = request.replies;
    let budget = deadline.budget();
    let left = deadline.remaining().ok_or_else(|| timed_out(budget))?;
    let replies: Vec<Value> = match tokio::time::timeout(left, send(commands, count)).await {
        Err(_) => return Err(timed_out(budget)),
        Ok(Err(error)) => return Err(crate_error(error, budget)),
        Ok(Ok(replies)) => replies,
    };
    if replies.len() != count {
        return Err(protocol(ProtocolError::Unexpected(format!(
            "{count} commands got {} replies",
            replies.len()
        ))));
    }
    for reply in &replies {
        within(reply, &request.limits, 0)?;
    }
    Ok(replies)
}

/// Runs the exchange `make` builds on `external`, within `deadline` (a request with a deadline
/// of its own gets `timeout`).
pub(crate) async fn drive<M>(
    external: &dyn External,
    deadline: Deadline,
    timeout: Duration,
    mut make: M,
) -> Result<<M::Exchange as Exchange<Value>>::Output>
where
    M: Make<Value>,
{
    let mut exchange = make.make()?;
    let mut step = exchange.start()?;
    loop {
        match step {
            Step::Done(output) => return Ok(output),
            Step::Send(request) => {
                let deadline = if request.own_deadline {
                    Deadline::after(timeout)
                } else {
                    deadline
                };
                let replies = external.send(&request, deadline).await?;
                step = exchange.next(replies)?;
            }
        }
    }
}

/// The commands of `request` (RESP arrays of bulk strings, as our encoder writes them) as
/// commands of the `redis` crate.
fn commands_of(request: &Request) -> Result<Vec<redis::Cmd>> {
    let limits = ReplyLimits::scalar(usize::MAX).with_arrays(usize::MAX, 1);
    let mut commands = Vec::with_capacity(request.replies);
    let mut at = 0;
    while at < request.bytes.len() {
        let Ok(Decoded::Reply(Value::Array(words), used)) =
            Resp.decode(&request.bytes[at..], &limits)
        else {
            return Err(protocol(ProtocolError::Malformed(
                "a request that is not a list of commands".into(),
            )));
        };
        at += used;
        let mut words = words.into_iter().map(|word| match word {
            Value::Bulk(bytes) => Ok(bytes),
            _ => Err(protocol(ProtocolError::Malformed(
                "a command word that is not a bulk string".into(),
            ))),
        });
        let Some(name) = words.next().transpose()? else {
            return Err(protocol(ProtocolError::Malformed(
                "an empty command".into(),
            )));
        };
        let mut command = redis::Cmd::new();
        command.arg(name);
        for word in words {
            command.arg(word?);
        }
        commands.push(command);
    }
    Ok(commands)
}

/// A reply of the `redis` crate in our shapes (RESP3's types as the decoder reads them).
fn convert(reply: redis::Value) -> Value {
    match reply {
        redis::Value::Nil => Value::Nil,
        redis::Value::Int(n) => Value::Integer(n),
        redis::Value::BulkString(bytes) => Value::Bulk(bytes),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            Value::Array(items.into_iter().map(convert).collect())
        }
        redis::Value::SimpleString(text) => Value::Simple(text),
        redis::Value::Okay => Value::Simple("OK".into()),
        redis::Value::Map(pairs) => Value::Array(
            pairs
                .into_iter()
                .flat_map(|(key, value)| [convert(key), convert(value)])
                .collect(),
        ),
        redis::Value::Attribute { data, .. } => convert(*data),
        redis::Value::Double(number) => Value::Bulk(number.to_string().into_bytes()),
        redis::Value::Boolean(flag) => Value::Integer(i64::from(flag)),
        redis::Value::VerbatimString { text, .. } => Value::Bulk(text.into_bytes()),
        redis::Value::Push { data, .. } => Value::Push(data.into_iter().map(convert).collect()),
        redis::Value::ServerError(error) => Value::Error(match error.details() {
            Some(details) => format!("{} {details}", error.code()),
            None => error.code().to_string(),
        }),
        // A big number: not a reply to any command the engine sends.
        other => Value::Error(format!("ERR unexpected reply {other:?}")),
    }
}

/// Checks `value` against the request's reply limits, as our decoder does while reading (here
/// after the crate has read it: the bound on memory is the crate's, not ours).
fn within(value: &Value, limits: &ReplyLimits, depth: usize) -> Result<()> {
    match value {
        Value::Bulk(bytes) if bytes.len() > limits.max_value => {
            Err(protocol(ProtocolError::ValueTooLong {
                announced: bytes.len() as u64,
                limit: limits.max_value,
            }))
        }
        Value::Array(items) | Value::Push(items) => {
            if depth >= limits.max_depth {
                return Err(protocol(ProtocolError::TooDeep {
                    limit: limits.max_depth,
                }));
            }
            if items.len() > limits.max_elements {
                return Err(protocol(ProtocolError::TooManyElements {
                    announced: items.len() as u64,
                    limit: limits.max_elements,
                }));
            }
            items
                .iter()
                .try_for_each(|item| within(item, limits, depth + 1))
        }
        _ => Ok(()),
    }
}

fn protocol(error: ProtocolError) -> CacheError {
    CacheError::Backend {
        backend: BACKEND,
        source: Box::new(error),
    }
}

fn timed_out(budget: Duration) -> CacheError {
    CacheError::Timeout {
        backend: BACKEND,
        operation: "redis crate",
        address: "a redis crate connection".into(),
        after: budget,
    }
}

/// A `redis` crate error as ours: transient for I/O, a dropped or refused connection and a
/// timeout; `Authentication` and `PermissionDenied` by their kind; else `Backend`.
fn crate_error(error: redis::RedisError, budget: Duration) -> CacheError {
    let address = "a redis crate connection".to_string();
    if error.is_timeout() {
        return timed_out(budget);
    }
    // A cluster in motion (a slot moving, a failover under way): nothing was applied, and the
    // crate, whose retries are off, has begun to read the new slot map.
    let moving = matches!(
        error.kind(),
        redis::ErrorKind::Server(
            redis::ServerErrorKind::Moved
                | redis::ServerErrorKind::Ask
                | redis::ServerErrorKind::TryAgain
                | redis::ServerErrorKind::ClusterDown
                | redis::ServerErrorKind::MasterDown
        ) | redis::ErrorKind::ClusterConnectionNotFound
    );
    if moving
        || error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        return CacheError::Connection {
            backend: BACKEND,
            operation: "redis crate",
            address,
            source: Some(Box::new(error)),
        };
    }
    match error.kind() {
        redis::ErrorKind::AuthenticationFailed => CacheError::Authentication {
            backend: BACKEND,
            address,
            source: Some(Box::new(error)),
        },
        _ => CacheError::Backend {
            backend: BACKEND,
            source: Box::new(error),
        },
    }
}
