//! A Redis engine for cache-toolkit.
//!
//! [`RedisEngine`] implements [`cache_core::CacheEngine`] on a Redis server, a Redis Cluster, or
//! the master of a Sentinel setup. It speaks RESP
//! through the shared remote core (`cache-remote`): pooled connections bounded in number, one
//! deadline per operation, and replies bounded before they are read. It passes the conformance
//! kit against a real `redis-server`.
//!
//! ```no_run
//! use std::time::Duration;
//! use cache_core::{Bytes, CacheEngine, Ttl};
//! use cache_redis::RedisEngine;
//!
//! # fn main() -> cache_core::Result<()> {
//! let cache = RedisEngine::builder()
//!     .url("redis://127.0.0.1:6379/0")
//!     .namespace("billing")
//!     .default_ttl(Duration::from_secs(60))
//!     .timeout(Duration::from_millis(250))
//!     .build()?;
//! cache.set("invoice:7", Bytes::from_static(b"paid"), Ttl::Default)?;
//! cache.clear()?; // removes billing's keys only
//! # Ok(())
//! # }
//! ```
//!
//! # URLs
//!
//! `redis://[user][:password@]host[:port][/db]`, and `rediss://` for TLS with the `tls` feature
//! (rustls, never OpenSSL); `redis-cluster://` and `redis-sentinel://` for the setups below (see
//! [`url`](RedisEngineBuilder::url) for every form). The port defaults to 6379 and the database to 0; user and password
//! are percent-decoded. Examples: `redis://127.0.0.1`, `redis://:secret@cache.internal:6380/2`,
//! `redis://app:s%40cret@cache.internal/0`, `redis://[::1]:6379`. Query parameters and
//! fragments are refused. Passwords never appear in `Debug` or in errors.
//!
//! With `rediss://`, the server certificate is checked against the system's and webpki's roots,
//! or against [`tls_root_certificate`](RedisEngineBuilder::tls_root_certificate). Turning the
//! check off takes [`danger_accept_invalid_certs`](RedisEngineBuilder::danger_accept_invalid_certs):
//! a URL from configuration can never do it.
//!
//! # Redis Cluster
//!
//! ```no_run
//! use cache_redis::RedisEngine;
//!
//! # fn main() -> cache_core::Result<()> {
//! let cache = RedisEngine::builder()
//!     .url("redis-cluster://app:secret@10.0.0.1:7000,10.0.0.2:7000")
//!     // or .cluster(["10.0.0.1:7000", "10.0.0.2:7000"])
//!     .namespace("billing")
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! The nodes named are seeds: the engine reads the slot map (`CLUSTER SLOTS`) from any of them
//! on first use and talks to every master directly. Database 0 only (a cluster has no other).
//!
//! - **Routing**: a key goes to the master serving its slot (CRC16 of the key with the namespace
//!   prefix, or of its hash tag). `MOVED` updates the map and re-reads it (at most every
//!   100 ms); `ASK` sends the command once to the node named, after `ASKING`. Both are followed
//!   within the operation's deadline, up to 5 times; callers never see them. A request is sent
//!   again only when the node said it did not run it: a redirection never applies an
//!   `increment` or an `add` twice.
//! - **Spread and co-location**: a namespace's keys spread over every master.
//!   [`colocate_namespace`](RedisEngineBuilder::colocate_namespace) keeps them in one slot
//!   instead (`{namespace}:key`): one node's memory and load, one node per bulk call.
//! - **Bulk operations** group keys by node, send one command per key (never a cross-slot
//!   command), run every node at once, send redirected keys again on their own, and return
//!   results in the caller's order.
//! - **`clear()`** with a namespace scans and unlinks the namespace's keys on every master and
//!   nothing else; without one it runs `FLUSHDB` on every master: everything in the cluster goes.
//! - **Failover**: while a master is down and until its replica is promoted (the cluster's
//!   `cluster-node-timeout` plus an election), operations on its slots fail with transient
//!   errors (`Connection`, `Timeout`; `CLUSTERDOWN` and `TRYAGAIN` too), then succeed against the
//!   new master. Measured with a node timeout of 1 s: 2.3 s of errors, 0 wrong values.
//! - **What a failover weakens**: Redis replicates asynchronously, so a write acknowledged by the
//!   old master shortly before it died may never have reached the replica that replaces it. Such
//!   a `set` is lost (a later `get` misses or sees the value before), an `increment` can be
//!   undone (a counter may repeat a value it returned), and an `add` that won can be won again.
//!   Everything else holds: no operation returns another key's value, and no request is applied
//!   twice. `WAIT`-based acknowledgement is not offered: it narrows the window without closing
//!   it (Redis does not promise that a write acknowledged by `WAIT` survives a failover).
//!
//! # Redis Sentinel
//!
//! ```no_run
//! use cache_redis::RedisEngine;
//!
//! # fn main() -> cache_core::Result<()> {
//! let cache = RedisEngine::builder()
//!     .url("redis-sentinel://:secret@10.0.0.1:26379,10.0.0.2:26379/mymaster/0")
//!     // or .sentinels(["10.0.0.1:26379", "10.0.0.2:26379"], "mymaster")
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! The engine asks the sentinels (in turn) for the master named, on first use, after any
//! operation failing in a way that may mean the master changed, and every second in the
//! background while the engine lives. Every new connection checks with `ROLE` that it reached a
//! master. The credentials and database of the URL are the master's; sentinels are asked
//! without credentials. After a failover the engine writes to the new master within about a
//! second of the sentinels naming it (0.94 s measured); writes it made to the old master in
//! between are lost when that one becomes a replica, as with any Redis client. The promises a
//! failover weakens are those of a cluster's, above.
//!
//! # Defaults and environment
//!
//! | setting | default | variable for [`RedisEngine::from_env`] |
//! |---|---|---|
//! | URL | `redis://127.0.0.1:6379` | `CACHE_REDIS_URL` |
//! | namespace | none | `CACHE_REDIS_NAMESPACE` |
//! | default TTL | 300 s | `CACHE_REDIS_DEFAULT_TTL` (seconds, or `never`) |
//! | operation timeout | 1 s | `CACHE_REDIS_TIMEOUT_MS` |
//! | connect timeout | 1 s | `CACHE_REDIS_CONNECT_TIMEOUT_MS` |
//! | connections open at most | 32 | `CACHE_REDIS_MAX_CONNECTIONS` |
//! | idle connections kept | 32 | `CACHE_REDIS_MAX_IDLE_CONNECTIONS` |
//! | keepalive: idle connections checked after | 30 s | `CACHE_REDIS_KEEPALIVE_MS` (`0` or `off`: never) |
//! | pipelines (async) | 1 | `CACHE_REDIS_PIPELINES` |
//! | requests waiting per connection (async) | 16,384 | `CACHE_REDIS_MAX_QUEUED_REQUESTS` |
//! | request bytes waiting per connection (async) | 64 MiB | `CACHE_REDIS_MAX_QUEUED_BYTES` |
//! | largest value | 64 MiB | (builder only) |
//!
//! # Deadlines, limits and connections
//!
//! - **One deadline per operation.** An operation ends within
//!   [`timeout`](RedisEngineBuilder::timeout) (1 s): waiting for a free connection, the request
//!   and every reply it waits for, however slowly a server trickles them. Opening a new
//!   connection (TLS and `AUTH`/`SELECT` included) adds up to
//!   [`connect_timeout`](RedisEngineBuilder::connect_timeout). Operations whose work grows with
//!   their input get a deadline per batch: `clear()` per `SCAN` and per `UNLINK` of at most 500
//!   keys, bulk operations per batch of at most 512 keys (and 1 MiB of values for writes).
//! - **Bounded replies.** A reply announcing a value longer than
//!   [`max_value_size`](RedisEngineBuilder::max_value_size) (or 64 KiB, whichever is larger), an
//!   array longer or deeper than the command can produce, or a line over 64 KiB is refused
//!   before anything is allocated for it: `Backend` error, connection dropped. One operation
//!   holds at most about twice the value limit in memory.
//! - **Bounded connections.** At most [`max_connections`](RedisEngineBuilder::max_connections)
//!   (32) are open at once; more concurrent callers wait for one until their deadline, then get
//!   `Timeout`.
//! - **Failures.** A connection goes back to the pool only when every reply of its last request
//!   was read; a timeout, an I/O error or a reply that cannot be trusted drops it. After a
//!   server restart, the first operation on a stale pooled connection drops the idle ones and
//!   runs again on a new connection if no request that must not be sent twice may have reached
//!   the server: `add`, `increment`, `delete`, `delete_if_equals` and `touch` with a zero TTL
//!   report the error instead of risking a second application. Wrong credentials are
//!   `Authentication`; an ACL refusal is `PermissionDenied`; a write refused at `maxmemory`
//!   (`OOM`) is `Refused`.
//!
//! # Behaviour
//!
//! - **TTLs** are sent in milliseconds (`PX`), rounded up; `Ttl::Never` clears an earlier TTL;
//!   `Ttl::After(Duration::ZERO)` deletes the key. `EX 0` is never sent.
//! - **Namespaces**: with [`namespace`](RedisEngineBuilder::namespace) every key lives under the
//!   escaped prefix (`app:`), and `clear()` removes exactly those keys with `SCAN MATCH` (glob
//!   characters escaped) and `UNLINK` in batches: never `KEYS`, never `FLUSHALL`. It works for an
//!   ACL user limited to `~app:*` without `@dangerous` commands. **Without a namespace,
//!   `clear()` runs `FLUSHDB` on the engine's database**: every key of that database goes.
//! - **Atomic operations**: `add` is `SET NX`, `increment` is one `MULTI` of `SET NX` (with the
//!   default TTL) and `INCRBY`, `touch` is `PEXPIRE` or `PERSIST`, `delete_if_equals` is one
//!   `EVAL` of a Lua script (`GET`, compare, `DEL`; ACL users need `EVAL`, in `@scripting`, or
//!   get `PermissionDenied`); bulk reads are `MGET`s, bulk writes pipelines. A bulk write refused part-way (`OOM`) is `Refused` with
//!   `partly_applied`: earlier entries may be stored.
//! - **Keys** follow the portable rule by default (checked before anything is sent);
//!   [`relaxed_keys`](RedisEngineBuilder::relaxed_keys) accepts any key up to 64 KiB.
//!
//! # Features and faces
//!
//! | feature | what it adds |
//! |---|---|
//! | `tokio` | [`AsyncRedisEngine`]: the same engine as futures, for async code on the tokio runtime |
//! | `tls` | `rediss://` URLs, with rustls (never OpenSSL) |
//!
//! Both faces share the builder (`RedisEngine::builder()` and `AsyncRedisEngine::builder()` return its blocking
//! and async faces), the commands, the limits, the errors and the conformance kit. Use the async
//! engine in async code: it pipelines every task's requests on one connection (measured 6 to 9
//! times the blocking engine's throughput with 64 callers, see `docs/BENCHMARKS.md`) and never
//! holds an executor thread while it waits. Use the blocking engine in threaded code; it never
//! runs an async runtime inside. A future of the async engine may be dropped at any await point
//! (a timeout, a `select!`): the connection stays in step and no other call ever receives its
//! reply.
//!
//! Under a stalled or silent server, the async engine keeps these promises (each tested, see
//! `docs/RELIABILITY.md`):
//!
//! - **Every operation ends within `timeout + connect_timeout` of its call**, whether it opens a
//!   connection, waits for another caller's attempt to open one (one attempt serves them all),
//!   or both.
//! - **It recovers without being rebuilt**: a connection whose oldest unanswered request is a
//!   whole `timeout` past its deadline is closed and replaced, so the engine serves again
//!   within `2 x timeout + connect_timeout` of the server being reachable. A connection idle
//!   for [`keepalive`](RedisEngineBuilder::keepalive) (30 s) is pinged, and closed unless
//!   the ping is answered within `timeout`; sockets have TCP keepalive on.
//! - **What waits is bounded**: per connection, at most
//!   [`max_queued_requests`](RedisEngineBuilder::max_queued_requests) (16,384) requests and
//!   [`max_queued_bytes`](RedisEngineBuilder::max_queued_bytes) (64 MiB) not yet written;
//!   past either, an operation fails at once with `CacheError::Overloaded`. A request whose
//!   caller was cancelled or whose deadline passed before it was written is never written.
//! - **The operations on a key keep their order**: with several
//!   [`pipelines`](RedisEngineBuilder::pipelines), each key goes on one connection (by a
//!   hash of the key) and bulk operations are split by connection. The order holds while a
//!   connection lives: a write sent on a connection that then failed may still land after a
//!   write on its replacement.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tokio")]
mod async_engine;
mod backend;
mod cluster;
mod config;
mod core;
mod engine;
mod invalidation;
mod ops;
mod sentinel;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "tokio")]
pub use async_engine::AsyncRedisEngine;
pub use cache_remote::blocking::PoolState;
pub use cache_remote::{Async, Blocking};
pub use cache_remote::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IDLE_CONNECTIONS, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_PIPELINES, DEFAULT_TIMEOUT,
};
pub use config::{DEFAULT_MAX_VALUE_SIZE, DEFAULT_URL, RedisEngineBuilder};
pub use engine::RedisEngine;
pub use invalidation::RedisInvalidations;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
