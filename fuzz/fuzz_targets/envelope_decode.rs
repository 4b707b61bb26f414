//! Arbitrary bytes under a key, read as several types, lenient and strict: a value, a miss or a
//! typed error, never a panic, an abort or a huge allocation; compressed envelopes included (a
//! claimed length is bounded before anything is inflated); envelopes with a load time; and
//! bytes behind a tag header, read through an engine.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use cache_core::CacheEngine;
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
            .build().unwrap();
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
        let mut compressed = header.clone();
        compressed[1] = 2;
        inputs.push([compressed.as_slice(), data].concat());
        // With a load time (formats 0x11 and 0x12): the 4 bytes of time come from the input.
        for format in [0x11, 0x12] {
            let mut timed = header.clone();
            timed[1] = format;
            inputs.push([timed.as_slice(), data].concat());
        }
    }
    // And behind a tag header (cache_core::tags), read through the engine so the header is
    // parsed and the tags' versions looked up.
    inputs.push([&[0xC8, b'T', 1][..], data].concat());
    for bytes in &inputs {
        for cache in [lenient, strict] {
            let stored = cache.engine().set(
                "k",
                cache_core::Bytes::copy_from_slice(bytes),
                cache_core::Ttl::Default,
            );
            if stored.is_ok() {
                let _ = cache.get::<Record>("k");
                let _ = cache.get::<Shape>("k");
            }
            let _ = cache.decode::<Record>("k", bytes);
            let _ = cache.decode::<String>("k", bytes);
            let _ = cache.decode::<Vec<Vec<u8>>>("k", bytes);
            let _ = cache.decode::<Shape>("k", bytes);
            let _ = cache.decode::<(u8, i64, char, bool)>("k", bytes);
        }
    }
});
