//! The storage node: owns buckets, entries and records.
//!
//! - [`Storage`] (in [`store`]): the engine, implementing [`proto::api::StorageApi`].
//! - `keys`: how the index is laid out in sled.
//! - `block`: the framed, append-only block files that hold payloads.
//! - [`grpc`]: the gRPC server over [`proto::api::StorageApi`].
//! - [`config`]: its settings, and the flags of the `storage-node` binary.

mod block;
pub mod config;
pub mod grpc;
mod keys;
pub mod store;

pub use config::StorageConfig;
pub use store::Storage;
