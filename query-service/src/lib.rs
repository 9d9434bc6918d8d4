//! The query service: owns queries, cursors over a time interval of an entry with a TTL.
//!
//! - [`QueryService`] (in [`service`]): the cursors, implementing [`proto::api::QueryApi`].
//! - `ids`: query ids unique and increasing across restarts.
//! - [`grpc`]: the gRPC server over [`proto::api::QueryApi`].
//! - [`config`]: its settings, and the flags of the `query-service` binary.

pub mod config;
pub mod grpc;
mod ids;
pub mod service;

pub use config::QueryConfig;
pub use service::QueryService;

/// The query service program: parses the flags and serves gRPC (and the metrics) until Ctrl-C or
/// SIGTERM.
pub fn main_from_args() -> std::process::ExitCode {
    use clap::Parser;
    let config = config::ServiceConfig::parse();
    proto::runtime::run_program("query-service", &config.logs.clone(), || run(config))
}

async fn run(config: config::ServiceConfig) -> proto::Result<()> {
    use std::sync::Arc;
    let storage: Arc<dyn proto::api::StorageApi> =
        Arc::new(proto::client::RemoteStorage::new(&config.storage_url)?);
    let query = QueryService::start(storage, config.query())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| proto::Error::internal(format!("Cannot listen on {}: {e}", config.listen)))?;
    let metrics = proto::runtime::serve_metrics(&config.metrics_listen).await?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(storage_url = %config.storage_url, "metrics on http://{metrics}/metrics");
        tracing::info!("query service listening on http://{address}");
    }
    grpc::serve(query, listener, proto::runtime::shutdown_signal()).await?;
    tracing::info!("query service stopped");
    Ok(())
}
