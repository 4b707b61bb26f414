//! Comparison 18: compressing typed values. Which algorithm the typed layer uses was chosen
//! here: LZ4 (`lz4_flex`, pure Rust) against zstd (the C library) at levels 1 and 3, on
//! JSON-like records of about 1 KiB and 64 KiB, bincode-encoded as the typed layer stores them.
//! Figures: compressed size / encoded size, and microseconds per value to compress and to
//! decompress.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use cache_core::Ttl;
use cache_local::InMemoryEngine;
use cache_serializer::TypedCache;

use crate::measure::{interleave, median};
use crate::{Goal, Plan, Row};

/// An order, the kind of struct services cache: ids, names, addresses, a few enums as strings,
/// line items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Order {
    id: u64,
    customer: String,
    email: String,
    address: String,
    status: String,
    created_at: String,
    items: Vec<Item>,
    notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    sku: String,
    name: String,
    quantity: u32,
    price_cents: u64,
}

const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen",
];
const STREETS: &[&str] = &[
    "Main Street",
    "High Street",
    "Station Road",
    "Church Lane",
    "Park Avenue",
];
const CITIES: &[&str] = &["London", "Zurich", "Amsterdam", "Lyon", "Porto", "Gdansk"];
const PRODUCTS: &[&str] = &[
    "Blue mug",
    "Notebook A5",
    "USB-C cable 2 m",
    "Desk lamp",
    "Oak shelf",
    "Tea, 250 g",
];
const STATUS: &[&str] = &["pending", "paid", "shipped", "delivered", "refunded"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

fn order(rng: &mut Rng, items: usize) -> Order {
    let (first, last) = (rng.pick(FIRST), rng.pick(LAST));
    Order {
        id: rng.next() % 1_000_000_000,
        customer: format!("{first} {last}"),
        email: format!(
            "{}.{}@example.com",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        address: format!(
            "{} {}, {} {}",
            rng.next() % 200,
            rng.pick(STREETS),
            rng.next() % 90_000 + 10_000,
            rng.pick(CITIES)
        ),
        status: rng.pick(STATUS).into(),
        created_at: format!(
            "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            rng.next() % 12 + 1,
            rng.next() % 28 + 1,
            rng.next() % 24,
            rng.next() % 60,
            rng.next() % 60
        ),
        items: (0..items)
            .map(|_| Item {
                sku: format!("SKU-{:06}", rng.next() % 1_000_000),
                name: rng.pick(PRODUCTS).into(),
                quantity: (rng.next() % 5 + 1) as u32,
                price_cents: rng.next() % 20_000,
            })
            .collect(),
        notes: (rng.next() % 2 == 0).then(|| "Leave at the door, please ring twice.".into()),
    }
}

/// About `target` bytes of bincode: a list of orders.
pub(crate) fn orders(target: usize) -> Vec<Order> {
    let mut rng = Rng(42);
    let mut out = Vec::new();
    while bincode::serde::encode_to_vec(&out, bincode::config::standard())
        .map(|b| b.len())
        .unwrap_or(usize::MAX)
        < target
    {
        out.push(order(&mut rng, 3));
    }
    out
}

/// Microseconds per call of `f`, median of `rounds` blocks of `ops`.
fn micros(rounds: usize, ops: usize, mut f: impl FnMut()) -> f64 {
    let samples = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ops {
                f();
            }
            start.elapsed().as_secs_f64() * 1e6 / ops as f64
        })
        .collect();
    median(samples)
}

struct Figures {
    ratio: f64,
    compress_us: f64,
    decompress_us: f64,
}

fn measure(
    rounds: usize,
    ops: usize,
    input: &[u8],
    compress: impl Fn(&[u8]) -> Vec<u8>,
    decompress: impl Fn(&[u8]) -> Vec<u8>,
) -> Figures {
    let packed = compress(input);
    assert_eq!(decompress(&packed), input, "round trip");
    Figures {
        ratio: packed.len() as f64 / input.len() as f64,
        compress_us: micros(rounds, ops, || {
            std::hint::black_box(compress(std::hint::black_box(input)));
        }),
        decompress_us: micros(rounds, ops, || {
            std::hint::black_box(decompress(std::hint::black_box(&packed)));
        }),
    }
}

pub(crate) fn run(plan: &Plan, rows: &mut Vec<Row>) {
    for (label, size) in [("1 KiB", 1024usize), ("64 KiB", 64 * 1024)] {
        let value = orders(size);
        let input = bincode::serde::encode_to_vec(&value, bincode::config::standard())
            .unwrap_or_else(|e| panic!("{e}"));
        let ops = (plan.codec_ops / 20 * 1024 / size).max(4);
        let lz4 = measure(
            plan.rounds,
            ops,
            &input,
            lz4_flex::block::compress_prepend_size,
            |b| lz4_flex::block::decompress_size_prepended(b).unwrap_or_default(),
        );
        // zstd with its contexts kept between calls, as a codec would (a context per call
        // costs about 15 us at 1 KiB).
        let zstd = |level: i32| {
            let compressor = std::cell::RefCell::new(
                zstd::bulk::Compressor::new(level).unwrap_or_else(|e| panic!("{e}")),
            );
            let decompressor = std::cell::RefCell::new(
                zstd::bulk::Decompressor::new().unwrap_or_else(|e| panic!("{e}")),
            );
            measure(
                plan.rounds,
                ops,
                &input,
                |b| compressor.borrow_mut().compress(b).unwrap_or_default(),
                |b| {
                    decompressor
                        .borrow_mut()
                        .decompress(b, 1 << 20)
                        .unwrap_or_default()
                },
            )
        };
        let (z1, z3) = (zstd(1), zstd(3));
        let name = |what: &str| format!("{what}, {label} of orders ({} B bincode)", input.len());
        rows.push(Row::plain(
            18,
            &name("LZ4 (what compress_above uses): compressed size / encoded size"),
            lz4.ratio * 100.0,
            100.0,
            "%",
            Goal::None,
        ));
        rows.push(Row::plain(
            18,
            &name("(reference) zstd-1 compressed size / encoded size"),
            z1.ratio * 100.0,
            100.0,
            "%",
            Goal::None,
        ));
        rows.push(Row::plain(
            18,
            &name("(reference) zstd-3 compressed size / encoded size"),
            z3.ratio * 100.0,
            100.0,
            "%",
            Goal::None,
        ));
        rows.push(Row::plain(
            18,
            &name("LZ4 compress time / zstd-1"),
            lz4.compress_us,
            z1.compress_us,
            "us",
            Goal::None,
        ));
        rows.push(Row::plain(
            18,
            &name("LZ4 inflate time / zstd-1"),
            lz4.decompress_us,
            z1.decompress_us,
            "us",
            Goal::None,
        ));
        // What a user pays: a typed set and get through an in-memory engine, compressed or not.
        let plain = TypedCache::new(InMemoryEngine::new());
        let packed = TypedCache::builder(InMemoryEngine::new())
            .compress_above(0)
            .build()
            .unwrap_or_else(|e| panic!("typed cache: {e}"));
        let round_trip = |cache: &TypedCache<InMemoryEngine>| {
            let start = Instant::now();
            for _ in 0..ops {
                let _ = cache.set("k", &value, Ttl::Never);
                std::hint::black_box(cache.get::<Vec<Order>>("k").ok().flatten());
            }
            start.elapsed().as_secs_f64() * 1e6 / ops as f64
        };
        // Interleaved, like every comparison: the machine drifts between blocks.
        let r = interleave(
            plan.rounds,
            &mut [&mut || round_trip(&packed), &mut || round_trip(&plain)],
        );
        let (with, without) = (r[0], r[1]);
        if packed.get::<Vec<Order>>("k").ok().flatten().as_ref() != Some(&value) {
            panic!("a compressed value did not read back");
        }
        rows.push(Row::plain(
            18,
            &name("TypedCache set + get time, compressed / plain"),
            with,
            without,
            "us",
            Goal::None,
        ));
    }
}
