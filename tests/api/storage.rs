//! What is at rest, read straight from the database behind the server:
//! credential secrets, endpoint secrets (current and previous after a
//! rotation) and stored idempotent responses that hold a secret are
//! encrypted, and confirmation tokens are stored hashed. Every column of
//! every table is searched for the plaintext, in every form it could take.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hookplane::proto::credential::Role;
use hookplane::proto::{
    CreateCredentialRequest, CreateEndpointRequest, Credential, Endpoint,
    RotateEndpointSecretRequest,
};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, Statement};

use crate::harness::*;
use crate::lifecycle::{receiving_fixture, verifying};

/// Every row of every table of the server's database as text, one line per
/// row; binary values appear as hex.
async fn dump(backend: &Backend) -> String {
    let db = backend.database().await;
    let mut out = String::new();
    for table in tables(&db, backend.is_postgres()).await {
        let select = if backend.is_postgres() {
            format!("SELECT t::text AS row FROM \"{table}\" t")
        } else {
            // quote() renders a blob as X'..hex..' and text as itself.
            let columns = strings(
                &db,
                &format!("SELECT name AS v FROM pragma_table_info('{table}')"),
            )
            .await;
            let quoted: Vec<String> = columns.iter().map(|c| format!("quote(\"{c}\")")).collect();
            format!(
                "SELECT {} AS row FROM \"{table}\"",
                quoted.join(" || '|' || ")
            )
        };
        let rows = db
            .query_all_raw(Statement::from_string(db.get_database_backend(), select))
            .await
            .unwrap_or_else(|e| panic!("read table {table}: {e}"));
        for row in rows {
            let text: String = row.try_get("", "row").expect("a row as text");
            out.push_str(&table);
            out.push_str(": ");
            out.push_str(&text);
            out.push('\n');
        }
    }
    let _ = db.close().await;
    assert!(out.contains("credentials: "), "the dump reads the tables");
    out
}

async fn tables(db: &DatabaseConnection, postgres: bool) -> Vec<String> {
    let query = if postgres {
        "SELECT table_name::text AS v FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    } else {
        "SELECT name AS v FROM sqlite_master WHERE type = 'table'"
    };
    strings(db, query).await
}

async fn strings(db: &DatabaseConnection, query: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), query))
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .iter()
        .map(|row| row.try_get("", "v").expect("a text column"))
        .collect()
}

/// On SQLite, the bytes of the database file and its write-ahead log, free
/// pages included; nothing on PostgreSQL.
fn sqlite_files(backend: &Backend) -> Vec<(String, Vec<u8>)> {
    if backend.is_postgres() {
        return Vec::new();
    }
    ["hookplane.db", "hookplane.db-wal"]
        .iter()
        .filter_map(|name| {
            let bytes = std::fs::read(backend.data_dir().join(name)).ok()?;
            Some((name.to_string(), bytes))
        })
        .collect()
}

#[track_caller]
fn assert_absent_from_files(files: &[(String, Vec<u8>)], what: &str, secret: &str) {
    let mut needles = vec![secret.as_bytes().to_vec()];
    if let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
    {
        needles.push(key);
    }
    for (name, bytes) in files {
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{what} is in plaintext in {name}"
            );
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `secret` appears nowhere in `dump`: not as text, not as the hex of its
/// bytes, and for a `whsec_` secret not as (the hex of) its key bytes.
#[track_caller]
fn assert_absent(dump: &str, what: &str, secret: &str) {
    assert!(secret.len() >= 16, "{what}: a real secret, got {secret:?}");
    let lower = dump.to_lowercase();
    let mut forms = vec![
        ("text", secret.to_owned(), dump),
        ("hex", hex(secret.as_bytes()), lower.as_str()),
    ];
    if let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|b64| STANDARD.decode(b64).ok())
    {
        forms.push(("key bytes as hex", hex(&key), lower.as_str()));
        forms.push((
            "base64 key",
            secret.trim_start_matches("whsec_").to_owned(),
            dump,
        ));
    }
    for (form, needle, haystack) in forms {
        if let Some(line) = haystack.lines().find(|l| l.contains(&needle)) {
            panic!(
                "{what} is stored in plaintext ({form}) in {}",
                line.split(':').next().unwrap_or_default()
            );
        }
    }
}

async fn secrets_and_tokens_are_not_stored_in_plaintext(backend: Backend) {
    let (server, admin, receiver, first_secret) =
        receiving_fixture(&backend, verifying(), &[]).await;

    // A credential and an endpoint made with a request id: each stores a
    // response holding its secret.
    let credential = ok(admin
        .credentials()
        .create_credential(CreateCredentialRequest {
            credential: Some(Credential {
                tenant_id: TENANT.to_owned(),
                role: Role::TenantAdmin as i32,
                description: "at rest".to_owned(),
                ..Default::default()
            }),
            request_id: "cred-at-rest-0001".to_owned(),
        })
        .await);
    let chosen = "caller-chosen-secret-0123456789";
    let second = ok(admin
        .endpoints()
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(Endpoint {
                secret: chosen.to_owned(),
                ..endpoint(TENANT, "ep2", &receiver.url("/hooks/second"))
            }),
            request_id: "ep-at-rest-0001".to_owned(),
        })
        .await);
    assert_eq!(second.secret, chosen);
    let generated = ok(admin
        .endpoints()
        .create_endpoint(CreateEndpointRequest {
            endpoint: Some(endpoint(TENANT, "ep3", &receiver.url("/hooks/third"))),
            request_id: "ep-at-rest-0002".to_owned(),
        })
        .await);
    assert!(
        generated.secret.starts_with("whsec_"),
        "{}",
        generated.secret
    );

    // Rotations keep the previous secret for the grace period.
    let rotate = |endpoint_id: &str| RotateEndpointSecretRequest {
        tenant_id: TENANT.to_owned(),
        endpoint_id: endpoint_id.to_owned(),
        secret: String::new(),
        grace_period_seconds: 3600,
    };
    let rotated_first = ok(admin
        .endpoints()
        .rotate_endpoint_secret(rotate(ENDPOINT))
        .await);
    let rotated_chosen = ok(admin
        .endpoints()
        .rotate_endpoint_secret(rotate("ep2"))
        .await);

    // A confirmation token, as the endpoint received it.
    let pending = create_subscription(&admin, subscription(TENANT, ENDPOINT, &["*"])).await;
    let token = receiver
        .confirmation(&pending.subscription_id, 1)
        .await
        .token;

    let stored = dump(&backend).await;
    let files = sqlite_files(&backend);
    // The previous secrets are still stored (the grace period runs), so
    // their absence in plaintext means they are stored encrypted.
    for (what, secret) in [
        ("the bootstrap admin's secret", ADMIN_SECRET),
        ("a credential secret", credential.secret.as_str()),
        ("a caller-chosen endpoint secret (previous)", chosen),
        ("a generated endpoint secret", generated.secret.as_str()),
        ("an endpoint secret (previous)", first_secret.as_str()),
        ("a rotated endpoint secret", rotated_first.secret.as_str()),
        ("a rotated endpoint secret", rotated_chosen.secret.as_str()),
        ("a confirmation token", token.as_str()),
    ] {
        assert_absent(&stored, what, secret);
        assert_absent_from_files(&files, what, secret);
    }
    // The search would find them: what is stored in plaintext is found.
    assert!(
        stored.contains(&credential.api_id),
        "the dump holds the rows"
    );
    // (A row may still be in the write-ahead log only.)
    assert!(
        files.is_empty()
            || files.iter().any(|(_, bytes)| bytes
                .windows(credential.api_id.len())
                .any(|w| w == credential.api_id.as_bytes())),
        "the SQLite files hold the rows"
    );
    // The rows are there: one confirmation token, the stored requests.
    assert!(
        stored.contains("cred-at-rest-0001") && stored.contains("ep-at-rest-0001"),
        "the idempotency records are stored"
    );
    assert_eq!(
        stored
            .lines()
            .filter(
                |l| l.starts_with("confirmation_tokens: ") && l.contains(&pending.subscription_id)
            )
            .count(),
        1,
        "one token row for the pending subscription"
    );

    // And they are usable: the stored secrets verify calls and deliveries.
    let resolved = crate::lifecycle::resolve(&admin, TENANT, "command.completed").await;
    assert!(resolved.is_empty(), "pending: nothing resolves yet");
    ok(admin
        .subscriptions()
        .confirm_subscription(hookplane::proto::ConfirmSubscriptionRequest { token })
        .await);
    let secrets = crate::lifecycle::resolve(&admin, TENANT, "command.completed")
        .await
        .into_iter()
        .find(|t| t.subscription_id == pending.subscription_id)
        .expect("confirmed, it resolves")
        .signing_secrets;
    assert_eq!(
        secrets,
        [rotated_first.secret, first_secret],
        "newest first"
    );
    let cred = Cred {
        api_id: credential.api_id,
        secret: credential.secret,
    };
    crate::lifecycle::get_subscription(&server.clients(&cred), &pending.subscription_id).await;
    server.stop().await;
}

backend_tests!(secrets_and_tokens_are_not_stored_in_plaintext);
