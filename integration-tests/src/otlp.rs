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
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self))
            .serve_with_incoming(incoming)
            .await
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
