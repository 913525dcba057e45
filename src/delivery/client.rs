//! The outbound HTTP client. Redirects are never followed and no proxy is
//! used; host names are checked on the address they resolve to at connect
//! time (so DNS rebinding cannot reach a private network) unless private
//! networks are allowed.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::domain::{SigningSecret, is_forbidden_ip};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResult {
    /// 0 when no response arrived.
    pub status_code: u16,
    pub latency: Duration,
    /// Empty on a response (whatever its status).
    pub error: String,
}

impl DeliveryResult {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// Looks a host name up: the system's resolver, or in tests a table the
/// test controls (so the guard is tested without depending on what the
/// machine's /etc/hosts or DNS say).
pub type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) })
    })
}

struct GuardedResolver {
    allow_private: bool,
    lookup: Lookup,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let lookup = self.lookup.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = lookup(host.clone())
                .await?
                .into_iter()
                .filter(|a| allow_private || !is_forbidden_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    format!("{host} resolves to no address outside private networks").into(),
                );
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    pub fn new(allow_private: bool, timeout: Duration) -> anyhow::Result<Self> {
        Self::with_lookup(allow_private, timeout, system_lookup())
    }

    /// A sender that looks host names up with `lookup`.
    pub fn with_lookup(
        allow_private: bool,
        timeout: Duration,
        lookup: Lookup,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment (HTTP_PROXY ...) would connect on
            // our behalf, out of the resolver guard's sight.
            .no_proxy()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .user_agent(concat!("hookplane/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private,
                lookup,
            }))
            .build()?;
        Ok(Sender {
            client,
            allow_private,
        })
    }

    /// POSTs `body` to `url`, signed with every live secret (newest first).
    /// Failures are data: a status code, or an error text.
    pub async fn post(
        &self,
        url: &str,
        secrets: &[String],
        msg_id: &str,
        body: &[u8],
    ) -> DeliveryResult {
        let started = Instant::now();
        let failed = |error: String| DeliveryResult {
            status_code: 0,
            latency: started.elapsed(),
            error,
        };
        let parsed = match url::Url::parse(url) {
            Ok(u) => u,
            Err(e) => return failed(format!("invalid URL: {e}")),
        };
        // Literal addresses never reach the resolver; check them here.
        if !self.allow_private
            && let Some(host) = parsed.host_str()
            && let Ok(ip) = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            && is_forbidden_ip(ip)
        {
            return failed(format!("{host} is in a private or reserved network"));
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signatures: Vec<String> = secrets
            .iter()
            .filter_map(|s| SigningSecret::parse(s).ok())
            .map(|s| s.sign_webhook(msg_id, timestamp, body))
            .collect();
        let response = self
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures.join(" "))
            .body(body.to_vec())
            .send()
            .await;
        match response {
            // The body is never read: a huge or endless one costs nothing.
            Ok(r) => DeliveryResult {
                status_code: r.status().as_u16(),
                latency: started.elapsed(),
                error: String::new(),
            },
            Err(e) => failed(error_text(&e)),
        }
    }
}

fn error_text(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A name the test owns, resolving to loopback whatever the machine's
    /// resolver says.
    const REBOUND: &str = "rebound.hookplane.test";

    fn stub(addr: SocketAddr) -> Lookup {
        Arc::new(move |host: String| {
            Box::pin(async move {
                if host == REBOUND {
                    Ok(vec![addr])
                } else {
                    Err(std::io::Error::other(format!(
                        "{host}: unknown to the stub"
                    )))
                }
            })
        })
    }

    /// A loopback listener that answers 200 and counts the requests it got.
    async fn receiver() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        (addr, hits)
    }

    #[tokio::test]
    async fn a_host_name_resolving_to_loopback_is_refused_at_connect_time() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (addr, hits) = receiver().await;
        let url = format!("http://{REBOUND}:{}/hook", addr.port());
        let secrets = ["whsec_dGVzdHNlY3JldHRlc3RzZWNyZXQ=".to_owned()];

        let guarded = Sender::with_lookup(false, Duration::from_secs(5), stub(addr)).unwrap();
        let refused = guarded.post(&url, &secrets, "msg_1", b"{}").await;
        assert_eq!(refused.status_code, 0, "{refused:?}");
        assert!(!refused.error.is_empty(), "{refused:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached loopback");

        // The same name, with private networks allowed, does reach the
        // receiver: the refusal above came from the guard, not the stub.
        let open = Sender::with_lookup(true, Duration::from_secs(5), stub(addr)).unwrap();
        let delivered = open.post(&url, &secrets, "msg_2", b"{}").await;
        assert_eq!(delivered.status_code, 200, "{delivered:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }
}
