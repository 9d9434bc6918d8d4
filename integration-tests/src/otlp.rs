//! An OTLP/gRPC receiver of traces and metrics, for tests (which keep the spans) and for
//! measuring the cost of exporting telemetry (which only counts them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::resource::v1::Resource;

/// The `service.name` of a resource, empty if it has none.
fn service_name(resource: Option<&Resource>) -> String {
    resource
        .iter()
        .flat_map(|resource| &resource.attributes)
        .find(|attribute| attribute.key == "service.name")
        .map(|attribute| text(attribute.value.as_ref()))
        .unwrap_or_default()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(Value::StringValue(text)) => text.clone(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        other => format!("{other:?}"),
    }
}

/// One span as the receiver got it.
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent_span_id: Vec<u8>,
    /// Attributes, their values written as text.
    pub attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
pub struct Receiver {
    keep: bool,
    spans: Arc<Mutex<Vec<Span>>>,
    count: Arc<AtomicU64>,
    /// The last value of each counter, by service and metric name (summed over its attributes).
    sums: Arc<Mutex<HashMap<(String, String), f64>>>,
}

impl Receiver {
    /// A receiver that keeps every span.
    pub fn keeping_spans() -> Self {
        Self {
            keep: true,
            ..Self::default()
        }
    }

    /// A receiver that only counts spans.
    pub fn counting() -> Self {
        Self::default()
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn span_count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// The last value `service` sent of the counter `name`, summed over its attributes.
    pub fn counter(&self, service: &str, name: &str) -> Option<f64> {
        let sums = self.sums.lock().unwrap_or_else(|p| p.into_inner());
        sums.get(&(service.to_string(), name.to_string())).copied()
    }

    /// Serves OTLP/gRPC on `listener` until the runtime ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> Result<(), tonic::transport::Error> {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let mut builder = tonic::transport::Server::builder();
        let mut router = if self.keep {
            builder.add_service(TraceServiceServer::new(self.clone()))
        } else {
            builder.add_service(CountingTraces(self.count.clone()))
        };
        router = router.add_service(MetricsServiceServer::new(self));
        router.serve_with_incoming(incoming).await
    }
}

/// An `ExportTraceServiceRequest` read only as far as its spans, each left as bytes: a
/// receiver that counts spans does little more than read them, so that it takes as little of
/// the machine as it can from the server being measured.
#[derive(Clone, PartialEq, prost::Message)]
struct CountedRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<CountedResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountedResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<CountedScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountedScopeSpans {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<bytes::Bytes>,
}

/// The trace service of a counting receiver.
#[derive(Clone)]
struct CountingTraces(Arc<AtomicU64>);

impl tonic::server::NamedService for CountingTraces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tonic::server::UnaryService<CountedRequest> for CountingTraces {
    type Response = ExportTraceServiceResponse;
    type Future = futures::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<CountedRequest>) -> Self::Future {
        let count: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        self.0.fetch_add(count as u64, Ordering::SeqCst);
        futures::future::ready(Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        })))
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for CountingTraces {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<ExportTraceServiceResponse, CountedRequest>::default();
            Ok(tonic::server::Grpc::new(codec).unary(service, request).await)
        })
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        let mut count = 0;
        for resource_spans in request.into_inner().resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                count += scope.spans.len() as u64;
                if !self.keep {
                    continue;
                }
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|attribute| (attribute.key.clone(), text(attribute.value.as_ref())))
                        .collect();
                    received.push(Span {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        attributes,
                    });
                }
            }
        }
        self.count.fetch_add(count, Ordering::SeqCst);
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut sums = self.sums.lock().unwrap_or_else(|p| p.into_inner());
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for metric in resource_metrics
                .scope_metrics
                .into_iter()
                .flat_map(|scope| scope.metrics)
            {
                let Some(Data::Sum(sum)) = metric.data else {
                    continue;
                };
                let total = sum
                    .data_points
                    .iter()
                    .map(|point| match point.value {
                        Some(number_data_point::Value::AsInt(n)) => n as f64,
                        Some(number_data_point::Value::AsDouble(x)) => x,
                        None => 0.0,
                    })
                    .sum();
                sums.insert((service.clone(), metric.name), total);
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}
