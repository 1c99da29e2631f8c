//! A TCP proxy that breaks connections on command.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use crate::Error;

/// A TCP proxy on a free `127.0.0.1` port in front of one upstream address,
/// for fault tests: point the client at [`addr`](Self::addr), then
/// [`cut`](Self::cut), [`pause`](Self::pause), [`refuse`](Self::refuse) and
/// [`resume`](Self::resume).
///
/// It runs on its own thread with its own single-threaded tokio runtime, so
/// it works the same from `#[test]` and `#[tokio::test]` (any flavour), and
/// every control method is a quick non-blocking call. Dropping it stops the
/// thread and closes every connection.
///
/// The controls act on connections the proxy has *accepted*; a client's
/// `connect` can return before that happens, so wait for
/// [`accepted`](Self::accepted) or [`active`](Self::active) to count it
/// before cutting it.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: watch::Sender<State>,
    /// Bumped by every `cut()`; connections close when it changes.
    cuts: watch::Sender<u64>,
    accepted: AtomicU64,
    refused: AtomicU64,
    active: AtomicUsize,
    /// Notified, under its lock, after every counter change, so that
    /// `wait_until` waits for an event instead of polling.
    changed: (Mutex<()>, Condvar),
}

impl Shared {
    fn notify(&self) {
        let _guard = self.changed.0.lock().unwrap_or_else(PoisonError::into_inner);
        self.changed.1.notify_all();
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct State {
    paused: bool,
    refusing: bool,
}

impl FaultProxy {
    /// Binds a free loopback port and starts forwarding every connection to
    /// `upstream` (connecting to it once per accepted connection).
    pub fn start(upstream: SocketAddr) -> Result<Self, Error> {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(Error::io("binding the fault proxy to 127.0.0.1:0"))?;
        listener
            .set_nonblocking(true)
            .map_err(Error::io("setting the proxy socket non-blocking"))?;
        let addr = listener.local_addr().map_err(Error::io("reading the proxy's port"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("building the proxy's tokio runtime"))?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener).map_err(Error::io("registering the proxy socket"))?
        };
        let shared = Arc::new(Shared {
            state: watch::Sender::new(State::default()),
            cuts: watch::Sender::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            changed: (Mutex::new(()), Condvar::new()),
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread = thread::Builder::new()
            .name(format!("testkit-proxy-{}", addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    runtime.block_on(accept_loop(listener, upstream, shared, shutdown_rx));
                    // Dropping the runtime drops every connection task and its sockets.
                }
            })
            .map_err(Error::io("spawning the proxy thread"))?;
        Ok(Self { addr, upstream, shared, shutdown: Some(shutdown), thread: Some(thread) })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host clients connect to: `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Closes every accepted connection now, with a TCP reset on both sides
    /// (client and upstream see "connection reset"). New connections are
    /// still accepted and forwarded; pause or refuse state is unchanged.
    pub fn cut(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Black-holes traffic: stops moving bytes in both directions while
    /// keeping every connection open, like a network partition. Peers see
    /// silence, not an error; their writes succeed until socket buffers fill.
    /// New connections are accepted and held without reaching upstream.
    ///
    /// Bytes are held, not dropped (TCP would retransmit them): after
    /// [`resume`](Self::resume) they arrive, unless a peer gave up first
    /// (keep-alive timeout) and closed.
    pub fn pause(&self) {
        self.shared.state.send_modify(|s| s.paused = true);
    }

    /// Refuses new connections: each one is accepted and immediately reset, so
    /// the client's first read or write fails. Connections already open are
    /// untouched (combine with [`cut`](Self::cut) for a full outage). The
    /// port stays bound, so it cannot be taken by another process meanwhile.
    pub fn refuse(&self) {
        self.shared.state.send_modify(|s| s.refusing = true);
    }

    /// Ends [`pause`](Self::pause) and [`refuse`](Self::refuse): held bytes
    /// and connections flow again, new connections are forwarded.
    pub fn resume(&self) {
        self.shared.state.send_modify(|s| *s = State::default());
    }

    /// How many connections were accepted and forwarded (or held, while
    /// paused) since the start; refused ones are not counted.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many connections were refused (reset on accept) since the start.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// How many accepted connections are open now.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Waits until `condition` holds, at most `timeout`, and says whether it
    /// did. The proxy wakes the waiter whenever [`accepted`](Self::accepted),
    /// [`refused`](Self::refused) or [`active`](Self::active) changes, so
    /// this waits on events, not by polling. It blocks the calling thread;
    /// the proxy runs on its own.
    pub fn wait_until(&self, timeout: Duration, mut condition: impl FnMut(&Self) -> bool) -> bool {
        let (lock, changed) = &self.shared.changed;
        let deadline = Instant::now() + timeout;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            // Checked under the lock: a change between the check and the wait
            // cannot be missed, because `notify` takes the lock first.
            if condition(self) {
                return true;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            guard = changed.wait_timeout(guard, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.state.borrow().refusing {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            shared.notify();
            reset(&stream);
            continue;
        }
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let guard = Active::new(Arc::clone(&shared));
        shared.notify();
        // Subscribe now, so that a cut() right after accept() reaches this connection.
        let cuts = shared.cuts.subscribe();
        tokio::spawn(serve(stream, upstream, guard, cuts));
    }
}

/// Counts an open connection until dropped.
struct Active(Arc<Shared>);

impl Active {
    fn new(shared: Arc<Shared>) -> Self {
        shared.active.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.notify();
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    active: Active,
    mut cuts: watch::Receiver<u64>,
) {
    let mut state = active.0.state.subscribe();
    let connect = async {
        hold_while_paused(&mut state).await;
        TcpStream::connect(upstream).await
    };
    let upstream = tokio::select! {
        _ = cuts.changed() => Err(io::ErrorKind::ConnectionReset.into()),
        upstream = connect => upstream,
    };
    let Ok(mut upstream) = upstream else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let was_cut = {
        let (mut client_read, mut client_write) = client.split();
        let (mut upstream_read, mut upstream_write) = upstream.split();
        let to_upstream = pump(&mut client_read, &mut upstream_write, state.clone());
        let to_client = pump(&mut upstream_read, &mut client_write, state);
        tokio::pin!(to_upstream, to_client);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                _ = cuts.changed() => break true,
                done = &mut to_upstream, if !up_done => {
                    if done.is_err() { break false; }
                    up_done = true;
                }
                done = &mut to_client, if !down_done => {
                    if done.is_err() { break false; }
                    down_done = true;
                }
            }
            if up_done && down_done {
                break false;
            }
        }
    };
    if was_cut {
        reset(&client);
        reset(&upstream);
    }
    drop(active);
}

/// Copies one direction, holding bytes while paused, and passes on a
/// half-close (EOF becomes `shutdown(Write)` on the other side).
async fn pump(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    mut state: watch::Receiver<State>,
) -> io::Result<()> {
    let mut buf = vec![0; 16 * 1024];
    loop {
        hold_while_paused(&mut state).await;
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        // A read that was already waiting when pause() came still holds its bytes.
        hold_while_paused(&mut state).await;
        to.write_all(&buf[..n]).await?;
    }
}

async fn hold_while_paused(state: &mut watch::Receiver<State>) {
    // Err only when the sender is gone, i.e. the proxy is shutting down.
    let _ = state.wait_for(|s| !s.paused).await;
}

/// Makes the coming close send a TCP reset instead of a FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}
