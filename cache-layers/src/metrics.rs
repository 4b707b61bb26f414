//! [`Metrics`]: counters and latency histograms through the `metrics` facade.

use std::sync::OnceLock;
use std::time::Instant;

use metrics::{Counter, Histogram, Label};

use crate::call::{Call, Labels, Operation, Outcome, error_kind};
use crate::layered::Interceptor;

/// Records every operation through the [`metrics`] facade, so any exporter (Prometheus,
/// StatsD, OpenTelemetry) can publish it:
///
/// | metric | kind | labels |
/// |---|---|---|
/// | `cache_operations_total` | counter | `backend`, `namespace`, `operation`, `outcome` (`ok`, `error`, `absorbed`) |
/// | `cache_operation_duration_seconds` | histogram | `backend`, `namespace`, `operation` |
/// | `cache_hits_total`, `cache_misses_total` | counter | `backend`, `namespace` (keys read) |
/// | `cache_errors_total` | counter | `backend`, `namespace`, `operation`, `kind` (`transient`, `backend`, `caller`) |
///
/// Install the exporter's recorder before building the layer (exporters are installed at
/// start-up): a layer built when no recorder was installed records nothing and never reads
/// the clock. It treats the facade's no-op recorder (a zero-sized type) as "nobody listening".
/// Keys are never recorded. Use one `Metrics` per engine: its handles carry that engine's
/// backend and namespace.
///
/// ```
/// use cache_layers::{LayerExt, Metrics};
/// use cache_local::InMemoryEngine;
///
/// // metrics_exporter_prometheus::PrometheusBuilder::new().install()?; // at start-up
/// let engine = InMemoryEngine::new().layer(Metrics::new());
/// # let _ = engine;
/// ```
#[derive(Debug, Default)]
pub struct Metrics {
    listening: bool,
    handles: OnceLock<Handles>,
}

impl Clone for Metrics {
    /// A layer for another engine: the same recorder, handles of its own.
    fn clone(&self) -> Self {
        Self {
            listening: self.listening,
            handles: OnceLock::new(),
        }
    }
}

#[derive(Debug)]
struct Handles {
    ok: Vec<Counter>,
    failed: Vec<Counter>,
    absorbed: Vec<Counter>,
    duration: Vec<Histogram>,
    hits: Counter,
    misses: Counter,
}

impl Metrics {
    /// A layer recording to the recorder installed now, if any.
    pub fn new() -> Self {
        Self {
            listening: metrics::with_recorder(|recorder| std::mem::size_of_val(recorder) != 0),
            handles: OnceLock::new(),
        }
    }

    /// Whether a recorder was installed when the layer was built.
    pub fn is_listening(&self) -> bool {
        self.listening
    }

    fn handles(&self, labels: &Labels) -> &Handles {
        self.handles.get_or_init(|| {
            let base = || {
                vec![
                    Label::new("backend", labels.backend),
                    Label::new("namespace", labels.namespace.to_string()),
                ]
            };
            let per_operation = |outcome: &'static str| {
                Operation::ALL
                    .iter()
                    .map(|op| {
                        let mut set = base();
                        set.push(Label::new("operation", op.name()));
                        set.push(Label::new("outcome", outcome));
                        metrics::counter!("cache_operations_total", set)
                    })
                    .collect()
            };
            Handles {
                ok: per_operation("ok"),
                failed: per_operation("error"),
                absorbed: per_operation("absorbed"),
                duration: Operation::ALL
                    .iter()
                    .map(|op| {
                        let mut set = base();
                        set.push(Label::new("operation", op.name()));
                        metrics::histogram!("cache_operation_duration_seconds", set)
                    })
                    .collect(),
                hits: metrics::counter!("cache_hits_total", base()),
                misses: metrics::counter!("cache_misses_total", base()),
            }
        })
    }
}

impl Interceptor for Metrics {
    type Ticket = Option<Instant>;

    #[inline]
    fn is_idle(&self) -> bool {
        !self.listening
    }

    #[inline]
    fn before(&self, _call: &Call<'_>) -> Option<Instant> {
        self.listening.then(Instant::now)
    }

    #[inline]
    fn after(&self, call: &Call<'_>, ticket: Option<Instant>, outcome: &Outcome<'_>) {
        let Some(started) = ticket else { return };
        let labels = call.labels();
        let handles = self.handles(labels);
        let index = call.operation.index();
        handles.duration[index].record(started.elapsed().as_secs_f64());
        match outcome {
            Outcome::Done { hits, misses } => {
                handles.ok[index].increment(1);
                if *hits > 0 {
                    handles.hits.increment(*hits);
                }
                if *misses > 0 {
                    handles.misses.increment(*misses);
                }
            }
            Outcome::Failed(error) | Outcome::Absorbed(error) => {
                let counters = if matches!(outcome, Outcome::Absorbed(_)) {
                    &handles.absorbed
                } else {
                    &handles.failed
                };
                counters[index].increment(1);
                metrics::counter!(
                    "cache_errors_total",
                    "backend" => labels.backend,
                    "namespace" => labels.namespace.to_string(),
                    "operation" => call.operation.name(),
                    "kind" => error_kind(error),
                )
                .increment(1);
            }
        }
    }
}
