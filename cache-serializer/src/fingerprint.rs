//! Fingerprints of a type's serde shape.
//!
//! A fingerprint is 64 bits of the SHA-256 of a canonical text of the type's shape as its
//! `Deserialize` implementation describes it: container names, field names and order, field
//! types, enum variants and their indices. It does not depend on the module path, the `TypeId`,
//! the compiler or the machine, so every build of every service that shares a cache agrees on it,
//! and it changes when the shape changes.
//!
//! The shape is traced by a serde `Deserializer` that records instead of reading. Types whose
//! `Deserialize` validates its input or needs a self-describing format (`uuid::Uuid`, untagged
//! enums, `serde_json::Value`, `#[serde(flatten)]`) cannot be traced; give them a schema name with
//! [`TypedCacheBuilder::schema`](crate::TypedCacheBuilder::schema) instead.

use std::any::TypeId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::{self, Write};
use std::sync::{OnceLock, RwLock};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::shape::{Container, Shape, Variant, trace};

/// The 64-bit fingerprint of a type's serde shape, or of a named schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

const SHAPE_DOMAIN: &str = "cache-serializer shape v1\n";
const NAMED_DOMAIN: &str = "cache-serializer named schema v1\n";

impl Fingerprint {
    /// The fingerprint of a schema named by hand (for types that cannot be traced).
    ///
    /// Pick names that no other type under the same keys uses, such as `"uuid/1"`, and change
    /// the name whenever the type's encoding changes.
    pub fn named(schema: &str) -> Self {
        Self::of_text(&format!("{NAMED_DOMAIN}{}:{schema}", schema.len()))
    }

    fn of_text(text: &str) -> Self {
        let digest = Sha256::digest(text.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        Self(u64::from_be_bytes(first))
    }
}

/// The canonical text of `T`'s serde shape, the input of its fingerprint.
///
/// # Errors
///
/// Why the shape cannot be traced.
pub fn shape_of<T: DeserializeOwned>() -> Result<String, String> {
    let (root, registry) = trace::<T>()?;
    let mut text = String::from(SHAPE_DOMAIN);
    text.push_str("root=");
    write_shape(&mut text, &root)?;
    text.push('\n');
    for (name, container) in &registry {
        write_name(&mut text, name);
        text.push('=');
        write_container(&mut text, container)?;
        text.push('\n');
    }
    Ok(text)
}

/// Hashes `TypeId`s, which are already hashes, by passing their bits through: a SipHash of the
/// key was a visible share of a small value's encode + decode.
#[derive(Default, Clone, Copy)]
pub(crate) struct TypeIdHasher(u64);

impl std::hash::Hasher for TypeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_ne_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(5) ^ n;
    }
}

/// A map keyed by `TypeId`.
pub(crate) type TypeMap<V> = HashMap<TypeId, V, std::hash::BuildHasherDefault<TypeIdHasher>>;

/// The fingerprint of `T`'s serde shape, computed once per type and process.
///
/// # Errors
///
/// Why the shape cannot be traced.
pub fn fingerprint_of<T: DeserializeOwned + 'static>() -> Result<Fingerprint, String> {
    thread_local! {
        static LOCAL: RefCell<TypeMap<Fingerprint>> = RefCell::new(TypeMap::default());
    }
    static GLOBAL: OnceLock<RwLock<TypeMap<Result<Fingerprint, String>>>> = OnceLock::new();

    let id = TypeId::of::<T>();
    if let Some(fp) = LOCAL.with(|local| local.borrow().get(&id).copied()) {
        return Ok(fp);
    }
    let global = GLOBAL.get_or_init(Default::default);
    let known = global
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&id)
        .cloned();
    let result = match known {
        Some(result) => result,
        None => {
            let result = shape_of::<T>().map(|text| Fingerprint::of_text(&text));
            global
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(id, result.clone());
            result
        }
    };
    if let Ok(fp) = result {
        LOCAL.with(|local| local.borrow_mut().insert(id, fp));
    }
    result
}

fn write_name(out: &mut String, name: &str) {
    let _ = write!(out, "{}:{name}", name.len());
}

fn write_list(out: &mut String, shapes: &[Shape]) -> Result<(), String> {
    out.push('(');
    for (i, shape) in shapes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_shape(out, shape)?;
    }
    out.push(')');
    Ok(())
}

fn write_fields(out: &mut String, fields: &[(&str, Shape)]) -> Result<(), String> {
    out.push('{');
    for (name, shape) in fields {
        write_name(out, name);
        out.push('=');
        write_shape(out, shape)?;
        out.push(';');
    }
    out.push('}');
    Ok(())
}

fn write_shape(out: &mut String, shape: &Shape) -> Result<(), String> {
    let simple = match shape {
        Shape::Unknown => return Err("a part of its shape stayed unknown".into()),
        Shape::Named(name) => {
            out.push('@');
            write_name(out, name);
            return Ok(());
        }
        Shape::Unit => "unit",
        Shape::Bool => "bool",
        Shape::I8 => "i8",
        Shape::I16 => "i16",
        Shape::I32 => "i32",
        Shape::I64 => "i64",
        Shape::I128 => "i128",
        Shape::U8 => "u8",
        Shape::U16 => "u16",
        Shape::U32 => "u32",
        Shape::U64 => "u64",
        Shape::U128 => "u128",
        Shape::F32 => "f32",
        Shape::F64 => "f64",
        Shape::Char => "char",
        Shape::Str => "str",
        Shape::Bytes => "bytes",
        Shape::Option(inner) => {
            out.push_str("option<");
            write_shape(out, inner)?;
            out.push('>');
            return Ok(());
        }
        Shape::Seq(inner) => {
            out.push_str("seq<");
            write_shape(out, inner)?;
            out.push('>');
            return Ok(());
        }
        Shape::Map(key, value) => {
            out.push_str("map<");
            write_shape(out, key)?;
            out.push(',');
            write_shape(out, value)?;
            out.push('>');
            return Ok(());
        }
        Shape::Tuple(items) => {
            // Arrays are tuples of one shape: write them compactly.
            if let Some(first) = items.first() {
                if items.len() > 1 && items.iter().all(|s| s == first) {
                    out.push_str("array<");
                    write_shape(out, first)?;
                    let _ = write!(out, ";{}>", items.len());
                    return Ok(());
                }
            }
            out.push_str("tuple");
            return write_list(out, items);
        }
    };
    out.push_str(simple);
    Ok(())
}

fn write_container(out: &mut String, container: &Container) -> Result<(), String> {
    match container {
        Container::UnitStruct => out.push_str("unit-struct"),
        Container::NewtypeStruct(inner) => {
            out.push_str("newtype-struct<");
            write_shape(out, inner)?;
            out.push('>');
        }
        Container::TupleStruct(items) => {
            out.push_str("tuple-struct");
            write_list(out, items)?;
        }
        Container::Struct(fields) => {
            out.push_str("struct");
            write_fields(out, fields)?;
        }
        Container::Enum(variants) => {
            out.push_str("enum{");
            for (index, (name, variant)) in variants.iter().enumerate() {
                let _ = write!(out, "{index}:");
                write_name(out, name);
                out.push('=');
                match variant {
                    None => return Err(format!("variant {name} was never reached")),
                    Some(Variant::Unit) => out.push_str("unit"),
                    Some(Variant::Newtype(inner)) => {
                        out.push_str("newtype<");
                        write_shape(out, inner)?;
                        out.push('>');
                    }
                    Some(Variant::Tuple(items)) => {
                        out.push_str("tuple");
                        write_list(out, items)?;
                    }
                    Some(Variant::Struct(fields)) => {
                        out.push_str("struct");
                        write_fields(out, fields)?;
                    }
                }
                out.push(';');
            }
            out.push('}');
        }
    }
    Ok(())
}
