//! OTLP/gRPC export: the sender of spans, where it sends them (from the standard
//! `OTEL_EXPORTER_OTLP_*` variables) and the protobuf encoding of spans; and the periodic export
//! of metrics from the one aggregation that also serves `/metrics`.
//!
//! The OpenTelemetry OTLP crate exports a batch by cloning it, converting every span into
//! generated protobuf structs, and letting prost size each nested message once per level of
//! nesting. Profiled under load, that was three quarters of what tracing a request cost. Here
//! each span is written as protobuf bytes in one pass when it ends ([`encode_span_field`]), and a
//! batch is those bytes side by side in an [`Envelope`]; the tests decode them with the generated
//! protobuf types and check them against the OTLP crate's own conversion.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, Temporality};
use opentelemetry_sdk::trace::Sampler;

/// A metric reader that can be handed to the meter provider and still be read from elsewhere:
/// metrics are exported over OTLP from the same aggregation as `/metrics`.
#[derive(Debug, Clone)]
pub(super) struct SharedReader(Arc<dyn MetricReader>);

impl SharedReader {
    pub fn new(reader: impl MetricReader) -> Self {
        Self(Arc::new(reader))
    }
}

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<opentelemetry_sdk::metrics::Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, metrics: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(metrics)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// The sampler `OTEL_TRACES_SAMPLER` (with `OTEL_TRACES_SAMPLER_ARG`) names; by default each span
/// is sampled when its parent is, or always when it has none.
pub(super) fn sampler(var: impl Fn(&str) -> Option<String>) -> Result<Sampler, String> {
    let name = var("OTEL_TRACES_SAMPLER").unwrap_or_default();
    let ratio = || -> Result<f64, String> {
        match var("OTEL_TRACES_SAMPLER_ARG").filter(|arg| !arg.trim().is_empty()) {
            None => Ok(1.0),
            Some(arg) => arg
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|ratio| (0.0..=1.0).contains(ratio))
                .ok_or_else(|| format!("OTEL_TRACES_SAMPLER_ARG is '{arg}', not a ratio from 0 to 1")),
        }
    };
    let parent_based = |root: Sampler| Sampler::ParentBased(Box::new(root));
    Ok(match name.trim() {
        "" | "parentbased_always_on" => parent_based(Sampler::AlwaysOn),
        "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
        "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatioBased(ratio()?)),
        "always_on" => Sampler::AlwaysOn,
        "always_off" => Sampler::AlwaysOff,
        "traceidratio" => Sampler::TraceIdRatioBased(ratio()?),
        other => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER is '{other}'; known samplers are always_on, always_off, \
                 traceidratio, parentbased_always_on, parentbased_always_off and parentbased_traceidratio"
            ));
        }
    })
}

/// How often metrics are exported: `OTEL_METRIC_EXPORT_INTERVAL` milliseconds, a minute if unset.
pub(super) fn metric_export_interval(var: impl Fn(&str) -> Option<String>) -> Result<Duration, String> {
    const VARIABLE: &str = "OTEL_METRIC_EXPORT_INTERVAL";
    match var(VARIABLE).filter(|value| !value.trim().is_empty()) {
        None => Ok(Duration::from_secs(60)),
        Some(ms) => match ms.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(format!(
                "{VARIABLE} is '{ms}', not a positive number of milliseconds"
            )),
        },
    }
}

/// Exports the metrics of a reader at an interval, and a last time when dropped, from a thread of
/// its own (the exporter's connection runs on the Tokio runtime it was made in).
pub(super) struct MetricExport {
    stop: Option<std::sync::mpsc::Sender<()>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl MetricExport {
    pub fn start(
        reader: SharedReader,
        exporter: impl PushMetricExporter,
        interval: Duration,
    ) -> Result<Self, String> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (finished, done) = std::sync::mpsc::channel::<()>();
        let export = move || {
            let mut metrics = ResourceMetrics::default();
            if let Err(e) = reader.collect(&mut metrics) {
                tracing::warn!("cannot collect metrics for OTLP: {e}");
                return;
            }
            if let Err(e) = futures::executor::block_on(exporter.export(&metrics)) {
                tracing::warn!("OTLP metric export failed: {e}");
            }
        };
        std::thread::Builder::new()
            .name("otlp-metrics".into())
            .spawn(move || {
                // Until dropped (a message or a closed channel), then once more.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    export();
                }
                export();
                let _ = finished.send(());
            })
            .map_err(|e| format!("Cannot start the OTLP metric export: {e}"))?;
        Ok(Self {
            stop: Some(stop),
            done,
        })
    }
}

impl Drop for MetricExport {
    fn drop(&mut self) {
        drop(self.stop.take());
        let _ = self.done.recv_timeout(super::LAST_EXPORT_WAIT);
    }
}

/// The gRPC method spans are exported with.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// A header sent with every export.
type Header = (
    tonic::metadata::MetadataKey<tonic::metadata::Ascii>,
    tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
);

/// Where and how spans are exported, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ExportConfig {
    pub endpoint: String,
    pub headers: Vec<Header>,
    pub timeout: Duration,
}

impl ExportConfig {
    /// Reads the standard variables: the `OTEL_EXPORTER_OTLP_TRACES_*` one of each setting, else
    /// the `OTEL_EXPORTER_OTLP_*` one, else the default. Errors name the variable and its value.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let setting = |name: &str| {
            let traces = format!("OTEL_EXPORTER_OTLP_TRACES_{name}");
            let general = format!("OTEL_EXPORTER_OTLP_{name}");
            [traces, general].into_iter().find_map(|variable| {
                var(&variable)
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (variable, v))
            })
        };

        let endpoint = setting("ENDPOINT").map_or_else(|| "http://localhost:4317".to_string(), |(_, v)| v);
        let uri = endpoint
            .parse::<http::Uri>()
            .map_err(|e| format!("OTLP endpoint '{endpoint}' is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "OTLP endpoint '{endpoint}' needs TLS, which this build does not export with; \
                     use an http:// endpoint (a collector beside the service)"
                ));
            }
            _ => return Err(format!("OTLP endpoint '{endpoint}' must start with http://")),
        }

        if let Some((variable, protocol)) = setting("PROTOCOL").filter(|(_, v)| v.trim() != "grpc") {
            return Err(format!(
                "{variable} is '{protocol}'; spans and metrics are exported over OTLP/gRPC only ('grpc')"
            ));
        }
        if let Some((variable, compression)) = setting("COMPRESSION").filter(|(_, v)| v.trim() != "none") {
            return Err(format!("{variable} is '{compression}'; only 'none' is supported"));
        }

        let timeout = match setting("TIMEOUT") {
            None => Duration::from_secs(10),
            Some((variable, ms)) => ms
                .trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{variable} is '{ms}', not a number of milliseconds"))?,
        };

        // Headers of both variables apply; the traces one wins for a name in both.
        let mut headers: Vec<Header> = Vec::new();
        for variable in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            for (name, value) in parse_headers(variable, var(variable).as_deref().unwrap_or(""))? {
                headers.retain(|(known, _)| *known != name);
                headers.push((name, value));
            }
        }
        Ok(Self {
            endpoint,
            headers,
            timeout,
        })
    }
}

/// Parses `name=value,name=value` (values percent-encoded) into gRPC headers.
fn parse_headers(variable: &str, text: &str) -> Result<Vec<Header>, String> {
    let mut headers = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|pair| !pair.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("{variable} has '{pair}', which is not name=value"));
        };
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| format!("{variable} has '{pair}', whose value is not UTF-8 once decoded"))?;
        let invalid = || format!("{variable} has '{pair}', which is not a valid gRPC header");
        let name = tonic::metadata::MetadataKey::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| invalid())?;
        let value = tonic::metadata::MetadataValue::try_from(value.as_ref()).map_err(|_| invalid())?;
        headers.push((name, value));
    }
    Ok(headers)
}

/// Sends batches of encoded spans to an OTLP/gRPC collector. Made inside a Tokio runtime, which
/// drives its connection; the export thread calls it.
#[derive(Debug)]
pub(super) struct OtlpSpanSender {
    client: tonic::client::Grpc<tonic::transport::Channel>,
    metadata: tonic::metadata::MetadataMap,
    envelope: Envelope,
}

impl OtlpSpanSender {
    /// A sender of the spans of `scope` in `resource`, to where `config` says.
    pub fn new(
        config: &ExportConfig,
        resource: &Resource,
        scope: &InstrumentationScope,
    ) -> Result<Self, String> {
        let channel = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
            .map_err(|e| format!("OTLP endpoint '{}' is invalid: {e}", config.endpoint))?
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .connect_lazy();
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (name, value) in &config.headers {
            metadata.insert(name.clone(), value.clone());
        }
        Ok(Self {
            client: tonic::client::Grpc::new(channel),
            metadata,
            envelope: Envelope::new(resource, scope),
        })
    }

    /// Sends `spans`, span fields of a `ScopeSpans` as [`encode_span_field`] writes them, and
    /// waits for the collector's answer.
    pub fn send(&self, spans: &[u8]) -> Result<(), String> {
        let mut body = Vec::with_capacity(spans.len() + self.envelope.size() + 12);
        self.envelope.wrap(&mut body, spans);
        futures::executor::block_on(self.export(body))
    }

    async fn export(&self, body: Vec<u8>) -> Result<(), String> {
        let mut client = self.client.clone();
        client
            .ready()
            .await
            .map_err(|e| format!("OTLP collector unreachable: {e}"))?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
        let response = client
            .unary(request, path, EncodedCodec)
            .await
            .map_err(|status| format!("OTLP export failed: {status}"))?;
        match response.into_inner().partial_success {
            Some(partial) if partial.rejected_spans > 0 => Err(format!(
                "the OTLP collector rejected {} spans: {}",
                partial.rejected_spans, partial.error_message
            )),
            _ => Ok(()),
        }
    }
}

/// Sends bytes already encoded and decodes the collector's answer.
struct EncodedCodec;

impl tonic::codec::Codec for EncodedCodec {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl tonic::codec::Encoder for EncodedCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for EncodedCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        prost::Message::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("the OTLP collector's answer is not readable: {e}")))
    }
}

/// What surrounds the spans of a process in an `ExportTraceServiceRequest`: the resource and
/// the instrumentation scope, encoded once.
#[derive(Debug, Clone)]
pub(super) struct Envelope {
    /// `ResourceSpans.resource`, with its tag.
    resource: Vec<u8>,
    /// `ResourceSpans.schema_url`, with its tag.
    resource_schema: Vec<u8>,
    /// `ScopeSpans.scope`, with its tag.
    scope: Vec<u8>,
    /// `ScopeSpans.schema_url`, with its tag.
    scope_schema: Vec<u8>,
}

impl Envelope {
    pub fn new(resource: &Resource, scope: &InstrumentationScope) -> Self {
        let mut encoded = Self {
            resource: Vec::new(),
            resource_schema: Vec::new(),
            scope: Vec::new(),
            scope_schema: Vec::new(),
        };
        message(&mut encoded.resource, 1, |buf| {
            for (key, value) in resource.iter() {
                key_value(buf, 1, key.as_str(), value);
            }
        });
        string(
            &mut encoded.resource_schema,
            3,
            resource.schema_url().unwrap_or_default(),
        );
        message(&mut encoded.scope, 1, |buf| {
            string(buf, 1, scope.name());
            string(buf, 2, scope.version().unwrap_or_default());
            for attribute in scope.attributes() {
                attribute_field(buf, 3, attribute);
            }
        });
        string(
            &mut encoded.scope_schema,
            3,
            scope.schema_url().unwrap_or_default(),
        );
        encoded
    }

    /// The bytes it adds to the spans, but for the two lengths.
    fn size(&self) -> usize {
        self.resource.len() + self.resource_schema.len() + self.scope.len() + self.scope_schema.len()
    }

    /// Appends to `buf` an `ExportTraceServiceRequest` of one `ResourceSpans` with one
    /// `ScopeSpans`, whose spans are `spans`: span fields as [`encode_span_field`] writes them.
    pub fn wrap(&self, buf: &mut Vec<u8>, spans: &[u8]) {
        let scope_spans = self.scope.len() + spans.len() + self.scope_schema.len();
        let (scope_spans_length, scope_spans_length_size) = varint_bytes(scope_spans as u64);
        let resource_spans =
            self.resource.len() + 1 + scope_spans_length_size + scope_spans + self.resource_schema.len();
        // ExportTraceServiceRequest.resource_spans
        tag(buf, 1, WIRE_LEN);
        varint(buf, resource_spans as u64);
        buf.extend_from_slice(&self.resource);
        // ResourceSpans.scope_spans
        tag(buf, 2, WIRE_LEN);
        buf.extend_from_slice(&scope_spans_length[..scope_spans_length_size]);
        buf.extend_from_slice(&self.scope);
        buf.extend_from_slice(spans);
        buf.extend_from_slice(&self.scope_schema);
        buf.extend_from_slice(&self.resource_schema);
    }
}

/// A server span as it ended: what [`encode_span_field`] writes.
#[derive(Debug, Clone)]
pub(super) struct SpanRecord<'a> {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The W3C `tracestate` it carries; empty for none.
    pub trace_state: &'a str,
    /// [`SpanId::INVALID`] for a span without a parent.
    pub parent: SpanId,
    pub parent_is_remote: bool,
    pub flags: TraceFlags,
    pub name: &'a str,
    /// Nanoseconds since the Unix epoch.
    pub start: u64,
    pub end: u64,
    /// The attributes: `Span.attributes` fields, as [`string_attribute`] and [`int_attribute`]
    /// write them.
    pub attributes: &'a [u8],
    pub failed: bool,
}

/// Appends `span` to `buf` as an OTLP `Span` in a field of `ScopeSpans` (`spans`, a repeated
/// field, so encoded spans can be put side by side and wrapped later by [`Envelope::wrap`]).
/// The span is a server span, with a status and no events or links.
pub(super) fn encode_span_field(buf: &mut Vec<u8>, span: &SpanRecord<'_>) {
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    const SERVER: u64 = 2;
    const STATUS_ERROR: u64 = 2;
    let has_parent = span.parent != SpanId::INVALID;
    // The span's size, field by field in the order they are written, so that its length goes
    // first and nothing is moved.
    let status = if span.failed { 2 } else { 0 };
    let size = 18
        + 10
        + if span.trace_state.is_empty() {
            0
        } else {
            text_size(span.trace_state)
        }
        + if has_parent { 10 } else { 0 }
        + 6
        + text_size(span.name)
        + 2
        + 9
        + 9
        + span.attributes.len()
        + 2
        + status;
    let start = buf.len();
    tag(buf, 2, WIRE_LEN);
    varint(buf, size as u64);
    let body = buf.len();
    text_field_bytes(buf, 1, &span.trace_id.to_bytes());
    text_field_bytes(buf, 2, &span.span_id.to_bytes());
    string(buf, 3, span.trace_state);
    if has_parent {
        text_field_bytes(buf, 4, &span.parent.to_bytes());
    }
    let remote = if span.parent_is_remote { IS_REMOTE } else { 0 };
    tag(buf, 16, WIRE_FIXED32);
    buf.extend_from_slice(&(u32::from(span.flags.to_u8()) | HAS_IS_REMOTE | remote).to_le_bytes());
    text_field(buf, 5, span.name);
    tag(buf, 6, WIRE_VARINT);
    varint(buf, SERVER);
    tag(buf, 7, WIRE_FIXED64);
    buf.extend_from_slice(&span.start.to_le_bytes());
    tag(buf, 8, WIRE_FIXED64);
    buf.extend_from_slice(&span.end.to_le_bytes());
    buf.extend_from_slice(span.attributes);
    // Status: the code alone (unset is the default, left out).
    tag(buf, 15, WIRE_LEN);
    varint(buf, status as u64);
    if span.failed {
        tag(buf, 3, WIRE_VARINT);
        varint(buf, STATUS_ERROR);
    }
    debug_assert_eq!(buf.len() - body, size, "span at {start} sized wrongly");
}

/// Nanoseconds since the Unix epoch (0 before it).
pub(super) fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// Appends a string attribute: a `KeyValue` in `Span.attributes`.
pub(super) fn string_attribute(buf: &mut Vec<u8>, key: &str, value: &str) {
    let any_value = text_size(value);
    key_value_head(buf, key, any_value);
    text_field(buf, 1, value);
}

/// Appends an integer attribute: a `KeyValue` in `Span.attributes`.
pub(super) fn int_attribute(buf: &mut Vec<u8>, key: &str, value: i64) {
    // int64 is written as its two's complement, ten bytes when negative.
    let value = value as u64;
    let any_value = 1 + varint_size(value);
    key_value_head(buf, key, any_value);
    tag(buf, 3, WIRE_VARINT);
    varint(buf, value);
}

/// The start of a `KeyValue` in `Span.attributes` whose `AnyValue` is `any_value` bytes long:
/// all of it but the value's fields.
fn key_value_head(buf: &mut Vec<u8>, key: &str, any_value: usize) {
    let key_value = text_size(key) + 1 + varint_size(any_value as u64) + any_value;
    tag(buf, 9, WIRE_LEN);
    varint(buf, key_value as u64);
    text_field(buf, 1, key);
    tag(buf, 2, WIRE_LEN);
    varint(buf, any_value as u64);
}

/// The size of a string field numbered below 16, written even when empty.
fn text_size(text: &str) -> usize {
    1 + varint_size(text.len() as u64) + text.len()
}

fn varint_size(value: u64) -> usize {
    // Seven bits a byte; zero takes one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
fn attribute_field(buf: &mut Vec<u8>, field: u32, attribute: &KeyValue) {
    key_value(buf, field, attribute.key.as_str(), &attribute.value);
}

/// Appends an attribute of any kind of value: a `KeyValue` in `Span.attributes`.
pub(super) fn attribute(buf: &mut Vec<u8>, attribute: &KeyValue) {
    attribute_field(buf, 9, attribute);
}

/// A `KeyValue` message in `field`.
#[inline]
fn key_value(buf: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    message(buf, field, |buf| {
        string(buf, 1, key);
        message(buf, 2, |buf| any_value(buf, value));
    });
}

/// The fields of an `AnyValue`: exactly one, written even when it holds a default value.
fn any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(text) => text_field(buf, 1, text.as_str()),
        Value::Bool(flag) => {
            tag(buf, 2, WIRE_VARINT);
            varint(buf, u64::from(*flag));
        }
        Value::I64(number) => {
            tag(buf, 3, WIRE_VARINT);
            // int64 is written as its two's complement, ten bytes when negative.
            varint(buf, *number as u64);
        }
        Value::F64(number) => {
            tag(buf, 4, WIRE_FIXED64);
            buf.extend_from_slice(&number.to_bits().to_le_bytes());
        }
        Value::Array(array) => message(buf, 5, |buf| array_values(buf, array)),
        // Kinds of value added to the API later are sent as their text.
        other => text_field(buf, 1, &other.to_string()),
    }
}

/// The `values` of an `ArrayValue`.
fn array_values(buf: &mut Vec<u8>, array: &Array) {
    match array {
        Array::Bool(items) => items
            .iter()
            .for_each(|item| message(buf, 1, |buf| any_value(buf, &Value::Bool(*item)))),
        Array::I64(items) => items
            .iter()
            .for_each(|item| message(buf, 1, |buf| any_value(buf, &Value::I64(*item)))),
        Array::F64(items) => items
            .iter()
            .for_each(|item| message(buf, 1, |buf| any_value(buf, &Value::F64(*item)))),
        Array::String(items) => items
            .iter()
            .for_each(|item| message(buf, 1, |buf| text_field(buf, 1, item.as_str()))),
        other => message(buf, 1, |buf| text_field(buf, 1, &other.to_string())),
    }
}

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_FIXED32: u8 = 5;

/// The bytes of a varint: seven bits a byte, least significant first.
fn varint_bytes(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut size = 0;
    while value >= 0x80 {
        bytes[size] = (value as u8 & 0x7f) | 0x80;
        value >>= 7;
        size += 1;
    }
    bytes[size] = value as u8;
    (bytes, size + 1)
}

#[inline]
fn varint(buf: &mut Vec<u8>, value: u64) {
    // Tags and most lengths and counts fit in one byte.
    if value < 0x80 {
        buf.push(value as u8);
    } else {
        let (bytes, size) = varint_bytes(value);
        buf.extend_from_slice(&bytes[..size]);
    }
}

#[inline]
fn tag(buf: &mut Vec<u8>, field: u32, wire: u8) {
    varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

/// A string field; proto3 leaves out the empty string.
#[inline]
fn string(buf: &mut Vec<u8>, field: u32, text: &str) {
    if !text.is_empty() {
        text_field(buf, field, text);
    }
}

/// A string field written even when empty (a member of a `oneof`).
#[inline]
fn text_field(buf: &mut Vec<u8>, field: u32, text: &str) {
    text_field_bytes(buf, field, text.as_bytes());
}

#[inline]
fn text_field_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    tag(buf, field, WIRE_LEN);
    varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A message field whose fields `body` writes. Its length goes before it: one byte is kept for
/// it, and the body is moved along only when its length needs more.
#[inline]
fn message(buf: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(buf, field, WIRE_LEN);
    let at = buf.len();
    buf.push(0);
    body(buf);
    let length = buf.len() - at - 1;
    if length < 0x80 {
        buf[at] = length as u8;
    } else {
        let (prefix, size) = varint_bytes(length as u64);
        buf.splice(at..=at, prefix[..size].iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::HashMap;

    use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceState};
    use opentelemetry::{KeyValue, StringValue};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{self as proto_common, AnyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
    use opentelemetry_proto::tonic::trace::v1::{
        self as proto_trace, ResourceSpans, ScopeSpans, span, status,
    };
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    /// A span as a test ends it: what a `SpanRecord` borrows.
    #[derive(Debug, Clone)]
    struct Ended {
        trace: u128,
        id: u64,
        state: String,
        parent: u64,
        parent_is_remote: bool,
        sampled: bool,
        name: String,
        start: u64,
        end: u64,
        attributes: Vec<(String, Attribute)>,
        failed: bool,
    }

    #[derive(Debug, Clone)]
    enum Attribute {
        Text(String),
        Int(i64),
    }

    fn request_span() -> Ended {
        Ended {
            trace: 7,
            id: 9,
            state: String::new(),
            parent: 0,
            parent_is_remote: false,
            sampled: true,
            name: "GET /api/v1/b/{bucket}/{entry}".into(),
            start: 1_700_000_000_000_000_000,
            end: 1_700_000_000_000_450_000,
            attributes: vec![
                (
                    "http.route".into(),
                    Attribute::Text("/api/v1/b/{bucket}/{entry}".into()),
                ),
                ("http.response.status_code".into(), Attribute::Int(200)),
            ],
            failed: false,
        }
    }

    /// What a collector decodes from the spans sent as `resource` and `scope`.
    fn sent(resource: &Resource, scope: &InstrumentationScope, spans: &[Ended]) -> ExportTraceServiceRequest {
        let mut fields = Vec::new();
        for ended in spans {
            let mut attributes = Vec::new();
            for (key, value) in &ended.attributes {
                match value {
                    Attribute::Text(text) => string_attribute(&mut attributes, key, text),
                    Attribute::Int(number) => int_attribute(&mut attributes, key, *number),
                }
            }
            let flags = if ended.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let record = SpanRecord {
                trace_id: TraceId::from(ended.trace),
                span_id: SpanId::from(ended.id),
                trace_state: &ended.state,
                parent: SpanId::from(ended.parent),
                parent_is_remote: ended.parent_is_remote,
                flags,
                name: &ended.name,
                start: ended.start,
                end: ended.end,
                attributes: &attributes,
                failed: ended.failed,
            };
            encode_span_field(&mut fields, &record);
        }
        let mut encoded = Vec::new();
        Envelope::new(resource, scope).wrap(&mut encoded, &fields);
        ExportTraceServiceRequest::decode(encoded.as_slice()).expect("the encoding is valid protobuf")
    }

    /// What they should decode to, in the generated types.
    fn expected(
        resource: &Resource,
        scope: &InstrumentationScope,
        spans: &[Ended],
    ) -> ExportTraceServiceRequest {
        let resource_attributes = ResourceAttributesWithSchema::from(resource);
        let spans = spans
            .iter()
            .map(|ended| proto_trace::Span {
                trace_id: ended.trace.to_be_bytes().to_vec(),
                span_id: ended.id.to_be_bytes().to_vec(),
                trace_state: ended.state.clone(),
                parent_span_id: if ended.parent == 0 {
                    Vec::new()
                } else {
                    ended.parent.to_be_bytes().to_vec()
                },
                flags: u32::from(ended.sampled) | 0x100 | if ended.parent_is_remote { 0x200 } else { 0 },
                name: ended.name.clone(),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: ended.start,
                end_time_unix_nano: ended.end,
                attributes: ended
                    .attributes
                    .iter()
                    .map(|(key, value)| proto_common::KeyValue {
                        key: key.clone(),
                        value: Some(AnyValue {
                            value: Some(match value {
                                Attribute::Text(text) => any_value::Value::StringValue(text.clone()),
                                Attribute::Int(number) => any_value::Value::IntValue(*number),
                            }),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                status: Some(proto_trace::Status {
                    code: if ended.failed {
                        status::StatusCode::Error as i32
                    } else {
                        status::StatusCode::Unset as i32
                    },
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(ProtoResource {
                    attributes: resource_attributes.attributes.0,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(proto_common::InstrumentationScope::from((scope, None))),
                    spans,
                    schema_url: scope.schema_url().unwrap_or_default().to_string(),
                }],
                schema_url: resource_attributes.schema_url.unwrap_or_default(),
            }],
        }
    }

    #[test]
    fn a_request_span_is_sent_as_the_otlp_crate_sends_it() {
        let resource = Resource::builder_empty().with_service_name("gateway").build();
        let scope = InstrumentationScope::builder("gateway").build();
        let ended = request_span();
        // The same span as the SDK's span data, converted by the OTLP crate.
        let data = SpanData {
            span_context: SpanContext::new(
                TraceId::from(ended.trace),
                SpanId::from(ended.id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: Cow::Owned(ended.name.clone()),
            start_time: UNIX_EPOCH + Duration::from_nanos(ended.start),
            end_time: UNIX_EPOCH + Duration::from_nanos(ended.end),
            attributes: vec![
                KeyValue::new("http.route", "/api/v1/b/{bucket}/{entry}"),
                KeyValue::new("http.response.status_code", 200),
            ],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: scope.clone(),
        };
        let reference = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                vec![data],
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(sent(&resource, &scope, &[ended]), reference);
    }

    #[test]
    fn every_field_and_long_values_decode_as_written() {
        let resource = Resource::builder_empty()
            .with_schema_url(
                [
                    KeyValue::new("service.name", "storage-node"),
                    KeyValue::new("flag", true),
                    KeyValue::new("ratio", 0.25),
                    KeyValue::new("numbers", Value::Array(Array::I64(vec![i64::MIN, 0, i64::MAX]))),
                    KeyValue::new(
                        "names",
                        Value::Array(Array::String(vec![StringValue::from(""), "a".into()])),
                    ),
                ],
                "https://example.com/schema",
            )
            .build();
        let scope = InstrumentationScope::builder("storage-node")
            .with_version("1.2.3")
            .with_schema_url("https://example.com/scope")
            .with_attributes([KeyValue::new("scope.flag", true)])
            .build();
        let long = "x".repeat(20_000);
        let full = Ended {
            trace: u128::MAX,
            id: u64::MAX,
            state: "vendor=opaque,other=1".into(),
            parent: 3,
            parent_is_remote: true,
            sampled: false,
            name: long.clone(),
            start: 0,
            end: u64::MAX,
            attributes: vec![
                (String::new(), Attribute::Text(String::new())),
                ("long".into(), Attribute::Text(long.clone())),
                (long, Attribute::Int(-1)),
                ("zero".into(), Attribute::Int(0)),
                ("max".into(), Attribute::Int(i64::MAX)),
                ("min".into(), Attribute::Int(i64::MIN)),
                ("unicode".into(), Attribute::Text("żółw 🐢".into())),
            ],
            failed: true,
        };
        let bare = Ended {
            name: String::new(),
            attributes: Vec::new(),
            ..request_span()
        };
        let spans = [full, bare, request_span()];
        assert_eq!(
            sent(&resource, &scope, &spans),
            expected(&resource, &scope, &spans)
        );
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            vec(any::<char>(), 0..12).prop_map(String::from_iter),
            vec(any::<char>(), 100..300).prop_map(String::from_iter),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let float = prop_oneof![Just(0.0), -1e9..1e9_f64];
        prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::I64),
            float.clone().prop_map(Value::F64),
            text().prop_map(Value::from),
            vec(any::<bool>(), 0..4).prop_map(|items| Value::Array(Array::Bool(items))),
            vec(any::<i64>(), 0..4).prop_map(|items| Value::Array(Array::I64(items))),
            vec(float, 0..4).prop_map(|items| Value::Array(Array::F64(items))),
            vec(text(), 0..4).prop_map(|items| Value::Array(Array::String(
                items.into_iter().map(StringValue::from).collect()
            ))),
        ]
    }

    fn resource_attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        vec(
            (text(), value()).prop_map(|(key, value)| KeyValue::new(key, value)),
            0..6,
        )
    }

    fn span_attributes() -> impl Strategy<Value = Vec<(String, Attribute)>> {
        let attribute = prop_oneof![
            text().prop_map(Attribute::Text),
            any::<i64>().prop_map(Attribute::Int)
        ];
        vec((text(), attribute), 0..8)
    }

    fn arbitrary_span() -> impl Strategy<Value = Ended> {
        let ids = (any::<u128>(), any::<u64>(), any::<u64>());
        let flags = (any::<bool>(), any::<bool>(), any::<bool>());
        let state = prop_oneof![Just(String::new()), "[a-z]{1,8}=[a-z0-9]{1,8}"];
        (
            ids,
            flags,
            state,
            text(),
            (any::<u64>(), any::<u64>()),
            span_attributes(),
        )
            .prop_map(
                |(
                    (trace, id, parent),
                    (parent_is_remote, sampled, failed),
                    state,
                    name,
                    times,
                    attributes,
                )| Ended {
                    trace,
                    id,
                    state,
                    parent,
                    parent_is_remote,
                    sampled,
                    name,
                    start: times.0,
                    end: times.1,
                    attributes,
                    failed,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn any_spans_decode_as_written(
            spans in vec(arbitrary_span(), 1..6),
            attributes in resource_attributes(),
            scope_version in text(),
        ) {
            let resource = Resource::builder_empty().with_attributes(attributes).build();
            let scope = InstrumentationScope::builder("b").with_version(scope_version).build();
            prop_assert_eq!(sent(&resource, &scope, &spans), expected(&resource, &scope, &spans));
        }
    }

    fn config(vars: &[(&str, &str)]) -> Result<ExportConfig, String> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ExportConfig::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_export_settings_come_from_the_standard_variables() {
        let defaults = config(&[]).unwrap();
        assert_eq!(defaults.endpoint, "http://localhost:4317");
        assert_eq!(defaults.timeout, Duration::from_secs(10));
        assert!(defaults.headers.is_empty());

        let set = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20abc, tenant = one",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "tenant=two"),
        ])
        .unwrap();
        assert_eq!(set.endpoint, "http://traces:4317");
        assert_eq!(set.timeout, Duration::from_millis(2500));
        let headers: Vec<(&str, &str)> = set
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        assert_eq!(headers, vec![("authorization", "Bearer abc"), ("tenant", "two")]);
        assert_eq!(
            config(&[
                ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "100"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "9")
            ])
            .unwrap()
            .timeout,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn bad_export_settings_are_refused_by_name_and_value() {
        // A variable and its value, and what the message must name.
        let cases: [(&str, &str, &[&str]); 7] = [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector:4317",
                &["https://collector:4317", "TLS"],
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "collector:4317",
                &["collector:4317"],
            ),
            (
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                "soon",
                &["OTEL_EXPORTER_OTLP_TIMEOUT", "soon"],
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "http/protobuf",
                &["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"],
            ),
            (
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "gzip",
                &["OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"],
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "novalue",
                &["OTEL_EXPORTER_OTLP_HEADERS", "novalue"],
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "bad key=1", &["bad key=1"]),
        ];
        for (variable, value, names) in cases {
            let message = config(&[(variable, value)]).unwrap_err();
            for name in names {
                assert!(message.contains(name), "'{message}' does not name {name}");
            }
        }
    }
}
