//! Connects, migrates, bootstraps and serves. `start` returns once the
//! listeners are bound, with the addresses they got and a shutdown handle.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{Authenticator, CredentialCache, MethodPathLayer, NonceStore, RateLimit, Role};
use crate::config::{BOOTSTRAP_FILE, DatabaseArgs, MASTER_KEY_FILE, RekeyArgs, ServeArgs};
use crate::crypto::{Keyring, MasterKey, load_or_create_key_file};
use crate::delivery::{Sender, Worker};
use crate::grpc::Api;
use crate::model::{Credential, new_etag, now_micros};
use crate::proto;
use crate::repository::{
    Bootstrap, DatabaseSettings, Quotas, RekeyReport, Repository, SeaRepository,
};
use crate::resolve::{Follower, ResolveIndex, run_sweeper};
use crate::service::{PageTokens, ServiceSettings, Services};
use crate::serving;

const SERVICE_NAMES: [&str; 5] = [
    "hookplane.v1.TenantService",
    "hookplane.v1.CredentialService",
    "hookplane.v1.EventTypeService",
    "hookplane.v1.EndpointService",
    "hookplane.v1.SubscriptionService",
];

/// A started server.
pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting calls, lets running ones finish, closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining calls");
        self.shutdown().await
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The master key: from the flag/env, or (SQLite only) a generated key file.
pub fn master_key(args: &DatabaseArgs) -> anyhow::Result<Keyring> {
    let previous = args
        .previous_master_key
        .as_deref()
        .map(MasterKey::from_base64)
        .transpose()
        .context("HOOKPLANE_PREVIOUS_MASTER_KEY is not base64 of 32 bytes")?;
    Ok(Keyring::new(current_master_key(args)?, previous))
}

fn current_master_key(args: &DatabaseArgs) -> anyhow::Result<MasterKey> {
    if let Some(encoded) = &args.master_key {
        return MasterKey::from_base64(encoded)
            .context("HOOKPLANE_MASTER_KEY is not base64 of 32 bytes");
    }
    if args.is_postgres() {
        bail!("HOOKPLANE_MASTER_KEY is required with PostgreSQL: replicas must share one key");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    let path = args.data_dir.join(MASTER_KEY_FILE);
    load_or_create_key_file(&path)
        .with_context(|| format!("cannot use key file {}", path.display()))
}

/// `hookplane rekey`: every stored secret re-encrypted under the new key.
pub async fn rekey(args: &RekeyArgs) -> anyhow::Result<RekeyReport> {
    let new = MasterKey::from_base64(&args.new_master_key)
        .context("HOOKPLANE_NEW_MASTER_KEY is not base64 of 32 bytes")?;
    let repo = connect(&args.database).await?;
    let report = repo.rekey(&new, args.batch_size).await;
    repo.close().await;
    Ok(report?)
}

/// Connects and migrates.
pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<SeaRepository> {
    install_crypto_provider();
    if !args.is_postgres() {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create data dir {}", args.data_dir.display()))?;
    }
    let key = master_key(args)?;
    let settings = DatabaseSettings {
        url: args.database_url(),
        max_connections: args.db_max_connections.max(1),
        acquire_timeout: Duration::from_secs(5),
    };
    SeaRepository::connect(&settings, key)
        .await
        .context("cannot open the database")
}

fn install_crypto_provider() {
    // One rustls provider for everything in the process (tonic, sqlx).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct BootstrapFile {
    pub api_id: String,
    pub secret: String,
}

/// Makes sure a platform admin exists: the configured one, or, when the
/// store holds no credential at all, a generated one written to a 0600 file.
async fn bootstrap(args: &ServeArgs, repo: &SeaRepository) -> anyhow::Result<()> {
    let now = now_micros();
    let make = |api_id: String, secret: String| Credential {
        api_id,
        tenant_id: None,
        role: Role::PlatformAdmin,
        description: "bootstrap platform admin".into(),
        secret,
        create_time: now,
        update_time: now,
        revoke_time: None,
        etag: new_etag(),
    };
    match (&args.bootstrap_api_id, &args.bootstrap_secret) {
        (Some(api_id), Some(secret)) => {
            if api_id.is_empty()
                || api_id.len() > 128
                || !api_id.bytes().all(|b| b.is_ascii_graphic())
            {
                bail!("HOOKPLANE_BOOTSTRAP_API_ID must be 1..128 visible ASCII characters");
            }
            if secret.len() < 16 {
                bail!("HOOKPLANE_BOOTSTRAP_SECRET must be at least 16 characters");
            }
            match repo
                .bootstrap_credential(&make(api_id.clone(), secret.clone()), false)
                .await?
            {
                Bootstrap::Created => {
                    tracing::info!(api_id = %api_id, "created the bootstrap credential")
                }
                Bootstrap::SecretReplaced => tracing::warn!(
                    api_id = %api_id,
                    "the bootstrap credential had another secret; replaced it with HOOKPLANE_BOOTSTRAP_SECRET"
                ),
                Bootstrap::Unchanged => {}
                Bootstrap::Revoked => bail!(
                    "the bootstrap credential {api_id} is revoked; configure another \
                     HOOKPLANE_BOOTSTRAP_API_ID (a revoked credential is never revived)"
                ),
                Bootstrap::NotPlatformAdmin => bail!(
                    "HOOKPLANE_BOOTSTRAP_API_ID {api_id} names a credential that is not a \
                     platform-wide PLATFORM_ADMIN"
                ),
            }
        }
        _ => {
            if repo.count_credentials().await? > 0 {
                return Ok(());
            }
            let credential = make(
                crate::service::generate_api_id(),
                crate::service::generate_credential_secret(),
            );
            let path = args.database.data_dir.join(BOOTSTRAP_FILE);
            if repo.bootstrap_credential(&credential, true).await? == Bootstrap::Created {
                write_private_file(
                    &path,
                    &serde_json::to_vec_pretty(&BootstrapFile {
                        api_id: credential.api_id.clone(),
                        secret: credential.secret.clone(),
                    })?,
                )?;
                tracing::info!(
                    api_id = %credential.api_id,
                    path = %path.display(),
                    "generated a platform admin credential; its secret is in the file"
                );
            }
        }
    }
    Ok(())
}

fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // The mode given to `open` applies only to a file it creates.
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

fn tls_config(args: &ServeArgs) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &args.tls_client_ca {
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(config))
}

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in SERVICE_NAMES.into_iter().chain([DATABASE_HEALTH]) {
        reporter.set_service_status(name, status).await;
    }
}

/// The health entry of the database itself: NOT_SERVING while it does not
/// answer. The overall status stays SERVING meanwhile: ResolveSubscribers
/// still answers from memory, and a load balancer must not take every
/// replica out during a database outage.
pub const DATABASE_HEALTH: &str = "hookplane.database";

/// Publishes the database's availability (see `SeaRepository::database_up`)
/// as the health of [`DATABASE_HEALTH`], until `stop` turns true.
async fn report_database(
    mut up: watch::Receiver<bool>,
    reporter: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let status = if *up.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(DATABASE_HEALTH, status).await;
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            changed = up.changed() => if changed.is_err() { return },
        }
    }
}

/// GET /healthz: 200 while the database answers, 503 while it does not,
/// from the state the probe keeps; it never waits for the database.
async fn healthz(
    axum::extract::State(up): axum::extract::State<watch::Receiver<bool>>,
) -> (http::StatusCode, &'static str) {
    if *up.borrow() {
        (http::StatusCode::OK, "ok\n")
    } else {
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "database unreachable\n",
        )
    }
}

#[derive(serde::Deserialize)]
struct ConfirmQuery {
    #[serde(default)]
    token: String,
}

/// GET /v1/confirm?token=...: the link in a confirmation message.
async fn confirm(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
    axum::extract::Query(query): axum::extract::Query<ConfirmQuery>,
) -> (http::StatusCode, axum::Json<serde_json::Value>) {
    use crate::error::Error;
    match services.confirm_by_link(&query.token).await {
        Ok(w) => (
            http::StatusCode::OK,
            axum::Json(serde_json::json!({
                "status": "confirmed",
                "tenant_id": w.value.tenant_id,
                "subscription_id": w.value.subscription_id,
            })),
        ),
        Err(e) => {
            let code = match &e {
                Error::InvalidArgument(_) => http::StatusCode::BAD_REQUEST,
                Error::NotFound(_) => http::StatusCode::NOT_FOUND,
                Error::FailedPrecondition(_) => http::StatusCode::GONE,
                Error::Unavailable(_) | Error::StorageFull(_) => {
                    http::StatusCode::SERVICE_UNAVAILABLE
                }
                _ => http::StatusCode::INTERNAL_SERVER_ERROR,
            };
            let message = tonic::Status::from(e).message().to_owned();
            (code, axum::Json(serde_json::json!({ "error": message })))
        }
    }
}

pub async fn start(args: ServeArgs) -> anyhow::Result<RunningServer> {
    let repo = Arc::new(connect(&args.database).await?.with_quotas(Quotas {
        endpoints_per_tenant: args.max_endpoints_per_tenant,
        subscriptions_per_tenant: args.max_subscriptions_per_tenant,
    }));
    if let Err(e) = bootstrap(&args, &repo).await {
        repo.close().await;
        return Err(e.context("cannot set up the bootstrap credential"));
    }

    // Bind first: confirmation links need the HTTP address when it is port 0.
    let grpc_listener = TcpListener::bind(args.grpc_addr)
        .await
        .with_context(|| format!("cannot bind gRPC address {}", args.grpc_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("cannot bind HTTP address {}", args.http_addr))?;
    let http_addr = http_listener.local_addr()?;

    let sender = Arc::new(
        Sender::new(
            args.allow_private_networks,
            Duration::from_secs(args.delivery_timeout_secs),
        )
        .context("cannot build the HTTP client")?,
    );
    let credentials = Arc::new(CredentialCache::new());
    let index = Arc::new(ResolveIndex::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let key = master_key(&args.database)?;
    let dyn_repo = repo.clone() as Arc<dyn Repository>;
    let services = Arc::new(Services::new(
        dyn_repo.clone(),
        credentials.clone(),
        ServiceSettings {
            allow_private_networks: args.allow_private_networks,
            timestamp_window_secs: args.timestamp_window_secs,
            public_url: args.public_url(http_addr),
            confirmation_ttl_secs: args.confirmation_ttl_hours * 3600,
            max_watch_streams: args.max_watch_streams,
            max_watch_streams_per_credential: args.max_watch_streams_per_credential,
        },
        PageTokens::new(&key.current().derive(b"hookplane page tokens")),
        index.clone(),
        sender.clone(),
        stop_rx.clone(),
    ));
    let change_retention = Duration::from_secs(args.change_retention_hours as u64 * 3600);
    let follower = Follower::new(dyn_repo.clone(), index.clone(), credentials.clone());
    let loaded_at = std::time::Instant::now();
    let revision = follower
        .load()
        .await
        .context("cannot load the subscriber index")?;
    tracing::info!(
        revision,
        credentials = credentials.len(),
        elapsed_ms = loaded_at.elapsed().as_millis() as u64,
        "subscriber index and credential cache loaded"
    );

    let max_nonces = usize::try_from(args.max_nonces).unwrap_or(usize::MAX);
    let nonces = Arc::new(NonceStore::new(args.timestamp_window_secs, max_nonces));
    let auth = Authenticator::new(credentials, nonces, args.timestamp_window_secs)
        .with_rate_limit(RateLimit::new(args.rate_limit, args.rate_limit_burst));
    let api = Api::new(services.clone());
    let max = args.max_message_bytes;

    let (reporter, health_service) = tonic_health::server::health_reporter();
    set_all(&reporter, ServingStatus::Serving).await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        // So grpcurl can decode google.rpc.BadRequest field violations.
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    macro_rules! authed {
        ($server:ty) => {
            tonic::service::interceptor::InterceptedService::new(
                <$server>::new(api.clone())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max.max(4 * 1024 * 1024)),
                auth.clone(),
            )
        };
    }

    let mut builder = Server::builder();
    if let Some(tls) = tls_config(&args)? {
        builder = builder
            .tls_config(tls)
            .context("invalid TLS configuration")?;
    }
    let router = builder
        .timeout(Duration::from_secs(30))
        .max_concurrent_streams(Some(args.max_concurrent_streams))
        .layer(MethodPathLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(authed!(
            proto::server::tenant_service_server::TenantServiceServer<Api>
        ))
        .add_service(authed!(
            proto::server::credential_service_server::CredentialServiceServer<Api>
        ))
        .add_service(authed!(
            proto::server::event_type_service_server::EventTypeServiceServer<Api>
        ))
        .add_service(authed!(
            proto::server::endpoint_service_server::EndpointServiceServer<Api>
        ))
        .add_service(authed!(
            proto::server::subscription_service_server::SubscriptionServiceServer<Api>
        ));

    tracing::info!(%grpc_addr, %http_addr, tls = args.tls_cert.is_some(), grpc_threads = args.grpc_threads(), "hookplane listening");

    tokio::spawn(report_database(
        repo.database_up(),
        reporter.clone(),
        stop_rx.clone(),
    ));
    let follower_task = tokio::spawn(follower.run(repo.subscribe_revisions(), stop_rx.clone()));
    let sweeper_task = tokio::spawn(run_sweeper(dyn_repo, change_retention, stop_rx.clone()));
    let worker_task = tokio::spawn(
        Worker::new(
            repo.clone() as Arc<dyn Repository>,
            sender,
            Duration::from_secs(args.delivery_timeout_secs),
        )
        .run(repo.subscribe_outbox(), stop_rx.clone()),
    );

    let http_app = axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .with_state(repo.database_up())
        .merge(
            axum::Router::new()
                .route("/v1/confirm", axum::routing::get(confirm))
                .with_state(services.clone()),
        );
    let http_task = tokio::spawn(serving::http::serve(
        http_listener,
        http_app,
        args.http_limits(),
        stop_rx.clone(),
    ));

    let grace = args.shutdown_grace();
    let mut grpc_stop = stop_rx.clone();
    let serving_stop = stop_rx.clone();
    let threads = args.grpc_threads();
    let mut grace_stop = stop_rx;
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = grpc_stop.wait_for(|stop| *stop).await;
            set_all(&reporter, ServingStatus::NotServing).await;
        };
        let serve = async move {
            if threads == 0 {
                // Without TCP_NODELAY, small responses wait for delayed ACKs (~40 ms).
                let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(serving::KEEPALIVE));
                let result = router.serve_with_incoming_shutdown(incoming, signal).await;
                (result.map_err(anyhow::Error::from), None)
            } else {
                let ((), (result, lanes)) = tokio::join!(
                    signal,
                    serving::serve_on_lanes(router, grpc_listener, threads, serving_stop)
                );
                (result, Some(lanes))
            }
        };
        tokio::pin!(serve);
        let served = tokio::select! {
            served = &mut serve => Some(served),
            _ = grace_stop.wait_for(|stop| *stop) => None,
        };
        // From the stop request on, everything below shares one deadline:
        // shutdown takes at most the grace period, whatever the database
        // and the callers do. Calls still running then are cut.
        let deadline = tokio::time::Instant::now() + grace;
        // `_lanes` keeps the serving threads' runtimes (and the database
        // connections they drive) up until the pools are closed below.
        let (result, _lanes) = match served {
            Some(served) => served,
            None => match tokio::time::timeout_at(deadline, serve).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!(
                        "calls still running after the shutdown grace period; stopping anyway"
                    );
                    (Ok(()), None)
                }
            },
        };
        let mut http_task = http_task;
        match tokio::time::timeout_at(deadline, &mut http_task).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP listener failed"),
            Ok(Ok(())) => {}
            Err(_) => {
                tracing::warn!("HTTP requests still running after the grace period");
                http_task.abort();
            }
        }
        // Let deliveries in flight record their outcome before the pools close.
        let mut background = [worker_task, follower_task, sweeper_task];
        let finished = async {
            for task in &mut background {
                let _ = task.await;
            }
        };
        if tokio::time::timeout_at(deadline, finished).await.is_err() {
            tracing::warn!("background tasks still running after the grace period");
            for task in &background {
                task.abort();
            }
        }
        if tokio::time::timeout_at(deadline, repo.close())
            .await
            .is_err()
        {
            tracing::warn!(
                "database connections still in use after the grace period; they close with the process"
            );
        }
        tracing::info!("hookplane stopped");
        result
    });
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        shutdown: stop_tx,
        task,
    })
}
