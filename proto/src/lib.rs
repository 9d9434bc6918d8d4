//! Contracts between the services.
//!
//! - [`api`]: the service traits, implemented in process by each service and over gRPC by [`client`].
//! - [`types`]: the plain types those traits speak.
//! - [`error`]: the one error type and its table of HTTP statuses and gRPC codes.
//! - [`runtime`]: the shutdown signal; [`telemetry`]: logs, traces, metrics and trace context.
//! - [`pb`]: the generated gRPC code; [`convert`] maps it to and from [`types`].
//! - [`client`]: [`api`] over gRPC, for services in another process.

pub mod api;
pub mod client;
pub mod convert;
pub mod error;
pub mod runtime;
pub mod telemetry;
pub mod types;

pub use error::{Error, ErrorKind, Result};

/// Generated gRPC code.
pub mod pb {
    pub mod storage {
        tonic::include_proto!("storage.v1");
    }
    pub mod query {
        tonic::include_proto!("query.v1");
    }
}
