//! The query API through its gRPC server and client, over an in-process storage.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use proto::api::{QueryApi, StorageApi};
use proto::client::RemoteQuery;
use proto::types::{BucketSettingsPatch, NextRecord, QueryRequest, WriteRecord};
use proto::{Error, ErrorKind};
use query_service::{QueryConfig, QueryService, grpc};
use storage_node::{Storage, StorageConfig};
use tokio::net::TcpListener;

struct Service {
    storage: Arc<dyn StorageApi>,
    client: RemoteQuery,
    _data: tempfile::TempDir,
}

async fn start() -> Service {
    let data = tempfile::tempdir().unwrap();
    let storage: Arc<dyn StorageApi> =
        Storage::open(&StorageConfig::new(data.path().join("storage"))).unwrap();
    let query = QueryService::start(storage.clone(), QueryConfig::new(data.path().join("query"))).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(grpc::serve(query, listener, std::future::pending()));
    Service {
        storage,
        client: RemoteQuery::new(&url).unwrap(),
        _data: data,
    }
}

fn request(start: Option<u64>, stop: Option<u64>) -> QueryRequest {
    QueryRequest {
        bucket: "bucket".into(),
        entry: "entry".into(),
        start,
        stop,
        ttl: Duration::from_secs(60),
    }
}

async fn write(storage: &dyn StorageApi, timestamp: u64) {
    let record = WriteRecord {
        bucket: "bucket".into(),
        entry: "entry".into(),
        timestamp,
        content_length: 1,
        content_type: "text/plain".into(),
    };
    let body = futures::stream::once(async { Ok(bytes::Bytes::from_static(b"x")) }).boxed();
    storage.write_record(record, body).await.unwrap();
}

#[tokio::test]
async fn a_query_hands_out_its_records_then_is_gone() {
    let service = start().await;
    service
        .storage
        .create_bucket("bucket", BucketSettingsPatch::default())
        .await
        .unwrap();
    for timestamp in [10, 20, 30] {
        write(service.storage.as_ref(), timestamp).await;
    }

    let query = &service.client;
    let id = query.create(request(None, None)).await.unwrap();
    let mut records = Vec::new();
    loop {
        let record = query.next(id, "bucket", "entry").await.unwrap().unwrap();
        records.push(record);
        if record.last {
            break;
        }
    }
    assert_eq!(
        records,
        vec![
            NextRecord {
                timestamp: 10,
                last: false
            },
            NextRecord {
                timestamp: 20,
                last: false
            },
            NextRecord {
                timestamp: 30,
                last: true
            },
        ]
    );

    let error = query.next(id, "bucket", "entry").await.unwrap_err();
    assert_eq!(error, Error::query_not_found(id));
}

#[tokio::test]
async fn an_empty_interval_has_no_records_and_errors_cross_intact() {
    let service = start().await;
    let query = &service.client;

    let error = query.create(request(None, None)).await.unwrap_err();
    assert_eq!(error, Error::bucket_not_found("bucket"));

    service
        .storage
        .create_bucket("bucket", BucketSettingsPatch::default())
        .await
        .unwrap();
    write(service.storage.as_ref(), 10).await;
    let id = query.create(request(Some(100), Some(200))).await.unwrap();
    assert_eq!(query.next(id, "bucket", "entry").await.unwrap(), None);

    let error = query.create(request(Some(5), Some(1))).await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unprocessable);
    assert_eq!(error.message, "Start 5 is after stop 1");

    let error = query.next(id, "bucket", "other").await.unwrap_err();
    assert_eq!(error, Error::query_not_found(id));
}

#[tokio::test]
async fn a_query_service_that_is_down_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let query = RemoteQuery::new(&url).unwrap();
    // Far above the client's connect timeout: this guards against a hang, not a slow machine.
    let error = tokio::time::timeout(Duration::from_secs(60), query.create(request(None, None)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error:?}");
    assert!(
        error
            .message
            .starts_with(&format!("Query service at {url} is unavailable")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_storage_node_that_is_down_is_named_through_the_query_service() {
    let data = tempfile::tempdir().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let storage_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let storage: Arc<dyn StorageApi> = Arc::new(proto::client::RemoteStorage::new(&storage_url).unwrap());
    let query = QueryService::start(storage, QueryConfig::new(data.path())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(grpc::serve(query, listener, std::future::pending()));

    let error = RemoteQuery::new(&url)
        .unwrap()
        .create(request(None, None))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error:?}");
    // The query service is up: the error names the storage node behind it.
    assert!(
        error
            .message
            .starts_with(&format!("Storage node at {storage_url} is unavailable")),
        "{error:?}"
    );
}
