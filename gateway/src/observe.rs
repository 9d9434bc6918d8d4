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
    let span = tracing::info_span!(
        "http",
        otel.kind = "server",
        otel.name = %format!("{method} {route}"),
        http.method = %method,
        http.route = %route,
        bucket = Empty,
        entry = Empty,
        http.status_code = Empty,
        request_bytes = Empty,
        response_bytes = Empty,
        trace_id = Empty,
    );
    for (name, value) in &params {
        if name == "bucket" || name == "entry" {
            span.record(name, value);
        }
    }
    if let Some(bytes) = content_length(request.headers()) {
        span.record("request_bytes", bytes);
    }
    proto::telemetry::set_remote_parent(&span, request.headers());
    if let Some(id) = proto::telemetry::trace_id(&span) {
        span.record("trace_id", id);
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.status_code", status);
    if let Some(bytes) = content_length(response.headers()) {
        span.record("response_bytes", bytes);
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
