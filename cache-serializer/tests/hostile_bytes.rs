//! Bytes this library did not write, or that were corrupted, are a miss (or a typed error in
//! strict mode): never a panic, an abort or a large allocation.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use cache_core::{Bytes, CacheEngine, CacheError, Ttl};
use cache_local::InMemoryEngine;
use cache_serializer::TypedCache;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    id: u64,
    name: String,
    tags: Vec<String>,
    score: Option<f64>,
}

fn record() -> Record {
    Record {
        id: 42,
        name: "answer".into(),
        tags: vec!["a".into(), "b".into()],
        score: Some(0.5),
    }
}

fn stored(cache: &TypedCache<InMemoryEngine>) -> Vec<u8> {
    cache.set("r", &record(), Ttl::Default).unwrap();
    cache.engine().get("r").unwrap().unwrap().to_vec()
}

/// Every way of damaging a stored value that the tests try.
fn damaged_variants(good: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("empty".to_string(), Vec::new()),
        ("plain text".to_string(), b"hello, not ours".to_vec()),
        ("header only".to_string(), good[..11].to_vec()),
        ("trailing byte".to_string(), [good, &[0u8]].concat()),
    ];
    for cut in 1..good.len() {
        out.push((format!("truncated to {cut}"), good[..cut].to_vec()));
    }
    for byte in 11..good.len() {
        for bit in 0..8 {
            let mut flipped = good.to_vec();
            flipped[byte] ^= 1 << bit;
            out.push((format!("bit {bit} of byte {byte} flipped"), flipped));
        }
    }
    // A valid header followed by a length prefix claiming 2^40 bytes for the `name` string.
    let mut huge = good[..11].to_vec();
    huge.push(42); // id
    huge.extend_from_slice(&[253, 0, 0, 0, 0, 0, 1, 0, 0]);
    out.push(("2^40-byte length prefix".to_string(), huge));
    out
}

#[test]
fn damaged_values_are_misses_and_counted() {
    let cache = TypedCache::new(InMemoryEngine::new());
    let good = stored(&cache);
    let mut decoded_anyway = 0;
    for (what, bytes) in damaged_variants(&good) {
        cache
            .engine()
            .set("r", Bytes::from(bytes), Ttl::Default)
            .unwrap();
        match cache.get::<Record>("r") {
            Ok(None) => {}
            // A flipped bit inside a string or float can still be a valid value of the type:
            // the envelope guards the schema, not the payload's integrity.
            Ok(Some(r)) => {
                assert!(
                    !what.starts_with("truncated") && what != "trailing byte",
                    "{what} decoded to {r:?}"
                );
                decoded_anyway += 1;
            }
            Err(e) => panic!("{what}: a lenient cache returned an error: {e}"),
        }
    }
    let stats = cache.stats();
    assert!(stats.decode_failures > 0, "{stats:?}");
    assert!(decoded_anyway < 200, "{decoded_anyway}");
}

#[test]
fn damaged_values_are_typed_errors_in_strict_mode() {
    let engine = InMemoryEngine::new();
    let cache = TypedCache::builder(engine.clone())
        .strict(true)
        .build()
        .unwrap();
    let good = stored(&TypedCache::new(engine.clone()));
    for (what, bytes) in damaged_variants(&good) {
        engine.set("r", Bytes::from(bytes), Ttl::Default).unwrap();
        match cache.get::<Record>("r") {
            Ok(None) => panic!("{what}: strict mode gave a miss"),
            Ok(Some(_)) => {}
            Err(CacheError::Serialization { .. } | CacheError::SchemaMismatch { .. }) => {}
            Err(other) => panic!("{what}: unexpected error {other}"),
        }
    }
}

#[test]
fn hostile_lengths_do_not_allocate() {
    // With an unbounded decoder these inputs asked for 2^40 bytes and aborted the process.
    let cache = TypedCache::new(InMemoryEngine::new());
    let header = {
        cache.set("s", &String::new(), Ttl::Default).unwrap();
        cache.engine().get("s").unwrap().unwrap()[..11].to_vec()
    };
    for prefix in [
        vec![253, 0, 0, 0, 0, 0, 1, 0, 0],
        vec![253, 255, 255, 255, 255, 255, 255, 255, 255],
        vec![252, 0, 0, 0, 64],
    ] {
        let bytes = [header.as_slice(), prefix.as_slice()].concat();
        cache
            .engine()
            .set("s", Bytes::from(bytes), Ttl::Default)
            .unwrap();
        assert_eq!(cache.get::<String>("s").unwrap(), None);
        assert_eq!(cache.get::<Vec<u8>>("s").unwrap(), None);
        assert_eq!(cache.get::<Vec<Vec<String>>>("s").unwrap(), None);
    }
}
