//! Plain Rust types of the service API, shared by the in-process and the gRPC paths.

use serde::Serialize;

pub const DEFAULT_MAX_BLOCK_SIZE: u64 = 64_000_000;
pub const DEFAULT_MAX_BLOCK_RECORDS: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum QuotaType {
    None,
    Fifo,
}

impl QuotaType {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "NONE" => Some(QuotaType::None),
            "FIFO" => Some(QuotaType::Fifo),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketSettings {
    pub max_block_size: u64,
    pub max_block_records: u64,
    pub quota_type: QuotaType,
    pub quota_size: u64,
}

impl Default for BucketSettings {
    fn default() -> Self {
        Self {
            max_block_size: DEFAULT_MAX_BLOCK_SIZE,
            max_block_records: DEFAULT_MAX_BLOCK_RECORDS,
            quota_type: QuotaType::None,
            quota_size: 0,
        }
    }
}

/// Settings given in part: `None` keeps the current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketSettingsPatch {
    pub max_block_size: Option<u64>,
    pub max_block_records: Option<u64>,
    pub quota_type: Option<QuotaType>,
    pub quota_size: Option<u64>,
}

impl BucketSettings {
    /// These settings with the fields of `patch` that are set.
    pub fn merged(&self, patch: &BucketSettingsPatch) -> BucketSettings {
        BucketSettings {
            max_block_size: patch.max_block_size.unwrap_or(self.max_block_size),
            max_block_records: patch.max_block_records.unwrap_or(self.max_block_records),
            quota_type: patch.quota_type.unwrap_or(self.quota_type),
            quota_size: patch.quota_size.unwrap_or(self.quota_size),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BucketInfo {
    pub name: String,
    pub entry_count: u64,
    pub size: u64,
    pub oldest_record: u64,
    pub latest_record: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EntryInfo {
    pub name: String,
    pub size: u64,
    pub record_count: u64,
    pub block_count: u64,
    pub oldest_record: u64,
    pub latest_record: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketDetails {
    pub settings: BucketSettings,
    pub info: BucketInfo,
    pub entries: Vec<EntryInfo>,
}

/// What the storage knows of all its buckets together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageInfo {
    pub bucket_count: u64,
    pub usage: u64,
    pub oldest_record: u64,
    pub latest_record: u64,
    pub default_settings: BucketSettings,
}

/// Metadata of one stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    pub timestamp: u64,
    pub size: u64,
    pub content_type: String,
}

/// Everything about a record to write except its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    pub bucket: String,
    pub entry: String,
    pub timestamp: u64,
    pub content_length: u64,
    pub content_type: String,
}

/// The next record of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextRecord {
    pub timestamp: u64,
    /// The last record of the query: after it the query is finished.
    pub last: bool,
}

/// A request for a new query over `[start, stop)` of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryRequest {
    pub bucket: String,
    pub entry: String,
    /// `None`: from the oldest record.
    pub start: Option<u64>,
    /// `None`: up to and including the latest record.
    pub stop: Option<u64>,
    pub ttl: std::time::Duration,
}

/// Whether `name` is a valid bucket or entry name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
