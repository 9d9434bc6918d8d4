//! Telemetry of every service: logs, traces and metrics.
//!
//! - Logs go to stdout, as text or JSON, through `tracing`; lines written inside a request's
//!   `tracing` span carry its `trace_id`.
//! - Every request a service serves is an OpenTelemetry span ([`ServerSpan`], and
//!   [`GrpcTracing`] for gRPC servers), sampled by the SDK's sampler, encoded as it ends and
//!   exported in batches over OTLP/gRPC by a thread of its own, when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (with the other standard `OTEL_*` variables); without
//!   it no span is made or exported, and a request only gets a trace id for its log lines.
//! - Metrics are recorded with the OpenTelemetry API and aggregated once: always readable as
//!   Prometheus text ([`prometheus_text`]), and exported from the same aggregation over OTLP
//!   with the traces.
//! - W3C trace context crosses gRPC calls in their metadata ([`inject_context`],
//!   [`extract_context`]), so one request is one trace across the services.

mod otlp;
mod queue;

use std::future::Future;
use std::sync::{LazyLock, OnceLock};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    FutureExt, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, WithContext,
};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample};
use tracing::Instrument;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Attribute keys of spans, after the OpenTelemetry semantic conventions.
pub mod keys {
    pub const HTTP_METHOD: &str = "http.request.method";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const HTTP_STATUS_CODE: &str = "http.response.status_code";
    pub const HTTP_REQUEST_BODY_SIZE: &str = "http.request.body.size";
    pub const HTTP_RESPONSE_BODY_SIZE: &str = "http.response.body.size";
    pub const BUCKET: &str = "reduct.bucket";
    pub const ENTRY: &str = "reduct.entry";
}

const RPC_SYSTEM: &str = "rpc.system";
const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";

/// W3C trace context, the format trace context crosses processes in.
static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// What makes and exports the process's spans, set by [`init`] when they are exported.
static SPANS: OnceLock<Spans> = OnceLock::new();

/// Makes the spans of the requests a service serves and queues the sampled ones for export.
///
/// Server spans are simple: one per request, with attributes and a status, and no events, links
/// or child spans in the process. So they are not made by the SDK's tracer, whose span objects
/// are shared and locked, each in a context of its own, with attributes as `KeyValue`s.
/// Building the SDK's span data directly instead saved about 1.1k instructions a span; writing a
/// span's attributes as OTLP protobuf as they are added, and encoding the span when it ends to
/// queue it as bytes ([`queue`]), saves about 3k more. The sampler is the SDK's, configured by
/// the standard variables.
struct Spans {
    sampler: Sampler,
    queue: queue::SpanQueue,
}

/// How long a stopping service waits for its last spans and metrics to be exported: a collector
/// that does not answer must not hold up the stop.
const LAST_EXPORT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Bucket boundaries of histograms of durations in seconds: from half a millisecond (a small
/// record in the page cache) to a minute (gigabytes over a slow link).
pub fn seconds_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ]
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
    /// Sends the metrics a last time when dropped, before the provider stops.
    metrics_export: Option<otlp::MetricExport>,
    meter_provider: SdkMeterProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Errors here mean a collector that is gone; nothing is left to tell them to.
        if let Some(spans) = SPANS.get() {
            spans.queue.stop(LAST_EXPORT_WAIT);
        }
        drop(self.metrics_export.take());
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

    if otlp {
        let var = |name: &str| std::env::var(name).ok();
        let config = otlp::ExportConfig::from_env(var)?;
        let batches = queue::BatchConfig::from_env(var)?;
        let sampler = otlp::sampler(var)?;
        let scope = opentelemetry::InstrumentationScope::builder(service).build();
        let sender = otlp::OtlpSpanSender::new(&config, &resource, &scope)?;
        let queue = queue::SpanQueue::start(batches, move |spans: &[u8]| sender.send(spans))?;
        let _ = SPANS.set(Spans { sampler, queue });
    }

    let registry = prometheus::Registry::new();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .without_target_info()
        .build()
        .map_err(|e| format!("Cannot set up the Prometheus exporter: {e}"))?;
    // One reader aggregates every measurement, for `/metrics` and for OTLP alike: a reader of its
    // own for OTLP would aggregate each measurement a second time, in the request.
    let metrics = otlp::SharedReader::new(prometheus_reader);
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(metrics.clone())
        .build();
    let metrics_export = if otlp {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| format!("Cannot set up the OTLP metric exporter: {e}"))?;
        let interval = otlp::metric_export_interval(|name| std::env::var(name).ok())?;
        Some(otlp::MetricExport::start(metrics, exporter, interval)?)
    } else {
        None
    };
    opentelemetry::global::set_meter_provider(meter_provider.clone());
    let _ = REGISTRY.set(registry);

    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let installed = if logs.log_format == "json" {
        let lines = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false);
        tracing_subscriber::registry()
            .with(lines.with_filter(filter))
            .try_init()
    } else {
        let lines = tracing_subscriber::fmt::layer().with_ansi(colours);
        tracing_subscriber::registry()
            .with(lines.with_filter(filter))
            .try_init()
    };
    installed.map_err(|e| format!("Cannot set up logging: {e}"))?;
    Ok(Telemetry {
        metrics_export,
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

/// The trace id a request's log lines carry when its span is not exported: the one the caller
/// sent in `traceparent`, else a new random one.
fn unexported_trace_id(headers: &http::HeaderMap) -> TraceId {
    headers
        .get(&TRACEPARENT)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split('-').nth(1))
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|id| TraceId::from_hex(id).ok())
        .filter(|id| *id != TraceId::INVALID)
        .unwrap_or_else(|| ids().new_trace_id())
}

/// Makes trace and span ids: random, from a generator of each thread's own.
fn ids() -> RandomIdGenerator {
    RandomIdGenerator::default()
}

/// The OpenTelemetry span of a request a service serves, child of the trace context its caller
/// sent, and the trace id its log lines carry. Without an exporter it holds only the trace id.
///
/// Spans are OpenTelemetry's own rather than made from `tracing` spans: the bridge between the
/// two cost as much again as the span itself, and `tracing` spans then serve the logs alone, so
/// the log level cannot switch traces off.
pub struct ServerSpan {
    trace_id: TraceId,
    /// The trace context calls made while serving carry; none when spans are not made.
    context: Option<opentelemetry::Context>,
    /// The span, when it is sampled.
    recording: Option<Recording>,
}

/// A sampled span, until it ends.
struct Recording {
    spans: &'static Spans,
    context: SpanContext,
    parent: SpanId,
    parent_is_remote: bool,
    name: std::borrow::Cow<'static, str>,
    start: std::time::SystemTime,
    /// The attributes so far, encoded.
    attributes: Vec<u8>,
}

/// The attributes of a span, written as OTLP protobuf as they are added; only sampled spans are
/// given any.
pub struct SpanAttributes<'a>(&'a mut Vec<u8>);

impl SpanAttributes<'_> {
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        otlp::string_attribute(self.0, key, value);
        self
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        otlp::int_attribute(self.0, key, value);
        self
    }
}

/// Room for the attributes of a span in its first allocation: an HTTP request's take about 200
/// bytes.
const ATTRIBUTE_ROOM: usize = 256;

impl ServerSpan {
    /// Starts the span `name` of a request with `headers`; `attributes` adds its attributes,
    /// and is called only when the span is sampled.
    pub fn start(
        name: impl Into<std::borrow::Cow<'static, str>>,
        headers: &http::HeaderMap,
        attributes: impl FnOnce(&mut SpanAttributes<'_>),
    ) -> Self {
        match SPANS.get() {
            Some(spans) => spans.start(name.into(), headers, attributes),
            None => Self {
                trace_id: unexported_trace_id(headers),
                context: None,
                recording: None,
            },
        }
    }

    /// The trace id (displayed as logged: 32 lowercase hex digits).
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Runs `future` with this span as the current trace context, so the calls it makes to other
    /// services carry it ([`inject_context`]).
    pub fn run<F: Future>(&self, future: F) -> futures::future::Either<WithContext<F>, F> {
        match &self.context {
            Some(context) => futures::future::Either::Left(future.with_context(context.clone())),
            None => futures::future::Either::Right(future),
        }
    }

    /// Ends the span, marking it failed when `failed`; `attributes` adds those of the answer,
    /// and is called only when the span is sampled.
    pub fn end(self, failed: bool, attributes: impl FnOnce(&mut SpanAttributes<'_>)) {
        let Some(mut recording) = self.recording else {
            return;
        };
        attributes(&mut SpanAttributes(&mut recording.attributes));
        let end = otlp::unix_nanos(std::time::SystemTime::now());
        let context = &recording.context;
        let trace_state = context.trace_state().header();
        let span = otlp::SpanRecord {
            trace_id: context.trace_id(),
            span_id: context.span_id(),
            trace_state: &trace_state,
            parent: recording.parent,
            parent_is_remote: recording.parent_is_remote,
            flags: context.trace_flags(),
            name: &recording.name,
            start: otlp::unix_nanos(recording.start),
            end,
            attributes: &recording.attributes,
            failed,
        };
        recording
            .spans
            .queue
            .push(|buf| otlp::encode_span_field(buf, &span));
    }
}

impl Spans {
    /// A server span, child of the trace context in `headers`, sampled by the sampler (which is
    /// not shown the attributes: the standard samplers do not look at them).
    fn start(
        &'static self,
        name: std::borrow::Cow<'static, str>,
        headers: &http::HeaderMap,
        attributes: impl FnOnce(&mut SpanAttributes<'_>),
    ) -> ServerSpan {
        let caller = extract_context(headers);
        let (trace_id, parent, parent_is_remote) = {
            let span = caller.span();
            let parent = span.span_context();
            if parent.is_valid() {
                (parent.trace_id(), parent.span_id(), parent.is_remote())
            } else {
                (ids().new_trace_id(), SpanId::INVALID, false)
            }
        };
        let sampling =
            self.sampler
                .should_sample(Some(&caller), trace_id, &name, &SpanKind::Server, &[], &[]);
        let sampled = sampling.decision == SamplingDecision::RecordAndSample;
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        let context = SpanContext::new(trace_id, ids().new_span_id(), flags, false, sampling.trace_state);
        let recording = sampled.then(|| {
            let mut encoded = Vec::with_capacity(ATTRIBUTE_ROOM);
            attributes(&mut SpanAttributes(&mut encoded));
            for attribute in &sampling.attributes {
                otlp::attribute(&mut encoded, attribute);
            }
            Recording {
                spans: self,
                context: context.clone(),
                parent,
                parent_is_remote,
                name,
                start: std::time::SystemTime::now(),
                attributes: encoded,
            }
        });
        ServerSpan {
            trace_id,
            // Calls made while serving carry this span's context, sampled or not, as the
            // standard tracer's spans do.
            context: Some(caller.with_remote_span_context(context)),
            recording,
        }
    }
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
    let context = opentelemetry::Context::current();
    if context.span().span_context().is_valid() {
        PROPAGATOR.inject_context(&context, &mut MetadataInjector(metadata));
    }
}

/// The header that carries W3C trace context.
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The trace context a caller sent in its HTTP headers or gRPC metadata.
pub fn extract_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    // Most requests carry none; looking for it by a ready-made name is cheaper than asking the
    // propagator, which looks up two headers by their text.
    if !headers.contains_key(&TRACEPARENT) {
        return opentelemetry::Context::current();
    }
    PROPAGATOR.extract(&HeaderExtractor(headers))
}

/// A tonic interceptor that sends the current trace context with every call.
pub fn propagate(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject_context(request.metadata_mut());
    Ok(request)
}

/// Traces every gRPC call a server receives: an OpenTelemetry span named after the method, child
/// of the caller's, and a `tracing` span for the call's log lines. Add it with
/// `Server::builder().layer(GrpcTracing)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTracing;

impl<S> tower::Layer<S> for GrpcTracing {
    type Service = GrpcTraced<S>;

    fn layer(&self, inner: S) -> GrpcTraced<S> {
        GrpcTraced(inner)
    }
}

/// A gRPC service traced by [`GrpcTracing`].
#[derive(Debug, Clone)]
pub struct GrpcTraced<S>(S);

/// gRPC's status code of a call that is cancelled, as one whose answer is dropped unfinished is.
const GRPC_CANCELLED: i64 = 1;

/// The `grpc-status` in headers or trailers.
fn grpc_status(headers: &http::HeaderMap) -> Option<i64> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i64>().ok())
}

/// Ends the span of a gRPC call that ended with `status`.
fn end_grpc_span(span: ServerSpan, status: i64) {
    span.end(status != 0, |attributes| {
        attributes.int(RPC_GRPC_STATUS_CODE, status);
    });
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcTraced<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: http_body::Body + Unpin,
{
    type Response = http::Response<TracedBody<R>>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = ServerSpan::start(
            request.uri().path().to_string(),
            request.headers(),
            |attributes| {
                attributes.string(RPC_SYSTEM, "grpc");
            },
        );
        let log_span = tracing::info_span!(
            "grpc",
            rpc.method = %request.uri().path(),
            trace_id = %span.trace_id()
        );
        let call = self.0.call(request).instrument(log_span);
        Box::pin(async move {
            let result = span.run(call).await;
            match result {
                Ok(response) => {
                    // An error is answered at once, its status in the headers; any other call
                    // sends its status in the trailers, after the answer, so its span ends there.
                    if let Some(status) = grpc_status(response.headers()) {
                        end_grpc_span(span, status);
                        Ok(response.map(|body| TracedBody { body, span: None }))
                    } else {
                        Ok(response.map(|body| TracedBody {
                            body,
                            span: Some(span),
                        }))
                    }
                }
                Err(e) => {
                    end_grpc_span(span, 2);
                    Err(e)
                }
            }
        })
    }
}

/// The answer of a gRPC call traced by [`GrpcTracing`]: it ends the call's span with the status
/// in its trailers, or as cancelled when it is dropped before them (the caller went away).
#[derive(Debug)]
pub struct TracedBody<R> {
    body: R,
    /// The call's span, until the trailers.
    span: Option<ServerSpan>,
}

impl<R: http_body::Body + Unpin> http_body::Body for TracedBody<R> {
    type Data = R::Data;
    type Error = R::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<R::Data>, R::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        let status = match &polled {
            std::task::Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|trailers| grpc_status(trailers).unwrap_or(0)),
            // The answer broke off: no status reached the caller.
            std::task::Poll::Ready(Some(Err(_))) => Some(2),
            // Ended without trailers, which tonic always sends: nothing said it failed.
            std::task::Poll::Ready(None) => Some(0),
            std::task::Poll::Pending => None,
        };
        if let Some(status) = status
            && let Some(span) = this.span.take()
        {
            end_grpc_span(span, status);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<R> Drop for TracedBody<R> {
    fn drop(&mut self) {
        if let Some(span) = self.span.take() {
            end_grpc_span(span, GRPC_CANCELLED);
        }
    }
}

impl std::fmt::Debug for ServerSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSpan")
            .field("trace_id", &self.trace_id)
            .field("sampled", &self.recording.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_a_request_keeps_the_callers_trace_id_or_gets_a_new_one() {
        let mut headers = http::HeaderMap::new();
        let fresh = unexported_trace_id(&headers);
        assert_ne!(fresh, TraceId::INVALID);
        assert_ne!(fresh, unexported_trace_id(&headers));
        let sent = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", sent.parse().unwrap());
        assert_eq!(
            unexported_trace_id(&headers).to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        headers.insert(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_ne!(unexported_trace_id(&headers), TraceId::INVALID);
    }

    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as Attribute, any_value};
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, span, status};
    use prost::Message;

    /// The spans a queue sent, decoded.
    #[derive(Debug, Clone, Default)]
    struct Kept(std::sync::Arc<std::sync::Mutex<Vec<Span>>>);

    impl Kept {
        /// What was exported once `spans` has stopped.
        fn exported(&self, spans: &Spans) -> Vec<Span> {
            spans.queue.stop(std::time::Duration::from_secs(60));
            self.0.lock().unwrap().clone()
        }
    }

    /// Spans sampled by `sampler` and exported into the returned list.
    fn spans(sampler: Sampler) -> (&'static Spans, Kept) {
        let kept = Kept::default();
        let keeping = kept.clone();
        let queue = queue::SpanQueue::start(
            queue::BatchConfig::from_env(|_| None).unwrap(),
            move |bytes: &[u8]| {
                // Span fields of `ScopeSpans`, as they are wrapped to be sent.
                let batch = ScopeSpans::decode(bytes).map_err(|e| e.to_string())?;
                keeping.0.lock().unwrap().extend(batch.spans);
                Ok(())
            },
        )
        .unwrap();
        let spans = Spans { sampler, queue };
        (Box::leak(Box::new(spans)), kept)
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn attribute(key: &str, value: any_value::Value) -> Attribute {
        Attribute {
            key: key.to_string(),
            value: Some(AnyValue { value: Some(value) }),
            ..Attribute::default()
        }
    }

    /// The `traceparent` that calls made while `span` serves carry.
    async fn sent_traceparent(span: &ServerSpan) -> String {
        span.run(async {
            let mut metadata = tonic::metadata::MetadataMap::new();
            inject_context(&mut metadata);
            metadata
                .get("traceparent")
                .map(|value| value.to_str().unwrap().to_string())
                .unwrap_or_default()
        })
        .await
    }

    fn traceparent(value: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", value.parse().unwrap());
        headers
    }

    fn default_sampler() -> Sampler {
        otlp::sampler(|_| None).unwrap()
    }

    #[tokio::test]
    async fn a_request_without_trace_context_is_a_sampled_root_span() {
        let (spans, kept) = spans(default_sampler());
        let span = spans.start("GET /x".into(), &http::HeaderMap::new(), |attributes| {
            attributes.string("http.route", "/x");
        });
        let sent = sent_traceparent(&span).await;
        let trace_id = span.trace_id();
        span.end(true, |attributes| {
            attributes.int("http.response.status_code", 500);
        });

        let exported = kept.exported(spans);
        assert_eq!(exported.len(), 1);
        let data = &exported[0];
        assert_eq!(data.trace_id, trace_id.to_bytes());
        assert_eq!(data.flags & 0xff, 1, "sampled");
        assert!(data.parent_span_id.is_empty());
        assert_eq!(data.kind(), span::SpanKind::Server);
        assert_eq!(data.name, "GET /x");
        assert!(data.end_time_unix_nano >= data.start_time_unix_nano);
        assert!(data.start_time_unix_nano > 0);
        assert_eq!(
            data.attributes,
            vec![
                attribute("http.route", any_value::Value::StringValue("/x".into())),
                attribute("http.response.status_code", any_value::Value::IntValue(500)),
            ]
        );
        assert_eq!(data.status.as_ref().unwrap().code(), status::StatusCode::Error);
        assert_eq!(sent, format!("00-{}-{}-01", trace_id, hex(&data.span_id)));
    }

    #[tokio::test]
    async fn a_request_with_trace_context_continues_its_trace_as_a_child() {
        let (spans, kept) = spans(default_sampler());
        let headers = traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let span = spans.start("GET /x".into(), &headers, |_| {});
        assert_eq!(span.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        span.end(false, |_| {});
        let exported = kept.exported(spans);
        assert_eq!(exported.len(), 1);
        assert_eq!(hex(&exported[0].parent_span_id), "00f067aa0ba902b7");
        assert_eq!(hex(&exported[0].trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        // Flags: the parent is known to be remote.
        assert_eq!(exported[0].flags & 0x300, 0x300);
        assert_eq!(
            exported[0].status.as_ref().unwrap().code(),
            status::StatusCode::Unset
        );
    }

    #[tokio::test]
    async fn spans_the_sampler_drops_are_not_exported_but_their_context_travels() {
        // A caller that did not sample its span: the default sampler follows it.
        let (spans, kept) = spans(default_sampler());
        let headers = traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let span = spans.start("GET /x".into(), &headers, |_| {});
        let sent = sent_traceparent(&span).await;
        assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{sent}");
        assert!(
            sent.ends_with("-00") && !sent.contains("00f067aa0ba902b7"),
            "{sent}"
        );
        span.end(false, |_| {});

        // A sampler that drops everything.
        let (never, kept_never) = spans_never();
        never
            .start("GET /x".into(), &http::HeaderMap::new(), |_| {})
            .end(false, |_| {});
        assert!(kept.exported(spans).is_empty());
        assert!(kept_never.exported(never).is_empty());
    }

    fn spans_never() -> (&'static Spans, Kept) {
        spans(
            otlp::sampler(|name| (name == "OTEL_TRACES_SAMPLER").then(|| "always_off".to_string())).unwrap(),
        )
    }

    /// The frames of a test answer.
    type Frames = futures::stream::Iter<
        std::vec::IntoIter<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>>,
    >;

    /// A gRPC answer: a message, then trailers with `status` when given.
    fn grpc_answer(status: Option<&str>) -> http_body_util::StreamBody<Frames> {
        let mut frames = vec![Ok(http_body::Frame::data(bytes::Bytes::from_static(b"message")))];
        if let Some(status) = status {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", status.parse().unwrap());
            frames.push(Ok(http_body::Frame::trailers(trailers)));
        }
        http_body_util::StreamBody::new(futures::stream::iter(frames))
    }

    fn grpc_status_of(span: &Span) -> Option<i64> {
        span.attributes
            .iter()
            .find(|attribute| attribute.key == RPC_GRPC_STATUS_CODE)
            .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
                any_value::Value::IntValue(code) => Some(*code),
                _ => None,
            })
    }

    #[tokio::test]
    async fn a_grpc_span_ends_with_the_status_in_the_trailers_or_as_cancelled() {
        use http_body_util::BodyExt;

        let (spans, kept) = spans(default_sampler());
        // Answered in full: the status is the trailers'.
        let span = spans.start("/s/Fails".into(), &http::HeaderMap::new(), |_| {});
        let body = TracedBody {
            body: grpc_answer(Some("13")),
            span: Some(span),
        };
        let answer = body.collect().await.unwrap();
        assert_eq!(grpc_status(answer.trailers().unwrap()), Some(13));
        // Dropped after the message, before the trailers: the caller went away.
        let span = spans.start("/s/Streams".into(), &http::HeaderMap::new(), |_| {});
        let mut body = TracedBody {
            body: grpc_answer(Some("0")),
            span: Some(span),
        };
        assert!(body.frame().await.unwrap().unwrap().is_data());
        drop(body);
        // Ended without trailers.
        let span = spans.start("/s/Ends".into(), &http::HeaderMap::new(), |_| {});
        let body = TracedBody {
            body: grpc_answer(None),
            span: Some(span),
        };
        body.collect().await.unwrap();

        let exported = kept.exported(spans);
        let ended: Vec<(&str, Option<i64>, status::StatusCode)> = exported
            .iter()
            .map(|span| {
                let code = span.status.as_ref().unwrap().code();
                (span.name.as_str(), grpc_status_of(span), code)
            })
            .collect();
        assert_eq!(
            ended,
            vec![
                ("/s/Fails", Some(13), status::StatusCode::Error),
                ("/s/Streams", Some(GRPC_CANCELLED), status::StatusCode::Error),
                ("/s/Ends", Some(0), status::StatusCode::Unset),
            ]
        );
    }

    #[test]
    fn samplers_are_named_by_the_standard_variables() {
        let sampler = |name: &str, arg: &str| {
            otlp::sampler(|variable| match variable {
                "OTEL_TRACES_SAMPLER" => Some(name.to_string()),
                "OTEL_TRACES_SAMPLER_ARG" => Some(arg.to_string()),
                _ => None,
            })
        };
        let decision = |sampler: &Sampler, trace: u128| {
            sampler
                .should_sample(None, TraceId::from(trace), "x", &SpanKind::Server, &[], &[])
                .decision
        };
        assert_eq!(
            decision(&sampler("always_off", "").unwrap(), 1),
            SamplingDecision::Drop
        );
        assert_eq!(
            decision(&sampler("always_on", "").unwrap(), 1),
            SamplingDecision::RecordAndSample
        );
        let half = sampler("parentbased_traceidratio", "0.5").unwrap();
        assert_eq!(decision(&half, 1), SamplingDecision::RecordAndSample);
        assert_eq!(decision(&half, u128::MAX), SamplingDecision::Drop);
        assert!(sampler("traceidratio", "2").unwrap_err().contains("'2'"));
        assert!(sampler("traceidratio", "most").unwrap_err().contains("'most'"));
        assert!(
            sampler("jaeger_remote", "")
                .unwrap_err()
                .contains("'jaeger_remote'")
        );
    }
}
