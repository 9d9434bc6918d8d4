//! Bringing the index back in line with the block files after an unclean shutdown, or building it
//! anew from them when it was lost.
//!
//! The block files are the truth: a committed frame whose checksums match is a record. Frames
//! whose bytes reached a block but whose index entry did not reach the disk are indexed again;
//! index entries whose frame is not a committed frame (possible after a power loss) are dropped;
//! then every block's statistics are counted again from the index.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::path::Path;

use proto::Result;

use crate::block::{self, Frame, FrameHeader, FrameState, HEADER_LEN};
use crate::keys::{self, BlockStats, RecordValue};
use crate::util::{index_error, io_error};

/// What recovery changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Records found in the blocks and added to the index.
    pub reindexed: u64,
    /// Index entries removed because their frame is not a committed record.
    pub dropped: u64,
    /// Committed frames left out because their checksum does not match.
    pub damaged: u64,
    /// Blocks whose last frame was cut short.
    pub torn_blocks: u64,
}

impl Report {
    pub fn add(&mut self, other: Report) {
        self.reindexed += other.reindexed;
        self.dropped += other.dropped;
        self.damaged += other.damaged;
        self.torn_blocks += other.torn_blocks;
    }

    pub fn is_empty(&self) -> bool {
        *self == Report::default()
    }
}

/// Reconciles the index tree of the bucket in `bucket_dir` with its block files.
pub fn reconcile_bucket(bucket_dir: &Path, tree: &sled::Tree) -> Result<Report> {
    let mut entries = BTreeSet::new();
    for item in std::fs::read_dir(bucket_dir).map_err(|e| io_error("Cannot list a bucket", e))? {
        let item = item.map_err(|e| io_error("Cannot list a bucket", e))?;
        if item.path().is_dir()
            && let Ok(name) = item.file_name().into_string()
        {
            entries.insert(name);
        }
    }
    // Entries the index knows but whose directory is gone lose their index entries.
    for item in tree.scan_prefix(keys::block_prefix()) {
        let (key, _) = item.map_err(index_error)?;
        if let Ok((entry, _)) = keys::split_key(&key) {
            entries.insert(entry);
        }
    }
    let mut report = Report::default();
    for entry in entries {
        report.add(reconcile_entry(&bucket_dir.join(&entry), &entry, tree)?);
    }
    Ok(report)
}

struct ScannedBlock {
    file: File,
    /// Where the scan stopped when the block's tail is torn: frames at or past it were not seen.
    torn_at: Option<u64>,
}

fn reconcile_entry(entry_dir: &Path, entry: &str, tree: &sled::Tree) -> Result<Report> {
    let mut report = Report::default();
    let mut blocks: HashMap<u64, ScannedBlock> = HashMap::new();
    let mut indexed: HashSet<(u64, u64)> = HashSet::new();
    let mut unindexed: Vec<(u64, Frame)> = Vec::new();

    let mut block_files: Vec<(u64, std::path::PathBuf)> = match std::fs::read_dir(entry_dir) {
        Ok(items) => items
            .flatten()
            .filter_map(|item| block::block_id(&item.path()).map(|id| (id, item.path())))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error("Cannot list an entry", e)),
    };
    block_files.sort();
    for (block_id, path) in block_files {
        let file = block::open_block(&path).map_err(|e| io_error("Cannot open a block", e))?;
        let (frames, clean) = block::scan(&file).map_err(|e| io_error("Cannot read a block", e))?;
        let torn_at = (!clean).then(|| frames.last().map_or(0, |f| f.offset + f.header.frame_len()));
        if torn_at.is_some() {
            report.torn_blocks += 1;
            tracing::warn!(block = %path.display(), "block ends in a frame cut short");
        }
        for frame in frames
            .into_iter()
            .filter(|f| f.header.state == FrameState::Committed)
        {
            let in_index = tree
                .get(keys::record_key(entry, frame.header.timestamp))
                .map_err(index_error)?
                .and_then(|value| RecordValue::decode(&value).ok())
                .is_some_and(|value| (value.block_id, value.offset) == (block_id, frame.offset));
            if in_index {
                indexed.insert((block_id, frame.offset));
            } else {
                unindexed.push((block_id, frame));
            }
        }
        blocks.insert(block_id, ScannedBlock { file, torn_at });
    }

    // Index entries without a committed frame go.
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix(keys::record_prefix(entry)) {
        let (key, value) = item.map_err(index_error)?;
        let keep = match (RecordValue::decode(&value), keys::split_key(&key)) {
            (Ok(value), Ok((_, timestamp))) => {
                indexed.contains(&(value.block_id, value.offset))
                    || blocks.get(&value.block_id).is_some_and(|block| {
                        // Past a torn tail the scan saw nothing: ask the frame itself.
                        block.torn_at.is_some_and(|torn_at| value.offset >= torn_at)
                            && frame_matches(&block.file, &value, timestamp)
                    })
            }
            _ => false,
        };
        if !keep {
            batch.remove(key);
            report.dropped += 1;
        }
    }
    tree.apply_batch(batch).map_err(index_error)?;

    // Committed frames missing from the index come back if they are intact.
    for (block_id, frame) in unindexed {
        let key = keys::record_key(entry, frame.header.timestamp);
        if tree.contains_key(&key).map_err(index_error)? {
            continue;
        }
        let Some(block) = blocks.get(&block_id) else {
            continue;
        };
        let header = frame.header;
        let intact = frame.meta.is_some()
            && block::checksum_of(&block.file, header.payload_offset(frame.offset), header.length)
                .is_ok_and(|checksum| checksum == header.checksum);
        let Some(meta) = frame.meta.filter(|_| intact) else {
            report.damaged += 1;
            tracing::warn!(
                entry,
                timestamp = header.timestamp,
                block_id,
                "a damaged record is left out"
            );
            continue;
        };
        let value = RecordValue {
            block_id,
            offset: frame.offset,
            length: header.length,
            meta_len: header.meta_len,
            checksum: header.checksum,
            content_type: meta.content_type,
        };
        tree.insert(key, value.encode()).map_err(index_error)?;
        report.reindexed += 1;
    }

    // Block statistics, counted again from the index.
    let mut stats: BTreeMap<u64, BlockStats> = BTreeMap::new();
    for item in tree.scan_prefix(keys::record_prefix(entry)) {
        let (key, value) = item.map_err(index_error)?;
        let (_, timestamp) = keys::split_key(&key)?;
        let value = RecordValue::decode(&value)?;
        stats
            .entry(value.block_id)
            .or_default()
            .add(timestamp, value.length);
    }
    let mut batch = sled::Batch::default();
    for item in tree.scan_prefix(keys::block_prefix_of(entry)) {
        batch.remove(item.map_err(index_error)?.0);
    }
    for (block_id, stats) in stats {
        batch.insert(keys::block_key(entry, block_id), stats.encode());
    }
    tree.apply_batch(batch).map_err(index_error)?;
    Ok(report)
}

/// Whether the block holds, at the value's offset, the committed frame the value describes.
fn frame_matches(file: &File, value: &RecordValue, timestamp: u64) -> bool {
    let mut buf = [0u8; HEADER_LEN as usize];
    block::read_exact_at(file, &mut buf, value.offset).is_ok()
        && FrameHeader::decode(&buf).is_some_and(|header| value.is_committed_as(&header, timestamp))
}
