//! The reply decoders of cache-redis (RESP) and cache-memcached (meta protocol) on arbitrary bytes
//! and limits: never a panic; a reply never claims more input than it was given; "incomplete"
//! always asks for more than it has; decoding a stream fed in arbitrary pieces through the read
//! buffer gives the same replies as decoding it whole; and no decoded value is over its limit.
#![no_main]

use cache_memcached::meta::{Meta, Reply};
use cache_redis::resp::{Resp, Value};
use cache_remote::{Decode, Decoded, ReadBuffer, ReplyLimits};
use libfuzzer_sys::fuzz_target;

fn limits(seed: &[u8]) -> ReplyLimits {
    let byte = |i: usize| usize::from(seed.get(i).copied().unwrap_or(0));
    ReplyLimits {
        max_value: byte(0) * 64,
        max_line: 1 + byte(1) * 4,
        max_elements: byte(2) % 16,
        max_depth: byte(3) % 4,
    }
}

/// Every reply decoded from `input` at once, and how decoding ended.
fn whole<D: Decode>(decoder: &D, input: &[u8], limits: &ReplyLimits) -> (Vec<D::Reply>, bool) {
    let mut at = 0;
    let mut replies = Vec::new();
    loop {
        match decoder.decode(&input[at..], limits) {
            Ok(Decoded::Reply(reply, used)) => {
                assert!(used > 0 && used <= input.len() - at, "used {used} of {}", input.len() - at);
                at += used;
                replies.push(reply);
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed > input.len() - at, "needs {needed}, has {}", input.len() - at);
                return (replies, false);
            }
            Err(_) => return (replies, true),
        }
    }
}

/// The same through a read buffer, fed in pieces whose sizes come from `cuts`.
fn pieces<D: Decode>(
    decoder: &D,
    input: &[u8],
    cuts: &[u8],
    limits: &ReplyLimits,
) -> (Vec<D::Reply>, bool) {
    let mut buffer = ReadBuffer::new();
    let mut replies = Vec::new();
    let mut at = 0;
    let mut cut = cuts.iter().cycle();
    while at < input.len() {
        let size = usize::from(*cut.next().unwrap_or(&1)).max(1).min(input.len() - at);
        let spare = buffer.spare();
        let size = size.min(spare.len());
        spare[..size].copy_from_slice(&input[at..at + size]);
        buffer.advance(size);
        at += size;
        loop {
            match buffer.decode(decoder, limits) {
                Ok(Some(reply)) => replies.push(reply),
                Ok(None) => break,
                Err(_) => return (replies, true),
            }
        }
    }
    (replies, false)
}

fn value_sizes_ok(value: &Value, limits: &ReplyLimits) -> bool {
    match value {
        Value::Bulk(bytes) => bytes.len() <= limits.max_value,
        Value::Array(items) => {
            items.len() <= limits.max_elements && items.iter().all(|v| value_sizes_ok(v, limits))
        }
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let (seed, rest) = data.split_at(4);
    let limits = limits(seed);
    let (cuts, input) = rest.split_at((rest.len() / 8).min(16));

    let (resp, resp_failed) = whole(&Resp, input, &limits);
    let (resp_pieces, resp_pieces_failed) = pieces(&Resp, input, cuts, &limits);
    assert_eq!(resp, resp_pieces);
    assert_eq!(resp_failed, resp_pieces_failed);
    assert!(resp.iter().all(|v| value_sizes_ok(v, &limits)));

    let (meta, meta_failed) = whole(&Meta, input, &limits);
    let (meta_pieces, meta_pieces_failed) = pieces(&Meta, input, cuts, &limits);
    assert_eq!(meta, meta_pieces);
    assert_eq!(meta_failed, meta_pieces_failed);
    for reply in &meta {
        match reply {
            Reply::Value { data, .. } => assert!(data.len() <= limits.max_value),
            Reply::Stats(lines) => assert!(lines.len() <= limits.max_elements),
            _ => {}
        }
    }
});
