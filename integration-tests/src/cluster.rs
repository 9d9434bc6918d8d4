//! The cluster layout in one test process: a storage node and a query service, each a gRPC server
//! on its own port, and gateways that reach them only over the network.

use std::sync::Arc;

use proto::api::StorageApi;
use proto::client::RemoteStorage;
use query_service::{QueryConfig, QueryService};
use storage_node::{Storage, StorageConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::TestServer;

pub struct Cluster {
    pub storage_url: String,
    pub query_url: String,
    _dir: TempDir,
    _stops: Vec<oneshot::Sender<()>>,
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (listener, url)
}

impl Cluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut stops = Vec::new();

        let storage = Storage::open(&StorageConfig::new(dir.path().join("storage"))).expect("storage");
        let (storage_listener, storage_url) = listener().await;
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        tokio::spawn(storage_node::grpc::serve(storage, storage_listener, async move {
            let _ = stopped.await;
        }));

        let remote: Arc<dyn StorageApi> = Arc::new(RemoteStorage::new(&storage_url).expect("storage client"));
        let query =
            QueryService::start(remote, QueryConfig::new(dir.path().join("query"))).expect("query service");
        let (query_listener, query_url) = listener().await;
        let (stop, stopped) = oneshot::channel::<()>();
        stops.push(stop);
        tokio::spawn(query_service::grpc::serve(query, query_listener, async move {
            let _ = stopped.await;
        }));

        Self {
            storage_url,
            query_url,
            _dir: dir,
            _stops: stops,
        }
    }

    /// A gateway in front of this cluster's services.
    pub async fn gateway(&self) -> TestServer {
        TestServer::start_with(&["--storage-url", &self.storage_url, "--query-url", &self.query_url]).await
    }
}
