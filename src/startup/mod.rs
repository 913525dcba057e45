//! Connects, migrates, bootstraps and serves. `start` wires the parts
//! together and returns once the listeners are bound, with the addresses
//! they got and a shutdown handle; each other step has a file here.

mod bootstrap;
mod database;
mod health;
mod http_routes;
mod shutdown;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::auth::{Authenticator, CredentialCache, MethodPathLayer, NonceStore, RateLimit};
use crate::config::ServeArgs;
use crate::delivery::{Sender, Worker};
use crate::grpc::Api;
use crate::proto;
use crate::repository::{Quotas, Repository};
use crate::resolve::{ChangeFeed, Follower, InMemory, ResolveIndex, run_sweeper};
use crate::service::{PageTokens, ServiceSettings, Services};
use crate::serving;

pub use bootstrap::BootstrapFile;
pub use database::{connect, master_key, rekey};
pub use health::DATABASE_HEALTH;
pub use shutdown::RunningServer;

use bootstrap::bootstrap;
use health::{report_database, set_all};
use shutdown::drain;

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
    let feed = Arc::new(ChangeFeed::new(
        usize::try_from(args.watch_feed_events).unwrap_or(usize::MAX),
    ));
    let memory = InMemory {
        index: index.clone(),
        feed: feed.clone(),
    };
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
        memory.clone(),
        sender.clone(),
        stop_rx.clone(),
    ));
    let change_retention = Duration::from_secs(args.change_retention_hours as u64 * 3600);
    let follower = Follower::new(dyn_repo.clone(), memory, credentials.clone());
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
    // Holds the feed weakly: it beats until the server drops the feed.
    tokio::spawn(ChangeFeed::run_beat(Arc::downgrade(&feed)));
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

    let http_app = http_routes::router(repo.database_up(), services.clone());
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
        drain(
            deadline,
            http_task,
            [worker_task, follower_task, sweeper_task],
            &repo,
        )
        .await;
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
