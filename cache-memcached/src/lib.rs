//! A memcached engine for cache-toolkit.
//!
//! [`MemcachedEngine`] implements [`cache_core::CacheEngine`] on a memcached server, or on
//! several with consistent hashing. It speaks
//! the meta protocol through the shared remote core (`cache-remote`): pooled connections bounded
//! in number, one deadline per operation, replies bounded before they are read, and every reply
//! checked against its command's opaque token. It passes the conformance kit against a real
//! `memcached`.
//!
//! ```no_run
//! use std::time::Duration;
//! use cache_core::{Bytes, CacheEngine, Ttl};
//! use cache_memcached::MemcachedEngine;
//!
//! # fn main() -> cache_core::Result<()> {
//! let cache = MemcachedEngine::builder()
//!     .server("memcached://127.0.0.1:11211")
//!     .namespace("sessions")
//!     .default_ttl(Duration::from_secs(900))
//!     .build()?;
//! cache.set("s:42", Bytes::from_static(b"token"), Ttl::Default)?;
//! cache.clear()?; // forgets sessions' entries in O(1); never flush_all
//! # Ok(())
//! # }
//! ```
//!
//! # Servers
//!
//! `memcached://host[:port]`, `memcache://host[:port]` or `host[:port]`; the port defaults to
//! 11211. One with [`server`](MemcachedEngineBuilder::server), several with
//! [`servers`](MemcachedEngineBuilder::servers).
//!
//! # Several servers
//!
//! ```no_run
//! use std::time::Duration;
//! use cache_memcached::MemcachedEngine;
//!
//! # fn main() -> cache_core::Result<()> {
//! let cache = MemcachedEngine::builder()
//!     .servers(["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"])
//!     .namespace("sessions")
//!     .server_failure_limit(3) // failures in a row before a server leaves the ring
//!     .server_retry_after(Duration::from_secs(5)) // then tried again
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! - **Placement**: ketama consistent hashing, exactly as libmemcached's weighted ketama places
//!   keys (`MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED`; pylibmc's `ketama_weighted`, PHP's
//!   `OPT_LIBKETAMA_COMPATIBLE`): 160 points per server, MD5 of `host:port-i` (`host-i` on port
//!   11211), the key's MD5. Clients in other languages configured so find every key on the same
//!   server; the test suite checks 10,000 keys against pylibmc. Placement is by the key as sent,
//!   so with a namespace the others must use the same full key. Adding a fourth server to three
//!   moves the keys the new one takes: 23.9% of 10,000 in the test (a quarter expected).
//! - **Fan-out**: bulk operations split their keys by server and run every server at once (the
//!   async engine concurrently, the blocking one by writing every request before reading any
//!   reply); results come back in the caller's order.
//! - **A failing server leaves the ring**: after
//!   [`server_failure_limit`](MemcachedEngineBuilder::server_failure_limit) (3) operations in a
//!   row fail on it (unreachable, broken connection, no answer within the timeout; never a wait
//!   for a free connection), its keys go to the next server on the ring: misses, then new
//!   entries, not errors. Until then its operations fail. It is tried again in the background
//!   every [`server_retry_after`](MemcachedEngineBuilder::server_retry_after) (5 s); no
//!   operation waits for that. [`MemcachedEngine::servers_out`] names the servers out. A single
//!   server never leaves (its keys would have nowhere to go): its errors are the caller's.
//! - **A server coming back** may hold values overwritten or deleted elsewhere while it was out.
//!   With a namespace, the engine first moves the namespace to a new generation (as `clear()`
//!   does) and only then gives the server its keys back: **no value older than a write
//!   acknowledged while it was out is ever read** (checked with a server frozen and resumed).
//!   Other engines learn the new generation within their
//!   [`generation_refresh`](MemcachedEngineBuilder::generation_refresh) (1 s). The price: the
//!   namespace starts empty after every return. **Without a namespace there is no generation to
//!   move: a returning server serves what it held until those values expire** (in the test, all
//!   100 of its keys were stale after its return): bound your TTLs, or use a namespace.
//!
//! # Defaults and environment
//!
//! | setting | default | variable for [`MemcachedEngine::from_env`] |
//! |---|---|---|
//! | server | `127.0.0.1:11211` | `CACHE_MEMCACHED_SERVERS` (comma-separated) |
//! | namespace | none | `CACHE_MEMCACHED_NAMESPACE` |
//! | default TTL | 300 s | `CACHE_MEMCACHED_DEFAULT_TTL` (seconds, or `never`) |
//! | operation timeout | 1 s | `CACHE_MEMCACHED_TIMEOUT_MS` |
//! | connect timeout | 1 s | `CACHE_MEMCACHED_CONNECT_TIMEOUT_MS` |
//! | connections open at most | 32 | `CACHE_MEMCACHED_MAX_CONNECTIONS` |
//! | idle connections kept | 32 | `CACHE_MEMCACHED_MAX_IDLE_CONNECTIONS` |
//! | keepalive: idle connections checked after | 30 s | `CACHE_MEMCACHED_KEEPALIVE_MS` (`0` or `off`: never) |
//! | pipelines (async) | 1 | `CACHE_MEMCACHED_PIPELINES` |
//! | requests waiting per connection (async) | 16,384 | `CACHE_MEMCACHED_MAX_QUEUED_REQUESTS` |
//! | request bytes waiting per connection (async) | 64 MiB | `CACHE_MEMCACHED_MAX_QUEUED_BYTES` |
//! | item size limit | 1 MiB, or the server's if smaller | `CACHE_MEMCACHED_ITEM_SIZE_LIMIT` |
//! | generation refresh | 1 s | (builder only) |
//! | failures before a server leaves the ring | 3 | (builder only) |
//! | time out of the ring before a retry | 5 s | (builder only) |
//!
//! # TTLs
//!
//! memcached's clock ticks in whole seconds, so an expiration of `n` seconds lives between
//! `n - 1` and `n` seconds. The engine sends `ceil(d) + 1` seconds for `Ttl::After(d)`: the entry
//! lives at least `d` and less than 2 s longer, which is the declared
//! [`ttl_resolution`](cache_core::Capabilities::ttl_resolution). `0` (never) is never sent for a
//! short TTL. Beyond 30 days memcached reads the number as a Unix time, so the engine sends one:
//! a 31-day TTL works. What does not fit memcached's expiration, a signed 32-bit Unix time (past
//! January 2038), is `InvalidTtl`: a larger number would be read as already expired.
//! `Ttl::Never` is `0`; `Ttl::After(Duration::ZERO)` deletes the key. Absolute times use this
//! machine's clock: keep it in step with the server's.
//!
//! [`remaining_ttl`](cache_core::CacheEngine::remaining_ttl) (`mg <key> t`),
//! [`get_with_ttl`](cache_core::CacheEngine::get_with_ttl) (`mg <key> v f t`, one command) and
//! [`get_many_with_ttl`](cache_core::CacheEngine::get_many_with_ttl) report what memcached
//! reports: whole seconds, `Remaining::After(secs)` (at least 1 s for a live entry), which may be
//! up to the [`ttl_resolution`](cache_core::Capabilities::ttl_resolution) off the entry's real
//! lifetime (a fresh 60 s entry, stored for 61 s, reports 60 or 61 s); `Remaining::Never` for
//! `t-1`. An entry of an older namespace generation, or another key's value under a hashed key,
//! is absent, as for `get`.
//!
//! # Namespaces and clear
//!
//! With a [`namespace`](MemcachedEngineBuilder::namespace), every key is
//! `namespace:GENERATION:key`, where the generation is 16 hex digits stored under an internal
//! binary key (the byte `0xff`, `generation:` and the namespace, sent base64-encoded): since every
//! caller's key is UTF-8, none can ever be it. `clear()` moves the namespace to a new generation:
//! the old entries become unreachable at once and expire or are evicted on their own. It is O(1)
//! and never runs `flush_all`.
//!
//! Generations are ordered (the time in milliseconds, then random bits) and **stored on every
//! server** of the engine. A lookup reads them all and uses the newest, raising servers that are
//! behind by compare-and-swap; a `clear()` writes one newer than every generation known. So a
//! server that missed a clear (it was out, or restarted) can never bring the cleared entries
//! back, and the death of any one server loses nothing: the others hold the generation. A clear
//! is lost only if every server that recorded it is lost. If every server lost the generation
//! (evicted, restarted) while an engine still knows it, the namespace moves to a new one: the old
//! one is never reused. A value under the key that this library did not write is replaced by
//! compare-and-swap, and an update gives up after 8 rounds, so whatever is stored on the servers
//! no operation outlives its deadline.
//!
//! Reading the generation on every operation would double the round trips, so each engine keeps
//! it for [`generation_refresh`](MemcachedEngineBuilder::generation_refresh) (1 s): `clear()`
//! takes effect at once for the engine that called it (a lookup that began before the clear
//! never brings the old generation back), and **within 1 s for other engines and
//! processes** (writes they make in that window land in the old generation and are cleared with
//! it).
//!
//! **Without a namespace, `clear()` runs `flush_all`: every entry on the server goes.**
//!
//! # Keys and values
//!
//! Keys are checked before any I/O with the portable key rule, counting the namespace and the
//! generation (`max_key_len` in the capabilities says what is left). A key holding `\r\n` could
//! inject a second command into memcached's text protocol; here such keys are `InvalidKey` and
//! never reach the wire. [`hash_keys`](MemcachedEngineBuilder::hash_keys)
//! instead stores such keys under their SHA-256, with the original key kept in the value and
//! compared on every read.
//!
//! Values larger than the item limit (the configured one, or the server's if smaller) minus 512
//! bytes of room for memcached's header and the key are refused with `ValueTooLarge` **before**
//! anything is sent, so the previous value under the key stays (a raw oversized `set` in
//! memcached would fail *and* remove it).
//!
//! # Counters
//!
//! memcached's `incr`/`decr` are unsigned and stop at zero; `increment` instead runs a
//! compare-and-swap loop (`mg` with CAS, `ms` with `C`) that follows Redis's signed 64-bit
//! arithmetic exactly, keeps the counter's remaining TTL (to the second), and creates a missing
//! counter atomically with the default TTL.
//!
//! # Compare-and-delete
//!
//! [`delete_if_equals`](cache_core::CacheEngine::delete_if_equals) reads the value with its CAS
//! (`mg <key> v f c`), compares it (an entry of an older generation, or another key's value under
//! a hashed key, is absent, as for `get`) and deletes it with that CAS (`md <key> C<cas>`), so a
//! value rewritten after the read is never deleted. If the entry was rewritten between the two
//! (`EX`), it reads again: a new value gives `false`, and after 5 rounds that each found the
//! expected value rewritten again, the call fails with `Backend` rather than guess (`false`
//! would be untrue, and a delete without the CAS could delete another writer's value). Only a
//! writer storing the same bytes over and over can cause that.
//!
//! # Deadlines, limits and failures
//!
//! - **One deadline per operation.** An operation ends within
//!   [`timeout`](MemcachedEngineBuilder::timeout) (1 s): waiting for a free connection, reading
//!   the namespace's generation when it is due, the request and every reply. Opening a new
//!   connection adds up to [`connect_timeout`](MemcachedEngineBuilder::connect_timeout). Bulk
//!   operations get a deadline per batch of at most 512 keys (and 1 MiB of values for writes).
//! - **Bounded replies.** A `VA` reply announcing more than the item size limit, a line over
//!   64 KiB or a `stats` block of more than 1,024 lines is refused before anything is allocated
//!   for it: `Backend` error, connection dropped. A reply whose opaque token belongs to another
//!   command, or an `ERROR`/`CLIENT_ERROR` (the server lost track of the stream), drops the
//!   connection too.
//! - **Bounded connections.** At most
//!   [`max_connections`](MemcachedEngineBuilder::max_connections) (32) are open at once; more
//!   concurrent callers wait for one until their deadline, then get `Timeout`. A server at its
//!   own connection limit (`-c`) refuses new ones: a transient `Connection` error.
//! - **Refusals.** On every new connection the engine reads the server's `item_size_max` and
//!   refuses larger values with `ValueTooLarge` before sending anything (memcached would drop
//!   the key's old value). A refusal no engine can foresee (`SERVER_ERROR out of memory` on a
//!   full `-M` server) is `Refused`; in `set_many` every reply of the batch is still read, and
//!   `partly_applied` says that other entries may have been stored and that memcached removed
//!   the refused key's old value.
//! - **Failures.** A connection goes back to the pool only when every reply of its last request
//!   was read; any doubt drops it. After a server restart, the first operation on a stale pooled
//!   connection drops the idle ones and runs again on a new connection if no request that must
//!   not be sent twice may have reached the server: `add`, `delete`, the delete of
//!   `delete_if_equals` and the write of `increment` are never sent twice.
//!
//! # Features and faces
//!
//! | feature | what it adds |
//! |---|---|
//! | `tokio` | [`AsyncMemcachedEngine`]: the same engine as futures, for async code on the tokio runtime |
//!
//! Both faces share the builder (`MemcachedEngine::builder()` and `AsyncMemcachedEngine::builder()` return its blocking
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
//!   for [`keepalive`](MemcachedEngineBuilder::keepalive) (30 s) is pinged, and closed unless
//!   the ping is answered within `timeout`; sockets have TCP keepalive on.
//! - **What waits is bounded**: per connection, at most
//!   [`max_queued_requests`](MemcachedEngineBuilder::max_queued_requests) (16,384) requests and
//!   [`max_queued_bytes`](MemcachedEngineBuilder::max_queued_bytes) (64 MiB) not yet written;
//!   past either, an operation fails at once with `CacheError::Overloaded`. A request whose
//!   caller was cancelled or whose deadline passed before it was written is never written.
//! - **The operations on a key keep their order**: with several
//!   [`pipelines`](MemcachedEngineBuilder::pipelines), each key goes on one connection (by a
//!   hash of the key) and bulk operations are split by connection. The order holds while a
//!   connection lives: a write sent on a connection that then failed may still land after a
//!   write on its replacement.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tokio")]
mod async_engine;
mod backend;
mod config;
mod engine;
mod generation;
mod keys;
mod ops;
mod ring;
mod servers;

#[cfg(feature = "tokio")]
pub use async_engine::AsyncMemcachedEngine;
pub use cache_remote::blocking::PoolState;
pub use cache_remote::{Async, Blocking};
pub use cache_remote::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEPALIVE, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IDLE_CONNECTIONS, DEFAULT_MAX_QUEUED_BYTES, DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_PIPELINES, DEFAULT_TIMEOUT,
};
pub use config::{
    DEFAULT_GENERATION_REFRESH, DEFAULT_ITEM_SIZE_LIMIT, DEFAULT_SERVER, MemcachedEngineBuilder,
};
pub use engine::MemcachedEngine;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
