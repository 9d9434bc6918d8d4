//! A benchmark that drives any server of the ReductStore HTTP API by URL.
//!
//! - [`config`]: the flags.
//! - [`run`]: writes, reads and queries records, checking every byte read back.
//! - [`Report`]: the figures, as a table and as CSV.

pub mod config;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use indicatif::{ProgressBar, ProgressStyle};

pub use config::{BenchConfig, format_size, parse_size};

/// The figures of one scenario run.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub scenario: &'static str,
    pub size: u64,
    pub concurrency: usize,
    pub records: u64,
    pub elapsed: Duration,
    /// Per request (per record read for queries), sorted.
    latencies: Vec<Duration>,
    /// CPU time the server spent meanwhile, when its PID was given (Linux).
    pub server_cpu: Option<Duration>,
}

impl ScenarioResult {
    pub fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn megabytes_per_second(&self) -> f64 {
        (self.records * self.size) as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU time per record, in microseconds.
    pub fn server_cpu_micros_per_record(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.records > 0).then(|| cpu.as_secs_f64() * 1e6 / self.records as f64)
    }

    /// The latency under which `fraction` of the requests finished.
    pub fn percentile(&self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index =
            ((self.latencies.len() as f64 * fraction).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index]
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<ScenarioResult>,
    /// The server's peak resident memory in bytes, when its PID was given.
    pub server_peak_rss: Option<u64>,
}

const COLUMNS: [&str; 10] = [
    "scenario",
    "size",
    "concurrency",
    "records",
    "seconds",
    "records/s",
    "MB/s",
    "p50 ms",
    "p99 ms",
    "server CPU us/rec",
];

impl Report {
    fn rows(&self) -> Vec<[String; 10]> {
        self.results
            .iter()
            .map(|r| {
                [
                    r.scenario.to_string(),
                    format_size(r.size),
                    r.concurrency.to_string(),
                    r.records.to_string(),
                    format!("{:.2}", r.elapsed.as_secs_f64()),
                    format!("{:.0}", r.records_per_second()),
                    format!("{:.1}", r.megabytes_per_second()),
                    format!("{:.2}", r.percentile(0.50).as_secs_f64() * 1e3),
                    format!("{:.2}", r.percentile(0.99).as_secs_f64() * 1e3),
                    r.server_cpu_micros_per_record()
                        .map_or_else(|| "-".to_string(), |micros| format!("{micros:.1}")),
                ]
            })
            .collect()
    }

    /// The results as an aligned text table.
    pub fn table(&self) -> String {
        let rows = self.rows();
        let widths: Vec<usize> = (0..COLUMNS.len())
            .map(|i| {
                rows.iter()
                    .map(|row| row[i].len())
                    .chain([COLUMNS[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let cells: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    if i < 2 {
                        format!("{cell:<w$}", w = widths[i])
                    } else {
                        format!("{cell:>w$}", w = widths[i])
                    }
                })
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut out = line(COLUMNS.to_vec());
        out.push_str(&format!(
            "|{}|\n",
            widths
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        ));
        for row in &rows {
            out.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        if let Some(rss) = self.server_peak_rss {
            out.push_str(&format!(
                "\nserver peak RSS: {:.1} MiB\n",
                rss as f64 / (1 << 20) as f64
            ));
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = COLUMNS.join(",") + "\n";
        for row in self.rows() {
            out.push_str(&row.join(","));
            out.push('\n');
        }
        out
    }
}

/// The payload of record `ts`: the base bytes with the timestamp in front, so every record
/// differs and a read of the wrong one is caught.
fn record(base: &Bytes, ts: u64) -> Bytes {
    let mut body = BytesMut::with_capacity(base.len());
    let prefix = ts.to_le_bytes();
    let n = prefix.len().min(base.len());
    body.extend_from_slice(&prefix[..n]);
    body.extend_from_slice(&base[n..]);
    body.freeze()
}

fn check(base: &Bytes, ts: u64, body: &[u8]) -> Result<(), String> {
    let prefix = ts.to_le_bytes();
    let n = prefix.len().min(base.len());
    if body.len() != base.len() || body[..n] != prefix[..n] || body[n..] != base[n..] {
        return Err(format!(
            "record {ts} read back differs from what was written ({} bytes)",
            body.len()
        ));
    }
    Ok(())
}

fn base_payload(size: u64) -> Bytes {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ size;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

struct Run {
    client: reqwest::Client,
    base_url: String,
    bucket: String,
    entry: String,
    payload: Bytes,
    concurrency: usize,
    records: u64,
    deadline: Duration,
    progress: ProgressBar,
}

impl Run {
    fn url(&self, tail: &str) -> String {
        format!(
            "{}/api/v1/b/{}/{}{}",
            self.base_url, self.bucket, self.entry, tail
        )
    }

    /// Runs `work(index)` for indices 0.. on `concurrency` workers until `records` are done or
    /// the time is up; returns how many were done, the time and the latencies.
    async fn drive<F, Fut>(
        self: &Arc<Self>,
        records: u64,
        work: F,
    ) -> Result<(u64, Duration, Vec<Duration>), String>
    where
        F: Fn(Arc<Run>, u64) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Vec<Duration>, String>> + Send,
    {
        let next = Arc::new(AtomicU64::new(0));
        let work = Arc::new(work);
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..self.concurrency {
            let (run, next, work) = (self.clone(), next.clone(), work.clone());
            workers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut done = 0u64;
                loop {
                    if started.elapsed() > run.deadline {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= records {
                        break;
                    }
                    let measured = work(run.clone(), index).await?;
                    done += measured.len() as u64;
                    latencies.extend(measured);
                }
                Ok::<_, String>((done, latencies))
            }));
        }
        let mut done = 0;
        let mut latencies = Vec::new();
        for worker in workers {
            let (count, measured) = worker.await.map_err(|e| format!("a worker failed: {e}"))??;
            done += count;
            latencies.extend(measured);
        }
        Ok((done, started.elapsed(), latencies))
    }
}

async fn expect_ok(response: reqwest::Response, what: &str) -> Result<reqwest::Response, String> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let detail = response.text().await.unwrap_or_default();
    Err(format!("{what}: {status} {detail}"))
}

async fn write_one(run: Arc<Run>, index: u64) -> Result<Vec<Duration>, String> {
    let ts = index + 1;
    let body = record(&run.payload, ts);
    let started = Instant::now();
    let response = run
        .client
        .post(run.url(&format!("?ts={ts}")))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("write {ts}: {e}"))?;
    expect_ok(response, &format!("write {ts}")).await?;
    run.progress.inc(1);
    Ok(vec![started.elapsed()])
}

async fn read_one(run: Arc<Run>, index: u64) -> Result<Vec<Duration>, String> {
    let ts = index + 1;
    let started = Instant::now();
    let response = run
        .client
        .get(run.url(&format!("?ts={ts}")))
        .send()
        .await
        .map_err(|e| format!("read {ts}: {e}"))?;
    let body = expect_ok(response, &format!("read {ts}"))
        .await?
        .bytes()
        .await
        .map_err(|e| format!("read {ts}: {e}"))?;
    let elapsed = started.elapsed();
    check(&run.payload, ts, &body)?;
    run.progress.inc(1);
    Ok(vec![elapsed])
}

/// Worker `index` of `concurrency` queries its share of the timestamps and reads it to the end.
async fn query_share(run: Arc<Run>, index: u64) -> Result<Vec<Duration>, String> {
    let share = run.records.div_ceil(run.concurrency as u64);
    let start = 1 + index * share;
    let stop = (start + share).min(run.records + 1);
    if start >= stop {
        return Ok(Vec::new());
    }
    let response = run
        .client
        .get(run.url(&format!("/q?start={start}&stop={stop}&ttl=60")))
        .send()
        .await
        .map_err(|e| format!("query: {e}"))?;
    let text = expect_ok(response, "query")
        .await?
        .text()
        .await
        .map_err(|e| format!("query: {e}"))?;
    let id = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["id"].as_u64())
        .ok_or_else(|| format!("query: no id in {text}"))?;
    let mut latencies = Vec::new();
    let mut expected = start;
    loop {
        let started = Instant::now();
        let response = run
            .client
            .get(run.url(&format!("?q={id}")))
            .send()
            .await
            .map_err(|e| format!("query read: {e}"))?;
        if response.status() == 202 {
            break;
        }
        let response = expect_ok(response, "query read").await?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let ts: u64 = header("x-reduct-time")
            .and_then(|v| v.parse().ok())
            .ok_or("query read: no x-reduct-time")?;
        let last = header("x-reduct-last").as_deref() == Some("1");
        let body = response.bytes().await.map_err(|e| format!("query read: {e}"))?;
        latencies.push(started.elapsed());
        if ts != expected {
            return Err(format!(
                "query {id} returned record {ts} where {expected} was expected"
            ));
        }
        check(&run.payload, ts, &body)?;
        run.progress.inc(1);
        expected += 1;
        if last {
            break;
        }
    }
    if expected != stop {
        return Err(format!("query {id} over [{start}, {stop}) ended at {expected}"));
    }
    Ok(latencies)
}

fn progress_bar(config: &BenchConfig, total: u64, label: String) -> ProgressBar {
    if config.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg:<24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label);
    bar
}

/// Runs every scenario for every size and concurrency, checking what is read back.
pub async fn run(config: &BenchConfig) -> Result<Report, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &config.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let base_url = config.url.trim_end_matches('/').to_string();
    let bucket_url = format!("{base_url}/api/v1/b/{}", config.bucket);
    let response = client
        .post(&bucket_url)
        .send()
        .await
        .map_err(|e| format!("cannot reach {base_url}: {e}"))?;
    if !response.status().is_success() && response.status() != 409 {
        expect_ok(response, "creating the bucket").await?;
    }

    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let mut report = Report::default();
    for &size in &config.sizes {
        let payload = base_payload(size);
        for &concurrency in &config.concurrency {
            let concurrency = concurrency.max(1);
            let entry = format!("{}-c{concurrency}-{run_id}", format_size(size));
            let mut records = config.records_for(size);
            for scenario in ["write", "read", "query"] {
                if !config.scenarios.iter().any(|s| s == scenario) {
                    continue;
                }
                let progress = progress_bar(
                    config,
                    records,
                    format!("{scenario} {} x{concurrency}", format_size(size)),
                );
                let run = Arc::new(Run {
                    client: client.clone(),
                    base_url: base_url.clone(),
                    bucket: config.bucket.clone(),
                    entry: entry.clone(),
                    payload: payload.clone(),
                    concurrency,
                    records,
                    deadline: config.time_limit(),
                    progress: progress.clone(),
                });
                let cpu_before = config.server_pid.and_then(cpu_time);
                let (done, elapsed, mut latencies) = match scenario {
                    "write" => run.drive(records, write_one).await?,
                    "read" => run.drive(records, read_one).await?,
                    _ => run.drive(concurrency as u64, query_share).await?,
                };
                let server_cpu = cpu_before
                    .zip(config.server_pid.and_then(cpu_time))
                    .map(|(before, after)| after.saturating_sub(before));
                progress.finish_and_clear();
                if scenario == "write" {
                    // Reads cover what was written, also when the time limit cut the writes.
                    records = done;
                }
                latencies.sort();
                report.results.push(ScenarioResult {
                    scenario,
                    size,
                    concurrency,
                    records: done,
                    elapsed,
                    latencies,
                    server_cpu,
                });
            }
        }
    }
    if !config.keep {
        let response = client
            .delete(&bucket_url)
            .send()
            .await
            .map_err(|e| format!("removing the bucket: {e}"))?;
        expect_ok(response, "removing the bucket").await?;
    }
    report.server_peak_rss = config.server_pid.and_then(peak_rss);
    Ok(report)
}

/// The CPU time a process has used, in user and system mode, all its threads (Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may hold spaces; the fields after it are numbered from 3.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second();
    (ticks > 0).then(|| Duration::from_secs_f64((utime + stime) as f64 / ticks as f64))
}

/// VmHWM of a process, in bytes (Linux).
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
