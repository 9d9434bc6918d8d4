//! Forcing written data to the disk, for many writers at once.
//!
//! Writers mark the block files they wrote to as dirty. A background task syncs the dirty files
//! and then flushes the index, either every interval or as soon as a writer waits for it, and
//! publishes how far it got. Since the files are synced before the index is flushed, the index on
//! disk never points to a record that is not on disk (recovery checks that too).

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use proto::{Error, Result};
use tokio::sync::{Notify, watch};

use crate::config::SyncMode;
use crate::util::{blocking, io_error, lock};

#[derive(Debug, Clone, Default)]
struct Synced {
    /// Every request up to this number has been through a sync.
    generation: u64,
    /// Requests up to this number may have been in a sync that failed, with this error.
    failed_through: u64,
    error: Option<String>,
}

pub struct Syncer {
    mode: SyncMode,
    db: sled::Db,
    /// Files written since the last sync, by address, so each is synced once.
    dirty: Mutex<HashMap<usize, Arc<File>>>,
    requested: AtomicU64,
    synced: watch::Sender<Synced>,
    wake: Arc<Notify>,
    /// One sync at a time, so generations are published in order.
    running: tokio::sync::Mutex<()>,
    duration: opentelemetry::metrics::Histogram<f64>,
}

impl Syncer {
    /// Starts the syncer and its background task, which ends when the syncer is dropped.
    pub fn start(
        mode: SyncMode,
        db: sled::Db,
        duration: opentelemetry::metrics::Histogram<f64>,
    ) -> Arc<Syncer> {
        let syncer = Arc::new(Syncer {
            mode,
            db,
            dirty: Mutex::new(HashMap::new()),
            requested: AtomicU64::new(0),
            synced: watch::Sender::new(Synced::default()),
            wake: Arc::new(Notify::new()),
            running: tokio::sync::Mutex::new(()),
            duration,
        });
        tokio::spawn(run(Arc::downgrade(&syncer), syncer.wake.clone(), mode));
        syncer
    }

    /// Notes that `file` has data to sync.
    pub fn mark_dirty(&self, file: &Arc<File>) {
        lock(&self.dirty)
            .entry(Arc::as_ptr(file) as usize)
            .or_insert_with(|| file.clone());
    }

    /// In the `Always` mode, waits until everything written before the call is on disk.
    pub async fn durable(&self) -> Result<()> {
        if self.mode != SyncMode::Always {
            return Ok(());
        }
        let target = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake.notify_one();
        let mut synced = self.synced.subscribe();
        let synced = synced
            .wait_for(|synced| synced.generation >= target)
            .await
            .map_err(|_| Error::internal("The sync task stopped"))?;
        // A later successful sync does not vouch for data an earlier, failed one dropped.
        if target <= synced.failed_through {
            let error = synced.error.as_deref().unwrap_or("unknown error");
            return Err(Error::internal(format!("Cannot sync the data to disk: {error}")));
        }
        Ok(())
    }

    /// Syncs every dirty file, then flushes the index.
    pub async fn sync_now(&self) -> Result<()> {
        let _one_at_a_time = self.running.lock().await;
        let target = self.requested.load(Ordering::SeqCst);
        let files: Vec<Arc<File>> = std::mem::take(&mut *lock(&self.dirty)).into_values().collect();
        let db = self.db.clone();
        let started = std::time::Instant::now();
        let to_sync = files.clone();
        let result = blocking(move || {
            for file in to_sync {
                file.sync_data().map_err(|e| io_error("Cannot sync a block", e))?;
            }
            db.flush().map_err(crate::util::index_error)?;
            Ok(())
        })
        .await;
        self.duration.record(started.elapsed().as_secs_f64(), &[]);
        if let Err(e) = &result {
            tracing::error!("sync failed: {e}");
            // Still dirty: the next sync tries them again.
            for file in &files {
                self.mark_dirty(file);
            }
        }
        self.synced.send_modify(|synced| {
            synced.generation = synced.generation.max(target);
            if let Err(e) = &result {
                synced.failed_through = synced.failed_through.max(target);
                synced.error = Some(e.message.clone());
            }
        });
        result
    }
}

async fn run(syncer: Weak<Syncer>, wake: Arc<Notify>, mode: SyncMode) {
    // In the `Always` mode writers wake the task; the period only bounds how long a dropped
    // syncer's task lingers.
    let period = match mode {
        SyncMode::Interval(period) => period,
        SyncMode::Always => std::time::Duration::from_secs(1),
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = wake.notified() => {}
        }
        // Only a weak reference is held between rounds, so dropping the storage ends the task.
        let Some(syncer) = syncer.upgrade() else { return };
        let _ = syncer.sync_now().await;
    }
}
