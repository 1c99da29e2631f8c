//! The plant, without any I/O: which machines and sensors exist, what each
//! sensor reads at a given time, and which scripted faults change that.
//!
//! Everything is a pure function of the scenario and the time, so a value
//! served over Modbus and the same value served over OPC UA agree, a
//! restart carries on where it left off, and tests can ask for any moment.

use std::fmt;

/// How a machine is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A Modbus TCP server of its own (a PLC).
    Modbus,
    /// An OPC UA server of its own (a PLC with an embedded server).
    Opcua,
}

/// The kinds of machine the simulator knows, each with four sensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineKind {
    /// A hydraulic press: pressure and oil temperature follow the stroke.
    Press,
    /// A CNC machining centre: spindle temperature, vibration, state.
    Cnc,
    /// A paint-shop curing oven: zone temperature, burner gas pressure.
    Oven,
}

impl MachineKind {
    /// Its name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Press => "press",
            Self::Cnc => "cnc",
            Self::Oven => "oven",
        }
    }

    /// From its name in scenario files.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "press" => Self::Press,
            "cnc" => Self::Cnc,
            "oven" => Self::Oven,
            _ => return None,
        })
    }

    /// Its sensors.
    pub fn sensors(self) -> &'static [SensorSpec] {
        match self {
            Self::Press => &PRESS,
            Self::Cnc => &CNC,
            Self::Oven => &OVEN,
        }
    }
}

/// How a sensor's value moves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// base + a cycle + a slow drift + a per-shift offset + noise.
    Analog {
        /// The mean.
        base: f64,
        /// Amplitude of the cycle.
        cycle: f64,
        /// Its period, s.
        period_s: f64,
        /// Amplitude of the slow drift (period 30 min).
        drift: f64,
        /// Offset per shift: morning +0, late +shift, night −shift.
        shift: f64,
        /// Noise amplitude (uniform ± this, changing at 10 Hz).
        noise: f64,
    },
    /// Counts up at this many per second (parts, strokes).
    Counter {
        /// Counts per second.
        per_s: f64,
    },
    /// On for `on_s`, off for `off_s`, repeating (a spindle, a conveyor).
    State {
        /// Seconds on.
        on_s: f64,
        /// Seconds off.
        off_s: f64,
    },
}

/// How a sensor is laid out in Modbus holding registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// IEEE-754 single in two registers, high word first (`ABCD`).
    F32,
    /// IEEE-754 single, low word first (`CDAB`, as many PLCs send floats).
    F32Swapped,
    /// Signed 16-bit, engineering value × 10.
    I16Tenths,
    /// Unsigned 32-bit, high word first.
    U32,
    /// Bit 0 of one register.
    Bit,
}

impl Encoding {
    /// Registers it takes.
    pub fn registers(self) -> u16 {
        match self {
            Self::F32 | Self::F32Swapped | Self::U32 => 2,
            Self::I16Tenths | Self::Bit => 1,
        }
    }
}

/// Alarm limits a plant engineer would set (the simulator writes them as
/// alerting rules, and its faults go past them).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// High alarm.
    pub h: f64,
    /// High-high alarm.
    pub hh: f64,
    /// The instrument's calibrated range.
    pub range: (f64, f64),
}

/// One sensor of a machine kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SensorSpec {
    /// The metric name (`Group/Name`).
    pub metric: &'static str,
    /// Engineering unit.
    pub unit: &'static str,
    /// How its value moves.
    pub signal: Signal,
    /// How it sits in Modbus registers.
    pub encoding: Encoding,
    /// Alarm limits, for analog values.
    pub limits: Option<Limits>,
}

const fn analog(
    metric: &'static str,
    unit: &'static str,
    (base, cycle, period_s): (f64, f64, f64),
    (drift, shift, noise): (f64, f64, f64),
    encoding: Encoding,
    (h, hh, lo, hi): (f64, f64, f64, f64),
) -> SensorSpec {
    SensorSpec {
        metric,
        unit,
        signal: Signal::Analog { base, cycle, period_s, drift, shift, noise },
        encoding,
        limits: Some(Limits { h, hh, range: (lo, hi) }),
    }
}

const fn counter(metric: &'static str, per_s: f64) -> SensorSpec {
    SensorSpec {
        metric,
        unit: "",
        signal: Signal::Counter { per_s },
        encoding: Encoding::U32,
        limits: None,
    }
}

const fn state(metric: &'static str, on_s: f64, off_s: f64) -> SensorSpec {
    SensorSpec {
        metric,
        unit: "",
        signal: Signal::State { on_s, off_s },
        encoding: Encoding::Bit,
        limits: None,
    }
}

const PRESS: [SensorSpec; 4] = [
    analog(
        "Hydraulics/Pressure",
        "bar",
        (180.0, 25.0, 12.0),
        (4.0, 3.0, 1.5),
        Encoding::F32Swapped,
        (230.0, 250.0, 0.0, 400.0),
    ),
    analog(
        "Hydraulics/Temperature",
        "degC",
        (45.0, 1.0, 12.0),
        (4.0, 1.5, 0.3),
        Encoding::F32Swapped,
        (65.0, 75.0, -20.0, 150.0),
    ),
    analog(
        "Motor/Current",
        "A",
        (32.0, 4.0, 12.0),
        (1.0, 1.0, 0.8),
        Encoding::F32Swapped,
        (55.0, 60.0, 0.0, 100.0),
    ),
    counter("Strokes/Count", 1.0 / 12.0),
];

const CNC: [SensorSpec; 4] = [
    analog(
        "Spindle/Temperature",
        "degC",
        (38.0, 2.0, 60.0),
        (3.0, 1.0, 0.2),
        Encoding::I16Tenths,
        (60.0, 70.0, -20.0, 150.0),
    ),
    analog(
        "Spindle/Vibration",
        "mm/s",
        (2.8, 0.6, 45.0),
        (0.3, 0.1, 0.3),
        Encoding::F32,
        (7.1, 11.0, 0.0, 50.0),
    ),
    state("Spindle/Running", 50.0, 10.0),
    counter("Parts/Count", 1.0 / 60.0),
];

const OVEN: [SensorSpec; 4] = [
    analog(
        "Zone/Temperature",
        "degC",
        (180.0, 4.0, 300.0),
        (3.0, 2.0, 0.5),
        Encoding::F32,
        (200.0, 210.0, 0.0, 400.0),
    ),
    analog(
        "Burner/Pressure",
        "mbar",
        (25.0, 2.0, 60.0),
        (1.0, 0.5, 0.4),
        Encoding::F32,
        (35.0, 40.0, 0.0, 100.0),
    ),
    analog(
        "Fan/Current",
        "A",
        (12.0, 1.0, 120.0),
        (0.5, 0.3, 0.2),
        Encoding::F32,
        (20.0, 25.0, 0.0, 50.0),
    ),
    state("Conveyor/Running", 240.0, 20.0),
];

/// A value as the device holds it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// An analog value.
    F64(f64),
    /// A counter.
    U32(u32),
    /// A state.
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::F64(x) => write!(f, "{x:.2}"),
            Self::U32(n) => write!(f, "{n}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// What a sensor reads: its value, or nothing (a dropped-out sensor, which
/// the device reports as a failure of that input).
pub type Reading = Option<Value>;

/// The scripted faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A temperature climbs past its high-high limit within 2 s and stays.
    OverTemperature,
    /// A pressure jumps past its high-high limit at once.
    PressureSpike,
    /// A sensor keeps its value (a stuck transmitter).
    Frozen,
    /// A sensor reads nothing: the device reports its input failed.
    Dropout,
    /// The whole device stops answering (power, network).
    Offline,
}

impl FaultKind {
    /// Its name in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Self::OverTemperature => "over-temperature",
            Self::PressureSpike => "pressure-spike",
            Self::Frozen => "frozen",
            Self::Dropout => "dropout",
            Self::Offline => "offline",
        }
    }

    /// From its name in scenario files.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "over-temperature" => Self::OverTemperature,
            "pressure-spike" => Self::PressureSpike,
            "frozen" => Self::Frozen,
            "dropout" => Self::Dropout,
            "offline" => Self::Offline,
            _ => return None,
        })
    }

    /// The sensor a fault of this kind hits when the scenario names none.
    pub fn default_sensor(self, kind: MachineKind) -> Option<usize> {
        let sensors = kind.sensors();
        match self {
            Self::OverTemperature => sensors.iter().position(|s| s.unit == "degC"),
            Self::PressureSpike => sensors.iter().position(|s| s.unit == "bar" || s.unit == "mbar"),
            Self::Frozen | Self::Dropout => Some(0),
            Self::Offline => None,
        }
    }
}

/// A fault at a time: from `at_s` after the start for `duration_s`, again
/// every `every_s` if set.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Index of the machine.
    pub machine: usize,
    /// Index of the sensor (none for `Offline`).
    pub sensor: Option<usize>,
    /// What happens.
    pub kind: FaultKind,
    /// Seconds after the simulator started.
    pub at_s: f64,
    /// How long.
    pub duration_s: f64,
    /// Repeat period, if it repeats.
    pub every_s: Option<f64>,
}

impl Fault {
    /// Seconds since this fault's latest start, if it is on at `t` seconds
    /// after the simulator started.
    pub fn active_for(&self, t: f64) -> Option<f64> {
        if t < self.at_s {
            return None;
        }
        let since = match self.every_s {
            Some(every) => (t - self.at_s) % every,
            None => t - self.at_s,
        };
        (since < self.duration_s).then_some(since)
    }

    /// The start (seconds after the simulator started) of the occurrence
    /// that is on, or that comes next, at `t`.
    pub fn start_at_or_after(&self, t: f64) -> Option<f64> {
        if t <= self.at_s {
            return Some(self.at_s);
        }
        match self.every_s {
            Some(every) => {
                let n = ((t - self.at_s) / every).floor();
                let start = self.at_s + n * every;
                Some(if t - start < self.duration_s { start } else { start + every })
            }
            None => (t - self.at_s < self.duration_s).then_some(self.at_s),
        }
    }
}

/// One machine of the plant.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// Its name (`press-01`): the Sparkplug device and batch source.
    pub name: String,
    /// What it is.
    pub kind: MachineKind,
    /// Its area (`press-shop`), for alarm routing and dashboards.
    pub area: String,
    /// How it is served.
    pub protocol: Protocol,
}

impl Machine {
    /// Its sensors.
    pub fn sensors(&self) -> &'static [SensorSpec] {
        self.kind.sensors()
    }
}

/// The whole plant and its scripted faults.
#[derive(Clone, Debug, PartialEq)]
pub struct Plant {
    /// Varies noise and phases between runs of different scenarios.
    pub seed: u64,
    /// The machines.
    pub machines: Vec<Machine>,
    /// The scripted faults.
    pub faults: Vec<Fault>,
}

/// Shift boundaries (UTC hours): 06–14 morning, 14–22 late, 22–06 night.
fn shift_factor(epoch_s: f64) -> f64 {
    let hour = (epoch_s / 3600.0).rem_euclid(24.0);
    if (6.0..14.0).contains(&hour) {
        0.0
    } else if (14.0..22.0).contains(&hour) {
        1.0
    } else {
        -1.0
    }
}

/// A number in [-1, 1) from a few integers: SplitMix64 of their mix.
fn noise(seed: u64, a: u64, b: u64, tick: i64) -> f64 {
    let mut z = seed
        ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (tick as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

impl Plant {
    /// Number of sensors in the plant.
    pub fn sensor_count(&self) -> usize {
        self.machines.iter().map(|m| m.sensors().len()).sum()
    }

    /// What sensor `sensor` of machine `machine` reads at `epoch_s` (Unix
    /// seconds) when the simulator started at `start_s`, faults included.
    pub fn reading(&self, machine: usize, sensor: usize, start_s: f64, epoch_s: f64) -> Reading {
        let t = epoch_s - start_s;
        let spec = &self.machines[machine].sensors()[sensor];
        let mut at = epoch_s;
        let mut fault_value = None;
        for f in self.faults.iter().filter(|f| f.machine == machine && f.sensor == Some(sensor)) {
            let Some(since) = f.active_for(t) else { continue };
            match f.kind {
                FaultKind::Dropout => return None,
                FaultKind::Frozen => at = epoch_s - since,
                FaultKind::OverTemperature | FaultKind::PressureSpike => {
                    let ramp = if f.kind == FaultKind::OverTemperature { 2.0 } else { 0.0 };
                    fault_value = Some((since, ramp));
                }
                FaultKind::Offline => {}
            }
        }
        let normal = self.normal(machine, sensor, at);
        match (fault_value, normal, spec.limits) {
            (Some((since, ramp)), Value::F64(x), Some(l)) => {
                let target = l.hh + (l.hh - l.h);
                let share = if ramp > 0.0 { (since / ramp).min(1.0) } else { 1.0 };
                Some(Value::F64(x + (target - x) * share))
            }
            _ => Some(normal),
        }
    }

    /// Whether a machine answers at `epoch_s`.
    pub fn online(&self, machine: usize, start_s: f64, epoch_s: f64) -> bool {
        let t = epoch_s - start_s;
        !self.faults.iter().any(|f| {
            f.machine == machine && f.kind == FaultKind::Offline && f.active_for(t).is_some()
        })
    }

    /// The value without faults.
    pub fn normal(&self, machine: usize, sensor: usize, epoch_s: f64) -> Value {
        let spec = &self.machines[machine].sensors()[sensor];
        let (m, s) = (machine as u64, sensor as u64);
        // Each machine runs its cycle at its own phase.
        let phase = (noise(self.seed, m, 1000, 0) + 1.0) * 0.5;
        match spec.signal {
            Signal::Analog { base, cycle, period_s, drift, shift, noise: amp } => {
                let tau = std::f64::consts::TAU;
                let c = cycle * (tau * (epoch_s / period_s + phase)).sin();
                let d = drift * (tau * (epoch_s / 1800.0 + phase)).sin();
                let n = amp * noise(self.seed, m, s, (epoch_s * 10.0).floor() as i64);
                Value::F64(base + c + d + shift * shift_factor(epoch_s) + n)
            }
            Signal::Counter { per_s } => {
                Value::U32(((epoch_s - 1.7e9).max(0.0) * per_s) as u64 as u32)
            }
            Signal::State { on_s, off_s } => {
                let period = on_s + off_s;
                Value::Bool((epoch_s + phase * period).rem_euclid(period) < on_s)
            }
        }
    }

    /// The faults active at `epoch_s`, as text for the log and status.
    pub fn active_faults(&self, start_s: f64, epoch_s: f64) -> Vec<String> {
        let t = epoch_s - start_s;
        self.faults.iter().filter(|f| f.active_for(t).is_some()).map(|f| self.describe(f)).collect()
    }

    /// "press-03 Hydraulics/Temperature over-temperature".
    pub fn describe(&self, f: &Fault) -> String {
        let m = &self.machines[f.machine];
        match f.sensor {
            Some(s) => format!("{} {} {}", m.name, m.sensors()[s].metric, f.kind.name()),
            None => format!("{} {}", m.name, f.kind.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plant(faults: Vec<Fault>) -> Plant {
        let m = |name: &str, kind| Machine {
            name: name.into(),
            kind,
            area: "a".into(),
            protocol: Protocol::Modbus,
        };
        Plant {
            seed: 7,
            machines: vec![
                m("press-01", MachineKind::Press),
                m("cnc-01", MachineKind::Cnc),
                m("oven-01", MachineKind::Oven),
            ],
            faults,
        }
    }

    const START: f64 = 1.8e9;

    fn f64_of(r: Reading) -> f64 {
        match r {
            Some(Value::F64(x)) => x,
            other => panic!("not analog: {other:?}"),
        }
    }

    #[test]
    fn every_kind_has_four_sensors_with_distinct_names() {
        for kind in [MachineKind::Press, MachineKind::Cnc, MachineKind::Oven] {
            let s = kind.sensors();
            assert_eq!(s.len(), 4);
            let mut names: Vec<_> = s.iter().map(|s| s.metric).collect();
            names.dedup();
            assert_eq!(names.len(), 4);
            assert_eq!(MachineKind::parse(kind.name()), Some(kind));
        }
    }

    #[test]
    fn over_temperature_ramps_past_hh_in_two_seconds_then_ends() {
        let f = Fault {
            machine: 0,
            sensor: FaultKind::OverTemperature.default_sensor(MachineKind::Press),
            kind: FaultKind::OverTemperature,
            at_s: 10.0,
            duration_s: 5.0,
            every_s: None,
        };
        assert_eq!(f.sensor, Some(1));
        let p = plant(vec![f]);
        let hh = PRESS[1].limits.unwrap().hh;
        assert!(f64_of(p.reading(0, 1, START, START + 9.9)) < 65.0);
        let mid = f64_of(p.reading(0, 1, START, START + 11.0));
        assert!(mid > 50.0 && mid < 90.0, "{mid}");
        assert!(f64_of(p.reading(0, 1, START, START + 12.5)) > hh);
        assert!(f64_of(p.reading(0, 1, START, START + 15.1)) < 65.0);
        // Other sensors are untouched.
        assert_eq!(p.reading(0, 0, START, START + 12.0), Some(p.normal(0, 0, START + 12.0)));
    }

    #[test]
    fn pressure_spike_is_immediate_and_repeats() {
        let f = Fault {
            machine: 2,
            sensor: FaultKind::PressureSpike.default_sensor(MachineKind::Oven),
            kind: FaultKind::PressureSpike,
            at_s: 5.0,
            duration_s: 2.0,
            every_s: Some(60.0),
        };
        assert_eq!(f.sensor, Some(1));
        let p = plant(vec![f.clone()]);
        for t in [5.0, 65.0, 125.5] {
            assert!(f64_of(p.reading(2, 1, START, START + t)) > 40.0, "at {t}");
        }
        assert!(f64_of(p.reading(2, 1, START, START + 67.5)) < 35.0);
        assert_eq!(f.start_at_or_after(0.0), Some(5.0));
        assert_eq!(f.start_at_or_after(6.0), Some(5.0));
        assert_eq!(f.start_at_or_after(7.5), Some(65.0));
    }

    #[test]
    fn frozen_holds_the_value_of_its_start() {
        let f = Fault {
            machine: 0,
            sensor: Some(0),
            kind: FaultKind::Frozen,
            at_s: 3.0,
            duration_s: 30.0,
            every_s: None,
        };
        let p = plant(vec![f]);
        let first = p.reading(0, 0, START, START + 3.0);
        for t in [4.0, 10.0, 32.9] {
            assert_eq!(p.reading(0, 0, START, START + t), first);
        }
        assert_ne!(p.reading(0, 0, START, START + 34.0), first);
    }

    #[test]
    fn dropout_reads_nothing_and_offline_stops_the_machine() {
        let p = plant(vec![
            Fault {
                machine: 1,
                sensor: Some(1),
                kind: FaultKind::Dropout,
                at_s: 0.0,
                duration_s: 10.0,
                every_s: None,
            },
            Fault {
                machine: 2,
                sensor: None,
                kind: FaultKind::Offline,
                at_s: 5.0,
                duration_s: 10.0,
                every_s: None,
            },
        ]);
        assert_eq!(p.reading(1, 1, START, START + 1.0), None);
        assert!(p.reading(1, 0, START, START + 1.0).is_some());
        assert!(p.online(2, START, START + 4.9));
        assert!(!p.online(2, START, START + 5.0));
        assert!(p.online(2, START, START + 15.0));
        assert!(p.online(1, START, START + 6.0));
        assert_eq!(p.active_faults(START, START + 6.0).len(), 2);
        assert_eq!(p.active_faults(START, START + 12.0), vec!["oven-01 offline".to_string()]);
    }

    #[test]
    fn counters_count_up_and_states_switch() {
        let p = plant(vec![]);
        let count = |t| match p.normal(0, 3, START + t) {
            Value::U32(n) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(count(12.0) - count(0.0), 1);
        let states: Vec<_> = (0..60).map(|t| p.normal(1, 2, START + f64::from(t))).collect();
        let on = states.iter().filter(|v| **v == Value::Bool(true)).count();
        assert_eq!(on, 50);
    }

    proptest! {
        #[test]
        fn normal_values_stay_inside_the_limits(t in 0.0f64..1e7, m in 0usize..3, s in 0usize..4) {
            let p = plant(vec![]);
            let spec = p.machines[m].sensors()[s];
            if let (Value::F64(x), Some(l)) = (p.normal(m, s, START + t), spec.limits) {
                prop_assert!(x.is_finite());
                prop_assert!(x < l.h, "{} = {x} ≥ h {}", spec.metric, l.h);
                prop_assert!(x > l.range.0 && x < l.range.1);
            }
        }

        #[test]
        fn noise_is_in_range(seed: u64, a: u64, b: u64, tick: i64) {
            let n = noise(seed, a, b, tick);
            prop_assert!((-1.0..1.0).contains(&n));
        }

        #[test]
        fn an_occurrence_start_is_active_when_reached(at in 0.0f64..100.0, d in 0.1f64..50.0, every in 60.0f64..200.0, t in 0.0f64..1000.0) {
            let f = Fault { machine: 0, sensor: None, kind: FaultKind::Offline, at_s: at, duration_s: d, every_s: Some(every) };
            let start = f.start_at_or_after(t).unwrap();
            prop_assert!(start >= at);
            prop_assert!(f.active_for(start + d * 0.5).is_some());
            if f.active_for(t).is_some() { prop_assert!(start <= t) } else { prop_assert!(start > t) }
        }
    }
}
