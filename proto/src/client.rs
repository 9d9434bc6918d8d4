//! The service traits over gRPC: [`RemoteStorage`] and [`RemoteQuery`] call a storage node and a
//! query service in another process.
//!
//! Connections are made lazily and remade after a failure, so a client is built while its service
//! is still down and recovers when it comes up. A failure to reach the service becomes an
//! [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) error naming the service and its URL;
//! an error of the service itself arrives with its own kind and message.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::api::{ByteStream, QueryApi, StorageApi};
use crate::convert::{self, split_chunks};
use crate::error::{Error, ErrorKind, KIND_METADATA, Result};
use crate::pb::query as qpb;
use crate::pb::query::query_client::QueryClient;
use crate::pb::storage as pb;
use crate::pb::storage::storage_client::StorageClient;
use crate::types::*;

/// A service that does not accept a connection in this time is taken as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Limit of a call that carries no payload, and of a read until its first message. Payload
/// streams have no total limit, since a record may take minutes to move; keep-alive pings find a
/// dead peer instead.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A channel whose calls carry the caller's trace context.
type Traced =
    InterceptedService<Channel, fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>>;

fn propagate_context(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    crate::telemetry::propagate(request)
}

/// Which service a client talks to, for error messages.
#[derive(Debug, Clone)]
struct Target {
    service: &'static str,
    url: Arc<str>,
}

impl Target {
    /// Opens a lazy channel to `url`.
    fn connect(service: &'static str, url: &str) -> Result<(Target, Channel)> {
        let invalid = |why: String| Error::unprocessable(format!("{service} URL '{url}' is invalid: {why}"));
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| invalid(e.to_string()))?;
        // Without a scheme the URL parses, and every call would fail later with a vaguer error.
        if endpoint.uri().scheme_str() != Some("http") {
            return Err(invalid("it must start with http://".into()));
        }
        // The channel spawns its connection task on the current runtime and would panic outside one.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::internal(format!(
                "The {service} client must be created inside a Tokio runtime"
            )));
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        Ok((
            Target {
                service,
                url: url.into(),
            },
            channel,
        ))
    }

    /// The error for a failed call. A status the service produced carries its error kind and is
    /// passed on as it is. Any other status came from the transport: tonic reports a refused or
    /// broken connection as Unavailable, Unknown or Internal (the latter two map to Internal),
    /// and none of those is the service's own answer.
    fn error(&self, status: tonic::Status) -> Error {
        if status.metadata().contains_key(KIND_METADATA) {
            return Error::from(status);
        }
        let error = Error::from(status);
        match error.kind {
            ErrorKind::Unavailable | ErrorKind::Internal => self.unavailable(&error.message),
            _ => Error::new(
                error.kind,
                format!("{} at {}: {}", self.service, self.url, error.message),
            ),
        }
    }

    fn unavailable(&self, why: &str) -> Error {
        Error::unavailable(format!("{} at {} is unavailable: {why}", self.service, self.url))
    }

    /// A reply that does not convert means a peer of another version or a bug there, not bad
    /// input from the user.
    fn bad_reply(&self, error: Error) -> Error {
        Error::internal(format!(
            "{} at {} sent a malformed reply: {}",
            self.service, self.url, error.message
        ))
    }

    /// Runs a call that must finish within [`CALL_TIMEOUT`].
    async fn bounded<T>(&self, call: impl Future<Output = Result<T, tonic::Status>>) -> Result<T> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result.map_err(|status| self.error(status)),
            Err(_) => Err(self.unavailable(&format!("no answer within {} s", CALL_TIMEOUT.as_secs()))),
        }
    }

    async fn unary<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        self.bounded(call).await.map(tonic::Response::into_inner)
    }
}

/// A [`StorageApi`] served by a storage node over gRPC.
#[derive(Debug, Clone)]
pub struct RemoteStorage {
    target: Target,
    client: StorageClient<Traced>,
}

impl RemoteStorage {
    /// A client of the storage node at `url` (`http://host:port`). Does not connect yet, so it
    /// succeeds while the node is down; must be called inside a Tokio runtime.
    pub fn new(url: &str) -> Result<Self> {
        let (target, channel) = Target::connect("Storage node", url)?;
        Ok(Self {
            target,
            client: StorageClient::with_interceptor(channel, propagate_context),
        })
    }

    fn client(&self) -> StorageClient<Traced> {
        self.client.clone()
    }
}

fn bucket_request(name: &str) -> pb::BucketRequest {
    pb::BucketRequest {
        name: name.to_string(),
    }
}

fn record_request(bucket: &str, entry: &str, timestamp: Option<u64>) -> pb::RecordRequest {
    pb::RecordRequest {
        bucket: bucket.to_string(),
        entry: entry.to_string(),
        timestamp,
    }
}

/// The messages of a write: the header, then the payload in chunks.
///
/// A failing body must not end the request stream cleanly: if it failed after its last byte, the
/// node would store a record whose writer was told it failed. Instead the stream stalls and hands
/// the error to `abort`; the caller then drops the call, which resets the stream, and the node
/// sees an interrupted upload.
fn write_messages(
    record: WriteRecord,
    body: ByteStream,
    abort: tokio::sync::oneshot::Sender<Error>,
) -> impl futures::Stream<Item = pb::WriteRecordMessage> + Send + 'static {
    struct State {
        body: ByteStream,
        abort: Option<tokio::sync::oneshot::Sender<Error>>,
        hasher: Option<crc32fast::Hasher>,
    }
    let state = State {
        body: split_chunks(body),
        abort: Some(abort),
        hasher: Some(crc32fast::Hasher::new()),
    };
    let messages = futures::stream::unfold(state, |mut state| async move {
        let hasher = state.hasher.as_mut()?;
        match state.body.next().await {
            Some(Ok(chunk)) => {
                hasher.update(&chunk);
                Some((convert::write_chunk(chunk), state))
            }
            Some(Err(error)) => {
                // Never ends the stream: the call is dropped, so the node sees no end mark.
                if let Some(abort) = state.abort.take() {
                    let _ = abort.send(error);
                }
                futures::future::pending().await
            }
            None => {
                let checksum = state.hasher.take()?.finalize();
                Some((convert::write_end(checksum), state))
            }
        }
    });
    futures::stream::once(async move { pb::WriteRecordMessage::from(record) }).chain(messages)
}

#[async_trait]
impl StorageApi for RemoteStorage {
    async fn info(&self) -> Result<StorageInfo> {
        let reply = self.target.unary(self.client().server_info(pb::Empty {})).await?;
        reply.try_into().map_err(|e| self.target.bad_reply(e))
    }

    async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let reply = self
            .target
            .unary(self.client().list_buckets(pb::Empty {}))
            .await?;
        Ok(reply.buckets.into_iter().map(Into::into).collect())
    }

    async fn create_bucket(&self, name: &str, settings: BucketSettingsPatch) -> Result<()> {
        let request = pb::CreateBucketRequest {
            name: name.to_string(),
            settings: Some(settings.into()),
        };
        self.target
            .unary(self.client().create_bucket(request))
            .await
            .map(drop)
    }

    async fn get_bucket(&self, name: &str) -> Result<BucketDetails> {
        let reply = self
            .target
            .unary(self.client().get_bucket(bucket_request(name)))
            .await?;
        reply.try_into().map_err(|e| self.target.bad_reply(e))
    }

    async fn update_bucket(&self, name: &str, settings: BucketSettingsPatch) -> Result<()> {
        let request = pb::UpdateBucketRequest {
            name: name.to_string(),
            settings: Some(settings.into()),
        };
        self.target
            .unary(self.client().update_bucket(request))
            .await
            .map(drop)
    }

    async fn remove_bucket(&self, name: &str) -> Result<()> {
        self.target
            .unary(self.client().remove_bucket(bucket_request(name)))
            .await
            .map(drop)
    }

    async fn get_entry(&self, bucket: &str, entry: &str) -> Result<EntryInfo> {
        let request = pb::EntryRequest {
            bucket: bucket.to_string(),
            entry: entry.to_string(),
        };
        self.target
            .unary(self.client().get_entry(request))
            .await
            .map(Into::into)
    }

    async fn write_record(&self, record: WriteRecord, body: ByteStream) -> Result<()> {
        let (abort_tx, abort_rx) = tokio::sync::oneshot::channel();
        let messages = write_messages(record, body, abort_tx);
        let mut client = self.client();
        tokio::select! {
            reply = client.write_record(messages) => reply.map(drop).map_err(|status| self.target.error(status)),
            Ok(error) = abort_rx => Err(error),
        }
    }

    async fn record_info(&self, bucket: &str, entry: &str, timestamp: Option<u64>) -> Result<RecordInfo> {
        let request = record_request(bucket, entry, timestamp);
        self.target
            .unary(self.client().record_info(request))
            .await
            .map(Into::into)
    }

    async fn read_record(
        &self,
        bucket: &str,
        entry: &str,
        timestamp: Option<u64>,
    ) -> Result<(RecordInfo, ByteStream)> {
        let request = record_request(bucket, entry, timestamp);
        let mut client = self.client();
        let (messages, first) = self
            .target
            .bounded(async move {
                let mut messages = client.read_record(request).await?.into_inner();
                let first = messages.message().await?;
                Ok((messages, first))
            })
            .await?;
        let info = match first.and_then(|message| message.kind) {
            Some(pb::read_record_message::Kind::Meta(meta)) => RecordInfo::from(meta),
            _ => {
                let error = Error::unprocessable("The first message of a read is not the record's metadata");
                return Err(self.target.bad_reply(error));
            }
        };
        let target = self.target.clone();
        let body = messages
            .map(move |message| match message {
                Ok(pb::ReadRecordMessage {
                    kind: Some(pb::read_record_message::Kind::Chunk(chunk)),
                }) => Ok(chunk),
                Ok(_) => Err(target.bad_reply(Error::unprocessable(
                    "A read carries metadata in its first message only",
                ))),
                Err(status) => Err(target.error(status)),
            })
            .boxed();
        Ok((info, body))
    }

    async fn list_records(
        &self,
        bucket: &str,
        entry: &str,
        start: u64,
        stop: u64,
        limit: u32,
    ) -> Result<Vec<RecordInfo>> {
        let request = pb::ListRecordsRequest {
            bucket: bucket.to_string(),
            entry: entry.to_string(),
            start,
            stop,
            limit,
        };
        let reply = self.target.unary(self.client().list_records(request)).await?;
        Ok(reply.records.into_iter().map(Into::into).collect())
    }
}

/// A [`QueryApi`] served by a query service over gRPC.
#[derive(Debug, Clone)]
pub struct RemoteQuery {
    target: Target,
    client: QueryClient<Traced>,
}

impl RemoteQuery {
    /// A client of the query service at `url` (`http://host:port`). Does not connect yet, so it
    /// succeeds while the service is down; must be called inside a Tokio runtime.
    pub fn new(url: &str) -> Result<Self> {
        let (target, channel) = Target::connect("Query service", url)?;
        Ok(Self {
            target,
            client: QueryClient::with_interceptor(channel, propagate_context),
        })
    }
}

#[async_trait]
impl QueryApi for RemoteQuery {
    async fn create(&self, request: QueryRequest) -> Result<u64> {
        let request = qpb::CreateQueryRequest::from(request);
        let mut client = self.client.clone();
        self.target
            .unary(client.create(request))
            .await
            .map(|reply| reply.id)
    }

    async fn next(&self, id: u64, bucket: &str, entry: &str) -> Result<Option<NextRecord>> {
        let request = qpb::NextRequest {
            id,
            bucket: bucket.to_string(),
            entry: entry.to_string(),
        };
        let mut client = self.client.clone();
        self.target.unary(client.next(request)).await.map(Into::into)
    }
}
