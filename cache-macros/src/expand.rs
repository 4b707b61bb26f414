//! The expansion of `#[cached(...)]`: the function's body becomes the loader of one
//! `entry(key).ttl(..).or_try_load(..)` call (`.negative_ttl(..).or_try_load_optional(..)` with
//! `none_ttl`), and every way that call can end is turned back into what the plain function would have returned.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, LitStr};

use crate::options::{Options, TtlOption};
use crate::signature::{self, Function, Receiver};
use crate::template::{self, Piece};

/// How the function's result maps onto the cache.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// `Result<_, E>` without `cache_err`: `Ok` values are cached, errors returned as they are.
    fallible: bool,
    /// `Option<T>` (inside the `Ok`, for a fallible function): only `Some` is cached as a value.
    optional: bool,
    /// `none_ttl` given: `None` is cached too, as an absence.
    negative: bool,
}

/// The memoized function, or the first thing wrong with the attribute or the function.
pub(crate) fn expand(options: Options, function: ItemFn) -> syn::Result<TokenStream> {
    let read = signature::read(&function.sig)?;
    let shape = shape(&options, &read, &function)?;
    check_cache_expression(&options, &read)?;
    let key = key_expression(&options.key, &read, &function)?;

    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let output = &read.output;
    let site = Span::mixed_site();
    let cache = &options.cache;
    let cache_span = cache.span();
    let typed = serializer_path();
    let typed_cache = if read.is_async {
        quote_spanned!(cache_span=> #typed::AsyncTypedCache<_, _>)
    } else {
        quote_spanned!(cache_span=> #typed::TypedCache<_, _>)
    };
    let cache_ref = quote_spanned!(cache_span=> &(#cache));
    // The body, as a closure or future that runs only if the cache cannot answer. Its return
    // type is written out so that `?` and `return` inside it mean what they meant in the fn.
    let body = if read.is_async {
        quote_spanned! {site=>
            async move {
                let __ret: #output = #block;
                #[allow(unreachable_code)]
                return __ret;
            }
        }
    } else {
        quote_spanned!(site=> move || -> #output #block)
    };
    let run = if read.is_async {
        quote_spanned!(site=> __run.await)
    } else {
        quote_spanned!(site=> __run())
    };
    let take_and_run = quote_spanned! {site=>
        match __body.take() {
            ::core::option::Option::Some(__run) => #run,
            // The body runs at most once, and every path that ran it returns its result.
            ::core::option::Option::None => ::core::unreachable!("#[cached]: the body already ran"),
        }
    };

    let ttl = ttl_tokens(options.ttl.as_ref());
    // The typed layer's entry API: `entry(key).ttl(..)`, with `.negative_ttl(..)` and the
    // optional loader when `None` is cached too.
    let (method, none_ttl) = match (&options.none_ttl, shape.negative) {
        (Some(none_ttl), true) => {
            let none_ttl = ttl_tokens(Some(none_ttl));
            (
                quote_spanned!(site=> or_try_load_optional),
                quote_spanned!(site=> .negative_ttl(#none_ttl)),
            )
        }
        _ => (quote_spanned!(site=> or_try_load), TokenStream::new()),
    };
    let keep = |value: TokenStream| quote_spanned!(output.span()=> __cached_keep(&#value));

    // The loader: runs the body, keeps what the function will return if the cache then fails
    // (a copy of a value handed to the cache, or the error itself), and tells the cache what
    // to store.
    let some = |value: TokenStream| quote_spanned!(site=> ::core::option::Option::Some(#value));
    let none = quote_spanned!(site=> ::core::option::Option::None);
    let ok = |value: TokenStream| quote_spanned!(site=> ::core::result::Result::Ok(#value));
    let err = |value: TokenStream| quote_spanned!(site=> ::core::result::Result::Err(#value));
    let wrap_fallible = |value: TokenStream| if shape.fallible { ok(value) } else { value };
    let inner = |value: TokenStream| -> TokenStream {
        if !shape.optional {
            let kept = wrap_fallible(keep(value.clone()));
            let to_cache = ok(value);
            return quote_spanned! {site=> {
                *__kept_slot = ::core::option::Option::Some(#kept);
                #to_cache
            }};
        }
        let kept_some = wrap_fallible(some(keep(quote_spanned!(site=> __some))));
        let kept_none = wrap_fallible(none.clone());
        let (some_to_cache, none_to_cache) = if shape.negative {
            (ok(some(quote_spanned!(site=> __some))), ok(none.clone()))
        } else {
            (
                ok(quote_spanned!(site=> __some)),
                err(quote_spanned!(site=> __CachedUncached::None)),
            )
        };
        quote_spanned! {site=>
            match #value {
                ::core::option::Option::Some(__some) => {
                    *__kept_slot = ::core::option::Option::Some(#kept_some);
                    #some_to_cache
                }
                ::core::option::Option::None => {
                    *__kept_slot = ::core::option::Option::Some(#kept_none);
                    #none_to_cache
                }
            }
        }
    };
    let loaded = if shape.fallible {
        let on_ok = inner(quote_spanned!(site=> __ok));
        quote_spanned! {site=>
            match __ret {
                ::core::result::Result::Ok(__ok) => #on_ok,
                ::core::result::Result::Err(__err) => {
                    let __copy = (&__tag).share(&__err);
                    *__kept_slot = ::core::option::Option::Some(::core::result::Result::Err(__err));
                    ::core::result::Result::Err(__CachedUncached::Err(__copy))
                }
            }
        }
    } else {
        inner(quote_spanned!(site=> __ret))
    };
    let loader = if read.is_async {
        quote_spanned! {site=>
            move || async move {
                let __ret = match __body_slot.take() {
                    ::core::option::Option::Some(__run) => __run.await,
                    ::core::option::Option::None => ::core::unreachable!("#[cached]: the body already ran"),
                };
                #loaded
            }
        }
    } else {
        quote_spanned! {site=>
            move || {
                let __ret = match __body_slot.take() {
                    ::core::option::Option::Some(__run) => __run(),
                    ::core::option::Option::None => ::core::unreachable!("#[cached]: the body already ran"),
                };
                #loaded
            }
        }
    };
    let await_ = if read.is_async {
        quote!(.await)
    } else {
        TokenStream::new()
    };

    // What the cache's answer becomes.
    let from_cache = {
        let value = quote_spanned!(site=> __value);
        let value = if shape.optional && !shape.negative {
            some(value)
        } else {
            value
        };
        wrap_fallible(value)
    };
    let waiter_none = if shape.optional {
        wrap_fallible(none.clone())
    } else {
        take_and_run.clone()
    };
    let waiter_err = if shape.fallible {
        quote_spanned! {site=>
            match (&&__tag).recover(__copy) {
                ::core::option::Option::Some(__err) => ::core::result::Result::Err(__err),
                ::core::option::Option::None => #take_and_run,
            }
        }
    } else {
        take_and_run.clone()
    };
    let report = match &options.on_error {
        Some(hook) => quote_spanned!(site=> __cached_report(&__error, #hook);),
        None => quote_spanned!(site=> let _ = &__error;),
    };
    let report_helper = options.on_error.as_ref().map(|_| {
        quote_spanned! {site=>
            fn __cached_report<E, F: ::core::ops::FnOnce(&E)>(error: &E, hook: F) {
                hook(error)
            }
        }
    });
    let tag_ref = if shape.fallible {
        quote_spanned!(site=> let __tag = &__tag;)
    } else {
        TokenStream::new()
    };
    let tag = if shape.fallible {
        share_helpers(output)
    } else {
        TokenStream::new()
    };

    let expanded = quote_spanned! {site=>
        #(#attrs)*
        #vis #sig {
            let __cache: &#typed_cache = #cache_ref;
            let __key = #key;
            let mut __body = ::core::option::Option::Some(#body);
            {
                #[allow(dead_code)]
                enum __CachedUncached {
                    /// The body found nothing, and `None` is not cached.
                    None,
                    /// The body failed; a copy of its error for the callers that waited, when
                    /// the error can be cloned and shared across threads.
                    Err(::core::option::Option<::std::boxed::Box<dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync>>),
                }
                #[diagnostic::on_unimplemented(
                    message = "#[cached] needs `{Self}: Clone`",
                    label = "the cached value's type must be `Clone`",
                    note = "a copy of each value the function returns is kept while the cache stores it, so that a failed store still returns the value without running the body again"
                )]
                trait __CachedValue: ::core::marker::Sized {
                    fn __cached_keep(&self) -> Self;
                }
                impl<T: ::core::clone::Clone> __CachedValue for T {
                    fn __cached_keep(&self) -> Self {
                        ::core::clone::Clone::clone(self)
                    }
                }
                /// A copy of a value handed to the cache, returned if the cache then fails.
                fn __cached_keep<T: __CachedValue>(value: &T) -> T {
                    value.__cached_keep()
                }
                #report_helper
                #tag
                let mut __kept: ::core::option::Option<#output> = ::core::option::Option::None;
                let __loaded = {
                    let __kept_slot = &mut __kept;
                    let __body_slot = &mut __body;
                    #tag_ref
                    __cache.entry(&*__key).ttl(#ttl)#none_ttl.#method(#loader)#await_
                };
                match __loaded {
                    ::core::result::Result::Ok(__value) => #from_cache,
                    ::core::result::Result::Err(#typed::LoadError::Loader(__shared)) => {
                        match __kept.take() {
                            // This call ran the body: its own error, or its `None`.
                            ::core::option::Option::Some(__ret) => __ret,
                            // Another call ran it.
                            ::core::option::Option::None => match &*__shared {
                                __CachedUncached::None => #waiter_none,
                                #[allow(unused_variables)]
                                __CachedUncached::Err(__copy) => #waiter_err,
                            },
                        }
                    }
                    ::core::result::Result::Err(#typed::LoadError::Cache(__error)) => {
                        #report
                        match __kept.take() {
                            ::core::option::Option::Some(__ret) => __ret,
                            ::core::option::Option::None => #take_and_run,
                        }
                    }
                }
            }
        }
    };
    Ok(expanded)
}

/// The items that share a failed load's error with the callers that waited, when it can be
/// shared: `E: Clone + Send + Sync + 'static` picks the first impl (autoref specialization,
/// resolved where `E` is concrete), any other `E` the second, and those callers then run the
/// body themselves.
fn share_helpers(output: &syn::Type) -> TokenStream {
    let site = Span::mixed_site();
    quote_spanned! {site=>
        trait __CachedResult {
            type Err;
        }
        impl<T, E> __CachedResult for ::core::result::Result<T, E> {
            type Err = E;
        }
        struct __CachedTag<E>(::core::marker::PhantomData<fn() -> E>);
        type __CachedCopy = ::core::option::Option<::std::boxed::Box<dyn ::core::any::Any + ::core::marker::Send + ::core::marker::Sync>>;
        trait __CachedShareClone<E> {
            fn share(&self, error: &E) -> __CachedCopy;
            fn recover(&self, copy: &__CachedCopy) -> ::core::option::Option<E>;
        }
        impl<E: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static> __CachedShareClone<E> for &__CachedTag<E> {
            fn share(&self, error: &E) -> __CachedCopy {
                ::core::option::Option::Some(::std::boxed::Box::new(::core::clone::Clone::clone(error)))
            }
            fn recover(&self, copy: &__CachedCopy) -> ::core::option::Option<E> {
                copy.as_ref()?.downcast_ref::<E>().cloned()
            }
        }
        trait __CachedShareNone<E> {
            fn share(&self, error: &E) -> __CachedCopy;
            fn recover(&self, copy: &__CachedCopy) -> ::core::option::Option<E>;
        }
        impl<E> __CachedShareNone<E> for __CachedTag<E> {
            fn share(&self, _: &E) -> __CachedCopy {
                ::core::option::Option::None
            }
            fn recover(&self, _: &__CachedCopy) -> ::core::option::Option<E> {
                ::core::option::Option::None
            }
        }
        let __tag = __CachedTag::<<#output as __CachedResult>::Err>(::core::marker::PhantomData);
    }
}

/// The shape of the result, with `cache_err` and `none_ttl` checked against it.
fn shape(options: &Options, read: &Function, function: &ItemFn) -> syn::Result<Shape> {
    let name = &function.sig.ident;
    let output = &read.output;
    let cache_err = options.cache_err.as_ref().filter(|flag| flag.value);
    if let Some(flag) = &options.cache_err {
        if !read.is_result {
            return Err(syn::Error::new(
                flag.span(),
                format!(
                    "`cache_err` caches errors, but `{name}` returns `{}`, not a `Result`",
                    type_text(output)
                ),
            ));
        }
    }
    let shape = if cache_err.is_some() {
        Shape {
            fallible: false,
            optional: false,
            negative: false,
        }
    } else {
        Shape {
            fallible: read.is_result,
            optional: if read.is_result {
                read.ok_is_option
            } else {
                read.returns_option
            },
            negative: options.none_ttl.is_some(),
        }
    };
    if let Some(none_ttl) = &options.none_ttl {
        let span = match none_ttl {
            TtlOption::Millis(_, span) => *span,
            TtlOption::Expr(expr) => expr.span(),
        };
        if cache_err.is_some() {
            return Err(syn::Error::new(
                span,
                "`none_ttl` with `cache_err = true`: the whole `Result` is the cached value, so a \
                 `None` inside it is cached with `ttl` like any other",
            ));
        }
        if !shape.optional {
            return Err(syn::Error::new(
                span,
                format!(
                    "`none_ttl` caches a `None` result, but `{name}` returns `{}`: it applies to \
                     functions returning `Option<T>` or `Result<Option<T>, E>`",
                    type_text(output)
                ),
            ));
        }
    }
    Ok(shape)
}

/// A type as it is usually written (`Option<String>`, not `Option < String >`).
fn type_text(ty: &syn::Type) -> String {
    let mut text = quote!(#ty).to_string();
    for (spaced, tight) in [
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ::", "::"),
        (":: ", "::"),
        (" ,", ","),
        ("& ", "&"),
    ] {
        text = text.replace(spaced, tight);
    }
    text
}

/// A cache named through `self` needs `&self`: it is borrowed while the body, which may use
/// `self`, is held.
fn check_cache_expression(options: &Options, read: &Function) -> syn::Result<()> {
    let cache = &options.cache;
    let Some(span) = signature::mentions_self(quote!(#cache)) else {
        return Ok(());
    };
    match read.receiver {
        Receiver::Shared => Ok(()),
        Receiver::None => Err(syn::Error::new(
            span,
            "the cache is named through `self`, but this function takes no `self`: use a static \
             (`cache = USERS`) or make it a method taking `&self`",
        )),
        Receiver::Other => Err(syn::Error::new(
            span,
            "a cache named through `self` needs a `&self` method: the cache is borrowed from \
             `self` while the body runs; take `&self`, or name a static cache",
        )),
    }
}

/// The key: a `&str` literal when the template has no holes, else one `format!`.
fn key_expression(
    template: &LitStr,
    read: &Function,
    function: &ItemFn,
) -> syn::Result<TokenStream> {
    let span = template.span();
    let pieces =
        template::parse(&template.value()).map_err(|problem| syn::Error::new(span, problem))?;
    let mut arguments = Vec::new();
    for piece in &pieces {
        let Piece::Hole { root, fields, .. } = piece else {
            continue;
        };
        if root == "self" {
            if read.receiver == Receiver::None {
                return Err(syn::Error::new(
                    span,
                    format!(
                        "the key names `self`, but `{}` takes no `self`",
                        function.sig.ident
                    ),
                ));
            }
        } else if !read.bound.iter().any(|name| name == root) {
            let known = if read.bound.is_empty() {
                format!("`{}` takes no arguments", function.sig.ident)
            } else {
                format!(
                    "the names its arguments bind are {}",
                    read.bound
                        .iter()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let hint = if read.patterned {
                "; an argument written as a pattern is named by the names it binds: to use it \
                 whole, give it a name and destructure it in the body"
            } else {
                ""
            };
            return Err(syn::Error::new(
                span,
                format!(
                    "the key names `{root}`, which is not an argument of `{}`: {known}{hint}",
                    function.sig.ident
                ),
            ));
        }
        let root = identifier(root, span);
        let mut expression = quote!(#root);
        for field in fields {
            let member = match field.parse::<u32>() {
                Ok(index) => {
                    let index = syn::Index { index, span };
                    quote!(#index)
                }
                Err(_) => {
                    let field = identifier(field, span);
                    quote!(#field)
                }
            };
            expression = quote!(#expression.#member);
        }
        arguments.push(expression);
    }
    if arguments.is_empty() {
        let text: String = pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => text.as_str(),
                Piece::Hole { .. } => "",
            })
            .collect();
        let literal = LitStr::new(&text, span);
        return Ok(quote_spanned!(span=> #literal));
    }
    let format = LitStr::new(&template::format_string(&pieces), span);
    Ok(quote_spanned!(span=> ::std::format!(#format, #(#arguments),*)))
}

/// An identifier as the template wrote it (`self`, `r#type`), resolved where the function is.
fn identifier(name: &str, span: Span) -> Ident {
    match name.strip_prefix("r#") {
        Some(raw) => Ident::new_raw(raw, span),
        None => Ident::new(name, span),
    }
}

/// The `Ttl` argument for an option: the engine's default when it was left out.
fn ttl_tokens(option: Option<&TtlOption>) -> TokenStream {
    match option {
        None => quote!(::core::default::Default::default()),
        Some(TtlOption::Millis(millis, span)) => quote_spanned! {*span=>
            ::core::convert::From::from(::core::time::Duration::from_millis(#millis))
        },
        Some(TtlOption::Expr(expr)) => quote_spanned! {expr.span()=>
            ::core::convert::Into::into(#expr)
        },
    }
}

/// The path of the typed layer in the calling crate: `::cache_serializer` when it depends on
/// that crate (under whatever name), `::cache_toolkit::typed` when it depends on the facade
/// instead, and `::cache_serializer` when neither can be read from its manifest.
fn serializer_path() -> TokenStream {
    use proc_macro_crate::{FoundCrate, crate_name};
    let named = |name: &str| {
        let ident = syn::Ident::new(&name.replace('-', "_"), Span::call_site());
        quote!(::#ident)
    };
    match crate_name("cache-serializer") {
        Ok(FoundCrate::Name(name)) => return named(&name),
        Ok(FoundCrate::Itself) => return named("cache_serializer"),
        Err(_) => {}
    }
    match crate_name("cache-toolkit") {
        Ok(FoundCrate::Name(name)) => {
            let facade = named(&name);
            quote!(#facade::typed)
        }
        _ => named("cache_serializer"),
    }
}
