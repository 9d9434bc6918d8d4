//! The storage API served over gRPC: a thin adapter from the generated service to any
//! [`StorageApi`], and [`serve`], which runs it on a bound listener.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use proto::api::{ByteStream, StorageApi};
use proto::convert::{self, settings_patch, split_chunks};
use proto::pb::storage as pb;
use proto::pb::storage::storage_server::{Storage as StorageService, StorageServer};
use proto::types::WriteRecord;
use proto::{Error, Result};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// Pings on an idle-looking connection find a client that vanished mid-upload, whose stream would
/// otherwise hold its reservation open forever.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The generated gRPC service over a [`StorageApi`].
pub struct GrpcStorage {
    storage: Arc<dyn StorageApi>,
}

impl GrpcStorage {
    pub fn new(storage: Arc<dyn StorageApi>) -> Self {
        Self { storage }
    }
}

/// Serves `storage` over gRPC on `listener` until `shutdown` completes, then lets running calls
/// finish and returns.
pub async fn serve(
    storage: Arc<dyn StorageApi>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<StorageServer<GrpcStorage>>().await;
    tonic::transport::Server::builder()
        .layer(proto::telemetry::GrpcTracing)
        .http2_keepalive_interval(Some(KEEP_ALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEP_ALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(StorageServer::new(GrpcStorage::new(storage)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::internal(format!("The storage gRPC server failed: {e}")))
}

/// The payload of a write, from the messages after its header. It ends cleanly only at the end
/// mark, after checking the payload's checksum; a stream that stops before the mark or breaks is
/// an error, so the storage never commits an upload cut short, however many bytes arrived.
fn write_body(messages: Streaming<pb::WriteRecordMessage>) -> ByteStream {
    use pb::write_record_message::Kind;
    struct State {
        messages: Streaming<pb::WriteRecordMessage>,
        hasher: crc32fast::Hasher,
        ended: bool,
    }
    let state = State {
        messages,
        hasher: crc32fast::Hasher::new(),
        ended: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        if state.ended {
            return None;
        }
        let item = match state.messages.next().await {
            Some(Ok(pb::WriteRecordMessage {
                kind: Some(Kind::Chunk(chunk)),
            })) => {
                state.hasher.update(&chunk);
                Ok(chunk)
            }
            Some(Ok(pb::WriteRecordMessage {
                kind: Some(Kind::End(end)),
            })) => {
                state.ended = true;
                if state.hasher.clone().finalize() == end.checksum {
                    return None;
                }
                Err(Error::bad_request(
                    "The upload arrived damaged: its checksum does not match",
                ))
            }
            Some(Ok(_)) => Err(Error::bad_request(
                "A write carries its header in its first message only",
            )),
            Some(Err(status)) => Err(Error::bad_request(format!(
                "The upload was interrupted: {}",
                status.message()
            ))),
            None => Err(Error::bad_request("The upload was interrupted before its end")),
        };
        if item.is_err() {
            state.ended = true;
        }
        Some((item, state))
    })
    .boxed()
}

#[tonic::async_trait]
impl StorageService for GrpcStorage {
    async fn server_info(&self, _: Request<pb::Empty>) -> Result<Response<pb::ServerInfoReply>, Status> {
        Ok(Response::new(self.storage.info().await?.into()))
    }

    async fn list_buckets(&self, _: Request<pb::Empty>) -> Result<Response<pb::ListBucketsReply>, Status> {
        let buckets = self.storage.list_buckets().await?;
        Ok(Response::new(pb::ListBucketsReply {
            buckets: buckets.into_iter().map(Into::into).collect(),
        }))
    }

    async fn create_bucket(
        &self,
        request: Request<pb::CreateBucketRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        self.storage
            .create_bucket(&request.name, settings_patch(request.settings)?)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_bucket(
        &self,
        request: Request<pb::BucketRequest>,
    ) -> Result<Response<pb::BucketDetails>, Status> {
        Ok(Response::new(
            self.storage.get_bucket(&request.into_inner().name).await?.into(),
        ))
    }

    async fn update_bucket(
        &self,
        request: Request<pb::UpdateBucketRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let request = request.into_inner();
        self.storage
            .update_bucket(&request.name, settings_patch(request.settings)?)
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn remove_bucket(
        &self,
        request: Request<pb::BucketRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.storage.remove_bucket(&request.into_inner().name).await?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_entry(&self, request: Request<pb::EntryRequest>) -> Result<Response<pb::EntryInfo>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            self.storage
                .get_entry(&request.bucket, &request.entry)
                .await?
                .into(),
        ))
    }

    async fn write_record(
        &self,
        request: Request<Streaming<pb::WriteRecordMessage>>,
    ) -> Result<Response<pb::Empty>, Status> {
        let mut messages = request.into_inner();
        let header = match messages.message().await? {
            Some(pb::WriteRecordMessage {
                kind: Some(pb::write_record_message::Kind::Header(header)),
            }) => header,
            _ => return Err(Error::bad_request("The first message of a write must be its header").into()),
        };
        self.storage
            .write_record(WriteRecord::from(header), write_body(messages))
            .await?;
        Ok(Response::new(pb::Empty {}))
    }

    type ReadRecordStream = BoxStream<'static, Result<pb::ReadRecordMessage, Status>>;

    async fn read_record(
        &self,
        request: Request<pb::RecordRequest>,
    ) -> Result<Response<Self::ReadRecordStream>, Status> {
        let request = request.into_inner();
        let (info, body) = self
            .storage
            .read_record(&request.bucket, &request.entry, request.timestamp)
            .await?;
        let meta = futures::stream::once(async move { Ok(pb::ReadRecordMessage::from(info)) });
        let chunks = split_chunks(body).map(|chunk| chunk.map(convert::read_chunk).map_err(Status::from));
        Ok(Response::new(meta.chain(chunks).boxed()))
    }

    async fn record_info(
        &self,
        request: Request<pb::RecordRequest>,
    ) -> Result<Response<pb::RecordMeta>, Status> {
        let request = request.into_inner();
        let info = self
            .storage
            .record_info(&request.bucket, &request.entry, request.timestamp)
            .await?;
        Ok(Response::new(info.into()))
    }

    async fn list_records(
        &self,
        request: Request<pb::ListRecordsRequest>,
    ) -> Result<Response<pb::ListRecordsReply>, Status> {
        let request = request.into_inner();
        let records = self
            .storage
            .list_records(
                &request.bucket,
                &request.entry,
                request.start,
                request.stop,
                request.limit,
            )
            .await?;
        Ok(Response::new(pb::ListRecordsReply {
            records: records.into_iter().map(Into::into).collect(),
        }))
    }
}
