//! The HTTP API of level 1, end to end against the embedded server.

mod bucket;
mod cluster;
mod durability;
mod entry;
mod persistence;
mod query;
mod quota;
mod server;
