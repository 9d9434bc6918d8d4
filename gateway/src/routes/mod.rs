//! The HTTP routes, one module per part of the API.

pub mod bucket;
pub mod entry;
pub mod server;
