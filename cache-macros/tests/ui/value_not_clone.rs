use std::sync::LazyLock;

use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};

static CACHE: LazyLock<TypedCache<InMemoryEngine>> =
    LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));

#[derive(serde::Serialize, serde::Deserialize)]
struct Report {
    lines: Vec<String>,
}

#[cached(cache = CACHE, key = "report:{id}")]
fn report(id: u64) -> Report {
    Report { lines: vec![id.to_string()] }
}

fn main() {}
