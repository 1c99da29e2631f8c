//! A machine as a Modbus TCP server: its sensors in holding registers
//! (input registers give the same), each at its own address so that a
//! failed input fails only its own read.
//!
//! Sensor `j` starts at holding register [`BASE`] + [`STRIDE`] × `j`
//! (0-based). A dropped-out sensor answers `ServerDeviceFailure`, as an
//! analog card with a broken wire does; an offline machine closes its
//! connections and stops listening.

use std::future::Ready;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response};

use super::model::{Encoding, Plant, Value};
use super::{Sim, Stats, Stop, now_s, until};

/// First register of sensor 0.
pub const BASE: u16 = 100;
/// Registers between two sensors' first registers (more than the
/// gateway's default merge gap, so each sensor is a read of its own).
pub const STRIDE: u16 = 20;

/// The registers `addr .. addr + count` of machine `machine` at `epoch_s`,
/// or the exception a PLC would answer.
pub fn registers(
    plant: &Plant,
    machine: usize,
    start_s: f64,
    epoch_s: f64,
    addr: u16,
    count: u16,
) -> Result<Vec<u16>, ExceptionCode> {
    if count == 0 || count > 125 {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let end = u32::from(addr) + u32::from(count);
    let sensors = plant.machines[machine].sensors();
    let mut out = Vec::with_capacity(usize::from(count));
    let mut at = u32::from(addr);
    while at < end {
        let j =
            at.checked_sub(u32::from(BASE)).map(|o| (o / u32::from(STRIDE), o % u32::from(STRIDE)));
        let Some((j, offset)) = j else { return Err(ExceptionCode::IllegalDataAddress) };
        let Some(spec) = sensors.get(j as usize) else {
            return Err(ExceptionCode::IllegalDataAddress);
        };
        let words = spec.encoding.registers();
        if offset != 0 || at + u32::from(words) > end {
            // A read that starts or ends inside a value: refused, as a PLC
            // refuses an address outside its data blocks.
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let Some(value) = plant.reading(machine, j as usize, start_s, epoch_s) else {
            return Err(ExceptionCode::ServerDeviceFailure);
        };
        out.extend(encode(spec.encoding, value));
        at += u32::from(words);
    }
    Ok(out)
}

/// A value in its registers.
pub fn encode(encoding: Encoding, value: Value) -> Vec<u16> {
    let x = match value {
        Value::F64(x) => x,
        Value::U32(n) => f64::from(n),
        Value::Bool(b) => f64::from(u8::from(b)),
    };
    match encoding {
        Encoding::F32 | Encoding::F32Swapped => {
            let bits = (x as f32).to_bits();
            let (hi, lo) = ((bits >> 16) as u16, bits as u16);
            if encoding == Encoding::F32 { vec![hi, lo] } else { vec![lo, hi] }
        }
        Encoding::I16Tenths => vec![((x * 10.0).round().clamp(-32768.0, 32767.0) as i16) as u16],
        Encoding::U32 => {
            let n = match value {
                Value::U32(n) => n,
                _ => x.max(0.0) as u32,
            };
            vec![(n >> 16) as u16, n as u16]
        }
        Encoding::Bit => vec![u16::from(x != 0.0)],
    }
}

/// One machine's request handler.
#[derive(Clone)]
struct Machine {
    sim: Arc<Sim>,
    index: usize,
}

impl tokio_modbus::server::Service for Machine {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Response, ExceptionCode>>;

    fn call(&self, req: Request<'static>) -> Self::Future {
        let stats = &self.sim.stats;
        Stats::inc(&stats.modbus_requests);
        let read = |addr, count| {
            registers(&self.sim.plant, self.index, self.sim.start_s, now_s(), addr, count)
        };
        let result = match req {
            Request::ReadHoldingRegisters(addr, count) => {
                read(addr, count).map(Response::ReadHoldingRegisters)
            }
            Request::ReadInputRegisters(addr, count) => {
                read(addr, count).map(Response::ReadInputRegisters)
            }
            _ => Err(ExceptionCode::IllegalFunction),
        };
        if result.is_err() {
            Stats::inc(&stats.modbus_exceptions);
        }
        std::future::ready(result)
    }
}

/// Serves machine `index` on `listener` until `stop`; while a scripted
/// `offline` fault is on, it closes every connection and stops listening,
/// then listens on the same address again.
pub async fn serve(
    sim: Arc<Sim>,
    index: usize,
    listener: TcpListener,
    stop: Stop,
) -> anyhow::Result<()> {
    let name = &sim.plant.machines[index].name;
    let (sim, stop) = (&sim, &stop);
    let what = "connections closed, not listening";
    sim.serve_machine(index, listener, stop, what, move |l, addr| async move {
        let server = Server::new(l);
        let service = Machine { sim: sim.clone(), index };
        let stats_sim = sim.clone();
        let on_connected = move |stream, peer: SocketAddr| {
            let service = service.clone();
            Stats::inc(&stats_sim.stats.modbus_connections);
            std::future::ready(accept_tcp_connection(stream, peer, |_| Ok(Some(service.clone()))))
        };
        let serve_name = name.clone();
        let on_error = move |e: std::io::Error| tracing::debug!(machine = %serve_name, "connection ended: {e}");
        tokio::select! {
            r = server.serve(&on_connected, on_error) => {
                anyhow::bail!("{name}: Modbus server on {addr} stopped: {r:?}");
            }
            () = until(|| !sim.online(index)) => Ok(true),
            () = stop.wait() => Ok(false),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::model::{Fault, FaultKind};
    use crate::sim::scenario::Scenario;

    const T0: f64 = 1.8e9;

    #[test]
    fn encodings_round_trip() {
        let f = encode(Encoding::F32, Value::F64(1.5));
        assert_eq!(f32::from_bits((u32::from(f[0]) << 16) | u32::from(f[1])), 1.5);
        let s = encode(Encoding::F32Swapped, Value::F64(1.5));
        assert_eq!(s, vec![f[1], f[0]]);
        assert_eq!(encode(Encoding::I16Tenths, Value::F64(-3.26)), vec![(-33i16) as u16]);
        assert_eq!(encode(Encoding::U32, Value::U32(70_000)), vec![1, 4464]);
        assert_eq!(encode(Encoding::Bit, Value::Bool(true)), vec![1]);
    }

    #[test]
    fn reads_cover_whole_values_only() {
        let s = Scenario::default_plant();
        let p = &s.plant;
        assert_eq!(registers(p, 0, T0, T0, BASE, 2).map(|r| r.len()), Ok(2));
        assert_eq!(registers(p, 0, T0, T0, BASE + 3 * STRIDE, 2).map(|r| r.len()), Ok(2));
        for (addr, count) in [
            (BASE, 1),
            (BASE + 1, 1),
            (BASE, 3),
            (0, 1),
            (BASE + 4 * STRIDE, 1),
            (BASE, 0),
            (BASE, 126),
            (u16::MAX, 125),
        ] {
            assert!(registers(p, 0, T0, T0, addr, count).is_err(), "{addr} {count}");
        }
    }

    #[test]
    fn a_dropped_out_sensor_fails_only_its_own_read() {
        let mut s = Scenario::default_plant();
        s.plant.faults = vec![Fault {
            machine: 0,
            sensor: Some(1),
            kind: FaultKind::Dropout,
            at_s: 0.0,
            duration_s: 9.0,
            every_s: None,
        }];
        let p = &s.plant;
        assert_eq!(
            registers(p, 0, T0, T0 + 1.0, BASE + STRIDE, 2),
            Err(ExceptionCode::ServerDeviceFailure)
        );
        assert!(registers(p, 0, T0, T0 + 1.0, BASE, 2).is_ok());
        assert!(registers(p, 0, T0, T0 + 10.0, BASE + STRIDE, 2).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn no_request_panics(machine in 0usize..30, addr: u16, count: u16, t in 0.0f64..1e6) {
            let s = Scenario::default_plant();
            let _ = registers(&s.plant, machine, T0, T0 + t, addr, count);
        }
    }
}
