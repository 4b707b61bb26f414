use std::sync::LazyLock;

use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};

static CACHE: LazyLock<TypedCache<InMemoryEngine>> =
    LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));

#[cached(cache = CACHE, key = "user:{id}", ttl = 60, ttl = "5m")]
fn user(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
