use std::sync::LazyLock;

use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};

static CACHE: LazyLock<TypedCache<InMemoryEngine>> =
    LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));

#[cached(cache = CACHE, key = "point:{point}")]
fn norm((x, y): (i64, i64)) -> i64 {
    x * x + y * y
}

fn main() {}
