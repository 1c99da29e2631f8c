//! Writes to devices in the order they arrived.
//!
//! A gateway that starts a task per write command lets two commands to
//! one register race: 5 ms apart, a few in a few hundred reached the
//! device out of order, so the older setpoint won. [`WriteQueues`] keeps
//! one bounded queue and one worker per device: a device's writes are
//! applied one after another in arrival order, writes to different devices
//! go on side by side, and a flood of commands can neither start tasks
//! nor hold memory without bound (a full queue refuses the write, and the
//! caller reports that as the write's result).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use tokio::task::JoinHandle;

/// Writes waiting per device, by default.
pub const DEFAULT_CAPACITY: usize = 256;

/// Why a write was not queued; it carries the write back.
#[derive(Debug)]
pub enum Refusal<J> {
    /// No device of this name is configured.
    UnknownDevice(J),
    /// The device's queue holds `capacity` writes already.
    Full {
        /// The write.
        job: J,
        /// The queue's size.
        capacity: usize,
    },
}

impl<J> Refusal<J> {
    /// The write that was not queued.
    pub fn into_job(self) -> J {
        match self {
            Self::UnknownDevice(j) | Self::Full { job: j, .. } => j,
        }
    }
}

impl<J> fmt::Display for Refusal<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownDevice(_) => f.write_str("no such device in this gateway"),
            Self::Full { capacity, .. } => write!(
                f,
                "{capacity} writes to this device are waiting already: refused, not queued (send it again later)"
            ),
        }
    }
}

/// A bounded queue and a worker per device; see the module documentation.
pub struct WriteQueues<J> {
    queues: HashMap<String, mpsc::Sender<J>>,
    capacity: usize,
    workers: Vec<JoinHandle<()>>,
}

impl<J> Drop for WriteQueues<J> {
    fn drop(&mut self) {
        self.workers.iter().for_each(JoinHandle::abort);
    }
}

impl<J> fmt::Debug for WriteQueues<J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteQueues")
            .field("devices", &self.queues.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<J: Send + 'static> WriteQueues<J> {
    /// A queue of `capacity` for each of `devices`, each drained by a
    /// worker that runs `work` on one write at a time (on the current
    /// tokio runtime; the workers stop when this is dropped).
    pub fn new<W, F>(devices: impl IntoIterator<Item = String>, capacity: usize, work: W) -> Self
    where
        W: Fn(J) -> F + Clone + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let capacity = capacity.max(1);
        let mut queues = HashMap::new();
        let mut workers = Vec::new();
        for device in devices {
            if queues.contains_key(&device) {
                continue;
            }
            let (tx, mut rx) = mpsc::channel::<J>(capacity);
            let work = work.clone();
            workers.push(tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    work(job).await;
                }
            }));
            queues.insert(device, tx);
        }
        Self { queues, capacity, workers }
    }

    /// Stops the workers (a write under way is abandoned, those waiting
    /// are dropped) and waits until they are gone, so that what their
    /// work held (a link to a server) is released.
    pub async fn shutdown(mut self) {
        let workers = std::mem::take(&mut self.workers);
        workers.iter().for_each(JoinHandle::abort);
        for w in workers {
            let _ = w.await;
        }
    }

    /// Queues a write to `device` behind the ones before it.
    pub fn submit(&self, device: &str, job: J) -> Result<(), Refusal<J>> {
        let Some(tx) = self.queues.get(device) else { return Err(Refusal::UnknownDevice(job)) };
        tx.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) => Refusal::Full { job, capacity: self.capacity },
            // Only when the runtime is going down.
            TrySendError::Closed(job) => Refusal::UnknownDevice(job),
        })
    }
}

/// A Sparkplug gateway's share of the edge node's events: a write
/// (NCMD/DCMD) goes into its device's queue; what cannot go (no reading
/// type for the value, a full queue, an unknown device: `unknown` says how
/// the gateway calls it) or was refused by the node (a retained command)
/// comes back as the refused write result to publish. `None`: queued, or
/// not a write.
pub fn edge_write(
    queues: &WriteQueues<(String, String, shopfloor_schemas::Value)>,
    event: shopfloor_sparkplug::EdgeEvent,
    unknown: &str,
) -> Option<shopfloor_schemas::WriteResult> {
    use shopfloor_schemas::WriteResult;
    use shopfloor_sparkplug::EdgeEvent;
    match event {
        EdgeEvent::WriteRefused { device: Some(device), metric, value, reason } => {
            Some(WriteResult::refused(device, metric, format!("{value:?}"), reason))
        }
        EdgeEvent::Write { device: Some(device), metric, value } => match value.to_value() {
            None => Some(WriteResult::refused(
                device,
                metric,
                format!("{value:?}"),
                "a value with no reading type",
            )),
            Some(v) => queues.submit_write(device, metric, v, unknown),
        },
        _ => None,
    }
}

impl WriteQueues<(String, String, shopfloor_schemas::Value)> {
    /// Queues a write of `value` to `metric` of `device`; one that cannot
    /// go (a full queue, an unknown device: `unknown` says how the gateway
    /// calls it) comes back as the refused write result to publish.
    pub fn submit_write(
        &self,
        device: String,
        metric: String,
        value: shopfloor_schemas::Value,
        unknown: &str,
    ) -> Option<shopfloor_schemas::WriteResult> {
        self.submit(&device.clone(), (device, metric, value)).err().map(|r| {
            let message = match r {
                Refusal::UnknownDevice(_) => unknown.to_owned(),
                ref r => r.to_string(),
            };
            let (device, metric, v) = r.into_job();
            shopfloor_schemas::WriteResult::refused(device, metric, v.to_string(), message)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test]
    async fn each_device_applies_its_writes_in_order_and_a_full_queue_refuses() {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (log, g, s) = (Arc::clone(&applied), Arc::clone(&gate), Arc::clone(&started));
        let work = move |(d, n): (&'static str, u64)| {
            let (log, g, s) = (Arc::clone(&log), Arc::clone(&g), Arc::clone(&s));
            async move {
                s.store(true, std::sync::atomic::Ordering::SeqCst);
                g.acquire().await.unwrap().forget();
                // Later writes would finish sooner if they could overtake.
                tokio::time::sleep(Duration::from_millis(10 - n)).await;
                log.lock().unwrap().push((d, n));
            }
        };
        let q = WriteQueues::new(["a".to_owned(), "b".to_owned()], 3, work);
        for n in 0..3 {
            q.submit("a", ("a", n)).unwrap();
        }
        // The worker takes the first and waits at the gate; three more fit.
        while !started.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
        q.submit("a", ("a", 3)).unwrap();
        let refused = q.submit("a", ("a", 9)).unwrap_err();
        assert!(matches!(refused, Refusal::Full { capacity: 3, .. }), "{refused}");
        assert!(refused.to_string().starts_with("3 writes to this device are waiting"));
        assert_eq!(refused.into_job(), ("a", 9));
        assert!(matches!(q.submit("c", ("c", 0)), Err(Refusal::UnknownDevice(("c", 0)))));
        q.submit("b", ("b", 0)).unwrap();
        gate.add_permits(5);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while applied.lock().unwrap().len() < 5 {
            assert!(tokio::time::Instant::now() < deadline, "{:?}", applied.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let a: Vec<u64> =
            applied.lock().unwrap().iter().filter(|(d, _)| *d == "a").map(|(_, n)| *n).collect();
        assert_eq!(a, [0, 1, 2, 3]);
    }
}
