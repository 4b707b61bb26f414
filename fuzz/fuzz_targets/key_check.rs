//! The key rule on arbitrary text: `check_key` (with its eight-bytes-at-a-time fast path) must
//! agree with the plain definition, never panic, and namespace prefixes must stay prefix-free.
#![no_main]

use cache_core::key::{MAX_KEY_LEN, check_key, namespace_prefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let prefix_len = data.first().map_or(0, |b| usize::from(*b) % 64);
    let expected = !text.is_empty()
        && text.len() <= MAX_KEY_LEN.saturating_sub(prefix_len)
        && !text.chars().any(|c| c.is_whitespace() || c.is_control());
    assert_eq!(
        check_key(text, prefix_len).is_ok(),
        expected,
        "{text:?} with prefix {prefix_len}"
    );

    // Two namespaces from the input: neither prefix may start the other unless equal.
    if let Some((a, b)) = text.split_once('|') {
        if let (Ok(pa), Ok(pb)) = (namespace_prefix(a), namespace_prefix(b)) {
            if a != b {
                assert!(
                    !pb.starts_with(&pa) && !pa.starts_with(&pb),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
});
