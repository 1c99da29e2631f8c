//! The HTTP layer every binary serves through (axum on hyper): a listener
//! that waits instead of spinning when `accept()` fails (out of file
//! descriptors) and drops a client that stops reading, and the routes of
//! the `[metrics]` address: `GET /metrics`, `GET /healthz` (the process
//! answers) and `GET /ready` (it does its job: connected, born).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

/// How long a listener waits after `accept()` failed (out of file
/// descriptors, say) before it tries again.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long a write may wait on a client that reads nothing before the
/// connection is dropped (an event stream to a frozen browser tab, a
/// client that never reads its response).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP listener for axum that never spins and drops stalled clients.
pub struct Listener {
    inner: TcpListener,
    what: &'static str,
}

impl Listener {
    /// Binds `listen`; `what` names it in errors and logs.
    pub async fn bind(listen: SocketAddr, what: &'static str) -> anyhow::Result<Self> {
        let inner = TcpListener::bind(listen)
            .await
            .with_context(|| format!("{what}: cannot listen on {listen}"))?;
        Ok(Self { inner, what })
    }
}

impl axum::serve::Listener for Listener {
    type Io = Stalling<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    return (Stalling::new(socket, STALL_TIMEOUT), peer);
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE), say: retrying at
                    // once would spin a core until one is freed.
                    tracing::warn!(
                        "{}: cannot accept a connection: {e}; retrying in 100 ms",
                        self.what
                    );
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection whose writes fail once they have waited `limit` on a peer
/// that does not read: hyper then closes it.
pub struct Stalling<T> {
    io: T,
    limit: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<T> Stalling<T> {
    /// Wraps `io`.
    pub fn new(io: T, limit: Duration) -> Self {
        Self { io, limit, waiting: None }
    }

    /// `Ready(Err)` once a write has been pending for `limit`.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let timer = self.waiting.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {} s", limit.as_secs()),
        ))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stalling<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stalling<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.io).poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.waiting = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.io).poll_flush(cx) {
            Poll::Ready(r) => {
                self.waiting = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The address a request came from (`ConnectInfo<Peer>`).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Serves `router` on `listener` until the task is aborted, with each
/// request's peer address available (`ConnectInfo<Peer>`).
pub fn spawn(listener: Listener, router: Router) -> JoinHandle<()> {
    let what = listener.what;
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<Peer>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!("{what}: the HTTP server stopped: {e}");
        }
    })
}

/// What renders the metrics page on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Whether the binary does its job (`Err`: why not), for `GET /ready`.
pub type Ready = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The routes of the `[metrics]` address: `GET /metrics` (the text
/// exposition format), `GET /healthz` (200 while the process answers),
/// `GET /ready` (200 when `ready` says so, else 503 with the reason).
pub fn metrics_router(render: Render, ready: Ready) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let render = Arc::clone(&render);
                async move { ([(CONTENT_TYPE, "text/plain; version=0.0.4")], render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(move || {
                let ready = Arc::clone(&ready);
                async move {
                    match ready() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                        Err(why) => {
                            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"))
                        }
                    }
                }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics, /healthz or /ready\n") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_write_to_a_peer_that_reads_nothing_fails_after_the_limit() {
        let limit = Duration::from_millis(200);
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut s = Stalling::new(ours, limit);
        s.write_all(&[1; 16]).await.unwrap();
        // The pipe is full: the next write waits, then fails.
        let t = std::time::Instant::now();
        let e = s.write_all(&[2; 16]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(t.elapsed() >= limit, "{:?}", t.elapsed());
        // A peer that reads, late but within the limit, is served.
        let mut buf = [0; 16];
        theirs.read_exact(&mut buf).await.unwrap();
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut all = Vec::new();
            theirs.read_to_end(&mut all).await.map(|_| all)
        });
        s.write_all(&[3; 16]).await.unwrap();
        s.write_all(&[4; 16]).await.unwrap();
        s.shutdown().await.unwrap();
        drop(s);
        let all = reader.await.unwrap().unwrap();
        assert_eq!(all.len(), 32);
    }
}
