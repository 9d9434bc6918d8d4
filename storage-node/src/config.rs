use std::path::PathBuf;

/// Settings of the storage engine.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Directory of the index and the block files.
    pub data_path: PathBuf,
    /// Memory the index may use as cache, in bytes.
    pub index_cache_bytes: u64,
}

impl StorageConfig {
    pub const DEFAULT_INDEX_CACHE_BYTES: u64 = 64 * 1024 * 1024;

    pub fn new(data_path: impl Into<PathBuf>) -> Self {
        Self {
            data_path: data_path.into(),
            index_cache_bytes: Self::DEFAULT_INDEX_CACHE_BYTES,
        }
    }
}

/// The storage node: owns buckets, entries and records, and serves them over gRPC to gateways
/// and query services.
///
/// Every flag can also be set by the environment variable shown with it.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "storage-node", version)]
pub struct NodeConfig {
    /// Address the gRPC server listens on (port 0: any free port).
    #[arg(long, env = "RS_STORAGE_LISTEN", default_value = "127.0.0.1:8384")]
    pub listen: String,

    /// Directory of the index and the block files.
    #[arg(long, env = "RS_DATA_PATH", default_value = "./data")]
    pub data_path: PathBuf,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive.
    #[arg(long, env = "RS_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl NodeConfig {
    /// The engine's settings for these flags.
    pub fn storage(&self) -> StorageConfig {
        StorageConfig::new(&self.data_path)
    }
}
