//! The storage node: owns buckets, entries and records.
//!
//! - [`Storage`] (in [`store`]): the engine, implementing [`proto::api::StorageApi`].
//! - `bucket`: buckets and entries, where records are reserved, written, committed and removed.
//! - `read`: checked, streamed reads of payloads.
//! - `keys`: how the index is laid out in sled.
//! - `block`: the framed, append-only block files that hold payloads.
//! - `sync`: forcing data to disk for many writers at once.
//! - `recovery`: the index brought back in line with the blocks after a crash.
//! - `metrics`: records and bytes written and read, sync time, usage per bucket.
//! - [`config`]: its settings and flags; [`grpc`]: the gRPC adapter and server.

mod block;
mod bucket;
pub mod config;
pub mod grpc;
mod keys;
mod metrics;
mod read;
mod recovery;
pub mod store;
mod sync;
mod util;

pub use config::{StorageArgs, StorageConfig, SyncMode};
pub use store::Storage;

/// The storage node program: parses the flags, serves gRPC (and the metrics) until Ctrl-C or
/// SIGTERM, then closes the storage cleanly.
pub fn main_from_args() -> std::process::ExitCode {
    use clap::Parser;
    let config = config::NodeConfig::parse();
    proto::runtime::run_program("storage-node", &config.logs.clone(), || run(config))
}

async fn run(config: config::NodeConfig) -> proto::Result<()> {
    let storage = Storage::open(&config.storage.storage_config())?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| proto::Error::internal(format!("Cannot listen on {}: {e}", config.listen)))?;
    let metrics = proto::runtime::serve_metrics(&config.metrics_listen).await?;
    if let Ok(address) = listener.local_addr() {
        tracing::info!(data_path = %config.storage.data_path.display(), "metrics on http://{metrics}/metrics");
        tracing::info!("storage node listening on http://{address}");
    }
    let served = grpc::serve(storage.clone(), listener, proto::runtime::shutdown_signal()).await;
    // Closed even when serving failed: every acknowledged record must reach the disk.
    let closed = storage.close().await;
    tracing::info!("storage node stopped");
    served.and(closed)
}
