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
    /// Whether the connection is the crate's cluster connection, which the engine refuses.
    fn is_cluster(&self) -> bool;

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
    fn is_cluster(&self) -> bool {
        // The crate's `cluster_async::ClusterConnection` (behind its `cluster-async` feature,
        // which this crate does not turn on, so the type cannot be named here).
        self.name.contains("cluster_async") || self.name.contains("ClusterConnection")
    }

    fn send<'a>(
        &'a self,
        request: &'a Request,
        deadline: Deadline,
    ) -> Pending<'a, Result<Vec<Value>>> {
        Box::pin(async move {
            let mut commands = commands_of(request)?;
            let count = request.replies;
            let mut connection = self.connection.clone();
            let budget = deadline.budget();
            let left = deadline.remaining().ok_or_else(|| timed_out(budget))?;
            // One command goes alone: the crate's path for a lone command is the shorter one.
            let sent = async {
                match (commands.len(), commands.pop()) {
                    (1, Some(command)) => match connection.req_packed_command(&command).await {
                        Ok(reply) => Ok(vec![convert(reply)]),
                        // The crate may hand a lone command's error reply over as an error:
                        // it is a reply all the same, which the exchange reads.
                        Err(error) if error.code().is_some() => {
                            let text = match (error.code(), error.detail()) {
                                (Some(code), Some(detail)) => format!("{code} {detail}"),
                                (code, _) => code.unwrap_or("ERR").to_string(),
                            };
                            Ok(vec![Value::Error(text)])
                        }
                        Err(error) => Err(error),
                    },
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
            };
            let replies: Vec<Value> = match tokio::time::timeout(left, sent).await {
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
        })
    }
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
    if error.is_io_error() || error.is_connection_dropped() || error.is_connection_refusal() {
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
