//! One device's polling, sans-IO: which reads are due, what their answers
//! mean, and what to publish.
//!
//! ```text
//!  driver ──start_poll(now)──────►┌─────────┐──poll_output()──► readings (by exception), reachable /
//!  driver ──handle(req, result)──►│ Session │                   unreachable, tag errors, re-plans
//!  driver ──connection_lost()────►└─────────┘──next_poll()────► when to call start_poll
//! ```
//!
//! - Poll groups run at their own intervals; a group still due when its
//!   next turn comes has overrun: the missed turns are counted
//!   ([`Session::overruns`]), not queued up.
//! - A good answer makes the device reachable again; values that changed
//!   beyond their deadband (or changed quality) are published.
//! - An exception answer makes the read's tags `Bad` (with the reason in a
//!   [`Output::TagError`]); `IllegalDataAddress` first re-plans the span
//!   (see [`Learned`]).
//! - An unanswered read makes its tags `Bad`; [`UNREACHABLE_AFTER`] in a
//!   row, or a connection that cannot be made, make the device unreachable:
//!   every last value is published again as `Stale`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use shopfloor_schemas::{Batch, Quality, Reading, Timestamp, Value};

use crate::codec::{Data, DecodeError};
use crate::config::{Deadband, Device};
use crate::plan::{Learned, Plan, Refusal, Request, decode_response, plan};

/// The clocks, read once per driver turn: monotonic for the schedule, UTC
/// ms for readings (the one clock type every sans-IO core takes).
pub use shopfloor_schemas::Now;

/// Reads lost in a row (timeouts, broken answers) after which a device that
/// answered before counts as unreachable. Fewer make only their reads' tags
/// bad: one lost frame does not make a whole device stale (nor, over
/// Sparkplug, cost a DDEATH and a DBIRTH).
pub const UNREACHABLE_AFTER: u32 = 3;

/// The modbus exception code for an address the device does not map.
pub const ILLEGAL_DATA_ADDRESS: u8 = 2;

/// How a read ended.
#[derive(Clone, Copy, Debug)]
pub enum ReadResult<'a> {
    /// The registers or bits.
    Data(Data<'a>),
    /// A Modbus exception response (1 illegal function, 2 illegal data
    /// address, 3 illegal data value, 4 device failure, 6 busy, …).
    Exception(u8),
    /// No answer in time, or the connection failed: the driver reconnects.
    Lost(&'a str),
}

/// What a session tells its driver and application.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Readings to publish; `source` is the device name.
    Readings(Batch),
    /// The device answers (first time, or again after being unreachable).
    Reachable,
    /// The device stopped answering; its last values follow as stale.
    Unreachable {
        /// Why.
        reason: String,
    },
    /// A tag could not be read (its reading, if any, is `Bad`).
    TagError {
        /// The tag.
        tag: String,
        /// Why, for the log.
        reason: String,
    },
    /// A poll group's turns were missed: it was still busy, or the line
    /// was (a slow device, a reconnect). They are skipped, not caught up.
    Overrun {
        /// The poll group.
        group: String,
        /// Turns missed this time.
        missed: u64,
    },
    /// The device refused a merged read; the plan changed.
    Replanned {
        /// Reads per poll of every group now.
        reads: usize,
    },
}

/// Names of Modbus exception codes, for messages.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        10 => "gateway path unavailable",
        11 => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}

/// One device's polling state. See the module documentation.
#[derive(Debug)]
pub struct Session {
    device: Device,
    groups: BTreeMap<String, Duration>,
    learned: Learned,
    plan: Plan,
    next_due: Vec<Instant>,
    reachable: Option<bool>,
    /// Reads lost in a row (no answer, or a broken answer).
    lost: u32,
    /// Per tag: the last value and quality published.
    last: Vec<Option<(Value, Quality)>>,
    out: VecDeque<Output>,
    overruns: u64,
}

impl Session {
    /// A session whose groups are all due at `now`.
    pub fn new(device: Device, groups: &BTreeMap<String, Duration>, now: Now) -> Self {
        let learned = Learned::new();
        let plan = plan(&device, groups, &learned);
        let next_due = vec![now.instant; plan.groups.len()];
        let last = vec![None; device.tags.len()];
        Self {
            device,
            groups: groups.clone(),
            learned,
            plan,
            next_due,
            reachable: None,
            lost: 0,
            last,
            out: VecDeque::new(),
            overruns: 0,
        }
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The current plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether the device answered last time (`None` before the first try).
    pub fn is_reachable(&self) -> Option<bool> {
        self.reachable
    }

    /// Poll turns missed because the previous one was still running.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// When the next group is due.
    pub fn next_poll(&self) -> Option<Instant> {
        self.next_due.iter().copied().min()
    }

    /// The reads of the group due first, if one is due at `now`; its next
    /// turn is scheduled, and turns already missed are counted as overruns.
    pub fn start_poll(&mut self, now: Now) -> Option<Vec<Request>> {
        let now = now.instant;
        let (g, due) = self.next_due.iter().copied().enumerate().min_by_key(|&(_, d)| d)?;
        if due > now {
            return None;
        }
        let every = self.plan.groups[g].1;
        let mut next = due + every;
        let mut missed = 0;
        while next <= now {
            next += every;
            missed += 1;
        }
        if missed > 0 {
            self.overruns += missed;
            self.out.push_back(Output::Overrun { group: self.plan.groups[g].0.clone(), missed });
        }
        self.next_due[g] = next;
        Some(self.plan.groups[g].2.clone())
    }

    /// The answer to one read of the current poll.
    pub fn handle(&mut self, req: &Request, result: ReadResult<'_>, now: Now) {
        match result {
            ReadResult::Data(data) => {
                self.set_reachable();
                let values = decode_response(&self.device, req, data);
                let mut batch = Batch::new(self.device.name.as_str());
                for (t, value) in values {
                    match value {
                        Ok(v) => self.update(&mut batch, t, v, Quality::Good, now),
                        Err(e) => self.tag_error(&mut batch, t, &decode_reason(&e), now),
                    }
                }
                self.push_batch(batch);
            }
            ReadResult::Exception(code) => {
                self.set_reachable();
                if code == ILLEGAL_DATA_ADDRESS {
                    match self.learned.refused(req, &self.device.tags) {
                        Refusal::Replan(_) => {
                            self.replan(now);
                            return;
                        }
                        Refusal::BadTag(_) => {}
                    }
                }
                let reason = format!("exception {code} ({})", exception_name(code));
                let mut batch = Batch::new(self.device.name.as_str());
                for &t in &req.tags {
                    self.tag_error(&mut batch, t, &reason, now);
                }
                self.push_batch(batch);
            }
            ReadResult::Lost(reason) => {
                self.lost += 1;
                if self.lost >= UNREACHABLE_AFTER || self.reachable != Some(true) {
                    self.connection_lost(reason, now);
                } else {
                    // One unanswered read is that read's failure, not yet
                    // the device's: its tags are bad, the rest stays good.
                    let mut batch = Batch::new(self.device.name.as_str());
                    for &t in &req.tags {
                        self.tag_error(&mut batch, t, reason, now);
                    }
                    self.push_batch(batch);
                }
            }
        }
    }

    /// The connection failed (or was never made): unreachable, values stale.
    pub fn connection_lost(&mut self, reason: &str, now: Now) {
        if self.reachable == Some(false) {
            return;
        }
        self.reachable = Some(false);
        self.out.push_back(Output::Unreachable { reason: reason.to_owned() });
        let mut batch = Batch::new(self.device.name.as_str());
        for t in 0..self.last.len() {
            if let Some((v, _)) = self.last[t].clone() {
                self.update(&mut batch, t, v, Quality::Stale, now);
            }
        }
        self.push_batch(batch);
    }

    /// A value written to a tag and read back: published like a poll's.
    pub fn written(&mut self, tag: usize, value: Value, now: Now) {
        let mut batch = Batch::new(self.device.name.as_str());
        self.update(&mut batch, tag, value, Quality::Good, now);
        self.push_batch(batch);
    }

    /// The next output.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn replan(&mut self, now: Now) {
        self.plan = plan(&self.device, &self.groups, &self.learned);
        // Read again at once what the refused read was for.
        self.next_due = vec![now.instant; self.plan.groups.len()];
        self.out.push_back(Output::Replanned { reads: self.plan.requests() });
    }

    fn set_reachable(&mut self) {
        self.lost = 0;
        if self.reachable != Some(true) {
            self.reachable = Some(true);
            self.out.push_back(Output::Reachable);
        }
    }

    fn tag_error(&mut self, batch: &mut Batch, t: usize, reason: &str, now: Now) {
        self.out.push_back(Output::TagError {
            tag: self.device.tags[t].name.clone(),
            reason: reason.to_owned(),
        });
        if let Some((v, _)) = self.last[t].clone() {
            self.update(batch, t, v, Quality::Bad, now);
        }
    }

    /// Adds the reading if it is news: first value, another quality, or a
    /// change beyond the deadband.
    fn update(&mut self, batch: &mut Batch, t: usize, value: Value, quality: Quality, now: Now) {
        let tag = &self.device.tags[t];
        let news = match &self.last[t] {
            None => true,
            Some((last, q)) => *q != quality || changed(tag.deadband, last, &value),
        };
        if news {
            batch.readings.push(
                Reading::new(
                    tag.name.as_str(),
                    Timestamp::from_unix_ms(now.unix_ms),
                    value.clone(),
                )
                .with_quality(quality),
            );
            self.last[t] = Some((value, quality));
        }
    }

    fn push_batch(&mut self, batch: Batch) {
        if !batch.readings.is_empty() {
            self.out.push_back(Output::Readings(batch));
        }
    }
}

fn decode_reason(e: &DecodeError) -> String {
    e.to_string()
}

fn changed(deadband: Deadband, last: &Value, value: &Value) -> bool {
    let num = |v: &Value| match *v {
        Value::I64(x) => Some(x as f64),
        Value::U64(x) => Some(x as f64),
        Value::F64(x) => Some(x),
        _ => None,
    };
    match (num(last), num(value), deadband) {
        // To or from NaN is a change; NaN to NaN is not.
        (Some(a), Some(b), _) if a.is_nan() || b.is_nan() => a.to_bits() != b.to_bits(),
        (Some(a), Some(b), Deadband::Absolute(d)) => (b - a).abs() > d,
        (Some(a), Some(b), Deadband::Percent(p)) => (b - a).abs() > a.abs() * p / 100.0,
        _ => last != value,
    }
}
