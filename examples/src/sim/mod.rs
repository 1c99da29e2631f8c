//! `shopfloor-sim`: the plant, served as real devices. Each Modbus machine
//! is a Modbus TCP server of its own and each OPC UA machine an OPC UA
//! server of its own, so the gateways read them exactly as they would read
//! PLCs. [`model`] is the plant without I/O; [`modbus`] and [`opcua`] serve
//! it; [`configs`] writes the gateway, ingest and alerting files that match.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;

pub mod configs;
pub mod modbus;
pub mod model;
pub mod opcua;
pub mod scenario;

/// Unix time in seconds.
pub fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Counters for `/metrics` and the status line.
#[derive(Debug, Default)]
pub struct Stats {
    /// Modbus requests answered.
    pub modbus_requests: AtomicU64,
    /// Modbus requests answered with an exception.
    pub modbus_exceptions: AtomicU64,
    /// Modbus connections accepted.
    pub modbus_connections: AtomicU64,
    /// OPC UA values set (each notifies the subscribers).
    pub opcua_updates: AtomicU64,
    /// Times a machine went offline by a scripted fault.
    pub offline_transitions: AtomicU64,
}

impl Stats {
    /// Adds one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The running plant: the model, when it started, and its counters.
#[derive(Debug)]
pub struct Sim {
    /// The plant.
    pub plant: model::Plant,
    /// When the simulator started (Unix seconds): faults count from here.
    pub start_s: f64,
    /// Counters.
    pub stats: Stats,
}

impl Sim {
    /// A plant that starts now.
    pub fn start(plant: model::Plant) -> Arc<Self> {
        Arc::new(Self { plant, start_s: now_s(), stats: Stats::default() })
    }

    /// A machine's device has stopped for a scripted `offline` fault
    /// (`what` says how): counts and logs it, then waits until the fault
    /// ends (`true`) or the simulator stops (`false`).
    pub async fn sit_out_offline(&self, i: usize, what: &str, stop: &Stop) -> bool {
        Stats::inc(&self.stats.offline_transitions);
        let name = &self.plant.machines[i].name;
        tracing::info!(machine = %name, "offline (scripted fault): {what}");
        tokio::select! {
            () = until(|| self.online(i)) => true,
            () = stop.wait() => false,
        }
    }

    /// Whether machine `i` answers now.
    pub fn online(&self, i: usize) -> bool {
        self.plant.online(i, self.start_s, now_s())
    }

    /// Serves machine `i` on `listener` until `stop`, as a device that goes
    /// away while a scripted `offline` fault is on: `serve_once` serves on
    /// a listening socket (and its address) until the machine goes offline
    /// (`true`) or `stop` (`false`), and closes it; while offline nothing
    /// listens (`what` says how the device went away, for the log); then
    /// it listens on the same address again.
    pub async fn serve_machine<F, Fut>(
        &self,
        i: usize,
        listener: TcpListener,
        stop: &Stop,
        what: &str,
        mut serve_once: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut(TcpListener, SocketAddr) -> Fut,
        Fut: Future<Output = anyhow::Result<bool>>,
    {
        let addr = listener.local_addr()?;
        let mut listener = Some(listener);
        loop {
            let l = match listener.take() {
                Some(l) => l,
                None => rebind(addr).await?,
            };
            if !serve_once(l, addr).await? || !self.sit_out_offline(i, what, stop).await {
                return Ok(());
            }
            tracing::info!(machine = %self.plant.machines[i].name, "online again on {addr}");
        }
    }
}

/// Listens on `addr` again, retrying for a few seconds while the old
/// socket lingers.
async fn rebind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "cannot listen on {addr} again: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

/// Waits until `cond` holds, checking every 100 ms.
pub async fn until(mut cond: impl FnMut() -> bool) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !cond() {
        tick.tick().await;
    }
}

/// Cloneable; `wait` returns once [`Stopper::stop`] was called.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

/// Sends the stop.
#[derive(Debug)]
pub struct Stopper(watch::Sender<bool>);

/// A stopper and its signal.
pub fn stop_channel() -> (Stopper, Stop) {
    let (tx, rx) = watch::channel(false);
    (Stopper(tx), Stop(rx))
}

impl Stopper {
    /// Stops everything waiting.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

impl Stop {
    /// Until stopped (or the stopper is gone).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}
