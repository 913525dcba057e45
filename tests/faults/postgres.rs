//! PostgreSQL restarted, and stopped for 10 s, under a load of writes and
//! resolves. Each test runs its own PostgreSQL cluster (initdb into a temp
//! dir, a free port, trust auth) and stops and starts that one with
//! pg_ctl: the shared cluster on 5432 is never touched. The cluster is
//! stopped when the test ends, however it ends.
//!
//! What must hold: calls that need the database answer OK or UNAVAILABLE,
//! never anything else and never after their deadline; ResolveSubscribers
//! answers from memory throughout; the `hookplane.database` health entry
//! follows the outage within about a second and `/healthz` answers 503 at
//! once; writes succeed again within 5 s of PostgreSQL's return without a
//! restart of hookplane; and shutdown with the database down and a Watch
//! open finishes within the grace period.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookplane::proto::{
    Endpoint, ResolveSubscribersRequest, UpdateEndpointRequest, WatchSubscriptionsRequest,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::{Code, Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::harness::*;

/// Every call's deadline; no call may take longer.
const CALL_DEADLINE: Duration = Duration::from_secs(3);
/// Writes must succeed again this soon after PostgreSQL is back.
const WRITES_BACK_WITHIN: Duration = Duration::from_secs(5);
/// The database's health entry follows an outage this soon: the probe runs
/// once a second, and the answer takes a moment to reach the test.
const HEALTH_WITHIN: Duration = Duration::from_millis(1500);
/// "At once": a refused call takes no longer than this.
const AT_ONCE: Duration = Duration::from_millis(500);
const WRITERS: usize = 3;
const GRACE_SECS: u64 = 5;
const DATABASE_HEALTH: &str = "hookplane.database";

// ---------------------------------------------------------------------------
// A private PostgreSQL cluster
// ---------------------------------------------------------------------------

/// A PostgreSQL cluster of the test's own, stopped when dropped.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    /// initdb as the `postgres` OS user (initdb refuses root), then start.
    async fn start() -> Cluster {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("temp dir for the cluster");
        let port = free_port();
        run("chown", &["postgres:postgres", &path(dir.path())]).await;
        let cluster = Cluster { bin, dir, port };
        cluster
            .pg(
                "initdb",
                &["-D", &cluster.data(), "-A", "trust", "-U", "postgres", "-N"],
            )
            .await;
        let settings = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 100\n",
            path(cluster.dir.path())
        );
        let conf = cluster.dir.path().join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        cluster.pg_ctl("start").await;
        cluster
    }

    fn data(&self) -> String {
        path(&self.dir.path().join("data"))
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn pg(&self, program: &str, args: &[&str]) {
        let program = path(&self.bin.join(program));
        let mut all = vec!["-u", "postgres", "--", program.as_str()];
        all.extend_from_slice(args);
        run("runuser", &all).await;
    }

    /// `pg_ctl <action>`, waiting until it is done; a stop is "fast": the
    /// server ends every session (SQLSTATE 57P01) and refuses connections.
    async fn pg_ctl(&self, action: &str) {
        let log = path(&self.dir.path().join("server.log"));
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-m",
                "fast",
                "-w",
                "-t",
                "30",
                action,
            ],
        )
        .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The newest installed PostgreSQL's programs.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    found
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

async fn run(program: &str, args: &[&str]) {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Update,
    Resolve,
}

/// One call's outcome.
#[derive(Debug, Clone)]
struct Outcome {
    kind: Kind,
    started: Instant,
    took: Duration,
    code: Code,
}

type Log = Arc<Mutex<Vec<Outcome>>>;

/// A request with the call deadline.
fn with_deadline<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    request
}

/// Runs a call; a call still running a second past its deadline counts as
/// DEADLINE_EXCEEDED (hung).
async fn timed<T>(log: &Log, kind: Kind, call: impl Future<Output = Result<T, Status>>) -> Code {
    let started = Instant::now();
    let code = match tokio::time::timeout(CALL_DEADLINE + Duration::from_secs(1), call).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => Code::DeadlineExceeded,
    };
    log.lock().expect("log").push(Outcome {
        kind,
        started,
        took: started.elapsed(),
        code,
    });
    code
}

/// Writes until `stop`: creates on the fixture's endpoint and updates of an
/// endpoint of its own, one after the other.
async fn writer(clients: Clients, endpoint_id: String, log: Log, mut stop: watch::Receiver<bool>) {
    for n in 0.. {
        if *stop.borrow() {
            return;
        }
        timed(
            &log,
            Kind::Create,
            clients.subscriptions().create_subscription(with_deadline(
                create_subscription_request(subscription(TENANT, ENDPOINT, &["command.*"])),
            )),
        )
        .await;
        timed(
            &log,
            Kind::Update,
            clients
                .endpoints()
                .update_endpoint(with_deadline(UpdateEndpointRequest {
                    endpoint: Some(Endpoint {
                        tenant_id: TENANT.to_owned(),
                        endpoint_id: endpoint_id.clone(),
                        description: format!("update {n}"),
                        ..Default::default()
                    }),
                    update_mask: mask(&["description"]),
                    ..Default::default()
                })),
        )
        .await;
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Resolves until `stop`.
async fn resolver(clients: Clients, log: Log, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        timed(
            &log,
            Kind::Resolve,
            clients
                .subscriptions()
                .resolve_subscribers(with_deadline(ResolveSubscribersRequest {
                    tenant_id: TENANT.to_owned(),
                    event_type: "command.accepted".to_owned(),
                    ..Default::default()
                })),
        )
        .await;
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Load running against a server, and the outcomes it saw.
struct Load {
    log: Log,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Load {
    async fn start(admin: &Clients) -> Load {
        let log = Log::default();
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for i in 0..WRITERS {
            let endpoint_id = format!("load{i}");
            create_endpoint(admin, TENANT, &endpoint_id, URL).await;
            tasks.spawn(writer(
                admin.clone(),
                endpoint_id,
                log.clone(),
                stopped.clone(),
            ));
        }
        tasks.spawn(resolver(admin.clone(), log.clone(), stopped));
        Load { log, stop, tasks }
    }

    /// Outcomes so far.
    fn outcomes(&self) -> Vec<Outcome> {
        self.log.lock().expect("log").clone()
    }

    async fn finish(mut self) -> Vec<Outcome> {
        let _ = self.stop.send(true);
        while let Some(task) = self.tasks.join_next().await {
            task.expect("load task");
        }
        self.outcomes()
    }
}

/// Every call answered OK or UNAVAILABLE within its deadline, and every
/// resolve answered OK (from memory, whatever the database did).
#[track_caller]
fn assert_answered(outcomes: &[Outcome]) {
    let wrong: Vec<_> = outcomes
        .iter()
        .filter(|o| {
            o.took > CALL_DEADLINE
                || match o.kind {
                    Kind::Resolve => o.code != Code::Ok,
                    _ => !matches!(o.code, Code::Ok | Code::Unavailable),
                }
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "calls answered wrongly or late: {wrong:?}"
    );
    assert!(
        outcomes.iter().any(|o| o.kind == Kind::Resolve),
        "resolves ran"
    );
}

/// Writes succeed again within [`WRITES_BACK_WITHIN`] of `back` and keep
/// succeeding.
#[track_caller]
fn assert_writes_back(outcomes: &[Outcome], back: Instant) {
    let writes: Vec<_> = outcomes
        .iter()
        .filter(|o| o.kind != Kind::Resolve && o.started >= back)
        .collect();
    let first_ok = writes
        .iter()
        .find(|o| o.code == Code::Ok)
        .unwrap_or_else(|| panic!("no write succeeded after PostgreSQL came back: {writes:?}"));
    let after = (first_ok.started + first_ok.took).duration_since(back);
    let failed = outcomes.iter().filter(|o| o.code != Code::Ok).count();
    println!(
        "{} calls, {failed} UNAVAILABLE; first write succeeded {after:?} after PostgreSQL came back",
        outcomes.len()
    );
    assert!(
        after < WRITES_BACK_WITHIN,
        "the first write succeeded {after:?} after PostgreSQL came back"
    );
    let failed_later: Vec<_> = writes
        .iter()
        .filter(|o| o.started > first_ok.started && o.code != Code::Ok)
        .collect();
    assert!(
        failed_later.is_empty(),
        "writes failed again after one succeeded: {failed_later:?}"
    );
}

async fn health(server: &TestServer, service: &str) -> ServingStatus {
    let answer = HealthClient::new(server.channel())
        .check(with_deadline(HealthCheckRequest {
            service: service.to_owned(),
        }))
        .await;
    ServingStatus::try_from(ok(answer).status).expect("known status")
}

/// How long after `since` the database's health entry showed `status`.
async fn health_turns(server: &TestServer, status: ServingStatus, since: Instant) -> Duration {
    loop {
        if health(server, DATABASE_HEALTH).await == status {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{DATABASE_HEALTH} never turned {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/healthz`'s status code and how long it took to answer.
async fn healthz(server: &TestServer) -> (u16, Duration) {
    let started = Instant::now();
    let status = reqwest::Client::builder()
        .timeout(CALL_DEADLINE)
        .build()
        .expect("HTTP client")
        .get(format!("http://{}/healthz", server.http_addr))
        .send()
        .await
        .expect("/healthz answers")
        .status()
        .as_u16();
    (status, started.elapsed())
}

/// A server on a fresh database of `cluster`, with the fixture and a
/// subscription that resolve finds, and load running against it.
async fn loaded_server(cluster: &Cluster) -> (TestServer, Clients, Load) {
    install_crypto_provider();
    let backend = Backend::postgres_on(&cluster.url()).await;
    let server = backend
        .start_with(&["--shutdown-grace-secs", &GRACE_SECS.to_string()])
        .await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    create_catalog(&admin).await;
    create_endpoint(&admin, TENANT, ENDPOINT, URL).await;
    create_subscription(&admin, subscription(TENANT, ENDPOINT, &["command.*"])).await;
    let load = Load::start(&admin).await;
    // Some load before the fault.
    tokio::time::sleep(Duration::from_secs(1)).await;
    (server, admin, load)
}

/// Stops the server; it must finish within the grace period.
async fn stop_within_grace(server: TestServer) {
    let started = Instant::now();
    let grace = Duration::from_secs(GRACE_SECS);
    tokio::time::timeout(grace + Duration::from_secs(5), server.stop())
        .await
        .unwrap_or_else(|_| panic!("shutdown still running {:?} after it began", grace * 2));
    println!("shutdown took {:?}", started.elapsed());
    assert!(
        started.elapsed() < grace,
        "shutdown took {:?}, more than the {grace:?} grace period",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// The faults
// ---------------------------------------------------------------------------

/// PostgreSQL restarts (every session ends with 57P01) while writes and
/// resolves run.
async fn restarted_mid_load(cluster: Arc<Cluster>) {
    let (server, _admin, load) = loaded_server(&cluster).await;
    cluster.pg_ctl("restart").await;
    let back = Instant::now();
    let serving = health_turns(&server, ServingStatus::Serving, back).await;
    println!("{DATABASE_HEALTH} SERVING {serving:?} after the restart");
    assert!(serving < HEALTH_WITHIN, "SERVING only {serving:?} after");
    while back.elapsed() < WRITES_BACK_WITHIN {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes = load.finish().await;
    assert_answered(&outcomes);
    assert_writes_back(&outcomes, back);
    stop_within_grace(server).await;
}

/// PostgreSQL is stopped for 10 s while writes and resolves run, then
/// started again; then stopped once more with a Watch open, and the server
/// shut down.
async fn stopped_for_ten_seconds_mid_load(cluster: Arc<Cluster>) {
    let (server, admin, load) = loaded_server(&cluster).await;
    cluster.pg_ctl("stop").await;
    let down = Instant::now();
    let noticed = health_turns(&server, ServingStatus::NotServing, down).await;
    println!("{DATABASE_HEALTH} NOT_SERVING {noticed:?} after PostgreSQL stopped");
    assert!(
        noticed < HEALTH_WITHIN,
        "NOT_SERVING only {noticed:?} after"
    );
    assert_eq!(
        health(&server, "").await,
        ServingStatus::Serving,
        "the overall status stays SERVING while resolve answers from memory"
    );
    let (status, took) = healthz(&server).await;
    println!("/healthz answered {status} in {took:?} during the outage");
    assert_eq!(status, 503, "/healthz during the outage");
    assert!(took < AT_ONCE, "/healthz took {took:?}");
    while down.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Once the outage is known, every write is refused at once.
    let known = down + HEALTH_WITHIN;
    let during: Vec<_> = load
        .outcomes()
        .into_iter()
        .filter(|o| o.kind != Kind::Resolve && o.started >= known)
        .collect();
    assert!(!during.is_empty(), "writes ran during the outage");
    let slow_or_wrong: Vec<_> = during
        .iter()
        .filter(|o| o.code != Code::Unavailable || o.took > AT_ONCE)
        .collect();
    assert!(
        slow_or_wrong.is_empty(),
        "writes during the outage were not refused at once: {slow_or_wrong:?}"
    );

    let slowest = during.iter().map(|o| o.took).max();
    println!(
        "{} writes refused during the known outage, the slowest in {slowest:?}",
        during.len()
    );
    cluster.pg_ctl("start").await;
    let back = Instant::now();
    let serving = health_turns(&server, ServingStatus::Serving, back).await;
    println!("{DATABASE_HEALTH} SERVING {serving:?} after PostgreSQL started");
    assert!(serving < HEALTH_WITHIN, "SERVING only {serving:?} after");
    assert_eq!(healthz(&server).await.0, 200, "/healthz after the outage");
    while back.elapsed() < WRITES_BACK_WITHIN {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes = load.finish().await;
    assert_answered(&outcomes);
    assert_writes_back(&outcomes, back);

    // Shutdown with the database down and a Watch open.
    let mut watch = ok(admin
        .subscriptions()
        .watch_subscriptions(WatchSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            since_revision: 0,
            progress_heartbeats: false,
        })
        .await);
    let first = tokio::time::timeout(CALL_DEADLINE, watch.message()).await;
    assert!(
        matches!(first, Ok(Ok(Some(_)))),
        "the watch runs: {first:?}"
    );
    cluster.pg_ctl("stop").await;
    stop_within_grace(server).await;
}

/// Runs `test` on a cluster of its own, which is stopped afterwards
/// whatever the outcome.
async fn on_private_cluster<F, Fut>(test: F)
where
    F: FnOnce(Arc<Cluster>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cluster = Arc::new(Cluster::start().await);
    // A spawned task turns a panic into a JoinError, so the cluster is
    // stopped (by its Drop) before the panic goes on.
    let outcome = tokio::spawn(test(cluster.clone())).await;
    drop(cluster);
    if let Err(err) = outcome {
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("test task failed: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_load() {
    on_private_cluster(restarted_mid_load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_ten_seconds_mid_load() {
    on_private_cluster(stopped_for_ten_seconds_mid_load).await;
}
