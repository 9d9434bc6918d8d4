//! The storage engine: buckets of entries of records, indexed in sled, payloads in block files.
//!
//! Writes reserve space for the whole record (its length is announced up front) under a short
//! per-entry lock, then stream the payload into that space without holding any lock, so many
//! clients can write one entry at once. The record becomes visible only when its index entry is
//! committed, after every byte reached the block file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use proto::api::{ByteStream, StorageApi};
use proto::types::*;
use proto::{Error, ErrorKind, Result};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::block::{self, FrameHeader, FrameState, HEADER_LEN};
use crate::config::StorageConfig;
use crate::keys::{self, BlockStats, RecordValue};

/// Payload bytes gathered before one write to the block file.
const WRITE_BUFFER: usize = 1 << 20;
/// Size of the chunks a read streams; records up to this size are checked before they are sent.
const READ_CHUNK: u64 = 256 * 1024;

pub struct Storage {
    blocks_dir: PathBuf,
    db: sled::Db,
    settings_tree: sled::Tree,
    buckets: RwLock<BTreeMap<String, Arc<Bucket>>>,
}

struct Bucket {
    dir: PathBuf,
    tree: sled::Tree,
    settings: RwLock<BucketSettings>,
    entries: RwLock<BTreeMap<String, Arc<Entry>>>,
    removed: AtomicBool,
    /// One quota enforcement at a time, so that two writers do not both remove blocks for the
    /// same excess.
    quota: Mutex<()>,
}

struct Entry {
    name: String,
    dir: PathBuf,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these structures half-updated in a way that
    // matters more than refusing all further requests would.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

fn io_error(context: &str, error: std::io::Error) -> Error {
    const ENOSPC: i32 = 28;
    if error.raw_os_error() == Some(ENOSPC) {
        return Error::new(
            ErrorKind::InsufficientStorage,
            format!("{context}: no space left on device"),
        );
    }
    Error::internal(format!("{context}: {error}"))
}

fn index_error(error: sled::Error) -> Error {
    Error::internal(format!("Index error: {error}"))
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(Error::unprocessable(format!(
            "{kind} name '{name}' is invalid: only letters, digits, '_' and '-' are allowed"
        )))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("I/O task failed: {e}")))?
}

fn bucket_tree_name(bucket: &str) -> String {
    format!("bucket/{bucket}")
}

fn encode_settings(settings: &BucketSettings) -> Vec<u8> {
    serde_json::to_vec(settings).unwrap_or_default()
}

fn decode_settings(name: &str, bytes: &[u8]) -> Result<BucketSettings> {
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

fn validate_settings(settings: &BucketSettings) -> Result<()> {
    if settings.max_block_size == 0 {
        return Err(Error::unprocessable("max_block_size must be at least 1"));
    }
    if settings.max_block_records == 0 {
        return Err(Error::unprocessable("max_block_records must be at least 1"));
    }
    Ok(())
}

impl Storage {
    /// Opens (or creates) the storage under `config.data_path`.
    pub fn open(config: &StorageConfig) -> Result<Storage> {
        let root = &config.data_path;
        let blocks_dir = root.join("blocks");
        std::fs::create_dir_all(&blocks_dir)
            .map_err(|e| io_error(&format!("Cannot create {}", blocks_dir.display()), e))?;
        let db = sled::Config::new()
            .path(root.join("index"))
            .cache_capacity(config.index_cache_bytes)
            .open()
            .map_err(index_error)?;
        let settings_tree = db.open_tree("settings").map_err(index_error)?;
        let mut buckets = BTreeMap::new();
        for item in settings_tree.iter() {
            let (name, value) = item.map_err(index_error)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let settings = decode_settings(&name, &value)?;
            let tree = db.open_tree(bucket_tree_name(&name)).map_err(index_error)?;
            let bucket = Bucket::load(blocks_dir.join(&name), tree, settings)?;
            buckets.insert(name, Arc::new(bucket));
        }
        Ok(Storage {
            blocks_dir,
            db,
            settings_tree,
            buckets: RwLock::new(buckets),
        })
    }

    /// Writes everything the index holds in memory to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(index_error)
    }

    fn bucket(&self, name: &str) -> Result<Arc<Bucket>> {
        self.buckets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::bucket_not_found(name))
    }

    fn all_buckets(&self) -> Vec<(String, Arc<Bucket>)> {
        read(&self.buckets).into_iter().collect()
    }

    /// The record at `timestamp` (or the latest) and where its payload is.
    fn lookup(
        &self,
        bucket: &str,
        entry: &str,
        timestamp: Option<u64>,
    ) -> Result<(Arc<Entry>, RecordInfo, RecordValue)> {
        let bucket = self.bucket(bucket)?;
        let entry = bucket.visible_entry(entry)?;
        let found = match timestamp {
            Some(ts) => bucket
                .tree
                .get(keys::record_key(&entry.name, ts))
                .map_err(index_error)?
                .map(|v| (ts, v)),
            None => bucket
                .tree
                .scan_prefix(keys::record_prefix(&entry.name))
                .next_back()
                .transpose()
                .map_err(index_error)?
                .map(|(k, v)| keys::split_key(&k).map(|(_, ts)| (ts, v)))
                .transpose()?,
        };
        let Some((ts, value)) = found else {
            return Err(match timestamp {
                Some(ts) => Error::not_found(format!("No record with timestamp {ts}")),
                None => Error::entry_not_found(&entry.name),
            });
        };
        let value = RecordValue::decode(&value)?;
        let info = RecordInfo {
            timestamp: ts,
            size: value.length,
            content_type: value.content_type.clone(),
        };
        Ok((entry, info, value))
    }

    /// Removes the oldest blocks of a FIFO bucket until it is back under its quota.
    fn enforce_quota(&self, bucket: &Bucket) -> Result<()> {
        let _one_at_a_time = lock(&bucket.quota);
        loop {
            let settings = read(&bucket.settings);
            if settings.quota_type != QuotaType::Fifo || bucket.info("").size <= settings.quota_size {
                return Ok(());
            }
            let oldest = read(&bucket.entries)
                .into_values()
                .filter_map(|entry| {
                    let state = lock(&entry.state);
                    let candidate = state
                        .blocks
                        .iter()
                        .filter(|(id, _)| !state.in_flight.contains_key(id))
                        .min_by_key(|(id, stats)| (stats.min_ts, **id))
                        .map(|(id, stats)| (stats.min_ts, *id));
                    drop(state);
                    candidate.map(|(min_ts, id)| (min_ts, id, entry))
                })
                .min_by_key(|(min_ts, id, _)| (*min_ts, *id));
            let Some((_, block_id, entry)) = oldest else {
                return Ok(());
            };
            bucket.remove_block(&entry, block_id)?;
        }
    }
}

impl Bucket {
    fn load(dir: PathBuf, tree: sled::Tree, settings: BucketSettings) -> Result<Bucket> {
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
            .map(|(name, state)| {
                let entry = Entry {
                    dir: dir.join(&name),
                    name: name.clone(),
                    state: Mutex::new(state),
                };
                (name, Arc::new(entry))
            })
            .collect();
        Ok(Bucket {
            dir,
            tree,
            settings: RwLock::new(settings),
            entries: RwLock::new(entries),
            removed: AtomicBool::new(false),
            quota: Mutex::new(()),
        })
    }

    /// An entry that holds at least one record.
    fn visible_entry(&self, name: &str) -> Result<Arc<Entry>> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .get(name)
            .filter(|entry| !lock(&entry.state).blocks.is_empty())
            .cloned()
            .ok_or_else(|| Error::entry_not_found(name))
    }

    fn entry_or_create(&self, name: &str) -> Result<Arc<Entry>> {
        if let Some(entry) = self.entries.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Ok(entry.clone());
        }
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get(name) {
            return Ok(entry.clone());
        }
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&format!("Cannot create entry '{name}'"), e))?;
        let entry = Arc::new(Entry {
            name: name.to_string(),
            dir,
            state: Mutex::new(EntryState::default()),
        });
        entries.insert(name.to_string(), entry.clone());
        Ok(entry)
    }

    fn entry_infos(&self) -> Vec<EntryInfo> {
        read(&self.entries)
            .values()
            .map(|entry| entry.info())
            .filter(|info| info.block_count > 0)
            .collect()
    }

    fn info(&self, name: &str) -> BucketInfo {
        let entries = self.entry_infos();
        BucketInfo {
            name: name.to_string(),
            entry_count: entries.len() as u64,
            size: entries.iter().map(|e| e.size).sum(),
            oldest_record: entries.iter().map(|e| e.oldest_record).min().unwrap_or(0),
            latest_record: entries.iter().map(|e| e.latest_record).max().unwrap_or(0),
        }
    }

    /// Removes a block: its index entries, its statistics and its file.
    fn remove_block(&self, entry: &Entry, block_id: u64) -> Result<()> {
        let mut state = lock(&entry.state);
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
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("Cannot remove block", e)),
            _ => Ok(()),
        }
    }
}

/// Space reserved in a block for one record being written. Dropped before it is committed (the
/// upload failed or was abandoned), it marks its frame discarded.
struct Reservation {
    entry: Arc<Entry>,
    block_id: u64,
    file: Arc<File>,
    offset: u64,
    header: FrameHeader,
    done: bool,
}

impl Entry {
    fn info(&self) -> EntryInfo {
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

    fn reserve(
        self: &Arc<Self>,
        timestamp: u64,
        length: u64,
        settings: &BucketSettings,
    ) -> Result<Reservation> {
        let mut state = lock(&self.state);
        let fits = |active: &ActiveBlock| {
            active.records < settings.max_block_records
                && (active.len == 0 || active.len + HEADER_LEN + length <= settings.max_block_size)
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
            checksum: 0,
        };
        block::write_header(&active.file, offset, &header).map_err(|e| io_error("Cannot write block", e))?;
        active.len += HEADER_LEN + length;
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
                // Left by a write that never committed a record: skip its id.
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

    /// Makes a fully written record visible: its index entry and its block's statistics change
    /// in one transaction.
    fn commit(&self, bucket: &Bucket, reservation: &mut Reservation, content_type: &str) -> Result<()> {
        let header = reservation.header;
        let mut state = lock(&self.state);
        if bucket.removed.load(Ordering::SeqCst) {
            return Err(Error::not_found("The bucket was removed during the write"));
        }
        let record_key = keys::record_key(&self.name, header.timestamp);
        let block_key = keys::block_key(&self.name, reservation.block_id);
        let mut stats = state
            .blocks
            .get(&reservation.block_id)
            .copied()
            .unwrap_or_default();
        stats.add(header.timestamp, header.length);
        let value = RecordValue {
            block_id: reservation.block_id,
            offset: reservation.offset,
            length: header.length,
            checksum: header.checksum,
            content_type: content_type.to_string(),
        }
        .encode();
        let stats_value = stats.encode();
        let result = bucket.tree.transaction(|tx| {
            if tx.get(&record_key)?.is_some() {
                return Err(ConflictableTransactionError::Abort(()));
            }
            tx.insert(record_key.as_slice(), value.as_slice())?;
            tx.insert(block_key.as_slice(), stats_value.as_slice())?;
            Ok(())
        });
        match result {
            Ok(()) => {
                state.blocks.insert(reservation.block_id, stats);
                reservation.done = true;
                finish_in_flight(&mut state, reservation.block_id);
                Ok(())
            }
            Err(TransactionError::Abort(())) => Err(Error::conflict(format!(
                "A record with timestamp {} already exists",
                header.timestamp
            ))),
            Err(TransactionError::Storage(e)) => Err(index_error(e)),
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

/// Receives exactly `length` bytes of `body` into the reserved space; returns their checksum.
async fn receive(reservation: &Reservation, length: u64, mut body: ByteStream) -> Result<u32> {
    let mut hasher = crc32fast::Hasher::new();
    let mut received: u64 = 0;
    let mut written: u64 = 0;
    let mut buffer: Vec<u8> = Vec::new();
    let payload_start = reservation.offset + HEADER_LEN;
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
            buffer = write_at(reservation.file.clone(), buffer, payload_start + written).await?;
            written = received;
        }
    }
    if received < length {
        return Err(Error::bad_request(format!(
            "Content is shorter than Content-Length: received {received} of {length} bytes"
        )));
    }
    if !buffer.is_empty() {
        write_at(reservation.file.clone(), buffer, payload_start + written).await?;
    }
    Ok(hasher.finalize())
}

/// Writes `buffer` at `offset` and hands it back emptied, to be filled again.
async fn write_at(file: Arc<File>, mut buffer: Vec<u8>, offset: u64) -> Result<Vec<u8>> {
    blocking(move || {
        use std::os::unix::fs::FileExt;
        file.write_all_at(&buffer, offset)
            .map_err(|e| io_error("Cannot write block", e))?;
        buffer.clear();
        Ok(buffer)
    })
    .await
}

/// Streams a record's payload, checking its checksum. A record that fits in one chunk is read and
/// checked before anything is returned; a larger one fails at its end if it does not match.
async fn payload_stream(path: PathBuf, value: RecordValue, timestamp: u64) -> Result<ByteStream> {
    let damaged = move |what: &str| Error::internal(format!("Record {timestamp} is damaged: {what}"));
    let (file, first) = {
        let path = path.clone();
        let first_len = value.length.min(READ_CHUNK);
        let offset = value.offset;
        blocking(move || {
            let file = block::open_block(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::not_found(format!("No record with timestamp {timestamp}"))
                }
                _ => io_error("Cannot open block", e),
            })?;
            let mut buf = vec![0u8; (HEADER_LEN + first_len) as usize];
            block::read_exact_at(&file, &mut buf, offset).map_err(|e| io_error("Cannot read block", e))?;
            Ok((file, buf))
        })
        .await?
    };
    let header = FrameHeader::decode(&first).ok_or_else(|| damaged("bad frame header"))?;
    if header.state != FrameState::Committed || header.timestamp != timestamp || header.length != value.length
    {
        return Err(damaged("frame header does not match the index"));
    }
    let first = Bytes::from(first).slice(HEADER_LEN as usize..);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&first);
    if value.length <= READ_CHUNK {
        if hasher.finalize() != value.checksum {
            return Err(damaged("checksum mismatch"));
        }
        return Ok(futures::stream::once(async move { Ok(first) }).boxed());
    }
    let file = Arc::new(file);
    let first_len = first.len() as u64;
    let rest = futures::stream::try_unfold((hasher, first_len), move |(mut hasher, position)| {
        let file = file.clone();
        let value = value.clone();
        async move {
            if position == value.length {
                if hasher.finalize() != value.checksum {
                    return Err(damaged("checksum mismatch"));
                }
                return Ok(None);
            }
            let n = (value.length - position).min(READ_CHUNK);
            let offset = value.offset + HEADER_LEN + position;
            let chunk = blocking(move || {
                let mut buf = vec![0u8; n as usize];
                block::read_exact_at(&file, &mut buf, offset)
                    .map_err(|e| io_error("Cannot read block", e))?;
                Ok(Bytes::from(buf))
            })
            .await?;
            hasher.update(&chunk);
            Ok(Some((chunk, (hasher, position + n))))
        }
    });
    Ok(futures::stream::once(async move { Ok(first) })
        .chain(rest)
        .boxed())
}

#[async_trait]
impl StorageApi for Storage {
    async fn info(&self) -> Result<StorageInfo> {
        let buckets: Vec<BucketInfo> = self
            .all_buckets()
            .iter()
            .map(|(name, bucket)| bucket.info(name))
            .collect();
        let with_records = || buckets.iter().filter(|b| b.entry_count > 0);
        Ok(StorageInfo {
            bucket_count: buckets.len() as u64,
            usage: buckets.iter().map(|b| b.size).sum(),
            oldest_record: with_records().map(|b| b.oldest_record).min().unwrap_or(0),
            latest_record: with_records().map(|b| b.latest_record).max().unwrap_or(0),
            default_settings: BucketSettings::default(),
        })
    }

    async fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        Ok(self
            .all_buckets()
            .into_iter()
            .map(|(name, bucket)| bucket.info(&name))
            .collect())
    }

    async fn create_bucket(&self, name: &str, settings: BucketSettingsPatch) -> Result<()> {
        check_name("Bucket", name)?;
        let settings = BucketSettings::default().merged(&settings);
        validate_settings(&settings)?;
        let mut buckets = self.buckets.write().unwrap_or_else(|p| p.into_inner());
        if buckets.contains_key(name) {
            return Err(Error::conflict(format!("Bucket '{name}' already exists")));
        }
        let dir = self.blocks_dir.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&format!("Cannot create bucket '{name}'"), e))?;
        let tree = self.db.open_tree(bucket_tree_name(name)).map_err(index_error)?;
        self.settings_tree
            .insert(name, encode_settings(&settings))
            .map_err(index_error)?;
        buckets.insert(name.to_string(), Arc::new(Bucket::load(dir, tree, settings)?));
        Ok(())
    }

    async fn get_bucket(&self, name: &str) -> Result<BucketDetails> {
        let bucket = self.bucket(name)?;
        Ok(BucketDetails {
            settings: read(&bucket.settings),
            info: bucket.info(name),
            entries: bucket.entry_infos(),
        })
    }

    async fn update_bucket(&self, name: &str, patch: BucketSettingsPatch) -> Result<()> {
        let bucket = self.bucket(name)?;
        {
            let mut settings = bucket.settings.write().unwrap_or_else(|p| p.into_inner());
            let merged = settings.merged(&patch);
            validate_settings(&merged)?;
            self.settings_tree
                .insert(name, encode_settings(&merged))
                .map_err(index_error)?;
            *settings = merged;
        }
        self.enforce_quota(&bucket)
    }

    async fn remove_bucket(&self, name: &str) -> Result<()> {
        let bucket = {
            let mut buckets = self.buckets.write().unwrap_or_else(|p| p.into_inner());
            let bucket = buckets
                .remove(name)
                .ok_or_else(|| Error::bucket_not_found(name))?;
            bucket.removed.store(true, Ordering::SeqCst);
            self.settings_tree.remove(name).map_err(index_error)?;
            self.db.drop_tree(bucket_tree_name(name)).map_err(index_error)?;
            bucket
        };
        let dir = bucket.dir.clone();
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_error("Cannot remove bucket files", e))
            }
            _ => Ok(()),
        })
        .await
    }

    async fn get_entry(&self, bucket: &str, entry: &str) -> Result<EntryInfo> {
        Ok(self.bucket(bucket)?.visible_entry(entry)?.info())
    }

    async fn write_record(&self, record: WriteRecord, body: ByteStream) -> Result<()> {
        check_name("Entry", &record.entry)?;
        let bucket = self.bucket(&record.bucket)?;
        let conflict = || {
            Error::conflict(format!(
                "A record with timestamp {} already exists",
                record.timestamp
            ))
        };
        if bucket
            .tree
            .contains_key(keys::record_key(&record.entry, record.timestamp))
            .map_err(index_error)?
        {
            return Err(conflict());
        }
        let entry = bucket.entry_or_create(&record.entry)?;
        let settings = read(&bucket.settings);
        let mut reservation = entry.reserve(record.timestamp, record.content_length, &settings)?;
        let checksum = receive(&reservation, record.content_length, body).await?;
        reservation.header = FrameHeader {
            state: FrameState::Committed,
            checksum,
            ..reservation.header
        };
        {
            let (file, offset, header) = (reservation.file.clone(), reservation.offset, reservation.header);
            blocking(move || {
                block::write_header(&file, offset, &header).map_err(|e| io_error("Cannot write block", e))
            })
            .await?;
        }
        // On failure, dropping the reservation marks the frame discarded again.
        entry.commit(&bucket, &mut reservation, &record.content_type)?;
        drop(reservation);
        if settings.quota_type == QuotaType::Fifo {
            self.enforce_quota(&bucket)?;
        }
        Ok(())
    }

    async fn record_info(&self, bucket: &str, entry: &str, timestamp: Option<u64>) -> Result<RecordInfo> {
        Ok(self.lookup(bucket, entry, timestamp)?.1)
    }

    async fn read_record(
        &self,
        bucket: &str,
        entry: &str,
        timestamp: Option<u64>,
    ) -> Result<(RecordInfo, ByteStream)> {
        let (entry, info, value) = self.lookup(bucket, entry, timestamp)?;
        let path = block::block_path(&entry.dir, value.block_id);
        let stream = payload_stream(path, value, info.timestamp).await?;
        Ok((info, stream))
    }

    async fn list_records(
        &self,
        bucket: &str,
        entry: &str,
        start: u64,
        stop: u64,
        limit: u32,
    ) -> Result<Vec<RecordInfo>> {
        let bucket = self.bucket(bucket)?;
        let entry = bucket.visible_entry(entry)?;
        if start >= stop {
            return Ok(Vec::new());
        }
        let range = keys::record_key(&entry.name, start)..keys::record_key(&entry.name, stop);
        bucket
            .tree
            .range(range)
            .take(limit as usize)
            .map(|item| {
                let (key, value) = item.map_err(index_error)?;
                let (_, timestamp) = keys::split_key(&key)?;
                let value = RecordValue::decode(&value)?;
                Ok(RecordInfo {
                    timestamp,
                    size: value.length,
                    content_type: value.content_type,
                })
            })
            .collect()
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("blocks_dir", &self.blocks_dir)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        futures::stream::iter(
            parts
                .iter()
                .map(|part| Ok(Bytes::from_static(part)))
                .collect::<Vec<_>>(),
        )
        .boxed()
    }

    fn record(entry: &str, timestamp: u64, content_length: u64) -> WriteRecord {
        WriteRecord {
            bucket: "b".into(),
            entry: entry.into(),
            timestamp,
            content_length,
            content_type: "application/octet-stream".into(),
        }
    }

    async fn read_all(storage: &Storage, entry: &str, timestamp: u64) -> Result<Vec<u8>> {
        let (_, mut stream) = storage.read_record("b", entry, Some(timestamp)).await?;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
        }
        Ok(data)
    }

    fn open(dir: &std::path::Path) -> Storage {
        Storage::open(&StorageConfig::new(dir)).unwrap()
    }

    #[tokio::test]
    async fn a_body_longer_or_shorter_than_announced_is_never_visible() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        storage
            .create_bucket("b", BucketSettingsPatch::default())
            .await
            .unwrap();

        let error = storage
            .write_record(record("e", 1, 3), body(&[b"ab", b"cd"]))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert!(error.message.contains("longer"), "{error}");
        let error = storage
            .write_record(record("e", 1, 5), body(&[b"ab"]))
            .await
            .unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert!(error.message.contains("shorter"), "{error}");
        let broken = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"ab")),
            Err(Error::bad_request("cut")),
        ])
        .boxed();
        assert!(storage.write_record(record("e", 1, 4), broken).await.is_err());

        assert_eq!(
            storage.get_entry("b", "e").await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(storage.info().await.unwrap().usage, 0);
        // The timestamp is still free.
        storage
            .write_record(record("e", 1, 4), body(&[b"good"]))
            .await
            .unwrap();
        assert_eq!(read_all(&storage, "e", 1).await.unwrap(), b"good");
    }

    #[tokio::test]
    async fn abandoned_frames_are_marked_discarded_in_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        storage
            .create_bucket("b", BucketSettingsPatch::default())
            .await
            .unwrap();
        assert!(
            storage
                .write_record(record("e", 1, 5), body(&[b"ab"]))
                .await
                .is_err()
        );
        storage
            .write_record(record("e", 2, 2), body(&[b"ok"]))
            .await
            .unwrap();
        let block = std::fs::read(block::block_path(&dir.path().join("blocks/b/e"), 0)).unwrap();
        let first = FrameHeader::decode(&block).unwrap();
        assert_eq!(first.state, FrameState::Discarded);
        let second = FrameHeader::decode(&block[(HEADER_LEN + 5) as usize..]).unwrap();
        assert_eq!(
            (second.state, second.timestamp, second.length),
            (FrameState::Committed, 2, 2)
        );
        assert_eq!(second.checksum, crc32fast::hash(b"ok"));
    }

    #[tokio::test]
    async fn list_records_pages_through_a_half_open_interval() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        storage
            .create_bucket("b", BucketSettingsPatch::default())
            .await
            .unwrap();
        for ts in [5u64, 1, 9, 3, 7] {
            storage
                .write_record(record("e", ts, 1), body(&[b"x"]))
                .await
                .unwrap();
        }
        let stamps = |records: Vec<RecordInfo>| records.into_iter().map(|r| r.timestamp).collect::<Vec<_>>();
        assert_eq!(
            stamps(storage.list_records("b", "e", 0, 100, 100).await.unwrap()),
            [1, 3, 5, 7, 9]
        );
        assert_eq!(
            stamps(storage.list_records("b", "e", 3, 9, 100).await.unwrap()),
            [3, 5, 7]
        );
        assert_eq!(
            stamps(storage.list_records("b", "e", 3, 9, 2).await.unwrap()),
            [3, 5]
        );
        assert!(storage.list_records("b", "e", 9, 9, 10).await.unwrap().is_empty());
        assert_eq!(
            storage.list_records("b", "x", 0, 9, 10).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn statistics_are_the_same_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let patch = BucketSettingsPatch {
            max_block_records: Some(2),
            ..Default::default()
        };
        let before = {
            let storage = open(dir.path());
            storage.create_bucket("b", patch).await.unwrap();
            for ts in 0..5u64 {
                storage
                    .write_record(record("e", ts, 3), body(&[b"abc"]))
                    .await
                    .unwrap();
            }
            let details = storage.get_bucket("b").await.unwrap();
            storage.flush().unwrap();
            details
        };
        let storage = open(dir.path());
        assert_eq!(storage.get_bucket("b").await.unwrap(), before);
        assert_eq!(before.entries[0].block_count, 3);
        assert_eq!(before.entries[0].record_count, 5);
        // A new block is started after the ones already there.
        storage
            .write_record(record("e", 10, 1), body(&[b"z"]))
            .await
            .unwrap();
        assert_eq!(storage.get_entry("b", "e").await.unwrap().block_count, 4);
        assert_eq!(read_all(&storage, "e", 4).await.unwrap(), b"abc");
    }

    #[tokio::test]
    async fn fifo_removes_the_oldest_block_across_entries() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        let patch = BucketSettingsPatch {
            max_block_records: Some(1),
            quota_type: Some(QuotaType::Fifo),
            quota_size: Some(10),
            ..Default::default()
        };
        storage.create_bucket("b", patch).await.unwrap();
        storage
            .write_record(record("new", 20, 4), body(&[b"2222"]))
            .await
            .unwrap();
        storage
            .write_record(record("old", 10, 4), body(&[b"1111"]))
            .await
            .unwrap();
        storage
            .write_record(record("new", 30, 4), body(&[b"3333"]))
            .await
            .unwrap();
        // 12 bytes > 10: the block holding the oldest record (10, in "old") goes.
        assert_eq!(
            storage.get_entry("b", "old").await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(storage.info().await.unwrap().usage, 8);
        assert_eq!(read_all(&storage, "new", 20).await.unwrap(), b"2222");
        assert!(!block::block_path(&dir.path().join("blocks/b/old"), 0).exists());
    }

    #[tokio::test]
    async fn a_damaged_payload_is_an_error_naming_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open(dir.path());
        storage
            .create_bucket("b", BucketSettingsPatch::default())
            .await
            .unwrap();
        storage
            .write_record(record("e", 1, 4), body(&[b"good"]))
            .await
            .unwrap();
        storage
            .write_record(record("e", 2, 4), body(&[b"also"]))
            .await
            .unwrap();
        let path = block::block_path(&dir.path().join("blocks/b/e"), 0);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER_LEN as usize] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let error = read_all(&storage, "e", 1).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Internal);
        assert!(error.message.contains("Record 1"), "{error}");
        assert_eq!(read_all(&storage, "e", 2).await.unwrap(), b"also");
    }
}
