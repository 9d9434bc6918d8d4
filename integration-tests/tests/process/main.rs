//! Tests that need the server as a real process: killed mid-write, or on a disk that fills up.

mod crash;
mod disk;
mod telemetry;

use std::path::{Path, PathBuf};

use integration_tests::process::ServerProcess;

pub fn server_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_test-gateway"))
}

/// Starts the server on a free port with data in `data`.
pub async fn spawn(data: &Path, flags: &[&str]) -> ServerProcess {
    let data = data.to_string_lossy().into_owned();
    let mut args = vec!["--port", "0", "--data-path", data.as_str()];
    args.extend_from_slice(flags);
    ServerProcess::spawn(&server_binary(), &args)
        .await
        .expect("the server starts")
}
