//! Query ids that are unique and increasing for the life of the data directory.
//!
//! Ids are handed out from a range whose end is written to disk before the first id of the range
//! is used, so after a restart the service starts past every id it may have handed out.

use std::path::{Path, PathBuf};

use proto::{Error, Result};

/// How many ids one write to disk reserves.
const RESERVE: u64 = 1024;

#[derive(Debug)]
pub struct IdAllocator {
    path: PathBuf,
    next: u64,
    /// First id not covered by the reservation on disk.
    limit: u64,
}

impl IdAllocator {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("Cannot create {}: {e}", dir.display())))?;
        let path = dir.join("query-ids");
        let limit = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| Error::internal(format!("{} is damaged: '{}'", path.display(), text.trim())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(Error::internal(format!("Cannot read {}: {e}", path.display()))),
        };
        Ok(Self {
            path,
            next: limit,
            limit,
        })
    }

    pub fn next_id(&mut self) -> Result<u64> {
        if self.next >= self.limit {
            let limit = self.next + RESERVE;
            self.persist(limit)?;
            self.limit = limit;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }

    fn persist(&self, limit: u64) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        let fail = |e: std::io::Error| {
            Error::internal(format!(
                "Cannot reserve query ids in {}: {e}",
                self.path.display()
            ))
        };
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(fail)?;
            file.write_all(limit.to_string().as_bytes()).map_err(fail)?;
            file.sync_all().map_err(fail)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = IdAllocator::open(dir.path()).unwrap();
        let first: Vec<u64> = (0..3).map(|_| ids.next_id().unwrap()).collect();
        assert_eq!(first, vec![1, 2, 3]);
        drop(ids);
        let mut ids = IdAllocator::open(dir.path()).unwrap();
        assert!(ids.next_id().unwrap() > 3);
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_reuse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("query-ids"), "garbage").unwrap();
        assert!(IdAllocator::open(dir.path()).is_err());
    }
}
