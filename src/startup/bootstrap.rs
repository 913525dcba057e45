//! The bootstrap platform admin: the configured credential, or a generated
//! one written to a private file when the store holds none.

use std::path::Path;

use anyhow::{Context, bail};

use crate::config::{BOOTSTRAP_FILE, ServeArgs};
use crate::crypto::{IfExists, write_private};
use crate::domain::Role;
use crate::model::{Credential, new_etag, now_micros};
use crate::repository::{Bootstrap, CredentialStore, SeaRepository};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct BootstrapFile {
    pub api_id: String,
    pub secret: String,
}

/// Makes sure a platform admin exists: the configured one, or, when the
/// store holds no credential at all, a generated one written to a 0600 file.
pub(super) async fn bootstrap(args: &ServeArgs, repo: &SeaRepository) -> anyhow::Result<()> {
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
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_private(path, contents, IfExists::Replace)
        .with_context(|| format!("cannot write {}", path.display()))
}
