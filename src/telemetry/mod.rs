//! tracing subscriber setup. Every line of a call carries its request id
//! through the span opened by the request-context layer.

mod json_fields;

pub use json_fields::JsonSpanFields;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,sqlx=warn,sea_orm=warn,h2=warn,hyper=warn,tower=warn";

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("HOOKPLANE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = match format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_target(false)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .try_init(),
        LogFormat::Json => json_subscriber(filter, std::io::stderr).try_init(),
    };
}

/// One JSON object per line; an event inside a span carries the span's
/// fields (method, request id) under `"span"`.
fn json_subscriber<W>(
    filter: EnvFilter,
    writer: W,
) -> tracing_subscriber::fmt::SubscriberBuilder<
    JsonSpanFields,
    tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
    EnvFilter,
    W,
>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .fmt_fields(JsonSpanFields)
}
