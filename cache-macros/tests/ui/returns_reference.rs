use std::sync::LazyLock;

use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};

static CACHE: LazyLock<TypedCache<InMemoryEngine>> =
    LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));

#[cached(cache = CACHE, key = "user:{name}")]
fn first_word(name: &str) -> &str {
    name.split(":").next().unwrap_or(name)
}

fn main() {}
