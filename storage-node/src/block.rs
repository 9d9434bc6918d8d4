//! Block files: append-only files of framed records.
//!
//! A frame is a fixed header followed by the payload. The header is written twice: `Pending`
//! when the space is reserved (so a scan can step over a record still being written, or one
//! whose upload failed), and `Committed` with the payload's checksum once all of it is on disk.
//! A frame whose write was given up is marked `Discarded`. Only committed frames whose checksum
//! matches are records; that is what lets the index be rebuilt from the blocks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const HEADER_LEN: u64 = 32;
const MAGIC: u32 = 0x5253_4231; // "RSB1"

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
    pub length: u64,
    pub checksum: u32,
}

impl FrameHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut buf = [0u8; HEADER_LEN as usize];
        buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[4] = self.state as u8;
        buf[8..16].copy_from_slice(&self.timestamp.to_le_bytes());
        buf[16..24].copy_from_slice(&self.length.to_le_bytes());
        buf[24..28].copy_from_slice(&self.checksum.to_le_bytes());
        let header_crc = crc32fast::hash(&buf[0..28]);
        buf[28..32].copy_from_slice(&header_crc.to_le_bytes());
        buf
    }

    /// `None` when the bytes are not an intact header (torn write, zeros, garbage).
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let buf: &[u8; HEADER_LEN as usize] = buf.get(..HEADER_LEN as usize)?.try_into().ok()?;
        let word =
            |range: std::ops::Range<usize>| u32::from_le_bytes(buf[range].try_into().unwrap_or_default());
        let long =
            |range: std::ops::Range<usize>| u64::from_le_bytes(buf[range].try_into().unwrap_or_default());
        if word(0..4) != MAGIC || word(28..32) != crc32fast::hash(&buf[0..28]) {
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
            timestamp: long(8..16),
            length: long(16..24),
            checksum: word(24..28),
        })
    }
}

pub fn block_path(entry_dir: &Path, block_id: u64) -> PathBuf {
    entry_dir.join(format!("{block_id:020}.blk"))
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

pub fn write_header(file: &File, offset: u64, header: &FrameHeader) -> io::Result<()> {
    file.write_all_at(&header.encode(), offset)
}

/// Reads exactly `buf.len()` bytes at `offset`; a file that ends early is an error.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    file.read_exact_at(buf, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let header = FrameHeader {
            state: FrameState::Committed,
            timestamp: 1 << 50,
            length: 12345,
            checksum: 0xdead_beef,
        };
        assert_eq!(FrameHeader::decode(&header.encode()), Some(header));
    }

    #[test]
    fn damaged_headers_are_rejected() {
        let header = FrameHeader {
            state: FrameState::Pending,
            timestamp: 7,
            length: 3,
            checksum: 0,
        };
        let mut bytes = header.encode();
        bytes[10] ^= 1;
        assert_eq!(FrameHeader::decode(&bytes), None);
        assert_eq!(FrameHeader::decode(&[0u8; HEADER_LEN as usize]), None);
        assert_eq!(FrameHeader::decode(&bytes[..10]), None);
    }
}
