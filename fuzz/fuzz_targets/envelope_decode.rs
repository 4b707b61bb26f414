//! Arbitrary bytes under a key, read as several types, lenient and strict: a value, a miss or a
//! typed error, never a panic, an abort or a huge allocation; compressed envelopes included (a
//! claimed length is bounded before anything is inflated).
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cache_local::InMemoryEngine;
use cache_serializer::TypedCache;
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
    extra: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle(f32),
    Polygon {
        points: Vec<(i32, i32)>,
        label: Option<String>,
    },
    Nested(Box<Shape>),
}

fn caches() -> &'static (TypedCache<InMemoryEngine>, TypedCache<InMemoryEngine>) {
    static CACHES: OnceLock<(TypedCache<InMemoryEngine>, TypedCache<InMemoryEngine>)> =
        OnceLock::new();
    CACHES.get_or_init(|| {
        let lenient = TypedCache::new(InMemoryEngine::new());
        let strict = TypedCache::builder(InMemoryEngine::new())
            .strict(true)
            .build();
        (lenient, strict)
    })
}

fuzz_target!(|data: &[u8]| {
    let (lenient, strict) = caches();
    // Also as a valid header of each type followed by the fuzzed payload, so the codec is
    // reached and not only the envelope check.
    let mut inputs = vec![data.to_vec()];
    for header in [
        lenient.encode(&String::new()).map(|b| b[..11].to_vec()),
        lenient
            .encode(&Vec::<Vec<u8>>::new())
            .map(|b| b[..11].to_vec()),
        lenient.encode(&Shape::Empty).map(|b| b[..11].to_vec()),
    ]
    .into_iter()
    .flatten()
    {
        inputs.push([header.as_slice(), data].concat());
    }
    // And as a compressed envelope of each type (format 2): the fuzzed bytes as the claimed
    // length and LZ4 block, so inflation and its bounds are reached too.
    for header in [
        lenient.encode(&String::new()).map(|b| b[..11].to_vec()),
        lenient.encode(&Shape::Empty).map(|b| b[..11].to_vec()),
    ]
    .into_iter()
    .flatten()
    {
        let mut compressed = header;
        compressed[1] = 2;
        inputs.push([compressed.as_slice(), data].concat());
    }
    for bytes in &inputs {
        for cache in [lenient, strict] {
            let _ = cache.decode::<Record>("k", bytes);
            let _ = cache.decode::<String>("k", bytes);
            let _ = cache.decode::<Vec<Vec<u8>>>("k", bytes);
            let _ = cache.decode::<Shape>("k", bytes);
            let _ = cache.decode::<(u8, i64, char, bool)>("k", bytes);
        }
    }
});
