//! Watch streams at scale: what idle streams cost the server and its
//! database, and how fast one change reaches all of them (`watch-idle`);
//! how long many snapshots taken at once last against one alone
//! (`watch-snapshots`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::client::{Signer, channels};
use crate::dataset::{event_type_name, tenant_id};
use crate::report::median;
use crate::run::{BENCH_API_ID, BENCH_SECRET};
use crate::server::{Server, ServerOptions, cpu_of, default_binary};
use hookplane::proto;
use proto::watch_subscriptions_response::{Kind, Resource};

type Watches = proto::subscription_service_client::SubscriptionServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Signer>,
>;

fn watches(channel: Channel) -> Watches {
    proto::subscription_service_client::SubscriptionServiceClient::with_interceptor(
        channel,
        Signer::new(BENCH_API_ID, BENCH_SECRET),
    )
}

/// Reads a stream up to its first heartbeat, which ends a snapshot (or, for
/// a stream resumed from a revision, comes after the first heartbeat
/// period): the messages before it.
async fn read_snapshot(
    stream: &mut tonic::Streaming<proto::WatchSubscriptionsResponse>,
) -> anyhow::Result<usize> {
    let mut messages = 0;
    while let Some(m) = stream.message().await? {
        if m.kind == Kind::Heartbeat as i32 {
            return Ok(messages);
        }
        messages += 1;
    }
    bail!("a watch ended before its snapshot")
}

#[derive(Debug, Clone, Args)]
pub struct WatchIdleArgs {
    #[arg(long, default_value = "./bench-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "HOOKPLANE_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "HOOKPLANE_MASTER_KEY")]
    pub master_key: Option<String>,
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Idle WatchSubscriptions streams to open.
    #[arg(long, default_value_t = 2000)]
    pub streams: usize,
    /// Connections to spread them over (at least enough to keep each under
    /// the server's 1000 streams per connection).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Seconds over which CPU (and PostgreSQL's transactions) are sampled,
    /// with and without the streams.
    #[arg(long, default_value_t = 10)]
    pub sample_seconds: u64,
    /// Seconds to wait before each sample. PostgreSQL backends report
    /// their transactions to pg_stat_database up to 10 s late: wait longer
    /// than that, or a sample counts what came before it.
    #[arg(long, default_value_t = 2)]
    pub settle_seconds: u64,
    /// Streams opening (taking their snapshot) at once, at most; 0 opens
    /// them all at once, as a fleet reconnecting after a restart would.
    #[arg(long, default_value_t = 50)]
    pub open_at_once: usize,
    /// Sequential creates timed in each phase (0: none).
    #[arg(long, default_value_t = 200)]
    pub probe_creates: usize,
    /// Catalog writes made while the streams are open (0: none). Each
    /// reaches every stream; the report times its arrival on each one from
    /// the moment its write was answered.
    #[arg(long, default_value_t = 0)]
    pub propagation_writes: usize,
    /// Milliseconds between two propagation writes.
    #[arg(long, default_value_t = 250)]
    pub propagation_interval_ms: u64,
    /// Open the streams from the current revision (no snapshot), to tell
    /// a stream's own cost from what its snapshot leaves behind.
    #[arg(long)]
    pub resume: bool,
    /// Must match the seeded data set: streams watch these tenants in turn.
    #[arg(long, default_value_t = 10_000)]
    pub tenants: usize,
    /// One more `hookplane serve` argument (repeat it).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// Transactions committed or rolled back so far in the PostgreSQL database
/// `db` is connected to.
async fn pg_transactions(db: &sea_orm::DatabaseConnection) -> anyhow::Result<i64> {
    use sea_orm::{ConnectionTrait, DbBackend, Statement};
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT (xact_commit + xact_rollback)::int8 AS n FROM pg_stat_database \
             WHERE datname = current_database()",
        ))
        .await?
        .context("no pg_stat_database row for the server's database")?;
    Ok(row.try_get::<i64>("", "n")?)
}

/// The server's CPU use in percent of one core and, when `pg` is given,
/// its database's transactions per second, over `over`.
async fn sample(
    server: &Server,
    over: Duration,
    pg: Option<&sea_orm::DatabaseConnection>,
) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    let xacts = match pg {
        Some(db) => Some(pg_transactions(db).await?),
        None => None,
    };
    let cpu = server.cpu();
    let t = Instant::now();
    tokio::time::sleep(over).await;
    let seconds = t.elapsed().as_secs_f64();
    let cpu = match (cpu, server.cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() / seconds * 100.0),
        _ => None,
    };
    let xacts_per_sec = match (pg, xacts) {
        (Some(db), Some(before)) => Some((pg_transactions(db).await? - before) as f64 / seconds),
        _ => None,
    };
    Ok((cpu, xacts_per_sec))
}

/// Busy and total jiffies of the whole machine, all cores (`/proc/stat`).
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// p50 and p99 (µs) of `n` creates one after another.
async fn probe_creates(
    channel: Channel,
    n: usize,
    tenants: usize,
    tag: &str,
) -> anyhow::Result<Option<(u64, u64)>> {
    if n == 0 {
        return Ok(None);
    }
    let mut subs = watches(channel);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..n {
        let t = Instant::now();
        subs.create_subscription(proto::CreateSubscriptionRequest {
            subscription: Some(proto::Subscription {
                tenant_id: tenant_id(i % tenants.max(1)),
                endpoint_id: "e0".into(),
                name: format!("watch-idle-{}-{tag}-{i}", std::process::id()),
                event_types: vec![event_type_name(i % 30)],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .context("a probe create failed")?;
        hist.record(t.elapsed().as_micros().max(1) as u64)?;
    }
    Ok(Some((
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
    )))
}

/// Samples the server with no stream open, then opens `--streams` idle
/// Watch streams (each past its snapshot), samples it again and times
/// `--propagation-writes` changes reaching every stream; then closes them
/// and samples once more, which shows how far the machine drifted.
pub async fn watch_idle(args: WatchIdleArgs) -> anyhow::Result<()> {
    let binary = args.server_bin.clone().unwrap_or_else(default_binary);
    // One credential opens every stream: lift its per-credential cap (a
    // later --server-arg may set it again).
    let mut extra = vec![
        "--max-watch-streams-per-credential".to_owned(),
        args.streams.max(1).to_string(),
    ];
    extra.extend(args.server_args.iter().cloned());
    let pg = match args
        .database_url
        .as_deref()
        .filter(|u| u.starts_with("postgres"))
    {
        Some(url) => {
            let mut opts = sea_orm::ConnectOptions::new(url);
            opts.max_connections(1).sqlx_logging(false);
            Some(sea_orm::Database::connect(opts).await?)
        }
        None => None,
    };
    let server = Server::start(&ServerOptions {
        binary: &binary,
        data_dir: &args.data_dir,
        database_url: args.database_url.as_deref(),
        master_key: args.master_key.as_deref(),
        api_id: BENCH_API_ID,
        secret: BENCH_SECRET,
        extra_args: &extra,
    })
    .await?;
    let result = watch_idle_on(&server, &args, pg.as_ref()).await;
    server.stop().await;
    if let Some(db) = pg {
        let _ = db.close().await;
    }
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let mib = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / (1024.0 * 1024.0);
        for phase in ["none", "open", "closed"] {
            let p = &report[phase];
            println!(
                "{phase:>6} ({:>5} streams): RSS {:.1} MiB, CPU {:.1} % of a core, \
                 PostgreSQL {} transactions/s, create p50 {} us p99 {} us",
                p["streams"],
                mib(&p["rss_bytes"]),
                p["cpu_percent"].as_f64().unwrap_or(f64::NAN),
                p["pg_transactions_per_sec"],
                p["create_p50_us"],
                p["create_p99_us"],
            );
        }
        println!(
            "opening {} streams took {:.2} s; {} ended before the end of the run",
            report["open"]["streams"], report["open_seconds"], report["ended_early"]
        );
        let p = &report["propagation"];
        if p.is_object() {
            println!(
                "{} writes reached {} of {} (stream, write) pairs: p50 {} ms, p99 {} ms, max {} ms after the write's answer",
                p["writes"],
                p["arrivals"],
                p["arrivals_expected"],
                p["p50_ms"],
                p["p99_ms"],
                p["max_ms"]
            );
        }
    }
    let p = &report["propagation"];
    if p.is_object() && (p["arrivals"] != p["arrivals_expected"] || p["duplicates"] != 0) {
        bail!("some changes did not reach every stream exactly once (see the report)");
    }
    Ok(())
}

/// One change that reached one stream.
struct Arrival {
    stream: usize,
    write: usize,
    at: Instant,
}

/// The propagation write a message reports, if it is one.
fn propagation_write(m: &proto::WatchSubscriptionsResponse, prefix: &str) -> Option<usize> {
    if m.kind != Kind::Upsert as i32 {
        return None;
    }
    match &m.resource {
        Some(Resource::EventType(e)) => e.name.strip_prefix(prefix)?.parse().ok(),
        _ => None,
    }
}

async fn watch_idle_on(
    server: &Server,
    args: &WatchIdleArgs,
    pg: Option<&sea_orm::DatabaseConnection>,
) -> anyhow::Result<serde_json::Value> {
    let over = Duration::from_secs(args.sample_seconds.max(1));
    let settle = Duration::from_secs(args.settle_seconds);
    let per_connection = 900;
    let connections = args
        .connections
        .max(args.streams.div_ceil(per_connection))
        .max(1);
    let chans = channels(server.grpc, connections + 1).await?;
    let probe = chans[connections].clone();
    let phase = async |streams: usize, tag: &str| -> anyhow::Result<serde_json::Value> {
        tokio::time::sleep(settle).await;
        // The machine is shared: how busy it was tells a slow phase from
        // a busy machine.
        let machine = machine_jiffies();
        let (cpu, xacts) = sample(server, over, pg).await?;
        let server_cpu = server.cpu();
        let probe = probe_creates(probe.clone(), args.probe_creates, args.tenants, tag).await?;
        let cpu_per_create_ms = match (server_cpu, server.cpu()) {
            (Some(a), Some(b)) if args.probe_creates > 0 => {
                Some(b.saturating_sub(a).as_secs_f64() * 1000.0 / args.probe_creates as f64)
            }
            _ => None,
        };
        let machine_busy_percent = match (machine, machine_jiffies()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                Some((b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
            }
            _ => None,
        };
        let phase = serde_json::json!({
            "streams": streams,
            "rss_bytes": server.rss(),
            "cpu_percent": cpu,
            "pg_transactions_per_sec": xacts,
            "create_p50_us": probe.map(|p| p.0),
            "create_p99_us": probe.map(|p| p.1),
            "server_cpu_ms_per_create": cpu_per_create_ms,
            "machine_busy_percent": machine_busy_percent,
        });
        eprintln!("{tag}: {phase}");
        Ok(phase)
    };
    let none = phase(0, "none").await?;

    let since_revision = if args.resume {
        watches(chans[0].clone())
            .resolve_subscribers(proto::ResolveSubscribersRequest {
                tenant_id: tenant_id(0),
                event_type: event_type_name(0),
                ..Default::default()
            })
            .await?
            .into_inner()
            .revision
    } else {
        0
    };
    // Catalog changes reach every tenant-scoped stream.
    let prefix = format!("bench.watch.p{}.w", std::process::id());
    let (arrived, mut arrivals) = mpsc::unbounded_channel::<Arrival>();
    let opened = Instant::now();
    let (ready_tx, mut ready_rx) = mpsc::channel::<anyhow::Result<()>>(args.streams.max(1));
    let mut streams = JoinSet::new();
    let opening = std::sync::Arc::new(tokio::sync::Semaphore::new(if args.open_at_once == 0 {
        tokio::sync::Semaphore::MAX_PERMITS
    } else {
        args.open_at_once
    }));
    for i in 0..args.streams {
        let permit = opening.clone().acquire_owned().await?;
        let mut subs = watches(chans[i % connections].clone());
        let tenant = tenant_id(i % args.tenants.max(1));
        let ready = ready_tx.clone();
        let (arrived, prefix) = (arrived.clone(), prefix.clone());
        streams.spawn(async move {
            let opened = subs
                .watch_subscriptions(proto::WatchSubscriptionsRequest {
                    tenant_id: tenant,
                    since_revision,
                    progress_heartbeats: false,
                })
                .await;
            let mut stream = match opened {
                Ok(s) => s.into_inner(),
                Err(s) => {
                    let _ = ready.send(Err(anyhow::anyhow!("watch refused: {s}"))).await;
                    return;
                }
            };
            let snapshot = read_snapshot(&mut stream).await;
            let failed = snapshot.is_err();
            let _ = ready.send(snapshot.map(|_| ())).await;
            drop(permit);
            if failed {
                return;
            }
            // Read everything, as a dispatcher would.
            while let Ok(Some(m)) = stream.message().await {
                let at = Instant::now();
                if let Some(write) = propagation_write(&m, &prefix) {
                    let _ = arrived.send(Arrival {
                        stream: i,
                        write,
                        at,
                    });
                }
            }
        });
    }
    drop((ready_tx, arrived));
    for _ in 0..args.streams {
        match ready_rx.recv().await {
            Some(r) => r?,
            None => bail!("the watch tasks ended early"),
        }
    }
    let open_seconds = opened.elapsed().as_secs_f64();
    eprintln!("{} streams open in {open_seconds:.2} s", args.streams);
    let open = phase(args.streams, "open").await?;
    let propagation = if args.propagation_writes > 0 {
        propagate(probe.clone(), args, &prefix, &mut arrivals).await?
    } else {
        serde_json::Value::Null
    };
    // Streams that ended while they should have stayed open.
    let ended_early = {
        let mut n = 0;
        while streams.try_join_next().is_some() {
            n += 1;
        }
        n
    };
    streams.abort_all();
    while streams.join_next().await.is_some() {}
    let closed = phase(0, "closed").await?;
    Ok(serde_json::json!({
        "none": none,
        "open": open,
        "closed": closed,
        "open_seconds": open_seconds,
        "ended_early": ended_early,
        "connections": connections,
        "propagation": propagation,
    }))
}

/// Makes `--propagation-writes` catalog changes, one every
/// `--propagation-interval-ms`, and times each one's arrival on every
/// stream from the moment its write was answered.
async fn propagate(
    channel: Channel,
    args: &WatchIdleArgs,
    prefix: &str,
    arrivals: &mut mpsc::UnboundedReceiver<Arrival>,
) -> anyhow::Result<serde_json::Value> {
    let mut catalog = proto::event_type_service_client::EventTypeServiceClient::with_interceptor(
        channel,
        Signer::new(BENCH_API_ID, BENCH_SECRET),
    );
    let writes = args.propagation_writes;
    let (mut sent, mut answered) = (Vec::with_capacity(writes), Vec::with_capacity(writes));
    let mut write_us = Vec::with_capacity(writes);
    for k in 0..writes {
        if k > 0 {
            tokio::time::sleep(Duration::from_millis(args.propagation_interval_ms)).await;
        }
        let t = Instant::now();
        catalog
            .create_event_type(proto::CreateEventTypeRequest {
                event_type: Some(proto::EventType {
                    name: format!("{prefix}{k}"),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await
            .context("a propagation write failed")?;
        sent.push(t);
        answered.push(Instant::now());
        write_us.push(t.elapsed().as_micros() as f64);
    }
    let expected = args.streams * writes;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    // The answer can wait behind the fan-out on a shared machine: from the
    // write's start too, which bounds the time from above.
    let mut from_sent = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut seen = HashSet::with_capacity(expected);
    let (mut duplicates, mut before_answer) = (0usize, 0usize);
    // Per write: when its last stream had it, from the write's start.
    let mut all_streams_us = vec![0u64; writes];
    while seen.len() < expected {
        let Ok(Some(a)) = tokio::time::timeout_at(deadline, arrivals.recv()).await else {
            break;
        };
        let Some(&answer) = answered.get(a.write) else {
            continue;
        };
        if !seen.insert((a.stream, a.write)) {
            duplicates += 1;
            continue;
        }
        // A stream may have a change before its writer has the answer.
        let us = match a.at.checked_duration_since(answer) {
            Some(d) => d.as_micros().max(1) as u64,
            None => {
                before_answer += 1;
                1
            }
        };
        hist.record(us)?;
        let since_sent = a.at.duration_since(sent[a.write]).as_micros().max(1) as u64;
        from_sent.record(since_sent)?;
        all_streams_us[a.write] = all_streams_us[a.write].max(since_sent);
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(serde_json::json!({
        "writes": writes,
        "interval_ms": args.propagation_interval_ms,
        "arrivals_expected": expected,
        "arrivals": seen.len(),
        "duplicates": duplicates,
        "arrived_before_answer": before_answer,
        "p50_ms": ms(hist.value_at_quantile(0.5)),
        "p99_ms": ms(hist.value_at_quantile(0.99)),
        "max_ms": ms(hist.max()),
        "from_sent_p50_ms": ms(from_sent.value_at_quantile(0.5)),
        "from_sent_p99_ms": ms(from_sent.value_at_quantile(0.99)),
        "from_sent_max_ms": ms(from_sent.max()),
        "all_streams_from_sent_ms": all_streams_us.into_iter().map(ms).collect::<Vec<_>>(),
        "write_p50_ms": median(write_us) / 1000.0,
    }))
}

#[derive(Debug, Clone, Args)]
pub struct WatchSnapshotsArgs {
    #[arg(long, default_value = "./bench-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "HOOKPLANE_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "HOOKPLANE_MASTER_KEY")]
    pub master_key: Option<String>,
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Tenant-scoped streams opening from revision 0 at once, each on a
    /// tenant of its own.
    #[arg(long, default_value_t = 500)]
    pub streams: usize,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Streams timed alone, one after another, before the burst and again
    /// after it; each on a tenant of its own.
    #[arg(long, default_value_t = 5)]
    pub singles: usize,
    /// Must match the seeded data set, and be at least --streams plus twice
    /// --singles.
    #[arg(long, default_value_t = 10_000)]
    pub tenants: usize,
    /// One more `hookplane serve` argument (repeat it).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// One stream from revision 0: the time to the end of its snapshot, its
/// snapshot's messages, and the stream (still open).
async fn timed_snapshot(
    mut subs: Watches,
    tenant: String,
    from: Instant,
) -> anyhow::Result<(
    Duration,
    usize,
    tonic::Streaming<proto::WatchSubscriptionsResponse>,
)> {
    let mut stream = subs
        .watch_subscriptions(proto::WatchSubscriptionsRequest {
            tenant_id: tenant,
            since_revision: 0,
            progress_heartbeats: false,
        })
        .await
        .context("watch refused")?
        .into_inner();
    let messages = read_snapshot(&mut stream).await?;
    Ok((from.elapsed(), messages, stream))
}

/// Times single snapshots, then `--streams` at once, then single ones
/// again: the burst's last snapshot against the median single one.
pub async fn watch_snapshots(args: WatchSnapshotsArgs) -> anyhow::Result<()> {
    if args.tenants < args.streams + 2 * args.singles {
        bail!("--tenants must be at least --streams plus twice --singles");
    }
    let binary = args.server_bin.clone().unwrap_or_else(default_binary);
    let mut extra = vec![
        "--max-watch-streams-per-credential".to_owned(),
        args.streams.max(1).to_string(),
    ];
    extra.extend(args.server_args.iter().cloned());
    let server = Server::start(&ServerOptions {
        binary: &binary,
        data_dir: &args.data_dir,
        database_url: args.database_url.as_deref(),
        master_key: args.master_key.as_deref(),
        api_id: BENCH_API_ID,
        secret: BENCH_SECRET,
        extra_args: &extra,
    })
    .await?;
    let result = watch_snapshots_on(&server, &args).await;
    server.stop().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
        println!(
            "one stream alone: median {:.1} ms over {} singles; {} at once: all done in {:.1} ms, \
             p50 {:.1} ms; all / one = {:.2}",
            f(&report["single_median_ms"]),
            2 * args.singles,
            report["streams"],
            f(&report["burst_all_ms"]),
            f(&report["burst_p50_ms"]),
            f(&report["all_over_one"]),
        );
    }
    Ok(())
}

async fn watch_snapshots_on(
    server: &Server,
    args: &WatchSnapshotsArgs,
) -> anyhow::Result<serde_json::Value> {
    let chans = channels(server.grpc, args.connections.max(1)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Singles on the last tenants, the burst on the first ones: no stream
    // reads a tenant another has read.
    let mut next_single = args.tenants;
    let mut singles = async || -> anyhow::Result<(Vec<f64>, usize)> {
        let mut ms = Vec::new();
        let mut messages = 0;
        for _ in 0..args.singles {
            next_single -= 1;
            let subs = watches(chans[0].clone());
            let (took, m, _) = timed_snapshot(subs, tenant_id(next_single), Instant::now()).await?;
            ms.push(took.as_secs_f64() * 1000.0);
            messages = m;
        }
        Ok((ms, messages))
    };
    let (before, single_messages) = singles().await?;

    let rss_before = server.rss();
    // CPU of the server and of this load generator, which decodes every
    // snapshot on the same machine.
    let cpu = (server.cpu(), cpu_of(std::process::id()));
    let started = Instant::now();
    let mut burst = JoinSet::new();
    for i in 0..args.streams {
        let subs = watches(chans[i % chans.len()].clone());
        burst.spawn(timed_snapshot(subs, tenant_id(i), started));
    }
    let mut took = Vec::with_capacity(args.streams);
    let mut messages = 0;
    let mut open = Vec::with_capacity(args.streams);
    while let Some(done) = burst.join_next().await {
        let (t, m, stream) = done??;
        took.push(t.as_secs_f64() * 1000.0);
        messages += m;
        open.push(stream);
    }
    let rss_open = server.rss();
    let used = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1000.0),
        _ => None,
    };
    let server_cpu_ms = used(cpu.0, server.cpu());
    let client_cpu_ms = used(cpu.1, cpu_of(std::process::id()));
    drop(open);
    took.sort_by(f64::total_cmp);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (after, _) = singles().await?;
    let one = median(before.iter().chain(&after).copied().collect());
    let all = took.last().copied().unwrap_or(f64::NAN);
    Ok(serde_json::json!({
        "streams": args.streams,
        "connections": chans.len(),
        "singles_before_ms": before,
        "singles_after_ms": after,
        "single_median_ms": one,
        "single_messages": single_messages,
        "burst_all_ms": all,
        "burst_first_ms": took.first(),
        "burst_p50_ms": took.get(took.len() / 2),
        "burst_messages": messages,
        "burst_server_cpu_ms": server_cpu_ms,
        "burst_client_cpu_ms": client_cpu_ms,
        "all_over_one": all / one,
        "rss_before_burst_bytes": rss_before,
        "rss_with_burst_open_bytes": rss_open,
    }))
}
