//! Many threads at once, and `close`.

use std::sync::Arc;

use cache_core::{CacheError, Ttl};

use super::{bytes, has_method, set};
use crate::{EngineFactory, Harness};

/// Several threads mixing every operation see no error and only values written for each key.
pub fn concurrency_smoke(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    let threads = 4;
    let (add, touch) = (has_method(&h, "add"), has_method(&h, "touch"));
    std::thread::scope(|s| {
        for t in 0..threads {
            let engine = Arc::clone(&h.engine);
            s.spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ t as u64;
                for i in 0..400 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let key = format!("smoke-{}", seed % 32);
                    let value = format!("{key}={t}/{i}");
                    match seed % 7 {
                        0 => engine.set(&key, bytes(&value), Ttl::Default).expect("set"),
                        1 => {
                            if let Some(v) = engine.get(&key).expect("get") {
                                assert!(v.starts_with(key.as_bytes()), "value {v:?} under {key}");
                            }
                        }
                        2 => drop(engine.delete(&key).expect("delete")),
                        3 if add => {
                            let _ = engine.add(&key, bytes(&value), Ttl::Default).expect("add");
                        }
                        4 => drop(engine.exists(&key).expect("exists")),
                        5 => {
                            let keys = [key.as_str(), "smoke-0", "smoke-1"];
                            for (k, v) in keys.iter().zip(engine.get_many(&keys).expect("get_many"))
                            {
                                if let Some(v) = v {
                                    assert!(v.starts_with(k.as_bytes()), "value {v:?} under {k}");
                                }
                            }
                        }
                        6 if touch => drop(engine.touch(&key, Ttl::Default).expect("touch")),
                        _ => engine.set(&key, bytes(&value), Ttl::Default).expect("set"),
                    }
                }
            });
        }
    });
}

/// After `close`, every operation is a `Closed` error, at once; closing again is fine.
pub fn close_is_final(factory: &dyn EngineFactory) {
    let h = Harness::new(factory);
    set(&h, "k", "v", Ttl::Default);
    h.engine.close().expect("close");
    let results: Vec<(&str, Result<(), CacheError>)> = vec![
        ("get", h.engine.get("k").map(drop)),
        ("set", h.engine.set("k", bytes("v"), Ttl::Default)),
        ("exists", h.engine.exists("k").map(drop)),
        ("delete", h.engine.delete("k").map(drop)),
        ("increment", h.engine.increment("n", 1).map(drop)),
        ("get_many", h.engine.get_many(&["k"]).map(drop)),
        ("clear", h.engine.clear()),
    ];
    for (op, result) in results.into_iter().filter(|(op, _)| has_method(&h, op)) {
        assert!(
            matches!(result, Err(CacheError::Closed { .. })),
            "{}: {op} after close gave {result:?}, not Closed",
            h.caps.backend
        );
    }
    h.engine.close().expect("closing twice");
}
