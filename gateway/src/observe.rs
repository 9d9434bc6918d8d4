//! A span and metrics for every HTTP request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use tracing::Instrument;
use tracing::field::Empty;

pub struct HttpMetrics {
    requests: Counter<u64>,
    duration: Histogram<f64>,
}

impl HttpMetrics {
    /// Instruments of the current global meter provider (no-ops before telemetry is set up).
    pub fn new() -> Arc<Self> {
        let meter = opentelemetry::global::meter("gateway");
        Arc::new(HttpMetrics {
            requests: meter
                .u64_counter("reduct_http_requests")
                .with_description("HTTP requests by route, method and status")
                .build(),
            duration: meter
                .f64_histogram("reduct_http_request_duration")
                .with_unit("s")
                .with_boundaries(proto::telemetry::seconds_buckets())
                .with_description("Time to answer an HTTP request, up to the response headers")
                .build(),
        })
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub async fn observe(
    State(metrics): State<Arc<HttpMetrics>>,
    route: MatchedPath,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let route = route.as_str().to_string();
    let method = request.method().to_string();
    let param = |key: &str| {
        params
            .iter()
            .find(|(name, _)| *name == key)
            .map_or("", |(_, value)| value)
    };
    // Fields known now are given at once: each later `record` formats the span's fields again.
    let exporting = proto::telemetry::exporting();
    let trace_id =
        (!exporting).then(|| proto::telemetry::request_trace_id(&tracing::Span::none(), request.headers()));
    let span = tracing::info_span!(
        "http",
        otel.kind = "server",
        otel.name = %format_args!("{method} {route}"),
        http.method = %method,
        http.route = %route,
        bucket = param("bucket"),
        entry = param("entry"),
        request_bytes = content_length(request.headers()),
        trace_id = trace_id,
        http.status_code = Empty,
        response_bytes = Empty,
    );
    if exporting {
        proto::telemetry::set_remote_parent(&span, request.headers());
        span.record(
            "trace_id",
            proto::telemetry::request_trace_id(&span, request.headers()),
        );
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    if exporting {
        span.record("http.status_code", status);
        span.record("response_bytes", content_length(response.headers()));
    }
    span.in_scope(|| tracing::debug!(status, "answered"));
    let attributes = [KeyValue::new("route", route), KeyValue::new("method", method)];
    metrics
        .duration
        .record(started.elapsed().as_secs_f64(), &attributes);
    let [route, method] = attributes;
    metrics
        .requests
        .add(1, &[route, method, KeyValue::new("status", i64::from(status))]);
    response
}
