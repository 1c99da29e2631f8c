//! The tokio shell around [`Session`]s: one task per connection (a TCP
//! endpoint, or a serial line with its devices polled in turn), with a
//! timeout on every request and reconnects with a jittered, capped backoff.
//!
//! tokio-modbus has no timeout, and a context that timed out is poisoned: a
//! late answer is taken for the next request's (over TCP a header
//! mismatch, over RTU wrong data). So after any timeout, transport error or
//! answer of the wrong size the context is dropped and the connection
//! opened again. Over RTU, where an answer carries no transaction id, the
//! line first waits twice the time it waited for the answer (and the input
//! buffer is cleared on reopening); that device's wait then stays doubled,
//! up to 10 s, shrinking by a tenth with each answer in time, so that a
//! device slower than its configured timeout is waited for rather than
//! misread.
//! Requests go through `Client::call`, so a
//! device's malformed answer is an error here, never a panic in
//! tokio-modbus' debug assertions.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use shopfloor_schemas::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_modbus::client::{Client, Context};
use tokio_modbus::slave::{Slave, SlaveContext};
use tokio_modbus::{Request as MbRequest, Response as MbResponse};

use crate::codec::{self, Data, Write, WriteError};
use crate::config::{Area, Device, Parity, RegisterMap, Transport};
use crate::plan::Request;
use crate::session::{Now, Output, ReadResult, Session, exception_name};

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteFailure {
    /// No device of that name.
    #[error("no device {0:?} in the register map")]
    UnknownDevice(String),
    /// No tag of that name on the device.
    #[error("device {device:?} has no tag {tag:?}")]
    UnknownTag {
        /// The device.
        device: String,
        /// The tag.
        tag: String,
    },
    /// The map or the value does not allow it.
    #[error(transparent)]
    Refused(#[from] WriteError),
    /// The device answered with an exception.
    #[error("device {device:?} refused the write: exception {code} ({})", exception_name(*code))]
    Exception {
        /// The device.
        device: String,
        /// The exception code.
        code: u8,
    },
    /// No connection, or no answer in time.
    #[error("device {device:?} is unreachable: {reason}")]
    Unreachable {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
    /// The poller stopped.
    #[error("the Modbus poller has stopped")]
    Stopped,
}

impl WriteFailure {
    /// The status a [`WriteResult`](shopfloor_schemas::WriteResult) carries:
    /// the exception's name in CamelCase (`IllegalDataAddress`),
    /// `Unreachable`, or `Refused` when nothing was sent.
    pub fn status(&self) -> String {
        match self {
            Self::Exception { code, .. } => exception_name(*code)
                .split(' ')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect(),
            Self::Unreachable { .. } => "Unreachable".into(),
            _ => shopfloor_schemas::WriteResult::REFUSED.into(),
        }
    }
}

struct WriteRequest {
    device: usize,
    tag: usize,
    value: Value,
    reply: oneshot::Sender<Result<Value, WriteFailure>>,
}

/// Polls every device of a register map. Drop it (or call
/// [`shutdown`](Self::shutdown)) to stop.
#[derive(Debug)]
pub struct Poller {
    outputs: mpsc::Receiver<(String, Output)>,
    writer: Writer,
    tasks: Vec<JoinHandle<()>>,
}

/// Device name → (its line's write queue, its index on the line, tag names).
type Devices = BTreeMap<String, (mpsc::Sender<WriteRequest>, usize, Vec<String>)>;

/// Writes tags through a [`Poller`]'s connections; cheap to clone, so that
/// a write can wait in a task of its own while the poller's outputs are read.
#[derive(Clone, Debug)]
pub struct Writer {
    devices: Arc<Devices>,
}

impl Writer {
    /// Writes `value` (engineering units) to a tag, reads it back and
    /// returns what the device holds now (also published as a reading).
    pub async fn write(
        &self,
        device: &str,
        tag: &str,
        value: Value,
    ) -> Result<Value, WriteFailure> {
        let (queue, index, tags) = self
            .devices
            .get(device)
            .ok_or_else(|| WriteFailure::UnknownDevice(device.to_owned()))?;
        let tag = tags.iter().position(|t| t == tag).ok_or_else(|| WriteFailure::UnknownTag {
            device: device.to_owned(),
            tag: tag.to_owned(),
        })?;
        let (reply, answer) = oneshot::channel();
        queue
            .send(WriteRequest { device: *index, tag, value, reply })
            .await
            .map_err(|_| WriteFailure::Stopped)?;
        answer.await.map_err(|_| WriteFailure::Stopped)?
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A connection several devices may share.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Endpoint {
    Tcp(String, u16),
    /// RTU frames over TCP (a serial-to-Ethernet converter).
    RtuTcp(String, u16),
    Serial(std::path::PathBuf),
}

impl Poller {
    /// Starts polling on the current tokio runtime. Outputs queue up to
    /// `queue` entries; beyond that the line waits (the application must
    /// read [`next`](Self::next)).
    pub fn spawn(map: &RegisterMap, queue: usize) -> Self {
        let (tx, outputs) = mpsc::channel(queue.max(1));
        let mut lines: BTreeMap<Endpoint, Vec<Device>> = BTreeMap::new();
        for d in &map.devices {
            let endpoint = match &d.transport {
                Transport::Tcp { host, port } => Endpoint::Tcp(host.clone(), *port),
                Transport::RtuOverTcp { host, port } => Endpoint::RtuTcp(host.clone(), *port),
                Transport::Rtu { path, .. } => Endpoint::Serial(path.clone()),
            };
            lines.entry(endpoint).or_default().push(d.clone());
        }
        let mut devices = BTreeMap::new();
        let mut tasks = Vec::new();
        for (endpoint, line) in lines {
            let (wtx, wrx) = mpsc::channel(16);
            for (i, d) in line.iter().enumerate() {
                let tags = d.tags.iter().map(|t| t.name.clone()).collect();
                devices.insert(d.name.clone(), (wtx.clone(), i, tags));
            }
            let now = Now::now();
            let sessions = line.into_iter().map(|d| Session::new(d, &map.groups, now)).collect();
            tasks.push(tokio::spawn(run_line(endpoint, sessions, tx.clone(), wrx)));
        }
        Self { outputs, writer: Writer { devices: Arc::new(devices) }, tasks }
    }

    /// The next output of any device, with the device's name.
    pub async fn next(&mut self) -> Option<(String, Output)> {
        self.outputs.recv().await
    }

    /// A handle for writes ([`Writer::write`]), also from other tasks.
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Stops every line.
    pub async fn shutdown(mut self) {
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
    }
}

/// The longest a serial line waits for one answer after late ones.
const MAX_SERIAL_WAIT: Duration = Duration::from_secs(10);

/// The delay before reconnect attempt `failures` (1, 2, …): doubling from
/// 100 ms to 10 s, ±25 % jitter.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(100).saturating_mul(1 << failures.saturating_sub(1).min(7));
    let base = base.min(Duration::from_secs(10));
    // A per-process random hash of the attempt: `subsec_nanos() % 1000` was
    // always 0 on a microsecond clock, and every poller waited the same.
    use std::hash::BuildHasher as _;
    let r = std::collections::hash_map::RandomState::new().hash_one(failures);
    base.mul_f64(0.75 + (r >> 11) as f64 / (1_u64 << 53) as f64 * 0.5)
}

async fn connect(endpoint: &Endpoint, device: &Device) -> Result<Context, String> {
    match endpoint {
        Endpoint::Tcp(host, port) | Endpoint::RtuTcp(host, port) => {
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {host}:{port}: {e}"))?
                .next()
                .ok_or_else(|| format!("{host}:{port} resolves to no address"))?;
            match tokio::time::timeout(device.timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    Ok(match endpoint {
                        Endpoint::RtuTcp(..) => tokio_modbus::client::rtu::attach(stream),
                        _ => tokio_modbus::client::tcp::attach(stream),
                    })
                }
                Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e}")),
                Err(_) => Err(format!(
                    "no TCP connection to {addr} within {} ms",
                    device.timeout.as_millis()
                )),
            }
        }
        Endpoint::Serial(path) => {
            let Transport::Rtu { baud, parity, data_bits, stop_bits, .. } = &device.transport
            else {
                return Err("a serial line for a TCP device".into());
            };
            use tokio_serial::{DataBits, SerialPort, SerialPortBuilderExt, StopBits};
            let builder = tokio_serial::new(path.to_string_lossy(), *baud)
                .parity(match parity {
                    Parity::None => tokio_serial::Parity::None,
                    Parity::Even => tokio_serial::Parity::Even,
                    Parity::Odd => tokio_serial::Parity::Odd,
                })
                .data_bits(match data_bits {
                    5 => DataBits::Five,
                    6 => DataBits::Six,
                    7 => DataBits::Seven,
                    _ => DataBits::Eight,
                })
                .stop_bits(if *stop_bits == 2 { StopBits::Two } else { StopBits::One });
            let port = builder
                .open_native_async()
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            // Whatever a device sent after the last timeout is not an answer.
            let _ = port.clear(tokio_serial::ClearBuffer::Input);
            Ok(tokio_modbus::client::rtu::attach(port))
        }
    }
}

/// The answer to one request, in the session's terms.
enum Answer {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
    Exception(u8),
    Lost(String),
}

/// `wait`: how long to wait for the answer (the device's timeout, or
/// longer on a serial line that answered late).
async fn read(ctx: &mut Context, device: &Device, r: &Request, wait: Duration) -> Answer {
    ctx.set_slave(Slave(device.unit));
    let request = match r.area {
        Area::Coil => MbRequest::ReadCoils(r.start, r.count),
        Area::DiscreteInput => MbRequest::ReadDiscreteInputs(r.start, r.count),
        Area::HoldingRegister => MbRequest::ReadHoldingRegisters(r.start, r.count),
        Area::InputRegister => MbRequest::ReadInputRegisters(r.start, r.count),
    };
    let count = usize::from(r.count);
    match tokio::time::timeout(wait, ctx.call(request)).await {
        Err(_) => Answer::Lost(format!("no answer within {} ms", wait.as_millis())),
        // The errno of a transport error after a peer's death is stale
        // and misleading (tokio-modbus): say what happened, not why.
        Ok(Err(e)) => Answer::Lost(format!("connection failed ({e})")),
        Ok(Ok(Err(exception))) => Answer::Exception(u8::from(exception)),
        Ok(Ok(Ok(response))) => match response {
            MbResponse::ReadCoils(mut bits) | MbResponse::ReadDiscreteInputs(mut bits)
                if bits.len() >= count =>
            {
                bits.truncate(count);
                Answer::Bits(bits)
            }
            MbResponse::ReadHoldingRegisters(words) | MbResponse::ReadInputRegisters(words)
                if words.len() == count =>
            {
                Answer::Registers(words)
            }
            other => Answer::Lost(format!("an answer that does not fit the request ({other:?})")),
        },
    }
}

async fn write(
    ctx: &mut Context,
    device: &Device,
    address: u16,
    w: &Write,
) -> Result<(), WriteFailure> {
    ctx.set_slave(Slave(device.unit));
    let request = match w {
        Write::Coil(on) => MbRequest::WriteSingleCoil(address, *on),
        Write::Registers(regs) if regs.len() == 1 => {
            MbRequest::WriteSingleRegister(address, regs[0])
        }
        Write::Registers(regs) => MbRequest::WriteMultipleRegisters(address, Cow::Borrowed(regs)),
        Write::Mask { and, or } => MbRequest::MaskWriteRegister(address, *and, *or),
    };
    let lost = |reason: String| WriteFailure::Unreachable { device: device.name.clone(), reason };
    match tokio::time::timeout(device.timeout, ctx.call(request)).await {
        Err(_) => Err(lost(format!("no answer within {} ms", device.timeout.as_millis()))),
        Ok(Err(e)) => Err(lost(format!("connection failed ({e})"))),
        Ok(Ok(Err(exception))) => {
            Err(WriteFailure::Exception { device: device.name.clone(), code: u8::from(exception) })
        }
        Ok(Ok(Ok(_))) => Ok(()),
    }
}

async fn flush(sessions: &mut [Session], outputs: &mpsc::Sender<(String, Output)>) -> bool {
    for s in sessions.iter_mut() {
        while let Some(o) = s.poll_output() {
            match &o {
                Output::Unreachable { reason } => {
                    tracing::warn!(device = %s.device().name, "unreachable: {reason}")
                }
                Output::Reachable => tracing::info!(device = %s.device().name, "reachable"),
                Output::TagError { tag, reason } => {
                    tracing::warn!(device = %s.device().name, tag, "{reason}")
                }
                Output::Replanned { reads } => {
                    tracing::info!(device = %s.device().name, reads, "re-planned after a refused read")
                }
                Output::Overrun { group, missed } => {
                    tracing::warn!(device = %s.device().name, group, missed, "poll turns missed (overrun)")
                }
                Output::Readings(_) => {}
            }
            if outputs.send((s.device().name.clone(), o)).await.is_err() {
                return false;
            }
        }
    }
    true
}

async fn run_line(
    endpoint: Endpoint,
    mut sessions: Vec<Session>,
    outputs: mpsc::Sender<(String, Output)>,
    mut writes: mpsc::Receiver<WriteRequest>,
) {
    let serial = matches!(endpoint, Endpoint::Serial(_));
    // Per device on a serial line: a longer wait after late answers.
    let mut slow: Vec<Option<Duration>> = vec![None; sessions.len()];
    let mut ctx: Option<Context> = None;
    let mut failures = 0;
    let mut retry_at = Instant::now();
    loop {
        if ctx.is_none() && Instant::now() >= retry_at {
            match connect(&endpoint, sessions[0].device()).await {
                Ok(c) => {
                    ctx = Some(c);
                    failures = 0;
                }
                Err(reason) => {
                    failures += 1;
                    retry_at = Instant::now() + backoff(failures);
                    let now = Now::now();
                    for s in &mut sessions {
                        s.connection_lost(&reason, now);
                    }
                }
            }
            if !flush(&mut sessions, &outputs).await {
                return;
            }
        }
        let mut next = sessions.iter().filter_map(Session::next_poll).min().map(Instant::from_std);
        if ctx.is_none() {
            next = Some(next.map_or(retry_at, |n| n.max(retry_at)));
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {
                if ctx.is_none() {
                    // Connect first (at the top of the loop): a poll due
                    // while the line waits to reconnect is not a failure.
                    continue;
                }
                for (i, s) in sessions.iter_mut().enumerate() {
                    let Some(reqs) = s.start_poll(Now::now()) else { continue };
                    for (n, r) in reqs.into_iter().enumerate() {
                        let Some(c) = ctx.as_mut() else {
                            s.connection_lost("not connected", Now::now());
                            break;
                        };
                        let pause = s.device().pause;
                        if n > 0 && !pause.is_zero() {
                            tokio::time::sleep(pause).await;
                        }
                        let wait = slow[i].unwrap_or_else(|| s.device().timeout);
                        let answer = read(c, s.device(), &r, wait).await;
                        let now = Now::now();
                        if !matches!(answer, Answer::Lost(_)) {
                            // Answers in time again: the extra wait shrinks back,
                            // slowly, so a device that is always slow is not
                            // timed out every other read.
                            slow[i] = slow[i].map(|d| d.mul_f64(0.9)).filter(|d| *d > s.device().timeout);
                        }
                        match answer {
                            Answer::Registers(v) => s.handle(&r, ReadResult::Data(Data::Registers(&v)), now),
                            Answer::Bits(v) => s.handle(&r, ReadResult::Data(Data::Bits(&v)), now),
                            Answer::Exception(code) => s.handle(&r, ReadResult::Exception(code), now),
                            Answer::Lost(reason) => {
                                s.handle(&r, ReadResult::Lost(&reason), now);
                                // A late answer must never be taken for the
                                // next request's: a new connection.
                                ctx = None;
                                // Over RTU a late answer has no transaction id
                                // to tell it from the next one's: wait it out
                                // (the port's input is cleared on reopening),
                                // and wait twice as long next time, so that
                                // a device slower than its timeout is caught
                                // up with rather than misread.
                                let wait = if serial {
                                    let longer = (wait * 2).min(MAX_SERIAL_WAIT);
                                    slow[i] = Some(longer);
                                    longer
                                } else {
                                    Duration::ZERO
                                };
                                retry_at = Instant::now() + wait;
                                break;
                            }
                        }
                    }
                }
                if !flush(&mut sessions, &outputs).await {
                    return;
                }
            }
            w = writes.recv() => {
                let Some(w) = w else { return };
                let result = match ctx.as_mut() {
                    None => Err(WriteFailure::Unreachable {
                        device: sessions[w.device].device().name.clone(),
                        reason: "not connected".into(),
                    }),
                    Some(c) => {
                        let outcome = write_and_read_back(c, &mut sessions[w.device], w.tag, &w.value).await;
                        if matches!(outcome, Err(WriteFailure::Unreachable { .. })) {
                            ctx = None;
                            retry_at = Instant::now() + if serial { sessions[w.device].device().timeout } else { Duration::ZERO };
                        }
                        outcome
                    }
                };
                let _ = w.reply.send(result);
                if !flush(&mut sessions, &outputs).await {
                    return;
                }
            }
        }
    }
}

async fn write_and_read_back(
    ctx: &mut Context,
    session: &mut Session,
    tag: usize,
    value: &Value,
) -> Result<Value, WriteFailure> {
    let device = session.device().clone();
    let t = &device.tags[tag];
    let w = codec::encode(t, value)?;
    write(ctx, &device, t.address, &w).await?;
    let req = Request { area: t.area, start: t.address, count: t.kind.width(), tags: vec![tag] };
    let lost = |reason: String| WriteFailure::Unreachable { device: device.name.clone(), reason };
    let data = match read(ctx, &device, &req, device.timeout).await {
        Answer::Registers(v) => codec::decode(t, Data::Registers(&v)),
        Answer::Bits(v) => codec::decode(t, Data::Bits(&v)),
        Answer::Exception(code) => {
            return Err(WriteFailure::Exception { device: device.name.clone(), code });
        }
        Answer::Lost(reason) => {
            return Err(lost(format!("written, but the read-back failed: {reason}")));
        }
    };
    let v = data.map_err(|e| lost(format!("written, but the read-back does not decode: {e}")))?;
    session.written(tag, v.clone(), Now::now());
    Ok(v)
}
