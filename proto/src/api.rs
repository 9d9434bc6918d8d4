//! The service APIs as plain Rust traits. Each service implements its trait once; in one process
//! the gateway calls the implementation directly, in a cluster through the gRPC client adapters
//! that implement the same traits.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::types::*;

/// A record's payload, in order, in chunks of bounded size.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

#[async_trait]
pub trait StorageApi: Send + Sync + 'static {
    async fn info(&self) -> Result<StorageInfo>;
    async fn list_buckets(&self) -> Result<Vec<BucketInfo>>;
    async fn create_bucket(&self, name: &str, settings: BucketSettingsPatch) -> Result<()>;
    async fn get_bucket(&self, name: &str) -> Result<BucketDetails>;
    async fn update_bucket(&self, name: &str, settings: BucketSettingsPatch) -> Result<()>;
    async fn remove_bucket(&self, name: &str) -> Result<()>;
    async fn get_entry(&self, bucket: &str, entry: &str) -> Result<EntryInfo>;

    /// Stores a record whose payload is `body`. The record becomes visible only once exactly
    /// `content_length` bytes were received; otherwise nothing of it is ever readable.
    async fn write_record(&self, record: WriteRecord, body: ByteStream) -> Result<()>;

    /// The record at `timestamp`, or the latest one of the entry when it is `None`.
    async fn record_info(&self, bucket: &str, entry: &str, timestamp: Option<u64>) -> Result<RecordInfo>;

    /// Like [`StorageApi::record_info`], with the payload.
    async fn read_record(
        &self,
        bucket: &str,
        entry: &str,
        timestamp: Option<u64>,
    ) -> Result<(RecordInfo, ByteStream)>;

    /// Up to `limit` records of the entry with `start <= timestamp < stop`, in timestamp order.
    async fn list_records(
        &self,
        bucket: &str,
        entry: &str,
        start: u64,
        stop: u64,
        limit: u32,
    ) -> Result<Vec<RecordInfo>>;
}

#[async_trait]
pub trait QueryApi: Send + Sync + 'static {
    /// Opens a query and returns its id.
    async fn create(&self, request: QueryRequest) -> Result<u64>;

    /// The next record of query `id`, which must be a query of `bucket`/`entry`; `None` while it
    /// has no (more) records.
    async fn next(&self, id: u64, bucket: &str, entry: &str) -> Result<Option<NextRecord>>;
}
