//! Bootstrap from the environment is authoritative: a changed secret
//! replaces the stored one, a revoked bootstrap credential stops start-up,
//! and a generated credential's file is private even when it existed.

use clap::Parser as _;
use hookplane::proto::credential::Role;
use hookplane::proto::{GetTenantRequest, ListCredentialsRequest, RevokeCredentialRequest};
use hookplane::startup::RunningServer;
use tonic::Code;
use tonic::transport::Channel;

use crate::harness::*;

const NEW_SECRET: &str = "a-new-bootstrap-secret-0123456789";

/// Starts the server in-process on `backend`'s data with `extra` flags and
/// none of the harness's (no bootstrap credential unless `extra` names one).
async fn start(backend: &Backend, extra: &[&str]) -> anyhow::Result<RunningServer> {
    let data_dir = backend.data_dir().to_str().expect("utf-8 temp dir");
    let mut argv: Vec<String> = [
        "hookplane",
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(backend.database_flags());
    argv.extend(extra.iter().map(|s| s.to_string()));
    let cli = hookplane::config::Cli::try_parse_from(&argv).expect("a valid command line");
    let hookplane::config::Command::Serve(args) = cli.command else {
        unreachable!("the command line says serve")
    };
    hookplane::startup::start(args).await
}

fn clients_of(running: &RunningServer, cred: &Cred) -> Clients {
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
        .expect("endpoint URI")
        .connect_lazy();
    Clients::on(channel, cred)
}

async fn lists_credentials(clients: &Clients) -> Result<(), tonic::Status> {
    clients
        .credentials()
        .list_credentials(ListCredentialsRequest::default())
        .await
        .map(|_| ())
}

/// The bootstrap credential exists with ADMIN_SECRET; started with another
/// secret for it, the server signs with the new one only.
async fn a_changed_bootstrap_secret_replaces_the_stored_one(backend: Backend) {
    let server = backend.start().await;
    create_tenant(&server.admin(), TENANT).await;
    server.stop().await;

    let running = start(
        &backend,
        &[
            "--bootstrap-api-id",
            ADMIN_API_ID,
            "--bootstrap-secret",
            NEW_SECRET,
        ],
    )
    .await
    .expect("starts with the new secret");
    let renewed = Cred {
        api_id: ADMIN_API_ID.to_owned(),
        secret: NEW_SECRET.to_owned(),
    };
    lists_credentials(&clients_of(&running, &renewed))
        .await
        .expect("the new secret signs");
    expect_code(
        lists_credentials(&clients_of(&running, &Cred::admin())).await,
        Code::Unauthenticated,
    );
    ok(clients_of(&running, &renewed)
        .tenants()
        .get_tenant(GetTenantRequest {
            tenant_id: TENANT.to_owned(),
        })
        .await);
    running.shutdown().await.expect("shutdown");

    // The same secret again changes nothing.
    let running = start(
        &backend,
        &[
            "--bootstrap-api-id",
            ADMIN_API_ID,
            "--bootstrap-secret",
            NEW_SECRET,
        ],
    )
    .await
    .expect("starts again");
    lists_credentials(&clients_of(&running, &renewed))
        .await
        .expect("still the new secret");
    running.shutdown().await.expect("shutdown");
}

/// A revoked bootstrap credential is not revived: start-up stops and says
/// why. So does an api_id that belongs to a tenant's credential.
async fn a_revoked_bootstrap_credential_stops_start_up(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let reader = create_credential(&admin, TENANT, Role::Reader).await;
    ok(admin
        .credentials()
        .revoke_credential(RevokeCredentialRequest {
            api_id: ADMIN_API_ID.to_owned(),
        })
        .await);
    server.stop().await;

    for secret in [ADMIN_SECRET, NEW_SECRET] {
        let error = match start(
            &backend,
            &[
                "--bootstrap-api-id",
                ADMIN_API_ID,
                "--bootstrap-secret",
                secret,
            ],
        )
        .await
        {
            Ok(running) => {
                running.shutdown().await.expect("shutdown");
                panic!("started with a revoked bootstrap credential");
            }
            Err(e) => format!("{e:#}"),
        };
        assert!(error.contains("revoked"), "{error}");
        assert!(error.contains(ADMIN_API_ID), "{error}");
        assert!(!error.contains(secret), "{error}");
    }

    let error = match start(
        &backend,
        &[
            "--bootstrap-api-id",
            &reader.api_id,
            "--bootstrap-secret",
            NEW_SECRET,
        ],
    )
    .await
    {
        Ok(running) => {
            running.shutdown().await.expect("shutdown");
            panic!("a tenant reader became the bootstrap credential");
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("PLATFORM_ADMIN"), "{error}");
}

/// On an empty store without a configured credential, the generated one is
/// written to a 0600 file, also over an existing file with a wider mode.
#[cfg(unix)]
async fn the_generated_credential_file_is_private_even_if_it_existed(backend: Backend) {
    use std::os::unix::fs::PermissionsExt as _;

    let path = backend.data_dir().join("bootstrap-credential.json");
    std::fs::write(&path, b"stale").expect("write a stale file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
        .expect("make it world-readable");

    let running = start(&backend, &[]).await.expect("starts");
    let mode = std::fs::metadata(&path)
        .expect("the file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read it")).expect("JSON");
    let generated = Cred {
        api_id: written["api_id"].as_str().expect("api_id").to_owned(),
        secret: written["secret"].as_str().expect("secret").to_owned(),
    };
    lists_credentials(&clients_of(&running, &generated))
        .await
        .expect("the generated credential signs");
    running.shutdown().await.expect("shutdown");
}

backend_tests!(
    a_changed_bootstrap_secret_replaces_the_stored_one,
    a_revoked_bootstrap_credential_stops_start_up,
    the_generated_credential_file_is_private_even_if_it_existed,
);
