//! The cluster layout in one test process: a storage node and a query service, each a gRPC server
//! on its own port, and gateways that reach them only over the network. Either service can be
//! stopped and started again on the same address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use proto::api::StorageApi;
use proto::client::RemoteStorage;
use query_service::{QueryConfig, QueryService};
use storage_node::{Storage, StorageConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::TestServer;

/// A service running on a fixed address until stopped.
struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the service stops");
    }
}

pub struct Cluster {
    pub storage_url: String,
    pub query_url: String,
    storage_addr: SocketAddr,
    query_addr: SocketAddr,
    dir: TempDir,
    storage: Option<Running>,
    query: Option<Running>,
}

impl Cluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let storage_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let query_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let storage_addr = storage_listener.local_addr().expect("address");
        let query_addr = query_listener.local_addr().expect("address");
        let mut cluster = Self {
            storage_url: format!("http://{storage_addr}"),
            query_url: format!("http://{query_addr}"),
            storage_addr,
            query_addr,
            dir,
            storage: None,
            query: None,
        };
        cluster.serve_storage(storage_listener);
        cluster.serve_query(query_listener);
        cluster
    }

    fn storage_path(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn serve_storage(&mut self, listener: TcpListener) {
        let storage = Storage::open(&StorageConfig::new(self.storage_path())).expect("storage opens");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let service: Arc<dyn StorageApi> = storage.clone();
            storage_node::grpc::serve(service, listener, async move {
                let _ = stopped.await;
            })
            .await
            .expect("the storage node serves");
            storage.close().await.expect("the storage closes");
        });
        self.storage = Some(Running { stop, task });
    }

    fn serve_query(&mut self, listener: TcpListener) {
        let remote: Arc<dyn StorageApi> =
            Arc::new(RemoteStorage::new(&self.storage_url).expect("storage client"));
        let config = QueryConfig::new(self.dir.path().join("query"));
        let query = QueryService::start(remote, config).expect("query service");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            query_service::grpc::serve(query, listener, async move {
                let _ = stopped.await;
            })
            .await
            .expect("the query service serves");
        });
        self.query = Some(Running { stop, task });
    }

    /// Stops the storage node gracefully; its address stays reserved for [`Self::start_storage`].
    pub async fn stop_storage(&mut self) {
        if let Some(running) = self.storage.take() {
            running.stop().await;
        }
    }

    pub async fn start_storage(&mut self) {
        let listener = TcpListener::bind(self.storage_addr)
            .await
            .expect("the storage address is free again");
        self.serve_storage(listener);
    }

    pub async fn stop_query(&mut self) {
        if let Some(running) = self.query.take() {
            running.stop().await;
        }
    }

    pub async fn start_query(&mut self) {
        let listener = TcpListener::bind(self.query_addr)
            .await
            .expect("the query address is free again");
        self.serve_query(listener);
    }

    /// A gateway in front of this cluster's services.
    pub async fn gateway(&self) -> TestServer {
        TestServer::start_with(&["--storage-url", &self.storage_url, "--query-url", &self.query_url]).await
    }
}
