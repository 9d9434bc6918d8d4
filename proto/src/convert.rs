//! Conversions between generated gRPC messages and plain types.
//!
//! Plain to generated is infallible. Generated to plain is fallible where a message can carry
//! what the plain types cannot: an enum value this build does not know (a peer of a newer
//! version) or a nested message that must be present. Those map to an unprocessable error, never
//! a panic, because the bytes came from the network.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::api::ByteStream;
use crate::error::{Error, Result};
use crate::pb::query as qpb;
use crate::pb::storage as pb;
use crate::types::*;

/// The largest payload chunk put into one message. Well under tonic's default 4 MiB limit on a
/// decoded message, so neither side needs to raise it, and small enough to keep per-hop buffers
/// bounded whatever chunk sizes the producer of a stream chose.
pub const MAX_CHUNK: usize = 1 << 20;

/// `body` with every chunk larger than [`MAX_CHUNK`] cut into slices of at most that size. The
/// slices share the chunk's memory.
pub fn split_chunks(body: ByteStream) -> ByteStream {
    body.flat_map(|chunk| {
        let pieces: Vec<Result<Bytes>> = match chunk {
            Ok(chunk) if chunk.len() > MAX_CHUNK => (0..chunk.len())
                .step_by(MAX_CHUNK)
                .map(|start| Ok(chunk.slice(start..chunk.len().min(start + MAX_CHUNK))))
                .collect(),
            other => vec![other],
        };
        futures::stream::iter(pieces)
    })
    .boxed()
}

fn missing(message: &str, field: &str) -> Error {
    Error::unprocessable(format!("Message {message} has no {field}"))
}

// Storage.

impl From<QuotaType> for pb::QuotaType {
    fn from(value: QuotaType) -> Self {
        match value {
            QuotaType::None => pb::QuotaType::None,
            QuotaType::Fifo => pb::QuotaType::Fifo,
        }
    }
}

impl From<pb::QuotaType> for QuotaType {
    fn from(value: pb::QuotaType) -> Self {
        match value {
            pb::QuotaType::None => QuotaType::None,
            pb::QuotaType::Fifo => QuotaType::Fifo,
        }
    }
}

/// The quota type of a message's raw enum field.
pub fn quota_type(value: i32) -> Result<QuotaType> {
    pb::QuotaType::try_from(value)
        .map(QuotaType::from)
        .map_err(|_| Error::unprocessable(format!("Quota type {value} is unknown")))
}

impl From<BucketSettings> for pb::BucketSettings {
    fn from(value: BucketSettings) -> Self {
        Self {
            max_block_size: value.max_block_size,
            max_block_records: value.max_block_records,
            quota_type: pb::QuotaType::from(value.quota_type).into(),
            quota_size: value.quota_size,
        }
    }
}

impl TryFrom<pb::BucketSettings> for BucketSettings {
    type Error = Error;

    fn try_from(value: pb::BucketSettings) -> Result<Self> {
        Ok(Self {
            max_block_size: value.max_block_size,
            max_block_records: value.max_block_records,
            quota_type: quota_type(value.quota_type)?,
            quota_size: value.quota_size,
        })
    }
}

impl From<BucketSettingsPatch> for pb::BucketSettingsPatch {
    fn from(value: BucketSettingsPatch) -> Self {
        Self {
            max_block_size: value.max_block_size,
            max_block_records: value.max_block_records,
            quota_type: value.quota_type.map(|quota| pb::QuotaType::from(quota).into()),
            quota_size: value.quota_size,
        }
    }
}

impl TryFrom<pb::BucketSettingsPatch> for BucketSettingsPatch {
    type Error = Error;

    fn try_from(value: pb::BucketSettingsPatch) -> Result<Self> {
        Ok(Self {
            max_block_size: value.max_block_size,
            max_block_records: value.max_block_records,
            quota_type: value.quota_type.map(quota_type).transpose()?,
            quota_size: value.quota_size,
        })
    }
}

/// The patch of a request; an absent one changes nothing, as an empty one would.
pub fn settings_patch(value: Option<pb::BucketSettingsPatch>) -> Result<BucketSettingsPatch> {
    value
        .map(BucketSettingsPatch::try_from)
        .transpose()
        .map(Option::unwrap_or_default)
}

impl From<BucketInfo> for pb::BucketInfo {
    fn from(value: BucketInfo) -> Self {
        Self {
            name: value.name,
            entry_count: value.entry_count,
            size: value.size,
            oldest_record: value.oldest_record,
            latest_record: value.latest_record,
        }
    }
}

impl From<pb::BucketInfo> for BucketInfo {
    fn from(value: pb::BucketInfo) -> Self {
        Self {
            name: value.name,
            entry_count: value.entry_count,
            size: value.size,
            oldest_record: value.oldest_record,
            latest_record: value.latest_record,
        }
    }
}

impl From<EntryInfo> for pb::EntryInfo {
    fn from(value: EntryInfo) -> Self {
        Self {
            name: value.name,
            size: value.size,
            record_count: value.record_count,
            block_count: value.block_count,
            oldest_record: value.oldest_record,
            latest_record: value.latest_record,
        }
    }
}

impl From<pb::EntryInfo> for EntryInfo {
    fn from(value: pb::EntryInfo) -> Self {
        Self {
            name: value.name,
            size: value.size,
            record_count: value.record_count,
            block_count: value.block_count,
            oldest_record: value.oldest_record,
            latest_record: value.latest_record,
        }
    }
}

impl From<BucketDetails> for pb::BucketDetails {
    fn from(value: BucketDetails) -> Self {
        Self {
            settings: Some(value.settings.into()),
            info: Some(value.info.into()),
            entries: value.entries.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pb::BucketDetails> for BucketDetails {
    type Error = Error;

    /// Settings and info are always sent; a default in their place would show a user values the
    /// bucket does not have.
    fn try_from(value: pb::BucketDetails) -> Result<Self> {
        Ok(Self {
            settings: value
                .settings
                .ok_or_else(|| missing("BucketDetails", "settings"))?
                .try_into()?,
            info: value.info.ok_or_else(|| missing("BucketDetails", "info"))?.into(),
            entries: value.entries.into_iter().map(Into::into).collect(),
        })
    }
}

impl From<StorageInfo> for pb::ServerInfoReply {
    fn from(value: StorageInfo) -> Self {
        Self {
            bucket_count: value.bucket_count,
            usage: value.usage,
            oldest_record: value.oldest_record,
            latest_record: value.latest_record,
            default_settings: Some(value.default_settings.into()),
        }
    }
}

impl TryFrom<pb::ServerInfoReply> for StorageInfo {
    type Error = Error;

    fn try_from(value: pb::ServerInfoReply) -> Result<Self> {
        Ok(Self {
            bucket_count: value.bucket_count,
            usage: value.usage,
            oldest_record: value.oldest_record,
            latest_record: value.latest_record,
            default_settings: value
                .default_settings
                .ok_or_else(|| missing("ServerInfoReply", "default_settings"))?
                .try_into()?,
        })
    }
}

impl From<RecordInfo> for pb::RecordMeta {
    fn from(value: RecordInfo) -> Self {
        Self {
            timestamp: value.timestamp,
            size: value.size,
            content_type: value.content_type,
        }
    }
}

impl From<pb::RecordMeta> for RecordInfo {
    fn from(value: pb::RecordMeta) -> Self {
        Self {
            timestamp: value.timestamp,
            size: value.size,
            content_type: value.content_type,
        }
    }
}

impl From<WriteRecord> for pb::WriteRecordHeader {
    fn from(value: WriteRecord) -> Self {
        Self {
            bucket: value.bucket,
            entry: value.entry,
            timestamp: value.timestamp,
            content_length: value.content_length,
            content_type: value.content_type,
        }
    }
}

impl From<pb::WriteRecordHeader> for WriteRecord {
    fn from(value: pb::WriteRecordHeader) -> Self {
        Self {
            bucket: value.bucket,
            entry: value.entry,
            timestamp: value.timestamp,
            content_length: value.content_length,
            content_type: value.content_type,
        }
    }
}

impl From<WriteRecord> for pb::WriteRecordMessage {
    fn from(value: WriteRecord) -> Self {
        Self {
            kind: Some(pb::write_record_message::Kind::Header(value.into())),
        }
    }
}

impl From<RecordInfo> for pb::ReadRecordMessage {
    fn from(value: RecordInfo) -> Self {
        Self {
            kind: Some(pb::read_record_message::Kind::Meta(value.into())),
        }
    }
}

/// A payload chunk as a message of a write.
pub fn write_chunk(chunk: Bytes) -> pb::WriteRecordMessage {
    pb::WriteRecordMessage {
        kind: Some(pb::write_record_message::Kind::Chunk(chunk)),
    }
}

/// The last message of a write.
pub fn write_end(checksum: u32) -> pb::WriteRecordMessage {
    pb::WriteRecordMessage {
        kind: Some(pb::write_record_message::Kind::End(pb::WriteRecordEnd {
            checksum,
        })),
    }
}

/// A payload chunk as a message of a read.
pub fn read_chunk(chunk: Bytes) -> pb::ReadRecordMessage {
    pb::ReadRecordMessage {
        kind: Some(pb::read_record_message::Kind::Chunk(chunk)),
    }
}

// Query.

impl From<QueryRequest> for qpb::CreateQueryRequest {
    fn from(value: QueryRequest) -> Self {
        Self {
            bucket: value.bucket,
            entry: value.entry,
            start: value.start,
            stop: value.stop,
            // Rounded up, so that a TTL under a second does not become "expired at once".
            ttl_seconds: value.ttl.as_secs() + u64::from(value.ttl.subsec_nanos() > 0),
        }
    }
}

impl From<qpb::CreateQueryRequest> for QueryRequest {
    fn from(value: qpb::CreateQueryRequest) -> Self {
        Self {
            bucket: value.bucket,
            entry: value.entry,
            start: value.start,
            stop: value.stop,
            ttl: Duration::from_secs(value.ttl_seconds),
        }
    }
}

impl From<NextRecord> for qpb::NextRecord {
    fn from(value: NextRecord) -> Self {
        Self {
            timestamp: value.timestamp,
            last: value.last,
        }
    }
}

impl From<qpb::NextRecord> for NextRecord {
    fn from(value: qpb::NextRecord) -> Self {
        Self {
            timestamp: value.timestamp,
            last: value.last,
        }
    }
}

impl From<Option<NextRecord>> for qpb::NextReply {
    fn from(value: Option<NextRecord>) -> Self {
        Self {
            record: value.map(Into::into),
        }
    }
}

impl From<qpb::NextReply> for Option<NextRecord> {
    fn from(value: qpb::NextReply) -> Self {
        value.record.map(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn settings_round_trip() {
        let settings = BucketSettings {
            max_block_size: 7,
            max_block_records: 8,
            quota_type: QuotaType::Fifo,
            quota_size: 9,
        };
        let back = BucketSettings::try_from(pb::BucketSettings::from(settings.clone())).unwrap();
        assert_eq!(back, settings);

        let patch = BucketSettingsPatch {
            quota_type: Some(QuotaType::None),
            quota_size: Some(3),
            ..Default::default()
        };
        let back = BucketSettingsPatch::try_from(pb::BucketSettingsPatch::from(patch.clone())).unwrap();
        assert_eq!(back, patch);
    }

    #[test]
    fn unknown_quota_type_is_unprocessable() {
        let message = pb::BucketSettings {
            quota_type: 42,
            ..Default::default()
        };
        let error = BucketSettings::try_from(message).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unprocessable);
        assert_eq!(error.message, "Quota type 42 is unknown");

        let patch = pb::BucketSettingsPatch {
            quota_type: Some(-1),
            ..Default::default()
        };
        assert_eq!(
            BucketSettingsPatch::try_from(patch).unwrap_err().kind,
            ErrorKind::Unprocessable
        );
    }

    #[test]
    fn absent_patch_changes_nothing() {
        assert_eq!(settings_patch(None).unwrap(), BucketSettingsPatch::default());
    }

    #[test]
    fn details_without_settings_are_refused() {
        let message = pb::BucketDetails {
            settings: None,
            info: Some(Default::default()),
            entries: vec![],
        };
        let error = BucketDetails::try_from(message).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Unprocessable);
        assert!(error.message.contains("settings"), "{}", error.message);
    }

    #[test]
    fn details_round_trip() {
        let details = BucketDetails {
            settings: BucketSettings::default(),
            info: BucketInfo {
                name: "b".into(),
                entry_count: 1,
                size: 2,
                oldest_record: 3,
                latest_record: 4,
            },
            entries: vec![EntryInfo {
                name: "e".into(),
                size: 2,
                record_count: 1,
                block_count: 1,
                oldest_record: 3,
                latest_record: 4,
            }],
        };
        assert_eq!(
            BucketDetails::try_from(pb::BucketDetails::from(details.clone())).unwrap(),
            details
        );
    }

    #[test]
    fn sub_second_ttl_is_rounded_up() {
        let request = QueryRequest {
            bucket: "b".into(),
            entry: "e".into(),
            start: None,
            stop: Some(5),
            ttl: Duration::from_millis(1500),
        };
        let message = qpb::CreateQueryRequest::from(request);
        assert_eq!(message.ttl_seconds, 2);
        assert_eq!(message.start, None);
        assert_eq!(QueryRequest::from(message).ttl, Duration::from_secs(2));
    }

    #[tokio::test]
    async fn large_chunks_are_split_without_losing_bytes() {
        let data: Vec<u8> = (0..(2 * MAX_CHUNK + 10)).map(|i| i as u8).collect();
        let body =
            futures::stream::iter(vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from(data.clone()))]).boxed();
        let chunks: Vec<Bytes> = split_chunks(body).map(|chunk| chunk.unwrap()).collect().await;
        assert!(chunks.iter().all(|chunk| chunk.len() <= MAX_CHUNK));
        assert_eq!(chunks.len(), 4);
        assert_eq!(chunks.concat(), [b"ab".as_slice(), &data].concat());
    }
}
