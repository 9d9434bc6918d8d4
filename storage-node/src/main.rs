use std::process::ExitCode;

use clap::Parser;
use proto::{Error, Result};
use storage_node::config::NodeConfig;
use storage_node::{Storage, grpc};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let config = NodeConfig::parse();
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

async fn run(config: NodeConfig) -> Result<()> {
    let storage = Storage::open(&config.storage.storage_config())?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| Error::internal(format!("Cannot listen on {}: {e}", config.listen)))?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(data_path = %config.storage.data_path.display(), "storage node serving gRPC on {address}");
    }
    let served = grpc::serve(storage.clone(), listener, proto::runtime::shutdown_signal()).await;
    // Closed even when serving failed: every acknowledged record must reach the disk.
    let flushed = storage.close().await;
    tracing::info!("storage node stopped");
    served.and(flushed)
}
