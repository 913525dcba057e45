//! `local-staleness`: how soon a change is resolvable at every
//! LocalResolver of the client library. N resolvers, each with a
//! connection of its own, follow one tenant; the harness then writes,
//! and for each write times each resolver from the write's answer (and
//! from when it was sent) until the resolver reflects the write's
//! revision, which is when a resolve there answers with it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use hookplane_client::proto::{CreateSubscriptionRequest, Subscription};
use hookplane_client::{Client, Credential, LocalResolver};

use crate::dataset::{event_type_name, tenant_id};
use crate::run::{BENCH_API_ID, BENCH_SECRET};
use crate::server::{Server, ServerOptions, default_binary};

#[derive(Debug, Clone, Args)]
pub struct StalenessArgs {
    #[arg(long, default_value = "./bench-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "HOOKPLANE_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "HOOKPLANE_MASTER_KEY")]
    pub master_key: Option<String>,
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// LocalResolvers, each on a connection of its own, all following
    /// the data set's first tenant.
    #[arg(long, default_value_t = 100)]
    pub resolvers: usize,
    /// Writes (subscription creates in that tenant), one after another.
    #[arg(long, default_value_t = 50)]
    pub writes: usize,
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// One more `hookplane serve` argument (repeat it).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn local_staleness(args: StalenessArgs) -> anyhow::Result<()> {
    let binary = args.server_bin.clone().unwrap_or_else(default_binary);
    let mut extra = vec![
        "--max-watch-streams-per-credential".to_owned(),
        args.resolvers.max(1).to_string(),
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
    let result = staleness_on(&server, &args).await;
    server.stop().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} resolvers x {} writes: resolvable after the write's answer p50 {} ms, p99 {} ms, max {} ms; \
             after it was sent p99 {} ms",
            args.resolvers,
            args.writes,
            report["from_answer_p50_ms"],
            report["from_answer_p99_ms"],
            report["from_answer_max_ms"],
            report["from_sent_p99_ms"],
        );
    }
    Ok(())
}

async fn staleness_on(server: &Server, args: &StalenessArgs) -> anyhow::Result<serde_json::Value> {
    let address = format!("http://{}", server.grpc);
    let credential = Credential::new(BENCH_API_ID, BENCH_SECRET);
    let tenant = tenant_id(0);
    let opened = Instant::now();
    let mut resolvers = Vec::with_capacity(args.resolvers);
    for _ in 0..args.resolvers {
        let client = Client::connect(address.clone(), credential.clone())
            .await
            .context("connect a resolver")?;
        resolvers.push(LocalResolver::start(client.subscriptions(), &tenant));
    }
    for resolver in &resolvers {
        tokio::time::timeout(Duration::from_secs(120), resolver.ready())
            .await
            .context("a resolver's snapshot took over 120 s")?;
    }
    let ready_s = opened.elapsed().as_secs_f64();
    let writer = Client::connect(address, credential).await?;
    let resolvers = std::sync::Arc::new(resolvers);
    let mut from_answer = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut from_sent = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..args.writes {
        let sent = Instant::now();
        let response = writer
            .subscriptions()
            .create_subscription(CreateSubscriptionRequest {
                subscription: Some(Subscription {
                    tenant_id: tenant.clone(),
                    endpoint_id: "e0".into(),
                    name: format!("staleness-{}-{i}", std::process::id()),
                    event_types: vec![event_type_name(i % 30)],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .context("a write failed")?;
        let answered = Instant::now();
        let revision: i64 = response
            .metadata()
            .get("x-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .context("the write's answer has no x-revision")?;
        let id = response.get_ref().subscription_id.clone();
        let event = event_type_name(i % 30);
        let mut waits = tokio::task::JoinSet::new();
        for r in 0..resolvers.len() {
            let resolvers = resolvers.clone();
            waits.spawn(async move {
                resolvers[r].wait_for(revision).await;
                Instant::now()
            });
        }
        while let Some(reached) = waits.join_next().await {
            let reached = reached?;
            let us =
                |since: Instant| reached.saturating_duration_since(since).as_micros().max(1) as u64;
            from_answer.record(us(answered))?;
            from_sent.record(us(sent))?;
        }
        // Resolvable, not only at the revision: checked on one resolver.
        let found = resolvers[i % resolvers.len()]
            .resolve(&tenant, &event)
            .is_some_and(|a| a.targets.iter().any(|t| t.subscription_id == id));
        anyhow::ensure!(found, "write {i} is not resolvable at its revision");
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "resolvers": args.resolvers,
        "writes": args.writes,
        "ready_seconds": ready_s,
        "from_answer_p50_ms": ms(&from_answer, 0.5),
        "from_answer_p99_ms": ms(&from_answer, 0.99),
        "from_answer_max_ms": from_answer.max() as f64 / 1000.0,
        "from_sent_p50_ms": ms(&from_sent, 0.5),
        "from_sent_p99_ms": ms(&from_sent, 0.99),
        "from_sent_max_ms": from_sent.max() as f64 / 1000.0,
    }))
}
