use std::sync::LazyLock;

use cache_local::InMemoryEngine;
use cache_serializer::{TypedCache, cached};

static CACHE: LazyLock<TypedCache<InMemoryEngine>> =
    LazyLock::new(|| TypedCache::new(InMemoryEngine::new()));

struct Directory {
    cache: TypedCache<InMemoryEngine>,
    queries: u64,
}

impl Directory {
    #[cached(cache = self.cache, key = "user:{id}")]
    fn user(&mut self, id: u64) -> String {
        self.queries += 1;
        format!("user {id}")
    }
}

fn main() {}
