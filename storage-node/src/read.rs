//! Reading a record's payload, checked against its checksum: a damaged record is an error, never
//! wrong bytes sent as if they were right. Records of up to one chunk are read once and checked;
//! up to 64 MiB they are checked before the first byte is sent (read twice, so the check costs no
//! memory), so a damaged one answers 500 naming it; larger ones are checked as they stream.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use proto::api::ByteStream;
use proto::{Error, Result};

use crate::block::{self, FrameHeader, HEADER_LEN};
use crate::keys::RecordValue;
use crate::util::{blocking, file_io, io_error};

/// Size of the chunks a read streams.
const READ_CHUNK: u64 = 256 * 1024;
/// Records up to this size are checked in full before their first byte is sent (a damaged one
/// answers 500). The check reads the record once more, so it is bounded: at 150 MB/s it takes
/// under half a second, well inside a client's or a gateway's time to wait for an answer.
const VERIFY_FIRST_BYTES: u64 = 64 * 1024 * 1024;

pub async fn payload_stream(path: PathBuf, value: RecordValue, timestamp: u64) -> Result<ByteStream> {
    let damaged = move |what: &str| Error::internal(format!("Record {timestamp} is damaged: {what}"));
    let length = value.length;
    let expected = value.checksum;
    let (file, payload_offset, first) = file_io(length, move || {
        let file = block::open_block(&path).map_err(|e| match e.kind() {
            // The quota removed the block since the index was read.
            std::io::ErrorKind::NotFound => Error::not_found(format!("No record with timestamp {timestamp}")),
            _ => io_error("Cannot open a block", e),
        })?;
        let mut header = [0u8; HEADER_LEN as usize];
        block::read_exact_at(&file, &mut header, value.offset)
            .map_err(|_| damaged("its frame is cut short"))?;
        let header = FrameHeader::decode(&header).ok_or_else(|| damaged("its frame header is unreadable"))?;
        if !value.is_committed_as(&header, timestamp) {
            return Err(damaged("its frame header does not match the index"));
        }
        let payload_offset = header.payload_offset(value.offset);
        if length <= READ_CHUNK {
            let mut payload = vec![0u8; length as usize];
            block::read_exact_at(&file, &mut payload, payload_offset)
                .map_err(|_| damaged("its payload is cut short"))?;
            if crc32fast::hash(&payload) != value.checksum {
                return Err(damaged("checksum mismatch"));
            }
            return Ok((file, payload_offset, Some(Bytes::from(payload))));
        }
        if length <= VERIFY_FIRST_BYTES {
            let checksum = block::checksum_of(&file, payload_offset, length)
                .map_err(|_| damaged("its payload is cut short"))?;
            if checksum != value.checksum {
                return Err(damaged("checksum mismatch"));
            }
        }
        Ok((file, payload_offset, None))
    })
    .await?;
    if let Some(payload) = first {
        return Ok(futures::stream::once(async move { Ok(payload) }).boxed());
    }
    let file = Arc::new(file);
    // Records checked up front stream as they are; larger ones are checked as they stream, and
    // a mismatch ends the stream before its last chunk, so no client ever has the whole of a
    // damaged record.
    let check_while_streaming = length > VERIFY_FIRST_BYTES;
    let chunks =
        futures::stream::try_unfold((0u64, crc32fast::Hasher::new()), move |(position, mut hasher)| {
            let file = file.clone();
            async move {
                if position == length {
                    return Ok(None);
                }
                let n = (length - position).min(READ_CHUNK);
                let offset = payload_offset + position;
                let chunk = blocking(move || {
                    let mut buf = vec![0u8; n as usize];
                    block::read_exact_at(&file, &mut buf, offset)
                        .map_err(|e| io_error("Cannot read a block", e))?;
                    Ok(Bytes::from(buf))
                })
                .await?;
                if check_while_streaming {
                    hasher.update(&chunk);
                    if position + n == length && hasher.clone().finalize() != expected {
                        return Err(damaged("checksum mismatch"));
                    }
                }
                Ok(Some((chunk, (position + n, hasher))))
            }
        });
    Ok(chunks.boxed())
}
