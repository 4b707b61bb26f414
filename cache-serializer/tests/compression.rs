//! Compressed values: stored smaller when asked, read by any typed cache, and bounded when read:
//! a value claiming to inflate beyond the limit, or beyond what LZ4 can produce, is a miss (a
//! typed error in strict mode), never a large allocation.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use cache_core::{Bytes, CacheEngine, CacheError, Ttl};
use cache_local::InMemoryEngine;
use cache_serializer::{AsyncTypedCache, TypedCache};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Page {
    title: String,
    rows: Vec<(u32, String)>,
}

fn page(rows: u32) -> Page {
    Page {
        title: "orders".into(),
        rows: (0..rows)
            .map(|i| (i, format!("customer {} ordered a blue mug", i % 7)))
            .collect(),
    }
}

#[test]
fn large_values_are_stored_compressed_and_read_by_any_cache() {
    let engine = InMemoryEngine::new();
    let writer = TypedCache::builder(engine.clone())
        .compress_above(1024)
        .build()
        .unwrap();
    let plain_writer = TypedCache::new(InMemoryEngine::new());
    let big = page(200);
    writer.set("big", &big, Ttl::Default).unwrap();
    plain_writer.set("big", &big, Ttl::Default).unwrap();

    let stored = engine.get("big").unwrap().unwrap();
    let plain = plain_writer.engine().get("big").unwrap().unwrap();
    assert_eq!(stored[1], 2, "the envelope says compressed");
    assert!(
        stored.len() * 3 < plain.len(),
        "{} compressed vs {} plain",
        stored.len(),
        plain.len()
    );
    assert_eq!(writer.get::<Page>("big").unwrap(), Some(big.clone()));
    // A reader that does not compress reads it all the same.
    let reader = TypedCache::new(engine.clone());
    assert_eq!(reader.get::<Page>("big").unwrap(), Some(big));

    // Below the threshold, values stay plain.
    let small = page(2);
    writer.set("small", &small, Ttl::Default).unwrap();
    assert_eq!(engine.get("small").unwrap().unwrap()[1], 1);
    assert_eq!(writer.get::<Page>("small").unwrap(), Some(small));
}

#[test]
fn inflation_is_bounded() {
    let engine = InMemoryEngine::new();
    let writer = TypedCache::builder(engine.clone())
        .compress_above(0)
        .build()
        .unwrap();
    let big = page(2_000);
    writer.set("big", &big, Ttl::Default).unwrap();
    let stored = engine.get("big").unwrap().unwrap();
    let claimed = u32::from_be_bytes(stored[11..15].try_into().unwrap()) as usize;

    // A reader with a lower limit refuses it: a miss, or a typed error when strict.
    let limited = TypedCache::builder(engine.clone())
        .max_inflated_size(claimed - 1)
        .build()
        .unwrap();
    assert_eq!(limited.get::<Page>("big").unwrap(), None);
    assert_eq!(limited.stats().decode_failures, 1);
    let strict = TypedCache::builder(engine.clone())
        .max_inflated_size(claimed - 1)
        .strict(true)
        .build()
        .unwrap();
    let err = strict.get::<Page>("big").unwrap_err();
    assert!(matches!(err, CacheError::Serialization { .. }), "{err:?}");
    assert!(err.to_string().contains("max_inflated_size"), "{err}");

    // Hostile claims: 4 GiB from a short block, and a length the block does not inflate to.
    let strict = TypedCache::builder(engine.clone())
        .max_inflated_size(usize::MAX)
        .strict(true)
        .build()
        .unwrap();
    let mut lie = stored.to_vec();
    lie[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
    engine.set("lie", Bytes::from(lie), Ttl::Default).unwrap();
    let err = strict.get::<Page>("lie").unwrap_err();
    assert!(err.to_string().contains("more than LZ4"), "{err}");
    let mut off = stored.to_vec();
    off[11..15].copy_from_slice(&((claimed + 1) as u32).to_be_bytes());
    engine.set("off", Bytes::from(off), Ttl::Default).unwrap();
    assert!(strict.get::<Page>("off").is_err());
    let reader = TypedCache::new(engine.clone());
    assert_eq!(reader.get::<Page>("lie").unwrap(), None);
    assert_eq!(reader.get::<Page>("off").unwrap(), None);
    // Flipped bits across the compressed block: a value or a miss, never an error (lenient)
    // or a panic.
    for i in (15..stored.len()).step_by(13) {
        let mut flipped = stored.to_vec();
        flipped[i] ^= 0x10;
        assert!(reader.decode::<Page>("k", &flipped).is_ok(), "byte {i}");
    }
}

#[test]
fn the_async_face_compresses_too() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let engine = InMemoryEngine::new();
        let cache = AsyncTypedCache::builder(engine.clone())
            .compress_above(512)
            .strict(true)
            .build()
            .unwrap();
        let big = page(100);
        cache.set("big", &big, Ttl::Default).await.unwrap();
        assert_eq!(CacheEngine::get(&engine, "big").unwrap().unwrap()[1], 2);
        assert_eq!(cache.get::<Page>("big").await.unwrap(), Some(big));
    });
}

/// Found while testing compression: bincode's memory limit counted a `Vec<(u32, String)>` of
/// 100 rows at about twice its encoded size, and the first limit class refused it (a miss on
/// every read). The codec now moves up a class when a valid value needs it.
#[test]
fn values_larger_in_memory_than_encoded_read_back() {
    let cache = TypedCache::builder(InMemoryEngine::new())
        .strict(true)
        .build()
        .unwrap();
    for rows in [1, 10, 100, 120, 1_000] {
        let value = page(rows);
        cache.set("p", &value, Ttl::Default).unwrap();
        assert_eq!(cache.get::<Page>("p").unwrap(), Some(value), "{rows} rows");
    }
}

/// A bulk read decodes at most its budget of bytes (inflated): eight values that inflate to
/// 1 MiB each, read with a budget of 3.5 MiB, give three values and five misses, counted (and
/// a typed error in strict mode), on both faces. Without the budget, eight hostile values of
/// 263 KB that each inflate to 64 MiB made one call hold over 500 MiB.
#[test]
fn bulk_reads_are_bounded_per_call() {
    let engine = InMemoryEngine::new();
    let writer = TypedCache::builder(engine.clone())
        .compress_above(0)
        .build()
        .unwrap();
    let big = vec![7u8; 1 << 20];
    let keys: Vec<String> = (0..8).map(|i| format!("bulk-{i}")).collect();
    for key in &keys {
        writer.set(key, &big, Ttl::Default).unwrap();
    }
    assert!(
        engine.get("bulk-0").unwrap().unwrap().len() < 64 * 1024,
        "stored compressed"
    );
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let budget = (1 << 20) * 7 / 2;
    let reader = TypedCache::builder(engine.clone())
        .max_bytes_per_call(budget)
        .build()
        .unwrap();
    let found = reader.get_many::<Vec<u8>>(&keys).unwrap();
    assert_eq!(found.iter().filter(|v| v.is_some()).count(), 3);
    assert!(found[..3].iter().all(|v| v.as_ref() == Some(&big)));
    assert_eq!(reader.stats().over_budget, 5);
    assert_eq!(reader.stats().misses, 5);
    // Each call has a budget of its own; single reads are bounded by max_inflated_size.
    assert_eq!(reader.get_many::<Vec<u8>>(&keys[5..]).unwrap().len(), 3);
    assert_eq!(reader.get::<Vec<u8>>("bulk-7").unwrap(), Some(big.clone()));

    let strict = TypedCache::builder(engine.clone())
        .max_bytes_per_call(budget)
        .strict(true)
        .build()
        .unwrap();
    let err = strict.get_many::<Vec<u8>>(&keys).unwrap_err();
    assert!(err.to_string().contains("max_bytes_per_call"), "{err}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let found = runtime.block_on(async {
        let cache = AsyncTypedCache::builder(engine.clone())
            .max_bytes_per_call(budget)
            .build()
            .unwrap();
        let found = cache.get_many::<Vec<u8>>(&keys).await.unwrap();
        (found, cache.stats().over_budget)
    });
    assert_eq!(found.0.iter().filter(|v| v.is_some()).count(), 3);
    assert_eq!(found.1, 5);
}
