use std::sync::LazyLock;

use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};

static CACHE: LazyLock<TypedCache<InMemoryEngine>> =
    LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));

#[cached(cache = CACHE, key = "user:{id}", cache_err = true, none_ttl = 30)]
fn user(id: u64) -> Result<Option<String>, String> {
    Ok(Some(format!("user {id}")))
}

fn main() {}
