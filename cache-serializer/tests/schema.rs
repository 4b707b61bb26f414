//! A value written by one build and read by another build whose type changed is a miss (or
//! `SchemaMismatch` in strict mode), never a wrongly decoded value.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;

use cache_core::{CacheEngine, CacheError, Ttl};
use cache_local::InMemoryEngine;
use cache_serializer::TypedCache;
use cache_serializer::fingerprint::{fingerprint_of, shape_of};
use serde::{Deserialize, Serialize};

/// The type as the old build defined it.
mod v1 {
    use super::*;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub id: u64,
        pub first: String,
        pub last: String,
    }
}

/// The same definition in another module: must give the same fingerprint.
mod v1_copy {
    use super::*;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub id: u64,
        pub first: String,
        pub last: String,
    }
}

/// Two same-typed fields swapped: bincode alone would decode this "fine" into wrong fields.
mod swapped {
    use super::*;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub id: u64,
        pub last: String,
        pub first: String,
    }
}

mod added {
    use super::*;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub id: u64,
        pub first: String,
        pub last: String,
        pub email: Option<String>,
    }
}

mod removed {
    use super::*;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub id: u64,
        pub first: String,
    }
}

mod retyped {
    use super::*;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub id: u32,
        pub first: String,
        pub last: String,
    }
}

mod renamed_field {
    use super::*;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct User {
        pub id: u64,
        pub given: String,
        pub last: String,
    }
}

/// Enums nested inside another enum's variants: a change deep inside must show.
mod nested_v1 {
    use super::*;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Inner {
        A,
        B(u8),
    }
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Outer {
        Empty,
        Holds(Inner),
        Many {
            items: Vec<Inner>,
            by_name: BTreeMap<String, Inner>,
        },
    }
}

mod nested_v2 {
    use super::*;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Inner {
        A,
        B(u8),
        C { extra: bool },
    }
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub enum Outer {
        Empty,
        Holds(Inner),
        Many {
            items: Vec<Inner>,
            by_name: BTreeMap<String, Inner>,
        },
    }
}

fn old_user() -> v1::User {
    v1::User {
        id: 7,
        first: "Ada".into(),
        last: "Lovelace".into(),
    }
}

#[test]
fn identical_definitions_in_two_modules_have_equal_fingerprints() {
    assert_eq!(
        fingerprint_of::<v1::User>().unwrap(),
        fingerprint_of::<v1_copy::User>().unwrap()
    );
    let cache = TypedCache::new(InMemoryEngine::new());
    cache.set("user", &old_user(), Ttl::Default).unwrap();
    let read: Option<v1_copy::User> = cache.get("user").unwrap();
    assert_eq!(read.map(|u| u.last), Some("Lovelace".to_string()));
}

#[test]
fn every_kind_of_change_changes_the_fingerprint() {
    let base = fingerprint_of::<v1::User>().unwrap();
    let changed = [
        ("swapped", fingerprint_of::<swapped::User>().unwrap()),
        ("added", fingerprint_of::<added::User>().unwrap()),
        ("removed", fingerprint_of::<removed::User>().unwrap()),
        ("retyped", fingerprint_of::<retyped::User>().unwrap()),
        ("renamed", fingerprint_of::<renamed_field::User>().unwrap()),
    ];
    for (what, fp) in changed {
        assert_ne!(fp, base, "{what}");
    }
    assert_ne!(
        fingerprint_of::<nested_v1::Outer>().unwrap(),
        fingerprint_of::<nested_v2::Outer>().unwrap(),
        "a variant added to an enum reached only through another enum"
    );
}

#[test]
fn nested_enums_are_traced_completely() {
    let shape = shape_of::<nested_v2::Outer>().unwrap();
    for variant in ["1:A", "1:B", "1:C", "5:Empty", "5:Holds", "4:Many"] {
        assert!(shape.contains(variant), "{variant} missing from\n{shape}");
    }
}

#[test]
fn a_changed_type_reads_as_a_miss_and_leaves_the_entry() {
    let engine = InMemoryEngine::new();
    let old_build = TypedCache::new(engine.clone());
    let new_build = TypedCache::new(engine.clone());
    old_build.set("user", &old_user(), Ttl::Default).unwrap();

    assert_eq!(new_build.get::<swapped::User>("user").unwrap(), None);
    assert_eq!(new_build.get::<added::User>("user").unwrap(), None);
    assert_eq!(new_build.get::<removed::User>("user").unwrap(), None);
    assert_eq!(new_build.get::<retyped::User>("user").unwrap(), None);
    assert_eq!(new_build.get::<String>("user").unwrap(), None);
    let stats = new_build.stats();
    assert_eq!(stats.schema_mismatches, 5);
    assert_eq!(stats.hits, 0);

    // The entry is left for the old build, and the next set by the new build replaces it.
    assert!(engine.exists("user").unwrap());
    assert_eq!(old_build.get::<v1::User>("user").unwrap(), Some(old_user()));
    let new_user = swapped::User {
        id: 7,
        last: "Lovelace".into(),
        first: "Ada".into(),
    };
    new_build.set("user", &new_user, Ttl::Default).unwrap();
    assert_eq!(
        new_build.get::<swapped::User>("user").unwrap(),
        Some(new_user)
    );
    assert_eq!(old_build.get::<v1::User>("user").unwrap(), None);
}

#[test]
fn strict_mode_reports_a_schema_mismatch() {
    let engine = InMemoryEngine::new();
    TypedCache::new(engine.clone())
        .set("user", &old_user(), Ttl::Default)
        .unwrap();
    let strict = TypedCache::builder(engine).strict(true).build().unwrap();
    let err = strict.get::<swapped::User>("user").unwrap_err();
    assert!(matches!(err, CacheError::SchemaMismatch { .. }), "{err}");
    assert!(err.to_string().contains("\"user\""), "{err}");
}

#[test]
fn golden_fingerprints_are_stable() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/fingerprints.txt");
    let golden = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("the golden file {path} must exist (it is never written by this test): {e}")
    });
    let golden: BTreeMap<&str, &str> = golden
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once(' ').expect("`name fingerprint` lines"))
        .collect();
    let computed = [
        ("u64", fingerprint_of::<u64>()),
        ("String", fingerprint_of::<String>()),
        ("Vec<u8>", fingerprint_of::<Vec<u8>>()),
        ("Option<i32>", fingerprint_of::<Option<i32>>()),
        ("(u8,String)", fingerprint_of::<(u8, String)>()),
        ("[u16;4]", fingerprint_of::<[u16; 4]>()),
        (
            "BTreeMap<String,f64>",
            fingerprint_of::<BTreeMap<String, f64>>(),
        ),
        ("User", fingerprint_of::<v1::User>()),
        ("User+email", fingerprint_of::<added::User>()),
        ("Outer", fingerprint_of::<nested_v1::Outer>()),
        ("Outer+C", fingerprint_of::<nested_v2::Outer>()),
        ("List", fingerprint_of::<shapes::List>()),
        ("Tree", fingerprint_of::<shapes::Tree>()),
        ("Level1", fingerprint_of::<shapes::Level1>()),
        ("Mixed", fingerprint_of::<shapes::Mixed>()),
    ];
    let mut wrong = Vec::new();
    for (name, fp) in &computed {
        let fp = fp.as_ref().unwrap().to_string();
        match golden.get(name) {
            Some(expected) if *expected == fp => {}
            Some(expected) => wrong.push(format!("{name}: golden {expected}, computed {fp}")),
            None => wrong.push(format!(
                "{name}: not in the golden file (computed: `{name} {fp}`)"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "fingerprints changed, so values written by earlier releases would read as misses:\n{}",
        wrong.join("\n")
    );
    assert_eq!(
        golden.len(),
        computed.len(),
        "the golden file lists other types"
    );
}

/// An untagged enum needs a self-describing format, so its shape cannot be traced.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Number(u32),
    Text(String),
}

#[test]
fn an_untraceable_type_needs_a_schema_name() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let err = cache
        .set("loose", &Loose::Number(1), Ttl::Default)
        .unwrap_err();
    assert!(matches!(err, CacheError::UnknownSchema { .. }), "{err}");
    assert!(
        err.to_string().contains("TypedCacheBuilder::schema"),
        "{err}"
    );
    assert!(matches!(
        cache.get::<Loose>("loose"),
        Err(CacheError::UnknownSchema { .. })
    ));

    let named = TypedCache::builder(InMemoryEngine::new())
        .schema::<Loose>("loose/1")
        .codec(TestJson)
        .build()
        .unwrap();
    named
        .set("loose", &Loose::Text("x".into()), Ttl::Default)
        .unwrap();
    assert_eq!(
        named.get::<Loose>("loose").unwrap(),
        Some(Loose::Text("x".into()))
    );
}

/// Untagged enums need a self-describing codec to round-trip; bincode is not one.
#[derive(Debug, Default)]
struct TestJson;

impl cache_serializer::Codec for TestJson {
    const ID: u8 = 200;
    const NAME: &'static str = "test-json";
    fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), cache_core::BoxError> {
        serde_json::to_writer(out, value)?;
        Ok(())
    }
    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> Result<T, cache_core::BoxError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[test]
fn a_value_of_another_codec_is_a_mismatch() {
    #[derive(Debug, Default)]
    struct OtherCodec;
    impl cache_serializer::Codec for OtherCodec {
        const ID: u8 = 201;
        const NAME: &'static str = "other";
        fn encode<T: Serialize + ?Sized>(
            &self,
            value: &T,
            out: &mut Vec<u8>,
        ) -> Result<(), cache_core::BoxError> {
            cache_serializer::Bincode.encode(value, out)
        }
        fn decode<T: serde::de::DeserializeOwned>(
            &self,
            bytes: &[u8],
        ) -> Result<T, cache_core::BoxError> {
            cache_serializer::Bincode.decode(bytes)
        }
    }
    let engine = InMemoryEngine::new();
    TypedCache::builder(engine.clone())
        .codec(OtherCodec)
        .build()
        .unwrap()
        .set("n", &5u32, Ttl::Default)
        .unwrap();
    let bincode = TypedCache::new(engine.clone());
    assert_eq!(bincode.get::<u32>("n").unwrap(), None);
    assert_eq!(bincode.stats().schema_mismatches, 1);
}

mod shapes {
    use super::*;
    use std::collections::HashMap;
    use std::num::NonZeroU32;
    use std::time::Duration;

    #[derive(Debug, Serialize, Deserialize)]
    pub enum List {
        Cons(u8, Box<List>),
        Nil,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub struct Tree {
        pub label: String,
        pub children: Vec<Tree>,
        pub parent: Option<Box<Tree>>,
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Level3 {
        X,
        Y(i128),
        Z { deep: char },
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Level2 {
        P(Level3),
        Q,
        R(Vec<Level3>),
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub enum Level1 {
        Start,
        Into(Level2),
    }

    #[derive(Debug, Serialize, Deserialize)]
    pub struct Marker;

    #[derive(Debug, Serialize, Deserialize)]
    pub struct Meters(pub f64);

    #[derive(Debug, Serialize, Deserialize)]
    pub struct Pair(pub u8, pub String);

    #[derive(Debug, Serialize, Deserialize)]
    pub struct Mixed {
        pub marker: Marker,
        pub meters: Meters,
        pub pair: Pair,
        pub id: NonZeroU32,
        pub timeout: Duration,
        pub hash: [u8; 32],
        pub index: HashMap<String, Vec<Option<u16>>>,
        pub unit: (),
    }
}

#[test]
fn recursive_types_are_traced() {
    let list = shape_of::<shapes::List>().unwrap();
    assert!(
        list.contains("4:List=enum{0:4:Cons=tuple(u8,@4:List);1:3:Nil=unit;}"),
        "{list}"
    );
    let tree = shape_of::<shapes::Tree>().unwrap();
    assert!(
        tree.contains("8:children=seq<@4:Tree>;6:parent=option<@4:Tree>;"),
        "{tree}"
    );
}

#[test]
fn enums_three_levels_deep_are_traced_completely() {
    let shape = shape_of::<shapes::Level1>().unwrap();
    assert!(
        shape.contains("6:Level3=enum{0:1:X=unit;1:1:Y=newtype<i128>;2:1:Z=struct{4:deep=char;};}"),
        "{shape}"
    );
    assert!(
        shape.contains(
            "6:Level2=enum{0:1:P=newtype<@6:Level3>;1:1:Q=unit;2:1:R=newtype<seq<@6:Level3>>;}"
        ),
        "{shape}"
    );
}

#[test]
fn common_std_types_are_traced() {
    let shape = shape_of::<shapes::Mixed>().unwrap();
    for part in [
        "6:Marker=unit-struct",
        "6:Meters=newtype-struct<f64>",
        "4:Pair=tuple-struct(u8,str)",
        "2:id=u32",
        "8:Duration=struct{4:secs=u64;5:nanos=u32;}",
        "4:hash=array<u8;32>",
        "5:index=map<str,seq<option<u16>>>",
        "4:unit=unit",
    ] {
        assert!(shape.contains(part), "{part} missing from\n{shape}");
    }
}
