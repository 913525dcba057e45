//! Serves gRPC connections on a set of single-threaded runtimes ("lanes"),
//! one per core, each connection staying on the lane that took it.
//!
//! On the shared multi-threaded runtime a connection's HTTP/2 task and the
//! tasks of its streams run on different threads: every answer takes a
//! cross-thread wake-up, and threads meet on h2's per-connection lock
//! (off-CPU profiles of ResolveSubscribers showed both sides sleeping on
//! it). Kept on one thread, a connection's streams never contend; what that
//! buys resolve, and costs health checks on some machines, is measured in
//! BENCHMARKS.md.
//!
//! The price: one connection is served by one core. Callers that need more
//! open several connections; `--grpc-threads 0` serves on the shared
//! runtime instead.
//!
//! A lane's connection writes through [`write_behind`]: what the connection
//! produces in one turn of the lane leaves in one write.
//!
//! Database connections a lane's calls open are driven by that lane's
//! reactor, so lanes keep running (idle) after they stop serving until the
//! server releases them, after the background tasks and pools are done.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::server::Router;

use crate::auth::MethodPathLayer;

pub mod http;
mod write_behind;

use write_behind::WriteBehind;

pub type Routes = Router<tower::layer::util::Stack<MethodPathLayer, tower::layer::util::Identity>>;

/// TCP keepalive on accepted connections.
pub const KEEPALIVE: Duration = Duration::from_secs(60);

/// Lets the lanes' runtimes go when dropped (see the module notes).
pub struct Release(#[allow(dead_code)] Vec<oneshot::Sender<()>>);

struct Lane {
    connections: mpsc::UnboundedSender<std::net::TcpStream>,
    /// Connections open on this lane.
    open: Arc<AtomicUsize>,
}

/// Accepts on `listener` and hands each connection to the lane with the
/// fewest open connections. Once `stop` turns true it stops accepting and
/// completes when every lane has drained its calls; the lanes' runtimes
/// stay up until the returned [`Release`] is dropped.
pub async fn serve_on_lanes(
    router: Routes,
    listener: TcpListener,
    lanes: usize,
    mut stop: watch::Receiver<bool>,
) -> (anyhow::Result<()>, Release) {
    let mut started = Vec::with_capacity(lanes);
    let mut served = Vec::with_capacity(lanes);
    let mut releases = Vec::with_capacity(lanes);
    for i in 0..lanes {
        let (tx, rx) = mpsc::unbounded_channel();
        let (served_tx, served_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        let open = Arc::new(AtomicUsize::new(0));
        let lane = LaneThread {
            router: router.clone(),
            connections: rx,
            open: open.clone(),
            stop: stop.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("grpc-lane-{i}"))
            .spawn(move || lane.run(served_tx, release_rx));
        if let Err(e) = spawned {
            let error = anyhow::Error::from(e).context("cannot start a gRPC serving thread");
            return (Err(error), Release(releases));
        }
        started.push(Lane {
            connections: tx,
            open,
        });
        served.push(served_rx);
        releases.push(release_tx);
    }
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: keep serving the
                // connections already open and try again shortly.
                tracing::warn!(error = %e, "accepting a gRPC connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match tune(stream) {
            Ok(stream) => {
                let lane = started
                    .iter()
                    .min_by_key(|lane| lane.open.load(Ordering::Relaxed))
                    .expect("at least one lane");
                lane.open.fetch_add(1, Ordering::Relaxed);
                let _ = lane.connections.send(stream);
            }
            Err(e) => tracing::warn!(error = %e, "cannot set up an accepted connection"),
        }
    }
    drop(started);
    let mut result = Ok(());
    for lane in served {
        match lane.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(anyhow::anyhow!("a gRPC serving thread panicked")),
        }
    }
    (result, Release(releases))
}

/// Without TCP_NODELAY, small responses wait for delayed ACKs (~40 ms).
fn tune(stream: TcpStream) -> io::Result<std::net::TcpStream> {
    stream.set_nodelay(true)?;
    let std = stream.into_std()?;
    socket2::SockRef::from(&std)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(KEEPALIVE))?;
    Ok(std)
}

struct LaneThread {
    router: Routes,
    connections: mpsc::UnboundedReceiver<std::net::TcpStream>,
    open: Arc<AtomicUsize>,
    stop: watch::Receiver<bool>,
}

impl LaneThread {
    fn run(self, served: oneshot::Sender<anyhow::Result<()>>, release: oneshot::Receiver<()>) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = served.send(Err(
                    anyhow::Error::from(e).context("cannot build a gRPC serving runtime")
                ));
                return;
            }
        };
        runtime.block_on(async move {
            let open = self.open;
            // Registered with this thread's reactor, so its I/O is driven here.
            let incoming = UnboundedReceiverStream::new(self.connections).map(move |s| {
                match TcpStream::from_std(s) {
                    Ok(stream) => Ok(WriteBehind::new(stream, Seat(open.clone()))),
                    Err(e) => {
                        open.fetch_sub(1, Ordering::Relaxed);
                        Err(e)
                    }
                }
            });
            let result = self
                .router
                .serve_with_incoming_shutdown(incoming, stopped(self.stop))
                .await
                .context("gRPC server failed");
            let _ = served.send(result);
            let _ = release.await;
        });
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// A connection's place in its lane's count of open connections, given up
/// when the connection closes.
struct Seat(Arc<AtomicUsize>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
