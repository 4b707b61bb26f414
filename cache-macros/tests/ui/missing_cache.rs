use cache_serializer::cached;

#[cached(key = "answer")]
fn answer() -> u64 {
    42
}

fn main() {}
