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
    let filter = match tracing_subscriber::EnvFilter::try_new(&config.log_level) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("Log level '{}' is invalid: {e}", config.log_level);
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt().with_env_filter(filter).init();
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
    grpc::serve(query, listener, shutdown_signal()).await?;
    tracing::info!("query service stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
