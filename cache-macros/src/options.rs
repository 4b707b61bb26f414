//! What `#[cached(...)]` says: `name = value` pairs, each checked where it is written.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Token};

use crate::ttl;

/// Every option, for the error that names an unknown one.
const KNOWN: &str = "`cache`, `key`, `ttl`, `none_ttl`, `cache_err`, `on_error`";

/// The parsed attribute.
pub(crate) struct Options {
    /// The typed cache: an expression, evaluated on each call.
    pub(crate) cache: Expr,
    /// The key template.
    pub(crate) key: LitStr,
    /// How long values live; `None`: the engine's default (`Ttl::Default`).
    pub(crate) ttl: Option<TtlOption>,
    /// How long a `None` result lives; `None`: it is not cached.
    pub(crate) none_ttl: Option<TtlOption>,
    /// `cache_err = true`: the whole `Result` is the cached value.
    pub(crate) cache_err: Option<LitBool>,
    /// Called with each cache error the function absorbs.
    pub(crate) on_error: Option<Expr>,
}

/// A TTL as written: a literal checked here, or an expression evaluated on each call.
pub(crate) enum TtlOption {
    /// `60` (seconds) or `"90s"`, `"1h30m"`, `"250ms"`: this many milliseconds.
    Millis(u64, Span),
    /// Anything else: a `Ttl` or a `Duration` (`Into<Ttl>`).
    Expr(Expr),
}

impl TtlOption {
    fn parse(name: &Ident, value: Expr) -> syn::Result<Self> {
        let Expr::Lit(ExprLit { lit, .. }) = &value else {
            return Ok(Self::Expr(value));
        };
        let millis = match lit {
            Lit::Int(seconds) => {
                let seconds: u64 = seconds.base10_parse().map_err(|_| {
                    syn::Error::new(
                        seconds.span(),
                        format!("`{name}` in whole seconds: a number from 1 to u64::MAX"),
                    )
                })?;
                seconds.checked_mul(1000).ok_or_else(|| {
                    syn::Error::new(
                        lit.span(),
                        format!("`{name}` is too long: at most u64::MAX milliseconds"),
                    )
                })?
            }
            Lit::Str(text) => ttl::parse(&text.value()).map_err(|problem| {
                syn::Error::new(
                    text.span(),
                    format!("`{name} = {:?}`: {problem}", text.value()),
                )
            })?,
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    format!(
                        "`{name}` takes whole seconds (`{name} = 60`), a duration with units (`{name} = \"90s\"`, \
                         \"5m\", \"1h30m\", \"250ms\") or an expression giving a `Ttl` or a `Duration`"
                    ),
                ));
            }
        };
        if millis == 0 {
            let advice = if name == "none_ttl" {
                "leave `none_ttl` out to not cache `None`"
            } else {
                "a zero TTL stores nothing (`Ttl::After(Duration::ZERO)` removes the entry): give a positive one"
            };
            return Err(syn::Error::new(
                lit.span(),
                format!("`{name}` is zero: {advice}"),
            ));
        }
        Ok(Self::Millis(millis, lit.span()))
    }
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut cache = None;
        let mut key = None;
        let mut ttl = None;
        let mut none_ttl = None;
        let mut cache_err = None;
        let mut on_error = None;
        while !input.is_empty() {
            let name: Ident = input.call(syn::ext::IdentExt::parse_any)?;
            if !input.peek(Token![=]) {
                return Err(syn::Error::new(
                    name.span(),
                    format!("expected `{name} = ...`: every option of #[cached] is `name = value`"),
                ));
            }
            input.parse::<Token![=]>()?;
            let value: Expr = input.parse()?;
            let duplicate = || syn::Error::new(name.span(), format!("`{name}` is given twice"));
            match name.to_string().as_str() {
                "cache" => {
                    if cache.replace(value).is_some() {
                        return Err(duplicate());
                    }
                }
                "key" => {
                    let Expr::Lit(ExprLit {
                        lit: Lit::Str(template),
                        ..
                    }) = value
                    else {
                        return Err(syn::Error::new(
                            value.span(),
                            "`key` is a string literal: a template over the arguments, such as `key = \"user:{id}\"`",
                        ));
                    };
                    if key.replace(template).is_some() {
                        return Err(duplicate());
                    }
                }
                "ttl" => {
                    if ttl.replace(TtlOption::parse(&name, value)?).is_some() {
                        return Err(duplicate());
                    }
                }
                "none_ttl" => {
                    if none_ttl.replace(TtlOption::parse(&name, value)?).is_some() {
                        return Err(duplicate());
                    }
                }
                "cache_err" => {
                    let Expr::Lit(ExprLit {
                        lit: Lit::Bool(flag),
                        ..
                    }) = value
                    else {
                        return Err(syn::Error::new(
                            value.span(),
                            "`cache_err` is `true` or `false`",
                        ));
                    };
                    if cache_err.replace(flag).is_some() {
                        return Err(duplicate());
                    }
                }
                "on_error" => {
                    if on_error.replace(value).is_some() {
                        return Err(duplicate());
                    }
                }
                _ => {
                    return Err(syn::Error::new(
                        name.span(),
                        format!("unknown option `{name}` of #[cached]; the options are {KNOWN}"),
                    ));
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        let cache = cache.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "#[cached] needs `cache = ...`, the typed cache to keep results in: a static such as \
                 `cache = USERS` (a `LazyLock<TypedCache<_>>`), or `cache = self.cache` in a method",
            )
        })?;
        let key = key.ok_or_else(|| {
            syn::Error::new(
                Span::call_site(),
                "#[cached] needs `key = \"...\"`, a template over the arguments such as `key = \"user:{id}\"`: \
                 the key must tell apart every call whose result differs",
            )
        })?;
        Ok(Self {
            cache,
            key,
            ttl,
            none_ttl,
            cache_err,
            on_error,
        })
    }
}
