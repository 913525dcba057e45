//! Drives workloads against a started server and measures each against the
//! unauthenticated health check in the same run: workloads and health
//! alternate in pairs, and the quoted ratio is the median pairwise ratio.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use tonic::transport::Channel;

use crate::client::{Signer, Subscriptions, channels};
use crate::dataset::{Rng, event_type_name, subscription_id, tenant_id};
use crate::report::{Measured, Pair, WorkloadReport, print_reports};
use crate::server::{Server, ServerOptions, default_binary};
use hookplane::proto;

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[arg(long, default_value = "./bench-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "HOOKPLANE_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "HOOKPLANE_MASTER_KEY")]
    pub master_key: Option<String>,
    /// The hookplane binary; default: next to this one.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Comma-separated: resolve, batch-resolve (100 queries a call), get, list,
    /// create, update (health is the baseline).
    #[arg(long, default_value = "resolve,get,list,create,update")]
    pub workloads: String,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Health/workload pairs per workload (at least 3 for a median).
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    /// Seconds per health measurement, when it should differ from
    /// --duration (a long soak of one workload with a short baseline).
    #[arg(long)]
    pub health_seconds: Option<u64>,
    /// Must match the seeded data set.
    #[arg(long, default_value_t = 10_000)]
    pub tenants: usize,
    #[arg(long, default_value_t = 1_000_000)]
    pub subscriptions: usize,
    #[arg(long, default_value_t = 300)]
    pub event_types: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// One more `hookplane serve` argument (repeat it, one per word:
    /// `--server-arg=--rate-limit --server-arg=1000000`).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

/// Numbers the names of created subscriptions across every run of this
/// process: a write baseline's rounds create on the same data set, and a
/// live name must be unique within its tenant.
static CREATED: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Health,
    Resolve,
    /// BatchResolveSubscribers with [`BATCH_QUERIES`] random queries: each
    /// call resolves that many events.
    BatchResolve,
    Get,
    List,
    Create,
    Update,
}

/// Queries per call of the batch-resolve workload.
pub const BATCH_QUERIES: usize = 100;

impl Workload {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s.trim() {
            "health" => Workload::Health,
            "resolve" => Workload::Resolve,
            "batch-resolve" => Workload::BatchResolve,
            "get" => Workload::Get,
            "list" => Workload::List,
            "create" => Workload::Create,
            "update" => Workload::Update,
            other => bail!("unknown workload {other}"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::Health => "health",
            Workload::Resolve => "resolve",
            Workload::BatchResolve => "batch-resolve",
            Workload::Get => "get",
            Workload::List => "list",
            Workload::Create => "create",
            Workload::Update => "update",
        }
    }
}

/// What a caller needs to build its requests.
#[derive(Clone)]
pub(crate) struct Shape {
    tenants: usize,
    subs_per_tenant: usize,
    event_types: usize,
    write_tenant: String,
    write_endpoint: String,
}

/// One caller's clients.
pub(crate) struct Caller {
    health: tonic_health::pb::health_client::HealthClient<Channel>,
    subs: Subscriptions,
    rng: Rng,
}

impl Caller {
    async fn call(&mut self, w: Workload, shape: &Shape) -> Result<(), tonic::Code> {
        let result = match w {
            Workload::Health => self
                .health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map(|_| ()),
            Workload::Resolve => self
                .subs
                .resolve_subscribers(proto::ResolveSubscribersRequest {
                    tenant_id: tenant_id(self.rng.below(shape.tenants)),
                    event_type: event_type_name(self.rng.below(shape.event_types)),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            Workload::BatchResolve => {
                let queries = (0..BATCH_QUERIES)
                    .map(|_| proto::ResolveSubscribersRequest {
                        tenant_id: tenant_id(self.rng.below(shape.tenants)),
                        event_type: event_type_name(self.rng.below(shape.event_types)),
                        ..Default::default()
                    })
                    .collect();
                self.subs
                    .batch_resolve_subscribers(proto::BatchResolveSubscribersRequest { queries })
                    .await
                    .map(|_| ())
            }
            Workload::Get => self
                .subs
                .get_subscription(proto::GetSubscriptionRequest {
                    tenant_id: tenant_id(self.rng.below(shape.tenants)),
                    subscription_id: subscription_id(self.rng.below(shape.subs_per_tenant.max(1))),
                })
                .await
                .map(|_| ()),
            Workload::List => self
                .subs
                .list_subscriptions(proto::ListSubscriptionsRequest {
                    tenant_id: tenant_id(self.rng.below(shape.tenants)),
                    page_size: 50,
                    ..Default::default()
                })
                .await
                .map(|_| ()),
            Workload::Create => {
                // Spread over the seeded tenants (endpoint e0 exists in each),
                // as many tenants' writes arrive in production.
                let n = CREATED.fetch_add(1, Ordering::Relaxed);
                self.subs
                    .create_subscription(proto::CreateSubscriptionRequest {
                        subscription: Some(proto::Subscription {
                            tenant_id: tenant_id(self.rng.below(shape.tenants)),
                            endpoint_id: "e0".into(),
                            name: format!("bench-{}-{n}", std::process::id()),
                            event_types: vec![event_type_name(self.rng.below(shape.event_types))],
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
            }
            Workload::Update => {
                let status = if self.rng.below(2) == 0 {
                    proto::subscription::Status::Active
                } else {
                    proto::subscription::Status::Disabled
                };
                self.subs
                    .update_subscription(proto::UpdateSubscriptionRequest {
                        subscription: Some(proto::Subscription {
                            tenant_id: tenant_id(self.rng.below(shape.tenants)),
                            subscription_id: subscription_id(
                                self.rng.below(shape.subs_per_tenant.max(1)),
                            ),
                            status: status as i32,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["status".into()],
                        }),
                        allow_missing: false,
                    })
                    .await
                    .map(|_| ())
            }
        };
        result.map_err(|s| s.code())
    }
}

/// Runs one workload with `callers` for `duration`.
pub(crate) async fn measure(
    w: Workload,
    callers: &mut Vec<Caller>,
    shape: &Shape,
    duration: Duration,
    server: &Server,
) -> anyhow::Result<Measured> {
    let cpu_before = server.cpu();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for mut caller in callers.drain(..) {
        let shape = shape.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = caller.call(w, &shape).await;
                let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                if let Err(code) = r {
                    *errors.entry(format!("{code:?}")).or_default() += 1;
                }
            }
            (caller, hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = BTreeMap::new();
    for task in tasks {
        let (caller, h, e) = task.await?;
        callers.push(caller);
        hist.add(&h)?;
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    let cpu = match (cpu_before, server.cpu()) {
        (Some(a), Some(b)) => {
            Some((b.saturating_sub(a)).as_secs_f64() / elapsed.as_secs_f64() * 100.0)
        }
        _ => None,
    };
    Ok(Measured {
        calls: hist.len(),
        calls_per_sec: hist.len() as f64 / elapsed.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.50),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        errors,
        server_rss: server.rss(),
        server_cpu_percent: cpu,
    })
}

pub(crate) async fn admin_setup(
    channel: Channel,
    signer: Signer,
    shape: &Shape,
) -> anyhow::Result<()> {
    use proto::endpoint_service_client::EndpointServiceClient;
    use proto::tenant_service_client::TenantServiceClient;
    let mut tenants = TenantServiceClient::with_interceptor(channel.clone(), signer.clone());
    let r = tenants
        .create_tenant(proto::CreateTenantRequest {
            tenant: Some(proto::Tenant {
                tenant_id: shape.write_tenant.clone(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await;
    if let Err(s) = r
        && s.code() != tonic::Code::AlreadyExists
    {
        return Err(s).context("cannot create the write tenant");
    }
    let mut endpoints = EndpointServiceClient::with_interceptor(channel, signer);
    let r = endpoints
        .create_endpoint(proto::CreateEndpointRequest {
            endpoint: Some(proto::Endpoint {
                tenant_id: shape.write_tenant.clone(),
                endpoint_id: shape.write_endpoint.clone(),
                url: "https://hooks.example.com/bench".into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await;
    if let Err(s) = r
        && s.code() != tonic::Code::AlreadyExists
    {
        return Err(s).context("cannot create the write endpoint");
    }
    Ok(())
}

pub const BENCH_API_ID: &str = "hookplane-bench";
pub const BENCH_SECRET: &str = "hookplane-bench-secret-0123456789";

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let json = args.json;
    let (reports, startup, idle_rss) = run_inner(args.clone()).await?;
    print_reports(&reports, startup, idle_rss, &args, json)
}

/// Runs the workloads and returns the reports without printing them.
pub async fn run_collect(args: RunArgs) -> anyhow::Result<Vec<WorkloadReport>> {
    Ok(run_inner(args).await?.0)
}

async fn run_inner(args: RunArgs) -> anyhow::Result<(Vec<WorkloadReport>, Duration, Option<u64>)> {
    let workloads: Vec<Workload> = args
        .workloads
        .split(',')
        .map(Workload::parse)
        .collect::<anyhow::Result<_>>()?;
    let binary = args.server_bin.clone().unwrap_or_else(default_binary);
    let server = Server::start(&ServerOptions {
        binary: &binary,
        data_dir: &args.data_dir,
        database_url: args.database_url.as_deref(),
        master_key: args.master_key.as_deref(),
        api_id: BENCH_API_ID,
        secret: BENCH_SECRET,
        extra_args: &args.server_args,
    })
    .await?;
    eprintln!(
        "server up on {} (http {}) in {:.2} s (RSS {} MiB)",
        server.grpc,
        server.http,
        server.startup.as_secs_f64(),
        server.rss().unwrap_or(0) / (1024 * 1024)
    );
    let startup = server.startup;
    let idle_rss = server.rss();
    let result = drive(&args, &workloads, &server, idle_rss).await;
    server.stop().await;
    Ok((result?, startup, idle_rss))
}

/// What the callers of a run need to know about the seeded data set.
pub(crate) fn shape_of(args: &RunArgs) -> Shape {
    Shape {
        tenants: args.tenants.max(1),
        subs_per_tenant: args.subscriptions / args.tenants.max(1),
        event_types: args.event_types.max(30),
        write_tenant: "bench-writes".into(),
        write_endpoint: "bench-endpoint".into(),
    }
}

/// `args.concurrency` callers over `args.connections` connections to
/// `server`, after the admin setup the workloads need.
pub(crate) async fn callers_for(
    server: &Server,
    args: &RunArgs,
    shape: &Shape,
) -> anyhow::Result<Vec<Caller>> {
    let signer = Signer::new(BENCH_API_ID, BENCH_SECRET);
    let chans = channels(server.grpc, args.connections).await?;
    admin_setup(chans[0].clone(), signer.clone(), shape).await?;
    Ok((0..args.concurrency.max(1))
        .map(|i| {
            let ch = chans[i % chans.len()].clone();
            Caller {
                health: tonic_health::pb::health_client::HealthClient::new(ch.clone()),
                subs:
                    proto::subscription_service_client::SubscriptionServiceClient::with_interceptor(
                        ch,
                        signer.clone(),
                    ),
                rng: Rng::new(i as u64 + 7),
            }
        })
        .collect())
}

async fn drive(
    args: &RunArgs,
    workloads: &[Workload],
    server: &Server,
    idle_rss: Option<u64>,
) -> anyhow::Result<Vec<WorkloadReport>> {
    let shape = shape_of(args);
    let mut callers = callers_for(server, args, &shape).await?;
    let duration = Duration::from_secs(args.duration.max(1));
    let health_duration = args
        .health_seconds
        .map_or(duration, |s| Duration::from_secs(s.max(1)));
    // Warm up connections and caches.
    measure(
        Workload::Health,
        &mut callers,
        &shape,
        Duration::from_secs(1),
        server,
    )
    .await?;
    let mut reports = Vec::new();
    for &w in workloads {
        let mut pairs = Vec::new();
        for i in 0..args.pairs.max(1) {
            let health = measure(
                Workload::Health,
                &mut callers,
                &shape,
                health_duration,
                server,
            )
            .await?;
            let work = measure(w, &mut callers, &shape, duration, server).await?;
            eprintln!(
                "{} pair {}: health {:.0}/s p99 {} us, {} {:.0}/s p99 {} us, errors {:?}",
                w.name(),
                i + 1,
                health.calls_per_sec,
                health.p99_us,
                w.name(),
                work.calls_per_sec,
                work.p99_us,
                work.errors
            );
            pairs.push(Pair {
                health,
                workload: work,
            });
        }
        reports.push(WorkloadReport::new(w.name(), args.concurrency, pairs));
    }
    if reports.iter().any(|r| {
        r.pairs
            .iter()
            .any(|p| !p.workload.errors.is_empty() || !p.health.errors.is_empty())
    }) {
        let _ = print_reports(&reports, server.startup, idle_rss, args, args.json);
        bail!("some calls failed (see the errors column)");
    }
    Ok(reports)
}

#[derive(Debug, Clone, Args)]
pub struct PropagationArgs {
    /// A PostgreSQL URL whose database the two servers share (created empty if needed).
    #[arg(long, env = "HOOKPLANE_DATABASE_URL")]
    pub database_url: String,
    #[arg(long, env = "HOOKPLANE_MASTER_KEY")]
    pub master_key: String,
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Writes to time.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    #[arg(long)]
    pub json: bool,
}

/// Writes on A, polls Resolve on B, reports the delay distribution.
pub async fn propagation(args: PropagationArgs) -> anyhow::Result<()> {
    let binary = args.server_bin.clone().unwrap_or_else(default_binary);
    let dir_a = tempfile_dir("a")?;
    let dir_b = tempfile_dir("b")?;
    fn opts<'a>(
        binary: &'a std::path::Path,
        dir: &'a std::path::Path,
        args: &'a PropagationArgs,
    ) -> ServerOptions<'a> {
        ServerOptions {
            binary,
            data_dir: dir,
            database_url: Some(&args.database_url),
            master_key: Some(&args.master_key),
            api_id: BENCH_API_ID,
            secret: BENCH_SECRET,
            extra_args: &[],
        }
    }
    let a = Server::start(&opts(&binary, &dir_a, &args)).await?;
    let b = Server::start(&opts(&binary, &dir_b, &args)).await?;
    let result = async {
        let signer = Signer::new(BENCH_API_ID, BENCH_SECRET);
        let shape = Shape {
            tenants: 1,
            subs_per_tenant: 1,
            event_types: 30,
            write_tenant: "bench-propagation".into(),
            write_endpoint: "bench-endpoint".into(),
        };
        let ca = channels(a.grpc, 1).await?.remove(0);
        let cb = channels(b.grpc, 1).await?.remove(0);
        // The catalog may be empty on a fresh database.
        let mut catalog =
            proto::event_type_service_client::EventTypeServiceClient::with_interceptor(
                ca.clone(),
                signer.clone(),
            );
        let r = catalog
            .create_event_type(proto::CreateEventTypeRequest {
                event_type: Some(proto::EventType {
                    name: "bench.propagation".into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            })
            .await;
        if let Err(s) = r
            && s.code() != tonic::Code::AlreadyExists
        {
            return Err(anyhow::Error::from(s));
        }
        admin_setup(ca.clone(), signer.clone(), &shape).await?;
        let mut on_a =
            proto::subscription_service_client::SubscriptionServiceClient::with_interceptor(
                ca,
                signer.clone(),
            );
        let mut on_b =
            proto::subscription_service_client::SubscriptionServiceClient::with_interceptor(
                cb, signer,
            );
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for i in 0..args.samples {
            let name = format!("prop-{}-{i}", std::process::id());
            let created = on_a
                .create_subscription(proto::CreateSubscriptionRequest {
                    subscription: Some(proto::Subscription {
                        tenant_id: shape.write_tenant.clone(),
                        endpoint_id: shape.write_endpoint.clone(),
                        name,
                        event_types: vec!["bench.propagation".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let t = Instant::now();
            loop {
                let r = on_b
                    .resolve_subscribers(proto::ResolveSubscribersRequest {
                        tenant_id: shape.write_tenant.clone(),
                        event_type: "bench.propagation".into(),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if r.targets
                    .iter()
                    .any(|t| t.subscription_id == created.subscription_id)
                {
                    break;
                }
                if t.elapsed() > Duration::from_secs(10) {
                    bail!("write {i} did not reach replica B within 10 s");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            hist.record(t.elapsed().as_micros().max(1) as u64)?;
        }
        Ok(hist)
    }
    .await;
    a.stop().await;
    b.stop().await;
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
    let hist = result?;
    let (p50, p99, max) = (
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.max(),
    );
    if args.json {
        println!(
            "{}",
            serde_json::json!({"samples": hist.len(), "p50_us": p50, "p99_us": p99, "max_us": max})
        );
    } else {
        println!(
            "propagation A -> B over {} writes: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            hist.len(),
            p50 as f64 / 1000.0,
            p99 as f64 / 1000.0,
            max as f64 / 1000.0
        );
    }
    Ok(())
}

fn tempfile_dir(tag: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hookplane-bench-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
