//! The files that point the rest of the pipeline at a running simulator:
//! the Modbus gateway's devices, the OPC UA gateway's servers and the
//! alerting rules for the plant's limits. Written once the simulator
//! listens, so they carry the real ports.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;

use super::model::{Encoding, Machine, Plant, Protocol, Signal};
use super::{modbus, opcua};

/// Where each machine listens (index = machine index).
pub type Addresses = [SocketAddr];

/// `[[modbus.device]]` for every Modbus machine: append it to a file with
/// `[mqtt]` and `[sparkplug]` (or `[plain]`) for `shopfloor-modbus-gateway`.
pub fn modbus_devices(plant: &Plant, addrs: &Addresses) -> String {
    per_machine(plant, addrs, Protocol::Modbus, |out, m, addr| {
        let _ = write!(
            out,
            "\n[[modbus.device]]\nname = \"{}\"\nhost = \"{}\"\nport = {}\nunit = 1\nmax_gap = 0\ntimeout_ms = 1000\n",
            m.name,
            addr.ip(),
            addr.port()
        );
        for (j, s) in m.sensors().iter().enumerate() {
            let address = modbus::BASE + modbus::STRIDE * j as u16;
            let (kind, extra) = match s.encoding {
                Encoding::F32 => ("f32", String::new()),
                Encoding::F32Swapped => ("f32", "order = \"CDAB\"\n".into()),
                Encoding::I16Tenths => ("i16", "scale = 0.1\n".into()),
                Encoding::U32 => ("u32", String::new()),
                Encoding::Bit => ("bit", "bit = 0\n".into()),
            };
            let _ = write!(
                out,
                "[[modbus.device.tag]]\nname = \"{}\"\narea = \"holding_register\"\naddress = {address}\ntype = \"{kind}\"\n{extra}",
                s.metric
            );
            if !s.unit.is_empty() {
                let _ = writeln!(out, "unit = \"{}\"", s.unit);
            }
        }
    })
}

/// `[[server]]` for every OPC UA machine: append it to a file with
/// `[mqtt]` and `[sparkplug]` (or `[plain]`) for `shopfloor-opcua-gateway`.
pub fn opcua_servers(plant: &Plant, addrs: &Addresses, pki_dir: &Path) -> String {
    per_machine(plant, addrs, Protocol::Opcua, |out, m, addr| {
        let _ = write!(
            out,
            "\n[[server]]\nname = \"{}\"\nendpoint = \"opc.tcp://{addr}/\"\npki_dir = \"{}\"\n",
            m.name,
            pki_dir.display()
        );
        for s in m.sensors() {
            let _ = write!(
                out,
                "[[server.node]]\nmetric = \"{}\"\nnode_id = \"{}\"\n",
                s.metric,
                opcua::node_id_text(&m.name, s.metric)
            );
        }
    })
}

/// A file of the machines served over `protocol`: its first line names
/// them, then `sections` writes each machine's, given its address.
fn per_machine(
    plant: &Plant,
    addrs: &Addresses,
    protocol: Protocol,
    mut sections: impl FnMut(&mut String, &Machine, SocketAddr),
) -> String {
    let what = match protocol {
        Protocol::Modbus => "Modbus",
        Protocol::Opcua => "OPC UA",
    };
    let mut out = format!("# Written by shopfloor-sim: its {what} machines.\n");
    for (m, addr) in plant.machines.iter().zip(addrs).filter(|(m, _)| m.protocol == protocol) {
        sections(&mut out, m, *addr);
    }
    out
}

/// The machine's line prefix: `press-01` → `press`.
fn prefix(name: &str) -> &str {
    name.rsplit_once('-').map_or(name, |(p, _)| p)
}

/// Alerting rules for the plant: high and high-high limits and the
/// calibrated range of every analog sensor, a flat-line check (a live
/// sensor always wavers; a stuck one does not), and bad quality.
pub fn rules(plant: &Plant) -> String {
    let mut out = String::from(
        "# Written by shopfloor-sim: alarm limits of its plant (format: the\n# shopfloor-alerting crate's `rules` module).\n",
    );
    let mut seen = std::collections::HashSet::new();
    for m in &plant.machines {
        let p = prefix(&m.name);
        for s in m.sensors() {
            if !seen.insert((p.to_string(), s.metric)) {
                continue;
            }
            let (Some(l), Signal::Analog { .. }) = (s.limits, s.signal) else { continue };
            let id = format!("{p}-{}", s.metric.to_lowercase().replace('/', "-"));
            let deadband = ((l.hh - l.h) / 10.0 * 100.0).round() / 100.0;
            let _ = write!(
                out,
                "\n[[rule]]\nname = \"{id}\"\nsource = \"*/{p}-*\"\nmetric = \"{metric}\"\narea = \"{area}\"\npriority = 500\nmessage = \"{{source}} {{metric}} {{level}}: {{value}} {{unit}}\"\n[rule.limit]\nhh = {{ limit = {hh:?}, deadband = {deadband:?}, priority = 900 }}\nh = {{ limit = {h:?}, deadband = {deadband:?} }}\nrange = [{lo:?}, {hi:?}]\n",
                metric = s.metric,
                area = m.area,
                hh = l.hh,
                h = l.h,
                lo = l.range.0,
                hi = l.range.1,
            );
            let _ = write!(
                out,
                "\n[[rule]]\nname = \"{id}-flatline\"\nsource = \"*/{p}-*\"\nmetric = \"{metric}\"\narea = \"{area}\"\nclass = \"instrument\"\npriority = 300\nflatline = {{ window_s = 20.0, tolerance = 0.0, min_samples = 5 }}\n",
                metric = s.metric,
                area = m.area,
            );
        }
    }
    out.push_str(
        "\n[[rule]]\nname = \"bad-input\"\nsource = \"*\"\nmetric = \"*\"\nclass = \"instrument\"\npriority = 300\nbad_quality = true\n",
    );
    out
}

/// Writes `modbus-devices.toml`, `opcua-servers.toml` and `rules.toml`
/// into `dir` (made if absent), each through a temporary file so a reader
/// never sees half of one.
pub fn write_all(
    plant: &Plant,
    addrs: &Addresses,
    dir: &Path,
    pki_dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot make it", dir.display()))?;
    for (file, text) in [
        ("modbus-devices.toml", modbus_devices(plant, addrs)),
        ("opcua-servers.toml", opcua_servers(plant, addrs, pki_dir)),
        ("rules.toml", rules(plant)),
    ] {
        let path = dir.join(file);
        let tmp = dir.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text)
            .with_context(|| format!("{}: cannot write it", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("{}: cannot write it", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::Scenario;

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n).map(|i| SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))).collect()
    }

    #[test]
    fn the_modbus_devices_are_a_register_map_the_bridge_accepts() {
        let s = Scenario::default_plant();
        let text = modbus_devices(&s.plant, &addrs(30));
        // The bridge reads the [modbus] section of a deployment file.
        let map = shopfloor_bridge_modbus::RegisterMap::from_deployment_toml(&text).unwrap();
        assert_eq!(map.devices.len(), 22);
        assert_eq!(map.devices.iter().map(|d| d.tags.len()).sum::<usize>(), 88);
        let plan = shopfloor_bridge_modbus::explain(&map);
        assert!(plan.contains("total: 88 reads for 88 tags"), "{plan}");
    }

    #[test]
    fn the_opcua_servers_are_a_configuration_the_bridge_accepts() {
        let s = Scenario::default_plant();
        let text = opcua_servers(&s.plant, &addrs(30), Path::new("/tmp/pki"));
        let config = shopfloor_bridge_opcua::config::BridgeConfig::from_toml(&text).unwrap();
        assert_eq!(config.servers.len(), 8);
        assert!(config.servers.iter().all(|s| s.nodes.len() == 4));
        assert_eq!(config.servers[0].endpoint, "opc.tcp://127.0.0.1:20022/");
    }

    #[test]
    fn the_rules_load_and_cover_every_analog_sensor() {
        let s = Scenario::default_plant();
        let text = rules(&s.plant);
        let set = shopfloor_alerting::rules::RuleSet::from_toml(&text, "rules.toml").unwrap();
        // 8 analog sensors (press 3, CNC 2, oven 3) × (limits, flat line)
        // and one bad-input rule.
        assert_eq!(set.rules.len(), 17);
    }
}
