//! Stopping: the handle `start` returns, the signals that stop the server,
//! and the drain after the gRPC listener has stopped, all under one deadline.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::repository::SeaRepository;

/// A started server.
pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) task: JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Stops accepting calls, lets running ones finish, closes the database.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("server task panicked")?
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining calls");
        self.shutdown().await
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// After the gRPC listener stopped: waits for the HTTP listener, then the
/// background tasks, then closes the database, each only until `deadline`.
pub(super) async fn drain(
    deadline: tokio::time::Instant,
    mut http_task: JoinHandle<()>,
    mut background: [JoinHandle<()>; 3],
    repo: &SeaRepository,
) {
    match tokio::time::timeout_at(deadline, &mut http_task).await {
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP listener failed"),
        Ok(Ok(())) => {}
        Err(_) => {
            tracing::warn!("HTTP requests still running after the grace period");
            http_task.abort();
        }
    }
    // Let deliveries in flight record their outcome before the pools close.
    let finished = async {
        for task in &mut background {
            let _ = task.await;
        }
    };
    if tokio::time::timeout_at(deadline, finished).await.is_err() {
        tracing::warn!("background tasks still running after the grace period");
        for task in &background {
            task.abort();
        }
    }
    if tokio::time::timeout_at(deadline, repo.close())
        .await
        .is_err()
    {
        tracing::warn!(
            "database connections still in use after the grace period; they close with the process"
        );
    }
}
