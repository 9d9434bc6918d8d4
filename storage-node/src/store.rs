//! The storage engine: buckets of entries of records, indexed in sled, payloads in block files.
//!
//! On disk, under the data path:
//! - `blocks/<bucket>/settings.json`: the bucket's settings;
//! - `blocks/<bucket>/<entry>/<block id>.blk`: the entry's block files (see `block`);
//! - `index/`: the sled index: records and block statistics (see `keys`), which can always be
//!   rebuilt from the blocks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use proto::api::{ByteStream, StorageApi};
use proto::types::*;
use proto::{Error, ErrorKind, Result};

use crate::block::RecordMeta;
use crate::bucket::{self, Bucket, Entry, SETTINGS_FILE};
use crate::config::StorageConfig;
use crate::keys::{self, RecordValue};
use crate::metrics::StorageMetrics;
use crate::recovery::{self, Report};
use crate::sync::Syncer;
use crate::util::{available_bytes, blocking, index_error, io_error, read, sync_dir, write_atomically};

/// Records are at most 1 PiB: far beyond any disk, and far from where block offsets overflow.
const MAX_RECORD_BYTES: u64 = 1 << 50;
/// Set in the index by a clean shutdown, removed at start: without it the blocks are checked.
const CLEAN_SHUTDOWN: &[u8] = b"clean-shutdown";
/// Directories of buckets being created or removed start with these; they are never buckets.
const NEW_PREFIX: &str = ".new-";
const TRASH_PREFIX: &str = ".trash-";

pub struct Storage {
    metrics: StorageMetrics,
    /// Keeps the usage-per-bucket callback registered.
    _usage: opentelemetry::metrics::ObservableGauge<u64>,
    config: StorageConfig,
    blocks_dir: PathBuf,
    db: sled::Db,
    syncer: Arc<Syncer>,
    buckets: RwLock<BTreeMap<String, Arc<Bucket>>>,
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

fn bucket_tree_name(bucket: &str) -> String {
    format!("bucket/{bucket}")
}

/// Opens the index; one that cannot be opened is moved aside and a new one begun, to be rebuilt
/// from the blocks.
fn open_index(path: &Path, cache_bytes: u64) -> Result<sled::Db> {
    let open = || {
        sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // The syncer flushes the index, always after the block files it points into.
            .flush_every_ms(None)
            .open()
    };
    // A previous owner in this process (a restarted server) or one still exiting may hold the
    // index's lock for a moment longer: it is waited for, within a bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut opened = open();
    // sled reports the lock held elsewhere only in its message.
    while matches!(&opened, Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        opened = open();
    }
    match opened {
        Ok(db) => Ok(db),
        // An I/O error (the index locked by another process, no permission, no file handles)
        // says nothing about the index itself: it is left as it is and the start fails.
        Err(sled::Error::Io(e)) => Err(io_error(
            &format!("Cannot open the index at {}", path.display()),
            e,
        )),
        Err(e) => {
            let aside = path.with_extension(format!("damaged-{}", std::process::id()));
            tracing::error!(
                "the index at {} is unreadable ({e}): moving it to {} and rebuilding it from the block files",
                path.display(),
                aside.display()
            );
            std::fs::rename(path, &aside).map_err(|e| io_error("Cannot move the damaged index aside", e))?;
            open().map_err(index_error)
        }
    }
}

/// Removes what an interrupted bucket creation or removal left.
fn remove_leftovers(blocks_dir: &Path) -> Result<()> {
    for item in std::fs::read_dir(blocks_dir).map_err(|e| io_error("Cannot list the blocks", e))? {
        let item = item.map_err(|e| io_error("Cannot list the blocks", e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with(NEW_PREFIX) || name.starts_with(TRASH_PREFIX) {
            std::fs::remove_dir_all(item.path()).map_err(|e| io_error("Cannot remove leftovers", e))?;
        }
    }
    Ok(())
}

impl Storage {
    /// Opens (or creates) the storage under `config.data_path`, checking the index against the
    /// blocks if the last shutdown was not clean. Must be called inside a Tokio runtime (it starts
    /// the sync task).
    pub fn open(config: &StorageConfig) -> Result<Arc<Storage>> {
        let root = &config.data_path;
        let blocks_dir = root.join("blocks");
        std::fs::create_dir_all(&blocks_dir)
            .map_err(|e| io_error(&format!("Cannot create {}", blocks_dir.display()), e))?;
        remove_leftovers(&blocks_dir)?;
        let index_path = root.join("index");
        let index_existed = index_path.exists();
        let db = open_index(&index_path, config.index_cache_bytes)?;
        let was_clean = db.remove(CLEAN_SHUTDOWN).map_err(index_error)?.is_some();
        db.flush().map_err(index_error)?;

        let dirs = bucket::bucket_dirs(&blocks_dir).map_err(|e| io_error("Cannot list the buckets", e))?;
        if !was_clean && !dirs.is_empty() {
            if index_existed {
                tracing::warn!("the last shutdown was not clean: checking the index against the block files");
            } else {
                tracing::warn!("no index found: rebuilding it from the block files");
            }
        }
        let mut buckets = BTreeMap::new();
        let mut report = Report::default();
        for (name, dir) in dirs {
            let settings = match std::fs::read(dir.join(SETTINGS_FILE)) {
                Ok(bytes) => bucket::decode_settings(&name, &bytes)?,
                // Blocks without settings are kept: the bucket comes back with the defaults.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!("bucket '{name}' has no settings file: it gets the default settings");
                    let settings = BucketSettings::default();
                    write_atomically(&dir.join(SETTINGS_FILE), &bucket::encode_settings(&settings))
                        .map_err(|e| io_error(&format!("Cannot write the settings of bucket '{name}'"), e))?;
                    settings
                }
                Err(e) => {
                    return Err(io_error(
                        &format!("Cannot read the settings of bucket '{name}'"),
                        e,
                    ));
                }
            };
            let tree = db.open_tree(bucket_tree_name(&name)).map_err(index_error)?;
            if !was_clean {
                report.add(recovery::reconcile_bucket(&dir, &tree)?);
            }
            let bucket = match Bucket::load(&name, dir.clone(), tree.clone(), settings.clone()) {
                Ok(bucket) => bucket,
                Err(e) if was_clean => {
                    tracing::error!(
                        "the index of bucket '{name}' is damaged ({e}): rebuilding it from the block files"
                    );
                    report.add(recovery::reconcile_bucket(&dir, &tree)?);
                    Bucket::load(&name, dir, tree, settings)?
                }
                Err(e) => return Err(e),
            };
            buckets.insert(name, Arc::new(bucket));
        }
        // Trees of buckets whose removal was interrupted.
        for tree_name in db.tree_names() {
            let tree_name = String::from_utf8_lossy(&tree_name).into_owned();
            if let Some(bucket) = tree_name.strip_prefix("bucket/")
                && !buckets.contains_key(bucket)
            {
                db.drop_tree(tree_name.as_bytes()).map_err(index_error)?;
            }
        }
        if !report.is_empty() {
            tracing::warn!(
                reindexed = report.reindexed,
                dropped = report.dropped,
                damaged = report.damaged,
                torn_blocks = report.torn_blocks,
                "recovery brought the index in line with the block files"
            );
        }
        db.flush().map_err(index_error)?;
        let metrics = StorageMetrics::new();
        let syncer = Syncer::start(config.sync, db.clone(), metrics.sync_duration.clone());
        Ok(Arc::new_cyclic(|weak: &std::sync::Weak<Storage>| {
            let weak = weak.clone();
            let usage = crate::metrics::meter()
                .u64_observable_gauge("reduct_storage_usage")
                .with_unit("By")
                .with_description("Payload bytes stored, per bucket")
                .with_callback(move |observer| {
                    let Some(storage) = weak.upgrade() else { return };
                    for bucket in storage.all_buckets() {
                        let name = opentelemetry::KeyValue::new("bucket", bucket.name.clone());
                        observer.observe(bucket.info().size, &[name]);
                    }
                })
                .build();
            Storage {
                metrics,
                _usage: usage,
                config: config.clone(),
                blocks_dir,
                db,
                syncer,
                buckets: RwLock::new(buckets),
            }
        }))
    }

    /// Syncs everything written and marks the shutdown clean, so the next start need not check
    /// the blocks. Writes after this are not covered by the mark.
    pub async fn close(&self) -> Result<()> {
        for bucket in self.all_buckets() {
            bucket.persist_stats()?;
        }
        self.syncer.sync_now().await?;
        self.db
            .insert(CLEAN_SHUTDOWN, b"1".as_slice())
            .map_err(index_error)?;
        let db = self.db.clone();
        blocking(move || db.flush().map(|_| ()).map_err(index_error)).await
    }

    fn bucket(&self, name: &str) -> Result<Arc<Bucket>> {
        self.buckets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| Error::bucket_not_found(name))
    }

    fn all_buckets(&self) -> Vec<Arc<Bucket>> {
        read(&self.buckets).into_values().collect()
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

    /// Refuses a write that would leave less free space than configured.
    fn check_free_space(&self, length: u64) -> Result<()> {
        let keep = self.config.min_free_bytes;
        if keep == 0 {
            return Ok(());
        }
        let free =
            available_bytes(&self.blocks_dir).map_err(|e| io_error("Cannot read the free space", e))?;
        if free < length.saturating_add(keep) {
            return Err(Error::new(
                ErrorKind::InsufficientStorage,
                format!(
                    "Not enough free space: the record needs {length} bytes, {free} are free and {keep} must stay free"
                ),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl StorageApi for Storage {
    async fn info(&self) -> Result<StorageInfo> {
        let buckets: Vec<BucketInfo> = self.all_buckets().iter().map(|bucket| bucket.info()).collect();
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
        Ok(self.all_buckets().iter().map(|bucket| bucket.info()).collect())
    }

    async fn create_bucket(&self, name: &str, settings: BucketSettingsPatch) -> Result<()> {
        check_name("Bucket", name)?;
        let settings = BucketSettings::default().merged(&settings);
        bucket::validate_settings(&settings)?;
        let mut buckets = self.buckets.write().unwrap_or_else(|p| p.into_inner());
        if buckets.contains_key(name) {
            return Err(Error::conflict(format!("Bucket '{name}' already exists")));
        }
        // Built aside and renamed into place, so a bucket exists whole or not at all.
        let fail = |e| io_error(&format!("Cannot create bucket '{name}'"), e);
        let staging = self.blocks_dir.join(format!("{NEW_PREFIX}{name}"));
        let dir = self.blocks_dir.join(name);
        std::fs::create_dir_all(&staging).map_err(fail)?;
        write_atomically(&staging.join(SETTINGS_FILE), &bucket::encode_settings(&settings)).map_err(fail)?;
        std::fs::rename(&staging, &dir).map_err(fail)?;
        sync_dir(&self.blocks_dir).map_err(fail)?;
        let tree = self.db.open_tree(bucket_tree_name(name)).map_err(index_error)?;
        buckets.insert(
            name.to_string(),
            Arc::new(Bucket::load(name, dir, tree, settings)?),
        );
        Ok(())
    }

    async fn get_bucket(&self, name: &str) -> Result<BucketDetails> {
        let bucket = self.bucket(name)?;
        Ok(BucketDetails {
            settings: bucket.settings(),
            info: bucket.info(),
            entries: bucket.entry_infos(),
        })
    }

    async fn update_bucket(&self, name: &str, patch: BucketSettingsPatch) -> Result<()> {
        let bucket = self.bucket(name)?;
        bucket.update_settings(&patch)?;
        bucket.enforce_quota()
    }

    async fn remove_bucket(&self, name: &str) -> Result<()> {
        let trash = {
            let mut buckets = self.buckets.write().unwrap_or_else(|p| p.into_inner());
            let bucket = buckets
                .get(name)
                .cloned()
                .ok_or_else(|| Error::bucket_not_found(name))?;
            // Renamed away first: once that is done the bucket is gone, even after a crash.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let trash = self
                .blocks_dir
                .join(format!("{TRASH_PREFIX}{name}-{}", nanos.as_nanos()));
            let fail = |e| io_error(&format!("Cannot remove bucket '{name}'"), e);
            std::fs::rename(&bucket.dir, &trash).map_err(fail)?;
            sync_dir(&self.blocks_dir).map_err(fail)?;
            buckets.remove(name);
            bucket.removed.store(true, Ordering::SeqCst);
            self.db.drop_tree(bucket_tree_name(name)).map_err(index_error)?;
            trash
        };
        blocking(move || {
            std::fs::remove_dir_all(&trash).map_err(|e| io_error("Cannot remove bucket files", e))
        })
        .await?;
        // The syncer holds the removed blocks open until it syncs them; their space is free only
        // once it lets go.
        self.syncer.sync_now().await
    }

    async fn get_entry(&self, bucket: &str, entry: &str) -> Result<EntryInfo> {
        Ok(self.bucket(bucket)?.visible_entry(entry)?.info())
    }

    async fn write_record(&self, record: WriteRecord, body: ByteStream) -> Result<()> {
        check_name("Entry", &record.entry)?;
        if record.content_length > MAX_RECORD_BYTES {
            return Err(Error::unprocessable(format!(
                "A record of {} bytes is too large: the limit is {MAX_RECORD_BYTES} bytes",
                record.content_length
            )));
        }
        let bucket = self.bucket(&record.bucket)?;
        if bucket
            .tree
            .contains_key(keys::record_key(&record.entry, record.timestamp))
            .map_err(index_error)?
        {
            return Err(Error::conflict(format!(
                "A record with timestamp {} already exists",
                record.timestamp
            )));
        }
        self.check_free_space(record.content_length)?;
        let entry = bucket.entry_or_create(&record.entry)?;
        let settings = bucket.settings();
        let meta = RecordMeta {
            content_type: record.content_type.clone(),
        }
        .encode();
        let mut reservation = entry.reserve(record.timestamp, record.content_length, &meta, &settings)?;
        // On any failure from here, dropping the reservation marks its frame discarded.
        reservation.receive(body).await?;
        self.syncer.mark_dirty(&reservation.file);
        entry.commit(&bucket, &mut reservation, &record.content_type)?;
        drop(reservation);
        self.syncer.durable().await?;
        self.metrics.records_written.add(1, &[]);
        self.metrics.bytes_written.add(record.content_length, &[]);
        // The record is stored: a quota that cannot be enforced now is for the next write to
        // try again, not a failure of this one.
        if settings.quota_type == QuotaType::Fifo
            && let Err(e) = bucket.enforce_quota()
        {
            tracing::error!(bucket = %bucket.name, "cannot enforce the FIFO quota: {e}");
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
        let path = crate::block::block_path(&entry.dir, value.block_id);
        let stream = crate::read::payload_stream(path, value, info.timestamp).await?;
        self.metrics.records_read.add(1, &[]);
        self.metrics.bytes_read.add(info.size, &[]);
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
    use bytes::Bytes;
    use futures::StreamExt;

    use super::*;
    use crate::block::{self, FrameHeader, FrameState};

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

    /// Writes a whole record, which must succeed.
    async fn write(storage: &Storage, entry: &str, timestamp: u64, payload: &'static [u8]) {
        let record = record(entry, timestamp, payload.len() as u64);
        storage.write_record(record, body(&[payload])).await.unwrap();
    }

    fn open(dir: &std::path::Path) -> Arc<Storage> {
        Storage::open(&StorageConfig::new(dir)).unwrap()
    }

    /// Opens the storage with a bucket "b" of default settings.
    async fn open_with_bucket(dir: &std::path::Path) -> Arc<Storage> {
        let storage = open(dir);
        storage
            .create_bucket("b", BucketSettingsPatch::default())
            .await
            .unwrap();
        storage
    }

    #[tokio::test]
    async fn a_body_longer_or_shorter_than_announced_is_never_visible() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_with_bucket(dir.path()).await;

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
        write(&storage, "e", 1, b"good").await;
        assert_eq!(read_all(&storage, "e", 1).await.unwrap(), b"good");
    }

    #[tokio::test]
    async fn abandoned_frames_are_marked_discarded_in_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_with_bucket(dir.path()).await;
        assert!(
            storage
                .write_record(record("e", 1, 5), body(&[b"ab"]))
                .await
                .is_err()
        );
        write(&storage, "e", 2, b"ok").await;
        let block = std::fs::read(block::block_path(&dir.path().join("blocks/b/e"), 0)).unwrap();
        let first = FrameHeader::decode(&block).unwrap();
        assert_eq!(first.state, FrameState::Discarded);
        let second = FrameHeader::decode(&block[first.frame_len() as usize..]).unwrap();
        assert_eq!(
            (second.state, second.timestamp, second.length),
            (FrameState::Committed, 2, 2)
        );
        assert_eq!(second.checksum, crc32fast::hash(b"ok"));
    }

    #[tokio::test]
    async fn list_records_pages_through_a_half_open_interval() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_with_bucket(dir.path()).await;
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
            storage.close().await.unwrap();
            details
        };
        let storage = open(dir.path());
        assert_eq!(storage.get_bucket("b").await.unwrap(), before);
        assert_eq!(before.entries[0].block_count, 3);
        assert_eq!(before.entries[0].record_count, 5);
        // A new block is started after the ones already there.
        write(&storage, "e", 10, b"z").await;
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
        write(&storage, "new", 20, b"2222").await;
        write(&storage, "old", 10, b"1111").await;
        write(&storage, "new", 30, b"3333").await;
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
        let storage = open_with_bucket(dir.path()).await;
        write(&storage, "e", 1, b"good").await;
        write(&storage, "e", 2, b"also").await;
        let path = block::block_path(&dir.path().join("blocks/b/e"), 0);
        let mut bytes = std::fs::read(&path).unwrap();
        let header = FrameHeader::decode(&bytes).unwrap();
        bytes[header.payload_offset(0) as usize] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let error = read_all(&storage, "e", 1).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Internal);
        assert!(error.message.contains("Record 1"), "{error}");
        assert_eq!(read_all(&storage, "e", 2).await.unwrap(), b"also");
    }

    #[tokio::test]
    async fn recovery_indexes_committed_frames_and_drops_entries_without_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = open_with_bucket(dir.path()).await;
            write(&storage, "e", 1, b"one").await;
            write(&storage, "e", 2, b"two").await;
            let bucket = storage.bucket("b").unwrap();
            // The index loses record 2, as when the process dies before the index reaches the
            // disk, and gains an entry that points at no committed frame.
            let lost = bucket.tree.remove(keys::record_key("e", 2)).unwrap().unwrap();
            let mut bogus = RecordValue::decode(&lost).unwrap();
            bogus.offset += 1;
            bucket
                .tree
                .insert(keys::record_key("e", 3), bogus.encode())
                .unwrap();
            storage.syncer.sync_now().await.unwrap();
            // Dropped without `close`: the shutdown is not clean.
        }
        let storage = open(dir.path());
        assert_eq!(read_all(&storage, "e", 2).await.unwrap(), b"two");
        assert_eq!(
            read_all(&storage, "e", 3).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
        let entry = storage.get_entry("b", "e").await.unwrap();
        assert_eq!((entry.record_count, entry.size, entry.latest_record), (2, 6, 2));
    }

    #[tokio::test]
    async fn the_quota_leaves_a_block_being_written_into() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_with_bucket(dir.path()).await;
        write(&storage, "e", 1, b"old").await;
        let bucket = storage.bucket("b").unwrap();
        let entry = bucket.visible_entry("e").unwrap();
        let reservation = entry.reserve(2, 3, b"", &bucket.settings()).unwrap();
        bucket.remove_block(&entry, 0).unwrap();
        assert_eq!(read_all(&storage, "e", 1).await.unwrap(), b"old");
        drop(reservation);
        bucket.remove_block(&entry, 0).unwrap();
        assert_eq!(
            storage.get_entry("b", "e").await.unwrap_err().kind,
            ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn an_upload_abandoned_after_its_last_byte_never_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = open_with_bucket(dir.path()).await;
            write(&storage, "e", 1, b"kept").await;
            let bucket = storage.bucket("b").unwrap();
            let entry = bucket.visible_entry("e").unwrap();
            let meta = RecordMeta {
                content_type: "text/plain".into(),
            }
            .encode();
            let mut reservation = entry.reserve(2, 4, &meta, &bucket.settings()).unwrap();
            reservation.receive(body(&[b"lost"])).await.unwrap();
            // The process dies between the last byte and the commit: nothing of the reservation
            // runs any more, not even its drop.
            std::mem::forget(reservation);
        }
        let storage = open(dir.path());
        assert_eq!(read_all(&storage, "e", 1).await.unwrap(), b"kept");
        assert_eq!(
            read_all(&storage, "e", 2).await.unwrap_err().kind,
            ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn an_index_in_use_is_neither_opened_twice_nor_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_with_bucket(dir.path()).await;
        write(&storage, "e", 1, b"mine").await;
        let error = Storage::open(&StorageConfig::new(dir.path())).unwrap_err();
        assert!(error.message.contains("Cannot open the index"), "{error}");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|name| !name.contains("damaged")), "{names:?}");
        assert_eq!(read_all(&storage, "e", 1).await.unwrap(), b"mine");
    }

    #[tokio::test]
    async fn a_write_racing_a_bucket_removal_does_not_bring_its_directory_back() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_with_bucket(dir.path()).await;
        let bucket = storage.bucket("b").unwrap();
        storage.remove_bucket("b").await.unwrap();
        assert_eq!(
            bucket.entry_or_create("late").err().map(|e| e.kind),
            Some(ErrorKind::NotFound)
        );
        assert!(!dir.path().join("blocks/b").exists());
        drop((bucket, storage));
        let storage = open(dir.path());
        assert!(storage.list_buckets().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn blocks_whose_settings_file_is_gone_come_back_with_default_settings() {
        let dir = tempfile::tempdir().unwrap();
        {
            let storage = open(dir.path());
            let patch = BucketSettingsPatch {
                max_block_records: Some(3),
                ..Default::default()
            };
            storage.create_bucket("b", patch).await.unwrap();
            write(&storage, "e", 1, b"data").await;
            storage.close().await.unwrap();
        }
        std::fs::remove_file(dir.path().join("blocks/b/settings.json")).unwrap();
        let storage = open(dir.path());
        assert_eq!(
            storage.get_bucket("b").await.unwrap().settings,
            BucketSettings::default()
        );
        assert_eq!(read_all(&storage, "e", 1).await.unwrap(), b"data");
    }

    #[tokio::test]
    async fn a_damaged_record_too_large_to_check_first_never_streams_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_with_bucket(dir.path()).await;
        let chunk = Bytes::from(vec![0x5a; 1 << 20]);
        let length = 65u64 << 20;
        let chunks = futures::stream::iter((0..65).map(move |_| Ok(chunk.clone()))).boxed();
        storage
            .write_record(record("e", 1, length), chunks)
            .await
            .unwrap();
        let path = block::block_path(&dir.path().join("blocks/b/e"), 0);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut header = [0u8; block::HEADER_LEN as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0).unwrap();
        let payload = FrameHeader::decode(&header).unwrap().payload_offset(0);
        std::os::unix::fs::FileExt::write_all_at(&file, &[0xa5], payload + length - 10).unwrap();

        let (_, mut stream) = storage.read_record("b", "e", Some(1)).await.unwrap();
        let mut received = 0u64;
        let error = loop {
            match stream.next().await {
                Some(Ok(chunk)) => received += chunk.len() as u64,
                Some(Err(error)) => break error,
                None => panic!("the damaged record streamed to its end"),
            }
        };
        assert!(received < length);
        assert!(error.message.contains("Record 1 is damaged"), "{error}");
    }
}
