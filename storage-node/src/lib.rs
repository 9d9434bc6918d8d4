//! The storage node: owns buckets, entries and records.
//!
//! - [`Storage`] (in [`store`]): the engine, implementing [`proto::api::StorageApi`].
//! - `bucket`: buckets and entries, where records are reserved, written, committed and removed.
//! - `read`: checked, streamed reads of payloads.
//! - `keys`: how the index is laid out in sled.
//! - `block`: the framed, append-only block files that hold payloads.
//! - `sync`: forcing data to disk for many writers at once.
//! - `recovery`: the index brought back in line with the blocks after a crash.
//! - [`config`]: its settings and flags; [`grpc`]: the gRPC adapter and server.

mod block;
mod bucket;
pub mod config;
pub mod grpc;
mod keys;
mod read;
mod recovery;
pub mod store;
mod sync;
mod util;

pub use config::{StorageArgs, StorageConfig, SyncMode};
pub use store::Storage;
