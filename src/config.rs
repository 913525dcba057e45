//! The one place that reads flags and environment variables. Every flag also
//! reads an environment variable; values are validated once, here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "hookplane",
    version,
    about = "gRPC control plane for webhook subscriptions"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per process; boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Print signed request metadata as grpcurl -H flags.
    Sign(SignArgs),
    /// Re-encrypt every stored secret under a new master key, online.
    Rekey(RekeyArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where the data lives. Shared by `serve` and `migrate`.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Directory for the SQLite database, the generated master key and the
    /// bootstrap credential file.
    #[arg(long, env = "HOOKPLANE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// `postgres://...` or `sqlite://...`; default: a SQLite file in the data dir.
    #[arg(long, env = "HOOKPLANE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Base64 of 32 bytes that encrypts secrets at rest. Required on
    /// PostgreSQL; on SQLite a key file is generated in the data dir.
    #[arg(long, env = "HOOKPLANE_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// During a master-key rotation, the key secrets may still be under:
    /// they are read with either key and written with --master-key.
    #[arg(long, env = "HOOKPLANE_PREVIOUS_MASTER_KEY", hide_env_values = true)]
    pub previous_master_key: Option<String>,

    /// Database pool size.
    #[arg(long, env = "HOOKPLANE_DB_MAX_CONNECTIONS", default_value_t = 8)]
    pub db_max_connections: u32,
}

impl DatabaseArgs {
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("hookplane.db").display()
            ),
        }
    }

    pub fn is_postgres(&self) -> bool {
        crate::repository::is_postgres_url(&self.database_url())
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// gRPC listen address; port 0 picks a free port (logged).
    #[arg(long, env = "HOOKPLANE_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// HTTP listen address (confirmation links, /healthz).
    #[arg(long, env = "HOOKPLANE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Base URL of confirmation links; default http://<http-addr>.
    #[arg(long, env = "HOOKPLANE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Allow endpoint URLs in loopback, private and link-local ranges.
    #[arg(
        long,
        env = "HOOKPLANE_ALLOW_PRIVATE_NETWORKS",
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = parse_bool,
        action = clap::ArgAction::Set
    )]
    pub allow_private_networks: bool,

    /// PEM certificate chain; with --tls-key enables TLS.
    #[arg(long, env = "HOOKPLANE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "HOOKPLANE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle; clients must present a certificate it signed (mutual TLS).
    #[arg(long, env = "HOOKPLANE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    #[arg(long, env = "HOOKPLANE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Largest accepted request signature age or skew, in seconds.
    #[arg(long, env = "HOOKPLANE_TIMESTAMP_WINDOW_SECS", default_value_t = 300, value_parser = clap::value_parser!(i64).range(1..=3600))]
    pub timestamp_window_secs: i64,

    /// Largest accepted gRPC message, in bytes.
    #[arg(long, env = "HOOKPLANE_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// How long change-log rows are kept, in hours (Watch can resume within it).
    #[arg(long, env = "HOOKPLANE_CHANGE_RETENTION_HOURS", default_value_t = 24, value_parser = clap::value_parser!(i64).range(1..))]
    pub change_retention_hours: i64,

    /// api_id of a platform admin credential to make sure exists at start.
    #[arg(
        long,
        env = "HOOKPLANE_BOOTSTRAP_API_ID",
        requires = "bootstrap_secret"
    )]
    pub bootstrap_api_id: Option<String>,

    /// Secret of the bootstrap credential.
    #[arg(
        long,
        env = "HOOKPLANE_BOOTSTRAP_SECRET",
        hide_env_values = true,
        requires = "bootstrap_api_id"
    )]
    pub bootstrap_secret: Option<String>,

    /// How long a confirmation link stays valid, in hours.
    #[arg(long, env = "HOOKPLANE_CONFIRMATION_TTL_HOURS", default_value_t = 72, value_parser = clap::value_parser!(i64).range(1..=8760))]
    pub confirmation_ttl_hours: i64,

    /// Timeout of one outbound delivery (confirmation, ping), in seconds.
    #[arg(long, env = "HOOKPLANE_DELIVERY_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    pub delivery_timeout_secs: u64,

    /// How long shutdown waits for running calls, in seconds.
    #[arg(long, env = "HOOKPLANE_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Open connections on the HTTP listener at most; while it is full,
    /// new connections wait until one closes.
    #[arg(long, env = "HOOKPLANE_HTTP_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,

    /// Seconds an HTTP connection may take to send a request's headers, and
    /// may stay idle between requests, before it is closed.
    #[arg(long, env = "HOOKPLANE_HTTP_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub http_header_timeout_secs: u64,

    /// Open WatchSubscriptions streams on this replica, at most.
    #[arg(long, env = "HOOKPLANE_MAX_WATCH_STREAMS", default_value_t = 10_000)]
    pub max_watch_streams: usize,

    /// Recent changes this replica keeps in memory for its Watch streams.
    /// A stream further behind (resuming from an older revision, or too
    /// slow a reader) reads the change log itself until it catches up.
    #[arg(long, env = "HOOKPLANE_WATCH_FEED_EVENTS", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub watch_feed_events: u64,

    /// Open WatchSubscriptions streams of one credential on this replica,
    /// at most.
    #[arg(
        long,
        env = "HOOKPLANE_MAX_WATCH_STREAMS_PER_CREDENTIAL",
        default_value_t = 100
    )]
    pub max_watch_streams_per_credential: usize,

    /// Concurrent calls (HTTP/2 streams) on one gRPC connection, at most.
    #[arg(long, env = "HOOKPLANE_MAX_CONCURRENT_STREAMS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Live (not DELETED) subscriptions of one tenant, at most; checked in
    /// the write, exact under concurrency and across replicas.
    #[arg(
        long,
        env = "HOOKPLANE_MAX_SUBSCRIPTIONS_PER_TENANT",
        default_value_t = 100_000
    )]
    pub max_subscriptions_per_tenant: u64,

    /// Live endpoints of one tenant, at most; checked like subscriptions.
    #[arg(
        long,
        env = "HOOKPLANE_MAX_ENDPOINTS_PER_TENANT",
        default_value_t = 10_000
    )]
    pub max_endpoints_per_tenant: u64,

    /// Calls per second per credential on this replica (a token bucket);
    /// 0 turns rate limiting off.
    #[arg(long, env = "HOOKPLANE_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,

    /// Calls one credential may make at once before --rate-limit paces
    /// it; default twice --rate-limit.
    #[arg(long, env = "HOOKPLANE_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,

    /// Recent request nonces remembered for replay protection, at most;
    /// at the bound new calls are refused (RESOURCE_EXHAUSTED) until old
    /// ones leave twice the timestamp window.
    #[arg(long, env = "HOOKPLANE_MAX_NONCES", default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_nonces: u64,

    /// Threads serving gRPC connections, each connection kept on one of
    /// them; default one per core. 0 serves every connection on the shared
    /// multi-threaded runtime instead (one connection may then use every
    /// core).
    #[arg(long, env = "HOOKPLANE_GRPC_THREADS", value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub grpc_threads: Option<u16>,
}

impl ServeArgs {
    /// Serving threads, per `--grpc-threads` (0: the shared runtime).
    pub fn grpc_threads(&self) -> usize {
        self.grpc_threads.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            usize::from,
        )
    }

    /// Base of confirmation links.
    pub fn public_url(&self, http_addr: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{http_addr}"))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    pub fn http_limits(&self) -> crate::serving::http::HttpLimits {
        crate::serving::http::HttpLimits {
            header_read_timeout: Duration::from_secs(self.http_header_timeout_secs),
            max_connections: self.http_max_connections as usize,
            shutdown_grace: self.shutdown_grace(),
        }
    }
}

/// `hookplane rekey`: --master-key (and --previous-master-key) are the keys
/// secrets are under now, --new-master-key the one they go under.
#[derive(Debug, Clone, Args)]
pub struct RekeyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Base64 of 32 bytes: the key every secret is re-encrypted under.
    #[arg(long, env = "HOOKPLANE_NEW_MASTER_KEY", hide_env_values = true)]
    pub new_master_key: String,

    /// Rows re-encrypted per transaction.
    #[arg(long, env = "HOOKPLANE_REKEY_BATCH_SIZE", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_size: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SignArgs {
    /// Full gRPC method path, e.g. /hookplane.v1.TenantService/CreateTenant.
    #[arg(long)]
    pub method: String,

    #[arg(long, env = "HOOKPLANE_API_ID")]
    pub api_id: Option<String>,

    #[arg(long, env = "HOOKPLANE_API_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// Where to find the bootstrap credential file when no id/secret is given.
    #[arg(long, env = "HOOKPLANE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Accepts true/false, 1/0, yes/no, on/off (any case).
fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

/// Name of the bootstrap credential file inside the data dir.
pub const BOOTSTRAP_FILE: &str = "bootstrap-credential.json";
/// Name of the generated master key file inside the data dir.
pub const MASTER_KEY_FILE: &str = "master.key";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bool_flags_accept_false_strings() {
        assert_eq!(parse_bool("false"), Ok(false));
        assert_eq!(parse_bool("0"), Ok(false));
        assert_eq!(parse_bool("TRUE"), Ok(true));
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn allow_private_networks_flag_forms() {
        let parse = |args: &[&str]| {
            let mut all = vec!["hookplane", "serve"];
            all.extend_from_slice(args);
            match Cli::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Serve(s)) => s.allow_private_networks,
                other => panic!("unexpected parse: {other:?}"),
            }
        };
        assert!(!parse(&[]));
        assert!(parse(&["--allow-private-networks"]));
        assert!(!parse(&["--allow-private-networks=false"]));
        assert!(parse(&["--allow-private-networks=1"]));
    }
}
