//! Master-key rotation: servers given the previous key read secrets under
//! either key; `hookplane rekey` moves every stored secret to the new key
//! in batches while they run; a secret under neither key stops it with an
//! error naming the row.

use base64::Engine as _;
use clap::Parser as _;
use hookplane::crypto::MasterKey;
use hookplane::proto::credential::Role;
use hookplane::proto::{
    CreateEndpointRequest, ListCredentialsRequest, RotateEndpointSecretRequest, Subscription,
};
use hookplane::repository::RekeyReport;
use hookplane::startup::RunningServer;
use sea_orm::ConnectionTrait as _;
use tonic::transport::Channel;

use crate::harness::*;
use crate::lifecycle::{http_get, receiving_fixture, resolve, verifying};

fn new_key() -> String {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("random key");
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The key the harness's server encrypts under.
fn harness_key(backend: &Backend) -> String {
    let flags = backend.database_flags();
    match flags.iter().position(|f| f == "--master-key") {
        Some(i) => flags[i + 1].clone(),
        None => std::fs::read_to_string(backend.data_dir().join("master.key"))
            .expect("the generated key file")
            .trim()
            .to_owned(),
    }
}

/// `backend`'s database flags with `--master-key key`, and `extra`.
fn argv(command: &str, backend: &Backend, key: &str, extra: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "hookplane".to_owned(),
        command.to_owned(),
        "--data-dir".to_owned(),
        backend
            .data_dir()
            .to_str()
            .expect("utf-8 temp dir")
            .to_owned(),
    ];
    let flags = backend.database_flags();
    if let Some(i) = flags.iter().position(|f| f == "--database-url") {
        argv.extend(flags[i..i + 2].iter().cloned());
    }
    argv.extend(["--master-key".to_owned(), key.to_owned()]);
    argv.extend(extra.iter().map(|s| s.to_string()));
    argv
}

async fn serve(backend: &Backend, key: &str, extra: &[&str]) -> RunningServer {
    let mut flags = vec![
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--allow-private-networks",
        "--bootstrap-api-id",
        ADMIN_API_ID,
        "--bootstrap-secret",
        ADMIN_SECRET,
    ];
    flags.extend_from_slice(extra);
    let cli = hookplane::config::Cli::try_parse_from(argv("serve", backend, key, &flags))
        .expect("a serve command line");
    let hookplane::config::Command::Serve(args) = cli.command else {
        unreachable!("serve")
    };
    hookplane::startup::start(args)
        .await
        .expect("the server starts")
}

async fn rekey(backend: &Backend, old: &str, new: &str) -> anyhow::Result<RekeyReport> {
    let cli = hookplane::config::Cli::try_parse_from(argv(
        "rekey",
        backend,
        old,
        &["--new-master-key", new, "--batch-size", "2"],
    ))
    .expect("a rekey command line");
    let hookplane::config::Command::Rekey(args) = cli.command else {
        unreachable!("rekey")
    };
    hookplane::startup::rekey(&args).await
}

fn admin_of(running: &RunningServer) -> Clients {
    let channel = Channel::from_shared(format!("http://{}", running.grpc_addr))
        .expect("endpoint URI")
        .connect_lazy();
    Clients::on(channel, &Cred::admin())
}

/// Every encrypted column of the database (and the change log's copies of
/// endpoint secrets) with the associated data it was sealed with: (row,
/// blob, aad).
async fn stored_secrets(backend: &Backend) -> Vec<(String, Vec<u8>, String)> {
    let db = backend.database().await;
    let rows = |sql: &str| {
        let db = &db;
        let sql = sql.to_owned();
        async move {
            db.query_all_raw(sea_orm::Statement::from_string(
                db.get_database_backend(),
                sql,
            ))
            .await
            .expect("read the secrets")
        }
    };
    let text = |row: &sea_orm::QueryResult, col: &str| row.try_get::<String>("", col).expect(col);
    let blob = |row: &sea_orm::QueryResult, col: &str| row.try_get::<Vec<u8>>("", col).expect(col);
    let mut all = Vec::new();
    for row in rows("SELECT api_id, secret_enc FROM credentials").await {
        let api_id = text(&row, "api_id");
        all.push((
            format!("credential {api_id}"),
            blob(&row, "secret_enc"),
            format!("credential:{api_id}"),
        ));
    }
    for row in
        rows("SELECT tenant_id, endpoint_id, secret_enc, previous_secret_enc FROM endpoints").await
    {
        let aad = format!(
            "endpoint:{}/{}",
            text(&row, "tenant_id"),
            text(&row, "endpoint_id")
        );
        all.push((aad.clone(), blob(&row, "secret_enc"), aad.clone()));
        if let Some(previous) = row
            .try_get::<Option<Vec<u8>>>("", "previous_secret_enc")
            .expect("previous_secret_enc")
        {
            all.push((aad.clone(), previous, format!("{aad}:previous")));
        }
    }
    // The change log's copies of endpoint secrets, in each change's state.
    for row in rows(
        "SELECT revision, tenant_id, resource_key, state FROM changes \
         WHERE resource_type = 'endpoint' AND state IS NOT NULL",
    )
    .await
    {
        let at = row.try_get::<i64>("", "revision").expect("revision");
        let aad = format!(
            "endpoint:{}/{}",
            text(&row, "tenant_id"),
            text(&row, "resource_key")
        );
        let state: serde_json::Value =
            serde_json::from_str(&text(&row, "state")).expect("a JSON state");
        for (field, aad) in [
            ("secret_enc", aad.clone()),
            ("previous_secret_enc", format!("{aad}:previous")),
        ] {
            if let Some(sealed) = state[field].as_str() {
                let sealed = base64::engine::general_purpose::STANDARD
                    .decode(sealed)
                    .expect("a base64 blob");
                all.push((format!("{field} of the change at {at}"), sealed, aad));
            }
        }
    }
    for row in rows("SELECT id, payload_enc FROM outbox").await {
        let id = text(&row, "id");
        all.push((
            format!("outbox {id}"),
            blob(&row, "payload_enc"),
            format!("outbox:{id}"),
        ));
    }
    for row in rows("SELECT api_id, request_id, response_enc FROM idempotency_records").await {
        let aad = format!(
            "idempotency:{}/{}",
            text(&row, "api_id"),
            text(&row, "request_id")
        );
        all.push((aad.clone(), blob(&row, "response_enc"), aad));
    }
    let _ = db.close().await;
    all
}

/// Secrets of every kind under the old key; servers restarted with the new
/// key and the previous one keep working and write under the new key; a
/// rekey run beside them moves the rest; a server with the new key alone
/// then reads everything, and every blob in the database opens with it.
async fn rekey_moves_every_secret_to_the_new_key_while_servers_run(backend: Backend) {
    let (server, admin, receiver, _) = receiving_fixture(&backend, verifying(), &[]).await;
    create_credential(&admin, TENANT, Role::Reader).await;
    let create_endpoint = CreateEndpointRequest {
        endpoint: Some(endpoint(TENANT, "ep2", &receiver.url("/ep2"))),
        request_id: "rekey-endpoint".to_owned(),
    };
    let with_secret = ok(admin
        .endpoints()
        .create_endpoint(create_endpoint.clone())
        .await);
    let rotated = ok(admin
        .endpoints()
        .rotate_endpoint_secret(RotateEndpointSecretRequest {
            tenant_id: TENANT.to_owned(),
            endpoint_id: "ep2".to_owned(),
            ..Default::default()
        })
        .await);
    let pending = create_subscription(
        &admin,
        Subscription {
            subscription_id: "rekeyed".to_owned(),
            ..subscription(TENANT, "ep2", &["command.completed"])
        },
    )
    .await;
    let confirmation = receiver.confirmation(&pending.subscription_id, 1).await;
    let old = harness_key(&backend);
    server.stop().await;

    let new = new_key();
    let running = serve(&backend, &new, &["--previous-master-key", &old]).await;
    let admin = admin_of(&running);
    ok(admin
        .credentials()
        .list_credentials(ListCredentialsRequest::default())
        .await);
    create_credential(&admin, TENANT, Role::Reader).await;

    let report = rekey(&backend, &old, &new).await.expect("rekey");
    println!("{report:?}");
    assert!(report.reencrypted >= 6, "{report:?}");
    assert!(
        report.already >= 1,
        "the credential written with the new key"
    );
    // Run again, it finds nothing left to do.
    let again = rekey(&backend, &old, &new).await.expect("rekey again");
    assert_eq!(again.reencrypted, 0, "{again:?}");
    running.shutdown().await.expect("shutdown");

    let new_key = MasterKey::from_base64(&new).expect("the new key");
    let secrets = stored_secrets(&backend).await;
    assert!(secrets.len() >= 8, "{} secrets", secrets.len());
    assert!(
        secrets
            .iter()
            .any(|(row, ..)| row.contains("of the change at")),
        "the change log's copies are among them"
    );
    for (row, blob, aad) in &secrets {
        new_key
            .decrypt(blob, aad.as_bytes())
            .unwrap_or_else(|e| panic!("{row} is not under the new key: {e}"));
    }

    let running = serve(&backend, &new, &[]).await;
    let admin = admin_of(&running);
    assert_eq!(
        ok(admin.endpoints().create_endpoint(create_endpoint).await),
        with_secret,
        "the stored response, decrypted with the new key"
    );
    assert_eq!(
        http_get(&format!(
            "http://{}/v1/confirm?token={}",
            running.http_addr, confirmation.token
        ))
        .await,
        200
    );
    let targets = resolve(&admin, TENANT, "command.completed").await;
    assert_eq!(targets.len(), 1);
    assert_eq!(
        targets[0].signing_secrets.len(),
        2,
        "current and rotated out"
    );
    assert_eq!(targets[0].signing_secrets[0], rotated.secret);
    running.shutdown().await.expect("shutdown");
}

/// A secret under neither key stops the rekey with an error that names its
/// row; nothing is skipped.
async fn a_secret_under_neither_key_stops_the_rekey(backend: Backend) {
    let server = backend.start().await;
    let admin = server.admin();
    create_tenant(&admin, TENANT).await;
    let reader = create_credential(&admin, TENANT, Role::Reader).await;
    let old = harness_key(&backend);
    server.stop().await;

    let stranger = MasterKey::generate().encrypt(
        b"hpsk_whatever",
        format!("credential:{}", reader.api_id).as_bytes(),
    );
    let db = backend.database().await;
    let literal = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Postgres => format!("'\\x{}'::bytea", hex::encode(&stranger)),
        _ => format!("X'{}'", hex::encode(&stranger)),
    };
    db.execute_unprepared(&format!(
        "UPDATE credentials SET secret_enc = {literal} WHERE api_id = '{}'",
        reader.api_id
    ))
    .await
    .expect("put a blob under a stranger key");
    let _ = db.close().await;

    let error = match rekey(&backend, &old, &new_key()).await {
        Ok(report) => panic!("rekey succeeded: {report:?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains(&format!("credential {}", reader.api_id)),
        "{error}"
    );
    assert!(error.contains("neither"), "{error}");
}

backend_tests!(
    rekey_moves_every_secret_to_the_new_key_while_servers_run,
    a_secret_under_neither_key_stops_the_rekey,
);
