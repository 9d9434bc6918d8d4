use clap::Parser;

/// A time-series blob store speaking the ReductStore HTTP API.
///
/// With no service URLs, this one process is the whole server: it runs the storage node and the
/// query service in process, with data under --data-path. With --storage-url and --query-url it
/// is a stateless gateway in front of remote services, and any number of gateways may serve them.
#[derive(Parser, Debug, Clone)]
#[command(name = "gateway", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "RS_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0: any free port).
    #[arg(long, env = "RS_PORT", default_value_t = 8383)]
    pub port: u16,

    /// Prefix before /api/v1 in every path, e.g. /reduct.
    #[arg(long, env = "RS_API_BASE_PATH", default_value = "/")]
    pub api_base_path: String,

    /// The embedded storage node's flags (its data path also holds the embedded query service's
    /// state).
    #[command(flatten)]
    pub storage: storage_node::StorageArgs,

    /// API token: when set, every request but /alive needs `Authorization: Bearer <token>`.
    #[arg(long, env = "RS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Origins allowed to make cross-origin requests, comma-separated; `*` allows any.
    #[arg(
        long,
        env = "RS_CORS_ALLOW_ORIGIN",
        default_value = "*",
        value_delimiter = ','
    )]
    pub cors_allow_origin: Vec<String>,

    /// gRPC URL of a remote storage node, e.g. http://storage:8384 (default: in process).
    #[arg(long, env = "RS_STORAGE_URL")]
    pub storage_url: Option<String>,

    /// gRPC URL of a remote query service, e.g. http://query:8385 (default: in process).
    #[arg(long, env = "RS_QUERY_URL")]
    pub query_url: Option<String>,

    /// Live queries at most in the embedded query service; one more answers 429.
    #[arg(long, env = "RS_MAX_QUERIES", default_value_t = 10_000)]
    pub max_queries: usize,

    #[command(flatten)]
    pub logs: proto::telemetry::LogArgs,
}

impl Config {
    /// The configured token, if any; an empty one means none.
    pub fn token(&self) -> Option<&str> {
        self.api_token.as_deref().filter(|token| !token.is_empty())
    }

    /// The base path normalised to `""` or `/segment...` without a trailing slash.
    pub fn base_path(&self) -> String {
        let trimmed = self.api_base_path.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        }
    }
}
