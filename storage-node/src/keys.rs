//! Encoding of the index kept in sled.
//!
//! Each bucket has its own tree. In it, records are under `r <entry> 0 <ts big-endian>` (so a
//! range scan walks an entry's records in timestamp order) and the statistics of each block are
//! under `b <entry> 0 <block id big-endian>`. A write changes one record key; block statistics
//! are kept in memory and written at a clean shutdown (after any other, recovery counts them
//! again from the records), so they always agree with the index when it is read.

use proto::{Error, Result};

const RECORD: u8 = b'r';
const BLOCK: u8 = b'b';
const VERSION: u8 = 1;

fn key(kind: u8, entry: &str, number: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(entry.len() + 10);
    key.push(kind);
    key.extend_from_slice(entry.as_bytes());
    key.push(0);
    key.extend_from_slice(&number.to_be_bytes());
    key
}

pub fn record_key(entry: &str, timestamp: u64) -> Vec<u8> {
    key(RECORD, entry, timestamp)
}

pub fn block_key(entry: &str, block_id: u64) -> Vec<u8> {
    key(BLOCK, entry, block_id)
}

/// The prefix shared by all record keys of `entry`.
pub fn record_prefix(entry: &str) -> Vec<u8> {
    let mut prefix = key(RECORD, entry, 0);
    prefix.truncate(prefix.len() - 8);
    prefix
}

/// The prefix shared by all block keys of `entry`.
pub fn block_prefix_of(entry: &str) -> Vec<u8> {
    let mut prefix = key(BLOCK, entry, 0);
    prefix.truncate(prefix.len() - 8);
    prefix
}

/// The prefix shared by all block keys of the bucket.
pub fn block_prefix() -> [u8; 1] {
    [BLOCK]
}

/// Splits a key into its entry name and number.
pub fn split_key(key: &[u8]) -> Result<(String, u64)> {
    let bad = || Error::internal(format!("Corrupt index key {key:?}"));
    if key.len() < 10 || key[key.len() - 9] != 0 {
        return Err(bad());
    }
    let entry = std::str::from_utf8(&key[1..key.len() - 9]).map_err(|_| bad())?;
    let number = u64::from_be_bytes(key[key.len() - 8..].try_into().map_err(|_| bad())?);
    Ok((entry.to_string(), number))
}

/// Where a record's payload is, and what is known of it without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordValue {
    pub block_id: u64,
    /// Offset of the frame header in the block file.
    pub offset: u64,
    pub length: u64,
    /// Bytes of metadata between the frame header and the payload.
    pub meta_len: u32,
    pub checksum: u32,
    pub content_type: String,
}

impl RecordValue {
    /// Whether `header` is the committed frame of this record at `timestamp`.
    pub fn is_committed_as(&self, header: &crate::block::FrameHeader, timestamp: u64) -> bool {
        header.state == crate::block::FrameState::Committed
            && header.timestamp == timestamp
            && header.length == self.length
            && header.checksum == self.checksum
    }

    pub fn encode(&self) -> Vec<u8> {
        let ct = self.content_type.as_bytes();
        let ct_len = ct.len().min(u16::MAX as usize);
        let mut buf = Vec::with_capacity(35 + ct_len);
        buf.push(VERSION);
        buf.extend_from_slice(&self.block_id.to_le_bytes());
        buf.extend_from_slice(&self.offset.to_le_bytes());
        buf.extend_from_slice(&self.length.to_le_bytes());
        buf.extend_from_slice(&self.meta_len.to_le_bytes());
        buf.extend_from_slice(&self.checksum.to_le_bytes());
        buf.extend_from_slice(&(ct_len as u16).to_le_bytes());
        buf.extend_from_slice(&ct[..ct_len]);
        buf
    }

    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut reader = Reader { buf, pos: 0 };
        if reader.take(1)?[0] != VERSION {
            return Err(Error::internal("Unknown index record version"));
        }
        let block_id = reader.u64()?;
        let offset = reader.u64()?;
        let length = reader.u64()?;
        let meta_len = u32::from_le_bytes(reader.take(4)?.try_into().map_err(|_| corrupt())?);
        let checksum = u32::from_le_bytes(reader.take(4)?.try_into().map_err(|_| corrupt())?);
        let ct_len = u16::from_le_bytes(reader.take(2)?.try_into().map_err(|_| corrupt())?);
        let content_type =
            String::from_utf8(reader.take(ct_len as usize)?.to_vec()).map_err(|_| corrupt())?;
        Ok(Self {
            block_id,
            offset,
            length,
            meta_len,
            checksum,
            content_type,
        })
    }
}

/// Statistics of one block's committed records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub record_count: u64,
    /// Sum of the payload sizes.
    pub size: u64,
    pub min_ts: u64,
    pub max_ts: u64,
}

impl BlockStats {
    pub fn add(&mut self, timestamp: u64, size: u64) {
        if self.record_count == 0 {
            self.min_ts = timestamp;
            self.max_ts = timestamp;
        } else {
            self.min_ts = self.min_ts.min(timestamp);
            self.max_ts = self.max_ts.max(timestamp);
        }
        self.record_count += 1;
        self.size += size;
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(33);
        buf.push(VERSION);
        for value in [self.record_count, self.size, self.min_ts, self.max_ts] {
            buf.extend_from_slice(&value.to_le_bytes());
        }
        buf
    }

    pub fn decode(buf: &[u8]) -> Result<Self> {
        let mut reader = Reader { buf, pos: 0 };
        if reader.take(1)?[0] != VERSION {
            return Err(Error::internal("Unknown index block version"));
        }
        Ok(Self {
            record_count: reader.u64()?,
            size: reader.u64()?,
            min_ts: reader.u64()?,
            max_ts: reader.u64()?,
        })
    }
}

fn corrupt() -> Error {
    Error::internal("Corrupt index value")
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let slice = self.buf.get(self.pos..self.pos + n).ok_or_else(corrupt)?;
        self.pos += n;
        Ok(slice)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| corrupt())?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_sort_by_timestamp_within_an_entry() {
        let a = record_key("cam", 5);
        let b = record_key("cam", 256);
        let other = record_key("cam-2", 1);
        assert!(a < b);
        assert!(a.starts_with(&record_prefix("cam")));
        assert!(!other.starts_with(&record_prefix("cam")));
        assert_eq!(split_key(&b).unwrap(), ("cam".to_string(), 256));
    }

    #[test]
    fn values_round_trip() {
        let value = RecordValue {
            block_id: 3,
            offset: 96,
            length: 1 << 33,
            meta_len: 12,
            checksum: 42,
            content_type: "image/jpeg".into(),
        };
        assert_eq!(RecordValue::decode(&value.encode()).unwrap(), value);
        let mut stats = BlockStats::default();
        stats.add(10, 5);
        stats.add(3, 7);
        assert_eq!(
            stats,
            BlockStats {
                record_count: 2,
                size: 12,
                min_ts: 3,
                max_ts: 10
            }
        );
        assert_eq!(BlockStats::decode(&stats.encode()).unwrap(), stats);
        assert!(RecordValue::decode(&[1, 2, 3]).is_err());
    }
}
