//! The query API served over gRPC: a thin adapter from the generated service to any
//! [`QueryApi`], and [`serve`], which runs it on a bound listener.

use std::future::Future;
use std::sync::Arc;

use proto::api::QueryApi;
use proto::pb::query as pb;
use proto::pb::query::query_server::{Query as QueryGrpc, QueryServer};
use proto::types::{NextRecord, QueryRequest};
use proto::{Error, Result};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// The generated gRPC service over a [`QueryApi`].
pub struct GrpcQuery {
    query: Arc<dyn QueryApi>,
}

impl GrpcQuery {
    pub fn new(query: Arc<dyn QueryApi>) -> Self {
        Self { query }
    }
}

/// Serves `query` over gRPC on `listener` until `shutdown` completes, then lets running calls
/// finish and returns.
pub async fn serve(
    query: Arc<dyn QueryApi>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<QueryServer<GrpcQuery>>().await;
    tonic::transport::Server::builder()
        .layer(proto::telemetry::GrpcTracing)
        .add_service(health_service)
        .add_service(QueryServer::new(GrpcQuery::new(query)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::internal(format!("The query gRPC server failed: {e}")))
}

#[tonic::async_trait]
impl QueryGrpc for GrpcQuery {
    async fn create(
        &self,
        request: Request<pb::CreateQueryRequest>,
    ) -> Result<Response<pb::CreateQueryReply>, Status> {
        let id = self
            .query
            .create(QueryRequest::from(request.into_inner()))
            .await?;
        Ok(Response::new(pb::CreateQueryReply { id }))
    }

    async fn next(&self, request: Request<pb::NextRequest>) -> Result<Response<pb::NextReply>, Status> {
        let request = request.into_inner();
        let record: Option<NextRecord> = self
            .query
            .next(request.id, &request.bucket, &request.entry)
            .await?;
        Ok(Response::new(record.into()))
    }
}
