//! A client for hookplane: signed gRPC clients for every service, and a
//! [`LocalResolver`] that follows WatchSubscriptions and answers "whom does
//! this event reach?" in-process, with the server's own matching code.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use hookplane_client::{Client, Credential, LocalResolver};
//!
//! let client = Client::connect("http://127.0.0.1:50051", Credential::new("ak_dispatch", "secret")).await?;
//! let resolver = LocalResolver::start(client.subscriptions(), "acme");
//! resolver.ready().await;
//! if let Some(answer) = resolver.resolve("acme", "order.created") {
//!     for target in &answer.targets {
//!         println!("{} at revision {}", target.url, answer.revision);
//!     }
//! }
//! # Ok(()) }
//! ```

mod client;
mod local;
mod signing;

pub use client::Client;
/// Signs deliveries the Standard Webhooks way, as the server signs its own.
pub use hookplane_core::SigningSecret;
pub use hookplane_core::Target;
pub use local::{LocalResolver, Resolved};
pub use signing::{Credential, Signed};

/// The generated messages and clients of `hookplane.v1`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("hookplane.v1");
}
