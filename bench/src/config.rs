use std::time::Duration;

use clap::Parser;

/// Measures a server of the ReductStore HTTP API: this one, or any other, by URL.
///
/// For each record size and concurrency it runs three scenarios on a fresh entry of a bucket it
/// creates: `write` (POST records), `read` (GET each by timestamp) and `query` (GET /q, then read
/// the query to its end). Every record read is checked against what was written. It prints a
/// table of records/s, MB/s and p50/p99 latency, and can write the same as CSV.
#[derive(Parser, Debug, Clone)]
#[command(name = "bench", version)]
pub struct BenchConfig {
    /// The server's base URL (before /api/v1).
    #[arg(long, env = "BENCH_URL", default_value = "http://127.0.0.1:8383")]
    pub url: String,

    /// API token, if the server needs one.
    #[arg(long, env = "RS_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Scenarios to run, comma-separated: write, read, query. `read` and `query` read what
    /// `write` wrote, so they need it.
    #[arg(long, value_delimiter = ',', default_value = "write,read,query", value_parser = ["write", "read", "query"])]
    pub scenarios: Vec<String>,

    /// Record sizes, comma-separated, with an optional unit: B, KiB, MiB (e.g. 1KiB,16MiB).
    #[arg(long, value_delimiter = ',', default_value = "1KiB,64KiB,1MiB,16MiB", value_parser = parse_size)]
    pub sizes: Vec<u64>,

    /// Concurrent clients, comma-separated (each a separate run).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    pub concurrency: Vec<usize>,

    /// Records per run at most.
    #[arg(long, default_value_t = 5000)]
    pub records: u64,

    /// Bytes per run at most: fewer records are written for large sizes (e.g. 512MiB).
    #[arg(long, default_value = "512MiB", value_parser = parse_size)]
    pub max_bytes: u64,

    /// Seconds per scenario at most: a write run that takes longer stops early, and the reads
    /// cover what it wrote.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,

    /// Bucket to write into; created if missing, removed afterwards unless --keep.
    #[arg(long, default_value = "bench")]
    pub bucket: String,

    /// Keep the bucket and its records after the run.
    #[arg(long)]
    pub keep: bool,

    /// Also write the results as CSV to this file.
    #[arg(long)]
    pub csv: Option<std::path::PathBuf>,

    /// PID of the server, if it runs on this machine: its CPU time per record and its peak RSS are
    /// reported (Linux).
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// No progress bars (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
}

impl BenchConfig {
    pub fn time_limit(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    /// Records of `size` bytes a run writes.
    pub fn records_for(&self, size: u64) -> u64 {
        (self.max_bytes / size.max(1)).clamp(1, self.records.max(1))
    }
}

/// `1024`, `1KiB`, `64 KiB`, `16MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size such as 1KiB or 16MiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("'{text}' has an unknown unit: use B, KiB, MiB or GiB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// A size as people write it: 1KiB, 64KiB, 16MiB.
pub fn format_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}
