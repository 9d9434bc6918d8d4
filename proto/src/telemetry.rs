//! Telemetry of every service: logs, traces and metrics.
//!
//! - Logs go to stdout, as text or JSON; lines written inside a request's span carry its
//!   `trace_id`.
//! - Spans become OpenTelemetry traces, exported over OTLP/gRPC when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (with the other standard `OTEL_*` variables); without
//!   it nothing is exported and the cost is that of creating the spans.
//! - Metrics are recorded with the OpenTelemetry API: always readable as Prometheus text
//!   ([`prometheus_text`]), and exported over OTLP with the traces.
//! - W3C trace context crosses gRPC calls in their metadata ([`inject_context`],
//!   [`extract_context`]), so one request is one trace across the services.

use std::sync::OnceLock;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Bucket boundaries of histograms of durations in seconds: from half a millisecond (a small
/// record in the page cache) to a minute (gigabytes over a slow link).
pub fn seconds_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
}

/// Whether spans are exported (set by [`init`]).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether spans are exported over OTLP; when they are not, spans only serve the logs.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The registry behind [`prometheus_text`], set by [`init`].
static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

/// The logging flags every service binary has.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "RS_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format: `text` (for people) or `json` (one object a line, for log collectors).
    #[arg(long, env = "RS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Keeps the exporters running; dropping it flushes and stops them.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Errors here mean a collector that is gone; nothing is left to tell them to.
        let _ = self.tracer_provider.shutdown();
        let _ = self.meter_provider.shutdown();
    }
}

fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// Sets up logs, traces and metrics for the service named `service` (the default of
/// `service.name`; `OTEL_SERVICE_NAME` overrides it). Call once, inside a Tokio runtime.
pub fn init(service: &'static str, logs: &LogArgs) -> Result<Telemetry, String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&logs.log_level)
        .map_err(|e| format!("Log level '{}' is invalid: {e}", logs.log_level))?;
    let service_name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.is_empty());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.unwrap_or_else(|| service.to_string()))
        .build();
    let otlp = otlp_configured();
    EXPORTING.store(otlp, std::sync::atomic::Ordering::Relaxed);

    let mut tracer_provider = SdkTracerProvider::builder().with_resource(resource.clone());
    if otlp {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| format!("Cannot set up the OTLP trace exporter: {e}"))?;
        tracer_provider = tracer_provider.with_batch_exporter(exporter);
    }
    let tracer_provider = tracer_provider.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let registry = prometheus::Registry::new();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .without_target_info()
        .build()
        .map_err(|e| format!("Cannot set up the Prometheus exporter: {e}"))?;
    let mut meter_provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus_reader);
    if otlp {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| format!("Cannot set up the OTLP metric exporter: {e}"))?;
        meter_provider =
            meter_provider.with_reader(opentelemetry_sdk::metrics::PeriodicReader::builder(exporter).build());
    }
    let meter_provider = meter_provider.build();
    opentelemetry::global::set_meter_provider(meter_provider.clone());
    let _ = REGISTRY.set(registry);

    // Spans become OpenTelemetry spans only when they are exported: building them costs more
    // than the rest of a small request's telemetry.
    let traces = otlp.then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer_provider.tracer(service))
            // Busy/idle time, thread and source location of every span: attributes nobody reads
            // in a request trace, and the main part of a span's cost on small requests.
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
    });
    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let subscriber = tracing_subscriber::registry().with(filter).with(traces);
    let installed = if logs.log_format == "json" {
        subscriber
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()
    } else {
        subscriber
            .with(tracing_subscriber::fmt::layer().with_ansi(colours))
            .try_init()
    };
    installed.map_err(|e| format!("Cannot set up logging: {e}"))?;
    Ok(Telemetry {
        tracer_provider,
        meter_provider,
    })
}

/// The process's metrics in the Prometheus text format (empty before [`init`]).
pub fn prometheus_text() -> String {
    use prometheus::Encoder;
    let Some(registry) = REGISTRY.get() else {
        return String::new();
    };
    let mut text = Vec::new();
    // Encoding into a Vec fails only on a metric family the registry itself would not accept.
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut text);
    String::from_utf8(text).unwrap_or_default()
}

/// The trace id of `span`, as logged (`None` when the span is not traced).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The trace id a request's log lines carry: its span's when traces are exported, else the one
/// the caller sent in `traceparent`, else a new random one.
pub fn request_trace_id(span: &tracing::Span, headers: &http::HeaderMap) -> String {
    if let Some(id) = trace_id(span) {
        return id;
    }
    let sent = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split('-').nth(1))
        .filter(|id| {
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0')
        });
    match sent {
        Some(id) => id.to_ascii_lowercase(),
        None => format!("{:032x}", random_u128()),
    }
}

/// A random 128-bit number, from the standard library's randomly keyed hasher.
fn random_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0);
        u128::from(hasher.finish())
    };
    (half() << 64) | half()
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes the current span's trace context into outgoing gRPC metadata.
pub fn inject_context(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata))
    });
}

/// The trace context a caller sent in its HTTP headers or gRPC metadata.
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Makes `span` a child of the trace context the caller sent.
pub fn set_remote_parent(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = extract_context(headers);
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled, which leaves nothing to link.
        let _ = span.set_parent(parent);
    }
}

/// A tonic interceptor that sends the current trace context with every call.
pub fn propagate(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject_context(request.metadata_mut());
    Ok(request)
}

/// The span of a gRPC call a service receives, child of the caller's.
pub fn grpc_server_span(request: &http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc",
        otel.kind = "server",
        otel.name = %request.uri().path(),
        rpc.method = %request.uri().path(),
        trace_id = tracing::field::Empty,
    );
    set_remote_parent(&span, request.headers());
    span.record("trace_id", request_trace_id(&span, request.headers()));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_a_request_keeps_the_callers_trace_id_or_gets_a_new_one() {
        let mut headers = http::HeaderMap::new();
        let none = tracing::Span::none();
        let fresh = request_trace_id(&none, &headers);
        assert_eq!(fresh.len(), 32);
        assert_ne!(fresh, request_trace_id(&none, &headers));
        let sent = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", sent.parse().unwrap());
        assert_eq!(
            request_trace_id(&none, &headers),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        headers.insert(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_ne!(request_trace_id(&none, &headers), "0".repeat(32));
    }
}
