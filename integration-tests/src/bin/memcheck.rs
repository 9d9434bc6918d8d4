//! Writes one large record through a gateway process and reads it back, then reports the
//! server's peak resident memory. Build the server first:
//!
//! ```text
//! cargo build --release -p gateway
//! cargo run --release -p integration-tests --bin memcheck -- --size-mib 1024
//! ```

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use integration_tests::process::ServerProcess;

/// Peak memory of the server while one large record is written and read back through it.
#[derive(Parser)]
struct Args {
    /// Size of the record in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// The gateway binary (default: `gateway` beside this program).
    #[arg(long)]
    server: Option<PathBuf>,
}

const CHUNK: usize = 1 << 20;

fn chunk(i: u64) -> Bytes {
    Bytes::from(integration_tests::payload(i % 16, CHUNK))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let server_bin = match args.server {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("gateway"),
    };
    let data = tempfile::tempdir()?;
    let data_path = data.path().to_string_lossy().into_owned();
    let server = ServerProcess::spawn(&server_bin, &["--port", "0", "--data-path", &data_path]).await?;
    let base = format!("http://{}/api/v1", server.addr);
    let client = reqwest::Client::new();
    client
        .post(format!("{base}/b/mem"))
        .send()
        .await?
        .error_for_status()?;

    let chunks = args.size_mib;
    let size = chunks * CHUNK as u64;
    let body = futures::stream::iter(0..chunks).map(|i| Ok::<_, std::io::Error>(chunk(i)));
    let started = Instant::now();
    client
        .post(format!("{base}/b/mem/big?ts=1"))
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await?
        .error_for_status()?;
    let write_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let response = client
        .get(format!("{base}/b/mem/big?ts=1"))
        .send()
        .await?
        .error_for_status()?;
    let mut stream = response.bytes_stream();
    let mut received = 0u64;
    let mut pending = Vec::with_capacity(CHUNK);
    let mut index = 0u64;
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        received += piece.len() as u64;
        pending.extend_from_slice(&piece);
        while pending.len() >= CHUNK {
            if pending[..CHUNK] != chunk(index)[..] {
                return Err(format!("chunk {index} read back differs").into());
            }
            pending.drain(..CHUNK);
            index += 1;
        }
    }
    let read_secs = started.elapsed().as_secs_f64();
    if received != size || !pending.is_empty() {
        return Err(format!("read {received} bytes of {size}").into());
    }
    let peak = server.peak_rss().ok_or("cannot read the server's peak RSS")?;
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    println!("record: {} MiB, read back byte for byte", args.size_mib);
    println!(
        "write: {:.1} s ({:.0} MiB/s)",
        write_secs,
        mib(size as f64) / write_secs
    );
    println!(
        "read:  {:.1} s ({:.0} MiB/s)",
        read_secs,
        mib(size as f64) / read_secs
    );
    println!("server peak RSS (VmHWM): {:.1} MiB", mib(peak as f64));
    Ok(())
}
