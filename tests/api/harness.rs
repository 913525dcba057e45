//! Starts the real server on port 0 with a fresh database and talks to it
//! with real, signed tonic clients.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use clap::Parser as _;
use hookplane::proto::credential::Role;
use hookplane::proto::credential_service_client::CredentialServiceClient;
use hookplane::proto::endpoint_service_client::EndpointServiceClient;
use hookplane::proto::event_type_service_client::EventTypeServiceClient;
use hookplane::proto::subscription::Status as SubStatus;
use hookplane::proto::subscription_service_client::SubscriptionServiceClient;
use hookplane::proto::tenant::Settings;
use hookplane::proto::tenant_service_client::TenantServiceClient;
use hookplane::proto::{
    CreateCredentialRequest, CreateEndpointRequest, CreateEventTypeRequest,
    CreateSubscriptionRequest, CreateTenantRequest, Credential, Endpoint, EventType, Subscription,
    Tenant,
};
use sea_orm::ConnectionTrait as _;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt as _;

pub const ADMIN_API_ID: &str = "admin";
pub const ADMIN_SECRET: &str = "admin-secret-0123456789abcdef";
pub const POSTGRES_ENV: &str = "HOOKPLANE_TEST_POSTGRES_URL";

/// The tenant, endpoint and URL that [`fixture`] creates.
pub const TENANT: &str = "acme";
pub const ENDPOINT: &str = "ep1";
pub const URL: &str = "https://hooks.example.com/acme";

/// Catalog entries that [`fixture`] creates: (name, legacy_code, deprecated).
pub const CATALOG: &[(&str, i32, bool)] = &[
    ("command.accepted", 1001, false),
    ("command.completed", 1002, false),
    ("agent.presence.changed", 2001, false),
    ("agent.state.changed.v1", 2002, false),
    ("alarm-raised", 0, false),
    ("old.thing", 0, true),
];

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// Where a test's data lives: a temp data dir, plus a fresh PostgreSQL
/// database when running on PostgreSQL. Clones share the same store, so a
/// restarted server sees the same data.
#[derive(Clone)]
pub struct Backend {
    store: Arc<Store>,
}

struct Store {
    data_dir: tempfile::TempDir,
    postgres: Option<PgDatabase>,
}

struct PgDatabase {
    base_url: String,
    name: String,
    url: String,
    master_key: String,
}

impl Backend {
    pub fn sqlite() -> Backend {
        Backend {
            store: Arc::new(Store {
                data_dir: tempfile::tempdir().expect("temp data dir"),
                postgres: None,
            }),
        }
    }

    /// A fresh database on the server named by [`POSTGRES_ENV`], or `None`
    /// when the variable is not set.
    pub async fn postgres() -> Option<Backend> {
        let base_url = std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty())?;
        Some(Backend::postgres_on(&base_url).await)
    }

    /// A fresh database on the PostgreSQL server at `base_url` (a URL of
    /// any database there, which the harness connects to as an admin).
    pub async fn postgres_on(base_url: &str) -> Backend {
        let base_url = base_url.to_owned();
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
        Backend {
            store: Arc::new(Store {
                data_dir: tempfile::tempdir().expect("temp data dir"),
                postgres: Some(PgDatabase {
                    base_url,
                    name,
                    url: url.to_string(),
                    master_key: base64::engine::general_purpose::STANDARD.encode(key),
                }),
            }),
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.store.postgres.is_some()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.store.data_dir.path()
    }

    /// A connection of the test's own to the server's database, to change
    /// it behind the server's back (as another replica would).
    pub async fn database(&self) -> sea_orm::DatabaseConnection {
        let url = match &self.store.postgres {
            Some(pg) => pg.url.clone(),
            None => format!(
                "sqlite://{}?mode=rw",
                self.data_dir().join("hookplane.db").display()
            ),
        };
        sea_orm::Database::connect(url.as_str())
            .await
            .expect("connect to the server's database")
    }

    /// The flags that point a `hookplane serve` process at this backend's
    /// database (none on SQLite: the process keeps its own in its data dir).
    pub fn database_flags(&self) -> Vec<String> {
        match &self.store.postgres {
            Some(pg) => vec![
                "--database-url".to_owned(),
                pg.url.clone(),
                "--master-key".to_owned(),
                pg.master_key.clone(),
            ],
            None => Vec::new(),
        }
    }

    /// Drops the test's PostgreSQL database (ending its sessions); the
    /// harness does so after every test.
    pub async fn drop_database(&self) {
        if let Some(pg) = &self.store.postgres {
            let admin = sea_orm::Database::connect(pg.base_url.as_str())
                .await
                .expect("connect to drop the test database");
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", pg.name))
                .await
                .expect("drop test database");
            let _ = admin.close().await;
        }
    }

    /// The flags that put any command on this backend's data: the data
    /// dir, and on PostgreSQL the database URL and master key.
    pub fn database_args(&self) -> Vec<String> {
        let data_dir = self.data_dir().to_str().expect("utf-8 temp dir");
        let mut args = vec!["--data-dir".to_owned(), data_dir.to_owned()];
        args.extend(self.database_flags());
        args
    }

    /// `serve` and the flags that put a server on this backend's data, with
    /// ports picked by the system and the bootstrap admin.
    pub fn serve_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--bootstrap-api-id",
            ADMIN_API_ID,
            "--bootstrap-secret",
            ADMIN_SECRET,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.database_args());
        args
    }

    /// Starts a server with the default flags.
    pub async fn start(&self) -> TestServer {
        self.start_with(&[]).await
    }

    /// Starts a server with extra command-line flags.
    pub async fn start_with(&self, extra: &[&str]) -> TestServer {
        TestServer::start(self.clone(), extra.iter().map(|s| s.to_string()).collect()).await
    }
}

/// Runs one test on SQLite.
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    install_crypto_provider();
    run(Backend::sqlite(), test).await;
}

/// Runs one test on a fresh PostgreSQL database, or skips it.
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    install_crypto_provider();
    let Some(backend) = Backend::postgres().await else {
        println!("skipped: {POSTGRES_ENV} not set");
        return;
    };
    run(backend, test).await;
}

async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // A spawned task turns a panic into a JoinError, so the database is
    // dropped whether the test passed or not.
    let outcome = tokio::spawn(test(backend.clone())).await;
    backend.drop_database().await;
    if let Err(err) = outcome {
        match err.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(err) => panic!("test task failed: {err}"),
        }
    }
}

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Declares a `sqlite::<name>` and a `postgres::<name>` test for each async
/// test function `async fn <name>(backend: Backend)` of the calling module.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::harness::run_sqlite(super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::harness::run_postgres(super::$name).await;
                }
            )*
        }
    };
}
pub(crate) use backend_tests;

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

pub struct TestServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub backend: Backend,
    extra: Vec<String>,
    running: Option<hookplane::startup::RunningServer>,
    channel: Channel,
}

impl TestServer {
    async fn start(backend: Backend, extra: Vec<String>) -> TestServer {
        let mut argv: Vec<String> = vec!["hookplane".to_owned()];
        argv.extend(backend.serve_args());
        argv.extend(extra.iter().cloned());
        let cli = hookplane::config::Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("bad test command line {argv:?}: {e}"));
        let hookplane::config::Command::Serve(args) = cli.command else {
            unreachable!("the command line says serve")
        };
        let running = hookplane::startup::start(args)
            .await
            .unwrap_or_else(|e| panic!("server failed to start: {e:?}"));
        let grpc_addr = running.grpc_addr;
        let http_addr = running.http_addr;
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .expect("endpoint URI")
            .connect_lazy();
        TestServer {
            grpc_addr,
            http_addr,
            backend,
            extra,
            running: Some(running),
            channel,
        }
    }

    /// A plaintext channel to the server, without credentials.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Clients signed by the bootstrap platform admin.
    pub fn admin(&self) -> Clients {
        self.clients(&Cred::admin())
    }

    /// Clients signed by `cred`.
    pub fn clients(&self, cred: &Cred) -> Clients {
        Clients::on(self.channel(), cred)
    }

    /// Stops the server gracefully; it has released the database on return.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("graceful shutdown");
        }
    }

    /// Stops the server and starts a new one on the same data and flags.
    pub async fn restart(mut self) -> TestServer {
        let backend = self.backend.clone();
        let extra = std::mem::take(&mut self.extra);
        self.stop().await;
        TestServer::start(backend, extra).await
    }
}

// ---------------------------------------------------------------------------
// Credentials and signing
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Cred {
    pub api_id: String,
    pub secret: String,
}

impl Cred {
    pub fn admin() -> Cred {
        Cred {
            api_id: ADMIN_API_ID.to_owned(),
            secret: ADMIN_SECRET.to_owned(),
        }
    }
}

/// A client interceptor that signs every call with fresh timestamp and nonce.
#[derive(Clone)]
pub struct Signer {
    cred: Arc<Cred>,
}

impl Signer {
    pub fn new(cred: &Cred) -> Signer {
        Signer {
            cred: Arc::new(cred.clone()),
        }
    }
}

impl Interceptor for Signer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let method = req
            .extensions()
            .get::<tonic::GrpcMethod>()
            .map(|m| format!("/{}/{}", m.service(), m.method()))
            .ok_or_else(|| Status::internal("test client: no GrpcMethod in extensions"))?;
        sign_metadata(
            req.metadata_mut(),
            &self.cred,
            &method,
            unix_now(),
            &fresh_nonce(),
        );
        Ok(req)
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn fresh_nonce() -> String {
    format!("n-{}", uuid::Uuid::new_v4().simple())
}

/// Puts the four signing headers into `md`.
pub fn sign_metadata(md: &mut MetadataMap, cred: &Cred, method: &str, timestamp: i64, nonce: &str) {
    let ts = timestamp.to_string();
    let signature =
        hookplane::auth::signature::sign(cred.secret.as_bytes(), &cred.api_id, &ts, nonce, method);
    md.insert("x-api-id", ascii(&cred.api_id));
    md.insert("x-api-timestamp", ascii(&ts));
    md.insert("x-api-nonce", ascii(nonce));
    md.insert("x-api-signature", ascii(&signature));
}

/// A request signed by hand, for tests that control timestamp and nonce.
pub fn signed_request<T>(
    message: T,
    cred: &Cred,
    method: &str,
    timestamp: i64,
    nonce: &str,
) -> Request<T> {
    let mut req = Request::new(message);
    sign_metadata(req.metadata_mut(), cred, method, timestamp, nonce);
    req
}

pub fn ascii(s: &str) -> MetadataValue<tonic::metadata::Ascii> {
    MetadataValue::try_from(s).unwrap_or_else(|_| panic!("not a metadata value: {s:?}"))
}

pub type Signed = InterceptedService<Channel, Signer>;

/// Signed clients of every hookplane service, for one credential.
#[derive(Clone)]
pub struct Clients {
    channel: Channel,
    signer: Signer,
}

impl Clients {
    /// Clients on a channel of the caller's making (e.g. TLS), signed by `cred`.
    pub fn on(channel: Channel, cred: &Cred) -> Clients {
        Clients {
            channel,
            signer: Signer::new(cred),
        }
    }

    pub fn tenants(&self) -> TenantServiceClient<Signed> {
        TenantServiceClient::with_interceptor(self.channel.clone(), self.signer.clone())
    }
    pub fn credentials(&self) -> CredentialServiceClient<Signed> {
        CredentialServiceClient::with_interceptor(self.channel.clone(), self.signer.clone())
    }
    pub fn event_types(&self) -> EventTypeServiceClient<Signed> {
        EventTypeServiceClient::with_interceptor(self.channel.clone(), self.signer.clone())
    }
    pub fn endpoints(&self) -> EndpointServiceClient<Signed> {
        EndpointServiceClient::with_interceptor(self.channel.clone(), self.signer.clone())
    }
    pub fn subscriptions(&self) -> SubscriptionServiceClient<Signed> {
        SubscriptionServiceClient::with_interceptor(self.channel.clone(), self.signer.clone())
    }
}

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

/// The error of `result`, which must have `code`.
#[track_caller]
pub fn expect_code<T: Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got OK: {value:?}"),
        Err(status) => {
            assert_eq!(
                status.code(),
                code,
                "expected {code:?}, got {:?}: {}",
                status.code(),
                status.message()
            );
            status
        }
    }
}

/// The field names of the `google.rpc.BadRequest` violations in `status`.
pub fn violation_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// `result` must be INVALID_ARGUMENT with a field violation naming `field`.
#[track_caller]
pub fn expect_invalid<T: Debug>(result: Result<T, Status>, field: &str) -> Status {
    let status = expect_code(result, Code::InvalidArgument);
    let fields = violation_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a violation naming {field:?}, got {fields:?} ({})",
        status.message()
    );
    status
}

/// The `OK` value of `result`, with the status in the panic message.
#[track_caller]
pub fn ok<T>(result: Result<tonic::Response<T>, Status>) -> T {
    match result {
        Ok(response) => response.into_inner(),
        Err(status) => panic!(
            "expected OK, got {:?}: {} {:?}",
            status.code(),
            status.message(),
            violation_fields(&status)
        ),
    }
}

/// Seconds since the epoch of a timestamp that must be set.
#[track_caller]
pub fn secs(ts: &Option<prost_types::Timestamp>) -> i64 {
    ts.as_ref().expect("timestamp is set").seconds
}

/// `actual` is within a minute of `expected` (expiry times are computed by
/// the server from its own clock, a little after the test read its clock).
#[track_caller]
pub fn assert_about(actual: i64, expected: i64) {
    assert!(
        (actual - expected).abs() <= 60,
        "expected about {expected}, got {actual} (diff {})",
        actual - expected
    );
}

/// Changes the first character of an opaque token so it no longer verifies.
pub fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    assert!(!chars.is_empty(), "nothing to tamper with");
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

pub fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

// ---------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------

pub async fn create_tenant(admin: &Clients, tenant_id: &str) -> Tenant {
    create_tenant_with(admin, tenant_id, Settings::default()).await
}

pub async fn create_tenant_with(admin: &Clients, tenant_id: &str, settings: Settings) -> Tenant {
    ok(admin
        .tenants()
        .create_tenant(CreateTenantRequest {
            tenant: Some(Tenant {
                tenant_id: tenant_id.to_owned(),
                display_name: format!("Tenant {tenant_id}"),
                settings: Some(settings),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await)
}

pub async fn create_event_type(admin: &Clients, event_type: EventType) -> EventType {
    ok(admin
        .event_types()
        .create_event_type(CreateEventTypeRequest {
            event_type: Some(event_type),
            request_id: String::new(),
        })
        .await)
}

pub fn event_type(name: &str) -> EventType {
    EventType {
        name: name.to_owned(),
        description: format!("{name} events"),
        ..Default::default()
    }
}

pub fn endpoint(tenant_id: &str, endpoint_id: &str, url: &str) -> Endpoint {
    Endpoint {
        tenant_id: tenant_id.to_owned(),
        endpoint_id: endpoint_id.to_owned(),
        url: url.to_owned(),
        ..Default::default()
    }
}

pub async fn create_endpoint(
    clients: &Clients,
    tenant_id: &str,
    endpoint_id: &str,
    url: &str,
) -> Endpoint {
    ok(clients
        .endpoints()
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(endpoint(tenant_id, endpoint_id, url)),
            request_id: String::new(),
        })
        .await)
}

/// An unnamed subscription with a server-generated id.
pub fn subscription(tenant_id: &str, endpoint_id: &str, patterns: &[&str]) -> Subscription {
    Subscription {
        tenant_id: tenant_id.to_owned(),
        endpoint_id: endpoint_id.to_owned(),
        event_types: patterns.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

pub fn create_subscription_request(subscription: Subscription) -> CreateSubscriptionRequest {
    CreateSubscriptionRequest {
        subscription: Some(subscription),
        request_id: String::new(),
        ttl_seconds: 0,
    }
}

pub async fn create_subscription(clients: &Clients, subscription: Subscription) -> Subscription {
    ok(clients
        .subscriptions()
        .create_subscription(create_subscription_request(subscription))
        .await)
}

/// Creates a credential and returns it with its secret.
pub async fn create_credential(clients: &Clients, tenant_id: &str, role: Role) -> Cred {
    let credential = ok(clients
        .credentials()
        .create_credential(CreateCredentialRequest {
            credential: Some(Credential {
                tenant_id: tenant_id.to_owned(),
                role: role as i32,
                description: format!("{role:?} for {tenant_id:?}"),
                ..Default::default()
            }),
            request_id: String::new(),
        })
        .await);
    assert!(!credential.api_id.is_empty(), "api_id generated");
    assert!(!credential.secret.is_empty(), "secret returned by create");
    Cred {
        api_id: credential.api_id,
        secret: credential.secret,
    }
}

/// A running server with tenant [`TENANT`], the [`CATALOG`] and endpoint
/// [`ENDPOINT`] at [`URL`]; returns it with the admin's clients.
pub async fn fixture(backend: &Backend) -> (TestServer, Clients) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    create_catalog(&admin).await;
    create_endpoint(&admin, TENANT, ENDPOINT, URL).await;
    (server, admin)
}

pub async fn create_catalog(admin: &Clients) {
    for &(name, legacy_code, deprecated) in CATALOG {
        let created = create_event_type(
            admin,
            EventType {
                legacy_code,
                deprecated,
                ..event_type(name)
            },
        )
        .await;
        assert_eq!(created.deprecated, deprecated, "{name} deprecated flag");
    }
}

pub fn status_of(subscription: &Subscription) -> SubStatus {
    SubStatus::try_from(subscription.status).expect("known status")
}

/// The `x-revision` of a write's response metadata.
#[track_caller]
pub fn revision(md: &MetadataMap) -> i64 {
    md.get("x-revision")
        .expect("x-revision in response metadata")
        .to_str()
        .expect("ascii x-revision")
        .parse()
        .expect("numeric x-revision")
}
