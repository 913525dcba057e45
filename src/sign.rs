//! `hookplane sign`: signed metadata for a person pasting a grpcurl call.

use anyhow::Context;

use crate::auth::signature;
use crate::config::{BOOTSTRAP_FILE, SignArgs};
use crate::startup::BootstrapFile;

/// The four signing headers as grpcurl `-H` flags, one call's worth (the
/// nonce is fresh, so a second call needs a second `sign`).
pub fn grpcurl_flags(args: &SignArgs) -> anyhow::Result<String> {
    let (api_id, secret) = match (&args.api_id, &args.secret) {
        (Some(id), Some(secret)) => (id.clone(), secret.clone()),
        _ => {
            let path = args.data_dir.join(BOOTSTRAP_FILE);
            let text = std::fs::read(&path).with_context(|| {
                format!(
                    "no --api-id/--secret given and cannot read the bootstrap credential file {}",
                    path.display()
                )
            })?;
            let file: BootstrapFile = serde_json::from_slice(&text).with_context(|| {
                format!("{} is not a bootstrap credential file", path.display())
            })?;
            (file.api_id, file.secret)
        }
    };
    if !args.method.starts_with('/') || args.method.matches('/').count() != 2 {
        anyhow::bail!(
            "--method must be a full method path like /hookplane.v1.TenantService/ListTenants"
        );
    }
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let nonce = hex::encode(crate::crypto::random_bytes::<16>());
    let sig = signature::sign(secret.as_bytes(), &api_id, &timestamp, &nonce, &args.method);
    Ok(format!(
        "-H 'x-api-id: {api_id}' -H 'x-api-timestamp: {timestamp}' -H 'x-api-nonce: {nonce}' -H 'x-api-signature: {sig}'"
    ))
}
