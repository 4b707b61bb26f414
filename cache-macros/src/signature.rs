//! What the function's signature allows: its face, its receiver, the names its arguments bind
//! and the shape of what it returns.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::spanned::Spanned;
use syn::visit::Visit;
use syn::{FnArg, GenericArgument, Pat, PathArguments, ReturnType, Signature, Type};

/// How the function takes `self`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    /// A free function or an associated function without `self`.
    None,
    /// `&self` (or `self: &Self`).
    Shared,
    /// `&mut self`, `self`, `self: Box<Self>` and the like.
    Other,
}

/// The parts of a signature the expansion needs.
pub(crate) struct Function {
    pub(crate) is_async: bool,
    pub(crate) receiver: Receiver,
    /// Every name the arguments bind, in order (`id`, and `a`, `b` of `(a, b): (u32, u32)`).
    pub(crate) bound: Vec<String>,
    /// Arguments that are patterns rather than plain names, for the hint of a failed lookup.
    pub(crate) patterned: bool,
    /// The return type.
    pub(crate) output: Type,
    /// Whether it is a `Result` (last path segment `Result`, aliases such as `io::Result<T>`
    /// included).
    pub(crate) is_result: bool,
    /// Whether it (without `cache_err`: its `Ok` type) is an `Option`.
    pub(crate) returns_option: bool,
    pub(crate) ok_is_option: bool,
}

/// Reads `sig`, refusing what the expansion cannot memoize.
pub(crate) fn read(sig: &Signature) -> syn::Result<Function> {
    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new(
            constness.span(),
            "#[cached] cannot memoize a `const fn`: the cache is read at run time",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new(
            variadic.span(),
            "#[cached] cannot memoize a variadic function",
        ));
    }
    let output = match &sig.output {
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.ident.span(),
                format!(
                    "`{}` returns nothing to cache: #[cached] memoizes a function's result",
                    sig.ident
                ),
            ));
        }
        ReturnType::Type(_, ty) => (**ty).clone(),
    };
    if let Type::Tuple(tuple) = &output {
        if tuple.elems.is_empty() {
            return Err(syn::Error::new(
                output.span(),
                format!(
                    "`{}` returns `()`: #[cached] memoizes a function's result",
                    sig.ident
                ),
            ));
        }
    }
    check_owned(&output)?;

    let mut receiver = Receiver::None;
    let mut bound = Vec::new();
    let mut patterned = false;
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                let shared = if r.colon_token.is_some() {
                    is_shared_self(&r.ty)
                } else {
                    r.reference.is_some() && r.mutability.is_none()
                };
                receiver = if shared {
                    Receiver::Shared
                } else {
                    Receiver::Other
                };
            }
            FnArg::Typed(arg) => {
                if !matches!(&*arg.pat, Pat::Ident(ident) if ident.subpat.is_none()) {
                    patterned = true;
                }
                bindings(&arg.pat, &mut bound);
            }
        }
    }

    let is_result = last_segment(&output)
        .is_some_and(|(name, args)| name == "Result" && (1..=2).contains(&args.len()));
    let returns_option = is_option(&output);
    let ok_is_option = is_result
        && last_segment(&output)
            .and_then(|(_, args)| args.first().cloned())
            .is_some_and(|ok| is_option(&ok));
    Ok(Function {
        is_async: sig.asyncness.is_some(),
        receiver,
        bound,
        patterned,
        output,
        is_result,
        returns_option,
        ok_is_option,
    })
}

/// `self: &Self`.
fn is_shared_self(ty: &Type) -> bool {
    match ty {
        Type::Reference(reference) => {
            reference.mutability.is_none()
                && matches!(&*reference.elem, Type::Path(path) if path.path.is_ident("Self"))
        }
        _ => false,
    }
}

/// The names a pattern binds.
fn bindings(pat: &Pat, out: &mut Vec<String>) {
    match pat {
        Pat::Ident(ident) => {
            out.push(ident.ident.to_string());
            if let Some((_, sub)) = &ident.subpat {
                bindings(sub, out);
            }
        }
        Pat::Tuple(tuple) => tuple.elems.iter().for_each(|p| bindings(p, out)),
        Pat::TupleStruct(tuple) => tuple.elems.iter().for_each(|p| bindings(p, out)),
        Pat::Struct(strukt) => strukt.fields.iter().for_each(|f| bindings(&f.pat, out)),
        Pat::Slice(slice) => slice.elems.iter().for_each(|p| bindings(p, out)),
        Pat::Reference(reference) => bindings(&reference.pat, out),
        Pat::Paren(paren) => bindings(&paren.pat, out),
        Pat::Type(typed) => bindings(&typed.pat, out),
        // Every alternative binds the same names.
        Pat::Or(or) => {
            if let Some(first) = or.cases.first() {
                bindings(first, out);
            }
        }
        _ => {}
    }
}

/// The last path segment's name and type arguments, for a path type.
fn last_segment(ty: &Type) -> Option<(String, Vec<Type>)> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    let args = match &last.arguments {
        PathArguments::AngleBracketed(args) => args
            .args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(ty) => Some(ty.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((last.ident.to_string(), args))
}

fn is_option(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|(name, args)| name == "Option" && args.len() == 1)
}

/// Refuses return types that borrow or hide their type: a cached value is decoded into an
/// owned value of a type the cache can name.
fn check_owned(ty: &Type) -> syn::Result<()> {
    struct Owned(Option<syn::Error>);
    impl<'a> Visit<'a> for Owned {
        fn visit_type_reference(&mut self, reference: &'a syn::TypeReference) {
            self.0.get_or_insert_with(|| {
                syn::Error::new(
                    reference.span(),
                    "#[cached] cannot return a reference: a cached result is decoded into a value \
                     the caller owns; return an owned type (`String` for `&str`, `Vec<T>` for `&[T]`)",
                )
            });
        }
        fn visit_lifetime(&mut self, lifetime: &'a syn::Lifetime) {
            if lifetime.ident != "static" {
                self.0.get_or_insert_with(|| {
                    syn::Error::new(
                        lifetime.span(),
                        "#[cached] cannot return a type that borrows: a cached result is decoded into a \
                         value the caller owns, so its type is `'static`",
                    )
                });
            }
        }
        fn visit_type_impl_trait(&mut self, impl_trait: &'a syn::TypeImplTrait) {
            self.0.get_or_insert_with(|| {
                syn::Error::new(
                    impl_trait.span(),
                    "#[cached] cannot return `impl Trait`: the cache decodes values of a type it can \
                     name; return the concrete type",
                )
            });
        }
        // Arguments of function pointers and trait objects borrow nothing of the result.
        fn visit_type_bare_fn(&mut self, _: &'a syn::TypeBareFn) {}
        fn visit_type_trait_object(&mut self, _: &'a syn::TypeTraitObject) {}
    }
    let mut check = Owned(None);
    check.visit_type(ty);
    check.0.map_or(Ok(()), Err)
}

/// Whether `tokens` mention `self` (outside nested closures' own parameters, which cannot be
/// named `self`): a cache named through `self` is borrowed from it for the whole call.
pub(crate) fn mentions_self(tokens: TokenStream) -> Option<Span> {
    tokens.into_iter().find_map(|tree| match tree {
        TokenTree::Ident(ident) if ident == "self" => Some(ident.span()),
        TokenTree::Group(group) => mentions_self(group.stream()),
        _ => None,
    })
}
