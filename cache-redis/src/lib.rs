//! A Redis engine for cache-toolkit.
//!
//! [`RedisEngine`] implements [`cache_core::CacheEngine`] on a Redis server. It speaks RESP
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
//! (rustls, never OpenSSL). The port defaults to 6379 and the database to 0; user and password
//! are percent-decoded. Examples: `redis://127.0.0.1`, `redis://:secret@cache.internal:6380/2`,
//! `redis://app:s%40cret@cache.internal/0`, `redis://[::1]:6379`. Query parameters and
//! fragments are refused. Passwords never appear in `Debug` or in errors.
//!
//! With `rediss://`, the server certificate is checked against the system's and webpki's roots,
//! or against [`tls_root_certificate`](RedisEngineBuilder::tls_root_certificate). Turning the
//! check off takes [`danger_accept_invalid_certs`](RedisEngineBuilder::danger_accept_invalid_certs):
//! a URL from configuration can never do it.
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
//! | largest value | 512 MiB | (builder only) |
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
//!   the server: `add`, `increment`, `delete` and `touch` with a zero TTL report the error
//!   instead of risking a second application. Wrong credentials are `Authentication`; an ACL
//!   refusal is `PermissionDenied`; a write refused at `maxmemory` (`OOM`) is `Refused`.
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
//!   default TTL) and `INCRBY`, `touch` is `PEXPIRE` or `PERSIST`; bulk reads are `MGET`s, bulk
//!   writes pipelines. A bulk write refused part-way (`OOM`) is `Refused` with
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
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "tokio")]
mod async_engine;
mod backend;
mod cluster;
mod config;
mod core;
mod engine;
mod ops;
mod sentinel;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "tokio")]
pub use async_engine::AsyncRedisEngine;
pub use cache_remote::blocking::PoolState;
pub use cache_remote::{Async, Blocking};
pub use cache_remote::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IDLE_CONNECTIONS, DEFAULT_TIMEOUT,
};
pub use config::{DEFAULT_MAX_VALUE_SIZE, DEFAULT_URL, RedisEngineBuilder};
pub use engine::RedisEngine;
