use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use proto::api::StorageApi;
use proto::client::RemoteStorage;
use proto::{Error, Result};
use query_service::config::ServiceConfig;
use query_service::{QueryService, grpc};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let config = ServiceConfig::parse();
    if let Err(e) = proto::runtime::init_logging(&config.log_level) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: ServiceConfig) -> Result<()> {
    let storage: Arc<dyn StorageApi> = Arc::new(RemoteStorage::new(&config.storage_url)?);
    let query = QueryService::start(storage, config.query())?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| Error::internal(format!("Cannot listen on {}: {e}", config.listen)))?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(storage_url = %config.storage_url, "query service serving gRPC on {address}");
    }
    grpc::serve(query, listener, proto::runtime::shutdown_signal()).await?;
    tracing::info!("query service stopped");
    Ok(())
}
