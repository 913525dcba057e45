//! Opening the database: the master key, connecting and migrating, and
//! `hookplane rekey`.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::{DatabaseArgs, MASTER_KEY_FILE, RekeyArgs};
use crate::crypto::{Keyring, MasterKey, load_or_create_key_file};
use crate::repository::{DatabaseSettings, RekeyReport, SeaRepository};

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
