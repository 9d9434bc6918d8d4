use std::path::PathBuf;
use std::time::Duration;

/// Settings of the query service.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Directory where the service keeps the reservation of query ids.
    pub data_path: PathBuf,
    /// Live queries at most; creating one more answers 429.
    pub max_queries: usize,
    /// Records fetched from the storage at a time by a cursor.
    pub page_size: u32,
    /// How often expired queries are freed.
    pub expiry_interval: Duration,
}

impl QueryConfig {
    pub const DEFAULT_MAX_QUERIES: usize = 10_000;

    pub fn new(data_path: impl Into<PathBuf>) -> Self {
        Self {
            data_path: data_path.into(),
            max_queries: Self::DEFAULT_MAX_QUERIES,
            page_size: 256,
            expiry_interval: Duration::from_secs(1),
        }
    }
}

/// The query service: owns queries over the records of entries and pages through the indexes of
/// a storage node; serves gRPC to gateways.
///
/// Every flag can also be set by the environment variable shown with it.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "query-service", version)]
pub struct ServiceConfig {
    /// Address the gRPC server listens on (port 0: any free port).
    #[arg(long, env = "RS_QUERY_LISTEN", default_value = "127.0.0.1:8385")]
    pub listen: String,

    /// gRPC URL of the storage node.
    #[arg(long, env = "RS_STORAGE_URL", default_value = "http://127.0.0.1:8384")]
    pub storage_url: String,

    /// Directory where query ids are reserved, so ids stay unique across restarts.
    #[arg(long, env = "RS_QUERY_DATA_PATH", default_value = "./query-data")]
    pub data_path: PathBuf,

    /// Live queries at most; creating one more answers 429.
    #[arg(long, env = "RS_MAX_QUERIES", default_value_t = QueryConfig::DEFAULT_MAX_QUERIES)]
    pub max_queries: usize,

    /// Address of the admin endpoint serving GET /metrics (Prometheus text).
    #[arg(long, env = "RS_QUERY_METRICS_LISTEN", default_value = "127.0.0.1:9385")]
    pub metrics_listen: String,

    #[command(flatten)]
    pub logs: proto::telemetry::LogArgs,
}

impl ServiceConfig {
    /// The service's settings for these flags.
    pub fn query(&self) -> QueryConfig {
        QueryConfig {
            max_queries: self.max_queries,
            ..QueryConfig::new(&self.data_path)
        }
    }
}
