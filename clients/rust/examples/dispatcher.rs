//! A dispatcher that resolves locally: it follows one tenant's
//! subscriptions over WatchSubscriptions, and for each event named on the
//! command line finds its targets in memory and signs a delivery to each
//! the Standard Webhooks way. It prints each delivery as a curl command
//! instead of sending it, so it runs anywhere.
//!
//! ```bash
//! HOOKPLANE_API_ID=... HOOKPLANE_API_SECRET=... \
//!   cargo run -p hookplane-client --example dispatcher -- acme order.created '{"id": 1}'
//! ```
//!
//! The credential needs subscribers.resolve on the tenant, and
//! secrets.read for targets to carry their signing secrets (a DISPATCHER).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookplane_client::{Client, Credential, LocalResolver, SigningSecret};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(tenant), Some(event_type)) = (args.next(), args.next()) else {
        return Err("usage: dispatcher TENANT EVENT_TYPE [JSON_BODY]".into());
    };
    let body = args.next().unwrap_or_else(|| "{}".to_owned());
    let address =
        std::env::var("HOOKPLANE_ADDR").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let credential = Credential::new(
        std::env::var("HOOKPLANE_API_ID")?,
        std::env::var("HOOKPLANE_API_SECRET")?,
    );

    let client = Client::connect(address, credential).await?;
    let resolver = LocalResolver::start(client.subscriptions(), &tenant);
    tokio::time::timeout(Duration::from_secs(30), resolver.ready())
        .await
        .map_err(|_| "no snapshot within 30 s")?;

    // From here on every resolve is answered in memory, in microseconds;
    // the copy follows every change within a second.
    let Some(answer) = resolver.resolve(&tenant, &event_type) else {
        return Err(format!("tenant {tenant} is not known").into());
    };
    eprintln!(
        "{} target(s) for {event_type} at revision {}",
        answer.targets.len(),
        answer.revision
    );
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    for target in &answer.targets {
        // One message id per delivery, stable across its retries.
        let message_id = format!("msg_{}_{}", answer.revision, target.subscription_id);
        let signatures = target
            .signing_secrets
            .iter()
            .map(|s| {
                SigningSecret::parse(s)
                    .map(|s| s.sign_webhook(&message_id, timestamp, body.as_bytes()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        println!(
            "curl -sS -X POST '{}' -H 'content-type: application/json' \
             -H 'webhook-id: {message_id}' -H 'webhook-timestamp: {timestamp}' \
             -H 'webhook-signature: {}' --data '{}'",
            target.url,
            signatures.join(" "),
            body.replace('\'', "'\\''"),
        );
    }
    Ok(())
}
