//! The tracing layer, in a test binary of its own: `tracing` caches each call site's interest
//! process-wide, and other tests' threads would race the scoped subscriber for it.

#![cfg(feature = "tracing")]
#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::io::Write;
use std::sync::{Arc, Mutex};

use cache_core::{Bytes, CacheEngine, Ttl};
use cache_layers::{KeyReport, LayerExt, Tracing};
use cache_local::InMemoryEngine;

/// A writer that keeps what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn tracing_emits_an_event_per_operation_without_raw_keys() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let engine = InMemoryEngine::new().layer(Tracing::new().keys(KeyReport::Hashed));
        engine
            .set(
                "user:secret@example.com",
                Bytes::from_static(b"private-payload"),
                Ttl::Default,
            )
            .unwrap();
        engine.get("user:secret@example.com").unwrap();
        // Errors name their key in their message: the event must not.
        let _ = engine.get("user:secret@example.com with a space");
        let _ = engine.increment("user:secret@example.com", 1);
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.contains("<key>"), "{text}");
    assert!(
        !text.contains("private-payload"),
        "a value reached the log: {text}"
    );
    assert!(
        text.contains("operation=\"set\"") || text.contains("operation=set"),
        "{text}"
    );
    assert!(text.contains("hits=1"), "{text}");
    assert!(
        text.contains("error_kind=\"caller\"") || text.contains("error_kind=caller"),
        "{text}"
    );
    assert!(text.contains("key_hash"), "{text}");
    assert!(
        !text.contains("secret"),
        "a raw key reached the log: {text}"
    );
}
