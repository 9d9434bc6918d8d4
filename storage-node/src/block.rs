//! Block files: append-only files of framed records.
//!
//! A frame is a fixed header, the record's metadata (content type, ...) and its payload. The
//! header is written twice: `Pending` (with the metadata) when the space is reserved, so a scan
//! can step over a record still being written or whose upload failed, and `Committed` with the
//! payload's checksum once all of it is in the file. A frame whose write was given up is marked
//! `Discarded`. Only committed frames whose checksums match are records; that is what lets the
//! index be rebuilt from the blocks alone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const HEADER_LEN: u64 = 40;
const MAGIC: u32 = 0x5253_4232; // "RSB2"

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameState {
    Pending = 1,
    Committed = 2,
    Discarded = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub state: FrameState,
    pub timestamp: u64,
    /// Payload bytes.
    pub length: u64,
    /// Metadata bytes between the header and the payload.
    pub meta_len: u32,
    /// CRC-32 of the payload (0 until committed).
    pub checksum: u32,
    /// CRC-32 of the metadata.
    pub meta_checksum: u32,
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut buf = [0u8; HEADER_LEN as usize];
        buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[4] = self.state as u8;
        buf[8..16].copy_from_slice(&self.timestamp.to_le_bytes());
        buf[16..24].copy_from_slice(&self.length.to_le_bytes());
        buf[24..28].copy_from_slice(&self.meta_len.to_le_bytes());
        buf[28..32].copy_from_slice(&self.checksum.to_le_bytes());
        buf[32..36].copy_from_slice(&self.meta_checksum.to_le_bytes());
        let header_crc = crc32fast::hash(&buf[0..36]);
        buf[36..40].copy_from_slice(&header_crc.to_le_bytes());
        buf
    }

    /// `None` when the bytes are not an intact header (torn write, zeros, garbage).
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let buf = buf.get(..HEADER_LEN as usize)?;
        let word = |at: usize| Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?));
        let long = |at: usize| Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?));
        if word(0)? != MAGIC || word(36)? != crc32fast::hash(&buf[0..36]) {
            return None;
        }
        let state = match buf[4] {
            1 => FrameState::Pending,
            2 => FrameState::Committed,
            3 => FrameState::Discarded,
            _ => return None,
        };
        Some(FrameHeader {
            state,
            timestamp: long(8)?,
            length: long(16)?,
            meta_len: word(24)?,
            checksum: word(28)?,
            meta_checksum: word(32)?,
        })
    }

    /// Bytes the whole frame takes in the block.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN + self.meta_len as u64 + self.length
    }

    /// Offset of the payload in the block, for a frame at `offset`.
    pub fn payload_offset(&self, offset: u64) -> u64 {
        offset + HEADER_LEN + self.meta_len as u64
    }
}

/// What a frame says about its record besides the payload. Encoded after the header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordMeta {
    pub content_type: String,
}

impl RecordMeta {
    pub fn encode(&self) -> Vec<u8> {
        let ct = self.content_type.as_bytes();
        let ct = &ct[..ct.len().min(u16::MAX as usize)];
        let mut buf = Vec::with_capacity(2 + ct.len());
        buf.extend_from_slice(&(ct.len() as u16).to_le_bytes());
        buf.extend_from_slice(ct);
        buf
    }

    pub fn decode(buf: &[u8]) -> Option<Self> {
        let len = u16::from_le_bytes(buf.get(0..2)?.try_into().ok()?) as usize;
        let content_type = String::from_utf8(buf.get(2..2 + len)?.to_vec()).ok()?;
        Some(RecordMeta { content_type })
    }
}

pub fn block_path(entry_dir: &Path, block_id: u64) -> PathBuf {
    entry_dir.join(format!("{block_id:020}.blk"))
}

/// The id of a block file's name, `None` for other files.
pub fn block_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_suffix(".blk")?.parse().ok()
}

pub fn create_block(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
}

pub fn open_block(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Writes a pending header followed by the metadata, in one write.
pub fn write_pending(file: &File, offset: u64, header: &FrameHeader, meta: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(HEADER_LEN as usize + meta.len());
    buf.extend_from_slice(&header.encode());
    buf.extend_from_slice(meta);
    file.write_all_at(&buf, offset)
}

pub fn write_header(file: &File, offset: u64, header: &FrameHeader) -> io::Result<()> {
    file.write_all_at(&header.encode(), offset)
}

/// Reads exactly `buf.len()` bytes at `offset`; a file that ends early is an error.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

/// One frame found by [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub offset: u64,
    pub header: FrameHeader,
    /// `None` when the metadata does not match its checksum.
    pub meta: Option<RecordMeta>,
}

/// The frames of a block in file order. Stops at the first header that is not intact (the tail
/// of a write cut short) or that points past the end of the file; returns the frames before it
/// and whether the block ended cleanly.
pub fn scan(file: &File) -> io::Result<(Vec<Frame>, bool)> {
    let file_len = file.metadata()?.len();
    let mut frames = Vec::new();
    let mut offset = 0u64;
    let mut header_buf = [0u8; HEADER_LEN as usize];
    while offset < file_len {
        if offset + HEADER_LEN > file_len {
            return Ok((frames, false));
        }
        file.read_exact_at(&mut header_buf, offset)?;
        let Some(header) = FrameHeader::decode(&header_buf) else {
            return Ok((frames, false));
        };
        let mut meta_buf = vec![0u8; header.meta_len as usize];
        if header.payload_offset(offset) > file_len {
            return Ok((frames, false));
        }
        file.read_exact_at(&mut meta_buf, offset + HEADER_LEN)?;
        let meta = (crc32fast::hash(&meta_buf) == header.meta_checksum)
            .then(|| RecordMeta::decode(&meta_buf))
            .flatten();
        frames.push(Frame { offset, header, meta });
        offset += header.frame_len();
    }
    Ok((frames, offset == file_len))
}

/// The CRC-32 of `length` bytes at `offset`, read in bounded chunks.
pub fn checksum_of(file: &File, offset: u64, length: u64) -> io::Result<u32> {
    const CHUNK: u64 = 1 << 20;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; CHUNK.min(length) as usize];
    let mut done = 0u64;
    while done < length {
        let n = CHUNK.min(length - done) as usize;
        file.read_exact_at(&mut buf[..n], offset + done)?;
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(state: FrameState, timestamp: u64, length: u64, meta: &[u8]) -> FrameHeader {
        FrameHeader {
            state,
            timestamp,
            length,
            meta_len: meta.len() as u32,
            checksum: 0,
            meta_checksum: crc32fast::hash(meta),
        }
    }

    #[test]
    fn header_round_trips() {
        let header = FrameHeader {
            checksum: 0xdead_beef,
            ..header(FrameState::Committed, 1 << 50, 12345, b"meta")
        };
        assert_eq!(FrameHeader::decode(&header.encode()), Some(header));
    }

    #[test]
    fn damaged_headers_are_rejected() {
        let mut bytes = header(FrameState::Pending, 7, 3, b"").encode();
        bytes[10] ^= 1;
        assert_eq!(FrameHeader::decode(&bytes), None);
        assert_eq!(FrameHeader::decode(&[0u8; HEADER_LEN as usize]), None);
        assert_eq!(FrameHeader::decode(&bytes[..10]), None);
    }

    #[test]
    fn scan_walks_frames_and_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = block_path(dir.path(), 1);
        let file = create_block(&path).unwrap();
        let meta = RecordMeta {
            content_type: "text/plain".into(),
        }
        .encode();
        let first = header(FrameState::Committed, 5, 3, &meta);
        write_pending(&file, 0, &first, &meta).unwrap();
        file.write_all_at(b"abc", first.payload_offset(0)).unwrap();
        let second_at = first.frame_len();
        let second = header(FrameState::Discarded, 6, 2, &meta);
        write_pending(&file, second_at, &second, &meta).unwrap();
        file.write_all_at(b"xy", second.payload_offset(second_at))
            .unwrap();
        let (frames, clean) = scan(&file).unwrap();
        assert!(clean);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].meta.as_ref().unwrap().content_type, "text/plain");
        assert_eq!(
            (frames[1].offset, frames[1].header.state),
            (second_at, FrameState::Discarded)
        );

        // Half a header at the end: the frames before it are still found.
        file.write_all_at(&[0x32, 0x42], second_at + second.frame_len())
            .unwrap();
        let (frames, clean) = scan(&file).unwrap();
        assert!(!clean);
        assert_eq!(frames.len(), 2);
        assert_eq!(
            checksum_of(&file, first.payload_offset(0), 3).unwrap(),
            crc32fast::hash(b"abc")
        );
    }
}
