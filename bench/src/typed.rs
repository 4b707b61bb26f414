//! Comparison 8: the typed layer's encode + decode against bare bincode.

use std::time::Instant;

use cache_local::InMemoryEngine;
use cache_serializer::TypedCache;
use serde::{Deserialize, Serialize};

use crate::measure::{interleave, rate};
use crate::remote::{Small, small};
use crate::{Goal, Plan, Row};

/// About 1 KiB encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Large {
    id: u64,
    title: String,
    body: String,
    tags: Vec<String>,
}

fn large() -> Large {
    Large {
        id: 7,
        title: "a title".into(),
        body: "lorem ipsum dolor sit amet ".repeat(36),
        tags: (0..8).map(|i| format!("tag-{i}")).collect(),
    }
}

fn compare<T>(plan: &Plan, value: &T, label: &str, rows: &mut Vec<Row>)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + 'static,
{
    let cache = TypedCache::new(InMemoryEngine::new());
    let config = bincode::config::standard();
    let ops = plan.codec_ops;
    let encoded = cache
        .encode(value)
        .unwrap_or_else(|e| panic!("encode: {e}"));
    let r = interleave(
        plan.rounds,
        &mut [
            &mut || {
                let start = Instant::now();
                for _ in 0..ops {
                    let bytes = cache.encode(std::hint::black_box(value)).ok();
                    let back: Option<T> = bytes.and_then(|b| cache.decode("k", &b).ok().flatten());
                    std::hint::black_box(back);
                }
                rate(ops, start.elapsed())
            },
            &mut || {
                let start = Instant::now();
                for _ in 0..ops {
                    let bytes =
                        bincode::serde::encode_to_vec(std::hint::black_box(value), config).ok();
                    let back: Option<T> = bytes
                        .and_then(|b| bincode::serde::decode_from_slice(&b, config).ok())
                        .map(|(v, _)| v);
                    std::hint::black_box(back);
                }
                rate(ops, start.elapsed())
            },
        ],
    );
    // Time ratio = inverse of the rate ratio.
    rows.push(Row::plain(
        8,
        &format!(
            "TypedCache encode+decode time / bare bincode, {label} ({} B)",
            encoded.len()
        ),
        1e9 / r[0],
        1e9 / r[1],
        "ns/op",
        Goal::AtMost(1.10),
    ));
}

pub(crate) fn run(plan: &Plan, rows: &mut Vec<Row>) {
    compare::<Small>(plan, &small(), "small struct", rows);
    compare::<Large>(plan, &large(), "1 KiB struct", rows);
}
