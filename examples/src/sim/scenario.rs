//! The scenario file: which machines, how they are served, which faults.
//!
//! ```toml
//! [plant]
//! seed = 7                  # noise and phases
//! tick_ms = 1000            # how often OPC UA values change
//!
//! [serve]
//! host = "127.0.0.1"
//! modbus_base_port = 0      # machine i of a protocol on base + i; 0 = any free port
//! opcua_base_port = 0
//!
//! [[line]]                  # machines press-01 … press-10
//! kind = "press"            # press | cnc | oven
//! count = 10
//! protocol = "modbus"       # modbus | opcua
//! area = "press-shop"
//!
//! [[fault]]
//! machine = "press-03"
//! kind = "over-temperature" # over-temperature | pressure-spike | frozen | dropout | offline
//! sensor = "Hydraulics/Temperature"   # default: the kind's own (temperature, pressure, first)
//! at_s = 20                 # seconds after the start
//! duration_s = 30
//! every_s = 300             # optional: repeats
//! ```

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::model::{Fault, FaultKind, Machine, MachineKind, Plant, Protocol};

/// The seed's plant: 30 machines, 120 sensors, a fault of each kind
/// within the first minute, repeating every 5 minutes.
pub const DEFAULT: &str = r#"
[plant]
seed = 7
tick_ms = 1000

[[line]]
kind = "press"
count = 10
protocol = "modbus"
area = "press-shop"

[[line]]
kind = "cnc"
count = 12
protocol = "modbus"
area = "machining"

[[line]]
kind = "oven"
count = 8
protocol = "opcua"
area = "paint-shop"

[[fault]]
machine = "press-03"
kind = "over-temperature"
at_s = 10
duration_s = 40
every_s = 300

[[fault]]
machine = "oven-02"
kind = "pressure-spike"
at_s = 35
duration_s = 20
every_s = 300

[[fault]]
machine = "cnc-05"
kind = "frozen"
sensor = "Spindle/Vibration"
at_s = 50
duration_s = 120
every_s = 300

[[fault]]
machine = "cnc-09"
kind = "dropout"
sensor = "Spindle/Temperature"
at_s = 65
duration_s = 30
every_s = 300

[[fault]]
machine = "press-07"
kind = "offline"
at_s = 80
duration_s = 30
every_s = 300
"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    plant: PlantDe,
    #[serde(default)]
    serve: ServeDe,
    #[serde(default)]
    line: Vec<LineDe>,
    #[serde(default)]
    fault: Vec<FaultDe>,
    /// Sections of other programs (`[metrics]`).
    #[serde(default)]
    metrics: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlantDe {
    #[serde(default = "seed")]
    seed: u64,
    #[serde(default = "tick_ms")]
    tick_ms: u64,
}

impl Default for PlantDe {
    fn default() -> Self {
        Self { seed: seed(), tick_ms: tick_ms() }
    }
}

const fn seed() -> u64 {
    7
}
const fn tick_ms() -> u64 {
    1000
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ServeDe {
    host: Option<String>,
    #[serde(default)]
    modbus_base_port: u16,
    #[serde(default)]
    opcua_base_port: u16,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineDe {
    kind: String,
    count: usize,
    protocol: String,
    area: Option<String>,
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultDe {
    machine: String,
    kind: String,
    sensor: Option<String>,
    at_s: f64,
    duration_s: f64,
    every_s: Option<f64>,
}

/// A checked scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The plant and its faults.
    pub plant: Plant,
    /// OPC UA update interval.
    pub tick: std::time::Duration,
    /// Where the devices listen.
    pub host: String,
    /// Modbus machine i on this + i (0: any free port).
    pub modbus_base_port: u16,
    /// OPC UA machine i on this + i (0: any free port).
    pub opcua_base_port: u16,
}

/// Most machines one simulator serves (each is a listening socket).
pub const MAX_MACHINES: usize = 2000;

impl Scenario {
    /// The seed's plant ([`DEFAULT`]).
    pub fn default_plant() -> Self {
        Self::parse(DEFAULT, "the built-in scenario").expect("the built-in scenario is valid")
    }

    /// Reads and checks a scenario file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read it", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Checks a scenario; errors name `origin` and what to change.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        let file: File = toml::from_str(text).map_err(|e| {
            let line =
                e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            anyhow::anyhow!("{origin}: line {line}: {}", e.message())
        })?;
        let _ = file.metrics;
        if file.plant.tick_ms < 50 || file.plant.tick_ms > 60_000 {
            bail!("{origin}: plant.tick_ms = {}: give 50 to 60000", file.plant.tick_ms);
        }
        if file.line.is_empty() {
            bail!("{origin}: no [[line]] of machines; add one (kind, count, protocol)");
        }
        let mut machines = Vec::new();
        for (i, l) in file.line.iter().enumerate() {
            let here = format!("{origin}: line #{}", i + 1);
            let kind = MachineKind::parse(&l.kind).with_context(|| {
                format!("{here}: kind {:?}: give \"press\", \"cnc\" or \"oven\"", l.kind)
            })?;
            let protocol = match l.protocol.as_str() {
                "modbus" => Protocol::Modbus,
                "opcua" => Protocol::Opcua,
                other => bail!("{here}: protocol {other:?}: give \"modbus\" or \"opcua\""),
            };
            if l.count == 0 {
                bail!("{here}: count = 0; give at least 1 or remove the line");
            }
            let prefix = l.prefix.clone().unwrap_or_else(|| kind.name().to_string());
            if prefix.is_empty() || prefix.contains(['/', '+', '#', ' ']) {
                bail!(
                    "{here}: prefix {prefix:?} cannot be part of a topic; use letters, digits, - and _"
                );
            }
            let width = if l.count < 100 { 2 } else { l.count.to_string().len() };
            for n in 1..=l.count {
                machines.push(Machine {
                    name: format!("{prefix}-{n:0width$}"),
                    kind,
                    area: l.area.clone().unwrap_or_else(|| "plant".into()),
                    protocol,
                });
            }
        }
        if machines.len() > MAX_MACHINES {
            bail!(
                "{origin}: {} machines; one simulator serves at most {MAX_MACHINES}",
                machines.len()
            );
        }
        let mut seen = HashSet::new();
        for m in &machines {
            if !seen.insert(m.name.as_str()) {
                bail!(
                    "{origin}: two machines are named {:?}; give the lines different prefixes",
                    m.name
                );
            }
        }
        let mut faults = Vec::new();
        for (i, f) in file.fault.iter().enumerate() {
            let here = format!("{origin}: fault #{} ({})", i + 1, f.machine);
            let machine = machines.iter().position(|m| m.name == f.machine).with_context(|| {
                format!(
                    "{here}: no machine {:?}; machines are named like {:?}",
                    f.machine, machines[0].name
                )
            })?;
            let kind = FaultKind::parse(&f.kind).with_context(|| {
                format!(
                    "{here}: kind {:?}: give over-temperature, pressure-spike, frozen, dropout or offline",
                    f.kind
                )
            })?;
            let mk = machines[machine].kind;
            let sensor = match (&f.sensor, kind) {
                (Some(_), FaultKind::Offline) => {
                    bail!("{here}: an offline fault takes the whole machine; remove sensor")
                }
                (Some(s), _) => {
                    Some(mk.sensors().iter().position(|x| x.metric == s).with_context(|| {
                        let names: Vec<_> = mk.sensors().iter().map(|x| x.metric).collect();
                        format!("{here}: a {} has no sensor {s:?}; it has {names:?}", mk.name())
                    })?)
                }
                (None, FaultKind::Offline) => None,
                (None, k) => Some(k.default_sensor(mk).with_context(|| {
                    format!(
                        "{here}: a {} has no sensor for {}; name one with sensor",
                        mk.name(),
                        k.name()
                    )
                })?),
            };
            if let Some(s) = sensor
                && matches!(kind, FaultKind::OverTemperature | FaultKind::PressureSpike)
                && mk.sensors()[s].limits.is_none()
            {
                bail!(
                    "{here}: {} is not an analog value; pick a temperature or pressure",
                    mk.sensors()[s].metric
                );
            }
            if !(f.at_s >= 0.0 && f.at_s.is_finite()) {
                bail!("{here}: at_s = {}: give seconds after the start, ≥ 0", f.at_s);
            }
            if !(f.duration_s > 0.0 && f.duration_s.is_finite()) {
                bail!("{here}: duration_s = {}: give a positive number of seconds", f.duration_s);
            }
            if let Some(every) = f.every_s
                && !(every > f.duration_s && every.is_finite())
            {
                bail!(
                    "{here}: every_s = {every} must be longer than duration_s = {}",
                    f.duration_s
                );
            }
            faults.push(Fault {
                machine,
                sensor,
                kind,
                at_s: f.at_s,
                duration_s: f.duration_s,
                every_s: f.every_s,
            });
        }
        Ok(Self {
            plant: Plant { seed: file.plant.seed, machines, faults },
            tick: std::time::Duration::from_millis(file.plant.tick_ms),
            host: file.serve.host.unwrap_or_else(|| "127.0.0.1".into()),
            modbus_base_port: file.serve.modbus_base_port,
            opcua_base_port: file.serve.opcua_base_port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_seeds_plant() {
        let s = Scenario::default_plant();
        assert_eq!(s.plant.machines.len(), 30);
        assert_eq!(s.plant.sensor_count(), 120);
        assert_eq!(s.plant.machines[0].name, "press-01");
        assert_eq!(s.plant.machines[29].name, "oven-08");
        let kinds: HashSet<_> = s.plant.faults.iter().map(|f| f.kind).collect();
        assert_eq!(kinds.len(), 5, "every fault kind is shown");
    }

    #[test]
    fn mistakes_name_the_place_and_the_fix() {
        let base = "[[line]]\nkind = \"press\"\ncount = 2\nprotocol = \"modbus\"\n";
        let cases = [
            ("", "no [[line]]"),
            ("[[line]]\nkind = \"lathe\"\ncount = 1\nprotocol = \"modbus\"\n", "give \"press\""),
            ("[[line]]\nkind = \"press\"\ncount = 1\nprotocol = \"s7\"\n", "give \"modbus\""),
            (
                "[[line]]\nkind = \"press\"\ncount = 1\nprotocol = \"modbus\"\nfoo = 1\n",
                "unknown field",
            ),
            (
                "[[fault]]\nmachine = \"press-99\"\nkind = \"frozen\"\nat_s = 1\nduration_s = 1\n",
                "no machine",
            ),
            (
                "[[fault]]\nmachine = \"press-01\"\nkind = \"melt\"\nat_s = 1\nduration_s = 1\n",
                "kind \"melt\"",
            ),
            (
                "[[fault]]\nmachine = \"press-01\"\nkind = \"frozen\"\nsensor = \"X\"\nat_s = 1\nduration_s = 1\n",
                "no sensor \"X\"",
            ),
            (
                "[[fault]]\nmachine = \"press-01\"\nkind = \"offline\"\nsensor = \"Motor/Current\"\nat_s = 1\nduration_s = 1\n",
                "remove sensor",
            ),
            (
                "[[fault]]\nmachine = \"press-01\"\nkind = \"pressure-spike\"\nsensor = \"Strokes/Count\"\nat_s = 1\nduration_s = 1\n",
                "not an analog",
            ),
            (
                "[[fault]]\nmachine = \"press-01\"\nkind = \"frozen\"\nat_s = -1\nduration_s = 1\n",
                "at_s = -1",
            ),
            (
                "[[fault]]\nmachine = \"press-01\"\nkind = \"frozen\"\nat_s = 1\nduration_s = 0\n",
                "duration_s = 0",
            ),
            (
                "[[fault]]\nmachine = \"press-01\"\nkind = \"frozen\"\nat_s = 1\nduration_s = 5\nevery_s = 5\n",
                "longer than",
            ),
            ("[plant]\ntick_ms = 1\n", "tick_ms = 1"),
            (
                "[[line]]\nkind = \"press\"\ncount = 1\nprotocol = \"opcua\"\n",
                "two machines are named \"press-01\"",
            ),
        ];
        for (extra, want) in cases {
            let text = if extra.starts_with("[[line]]")
                || extra.starts_with("[[fault]]")
                || extra.starts_with("[plant]")
            {
                format!("{base}{extra}")
            } else {
                extra.to_string()
            };
            let err = format!("{:#}", Scenario::parse(&text, "s.toml").unwrap_err());
            assert!(err.starts_with("s.toml"), "{err}");
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }

    #[test]
    fn names_are_padded_to_the_count() {
        let s = Scenario::parse(
            "[[line]]\nkind = \"oven\"\ncount = 120\nprotocol = \"opcua\"\nprefix = \"zone\"\n",
            "s",
        )
        .unwrap();
        assert_eq!(s.plant.machines[0].name, "zone-001");
        assert_eq!(s.plant.machines[119].name, "zone-120");
    }
}
