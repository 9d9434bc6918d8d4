//! A server run as a real process, for what only a process shows: its memory, a kill, a restart.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a starting server may take to say where it listens before we give up on it.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `binary` with `args` (which should include `--port 0`) and waits until its log says
    /// where it listens. The process is killed when this value is dropped.
    pub async fn spawn(binary: &Path, args: &[&str]) -> std::io::Result<Self> {
        Self::spawn_with_env(binary, args, &[]).await
    }

    /// Like [`ServerProcess::spawn`], with environment variables.
    pub async fn spawn_with_env(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> std::io::Result<Self> {
        let mut child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                let addr = listen_address(&line);
                log.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                if let Some(addr) = addr {
                    return Ok(addr);
                }
            }
            Err(std::io::Error::other("the server exited before it listened"))
        })
        .await
        .map_err(|_| std::io::Error::other("the server did not start in time"))??;
        // Keep draining the log so the server never blocks on a full pipe.
        let kept = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        Ok(Self { child, addr, log })
    }

    /// The lines the server has logged so far (up to where it said it listens, at least).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Asks the process to stop (SIGTERM) and waits until it has.
    pub async fn terminate(&mut self) -> std::io::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        self.child.wait().await
    }

    /// Peak resident memory of the process so far, in bytes (Linux).
    pub fn peak_rss(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

/// The address in a log line such as `... serving the HTTP API on http://127.0.0.1:8383`.
fn listen_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line
        .split_once("listening on http://")
        .or_else(|| line.split_once("API on http://"))?;
    let addr: String = rest
        .chars()
        .take_while(|c| !c.is_whitespace() && !['/', '\u{1b}', '"'].contains(c))
        .collect();
    addr.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_a_log_line() {
        let line = "2026-12-03T17:00:00Z  INFO gateway: serving the HTTP API on http://127.0.0.1:40123";
        assert_eq!(listen_address(line), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(listen_address("nothing here"), None);
    }
}
