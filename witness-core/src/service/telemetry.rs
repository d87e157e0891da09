//! Logs: JSON lines on stderr through `tracing-subscriber`, with the trace
//! context of each span (`tracing-opentelemetry`) so a request can be followed
//! from the gateway into the witness. Log lines carry origins, sizes and
//! outcomes; never client addresses or other personal data.

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs the process-wide JSON logger (level from `RUST_LOG`, default
/// `info`). Call once, from `main`.
pub fn init(service: &'static str) {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let tracer = provider.tracer(service);
    let _ = tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(std::io::stderr),
        )
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
}
