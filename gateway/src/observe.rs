//! A span and metrics for every HTTP request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use proto::telemetry::{ServerSpan, keys};
use tracing::Instrument;

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
    let request_bytes = content_length(request.headers());
    let span = ServerSpan::start(format!("{method} {route}"), request.headers(), || {
        let mut attributes = vec![
            KeyValue::new(keys::HTTP_METHOD, method.clone()),
            KeyValue::new(keys::HTTP_ROUTE, route.clone()),
            KeyValue::new(keys::BUCKET, param("bucket").to_string()),
            KeyValue::new(keys::ENTRY, param("entry").to_string()),
        ];
        if let Some(bytes) = request_bytes {
            attributes.push(KeyValue::new(keys::HTTP_REQUEST_BODY_SIZE, bytes as i64));
        }
        attributes
    });
    let log_span = tracing::info_span!(
        "http",
        http.method = %method,
        http.route = %route,
        bucket = param("bucket"),
        entry = param("entry"),
        request_bytes,
        trace_id = span.trace_id(),
    );
    let started = Instant::now();
    let response = span.run(next.run(request).instrument(log_span.clone())).await;
    let status = response.status().as_u16();
    let response_bytes = content_length(response.headers());
    span.end(status >= 500, || {
        let mut attributes = vec![KeyValue::new(keys::HTTP_STATUS_CODE, i64::from(status))];
        if let Some(bytes) = response_bytes {
            attributes.push(KeyValue::new(keys::HTTP_RESPONSE_BODY_SIZE, bytes as i64));
        }
        attributes
    });
    log_span.in_scope(|| tracing::debug!(status, response_bytes, "answered"));
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
