//! Starts `hookplane serve` as a child process and samples its RSS and CPU.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub struct Server {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// From spawn to the listening line (index loaded, serving).
    pub startup: Duration,
}

pub struct ServerOptions<'a> {
    pub binary: &'a Path,
    pub data_dir: &'a Path,
    pub database_url: Option<&'a str>,
    pub master_key: Option<&'a str>,
    pub api_id: &'a str,
    pub secret: &'a str,
    /// More `hookplane serve` flags, after the harness's own (a later flag
    /// wins where clap allows it).
    pub extra_args: &'a [String],
}

/// The hookplane binary next to this one: the workspace builds both into
/// one target directory, per profile.
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("hookplane")))
        .unwrap_or_else(|| PathBuf::from("hookplane"))
}

impl Server {
    pub async fn start(opts: &ServerOptions<'_>) -> anyhow::Result<Server> {
        let mut cmd = Command::new(opts.binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(opts.data_dir)
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args([
                "--bootstrap-api-id",
                opts.api_id,
                "--bootstrap-secret",
                opts.secret,
            ])
            .env("HOOKPLANE_LOG", "info")
            .env_remove("HOOKPLANE_BOOTSTRAP_API_ID")
            .env_remove("HOOKPLANE_BOOTSTRAP_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd.args(opts.extra_args);
        if let Some(url) = opts.database_url {
            cmd.args(["--database-url", url]);
        }
        if let Some(key) = opts.master_key {
            cmd.env("HOOKPLANE_MASTER_KEY", key);
        }
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot start {} (build the server in the same profile, e.g. \
                 `cargo build --release -p hookplane`, or name one with --server-bin)",
                opts.binary.display()
            )
        })?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .context("the server did not start within 10 minutes")??;
            let Some(line) = line else {
                bail!("the server exited before listening")
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v.get("message").and_then(|m| m.as_str()) == Some("hookplane listening") {
                let grpc = v["grpc_addr"].as_str().context("no grpc_addr")?.parse()?;
                let http = v["http_addr"].as_str().context("no http_addr")?.parse()?;
                let startup = started.elapsed();
                // Keep draining the log so the server never blocks on it,
                // and show its errors: they explain failed calls.
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        if is_error(&line) {
                            eprintln!("server: {line}");
                        }
                    }
                });
                return Ok(Server {
                    child,
                    grpc,
                    http,
                    startup,
                });
            }
            if is_error(&line) {
                eprintln!("server: {line}");
            }
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident set size in bytes.
    pub fn rss(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// The highest resident set size since the server started, in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// User + system CPU time used so far.
    pub fn cpu(&self) -> Option<Duration> {
        cpu_of(self.pid()?)
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// User + system CPU time process `pid` used so far.
pub fn cpu_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Whether a JSON log line is at ERROR level.
fn is_error(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .is_ok_and(|v| v.get("level").and_then(|l| l.as_str()) == Some("ERROR"))
}
