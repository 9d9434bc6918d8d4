use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use proto::{Error, Result};
use storage_node::config::NodeConfig;
use storage_node::{Storage, grpc};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let config = NodeConfig::parse();
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

async fn run(config: NodeConfig) -> Result<()> {
    let storage = Arc::new(Storage::open(&config.storage())?);
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| Error::internal(format!("Cannot listen on {}: {e}", config.listen)))?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(data_path = %config.data_path.display(), "storage node serving gRPC on {address}");
    }
    let served = grpc::serve(storage.clone(), listener, shutdown_signal()).await;
    // Flushed even when serving failed: every acknowledged record must reach the disk.
    let flushed = storage.flush();
    tracing::info!("storage node stopped");
    served.and(flushed)
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
