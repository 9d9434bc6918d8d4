//! Buckets and their entries: where records are appended, committed and removed.
//!
//! Writes reserve space for the whole record (its length is announced up front) under a short
//! per-entry lock, then stream the payload into that space without holding any lock, so many
//! clients can write one entry at once. The record becomes visible only when its index entry is
//! committed, after every byte reached the block file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use proto::api::ByteStream;
use proto::types::*;
use proto::{Error, Result};

use crate::block::{self, FrameHeader, FrameState, HEADER_LEN};
use crate::keys::{self, BlockStats, RecordValue};
use crate::util::{blocking, file_io, index_error, io_error, lock, read, write_atomically};

/// Payload bytes gathered before one write to the block file.
const WRITE_BUFFER: usize = 1 << 20;
/// The file in a bucket's directory that holds its settings.
pub const SETTINGS_FILE: &str = "settings.json";

pub struct Bucket {
    pub name: String,
    pub dir: PathBuf,
    pub tree: sled::Tree,
    settings: RwLock<BucketSettings>,
    entries: RwLock<BTreeMap<String, Arc<Entry>>>,
    pub removed: AtomicBool,
    /// One quota enforcement at a time, so that two writers do not both remove blocks for the
    /// same excess.
    quota: Mutex<()>,
}

pub struct Entry {
    pub name: String,
    pub dir: PathBuf,
    state: Mutex<EntryState>,
}

#[derive(Default)]
struct EntryState {
    /// Statistics of the blocks that hold committed records.
    blocks: BTreeMap<u64, BlockStats>,
    /// The block new records are appended to; `None` until the next write opens one.
    active: Option<ActiveBlock>,
    next_block_id: u64,
    /// Records reserved but not yet committed or given up, per block: such blocks are not
    /// removed by the quota.
    in_flight: HashMap<u64, u64>,
}

struct ActiveBlock {
    id: u64,
    file: Arc<File>,
    len: u64,
    records: u64,
}

pub fn encode_settings(settings: &BucketSettings) -> Vec<u8> {
    serde_json::to_vec_pretty(settings).unwrap_or_default()
}

pub fn decode_settings(name: &str, bytes: &[u8]) -> Result<BucketSettings> {
    #[derive(serde::Deserialize)]
    struct Stored {
        max_block_size: u64,
        max_block_records: u64,
        quota_type: String,
        quota_size: u64,
    }
    let stored: Stored = serde_json::from_slice(bytes)
        .map_err(|e| Error::internal(format!("Settings of bucket '{name}' are unreadable: {e}")))?;
    Ok(BucketSettings {
        max_block_size: stored.max_block_size,
        max_block_records: stored.max_block_records,
        quota_type: QuotaType::parse(&stored.quota_type).unwrap_or(QuotaType::None),
        quota_size: stored.quota_size,
    })
}

pub fn validate_settings(settings: &BucketSettings) -> Result<()> {
    if settings.max_block_size == 0 {
        return Err(Error::unprocessable("max_block_size must be at least 1"));
    }
    if settings.max_block_records == 0 {
        return Err(Error::unprocessable("max_block_records must be at least 1"));
    }
    Ok(())
}

impl Bucket {
    /// A bucket from its directory, its settings and its index tree (whose block statistics
    /// give the entries).
    pub fn load(name: &str, dir: PathBuf, tree: sled::Tree, settings: BucketSettings) -> Result<Bucket> {
        let mut entries: BTreeMap<String, EntryState> = BTreeMap::new();
        for item in tree.scan_prefix(keys::block_prefix()) {
            let (key, value) = item.map_err(index_error)?;
            let (entry, block_id) = keys::split_key(&key)?;
            let state = entries.entry(entry).or_default();
            state.blocks.insert(block_id, BlockStats::decode(&value)?);
            state.next_block_id = state.next_block_id.max(block_id + 1);
        }
        let entries = entries
            .into_iter()
            .map(|(entry, state)| {
                let entry = Entry {
                    dir: dir.join(&entry),
                    name: entry.clone(),
                    state: Mutex::new(state),
                };
                (entry.name.clone(), Arc::new(entry))
            })
            .collect();
        Ok(Bucket {
            name: name.to_string(),
            dir,
            tree,
            settings: RwLock::new(settings),
            entries: RwLock::new(entries),
            removed: AtomicBool::new(false),
            quota: Mutex::new(()),
        })
    }

    pub fn settings(&self) -> BucketSettings {
        read(&self.settings)
    }

    /// Merges `patch` into the settings and writes them to the bucket's settings file.
    pub fn update_settings(&self, patch: &BucketSettingsPatch) -> Result<()> {
        let mut settings = self.settings.write().unwrap_or_else(|p| p.into_inner());
        let merged = settings.merged(patch);
        validate_settings(&merged)?;
        write_atomically(&self.dir.join(SETTINGS_FILE), &encode_settings(&merged))
            .map_err(|e| io_error(&format!("Cannot save the settings of bucket '{}'", self.name), e))?;
        *settings = merged;
        Ok(())
    }

    /// An entry that holds at least one record.
    pub fn visible_entry(&self, name: &str) -> Result<Arc<Entry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(name)
            .filter(|entry| !lock(&entry.state).blocks.is_empty())
            .cloned()
            .ok_or_else(|| Error::entry_not_found(name))
    }

    pub fn entry_or_create(&self, name: &str) -> Result<Arc<Entry>> {
        if let Some(entry) = self.entries.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(entry.clone());
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get(name) {
            return Ok(entry.clone());
        }
        if self.removed.load(Ordering::SeqCst) {
            return Err(Error::bucket_not_found(&self.name));
        }
        let dir = self.dir.join(name);
        // Not `create_dir_all`: a bucket removed meanwhile must not get its directory back.
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::bucket_not_found(&self.name));
            }
            Err(e) => return Err(io_error(&format!("Cannot create entry '{name}'"), e)),
        }
        let entry = Arc::new(Entry {
            name: name.to_string(),
            dir,
            state: Mutex::new(EntryState::default()),
        });
        entries.insert(name.to_string(), entry.clone());
        Ok(entry)
    }

    pub fn entry_infos(&self) -> Vec<EntryInfo> {
        read(&self.entries)
            .values()
            .map(|entry| entry.info())
            .filter(|info| info.block_count > 0)
            .collect()
    }

    pub fn info(&self) -> BucketInfo {
        let entries = self.entry_infos();
        BucketInfo {
            name: self.name.clone(),
            entry_count: entries.len() as u64,
            size: entries.iter().map(|e| e.size).sum(),
            oldest_record: entries.iter().map(|e| e.oldest_record).min().unwrap_or(0),
            latest_record: entries.iter().map(|e| e.latest_record).max().unwrap_or(0),
        }
    }

    /// Writes the block statistics of every entry to the index.
    pub fn persist_stats(&self) -> Result<()> {
        let mut batch = sled::Batch::default();
        for entry in read(&self.entries).values() {
            entry.persist_stats(&mut batch);
        }
        self.tree.apply_batch(batch).map_err(index_error)
    }

    /// Removes the oldest blocks of a FIFO bucket until it is back under its quota. Blocks with
    /// records still being written are kept.
    pub fn enforce_quota(&self) -> Result<()> {
        let _one_at_a_time = lock(&self.quota);
        loop {
            let settings = self.settings();
            if settings.quota_type != QuotaType::Fifo || self.info().size <= settings.quota_size {
                return Ok(());
            }
            let oldest = read(&self.entries)
                .into_values()
                .filter_map(|entry| {
                    let candidate = entry.oldest_removable_block();
                    candidate.map(|(min_ts, id)| (min_ts, id, entry))
                })
                .min_by_key(|(min_ts, id, _)| (*min_ts, *id));
            let Some((_, block_id, entry)) = oldest else {
                return Ok(());
            };
            self.remove_block(&entry, block_id)?;
        }
    }

    /// Removes a block: its index entries, its statistics and its file. A block a record is being
    /// written into (reserved since it was chosen) is left alone.
    pub(crate) fn remove_block(&self, entry: &Entry, block_id: u64) -> Result<()> {
        let mut state = lock(&entry.state);
        if state.in_flight.contains_key(&block_id) {
            return Ok(());
        }
        let Some(stats) = state.blocks.get(&block_id).copied() else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        let range = keys::record_key(&entry.name, stats.min_ts)..=keys::record_key(&entry.name, stats.max_ts);
        for item in self.tree.range(range) {
            let (key, value) = item.map_err(index_error)?;
            if RecordValue::decode(&value)?.block_id == block_id {
                batch.remove(key);
            }
        }
        batch.remove(keys::block_key(&entry.name, block_id));
        self.tree.apply_batch(batch).map_err(index_error)?;
        state.blocks.remove(&block_id);
        if state.active.as_ref().is_some_and(|active| active.id == block_id) {
            state.active = None;
        }
        drop(state);
        match std::fs::remove_file(block::block_path(&entry.dir, block_id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("Cannot remove a block", e)),
            _ => Ok(()),
        }
    }
}

/// Space reserved in a block for one record being written. Dropped before it is committed (the
/// upload failed or was abandoned), it marks its frame discarded.
pub struct Reservation {
    entry: Arc<Entry>,
    block_id: u64,
    pub file: Arc<File>,
    offset: u64,
    header: FrameHeader,
    done: bool,
}

impl Entry {
    pub fn info(&self) -> EntryInfo {
        let state = lock(&self.state);
        let blocks = || state.blocks.values();
        EntryInfo {
            name: self.name.clone(),
            size: blocks().map(|b| b.size).sum(),
            record_count: blocks().map(|b| b.record_count).sum(),
            block_count: state.blocks.len() as u64,
            oldest_record: blocks().map(|b| b.min_ts).min().unwrap_or(0),
            latest_record: blocks().map(|b| b.max_ts).max().unwrap_or(0),
        }
    }

    /// `(oldest timestamp, id)` of the block the quota would remove first.
    fn oldest_removable_block(&self) -> Option<(u64, u64)> {
        let state = lock(&self.state);
        state
            .blocks
            .iter()
            .filter(|(id, _)| !state.in_flight.contains_key(id))
            .map(|(id, stats)| (stats.min_ts, *id))
            .min()
    }

    /// Reserves room for a record of `length` bytes and writes its pending frame header and
    /// metadata.
    pub fn reserve(
        self: &Arc<Self>,
        timestamp: u64,
        length: u64,
        meta: &[u8],
        settings: &BucketSettings,
    ) -> Result<Reservation> {
        let frame_len = HEADER_LEN + meta.len() as u64 + length;
        let mut state = lock(&self.state);
        let fits = |active: &ActiveBlock| {
            active.records < settings.max_block_records
                && (active.len == 0 || active.len + frame_len <= settings.max_block_size)
        };
        let mut active = match state.active.take() {
            Some(active) if fits(&active) => active,
            _ => self.new_block(&mut state)?,
        };
        let offset = active.len;
        let header = FrameHeader {
            state: FrameState::Pending,
            timestamp,
            length,
            meta_len: meta.len() as u32,
            checksum: 0,
            meta_checksum: crc32fast::hash(meta),
        };
        // On failure the block is left as it is and not reused: a later write opens a new one.
        block::write_pending(&active.file, offset, &header, meta)
            .map_err(|e| io_error("Cannot write a block", e))?;
        active.len += frame_len;
        active.records += 1;
        let reservation = Reservation {
            entry: self.clone(),
            block_id: active.id,
            file: active.file.clone(),
            offset,
            header,
            done: false,
        };
        *state.in_flight.entry(active.id).or_default() += 1;
        // A full block is closed now; the next record opens a new one.
        if active.records < settings.max_block_records && active.len < settings.max_block_size {
            state.active = Some(active);
        }
        Ok(reservation)
    }

    fn new_block(&self, state: &mut EntryState) -> Result<ActiveBlock> {
        loop {
            let id = state.next_block_id;
            state.next_block_id += 1;
            match block::create_block(&block::block_path(&self.dir, id)) {
                Ok(file) => {
                    return Ok(ActiveBlock {
                        id,
                        file: Arc::new(file),
                        len: 0,
                        records: 0,
                    });
                }
                // Left by writes that never committed a record: skip its id.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(io_error(
                        &format!("Cannot create a block in entry '{}'", self.name),
                        e,
                    ));
                }
            }
        }
    }

    /// Makes a fully written record visible. Only its index entry is written; the block
    /// statistics change in memory and reach the index at a clean shutdown.
    pub fn commit(&self, bucket: &Bucket, reservation: &mut Reservation, content_type: &str) -> Result<()> {
        let header = reservation.header;
        let mut state = lock(&self.state);
        if bucket.removed.load(Ordering::SeqCst) {
            return Err(Error::bucket_not_found(&bucket.name));
        }
        let record_key = keys::record_key(&self.name, header.timestamp);
        let value = RecordValue {
            block_id: reservation.block_id,
            offset: reservation.offset,
            length: header.length,
            meta_len: header.meta_len,
            checksum: header.checksum,
            content_type: content_type.to_string(),
        }
        .encode();
        // Inserted only if absent: of racing writers of one timestamp, exactly one wins.
        let swapped = bucket
            .tree
            .compare_and_swap(&record_key, None as Option<&[u8]>, Some(value))
            .map_err(index_error)?;
        if swapped.is_err() {
            return Err(Error::conflict(format!(
                "A record with timestamp {} already exists",
                header.timestamp
            )));
        }
        // Only the winner marks its frame committed, under the entry lock and with no await in
        // between, so an upload abandoned at any point before stays pending or discarded.
        let committed = FrameHeader {
            state: FrameState::Committed,
            ..header
        };
        if let Err(e) = block::write_header(&reservation.file, reservation.offset, &committed) {
            // Index errors here leave an entry recovery drops: its frame is not committed.
            let _ = bucket.tree.remove(&record_key);
            return Err(io_error("Cannot write a block", e));
        }
        reservation.header = committed;
        state
            .blocks
            .entry(reservation.block_id)
            .or_default()
            .add(header.timestamp, header.length);
        reservation.done = true;
        finish_in_flight(&mut state, reservation.block_id);
        Ok(())
    }

    /// Writes the statistics of every block to the index (done at a clean shutdown; after any
    /// other, recovery counts them again from the records).
    fn persist_stats(&self, batch: &mut sled::Batch) {
        for (block_id, stats) in &lock(&self.state).blocks {
            batch.insert(keys::block_key(&self.name, *block_id), stats.encode());
        }
    }
}

fn finish_in_flight(state: &mut EntryState, block_id: u64) {
    if let Some(count) = state.in_flight.get_mut(&block_id) {
        *count -= 1;
        if *count == 0 {
            state.in_flight.remove(&block_id);
        }
    }
}

impl Reservation {
    /// Receives exactly the announced length of `body` into the reserved space and notes its
    /// checksum; the frame stays pending until [`Entry::commit`].
    pub async fn receive(&mut self, mut body: ByteStream) -> Result<()> {
        let length = self.header.length;
        let payload_start = self.header.payload_offset(self.offset);
        let mut hasher = crc32fast::Hasher::new();
        let mut received: u64 = 0;
        let mut written: u64 = 0;
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            received += chunk.len() as u64;
            if received > length {
                return Err(Error::bad_request(format!(
                    "Content is longer than Content-Length ({length} bytes)"
                )));
            }
            hasher.update(&chunk);
            buffer.extend_from_slice(&chunk);
            if buffer.len() >= WRITE_BUFFER {
                buffer = write_at(self.file.clone(), buffer, payload_start + written).await?;
                written = received;
            }
        }
        if received < length {
            return Err(Error::bad_request(format!(
                "Content is shorter than Content-Length: received {received} of {length} bytes"
            )));
        }
        self.header.checksum = hasher.finalize();
        if buffer.is_empty() {
            return Ok(());
        }
        let file = self.file.clone();
        file_io(buffer.len() as u64, move || {
            use std::os::unix::fs::FileExt;
            file.write_all_at(&buffer, payload_start + written)
                .map_err(|e| io_error("Cannot write a block", e))
        })
        .await
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let header = FrameHeader {
            state: FrameState::Discarded,
            ..self.header
        };
        if let Err(e) = block::write_header(&self.file, self.offset, &header) {
            tracing::warn!(error = %e, "cannot mark an abandoned record as discarded");
        }
        finish_in_flight(&mut lock(&self.entry.state), self.block_id);
    }
}

/// Writes `buffer` at `offset` and hands it back emptied, to be filled again.
async fn write_at(file: Arc<File>, mut buffer: Vec<u8>, offset: u64) -> Result<Vec<u8>> {
    blocking(move || {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&buffer, offset)
            .map_err(|e| io_error("Cannot write a block", e))?;
        buffer.clear();
        Ok(buffer)
    })
    .await
}

/// Directories of the buckets under `blocks_dir`, by name.
pub fn bucket_dirs(blocks_dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut dirs = Vec::new();
    for item in std::fs::read_dir(blocks_dir)? {
        let item = item?;
        let Ok(name) = item.file_name().into_string() else {
            continue;
        };
        if item.file_type()?.is_dir() && is_valid_name(&name) {
            dirs.push((name, item.path()));
        }
    }
    dirs.sort();
    Ok(dirs)
}
