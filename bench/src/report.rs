//! Result tables, human and machine-readable.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::run::RunArgs;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    pub calls: u64,
    pub calls_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub errors: BTreeMap<String, u64>,
    pub server_rss: Option<u64>,
    pub server_cpu_percent: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Pair {
    pub health: Measured,
    pub workload: Measured,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkloadReport {
    pub workload: String,
    pub concurrency: usize,
    pub pairs: Vec<Pair>,
    /// Median over pairs of workload calls/s divided by health calls/s.
    pub throughput_ratio: f64,
    /// Median over pairs of workload p99 divided by health p99.
    pub p99_ratio: f64,
    /// Median over pairs of workload p50 divided by health p50.
    pub p50_ratio: f64,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl WorkloadReport {
    pub fn new(workload: &str, concurrency: usize, pairs: Vec<Pair>) -> Self {
        let ratio = |f: &dyn Fn(&Measured) -> f64| {
            median(
                pairs
                    .iter()
                    .map(|p| f(&p.workload) / f(&p.health).max(f64::MIN_POSITIVE))
                    .collect(),
            )
        };
        WorkloadReport {
            workload: workload.to_owned(),
            concurrency,
            throughput_ratio: ratio(&|m| m.calls_per_sec),
            p99_ratio: ratio(&|m| m.p99_us as f64),
            p50_ratio: ratio(&|m| m.p50_us as f64),
            pairs,
        }
    }
}

pub fn print_reports(
    reports: &[WorkloadReport],
    startup: Duration,
    idle_rss: Option<u64>,
    args: &RunArgs,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "startup_seconds": startup.as_secs_f64(),
                "idle_rss_bytes": idle_rss,
                "concurrency": args.concurrency,
                "connections": args.connections,
                "duration_seconds": args.duration,
                "workloads": reports,
            }))?
        );
        return Ok(());
    }
    println!(
        "start-up to serving: {:.2} s; RSS after start: {} MiB; C={} over {} connections, {} s per measurement",
        startup.as_secs_f64(),
        idle_rss.unwrap_or(0) / (1024 * 1024),
        args.concurrency,
        args.connections,
        args.duration
    );
    println!(
        "{:<8} {:>10} {:>9} {:>9} {:>9} {:>10} {:>9} {:>8} {:>9} {:>9}  errors",
        "workload",
        "calls/s",
        "p50 us",
        "p99 us",
        "p999 us",
        "health/s",
        "ratio",
        "p99 x",
        "RSS MiB",
        "CPU %"
    );
    for r in reports {
        for p in &r.pairs {
            let w = &p.workload;
            println!(
                "{:<8} {:>10.0} {:>9} {:>9} {:>9} {:>10.0} {:>9.2} {:>8.2} {:>9} {:>9.0}  {:?}",
                r.workload,
                w.calls_per_sec,
                w.p50_us,
                w.p99_us,
                w.p999_us,
                p.health.calls_per_sec,
                w.calls_per_sec / p.health.calls_per_sec,
                w.p99_us as f64 / p.health.p99_us.max(1) as f64,
                w.server_rss.unwrap_or(0) / (1024 * 1024),
                w.server_cpu_percent.unwrap_or(f64::NAN),
                w.errors
            );
        }
        println!(
            "{:<8} median ratio to health: throughput {:.2}, p50 {:.2}, p99 {:.2}",
            r.workload, r.throughput_ratio, r.p50_ratio, r.p99_ratio
        );
    }
    Ok(())
}
