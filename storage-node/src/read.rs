//! Reading a record's payload. The payload is checked against its checksum before the first
//! byte is handed out, so a damaged record is an error (500 naming it), never wrong bytes sent as
//! if they were right. Records of up to one chunk are read once; larger ones are read twice (check,
//! then stream) so that the check costs no memory.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use proto::api::ByteStream;
use proto::{Error, Result};

use crate::block::{self, FrameHeader, FrameState, HEADER_LEN};
use crate::keys::RecordValue;
use crate::util::{blocking, file_io, io_error};

/// Size of the chunks a read streams.
const READ_CHUNK: u64 = 256 * 1024;

pub async fn payload_stream(path: PathBuf, value: RecordValue, timestamp: u64) -> Result<ByteStream> {
    let damaged = move |what: &str| Error::internal(format!("Record {timestamp} is damaged: {what}"));
    let length = value.length;
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
        if header.state != FrameState::Committed
            || header.timestamp != timestamp
            || header.length != value.length
            || header.checksum != value.checksum
        {
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
        let checksum = block::checksum_of(&file, payload_offset, length)
            .map_err(|_| damaged("its payload is cut short"))?;
        if checksum != value.checksum {
            return Err(damaged("checksum mismatch"));
        }
        Ok((file, payload_offset, None))
    })
    .await?;
    if let Some(payload) = first {
        return Ok(futures::stream::once(async move { Ok(payload) }).boxed());
    }
    let file = Arc::new(file);
    let chunks = futures::stream::try_unfold(0u64, move |position| {
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
            Ok(Some((chunk, position + n)))
        }
    });
    Ok(chunks.boxed())
}
