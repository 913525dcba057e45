//! A lane's connection socket whose writes are sent by a task of their own,
//! so that everything the connection produced in one turn of the lane's
//! scheduler leaves in one system call.
//!
//! h2 can hold only one DATA frame of 256 bytes or more waiting to be
//! written; before it takes the next frame it flushes. Every
//! ResolveSubscribers answer is such a frame, so on a plain socket each
//! answer cost a `writev` of its own, a large share of a lane's CPU under
//! load (see BENCHMARKS.md), where small answers share one.
//!
//! Here a write only copies into the connection's outbox, and a flush only
//! hands the outbox to the connection's writer task. The writer is woken
//! once and runs after the tasks already queued on the lane, which are the
//! calls whose answers would otherwise have gone out one by one; it then
//! writes all of it at once. Nothing waits for a later call: once a flush
//! has returned, the writer sends the data without further prompting. A
//! write error reaches the connection at its next write, flush or shutdown.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Notify;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::Seat;

/// Bytes a connection may queue before its writes wait for the writer. The
/// writer takes the whole outbox at once, so up to twice this (plus one
/// frame) can be in memory per connection.
const OUTBOX_LIMIT: usize = 64 * 1024;

/// The read half of a connection, and the outbox its writer drains.
pub struct WriteBehind {
    read: OwnedReadHalf,
    shared: Arc<Shared>,
    info: TcpConnectInfo,
    _seat: Seat,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer task.
    kick: Notify,
    /// Tells the writer the connection is gone.
    gone: Notify,
}

#[derive(Default)]
struct State {
    outbox: Vec<u8>,
    /// The first write error; every later call returns it.
    failed: Option<(io::ErrorKind, String)>,
    shutdown: Shutdown,
    /// The connection, when it waits for room in the outbox or for shutdown.
    waiting: Option<Waker>,
    /// The connection is gone: the writer sends what it can without
    /// waiting, and stops.
    closed: bool,
}

#[derive(Default, PartialEq)]
enum Shutdown {
    #[default]
    Open,
    Requested,
    Done,
}

impl WriteBehind {
    /// Splits `stream` and starts its writer on the current runtime. The
    /// connection holds `seat` until it is dropped.
    pub(super) fn new(stream: TcpStream, seat: Seat) -> Self {
        let info = stream.connect_info();
        let (read, write) = stream.into_split();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            kick: Notify::new(),
            gone: Notify::new(),
        });
        tokio::spawn(write_out(write, shared.clone()));
        Self {
            read,
            shared,
            info,
            _seat: seat,
        }
    }

    /// Appends `bufs` to the outbox, or waits while it is full.
    fn queue(&self, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let mut state = self.shared.lock();
        state.check()?;
        if state.shutdown != Shutdown::Open {
            // As a shut socket would: the writer sends nothing more.
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after shutdown",
            )));
        }
        if state.outbox.len() >= OUTBOX_LIMIT {
            state.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let was_empty = state.outbox.is_empty();
        let mut queued = 0;
        for buf in bufs {
            state.outbox.extend_from_slice(buf);
            queued += buf.len();
        }
        drop(state);
        if was_empty && queued > 0 {
            self.shared.kick.notify_one();
        }
        Poll::Ready(Ok(queued))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only whole-value updates happen under the lock, so a panic
        // elsewhere cannot leave the state half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake_connection(&self) {
        if let Some(waker) = self.lock().waiting.take() {
            waker.wake();
        }
    }
}

impl State {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }
}

/// The writer task: sends whatever the outbox holds, one batch at a time,
/// until the connection shuts down or is dropped.
async fn write_out(mut write: OwnedWriteHalf, shared: Arc<Shared>) {
    let mut batch = Vec::new();
    loop {
        let (shutdown, closed) = {
            let mut state = shared.lock();
            std::mem::swap(&mut state.outbox, &mut batch);
            if !batch.is_empty() {
                // The outbox has room again. (A connection waiting for its
                // shutdown is woken early; it only asks again.)
                if let Some(waker) = state.waiting.take() {
                    waker.wake();
                }
            }
            (state.shutdown == Shutdown::Requested, state.closed)
        };
        if !batch.is_empty() {
            let written = tokio::select! {
                biased;
                written = write.write_all(&batch) => written,
                // A peer that stopped reading must not keep the socket, the
                // task and the batch alive once the connection is dropped.
                () = shared.gone.notified() => return,
            };
            if let Err(e) = written {
                shared.lock().failed = Some((e.kind(), e.to_string()));
                shared.wake_connection();
                return;
            }
            batch.clear();
            batch.shrink_to(OUTBOX_LIMIT);
            continue;
        }
        if shutdown {
            let result = write.shutdown().await;
            let mut state = shared.lock();
            if let Err(e) = result {
                state.failed = Some((e.kind(), e.to_string()));
            }
            state.shutdown = Shutdown::Done;
            drop(state);
            shared.wake_connection();
            return;
        }
        if closed {
            return;
        }
        // A permit is kept if the kick came before this wait.
        shared.kick.notified().await;
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.kick.notify_one();
        self.shared.gone.notify_one();
    }
}

impl Connected for WriteBehind {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for WriteBehind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteBehind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.queue(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.queue(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Ready once the writer has the data: it sends it without further calls.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.shared.lock().check())
    }

    /// Ready once everything queued is written and the write side is shut.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        state.check()?;
        match state.shutdown {
            Shutdown::Done => return Poll::Ready(Ok(())),
            Shutdown::Open => state.shutdown = Shutdown::Requested,
            Shutdown::Requested => {}
        }
        state.waiting = Some(cx.waker().clone());
        drop(state);
        self.shared.kick.notify_one();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Fails instead of hanging when the writer never sends.
    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(std::time::Duration::from_secs(10), f)
            .await
            .expect("the writer did not deliver in time")
    }

    /// Everything the peer sent until it closed, as text.
    async fn text_until_closed(client: &mut TcpStream) -> String {
        let mut got = String::new();
        within(client.read_to_string(&mut got)).await.unwrap();
        got
    }

    async fn pair() -> (WriteBehind, TcpStream) {
        let (server, client, _open) = counted_pair().await;
        (server, client)
    }

    /// Also returns the count the connection's seat is in.
    async fn counted_pair() -> (WriteBehind, TcpStream, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(1));
        let server = WriteBehind::new(accepted.unwrap().0, Seat(open.clone()));
        // Let the writer start and wait for work, as it does between calls.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        (server, client.unwrap(), open)
    }

    #[tokio::test]
    async fn flushed_data_arrives_without_further_calls() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"one ").await.unwrap();
        server.write_all(b"two").await.unwrap();
        server.flush().await.unwrap();
        // The server side is neither read nor written again, yet the
        // writer task delivers what was flushed.
        let mut got = [0u8; 7];
        within(client.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"one two");
        drop(server);
    }

    #[tokio::test]
    async fn more_than_the_outbox_holds_arrives_whole_and_in_order() {
        let (mut server, mut client) = pair().await;
        let data: Vec<u8> = (0..(5 * OUTBOX_LIMIT + 123))
            .map(|i| (i % 251) as u8)
            .collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in data.chunks(16 * 1024 + 9) {
                server.write_all(chunk).await.unwrap();
            }
            server.shutdown().await.unwrap();
            server
        });
        let mut got = Vec::new();
        within(client.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes arrived out of order or changed");
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_queued_then_closes() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"last words").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(text_until_closed(&mut client).await, "last words");
    }

    #[tokio::test]
    async fn a_write_after_shutdown_is_refused() {
        let (mut server, _client) = pair().await;
        server.shutdown().await.unwrap();
        let error = server.write_all(b"late").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn dropping_the_connection_still_sends_what_was_queued() {
        let (mut server, mut client, open) = counted_pair().await;
        server.write_all(b"bye").await.unwrap();
        drop(server);
        assert_eq!(
            open.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "seat kept"
        );
        assert_eq!(text_until_closed(&mut client).await, "bye");
    }

    #[tokio::test]
    async fn a_write_error_reaches_the_connection() {
        let (mut server, client) = pair().await;
        // Reset by the peer: the writer's send fails.
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(client);
        let error = within(async {
            loop {
                let written = server.write_all(&[7u8; 4096]).await;
                if let Err(e) = written.and(server.flush().await) {
                    return e;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(
            matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "unexpected error {error:?}"
        );
    }
}
