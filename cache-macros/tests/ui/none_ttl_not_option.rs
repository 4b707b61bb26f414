use std::sync::LazyLock;

use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};

static CACHE: LazyLock<TypedCache<InMemoryEngine>> =
    LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));

#[cached(cache = CACHE, key = "user:{id}", none_ttl = "30s")]
fn user(id: u64) -> Result<String, std::io::Error> {
    Ok(format!("user {id}"))
}

fn main() {}
