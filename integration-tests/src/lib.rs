//! Black-box tests over HTTP against real servers. This library starts them (in process, or as
//! processes in [`process`]); the tests are in `tests/`.

pub mod cluster;
pub mod otlp;
pub mod process;
pub mod prometheus;

use std::path::{Path, PathBuf};

use config_args::args_for;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// A gateway serving in this process on a free port, with data in a temporary directory.
pub struct TestServer {
    /// `http://127.0.0.1:<port>/api/v1`
    pub url: String,
    pub client: reqwest::Client,
    dir: TempDir,
    shutdown: oneshot::Sender<()>,
    server: gateway::Server,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with extra command-line flags, e.g. `["--api-token", "secret"]`.
    pub async fn start_with(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        Self::start_in(dir, flags).await
    }

    /// Starts on an existing data directory, as after a restart.
    pub async fn start_in(dir: TempDir, flags: &[&str]) -> Self {
        let config = args_for(dir.path(), flags);
        let (shutdown, signal) = oneshot::channel::<()>();
        let server = gateway::start(config, async move {
            let _ = signal.await;
        })
        .await
        .expect("the server starts");
        let url = format!("http://{}/api/v1", server.local_addr);
        Self {
            url,
            client: reqwest::Client::new(),
            dir,
            shutdown,
            server,
        }
    }

    pub fn data_path(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server gracefully and hands back its data directory.
    pub async fn stop(self) -> TempDir {
        let _ = self.shutdown.send(());
        self.server.wait().await.expect("the server stops cleanly");
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn head(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.head(self.url(path))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    pub fn put(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.put(self.url(path))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(self.url(path))
    }

    /// The `host:port` the server listens on, for raw HTTP.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.local_addr
    }

    /// Creates a bucket with the given settings JSON, asserting success.
    pub async fn create_bucket(&self, name: &str, settings: &str) {
        let response = self
            .post(&format!("/b/{name}"))
            .body(settings.to_string())
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            200,
            "creating bucket {name}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// Writes a record, asserting success.
    pub async fn write(&self, bucket: &str, entry: &str, ts: u64, body: impl Into<reqwest::Body>) {
        let response = self
            .post(&format!("/b/{bucket}/{entry}?ts={ts}"))
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(
            response.status(),
            200,
            "writing {bucket}/{entry}@{ts}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    /// The body of a GET of `path`, whatever its status.
    pub async fn bytes(&self, path: &str) -> bytes::Bytes {
        get_bytes(&self.client, self.url(path)).await
    }

    /// Reads a JSON document, asserting a 200.
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).send().await.expect("request");
        assert_eq!(response.status(), 200, "GET {path}");
        serde_json::from_str(&response.text().await.expect("body")).expect("JSON")
    }
}

/// The body of a GET that must succeed at the transport level, as bytes.
pub async fn get_bytes(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> bytes::Bytes {
    client
        .get(url)
        .send()
        .await
        .expect("request")
        .bytes()
        .await
        .expect("body")
}

/// The body of a GET as JSON.
pub async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> serde_json::Value {
    let text = client
        .get(url)
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&text).expect("JSON")
}

/// The `{"detail": ...}` of an error response, after checking it matches `x-reduct-error`.
pub async fn error_detail(response: reqwest::Response) -> String {
    let header = response
        .headers()
        .get("x-reduct-error")
        .map(|v| v.to_str().expect("x-reduct-error is ASCII").to_string());
    let content_type = response.headers().get("content-type").cloned();
    let body: serde_json::Value =
        serde_json::from_str(&response.text().await.expect("body")).expect("JSON error body");
    let detail = body["detail"].as_str().expect("detail").to_string();
    if detail.is_ascii() {
        assert_eq!(
            header.as_deref(),
            Some(detail.as_str()),
            "x-reduct-error matches the detail"
        );
    } else {
        assert!(header.is_some(), "x-reduct-error is present");
    }
    assert_eq!(
        content_type.as_ref().map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    detail
}

/// Deterministic pseudo-random bytes, different for each `seed`.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// Files under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        for item in read.flatten() {
            let path = item.path();
            if path.is_dir() {
                stack.push(path)
            } else {
                files.push(path)
            }
        }
    }
    files
}

mod config_args {
    use std::path::Path;

    use clap::Parser;

    /// The gateway's configuration from flags, as the binary parses them, on port 0.
    pub fn args_for(data_path: &Path, flags: &[&str]) -> gateway::Config {
        let data = data_path.to_string_lossy().into_owned();
        let mut args = vec!["gateway", "--port", "0", "--data-path", data.as_str()];
        args.extend_from_slice(flags);
        gateway::Config::parse_from(args)
    }
}
