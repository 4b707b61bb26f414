//! A Redis engine for cache-toolkit.
//!
//! [`RedisEngine`] implements [`cache_core::CacheEngine`] on a Redis server with the `redis`
//! crate's blocking client, and passes the conformance kit against a real `redis-server`.
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
//! (rustls, never OpenSSL). The port defaults to 6379 and the database to 0. Examples:
//! `redis://127.0.0.1`, `redis://:secret@cache.internal:6380/2`,
//! `redis://app:secret@cache.internal/0`. Passwords never appear in `Debug` or in errors.
//!
//! With `rediss://`, the server certificate is checked against the system's and webpki's roots,
//! or against [`tls_root_certificate`](RedisEngineBuilder::tls_root_certificate). Turning the
//! check off takes [`danger_accept_invalid_certs`](RedisEngineBuilder::danger_accept_invalid_certs):
//! URL fragments such as `#insecure` are refused, so a URL from configuration can never do it.
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
//! | idle connections kept | 8 | `CACHE_REDIS_POOL_SIZE` |
//! | largest value | 512 MiB | (builder only) |
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
//!   default TTL) and `INCRBY`, `touch` is `PEXPIRE` or `PERSIST`; bulk reads are one `MGET`,
//!   bulk writes one pipeline.
//! - **Timeouts and failures**: opening a connection (handshake included) and every operation
//!   are bounded (1 s each by default), so a dead or frozen server fails fast with `Connection`
//!   or `Timeout`. A connection that saw a transport or protocol error is dropped, never reused.
//!   After a server restart the first operation on a stale pooled connection drops the pool and,
//!   if running it twice is harmless, runs once more on a fresh connection; `add`, `increment`
//!   and `delete` report the error instead. Wrong credentials are `Authentication`; an ACL
//!   refusal is `PermissionDenied`.
//! - **Keys** follow the portable rule by default (checked before anything is sent);
//!   [`relaxed_keys`](RedisEngineBuilder::relaxed_keys) accepts any key up to 64 KiB.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod backend;
mod config;
mod engine;
mod ops;
#[cfg(feature = "tls")]
mod tls;

pub use cache_remote::blocking::PoolState;
pub use cache_remote::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IDLE_CONNECTIONS, DEFAULT_TIMEOUT,
};
pub use config::{DEFAULT_MAX_VALUE_SIZE, DEFAULT_URL, RedisEngineBuilder};
pub use engine::RedisEngine;
