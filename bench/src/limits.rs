//! The costs that the limits bound, and the cost of the limits themselves:
//! two servers side by side (`compare`) and a large ValidateEventPayload
//! (`validate-payload`). Idle Watch streams are in `watch`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use prost::Message;
use tokio::task::JoinSet;

use crate::client::{Signer, channels};
use crate::dataset::{event_type_name, tenant_id};
use crate::report::median;
use crate::run::{BENCH_API_ID, BENCH_SECRET, RunArgs, Workload, callers_for, measure, shape_of};
use crate::server::{Server, ServerOptions, default_binary};
use hookplane::proto;

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// --data-dir is server A's; --server-arg goes to both.
    #[command(flatten)]
    pub run: RunArgs,
    /// Server B's data directory, seeded like A's (SQLite allows one
    /// server per directory).
    #[arg(long)]
    pub data_dir_b: PathBuf,
    /// Server B's binary, when B is another build (A's is --server-bin).
    /// Each data directory must be seeded by its own server's version.
    #[arg(long)]
    pub server_bin_b: Option<PathBuf>,
    /// One more argument for server A only (repeat it).
    #[arg(long = "a-arg", allow_hyphen_values = true)]
    pub a_args: Vec<String>,
    /// One more argument for server B only (repeat it).
    #[arg(long = "b-arg", allow_hyphen_values = true)]
    pub b_args: Vec<String>,
}

fn start_options<'a>(
    binary: &'a std::path::Path,
    data_dir: &'a std::path::Path,
    run: &'a RunArgs,
    extra: &'a [String],
) -> ServerOptions<'a> {
    ServerOptions {
        binary,
        data_dir,
        database_url: run.database_url.as_deref(),
        master_key: run.master_key.as_deref(),
        api_id: BENCH_API_ID,
        secret: BENCH_SECRET,
        extra_args: extra,
    }
}

/// Runs each workload on A and B in turn, `--pairs` times (the order
/// swapped every pair, so drift of the machine falls on both), and reports
/// the median of B's throughput over A's.
pub async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let run = &args.run;
    let workloads: Vec<Workload> = run
        .workloads
        .split(',')
        .map(Workload::parse)
        .collect::<anyhow::Result<_>>()?;
    let binary = run.server_bin.clone().unwrap_or_else(default_binary);
    let a_extra: Vec<String> = run
        .server_args
        .iter()
        .chain(&args.a_args)
        .cloned()
        .collect();
    let b_extra: Vec<String> = run
        .server_args
        .iter()
        .chain(&args.b_args)
        .cloned()
        .collect();
    let a = Server::start(&start_options(&binary, &run.data_dir, run, &a_extra)).await?;
    let binary_b = args.server_bin_b.clone().unwrap_or_else(|| binary.clone());
    let b = Server::start(&start_options(&binary_b, &args.data_dir_b, run, &b_extra)).await?;
    let result = async {
        let shape = shape_of(run);
        let mut on_a = callers_for(&a, run, &shape).await?;
        let mut on_b = callers_for(&b, run, &shape).await?;
        let warm = Duration::from_secs(1);
        measure(Workload::Health, &mut on_a, &shape, warm, &a).await?;
        measure(Workload::Health, &mut on_b, &shape, warm, &b).await?;
        let duration = Duration::from_secs(run.duration.max(1));
        let mut out = Vec::new();
        for &w in &workloads {
            let mut ratios = Vec::new();
            let mut rows = Vec::new();
            for i in 0..run.pairs.max(1) {
                let (ma, mb) = if i % 2 == 0 {
                    let ma = measure(w, &mut on_a, &shape, duration, &a).await?;
                    (ma, measure(w, &mut on_b, &shape, duration, &b).await?)
                } else {
                    let mb = measure(w, &mut on_b, &shape, duration, &b).await?;
                    (measure(w, &mut on_a, &shape, duration, &a).await?, mb)
                };
                let ratio = mb.calls_per_sec / ma.calls_per_sec.max(f64::MIN_POSITIVE);
                eprintln!(
                    "{} pair {}: A {:.0}/s p99 {} us {:?}, B {:.0}/s p99 {} us {:?}, B/A {:.3}",
                    w.name(),
                    i + 1,
                    ma.calls_per_sec,
                    ma.p99_us,
                    ma.errors,
                    mb.calls_per_sec,
                    mb.p99_us,
                    mb.errors,
                    ratio
                );
                ratios.push(ratio);
                rows.push(serde_json::json!({"a": ma, "b": mb, "b_over_a": ratio}));
            }
            let failed = rows.iter().any(|r| {
                r["a"]["errors"].as_object().is_some_and(|e| !e.is_empty())
                    || r["b"]["errors"].as_object().is_some_and(|e| !e.is_empty())
            });
            out.push(serde_json::json!({
                "workload": w.name(),
                "median_b_over_a": median(ratios.clone()),
                "min_b_over_a": ratios.iter().copied().fold(f64::INFINITY, f64::min),
                "max_b_over_a": ratios.iter().copied().fold(0.0, f64::max),
                "failed_calls": failed,
                "pairs": rows,
            }));
        }
        anyhow::Ok(out)
    }
    .await;
    a.stop().await;
    b.stop().await;
    let out = result?;
    if run.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "a_bin": binary, "b_bin": binary_b,
                "a_args": a_extra, "b_args": b_extra,
                "concurrency": run.concurrency, "connections": run.connections,
                "duration_seconds": run.duration, "workloads": out,
            }))?
        );
    } else {
        println!(
            "A: {} {a_extra:?}\nB: {} {b_extra:?}\nC={} over {} connections, {} s per measurement",
            binary.display(),
            binary_b.display(),
            run.concurrency,
            run.connections,
            run.duration
        );
        for w in &out {
            println!(
                "{:<8} B/A throughput: median {:.3} (min {:.3}, max {:.3}) over {} pairs{}",
                w["workload"].as_str().unwrap_or(""),
                w["median_b_over_a"].as_f64().unwrap_or(f64::NAN),
                w["min_b_over_a"].as_f64().unwrap_or(f64::NAN),
                w["max_b_over_a"].as_f64().unwrap_or(f64::NAN),
                run.pairs.max(1),
                if w["failed_calls"].as_bool() == Some(true) {
                    " (SOME CALLS FAILED)"
                } else {
                    ""
                }
            );
        }
    }
    if out
        .iter()
        .any(|w| w["failed_calls"].as_bool() == Some(true))
    {
        bail!("some calls failed (see the pairs above)");
    }
    Ok(())
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    #[arg(long, default_value = "./bench-data")]
    pub data_dir: PathBuf,
    #[arg(long, env = "HOOKPLANE_DATABASE_URL")]
    pub database_url: Option<String>,
    #[arg(long, env = "HOOKPLANE_MASTER_KEY")]
    pub master_key: Option<String>,
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Payload size: `[1,1,...]`, each item a violation of `items: string`.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub payload_bytes: usize,
    /// Calls one after another.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Then this many calls at once, while a Resolve probe runs alongside.
    #[arg(long, default_value_t = 20)]
    pub concurrent: usize,
    /// One more `hookplane serve` argument (repeat it).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
}

const VALIDATE_EVENT_TYPE: &str = "bench.validate.strings";

/// One ValidateEventPayload call: its latency and what it answered.
async fn validate_once(
    client: &mut proto::event_type_service_client::EventTypeServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Signer>,
    >,
    payload: &str,
) -> serde_json::Value {
    let t = Instant::now();
    let r = client
        .validate_event_payload(proto::ValidateEventPayloadRequest {
            key: Some(proto::validate_event_payload_request::Key::EventType(
                VALIDATE_EVENT_TYPE.into(),
            )),
            payload_json: payload.to_owned(),
        })
        .await;
    let latency_ms = t.elapsed().as_secs_f64() * 1000.0;
    match r {
        Ok(r) => {
            let r = r.into_inner();
            serde_json::json!({
                "latency_ms": latency_ms, "code": "Ok", "answer_bytes": r.encoded_len(),
                "valid": r.valid, "violations": r.violations.len(),
                "violations_truncated": r.violations_truncated,
            })
        }
        Err(s) => serde_json::json!({
            "latency_ms": latency_ms, "code": format!("{:?}", s.code()),
            "answer_bytes": s.message().len() + s.details().len(),
        }),
    }
}

pub async fn validate_payload(args: ValidateArgs) -> anyhow::Result<()> {
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
    let result = validate_on(&server, &args).await;
    server.stop().await;
    let report = result?;
    // One shape either way: the report is nested.
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn validate_on(server: &Server, args: &ValidateArgs) -> anyhow::Result<serde_json::Value> {
    let chans = channels(server.grpc, 2).await?;
    let signer = Signer::new(BENCH_API_ID, BENCH_SECRET);
    let mut catalog = proto::event_type_service_client::EventTypeServiceClient::with_interceptor(
        chans[0].clone(),
        signer.clone(),
    )
    .max_decoding_message_size(64 * 1024 * 1024)
    .max_encoding_message_size(64 * 1024 * 1024);
    let created = catalog
        .create_event_type(proto::CreateEventTypeRequest {
            event_type: Some(proto::EventType {
                name: VALIDATE_EVENT_TYPE.into(),
                schema_json: r#"{"type":"array","items":{"type":"string"}}"#.into(),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await;
    if let Err(s) = created
        && s.code() != tonic::Code::AlreadyExists
    {
        return Err(s).context("cannot create the event type");
    }
    let items = (args.payload_bytes.saturating_sub(2) / 2).max(1);
    let mut payload = String::with_capacity(items * 2 + 1);
    payload.push('[');
    for i in 0..items {
        payload.push_str(if i == 0 { "1" } else { ",1" });
    }
    payload.push(']');
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = server.rss();

    let mut serial = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let cpu = server.cpu();
        let mut one = validate_once(&mut catalog, &payload).await;
        if let (Some(a), Some(b)) = (cpu, server.cpu()) {
            one["cpu_ms"] = (b.saturating_sub(a).as_secs_f64() * 1000.0).into();
        }
        one["rss_after_bytes"] = server.rss().into();
        serial.push(one);
    }
    let peak_serial = server.peak_rss();

    // Many at once, with an unrelated signed call timed alongside.
    let cpu = server.cpu();
    let started = Instant::now();
    let mut calls = JoinSet::new();
    for _ in 0..args.concurrent {
        let mut c = catalog.clone();
        let p = payload.clone();
        calls.spawn(async move { validate_once(&mut c, &p).await });
    }
    let mut resolve =
        proto::subscription_service_client::SubscriptionServiceClient::with_interceptor(
            chans[1].clone(),
            signer,
        );
    let mut probe = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut answers = Vec::new();
    while !calls.is_empty() {
        let t = Instant::now();
        resolve
            .resolve_subscribers(proto::ResolveSubscribersRequest {
                tenant_id: tenant_id(0),
                event_type: event_type_name(0),
                ..Default::default()
            })
            .await
            .context("the probe Resolve failed")?;
        probe.record(t.elapsed().as_micros().max(1) as u64)?;
        while let Some(done) = calls.try_join_next() {
            answers.push(done?);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed();
    let concurrent_cpu = match (cpu, server.cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1000.0),
        _ => None,
    };
    Ok(serde_json::json!({
        "payload_bytes": payload.len(),
        "items": items,
        "rss_before_bytes": idle_rss,
        "serial": serial,
        "peak_rss_after_serial_bytes": peak_serial,
        "concurrent": {
            "calls": args.concurrent,
            "wall_ms": wall.as_secs_f64() * 1000.0,
            "cpu_ms": concurrent_cpu,
            "peak_rss_bytes": server.peak_rss(),
            "probe_resolves": probe.len(),
            "probe_p50_us": probe.value_at_quantile(0.5),
            "probe_max_us": probe.max(),
            "answers": answers,
        },
    }))
}
