//! The storage API through its gRPC server and client, against a real server on a free port.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proto::api::{ByteStream, StorageApi};
use proto::client::RemoteStorage;
use proto::types::{BucketSettingsPatch, QuotaType, WriteRecord};
use proto::{Error, ErrorKind};
use storage_node::{Storage, StorageConfig, grpc};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Node {
    client: RemoteStorage,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<proto::Result<()>>,
    data: tempfile::TempDir,
}

impl Node {
    async fn start() -> Node {
        let data = tempfile::tempdir().unwrap();
        let storage: Arc<dyn StorageApi> = Storage::open(&StorageConfig::new(data.path())).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(grpc::serve(storage, listener, async move {
            let _ = stopped.await;
        }));
        Node {
            client: RemoteStorage::new(&url).unwrap(),
            url,
            stop: Some(stop),
            task,
            data,
        }
    }
}

fn body(chunks: Vec<Bytes>) -> ByteStream {
    futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
}

fn record(bucket: &str, entry: &str, timestamp: u64, content_length: u64) -> WriteRecord {
    WriteRecord {
        bucket: bucket.into(),
        entry: entry.into(),
        timestamp,
        content_length,
        content_type: "application/octet-stream".into(),
    }
}

async fn read_all(mut body: ByteStream) -> Result<Vec<u8>, Error> {
    let mut data = Vec::new();
    while let Some(chunk) = body.next().await {
        data.extend_from_slice(&chunk?);
    }
    Ok(data)
}

#[tokio::test]
async fn a_large_record_round_trips_byte_for_byte() {
    let node = Node::start().await;
    let storage = &node.client;
    let patch = BucketSettingsPatch {
        quota_type: Some(QuotaType::Fifo),
        quota_size: Some(1 << 30),
        ..Default::default()
    };
    storage.create_bucket("bucket", patch).await.unwrap();

    // Chunks of uneven sizes, one larger than a gRPC message may carry.
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i: u32| (i % 251) as u8).collect();
    let data = Bytes::from(data);
    let cuts = [0, 1, 100_000, 100_000 + 2 * 1024 * 1024 + 5, data.len()];
    let chunks = cuts.windows(2).map(|w| data.slice(w[0]..w[1])).collect();
    storage
        .write_record(record("bucket", "entry", 1000, data.len() as u64), body(chunks))
        .await
        .unwrap();

    let (info, payload) = storage.read_record("bucket", "entry", Some(1000)).await.unwrap();
    assert_eq!(info.timestamp, 1000);
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.content_type, "application/octet-stream");
    assert!(read_all(payload).await.unwrap() == data, "payload differs");

    let details = storage.get_bucket("bucket").await.unwrap();
    assert_eq!(details.settings.quota_type, QuotaType::Fifo);
    assert_eq!(details.settings.quota_size, 1 << 30);
    assert_eq!(details.info.entry_count, 1);
    assert_eq!(details.entries[0].record_count, 1);
    let latest = storage.record_info("bucket", "entry", None).await.unwrap();
    assert_eq!(latest, info);
    let listed = storage
        .list_records("bucket", "entry", 0, u64::MAX, 10)
        .await
        .unwrap();
    assert_eq!(listed, vec![info]);
    assert_eq!(storage.info().await.unwrap().bucket_count, 1);
}

#[tokio::test]
async fn errors_keep_their_kind_and_message() {
    let node = Node::start().await;
    let storage = &node.client;

    let error = storage.get_bucket("x").await.unwrap_err();
    assert_eq!(error, Error::not_found("Bucket 'x' is not found"));
    let error = storage.read_record("x", "entry", None).await.err().unwrap();
    assert_eq!(error, Error::not_found("Bucket 'x' is not found"));
    let error = storage
        .write_record(record("x", "entry", 1, 1), body(vec![Bytes::from_static(b"a")]))
        .await;
    assert_eq!(error.unwrap_err(), Error::not_found("Bucket 'x' is not found"));

    storage
        .create_bucket("bucket", BucketSettingsPatch::default())
        .await
        .unwrap();
    let error = storage
        .create_bucket("bucket", BucketSettingsPatch::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Conflict);
    assert_eq!(error.message, "Bucket 'bucket' already exists");
    let error = storage.get_entry("bucket", "nothing").await.unwrap_err();
    assert_eq!(error, Error::entry_not_found("nothing"));
}

#[tokio::test]
async fn a_short_body_is_refused_and_leaves_nothing_readable() {
    let node = Node::start().await;
    let storage = &node.client;
    storage
        .create_bucket("bucket", BucketSettingsPatch::default())
        .await
        .unwrap();

    let chunks = vec![Bytes::from(vec![7u8; 1000]), Bytes::from(vec![8u8; 500])];
    let error = storage
        .write_record(record("bucket", "entry", 5, 2000), body(chunks))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::BadRequest, "{error:?}");
    assert!(error.message.contains("shorter"), "{error:?}");

    let error = storage
        .read_record("bucket", "entry", Some(5))
        .await
        .err()
        .unwrap();
    assert_eq!(error.kind, ErrorKind::NotFound, "{error:?}");
    assert_eq!(storage.get_bucket("bucket").await.unwrap().info.entry_count, 0);
}

#[tokio::test]
async fn an_interrupted_body_fails_the_write_and_leaves_nothing_readable() {
    let mut node = Node::start().await;
    let storage = node.client.clone();
    storage
        .create_bucket("bucket", BucketSettingsPatch::default())
        .await
        .unwrap();

    // Every byte arrives before the body fails: only the reset stream keeps the node from
    // committing the record.
    let chunks = vec![
        Ok(Bytes::from(vec![1u8; 100])),
        Err(Error::bad_request("client went away")),
    ];
    let body = futures::stream::iter(chunks).boxed();
    let error = storage
        .write_record(record("bucket", "entry", 6, 100), body)
        .await
        .unwrap_err();
    assert_eq!(error, Error::bad_request("client went away"));

    // The node learns of the reset asynchronously; a later write to the same timestamp proves the
    // first one never committed.
    let data = Bytes::from_static(b"the real record");
    let write = record("bucket", "entry", 6, data.len() as u64);
    storage.write_record(write, body_of(data.clone())).await.unwrap();
    let (_, payload) = storage.read_record("bucket", "entry", Some(6)).await.unwrap();
    assert_eq!(read_all(payload).await.unwrap(), data);

    // A graceful shutdown waits for running calls: it ends only if the node saw the reset and
    // gave up the interrupted write instead of waiting for its end forever.
    node.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), node.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn body_of(data: Bytes) -> ByteStream {
    body(vec![data])
}

#[tokio::test]
async fn a_closed_port_is_unavailable_quickly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);

    let storage = RemoteStorage::new(&url).unwrap();
    // Far above the client's connect timeout: this guards against a hang, not a slow machine.
    let error = tokio::time::timeout(Duration::from_secs(60), storage.list_buckets())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error:?}");
    assert!(
        error
            .message
            .starts_with(&format!("Storage node at {url} is unavailable")),
        "{error:?}"
    );
    assert_eq!(error.http_status().as_u16(), 503);

    let error = storage
        .write_record(record("b", "e", 1, 1), body_of(Bytes::from_static(b"a")))
        .await
        .unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error:?}");
}

#[tokio::test]
async fn malformed_urls_are_refused_by_name() {
    let error = RemoteStorage::new("127.0.0.1:8384").unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unprocessable);
    assert!(error.message.contains("'127.0.0.1:8384'"), "{error:?}");
    assert!(RemoteStorage::new("http://exa mple").is_err());
}

#[tokio::test]
async fn the_client_recovers_when_the_node_comes_back() {
    let mut node = Node::start().await;
    node.client
        .create_bucket("bucket", BucketSettingsPatch::default())
        .await
        .unwrap();
    node.stop.take().unwrap().send(()).unwrap();
    node.task.await.unwrap().unwrap();

    let error = node.client.list_buckets().await.unwrap_err();
    assert_eq!(error.kind, ErrorKind::Unavailable, "{error:?}");
    assert!(error.message.contains(&node.url), "{error:?}");

    // The same data on the same address: the old client reconnects by itself.
    let storage: Arc<dyn StorageApi> = Storage::open(&StorageConfig::new(node.data.path())).unwrap();
    let listener = TcpListener::bind(node.url.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::spawn(grpc::serve(storage, listener, std::future::pending()));
    let buckets = node.client.list_buckets().await.unwrap();
    assert_eq!(buckets.len(), 1);
    assert_eq!(buckets[0].name, "bucket");
}
