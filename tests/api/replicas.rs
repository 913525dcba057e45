//! Two real `hookplane serve` processes on one PostgreSQL database behave as
//! one service: they start together on an empty database, a change on one
//! reaches the other within a second, a replayed write and a revoked
//! credential are refused by both, a confirmation link works on either, and
//! revisions stay in commit order across them.
//!
//! PostgreSQL only (a fresh database per test from
//! HOOKPLANE_TEST_POSTGRES_URL); on SQLite this module has no tests.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hookplane::proto::credential::Role;
use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::subscription_service_client::SubscriptionServiceClient;
use hookplane::proto::tenant::Settings;
use hookplane::proto::watch_subscriptions_response::Kind;
use hookplane::proto::{
    GetTenantRequest, ListCredentialsRequest, ListSubscriptionsRequest, ResolveSubscribersRequest,
    RevokeCredentialRequest, RotateEndpointSecretRequest, Subscription, UpdateSubscriptionRequest,
};
use sea_orm::ConnectionTrait as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::data_plane::{WRITERS, assert_commit_order, concurrent_writes, watched_until};
use crate::harness::*;
use crate::lifecycle::{
    Receiver, Watch, eventually, get_subscription, http_get, kind_of, resolve, subscription_of,
    target_ids,
};

/// How long a change may take to reach the other replica before a test
/// fails: the contract's 1 s, counted from the write's answer (just after
/// its commit). The observed delay is printed.
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(1);
pub const BOOTSTRAP: [&str; 4] = [
    "--bootstrap-api-id",
    ADMIN_API_ID,
    "--bootstrap-secret",
    ADMIN_SECRET,
];
const CREATE_SUBSCRIPTION: &str = "/hookplane.v1.SubscriptionService/CreateSubscription";

// ---------------------------------------------------------------------------
// A fresh database per test
// ---------------------------------------------------------------------------

pub struct PgDb {
    base_url: String,
    name: String,
    url: String,
    master_key: String,
}

impl PgDb {
    async fn create() -> Option<PgDb> {
        let base_url = std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty())?;
        let name = format!("hp_test_{}", uuid::Uuid::new_v4().simple());
        let mut url = url::Url::parse(&base_url).expect("HOOKPLANE_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        let admin = sea_orm::Database::connect(base_url.as_str())
            .await
            .expect("connect to HOOKPLANE_TEST_POSTGRES_URL");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        admin.close().await.expect("close admin connection");
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("random master key");
        Some(PgDb {
            base_url,
            name,
            url: url.to_string(),
            master_key: base64::engine::general_purpose::STANDARD.encode(key),
        })
    }

    async fn drop_database(&self) {
        let admin = sea_orm::Database::connect(self.base_url.as_str())
            .await
            .expect("connect to drop the test database");
        admin
            .execute_unprepared(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop test database");
        let _ = admin.close().await;
    }
}

/// Runs one test on a fresh PostgreSQL database, or skips it; the database
/// is dropped whether the test passed or not.
async fn run_on_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<PgDb>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    install_crypto_provider();
    let Some(db) = PgDb::create().await else {
        println!("skipped: {POSTGRES_ENV} not set");
        return;
    };
    let db = Arc::new(db);
    let outcome = tokio::spawn(test(db.clone())).await;
    db.drop_database().await;
    if let Err(err) = outcome {
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("test task failed: {err}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

/// A child process, killed if still running when dropped (a failed test);
/// its log is printed when the test fails.
struct Process {
    name: &'static str,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }

    /// SIGTERM, then waits for the exit (at most 30 s, then SIGKILL).
    async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("a running process");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let mut exit = tokio::task::spawn_blocking(move || child.wait());
        match tokio::time::timeout(Duration::from_secs(30), &mut exit).await {
            Ok(joined) => joined.expect("the wait task").expect("wait for the server"),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                let _ = exit.await;
                panic!(
                    "{} did not stop within 30 s of SIGTERM\n{}",
                    self.name,
                    self.log_text()
                );
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- log of replica {} ----\n{}",
                self.name,
                self.log_text()
            );
        }
    }
}

/// A running `hookplane serve` process.
pub struct Replica {
    name: &'static str,
    process: Process,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    data_dir: tempfile::TempDir,
    channel: Channel,
}

impl Replica {
    pub fn clients(&self, cred: &Cred) -> Clients {
        Clients::on(self.channel.clone(), cred)
    }

    pub fn admin(&self) -> Clients {
        self.clients(&Cred::admin())
    }

    /// SIGTERM, and the process must exit cleanly.
    pub async fn stop(mut self) {
        let status = self.process.terminate().await;
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM\n{}",
            self.name,
            self.process.log_text()
        );
    }
}

/// Drops the ANSI escape sequences a terminal logger would add.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The addresses in `hookplane listening grpc_addr=... http_addr=...`.
fn listening_addrs(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    if !line.contains("hookplane listening") {
        return None;
    }
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(key))
            .and_then(|v| v.trim_matches('"').parse().ok())
    };
    Some((field("grpc_addr=")?, field("http_addr=")?))
}

type Listening = Result<(SocketAddr, SocketAddr), String>;

/// A spawned server that has not yet said where it listens.
pub struct Starting {
    name: &'static str,
    process: Process,
    data_dir: tempfile::TempDir,
    listening: tokio::sync::oneshot::Receiver<Listening>,
}

fn spawn_replica(name: &'static str, db: &PgDb, extra: &[&str]) -> Starting {
    let mut args = vec!["--database-url", &db.url, "--master-key", &db.master_key];
    args.extend_from_slice(extra);
    spawn_serve(name, &args, &[])
}

/// Spawns `hookplane serve` on ports of its choosing and a data dir of its
/// own, with `args` and, besides the test's environment (less any
/// HOOKPLANE_ variable), `env`.
pub fn spawn_serve(name: &'static str, args: &[&str], env: &[(&str, &str)]) -> Starting {
    let data_dir = tempfile::tempdir().expect("replica data dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookplane"));
    for (key, _) in std::env::vars() {
        if key.starts_with("HOOKPLANE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
        .arg("serve")
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir.path())
        .args(["--log-format", "text", "--shutdown-grace-secs", "2"])
        .args(args)
        .env(
            "HOOKPLANE_LOG",
            "info,sqlx=warn,sea_orm=warn,h2=warn,hyper=warn,tower=warn",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn hookplane serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, listening) = tokio::sync::oneshot::channel();
    let lines = log.clone();
    // Reads stderr to the end, so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if let Some(addrs) = listening_addrs(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Ok(addrs));
            }
            lines.lock().expect("log lock").push(line);
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err("the server exited before it listened".to_owned()));
        }
    });
    Starting {
        name,
        process: Process {
            name,
            child: Some(child),
            log,
        },
        data_dir,
        listening,
    }
}

impl Starting {
    pub async fn ready(self) -> Replica {
        let Starting {
            name,
            process,
            data_dir,
            listening,
        } = self;
        let (grpc_addr, http_addr) =
            match tokio::time::timeout(Duration::from_secs(60), listening).await {
                Ok(Ok(Ok(addrs))) => addrs,
                other => panic!(
                    "replica {name} did not start: {other:?}\n{}",
                    process.log_text()
                ),
            };
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .expect("endpoint URI")
            .connect_lazy();
        Replica {
            name,
            process,
            grpc_addr,
            http_addr,
            data_dir,
            channel,
        }
    }
}

/// Starts replicas A and B at the same moment and waits for both.
async fn start_pair(db: &PgDb, extra: &[&str]) -> (Replica, Replica) {
    let a = spawn_replica("A", db, extra);
    let b = spawn_replica("B", db, extra);
    let (a, b) = tokio::join!(a.ready(), b.ready());
    assert_ne!(a.grpc_addr, b.grpc_addr);
    (a, b)
}

fn flags(extra: &[&'static str]) -> Vec<&'static str> {
    BOOTSTRAP.iter().chain(extra).copied().collect()
}

/// Tenant [`TENANT`] with `settings`, one event type, and [`ENDPOINT`] at `url`.
async fn setup(admin: &Clients, settings: Settings, url: &str) {
    create_tenant_with(admin, TENANT, settings).await;
    create_event_type(admin, event_type("command.completed")).await;
    create_endpoint(admin, TENANT, ENDPOINT, url).await;
}

/// Creates a subscription to `command.completed` through `on_a`; returns it
/// with the revision of the write.
async fn create_on_a(on_a: &Clients) -> (Subscription, i64) {
    let response = on_a
        .subscriptions()
        .create_subscription(create_subscription_request(subscription(
            TENANT,
            ENDPOINT,
            &["command.completed"],
        )))
        .await
        .expect("create on A");
    let created_revision = revision(response.metadata());
    (response.into_inner(), created_revision)
}

/// Waits until `replica` knows `cred` (credentials reach it through the
/// change log): a call is no longer UNAUTHENTICATED, whatever the role.
async fn await_credential(replica: &Replica, cred: &Cred) {
    let clients = replica.clients(cred);
    eventually(
        &format!("replica {} to accept {}", replica.name, cred.api_id),
        PROPAGATION_DEADLINE,
        || {
            let clients = clients.clone();
            async move {
                let result = clients
                    .subscriptions()
                    .list_subscriptions(ListSubscriptionsRequest {
                        tenant_id: TENANT.to_owned(),
                        page_size: 1,
                        ..Default::default()
                    })
                    .await;
                match result {
                    Err(status) if status.code() == Code::Unauthenticated => None,
                    _ => Some(()),
                }
            }
        },
    )
    .await;
}

/// ResolveSubscribers of [`TENANT`] on a replica that follows another's
/// writes: `None` while it does not know the tenant yet (NOT_FOUND, which
/// is a fair answer until the propagation deadline).
async fn resolve_following(
    clients: &Clients,
    event_type: &str,
) -> Option<hookplane::proto::ResolveSubscribersResponse> {
    let result = clients
        .subscriptions()
        .resolve_subscribers(ResolveSubscribersRequest {
            tenant_id: TENANT.to_owned(),
            event_type: event_type.to_owned(),
            ..Default::default()
        })
        .await;
    match result {
        Ok(answer) => Some(answer.into_inner()),
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => panic!(
            "resolve on the following replica: {:?} {}",
            status.code(),
            status.message()
        ),
    }
}

/// The next change on `watch`, which must come within the propagation
/// deadline of `written_at`.
async fn change_within_deadline(
    watch: &mut Watch,
    written_at: Instant,
    what: &str,
) -> hookplane::proto::WatchSubscriptionsResponse {
    let left = PROPAGATION_DEADLINE.saturating_sub(written_at.elapsed());
    let m = watch.next_change_within(left).await.unwrap_or_else(|| {
        panic!("{what} not on the other replica's watch within {PROPAGATION_DEADLINE:?}")
    });
    println!(
        "{what} reached the other replica's watch after {:?}",
        written_at.elapsed()
    );
    m
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

async fn replicas_start_together_on_an_empty_database(db: Arc<PgDb>) {
    let (a, b) = start_pair(&db, &BOOTSTRAP).await;
    for replica in [&a, &b] {
        let listed = ok(replica
            .admin()
            .credentials()
            .list_credentials(ListCredentialsRequest::default())
            .await);
        assert_eq!(
            listed.total_size, 1,
            "replica {}: one bootstrap credential between them",
            replica.name
        );
        assert_eq!(listed.credentials[0].api_id, ADMIN_API_ID);
        assert_eq!(
            http_get(&format!("http://{}/healthz", replica.http_addr)).await,
            200
        );
    }
    create_tenant(&a.admin(), TENANT).await;
    ok(b.admin()
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: TENANT.to_owned(),
        })
        .await);
    a.stop().await;
    b.stop().await;
}

async fn replicas_without_a_bootstrap_credential_generate_one(db: Arc<PgDb>) {
    let (a, b) = start_pair(&db, &[]).await;
    let files: Vec<PathBuf> = [&a, &b]
        .iter()
        .map(|r| r.data_dir.path().join(hookplane::config::BOOTSTRAP_FILE))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "exactly one replica generates the platform admin: {files:?}"
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("read the bootstrap file"))
            .expect("JSON bootstrap file");
    let cred = Cred {
        api_id: file["api_id"].as_str().expect("api_id").to_owned(),
        secret: file["secret"].as_str().expect("secret").to_owned(),
    };
    for replica in [&a, &b] {
        let clients = replica.clients(&cred);
        let listed = eventually(
            &format!(
                "replica {} to accept the generated credential",
                replica.name
            ),
            PROPAGATION_DEADLINE,
            || {
                let clients = clients.clone();
                async move {
                    clients
                        .credentials()
                        .list_credentials(ListCredentialsRequest::default())
                        .await
                        .ok()
                }
            },
        )
        .await
        .into_inner();
        assert_eq!(listed.total_size, 1, "replica {}", replica.name);
    }
    a.stop().await;
    b.stop().await;
}

async fn a_write_on_one_replica_takes_effect_on_the_other(db: Arc<PgDb>) {
    let (a, b) = start_pair(&db, &BOOTSTRAP).await;
    let (on_a, on_b) = (a.admin(), b.admin());
    setup(&on_a, Settings::default(), URL).await;
    let mut watch_b = Watch::open(&on_b, TENANT, 0).await;
    watch_b.snapshot().await;

    let (created, created_revision) = create_on_a(&on_a).await;
    let written_at = Instant::now();
    let id = created.subscription_id;
    assert_eq!(
        target_ids(&resolve(&on_a, TENANT, "command.completed").await),
        [id.as_str()],
        "at once on the replica that made the change"
    );
    let delay = eventually("B to resolve A's write", PROPAGATION_DEADLINE, || {
        let (on_b, id) = (on_b.clone(), id.clone());
        async move {
            let targets = resolve_following(&on_b, "command.completed").await?.targets;
            (target_ids(&targets) == [id.as_str()]).then(|| written_at.elapsed())
        }
    })
    .await;
    println!("a create on A resolved on B after {delay:?}");
    let m = change_within_deadline(&mut watch_b, written_at, "A's create").await;
    assert_eq!(
        (kind_of(&m), m.revision),
        (Kind::Upsert, created_revision),
        "B's watch streams A's write with A's revision"
    );
    assert_eq!(subscription_of(&m).subscription_id, id);

    let status_on = |clients: &Clients, status: SubStatus| {
        let (clients, id) = (clients.clone(), id.clone());
        async move {
            let response = clients
                .subscriptions()
                .update_subscription(UpdateSubscriptionRequest {
                    subscription: Some(Subscription {
                        tenant_id: TENANT.to_owned(),
                        subscription_id: id,
                        status: status as i32,
                        ..Default::default()
                    }),
                    update_mask: mask(&["status"]),
                    allow_missing: false,
                })
                .await
                .expect("update status");
            revision(response.metadata())
        }
    };
    let disabled_revision = status_on(&on_a, SubStatus::Disabled).await;
    let written_at = Instant::now();
    let delay = eventually("B to stop resolving", PROPAGATION_DEADLINE, || {
        let on_b = on_b.clone();
        async move {
            resolve(&on_b, TENANT, "command.completed")
                .await
                .is_empty()
                .then(|| written_at.elapsed())
        }
    })
    .await;
    println!("a disable on A took effect on B after {delay:?}");
    let m = change_within_deadline(&mut watch_b, written_at, "A's disable").await;
    assert_eq!(m.revision, disabled_revision);
    assert_eq!(status_of(subscription_of(&m)), SubStatus::Disabled);

    // And the other way round.
    status_on(&on_b, SubStatus::Active).await;
    let written_at = Instant::now();
    let delay = eventually("A to resolve B's write", PROPAGATION_DEADLINE, || {
        let on_a = on_a.clone();
        async move {
            (!resolve(&on_a, TENANT, "command.completed").await.is_empty())
                .then(|| written_at.elapsed())
        }
    })
    .await;
    println!("an enable on B resolved on A after {delay:?}");
    drop(watch_b);
    a.stop().await;
    b.stop().await;
}

async fn a_replayed_write_and_a_revoked_credential_are_refused_by_the_other(db: Arc<PgDb>) {
    let (a, b) = start_pair(&db, &BOOTSTRAP).await;
    let on_a = a.admin();
    setup(&on_a, Settings::default(), URL).await;

    let message = create_subscription_request(subscription(TENANT, ENDPOINT, &["*"]));
    let (timestamp, nonce) = (unix_now(), fresh_nonce());
    let signed = || {
        signed_request(
            message.clone(),
            &Cred::admin(),
            CREATE_SUBSCRIPTION,
            timestamp,
            &nonce,
        )
    };
    ok(SubscriptionServiceClient::new(a.channel.clone())
        .create_subscription(signed())
        .await);
    let replayed = SubscriptionServiceClient::new(b.channel.clone())
        .create_subscription(signed())
        .await;
    expect_code(replayed, Code::Unauthenticated);
    expect_code(
        SubscriptionServiceClient::new(a.channel.clone())
            .create_subscription(signed())
            .await,
        Code::Unauthenticated,
    );
    let listed = ok(on_a
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            ..Default::default()
        })
        .await);
    assert_eq!(listed.total_size, 1, "the replays wrote nothing");

    let cred = create_credential(&on_a, TENANT, Role::Dispatcher).await;
    await_credential(&b, &cred).await;
    ok(on_a
        .credentials()
        .revoke_credential(RevokeCredentialRequest {
            api_id: cred.api_id.clone(),
        })
        .await);
    let revoked_at = Instant::now();
    let resolve_as = |replica: &Replica| {
        let clients = replica.clients(&cred);
        async move {
            clients
                .subscriptions()
                .resolve_subscribers(ResolveSubscribersRequest {
                    tenant_id: TENANT.to_owned(),
                    event_type: "command.completed".to_owned(),
                    ..Default::default()
                })
                .await
        }
    };
    expect_code(resolve_as(&a).await, Code::Unauthenticated);
    let delay = eventually(
        "B to refuse the revoked credential",
        PROPAGATION_DEADLINE,
        || {
            let call = resolve_as(&b);
            async move {
                matches!(call.await, Err(status) if status.code() == Code::Unauthenticated)
                    .then(|| revoked_at.elapsed())
            }
        },
    )
    .await;
    println!("a revocation on A took effect on B after {delay:?}");
    a.stop().await;
    b.stop().await;
}

async fn a_confirmation_link_issued_by_one_replica_works_on_the_other(db: Arc<PgDb>) {
    let (a, b) = start_pair(&db, &flags(&["--allow-private-networks"])).await;
    let (on_a, on_b) = (a.admin(), b.admin());
    let receiver = Receiver::start().await;
    let verifying = Settings {
        require_verification: true,
        ..Default::default()
    };
    setup(&on_a, verifying, &receiver.url("/hooks")).await;
    let (created, created_revision) = create_on_a(&on_a).await;
    assert_eq!(status_of(&created), SubStatus::PendingVerification);
    let id = created.subscription_id;

    let c = receiver.confirmation(&id, 1).await;
    assert!(
        c.url
            .starts_with(&format!("http://{}/v1/confirm?token=", a.http_addr)),
        "A issued the link: {}",
        c.url
    );
    // What A wrote (the endpoint, the catalog, the pending subscription)
    // reaches B within the propagation deadline, not at once; B may still
    // be loading it (a replica's first catch-up after start-up can take a
    // tenth of a second). Wait for it, so that "at once" below is about
    // B's own write.
    eventually("B to follow A's writes", PROPAGATION_DEADLINE, || {
        let on_b = on_b.clone();
        async move {
            let seen = resolve_following(&on_b, "command.completed").await?;
            (seen.revision >= created_revision).then_some(())
        }
    })
    .await;
    let on_b_link = format!("http://{}/v1/confirm?token={}", b.http_addr, c.token);
    assert_eq!(http_get(&on_b_link).await, 200, "B confirms A's link");
    assert_eq!(
        status_of(&get_subscription(&on_a, &id).await),
        SubStatus::Active
    );
    assert_eq!(
        target_ids(&resolve(&on_b, TENANT, "command.completed").await),
        [id.as_str()],
        "at once on B, which made the change"
    );
    eventually("A to resolve the confirmed subscription", PROPAGATION_DEADLINE, || {
        let on_a = on_a.clone();
        async move {
            (!resolve(&on_a, TENANT, "command.completed").await.is_empty()).then_some(())
        }
    })
    .await;
    assert_eq!(http_get(&c.url).await, 410, "used on B, gone on A");
    assert_eq!(
        receiver.confirmations_for(&id).len(),
        1,
        "two replicas send the confirmation once"
    );
    a.stop().await;
    b.stop().await;
}

async fn revisions_follow_commit_order_across_replicas(db: Arc<PgDb>) {
    let (a, b) = start_pair(&db, &BOOTSTRAP).await;
    let on_a = a.admin();
    setup(&on_a, Settings::default(), URL).await;
    let mut watch_a = Watch::open(&on_a, TENANT, 0).await;
    let mut watch_b = Watch::open(&b.admin(), TENANT, 0).await;
    watch_a.snapshot().await;
    watch_b.snapshot().await;

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let cred = create_credential(&on_a, TENANT, Role::TenantAdmin).await;
        let replica = if w % 2 == 0 { &a } else { &b };
        await_credential(replica, &cred).await;
        writers.push(replica.clients(&cred));
    }
    let written = concurrent_writes(writers, TENANT, ENDPOINT).await;
    let last = *written.iter().max().expect("writes");
    let watched = watched_until(&mut watch_a, last, "watch on A").await;
    assert_commit_order(&watched, &written, "watch on A");
    let watched = watched_until(&mut watch_b, last, "watch on B").await;
    assert_commit_order(&watched, &written, "watch on B");
    drop((watch_a, watch_b));
    a.stop().await;
    b.stop().await;
}

/// A credential revoked on A ends its watch on B with UNAUTHENTICATED within
/// a second, before B sends anything committed after the revocation.
async fn a_revocation_on_one_replica_ends_the_watch_on_the_other(db: Arc<PgDb>) {
    let (a, b) = start_pair(&db, &BOOTSTRAP).await;
    let on_a = a.admin();
    setup(&on_a, Settings::default(), URL).await;
    let dispatcher = create_credential(&on_a, TENANT, Role::Dispatcher).await;
    await_credential(&b, &dispatcher).await;
    let mut watch = Watch::open(&b.clients(&dispatcher), TENANT, 0).await;
    watch.snapshot().await;

    let response = on_a
        .credentials()
        .revoke_credential(RevokeCredentialRequest {
            api_id: dispatcher.api_id.clone(),
        })
        .await
        .expect("revoke on A");
    let revoked_at = Instant::now();
    let revoked_revision = revision(response.metadata());
    let rotated = ok(on_a
        .endpoints()
        .rotate_endpoint_secret(RotateEndpointSecretRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: ENDPOINT.to_owned(),
            ..Default::default()
        })
        .await);

    let (after, status) = watch.failure_within(Duration::from_secs(1)).await;
    println!(
        "a revocation on A ended the watch on B after {:?}",
        revoked_at.elapsed()
    );
    assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    for m in &after {
        assert!(
            m.revision < revoked_revision,
            "B sent a change after the revocation: {m:?}"
        );
        assert!(
            !format!("{m:?}").contains(&rotated.secret),
            "B sent the new secret: {m:?}"
        );
    }
    drop(watch);
    a.stop().await;
    b.stop().await;
}

async fn a_tenant_quota_is_exact_across_replicas(db: Arc<PgDb>) {
    const LIMIT: usize = 12;
    let (a, b) = start_pair(&db, &flags(&["--max-subscriptions-per-tenant", "12"])).await;
    let (on_a, on_b) = (a.admin(), b.admin());
    setup(&on_a, Settings::default(), URL).await;
    let create = |clients: &Clients, i: usize| {
        let clients = clients.clone();
        async move {
            let mut request =
                create_subscription_request(subscription(TENANT, ENDPOINT, &["command.completed"]));
            if i.is_multiple_of(4) {
                request.request_id = format!("quota-{i}");
            }
            clients.subscriptions().create_subscription(request).await
        }
    };
    // B may not have applied the catalog yet: wait until it takes a create.
    let first = eventually("B to accept a create", PROPAGATION_DEADLINE, || {
        let on_b = on_b.clone();
        async move {
            match create(&on_b, 1).await {
                Err(s) if s.code() == Code::InvalidArgument || s.code() == Code::NotFound => None,
                other => Some(other),
            }
        }
    })
    .await;
    first.expect("the first create");
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..40usize {
        let on = if i.is_multiple_of(2) {
            on_a.clone()
        } else {
            on_b.clone()
        };
        creates.spawn(create(&on, i));
    }
    let outcomes = creates.join_all().await;
    let created = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created + 1, LIMIT, "exactly the limit across both replicas");
    for refused in outcomes.into_iter().filter_map(Result::err) {
        assert_eq!(
            refused.code(),
            Code::ResourceExhausted,
            "{}",
            refused.message()
        );
        assert!(refused.message().contains("--max-subscriptions-per-tenant"));
    }
    let listed = ok(on_b
        .subscriptions()
        .list_subscriptions(ListSubscriptionsRequest {
            tenant_id: TENANT.to_owned(),
            page_size: 100,
            ..Default::default()
        })
        .await);
    assert_eq!(listed.total_size as usize, LIMIT);
    // A delete on one replica frees a place for a create on the other.
    ok(on_b
        .subscriptions()
        .delete_subscription(hookplane::proto::DeleteSubscriptionRequest {
            tenant_id: TENANT.to_owned(),
            subscription_id: listed.subscriptions[0].subscription_id.clone(),
            etag: String::new(),
        })
        .await);
    create(&on_a, 1001)
        .await
        .expect("a create after the delete");
    let refused = create(&on_a, 1002).await.expect_err("the limit again");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    a.stop().await;
    b.stop().await;
}

macro_rules! postgres_tests {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::run_on_postgres(super::$name).await;
                }
            )*
        }
    };
}

postgres_tests!(
    replicas_start_together_on_an_empty_database,
    replicas_without_a_bootstrap_credential_generate_one,
    a_write_on_one_replica_takes_effect_on_the_other,
    a_replayed_write_and_a_revoked_credential_are_refused_by_the_other,
    a_confirmation_link_issued_by_one_replica_works_on_the_other,
    revisions_follow_commit_order_across_replicas,
    a_revocation_on_one_replica_ends_the_watch_on_the_other,
    a_tenant_quota_is_exact_across_replicas,
);
