//! hookplane-bench: seeds a data set, drives signed load against a real
//! server, and measures it against the machine's own baselines (an
//! unauthenticated health check, pgbench, a bare SQLite loop).
//!
//! ```text
//! hookplane-bench seed --data-dir /tmp/bench --tenants 10000 --subscriptions 1000000
//! hookplane-bench run --data-dir /tmp/bench --workloads resolve,get --concurrency 64
//! hookplane-bench pg-baseline --database-url postgres://... --concurrency 8
//! hookplane-bench propagation --database-url postgres://...
//! hookplane-bench watch-idle --data-dir /tmp/bench --streams 5000 --propagation-writes 20
//! ```

mod baseline;
mod client;
mod dataset;
mod limits;
mod report;
mod run;
mod server;
mod staleness;
mod watch;

use clap::{Parser, Subcommand};

/// The same allocator as the server: the load generator shares the machine
/// with it, so its own allocation costs come out of the server's share.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "hookplane-bench", about = "Benchmark harness for hookplane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a synthetic data set straight through the repository.
    Seed(dataset::SeedArgs),
    /// Start a server on the data set and drive workloads against it.
    Run(run::RunArgs),
    /// Compare creates on PostgreSQL with pgbench running the same statements.
    PgBaseline(baseline::PgArgs),
    /// Compare creates on SQLite with a bare loop running the same statements.
    SqliteBaseline(baseline::SqliteArgs),
    /// Two servers on one PostgreSQL: how long a write on A takes to resolve on B.
    Propagation(run::PropagationArgs),
    /// The same workloads on two servers (A and B flags) in turn: B's
    /// throughput over A's.
    Compare(limits::CompareArgs),
    /// RSS and CPU of the server (and PostgreSQL's transactions) with no
    /// Watch stream, then with N idle ones; how fast a change reaches them.
    WatchIdle(watch::WatchIdleArgs),
    /// Many tenant-scoped snapshots at once against one alone.
    WatchSnapshots(watch::WatchSnapshotsArgs),
    /// How soon a write is resolvable at every LocalResolver (the client
    /// library) following its tenant.
    LocalStaleness(staleness::StalenessArgs),
    /// ValidateEventPayload with a large payload that violates its schema.
    ValidatePayload(limits::ValidateArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // As the server does, so the SQLite baselines run under the same
    // settings as the server they are compared with.
    // SAFETY: before any thread opens a database (the runtime's worker
    // threads have run nothing yet).
    unsafe { hookplane::repository::sqlite_memory_statistics_off() };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match Cli::parse().command {
        Command::Seed(args) => dataset::seed(args).await,
        Command::Run(args) => run::run(args).await,
        Command::PgBaseline(args) => baseline::pg(args).await,
        Command::SqliteBaseline(args) => baseline::sqlite(args).await,
        Command::Propagation(args) => run::propagation(args).await,
        Command::Compare(args) => limits::compare(args).await,
        Command::WatchIdle(args) => watch::watch_idle(args).await,
        Command::WatchSnapshots(args) => watch::watch_snapshots(args).await,
        Command::LocalStaleness(args) => staleness::local_staleness(args).await,
        Command::ValidatePayload(args) => limits::validate_payload(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookplane-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
