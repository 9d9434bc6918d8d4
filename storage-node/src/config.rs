use std::path::PathBuf;
use std::time::Duration;

/// When written data is forced to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every interval, for all writers at once. A record is acknowledged once it is in the
    /// operating system's cache, so a killed process loses nothing; a power loss can lose the
    /// records of the last interval, and never leaves half a record.
    Interval(Duration),
    /// Before every acknowledgement; writers that wait at the same time share one sync.
    Always,
}

/// Settings of the storage engine.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Directory of the index and the block files.
    pub data_path: PathBuf,
    /// Memory the index may use as cache, in bytes.
    pub index_cache_bytes: u64,
    pub sync: SyncMode,
    /// Bytes the data volume keeps free: a write that would leave less is refused with 507, so
    /// that the index always has room and the server keeps working.
    pub min_free_bytes: u64,
}

impl StorageConfig {
    pub const DEFAULT_INDEX_CACHE_BYTES: u64 = 64 * 1024 * 1024;
    pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);
    pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

    pub fn new(data_path: impl Into<PathBuf>) -> Self {
        Self {
            data_path: data_path.into(),
            index_cache_bytes: Self::DEFAULT_INDEX_CACHE_BYTES,
            sync: SyncMode::Interval(Self::DEFAULT_SYNC_INTERVAL),
            min_free_bytes: Self::DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// The storage flags, shared by the storage node and the gateway that embeds one.
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Directory of the data (index and block files).
    #[arg(long, env = "RS_DATA_PATH", default_value = "./data")]
    pub data_path: PathBuf,

    /// When data is forced to disk: `interval` (every --sync-interval-ms, shared by all writers)
    /// or `always` (before every acknowledgement). In both, an acknowledged record survives the
    /// process being killed; `always` also survives a power loss.
    #[arg(long, env = "RS_SYNC", default_value = "interval", value_parser = ["interval", "always"])]
    pub sync: String,

    /// Milliseconds between syncs in the `interval` mode.
    #[arg(long, env = "RS_SYNC_INTERVAL_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_interval_ms: u64,

    /// Bytes to keep free on the data volume; writes that would leave less answer 507.
    #[arg(long, env = "RS_MIN_FREE_SPACE", default_value_t = StorageConfig::DEFAULT_MIN_FREE_BYTES)]
    pub min_free_space: u64,
}

impl StorageArgs {
    pub fn storage_config(&self) -> StorageConfig {
        StorageConfig {
            sync: if self.sync == "always" {
                SyncMode::Always
            } else {
                SyncMode::Interval(Duration::from_millis(self.sync_interval_ms))
            },
            min_free_bytes: self.min_free_space,
            ..StorageConfig::new(&self.data_path)
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

    #[command(flatten)]
    pub storage: StorageArgs,

    /// Address of the admin endpoint serving GET /metrics (Prometheus text).
    #[arg(long, env = "RS_STORAGE_METRICS_LISTEN", default_value = "127.0.0.1:9384")]
    pub metrics_listen: String,

    #[command(flatten)]
    pub logs: proto::telemetry::LogArgs,
}
