//! A Redis engine with the statistics, metrics and tracing layers: events go to stderr through
//! a `tracing` subscriber, metrics to a Prometheus exporter whose page is printed at the end.
//!
//! ```text
//! cargo run --example observability -- redis://127.0.0.1:6379
//! ```
//!
//! Everything happens under the namespace `observability`; nothing else on the server is
//! touched. Without a server the engine fails open: every read misses, and the page shows the
//! errors.

use cache_examples::observability::{install_prometheus, observed_engine, traffic};
use cache_layers::Stats;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(std::io::stderr)
        .init();
    let prometheus = install_prometheus()?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let stats = Stats::new();
    let engine = observed_engine(&url, "observability", &stats)?;
    traffic(&engine)?;
    let counts = stats.snapshot();
    println!(
        "{} hits, {} misses, {} errors; the Prometheus page:\n",
        counts.hits, counts.misses, counts.errors
    );
    println!("{}", prometheus.render());
    Ok(())
}
