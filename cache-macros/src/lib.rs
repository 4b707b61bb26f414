//! Attribute macros for cache-toolkit: memoized functions over a typed cache.
//!
//! `#[cached]` keeps a function's results in a `TypedCache` (or, for an `async fn`, an
//! `AsyncTypedCache`) of the `cache-serializer` crate, under a key built from its arguments. Use
//! it through `cache-serializer` with its `macros` feature, which re-exports it as
//! `cache_serializer::cached`; the expansion names only `::cache_serializer`, so that is the
//! one dependency it needs.
//!
//! ```toml
//! [dependencies]
//! cache-serializer = { version = "0.3", features = ["macros"] }
//! ```
//!
//! ```
//! use std::sync::LazyLock;
//! use cache_local::InMemoryEngine;
//! use cache_serializer::{TypedCache, cached};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct User { id: u64, name: String }
//!
//! static USERS: LazyLock<TypedCache<InMemoryEngine>> =
//!     LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));
//!
//! /// Runs once per id every 5 minutes, however many threads ask at once.
//! #[cached(cache = USERS, key = "user:{id}", ttl = "5m")]
//! fn find_user(id: u64) -> User {
//!     User { id, name: "Ada".into() } // a database query, say
//! }
//!
//! assert_eq!(find_user(7), find_user(7));
//! assert_eq!(USERS.stats().loads, 1);
//! // An entry like any other: hand-written code reads it under the same key.
//! assert_eq!(USERS.get::<User>("user:7")?.map(|u| u.id), Some(7));
//! # Ok::<(), cache_core::CacheError>(())
//! ```
//!
//! # The attribute
//!
//! | option | required | what it takes |
//! |---|---|---|
//! | `cache = ...` | yes | the typed cache: any expression that gives a `TypedCache` (an `AsyncTypedCache` for an `async fn`) or something that dereferences to one: a static `LazyLock<TypedCache<_>>`, an `Arc`, a call; `self.cache` in a `&self` method |
//! | `key = "..."` | yes | the key template: text and `{argument}` holes (below) |
//! | `ttl = ...` | no | how long results live: whole seconds (`ttl = 60`), a duration with units (`"250ms"`, `"90s"`, `"5m"`, `"2h"`, `"1d"`, `"1h30m"`), or an expression giving a `Ttl` or a `Duration` (`ttl = Ttl::Never`, `ttl = SETTINGS.ttl`). Left out: `Ttl::Default`, the engine's default TTL (300 s unless its builder set another) |
//! | `none_ttl = ...` | no | for functions returning `Option<T>` or `Result<Option<T>, E>`: cache `None` too, for this long (same forms as `ttl`). Left out, `None` is not cached |
//! | `cache_err = true` | no | for functions returning `Result<T, E>`: cache the whole `Result`, errors included, for `ttl` (`T` and `E` are then serde types) |
//! | `on_error = ...` | no | called with `&CacheError` for every cache error the function absorbed (see [errors](#cache-errors)): a function path or a closure, e.g. `on_error = \|e\| tracing::warn!(error = %e, "user cache")` |
//!
//! Literal TTLs are checked when the function compiles: an unknown unit, a fraction or a zero
//! TTL is a compile error.
//!
//! # Keys
//!
//! `key = "user:{id}"` formats like `format!("user:{}", id)`, with one `format!` call and no
//! other allocation, so a memoized call formats its key exactly as cheaply as hand-written code.
//!
//! - `{name}` is an argument, by its `Display`; `{name:?}` by its `Debug`; any `format!` spec
//!   works (`{n:08}`, `{n:x}`). `{{` and `}}` are literal braces.
//! - `{user.id}` and `{pair.0}` reach fields; `{self.tenant}` reaches the receiver's.
//! - An argument written as a pattern (`(x, y): (i64, i64)`) is named by the names it binds
//!   (`{x}`, `{y}`).
//! - Prefer `{name:?}` for free-form strings: `Debug` quotes and escapes them, so `"a:b"` + `"c"`
//!   and `"a"` + `"b:c"` give different keys where `Display` would give `a:b:c` twice.
//! - The key must tell apart every call whose result differs. Arguments it leaves out (a
//!   connection pool, a client, a request context) are passed to the body but do not take part
//!   in the key; `self` takes part only through what the template names.
//! - The engine's namespace applies as for any key. A key that breaks the key rule (whitespace,
//!   a control character, more than 250 bytes) is the typed cache's `InvalidKey`: text in the
//!   template that breaks it is a compile error; a value that does is handled as any cache error.
//!
//! # Results
//!
//! | returns | cached | not cached |
//! |---|---|---|
//! | `T` | every value | |
//! | `Option<T>` | `Some`; `None` only with `none_ttl`, as an absence (read back as `None`) | `None` without `none_ttl` |
//! | `Result<T, E>` | `Ok` | `Err`: returned to the caller, the next call runs the body again |
//! | `Result<Option<T>, E>` | `Ok(Some)`; `Ok(None)` with `none_ttl` | `Err`, and `Ok(None)` without `none_ttl` |
//! | `Result<T, E>` with `cache_err = true` | the whole `Result` | |
//!
//! `Result` is any type whose last path segment is `Result`, so `io::Result<T>` and
//! `anyhow::Result<T>` count; `Option` likewise. The cached type (`T`) is stored under the key as
//! `TypedCache::set` would store it, so `cache.get::<T>(key)` reads it.
//!
//! The cached type needs `Serialize + DeserializeOwned + Clone + 'static`: `Clone` because a copy
//! of a value handed to the cache is kept until the cache has stored it, so that a failed store
//! still returns the value without running the body again (one clone per miss, none per hit).
//! The error type `E` needs nothing.
//!
//! # Single flight
//!
//! Concurrent calls with the same key run the body once: the first runs it, the others wait for
//! its result (`get_or_set_with`'s single flight; across processes too, with the cache's
//! `Lease`). When the body fails, the callers that waited get a clone of its error if `E` is
//! `Clone + Send + Sync + 'static`; for any other `E` (`io::Error`, `anyhow::Error`) each of them
//! then runs the body itself, since it cannot be given a copy. A panicking body panics its
//! caller; the callers that waited try again and one of them runs the body.
//!
//! # Cache errors
//!
//! A memoized function behaves like the function: the cache never changes its signature, and
//! never makes it fail where the plain function would not. Whatever the cache returns as an
//! error (a backend failure of a fail-closed cache, an `InvalidKey` from an argument's value,
//! `ValueTooLarge`, a value the codec refuses, `UnknownSchema`, a strict-mode mismatch):
//!
//! - if the body has not run, it runs, uncached, and its result is returned;
//! - if it has (the store failed), the result it returned is returned; the body never runs twice
//!   for one call;
//! - the error goes to `on_error` if given. Backend failures also reach the typed cache's own
//!   `on_backend_error` hook, as for any call of it, and a fail-open cache (`fail_open(true)`)
//!   turns them into misses and skipped writes before the function sees them.
//!
//! An `InvalidKey` is a programming error (a template over a value that can hold spaces, say),
//! but it is handled the same way, in debug and release builds alike: the function keeps
//! working, uncached for those arguments, and `on_error` is where it shows.
//!
//! ```
//! use std::sync::LazyLock;
//! use cache_core::CacheError;
//! use cache_local::InMemoryEngine;
//! use cache_serializer::{TypedCache, cached};
//!
//! static GREETINGS: LazyLock<TypedCache<InMemoryEngine>> =
//!     LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));
//!
//! fn report(error: &CacheError) {
//!     eprintln!("greeting cache: {error}"); // a log line or a metric, say
//! }
//!
//! #[cached(cache = GREETINGS, key = "greeting:{name}", on_error = report)]
//! fn greeting(name: &str) -> String {
//!     format!("Hello, {name}!")
//! }
//!
//! // "Ada Lovelace" makes a key with a space: refused by the key rule, so the body runs uncached.
//! assert_eq!(greeting("Ada Lovelace"), "Hello, Ada Lovelace!");
//! assert_eq!(GREETINGS.stats().sets, 0);
//! ```
//!
//! # Methods and async functions
//!
//! ```
//! use std::time::Duration;
//! use cache_local::InMemoryEngine;
//! use cache_serializer::{AsyncTypedCache, cached};
//!
//! #[derive(Debug, Clone, PartialEq)]
//! struct Unavailable;
//!
//! struct Rates {
//!     cache: AsyncTypedCache<InMemoryEngine>,
//!     region: String,
//! }
//!
//! impl Rates {
//!     /// `Ok` is cached for 90 s; an `Err` is returned and not cached.
//!     #[cached(cache = self.cache, key = "rate:{self.region}:{currency:?}", ttl = "90s")]
//!     async fn rate(&self, currency: &str) -> Result<f64, Unavailable> {
//!         tokio::time::sleep(Duration::from_millis(1)).await; // a slow call, say
//!         if currency == "eur" { Ok(1.08) } else { Err(Unavailable) }
//!     }
//!
//!     /// A product that does not exist is cached as such for 30 s, others for 10 minutes.
//!     #[cached(cache = self.cache, key = "product:{id}", ttl = "10m", none_ttl = "30s")]
//!     async fn product(&self, id: u64) -> Option<String> {
//!         (id == 1).then(|| "a lamp".to_string())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() {
//!     let rates = Rates { cache: AsyncTypedCache::new(InMemoryEngine::new()), region: "eu".into() };
//!     assert_eq!(rates.rate("eur").await, Ok(1.08));
//!     assert_eq!(rates.rate("xyz").await, Err(Unavailable));
//!     assert_eq!(rates.cache.get::<f64>("rate:eu:\"eur\"").await.ok().flatten(), Some(1.08));
//!     assert_eq!(rates.product(2).await, None);
//!     assert_eq!(rates.product(2).await, None);
//!     assert_eq!(rates.cache.stats().negative_hits, 1);
//! }
//! ```
//!
//! The future of a memoized `async fn` is `Send` when the plain function's is. A cache named
//! through `self` needs a `&self` receiver (the cache is borrowed while the body runs). Generic
//! functions and `impl Trait` arguments work; the instantiations of a generic function share
//! its key template, so put what tells them apart in the key.
//!
//! # What it expands to
//!
//! Roughly, for `#[cached(cache = USERS, key = "user:{id}", ttl = "5m")]` on
//! `fn find(id: u64) -> Result<User, DbError> { body }` (helper items and full paths left out):
//!
//! ```text
//! fn find(id: u64) -> Result<User, DbError> {
//!     let cache: &TypedCache<_, _> = &(USERS);
//!     let key = format!("user:{}", id);
//!     let mut body = Some(move || -> Result<User, DbError> { body });
//!     let mut kept: Option<Result<User, DbError>> = None;  // what this call's body returned
//!     let ttl = Duration::from_millis(300000).into();
//!     let loaded = cache.entry(&key).ttl(ttl).or_try_load(|| {
//!         match body.take().unwrap()() {
//!             Ok(user) => { kept = Some(Ok(user.clone())); Ok(user) }
//!             Err(e) => {
//!                 let copy = clone_if_clone_send_sync(&e); // for the callers that waited
//!                 kept = Some(Err(e));
//!                 Err(Uncached::Err(copy))                 // not cached
//!             }
//!         }
//!     });
//!     match loaded {
//!         Ok(user) => Ok(user),                            // a hit, or this call's load
//!         Err(LoadError::Loader(shared)) => match kept {
//!             Some(result) => result,                      // this call's own error
//!             None => match copy_of(&shared) {             // another call's error
//!                 Some(e) => Err(e),
//!                 None => body.take().unwrap()(),          // E is not Clone: run it here
//!             },
//!         },
//!         Err(LoadError::Cache(error)) => {
//!             on_error(&error);                            // if given
//!             match kept {
//!                 Some(result) => result,                  // the body ran: its result
//!                 None => body.take().unwrap()(),          // it did not: run it, uncached
//!             }
//!         }
//!     }
//! }
//! ```
//!
//! An `async fn` is the same with `AsyncTypedCache`, the body as an `async move` block and
//! `.await`s; `none_ttl` adds `.negative_ttl(..)` and calls `or_try_load_optional`. A hit costs the key's `format!`
//! and the typed cache's read, as a hand-written `cache.get(&format!(...))` does (bench row 21).
//!
//! # Compile errors
//!
//! Misuse is a compile error that says what to write instead: a missing `cache` or `key`, a key
//! naming something that is not an argument, an unmatched brace, a template with whitespace, a
//! bad or zero TTL, `none_ttl` on a function that returns no `Option`, `cache_err` on one that
//! returns no `Result`, a cache through `self` without `&self`, a `const fn`, a function that
//! returns nothing, a reference or `impl Trait`, a cached type that is not `Clone`, a blocking
//! cache on an `async fn`. Each has a test in `tests/ui`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod expand;
mod options;
mod signature;
mod template;
mod ttl;

use proc_macro::TokenStream;

/// Memoizes a function in a `TypedCache` (an `AsyncTypedCache` for an `async fn`): its result is
/// cached under a key built from its arguments, and concurrent calls with one key run it once.
///
/// `#[cached(cache = EXPR, key = "template", ttl = .., none_ttl = .., cache_err = true, on_error = EXPR)]`;
/// `cache` and `key` are required. See the [crate docs](crate) for the options, the keys, which
/// results are cached, the handling of cache errors and the expansion.
///
/// ```
/// use std::sync::LazyLock;
/// use cache_local::InMemoryEngine;
/// use cache_serializer::{TypedCache, cached};
///
/// static SQUARES: LazyLock<TypedCache<InMemoryEngine>> =
///     LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));
///
/// #[cached(cache = SQUARES, key = "square:{n}", ttl = 60)]
/// fn square(n: u64) -> u64 {
///     n * n // something slow, say
/// }
///
/// assert_eq!(square(12), 144);
/// assert_eq!(square(12), 144);
/// assert_eq!(SQUARES.stats().loads, 1);
/// ```
#[proc_macro_attribute]
pub fn cached(attribute: TokenStream, item: TokenStream) -> TokenStream {
    let function = match syn::parse::<syn::ItemFn>(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            return with_error(
                syn::Error::new(
                    proc_macro2::Span::call_site(),
                    "#[cached] goes on a function with a body (a free function, or a method in an `impl` block)",
                ),
                item,
            );
        }
    };
    let expanded = syn::parse::<options::Options>(attribute)
        .and_then(|options| expand::expand(options, function));
    match expanded {
        Ok(tokens) => tokens.into(),
        Err(error) => with_error(error, item),
    }
}

/// The error, and the item as it was written, so that only the error shows.
fn with_error(error: syn::Error, item: TokenStream) -> TokenStream {
    let mut out: TokenStream = error.to_compile_error().into();
    out.extend(item);
    out
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
