use std::sync::LazyLock;

use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};

static CACHE: LazyLock<TypedCache<InMemoryEngine>> =
    LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));

#[cached(cache = CACHE, key = "user:{user_id}")]
fn user(id: u64, region: &str) -> String {
    format!("user {id} in {region}")
}

fn main() {}
