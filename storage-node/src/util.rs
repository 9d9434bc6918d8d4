//! Small helpers shared by the engine's modules: locks, blocking I/O, error conversions.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock};

use proto::{Error, ErrorKind, Result};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here is left half-updated by a panic in a way worse than refusing every later
    // request would be, so a poisoned lock is used as it is.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

const ENOSPC: i32 = 28;

pub fn io_error(context: &str, error: std::io::Error) -> Error {
    if error.raw_os_error() == Some(ENOSPC) {
        return Error::new(
            ErrorKind::InsufficientStorage,
            format!("{context}: no space left on device"),
        );
    }
    Error::internal(format!("{context}: {error}"))
}

pub fn index_error(error: sled::Error) -> Error {
    match error {
        sled::Error::Io(e) => io_error("Index error", e),
        // The tree of a bucket removed while a request still held it.
        sled::Error::CollectionNotFound(_) => Error::not_found("The bucket was removed"),
        other => Error::internal(format!("Index error: {other}")),
    }
}

/// Runs blocking file work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("I/O task failed: {e}")))?
}

/// File I/O up to this many bytes runs on the async thread itself: it only copies to or from the
/// page cache, which takes less time than handing the work to another thread and back.
pub const INLINE_IO_BYTES: u64 = 64 * 1024;

/// Runs `f` inline when it moves at most [`INLINE_IO_BYTES`], else off the async threads.
pub async fn file_io<T: Send + 'static>(
    bytes: u64,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    if bytes <= INLINE_IO_BYTES {
        f()
    } else {
        blocking(f).await
    }
}

/// Bytes available to this process on the volume of `path`.
pub fn available_bytes(path: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Replaces `path` with `contents` so that a crash leaves either the old or the new file whole.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
