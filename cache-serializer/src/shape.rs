//! A serde `Deserializer` that records a type's shape instead of reading data.
//!
//! serde-reflection was the first choice, but it stops exploring an enum reached only through
//! another enum's variant once the outer enum is complete, leaving some variants with
//! provisional indices (see `docs/DESIGN.md`), so a change deep inside such an enum would not
//! change the fingerprint. This tracer knows every variant name up front (serde hands them to
//! `deserialize_enum`), visits variants by index, and repeats passes until every enum it reached
//! has all its variants recorded.
//!
//! It plays a non-self-describing format (like bincode): `deserialize_any` is refused, so types
//! that need a self-describing format (untagged or internally tagged enums, `serde_json::Value`,
//! `#[serde(flatten)]`) cannot be traced. Values it hands out are minimal (integers are 1, strings
//! and collections are empty or hold one element), so types whose `Deserialize` rejects such
//! values (`uuid::Uuid`, say) cannot be traced either.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserializer;
use serde::de::{
    self, DeserializeSeed, EnumAccess, IntoDeserializer, MapAccess, SeqAccess, VariantAccess,
    Visitor,
};

/// The shape of a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    Unknown,
    Unit,
    Bool,
    I8,
    I16,
    I32,
    I64,
    I128,
    U8,
    U16,
    U32,
    U64,
    U128,
    F32,
    F64,
    Char,
    Str,
    Bytes,
    Option(Box<Shape>),
    Seq(Box<Shape>),
    Map(Box<Shape>, Box<Shape>),
    Tuple(Vec<Shape>),
    /// A struct or enum, described in the registry under this name.
    Named(&'static str),
}

/// The shape of a named container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Container {
    UnitStruct,
    NewtypeStruct(Shape),
    TupleStruct(Vec<Shape>),
    Struct(Vec<(&'static str, Shape)>),
    /// Variants in serde's index order; `None` until visited.
    Enum(Vec<(&'static str, Option<Variant>)>),
}

/// The shape of an enum variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Variant {
    Unit,
    Newtype(Shape),
    Tuple(Vec<Shape>),
    Struct(Vec<(&'static str, Shape)>),
}

pub(crate) type Registry = BTreeMap<&'static str, Container>;

/// How many passes one type gets to reveal every variant of its enums.
const MAX_PASSES: usize = 100_000;
/// How deep values may nest while a recursive type is closed off.
const MAX_DEPTH: usize = 256;

/// Traces the shape of `T` and of every container it reaches.
pub(crate) fn trace<T: de::DeserializeOwned>() -> Result<(Shape, Registry), String> {
    let mut state = State::default();
    for _ in 0..MAX_PASSES {
        let mut root = Shape::Unknown;
        state.stack.clear();
        T::deserialize(Tracer {
            state: &mut state,
            out: &mut root,
            minimal: false,
            depth: 0,
        })
        .map_err(|e| e.0)?;
        if state.complete() {
            return Ok((root, state.registry));
        }
    }
    Err(format!(
        "its enums were not fully explored after {MAX_PASSES} passes"
    ))
}

#[derive(Default)]
struct State {
    registry: Registry,
    /// Containers being visited in full, to close off recursion.
    stack: Vec<&'static str>,
    /// How many times each enum has been visited in full: the next variant to try.
    visits: BTreeMap<&'static str, usize>,
    /// How many times each enum has been visited to close off recursion.
    closing_turns: BTreeMap<&'static str, usize>,
}

impl State {
    fn complete(&self) -> bool {
        self.registry.values().all(|c| match c {
            Container::Enum(variants) => variants.iter().all(|(_, v)| v.is_some()),
            _ => true,
        })
    }

    /// The variant to visit in full: an unexplored one first, then each in turn so that enums
    /// nested inside variants keep being reached.
    fn pick_variant(&mut self, name: &'static str, variants: &'static [&'static str]) -> usize {
        let entry = self
            .registry
            .entry(name)
            .or_insert_with(|| Container::Enum(variants.iter().map(|v| (*v, None)).collect()));
        let visits = self.visits.entry(name).or_insert(0);
        *visits += 1;
        if let Container::Enum(known) = entry {
            if let Some(first_unknown) = known.iter().position(|(_, v)| v.is_none()) {
                return first_unknown;
            }
        }
        (*visits - 1) % variants.len().max(1)
    }

    /// A variant that ends quickly, for closing off recursion: a unit variant if one is known,
    /// else each variant in turn, so that nested visits soon reach one that ends.
    fn safe_variant(&mut self, name: &'static str, count: usize) -> usize {
        if let Some(Container::Enum(known)) = self.registry.get(name) {
            if let Some(unit) = known
                .iter()
                .position(|(_, v)| matches!(v, Some(Variant::Unit)))
            {
                return unit;
            }
        }
        let turns = self.closing_turns.entry(name).or_insert(0);
        *turns += 1;
        (*turns - 1) % count.max(1)
    }
}

#[derive(Debug)]
pub(crate) struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(format!("its Deserialize refused a sample value ({msg})"))
    }
}

struct Tracer<'s> {
    state: &'s mut State,
    out: &'s mut Shape,
    /// In minimal mode the tracer only builds the smallest value it can, to close off
    /// recursion, and records nothing.
    minimal: bool,
    depth: usize,
}

impl<'s> Tracer<'s> {
    fn child<'c>(
        &'c mut self,
        out: &'c mut Shape,
        minimal: bool,
    ) -> Result<Tracer<'c>, TraceError> {
        if self.depth >= MAX_DEPTH {
            return Err(TraceError(
                "it is recursive with no finite value to close the recursion".into(),
            ));
        }
        Ok(Tracer {
            state: self.state,
            out,
            minimal,
            depth: self.depth + 1,
        })
    }
}

macro_rules! primitive {
    ($($method:ident => $shape:ident, $visit:ident($($value:expr)?);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
                *self.out = Shape::$shape;
                visitor.$visit($($value)?)
            }
        )*
    };
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(TraceError(
            "its Deserialize needs a self-describing format (deserialize_any)".into(),
        ))
    }

    primitive! {
        deserialize_bool => Bool, visit_bool(false);
        deserialize_i8 => I8, visit_i8(1);
        deserialize_i16 => I16, visit_i16(1);
        deserialize_i32 => I32, visit_i32(1);
        deserialize_i64 => I64, visit_i64(1);
        deserialize_i128 => I128, visit_i128(1);
        deserialize_u8 => U8, visit_u8(1);
        deserialize_u16 => U16, visit_u16(1);
        deserialize_u32 => U32, visit_u32(1);
        deserialize_u64 => U64, visit_u64(1);
        deserialize_u128 => U128, visit_u128(1);
        deserialize_f32 => F32, visit_f32(1.0);
        deserialize_f64 => F64, visit_f64(1.0);
        deserialize_char => Char, visit_char('a');
        deserialize_str => Str, visit_string(String::new());
        deserialize_string => Str, visit_string(String::new());
        deserialize_bytes => Bytes, visit_byte_buf(Vec::new());
        deserialize_byte_buf => Bytes, visit_byte_buf(Vec::new());
        deserialize_unit => Unit, visit_unit();
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
        if self.minimal {
            *self.out = Shape::Option(Box::new(Shape::Unknown));
            return visitor.visit_none();
        }
        let mut inner = Shape::Unknown;
        let value = visitor.visit_some(self.child(&mut inner, false)?)?;
        *self.out = Shape::Option(Box::new(inner));
        Ok(value)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        *self.out = Shape::Named(name);
        if !self.minimal {
            self.state.registry.insert(name, Container::UnitStruct);
        }
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let minimal = self.minimal || self.state.stack.contains(&name);
        let mut inner = Shape::Unknown;
        if !minimal {
            self.state.stack.push(name);
        }
        let value = visitor.visit_newtype_struct(self.child(&mut inner, minimal)?);
        if !minimal {
            self.state.stack.pop();
            self.state
                .registry
                .insert(name, Container::NewtypeStruct(inner));
        }
        *self.out = Shape::Named(name);
        value
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
        let mut element = Shape::Unknown;
        let count = usize::from(!self.minimal);
        let value = visitor.visit_seq(Elements::uniform(&mut self, &mut element, count))?;
        *self.out = Shape::Seq(Box::new(element));
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        mut self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut shapes = vec![Shape::Unknown; len];
        let minimal = self.minimal;
        let value = visitor.visit_seq(Elements::each(&mut self, &mut shapes, minimal))?;
        *self.out = Shape::Tuple(shapes);
        Ok(value)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let minimal = self.minimal || self.state.stack.contains(&name);
        let mut shapes = vec![Shape::Unknown; len];
        if !minimal {
            self.state.stack.push(name);
        }
        let value = visitor.visit_seq(Elements::each(&mut self, &mut shapes, minimal));
        if !minimal {
            self.state.stack.pop();
            self.state
                .registry
                .insert(name, Container::TupleStruct(shapes));
        }
        *self.out = Shape::Named(name);
        value
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value, TraceError> {
        let mut key = Shape::Unknown;
        let mut val = Shape::Unknown;
        let count = usize::from(!self.minimal);
        let value = visitor.visit_map(Entries {
            tracer: &mut self,
            key: &mut key,
            value: &mut val,
            remaining: count,
        })?;
        *self.out = Shape::Map(Box::new(key), Box::new(val));
        Ok(value)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let minimal = self.minimal || self.state.stack.contains(&name);
        let mut shapes = vec![Shape::Unknown; fields.len()];
        if !minimal {
            self.state.stack.push(name);
        }
        let value = visitor.visit_seq(Elements::each(&mut self, &mut shapes, minimal));
        if !minimal {
            self.state.stack.pop();
            let named = fields.iter().copied().zip(shapes).collect();
            self.state.registry.insert(name, Container::Struct(named));
        }
        *self.out = Shape::Named(name);
        value
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        *self.out = Shape::Named(name);
        if variants.is_empty() {
            return Err(TraceError(format!("enum {name} has no variants")));
        }
        let minimal = self.minimal || self.state.stack.contains(&name);
        let index = if minimal {
            self.state.safe_variant(name, variants.len())
        } else {
            self.state.pick_variant(name, variants)
        };
        if !minimal {
            self.state.stack.push(name);
        }
        let mut variant = None;
        let value = visitor.visit_enum(Choice {
            tracer: &mut self,
            index,
            minimal,
            variant: &mut variant,
        });
        if !minimal {
            self.state.stack.pop();
            if let (Some(variant), Some(Container::Enum(known))) =
                (variant, self.state.registry.get_mut(name))
            {
                if let Some(slot) = known.get_mut(index) {
                    slot.1 = Some(variant);
                }
            }
        }
        value
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, TraceError> {
        Err(TraceError("an identifier was read outside an enum".into()))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, TraceError> {
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// Hands out tuple, struct or sequence elements, recording their shapes.
struct Elements<'t, 's, 'o> {
    tracer: &'t mut Tracer<'s>,
    shapes: ElementShapes<'o>,
    minimal: bool,
    next: usize,
    len: usize,
}

enum ElementShapes<'o> {
    Each(&'o mut [Shape]),
    Uniform(&'o mut Shape),
}

impl<'t, 's, 'o> Elements<'t, 's, 'o> {
    fn each(tracer: &'t mut Tracer<'s>, shapes: &'o mut [Shape], minimal: bool) -> Self {
        let len = shapes.len();
        Self {
            tracer,
            shapes: ElementShapes::Each(shapes),
            minimal,
            next: 0,
            len,
        }
    }

    fn uniform(tracer: &'t mut Tracer<'s>, shape: &'o mut Shape, len: usize) -> Self {
        let minimal = tracer.minimal;
        Self {
            tracer,
            shapes: ElementShapes::Uniform(shape),
            minimal,
            next: 0,
            len,
        }
    }
}

impl<'de> SeqAccess<'de> for Elements<'_, '_, '_> {
    type Error = TraceError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, TraceError> {
        if self.next >= self.len {
            return Ok(None);
        }
        let index = self.next;
        self.next += 1;
        let out = match &mut self.shapes {
            ElementShapes::Each(shapes) => &mut shapes[index],
            ElementShapes::Uniform(shape) => &mut **shape,
        };
        let minimal = self.minimal;
        seed.deserialize(self.tracer.child(out, minimal)?).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.len - self.next)
    }
}

/// Hands out one map entry (or none), recording key and value shapes.
struct Entries<'t, 's, 'o> {
    tracer: &'t mut Tracer<'s>,
    key: &'o mut Shape,
    value: &'o mut Shape,
    remaining: usize,
}

impl<'de> MapAccess<'de> for Entries<'_, '_, '_> {
    type Error = TraceError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        self.remaining -= 1;
        seed.deserialize(self.tracer.child(self.key, false)?)
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, TraceError> {
        seed.deserialize(self.tracer.child(self.value, false)?)
    }
}

/// Chooses one variant of an enum by index and records its shape.
struct Choice<'t, 's, 'v> {
    tracer: &'t mut Tracer<'s>,
    index: usize,
    minimal: bool,
    variant: &'v mut Option<Variant>,
}

impl<'de, 't, 's, 'v> EnumAccess<'de> for Choice<'t, 's, 'v> {
    type Error = TraceError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), TraceError> {
        let index =
            u32::try_from(self.index).map_err(|_| TraceError("too many variants".into()))?;
        let id: de::value::U32Deserializer<TraceError> = index.into_deserializer();
        let value = seed.deserialize(id)?;
        Ok((value, self))
    }
}

impl<'de> VariantAccess<'de> for Choice<'_, '_, '_> {
    type Error = TraceError;

    fn unit_variant(self) -> Result<(), TraceError> {
        *self.variant = Some(Variant::Unit);
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, TraceError> {
        let mut inner = Shape::Unknown;
        let value = seed.deserialize(self.tracer.child(&mut inner, self.minimal)?)?;
        *self.variant = Some(Variant::Newtype(inner));
        Ok(value)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut shapes = vec![Shape::Unknown; len];
        let value = visitor.visit_seq(Elements::each(self.tracer, &mut shapes, self.minimal))?;
        *self.variant = Some(Variant::Tuple(shapes));
        Ok(value)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, TraceError> {
        let mut shapes = vec![Shape::Unknown; fields.len()];
        let value = visitor.visit_seq(Elements::each(self.tracer, &mut shapes, self.minimal))?;
        *self.variant = Some(Variant::Struct(
            fields.iter().copied().zip(shapes).collect(),
        ));
        Ok(value)
    }
}
