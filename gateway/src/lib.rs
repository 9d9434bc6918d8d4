//! The gateway: the HTTP API in front of the storage node and the query service.
//!
//! - [`config`]: flags and `RS_*` variables.
//! - [`start`]: builds the services (in process, or clients of remote ones) and serves until the
//!   shutdown signal.
//! - `routes`: thin handlers, one module per part of the API; `extract`: request parsing;
//!   `error`: errors as HTTP responses; `layers`: headers, authentication and CORS on every route;
//!   `observe`: a span and metrics for every request. `GET /metrics` serves the metrics.

pub mod config;
mod error;
mod extract;
mod layers;
mod observe;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use proto::api::{QueryApi, StorageApi};
use proto::client::{RemoteQuery, RemoteStorage};
use query_service::{QueryConfig, QueryService};
use storage_node::Storage;
use tokio::net::TcpListener;

pub use config::Config;
pub use error::Error;

/// The gateway program: parses the flags and serves until Ctrl-C or SIGTERM.
pub fn main_from_args() -> std::process::ExitCode {
    use clap::Parser;
    let config = Config::parse();
    proto::runtime::run_program("gateway", &config.logs.clone(), || async move {
        let server = start(config, proto::runtime::shutdown_signal()).await?;
        tracing::info!("serving the HTTP API on http://{}", server.local_addr);
        server.wait().await.map_err(|e| Error::internal(e.to_string()))
    })
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    storage: Arc<dyn StorageApi>,
    query: Arc<dyn QueryApi>,
    started: Instant,
}

/// A server that is listening; it stops when the shutdown future given to [`start`] completes.
pub struct Server {
    pub local_addr: SocketAddr,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Waits until the server has shut down and flushed its data.
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// Opens the services, binds the listener and starts serving. Returns once the server accepts
/// connections, so callers (and tests on port 0) need not wait or retry.
pub async fn start(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Server, Error> {
    let mut local_storage = None;
    let storage: Arc<dyn StorageApi> = match &config.storage_url {
        Some(url) => Arc::new(RemoteStorage::new(url)?),
        None => {
            let storage_config = config.storage.storage_config();
            let storage = tokio::task::spawn_blocking(move || Storage::open(&storage_config))
                .await
                .map_err(|e| Error::internal(format!("Cannot open the storage: {e}")))??;
            local_storage = Some(storage.clone());
            storage
        }
    };
    let query: Arc<dyn QueryApi> = match &config.query_url {
        Some(url) => Arc::new(RemoteQuery::new(url)?),
        None => {
            let mut query_config = QueryConfig::new(config.storage.data_path.join("query"));
            query_config.max_queries = config.max_queries;
            QueryService::start(storage.clone(), query_config)?
        }
    };
    let state = AppState {
        storage,
        query,
        started: Instant::now(),
    };
    let app = router(&config, state);

    let address = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&address)
        .await
        .map_err(|e| Error::internal(format!("Cannot listen on {address}: {e}")))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::internal(e.to_string()))?;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        if let Some(storage) = local_storage {
            storage.close().await.map_err(std::io::Error::other)?;
        }
        Ok(())
    });
    Ok(Server { local_addr, task })
}

fn router(config: &Config, state: AppState) -> Router {
    use routes::{bucket, entry, server};
    let api = Router::new()
        .route("/info", get(server::info))
        .route("/list", get(server::list))
        .route("/alive", get(server::alive).head(server::alive))
        .route(
            "/b/{bucket}",
            get(bucket::get)
                .head(bucket::head)
                .post(bucket::create)
                .put(bucket::update)
                .delete(bucket::remove),
        )
        .route(
            "/b/{bucket}/{entry}",
            get(entry::read).head(entry::read).post(entry::write),
        )
        .route("/b/{bucket}/{entry}/q", get(entry::query))
        .route_layer(axum::middleware::from_fn_with_state(
            observe::HttpMetrics::new(),
            observe::observe,
        ))
        .with_state(state);
    let base = config.base_path();
    let api_path = format!("{base}/api/v1");
    let app = Router::new()
        .nest(&api_path, api)
        .route("/metrics", get(proto::runtime::metrics));
    layers::apply(app, config, api_path)
}
