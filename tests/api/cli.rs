//! The command line as an operator uses it, through the built binary:
//! `hookplane migrate` on a fresh database, `--public-url` in confirmation
//! links, and `hookplane sign` with the credential in the environment.

use std::process::{Command, Output};

use hookplane::proto::credential::Role;
use hookplane::proto::tenant_service_client::TenantServiceClient;
use hookplane::proto::{GetTenantRequest, ListTenantsRequest};
use sea_orm::{ConnectionTrait as _, Statement};
use tonic::Code;
use tonic::metadata::MetadataMap;

use crate::harness::*;
use crate::lifecycle::{get_subscription, http_get, receiving_fixture, verifying};

const GET_TENANT: &str = "/hookplane.v1.TenantService/GetTenant";

/// Every table the server uses, and sea-orm's record of applied migrations.
const TABLES: [&str; 12] = [
    "tenants",
    "credentials",
    "event_types",
    "endpoints",
    "subscriptions",
    "changes",
    "revision_counter",
    "request_nonces",
    "idempotency_records",
    "confirmation_tokens",
    "outbox",
    "seaql_migrations",
];

/// Runs the built `hookplane` with `args` and `env`, and no other
/// HOOKPLANE_ variable from the test's environment.
async fn hookplane(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookplane"));
        for (key, _) in std::env::vars() {
            if key.starts_with("HOOKPLANE_") {
                command.env_remove(key);
            }
        }
        command
            .args(&args)
            .envs(env)
            .output()
            .expect("run hookplane")
    })
    .await
    .expect("the command's task")
}

#[track_caller]
fn succeeded(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 output")
}

async fn tables(backend: &Backend) -> Vec<String> {
    let db = backend.database().await;
    let query = if backend.is_postgres() {
        "SELECT table_name::text AS name FROM information_schema.tables \
         WHERE table_schema = current_schema()"
    } else {
        "SELECT name FROM sqlite_master WHERE type = 'table'"
    };
    let names = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), query))
        .await
        .expect("list the tables")
        .iter()
        .map(|row| row.try_get::<String>("", "name").expect("a name"))
        .collect();
    let _ = db.close().await;
    names
}

async fn applied_migrations(backend: &Backend) -> i64 {
    let db = backend.database().await;
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM seaql_migrations",
        ))
        .await
        .expect("count the applied migrations")
        .expect("a count");
    let _ = db.close().await;
    row.try_get("", "n").expect("a count")
}

async fn migrate_creates_every_table_on_a_fresh_database(backend: Backend) {
    if backend.is_postgres() {
        assert!(
            tables(&backend).await.is_empty(),
            "the database starts empty"
        );
    } else {
        assert!(
            !backend.data_dir().join("hookplane.db").exists(),
            "the data dir starts empty"
        );
    }
    let mut args = vec!["migrate".to_owned()];
    args.extend(backend.database_args());
    succeeded("hookplane migrate", &hookplane(args.clone(), vec![]).await);

    let found = tables(&backend).await;
    for table in TABLES {
        assert!(
            found.iter().any(|t| t == table),
            "migrate created {table}; found {found:?}"
        );
    }
    let migrations = <migration::Migrator as migration::MigratorTrait>::migrations().len();
    assert_eq!(
        applied_migrations(&backend).await,
        i64::try_from(migrations).expect("a small count"),
        "every migration is recorded as applied"
    );
    // A second run finds nothing to do and still succeeds.
    succeeded("a second migrate", &hookplane(args, vec![]).await);
    assert_eq!(
        applied_migrations(&backend).await,
        i64::try_from(migrations).expect("a small count")
    );

    // A server starts on the migrated database and works.
    let server = backend.start().await;
    create_tenant(&server.admin(), "acme").await;
    let listed = ok(server
        .admin()
        .tenants()
        .list_tenants(ListTenantsRequest::default())
        .await);
    assert_eq!(listed.total_size, 1);
    server.stop().await;
}

async fn confirmation_links_start_with_the_public_url(backend: Backend) {
    // A trailing slash on the flag does not double the one before `v1`.
    let public = "https://hooks.example.net/hookplane";
    let flag = format!("{public}/");
    let (server, admin, receiver, _) =
        receiving_fixture(&backend, verifying(), &["--public-url", &flag]).await;
    let pending = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    let c = receiver.confirmation(&pending.subscription_id, 1).await;
    let base = format!("{public}/v1/confirm?token=");
    assert!(
        c.url.starts_with(&base),
        "confirmation_url {} starts with {base}",
        c.url
    );
    // The public URL is where a proxy forwards to the HTTP listener: the
    // same path and token there confirm.
    let path_and_query = &c.url[public.len()..];
    let local = format!("http://{}{path_and_query}", server.http_addr);
    assert_eq!(http_get(&local).await, 200, "{local}");
    assert_eq!(
        status_of(&get_subscription(&admin, &pending.subscription_id).await),
        hookplane::proto::subscription::Status::Active
    );
    server.stop().await;
}

/// The `-H 'key: value'` pairs of `hookplane sign`'s output.
fn parse_grpcurl_flags(output: &str) -> Vec<(String, String)> {
    output
        .trim()
        .split("-H ")
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let header = part.trim().trim_matches('\'');
            let (key, value) = header
                .split_once(": ")
                .unwrap_or_else(|| panic!("not a header: {part:?}"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// `hookplane sign --method GetTenant` with the credential given only
/// through HOOKPLANE_API_ID / HOOKPLANE_API_SECRET (and an empty data dir,
/// so no bootstrap file can stand in); returns the signing metadata.
async fn signed_by_cli(cred: &Cred) -> MetadataMap {
    let empty = tempfile::tempdir().expect("empty data dir");
    let output = hookplane(
        vec![
            "sign".to_owned(),
            "--method".to_owned(),
            GET_TENANT.to_owned(),
        ],
        vec![
            ("HOOKPLANE_API_ID", cred.api_id.clone()),
            ("HOOKPLANE_API_SECRET", cred.secret.clone()),
            (
                "HOOKPLANE_DATA_DIR",
                empty.path().to_str().expect("utf-8").to_owned(),
            ),
        ],
    )
    .await;
    let printed = succeeded("hookplane sign", &output);
    let headers = parse_grpcurl_flags(&printed);
    let mut keys: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "x-api-id",
            "x-api-nonce",
            "x-api-signature",
            "x-api-timestamp"
        ],
        "{printed}"
    );
    let mut md = MetadataMap::new();
    for (key, value) in &headers {
        let key = tonic::metadata::MetadataKey::from_bytes(key.as_bytes()).expect("a header name");
        md.insert(key, ascii(value));
    }
    assert_eq!(
        md.get("x-api-id").map(|v| v.to_str().ok()),
        Some(Some(cred.api_id.as_str()))
    );
    md
}

fn get_acme(md: &MetadataMap) -> tonic::Request<GetTenantRequest> {
    let mut request = tonic::Request::new(GetTenantRequest {
        tenant_id: "acme".to_owned(),
    });
    *request.metadata_mut() = md.clone();
    request
}

async fn sign_takes_the_credential_from_the_environment(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, "acme").await;
    // Not the bootstrap admin: the id and secret can only come from the
    // environment.
    let reader = create_credential(&admin, "acme", Role::Reader).await;
    let mut tenants = TenantServiceClient::new(server.channel());

    let md = signed_by_cli(&reader).await;
    let got = ok(tenants.get_tenant(get_acme(&md)).await);
    assert_eq!(got.tenant_id, "acme");
    // One call's worth: the same output again is a replay.
    expect_code(
        tenants.get_tenant(get_acme(&md)).await,
        Code::Unauthenticated,
    );

    // A wrong secret in the environment signs a call the server refuses.
    let wrong = Cred {
        secret: "not-the-secret-0123456789abcdef".to_owned(),
        ..reader
    };
    let md = signed_by_cli(&wrong).await;
    expect_code(
        tenants.get_tenant(get_acme(&md)).await,
        Code::Unauthenticated,
    );
    server.stop().await;
}

backend_tests!(
    migrate_creates_every_table_on_a_fresh_database,
    confirmation_links_start_with_the_public_url,
    sign_takes_the_credential_from_the_environment,
);
