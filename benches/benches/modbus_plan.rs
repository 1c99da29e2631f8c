//! The Modbus request planner against one read per tag and against
//! Telegraf's `max_insert` optimisation, on a plant-like register map: 30
//! machines, 40 tags each, scattered through a machine's register block the
//! way PLC programs lay them out (process values, setpoints and counters
//! interleaved; a status word with its alarm bits; coils), 28 in a fast
//! poll group (1 s) and 12 in a slow one (10 s).
//!
//! Telegraf is re-implemented from its documented behaviour and the shape
//! of `optimizeGroupWithinLimits` in `plugins/inputs/modbus/request.go`:
//! fields sorted by address (longer first), one pass that starts a new
//! request when the hole to the previous field exceeds
//! `optimization_max_register_fill` or the request would pass
//! `max_word_registers_per_request`. Telegraf has one interval per plugin
//! instance, so each poll group is its own instance, planned alone.
//!
//! Counts, not times: the figures are deterministic. Run:
//! `cargo bench -p shopfloor-benches --bench modbus_plan`.

use std::collections::BTreeMap;
use std::time::Duration;

use shopfloor_bridge_modbus::config::{Area, Device, Tag, TagType, Transport};
use shopfloor_bridge_modbus::plan::{Learned, plan};

const MACHINES: usize = 30;
const FAST: Duration = Duration::from_secs(1);
const SLOW: Duration = Duration::from_secs(10);

/// A small deterministic generator (no dependency, same map every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn tag(name: impl Into<String>, area: Area, address: u16, kind: TagType, group: &str) -> Tag {
    let mut tag = Tag::new(name, area, address, kind);
    tag.group = group.into();
    tag
}

/// One machine's 40 tags in its block of holding registers at `base`.
fn machine(m: usize, rng: &mut Lcg) -> Vec<Tag> {
    let base = (m as u16) * 1000;
    let mut tags = Vec::new();
    // A status word and 8 alarm bits of it: fast.
    tags.push(tag(format!("m{m}/status"), Area::HoldingRegister, base, TagType::U16, "fast"));
    for b in 0..8 {
        tags.push(tag(
            format!("m{m}/alarm{b}"),
            Area::HoldingRegister,
            base,
            TagType::Bit(b),
            "fast",
        ));
    }
    // 25 values scattered over the block: mostly f32 process values, some
    // u32 counters, i16 setpoints, one u64 energy counter; small gaps of
    // reserved registers between them, now and then a larger one.
    let mut at = base + 10;
    for i in 0..25 {
        let kind = match i % 5 {
            0..=2 => TagType::F32,
            3 => TagType::U32,
            _ if i == 24 => TagType::U64,
            _ => TagType::I16,
        };
        let slow =
            matches!(kind, TagType::U32 | TagType::U64) || (kind == TagType::I16 && i % 2 == 0);
        let group = if slow { "slow" } else { "fast" };
        tags.push(tag(format!("m{m}/v{i}"), Area::HoldingRegister, at, kind, group));
        let gap = if rng.next(8) == 0 { 20 + rng.next(30) } else { rng.next(4) };
        at += kind.width() + gap as u16;
    }
    // A recipe name (string of 8 registers), slow.
    tags.push(tag(
        format!("m{m}/recipe"),
        Area::HoldingRegister,
        at + 5,
        TagType::String(8),
        "slow",
    ));
    // 5 coils: run, jog, stop, reset, fault (scattered bits).
    for c in 0..5_u16 {
        let addr = (m as u16) * 100 + c * (1 + rng.next(6) as u16);
        let group = if c == 4 { "slow" } else { "fast" };
        tags.push(tag(format!("m{m}/coil{c}"), Area::Coil, addr, TagType::Bool, group));
    }
    assert_eq!(tags.len(), 40);
    tags
}

fn device(m: usize, tags: Vec<Tag>, max_gap: u16) -> Device {
    let mut d =
        Device::new(format!("machine-{m:02}"), Transport::Tcp { host: "plc".into(), port: 502 });
    (d.max_gap, d.tags) = (max_gap, tags);
    d
}

/// Telegraf's `max_insert` on one plugin instance's fields of one register
/// type: (requests, registers read).
fn telegraf(fields: &mut [(u16, u16)], fill: u16, max_batch: u16) -> (usize, u32) {
    if fields.is_empty() {
        return (0, 0);
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let (mut requests, mut registers) = (0, 0_u32);
    let (mut address, mut length) = (fields[0].0, fields[0].1);
    for i in 1..fields.len() {
        let (prev, f) = (fields[i - 1], fields[i]);
        let hole = f.0.saturating_sub(prev.0 + prev.1);
        if hole > fill || length + hole + f.1 > max_batch {
            requests += 1;
            registers += u32::from(length);
            (address, length) = (f.0, f.1);
        } else {
            length = f.0 + f.1 - address;
        }
    }
    (requests + 1, registers + u32::from(length))
}

struct Row {
    name: String,
    per_poll: usize,
    per_second: f64,
    registers: u32,
}

fn main() {
    let mut rng = Lcg(0x5EED);
    let machines: Vec<Vec<Tag>> = (0..MACHINES).map(|m| machine(m, &mut rng)).collect();
    let tags: usize = machines.iter().map(Vec::len).sum();
    let groups: BTreeMap<String, Duration> = [("fast".into(), FAST), ("slow".into(), SLOW)].into();
    let rate = |group: &str| {
        if group == "fast" { 1.0 / FAST.as_secs_f64() } else { 1.0 / SLOW.as_secs_f64() }
    };

    let mut rows = Vec::new();
    // One read per tag.
    let per_second: f64 = machines.iter().flatten().map(|t| rate(&t.group)).sum();
    let registers: u32 = machines.iter().flatten().map(|t| u32::from(t.kind.width())).sum();
    rows.push(Row { name: "one read per tag".into(), per_poll: tags, per_second, registers });

    for fill in [16, 50] {
        let (mut per_poll, mut per_second, mut registers) = (0, 0.0, 0);
        for m in &machines {
            for group in ["fast", "slow"] {
                for area in [Area::HoldingRegister, Area::Coil] {
                    let mut fields: Vec<(u16, u16)> = m
                        .iter()
                        .filter(|t| t.group == group && t.area == area)
                        .map(|t| (t.address, t.kind.width()))
                        .collect();
                    let max = if area.is_bits() { 2000 } else { 125 };
                    let (n, r) = telegraf(&mut fields, fill, max);
                    per_poll += n;
                    per_second += n as f64 * rate(group);
                    registers += r;
                }
            }
        }
        rows.push(Row {
            name: format!("Telegraf max_insert, fill {fill}"),
            per_poll,
            per_second,
            registers,
        });

        let (mut per_poll, mut per_second, mut registers) = (0, 0.0, 0);
        for (i, m) in machines.iter().enumerate() {
            let d = device(i, m.clone(), fill);
            let p = plan(&d, &groups, &Learned::new());
            per_poll += p.requests();
            per_second += p.requests_per_second();
            registers +=
                p.groups.iter().flat_map(|g| &g.2).map(|r| u32::from(r.count)).sum::<u32>();
        }
        rows.push(Row {
            name: format!("shopfloor, max_gap {fill}"),
            per_poll,
            per_second,
            registers,
        });
    }

    println!();
    println!(
        "modbus planner: {MACHINES} machines x 40 tags = {tags} tags (fast every {} s, slow every {} s), 125 registers per read",
        FAST.as_secs(),
        SLOW.as_secs()
    );
    println!("{:<34} {:>15} {:>10} {:>16}", "", "reads per poll", "reads/s", "registers/poll");
    for r in &rows {
        println!("{:<34} {:>15} {:>10.1} {:>16}", r.name, r.per_poll, r.per_second, r.registers);
    }
    println!("(a poll: every group read once)");
    let get = |name: &str| rows.iter().find(|r| r.name == name).expect("row");
    for fill in [16, 50] {
        let (t, s) = (
            get(&format!("Telegraf max_insert, fill {fill}")),
            get(&format!("shopfloor, max_gap {fill}")),
        );
        println!(
            "gap {fill}: shopfloor {} reads/poll vs Telegraf {} ({:.0}% fewer; {:.1} vs {:.1} reads/s): {}",
            s.per_poll,
            t.per_poll,
            100.0 * (1.0 - s.per_poll as f64 / t.per_poll as f64),
            s.per_second,
            t.per_second,
            if s.per_poll < t.per_poll && s.per_second <= t.per_second {
                "fewer, met"
            } else {
                "NOT fewer"
            }
        );
    }
    let best = get("shopfloor, max_gap 16");
    let ratio = tags as f64 / best.per_poll as f64;
    println!(
        "vs one read per tag: {ratio:.1}x fewer reads per poll (target >= 5x): {}",
        if ratio >= 5.0 { "met" } else { "NOT met" }
    );
}
