#![doc = include_str!("docs/crate.md")]
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
