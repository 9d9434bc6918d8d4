//! The query service: owns queries, cursors over a time interval of an entry with a TTL.
//!
//! - [`QueryService`] (in [`service`]): the cursors, implementing [`proto::api::QueryApi`].
//! - `ids`: query ids unique and increasing across restarts.
//! - [`grpc`]: the gRPC server over [`proto::api::QueryApi`].
//! - [`config`]: its settings, and the flags of the `query-service` binary.

pub mod config;
pub mod grpc;
mod ids;
pub mod service;

pub use config::QueryConfig;
pub use service::QueryService;
