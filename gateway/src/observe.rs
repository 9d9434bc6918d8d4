//! A span and metrics for every HTTP request.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, RwLock};
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

/// A byte count as a span attribute (which holds an `i64`): a `Content-Length` beyond it, which no
/// real body has, is capped rather than wrapped to a negative size.
fn attribute_int(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// The method as spans and metrics name it: one of the standard methods, else `_OTHER`, so that
/// what a client sends cannot grow the set of names.
fn method_name(method: &http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "_OTHER",
    }
}

/// The route and the span name of a request as `&'static str`. The router has a fixed, small set
/// of routes, each with a few methods, so each name is allocated once for the life of the process
/// and every request's span and metrics then carry it without copying.
fn route_names(method: &'static str, route: &str) -> (&'static str, &'static str) {
    /// By route: the route and, by method, the span name.
    type Names = HashMap<String, (&'static str, Vec<(&'static str, &'static str)>)>;
    static NAMES: LazyLock<RwLock<Names>> = LazyLock::new(RwLock::default);
    let find = |names: &Names| {
        let (route, methods) = names.get(route)?;
        let (_, name) = methods.iter().find(|(known, _)| *known == method)?;
        Some((*route, *name))
    };
    if let Some(names) = find(&NAMES.read().unwrap_or_else(|p| p.into_inner())) {
        return names;
    }
    let mut names = NAMES.write().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = find(&names) {
        return found;
    }
    let (route, methods) = names
        .entry(route.to_string())
        .or_insert_with(|| (Box::leak(route.into()), Vec::new()));
    let name: &'static str = Box::leak(format!("{method} {route}").into());
    methods.push((method, name));
    (route, name)
}

pub async fn observe(
    State(metrics): State<Arc<HttpMetrics>>,
    route: MatchedPath,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let method = method_name(request.method());
    let (route, name) = route_names(method, route.as_str());
    let param = |key: &str| {
        params
            .iter()
            .find(|(name, _)| *name == key)
            .map_or("", |(_, value)| value)
    };
    let request_bytes = content_length(request.headers());
    // Attributes that would be empty are left out.
    let span = ServerSpan::start(name, request.headers(), |attributes| {
        attributes
            .string(keys::HTTP_METHOD, method)
            .string(keys::HTTP_ROUTE, route);
        for (key, name) in [(keys::BUCKET, "bucket"), (keys::ENTRY, "entry")] {
            let value = param(name);
            if !value.is_empty() {
                attributes.string(key, value);
            }
        }
        if let Some(bytes) = request_bytes.filter(|bytes| *bytes > 0) {
            attributes.int(keys::HTTP_REQUEST_BODY_SIZE, attribute_int(bytes));
        }
    });
    let log_span = tracing::info_span!(
        "http",
        http.method = method,
        http.route = route,
        bucket = param("bucket"),
        entry = param("entry"),
        request_bytes,
        trace_id = %span.trace_id(),
    );
    let started = Instant::now();
    let response = span.run(next.run(request).instrument(log_span.clone())).await;
    let status = response.status().as_u16();
    let response_bytes = content_length(response.headers());
    span.end(status >= 500, |attributes| {
        attributes.int(keys::HTTP_STATUS_CODE, i64::from(status));
        if let Some(bytes) = response_bytes.filter(|bytes| *bytes > 0) {
            attributes.int(keys::HTTP_RESPONSE_BODY_SIZE, attribute_int(bytes));
        }
    });
    log_span.in_scope(|| tracing::debug!(status, response_bytes, "answered"));
    let route = KeyValue::new("route", route);
    let method = KeyValue::new("method", method);
    metrics
        .duration
        .record(started.elapsed().as_secs_f64(), &[route.clone(), method.clone()]);
    metrics
        .requests
        .add(1, &[route, method, KeyValue::new("status", i64::from(status))]);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_are_made_once_and_unknown_methods_share_one_name() {
        let (route, name) = route_names("GET", "/api/v1/b/{bucket}");
        assert_eq!((route, name), ("/api/v1/b/{bucket}", "GET /api/v1/b/{bucket}"));
        let (again, again_name) = route_names("GET", &String::from("/api/v1/b/{bucket}"));
        assert!(std::ptr::eq(route, again) && std::ptr::eq(name, again_name));
        let (same_route, post) = route_names("POST", "/api/v1/b/{bucket}");
        assert!(std::ptr::eq(route, same_route));
        assert_eq!(post, "POST /api/v1/b/{bucket}");

        assert_eq!(method_name(&http::Method::DELETE), "DELETE");
        assert_eq!(attribute_int(u64::MAX), i64::MAX);
        let custom = http::Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_name(&custom), "_OTHER");
    }
}
