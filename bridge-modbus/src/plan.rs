//! The request planner: pure functions from a device's tags to the fewest
//! reads that cover them.
//!
//! Per area, tags sorted by address are merged left to right into one read
//! while the read stays within the device's limit (`max_registers`,
//! `max_bits`) and the unused addresses between two tags stay within
//! `max_gap`. For a sequence this greedy cut is the fewest reads possible:
//! any read that could take one more tag does.
//!
//! Poll groups are planned fastest first; a slower group's tag that falls
//! inside a faster group's read is served by it (read at the faster rate,
//! at no extra request) and not read again on its own.
//!
//! Devices refuse reads that touch addresses they do not map
//! (`IllegalDataAddress`). [`Learned`] remembers such spans: first the span
//! is read without gap filling, then one tag per read. The poller reports a
//! refused read to [`Learned::refused`] and plans again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::codec::{Data, DecodeError, decode};
use crate::config::{Area, Device, RegisterMap, Tag};
use shopfloor_schemas::Value;

/// One read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The area read.
    pub area: Area,
    /// First address.
    pub start: u16,
    /// Registers (or bits) read.
    pub count: u16,
    /// The tags it serves (indexes into the device's tags), by address.
    pub tags: Vec<usize>,
}

impl Request {
    /// The last address read.
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count) - 1
    }

    /// Addresses read that no tag uses.
    pub fn unused(&self, tags: &[Tag]) -> u32 {
        let mut covered = 0;
        let mut next = u32::from(self.start);
        let mut sorted: Vec<&Tag> = self.tags.iter().map(|&i| &tags[i]).collect();
        sorted.sort_by_key(|t| t.address);
        for t in sorted {
            let (a, e) = (u32::from(t.address).max(next), t.end());
            if e >= a {
                covered += e - a + 1;
                next = e + 1;
            }
        }
        u32::from(self.count) - covered
    }
}

/// How cautiously a span of addresses must be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Caution {
    /// Reads in it may not span unused addresses.
    NoGaps,
    /// One tag per read.
    PerTag,
}

/// What a device taught the planner: spans it refused to read in one go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    spans: Vec<(Area, u16, u32, Caution)>,
}

/// What the planner makes of a refused read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The span is now read more cautiously: plan again.
    Replan(Caution),
    /// A single tag's own read was refused: the tag's address is wrong for
    /// this device (its readings are bad until the map is fixed).
    BadTag(usize),
}

impl Learned {
    /// Nothing learned yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The caution that applies where a read of `area` spans `start..=end`.
    fn caution(&self, area: Area, start: u16, end: u32) -> Option<Caution> {
        self.spans
            .iter()
            .filter(|(a, s, e, _)| *a == area && u32::from(*s) <= end && u32::from(start) <= *e)
            .map(|s| s.3)
            .max()
    }

    /// The device refused `req` with IllegalDataAddress.
    pub fn refused(&mut self, req: &Request, tags: &[Tag]) -> Refusal {
        let distinct = {
            let mut spans: Vec<(u16, u32)> =
                req.tags.iter().map(|&i| (tags[i].address, tags[i].end())).collect();
            spans.sort_unstable();
            spans.dedup();
            spans.len()
        };
        let level =
            if req.unused(tags) > 0 && self.caution(req.area, req.start, req.end()).is_none() {
                Caution::NoGaps
            } else if distinct > 1 {
                Caution::PerTag
            } else {
                return Refusal::BadTag(req.tags[0]);
            };
        self.spans.push((req.area, req.start, req.end(), level));
        Refusal::Replan(level)
    }

    /// Spans learned so far.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether nothing was learned.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// A device's reads, per poll group (fastest first).
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// `(group, interval, reads)`, fastest group first; a group whose tags
    /// are all served by faster groups has no reads.
    pub groups: Vec<(String, Duration, Vec<Request>)>,
}

impl Plan {
    /// Reads per poll of every group.
    pub fn requests(&self) -> usize {
        self.groups.iter().map(|g| g.2.len()).sum()
    }

    /// Reads per second with each group at its interval.
    pub fn requests_per_second(&self) -> f64 {
        self.groups.iter().map(|(_, every, reqs)| reqs.len() as f64 / every.as_secs_f64()).sum()
    }
}

/// Plans a device's reads.
pub fn plan(device: &Device, groups: &BTreeMap<String, Duration>, learned: &Learned) -> Plan {
    let mut order: Vec<(&String, Duration)> = groups
        .iter()
        .filter(|(g, _)| device.tags.iter().any(|t| &t.group == *g))
        .map(|(g, d)| (g, *d))
        .collect();
    order.sort_by_key(|(g, d)| (*d, (*g).clone()));
    let rank: BTreeMap<&str, usize> =
        order.iter().enumerate().map(|(i, (g, _))| (g.as_str(), i)).collect();
    let mut served = vec![false; device.tags.len()];
    let mut out = Vec::new();
    for (i, (group, every)) in order.iter().enumerate() {
        let mine: Vec<usize> = (0..device.tags.len())
            .filter(|&t| !served[t] && device.tags[t].group == **group)
            .collect();
        let mut reqs = merge(device, &mine, learned);
        // Slower groups' tags inside these reads come along (where the
        // device wants one tag per read, only tags of the very same span).
        for r in &mut reqs {
            let per_tag = learned.caution(r.area, r.start, r.end()) == Some(Caution::PerTag);
            for (t, tag) in device.tags.iter().enumerate() {
                let slower = rank.get(tag.group.as_str()).is_some_and(|&k| k > i);
                let inside = tag.address >= r.start && tag.end() <= r.end();
                let same = tag.address == r.start && tag.end() == r.end();
                if slower && !served[t] && tag.area == r.area && inside && (same || !per_tag) {
                    r.tags.push(t);
                    served[t] = true;
                }
            }
            r.tags.sort_by_key(|&t| (device.tags[t].address, t));
        }
        for &t in &mine {
            served[t] = true;
        }
        out.push(((*group).clone(), *every, reqs));
    }
    Plan { groups: out }
}

/// The greedy merge of some tags of a device.
fn merge(device: &Device, tags: &[usize], learned: &Learned) -> Vec<Request> {
    let mut by_area: BTreeMap<Area, Vec<usize>> = BTreeMap::new();
    for &t in tags {
        by_area.entry(device.tags[t].area).or_default().push(t);
    }
    let mut out = Vec::new();
    for (area, mut list) in by_area {
        list.sort_by_key(|&t| (device.tags[t].address, device.tags[t].end(), t));
        let limit = u32::from(if area.is_bits() { device.max_bits } else { device.max_registers });
        let mut current: Option<(u16, u32, Vec<usize>)> = None;
        for t in list {
            let tag = &device.tags[t];
            if let Some((start, end, members)) = &mut current {
                let new_end = (*end).max(tag.end());
                let gap = u32::from(tag.address).saturating_sub(*end + 1);
                let fits = new_end - u32::from(*start) < limit && gap <= u32::from(device.max_gap);
                let allowed = match learned.caution(area, *start, new_end) {
                    None => true,
                    Some(Caution::NoGaps) => gap == 0,
                    Some(Caution::PerTag) => members.iter().all(|&m| {
                        device.tags[m].address == tag.address && device.tags[m].end() == tag.end()
                    }),
                };
                if fits && allowed {
                    *end = new_end;
                    members.push(t);
                    continue;
                }
                let (s, e, m) = current.take().expect("current is set");
                out.push(request(area, s, e, m));
            }
            current = Some((tag.address, tag.end(), vec![t]));
        }
        if let Some((s, e, m)) = current {
            out.push(request(area, s, e, m));
        }
    }
    out
}

fn request(area: Area, start: u16, end: u32, tags: Vec<usize>) -> Request {
    Request { area, start, count: (end - u32::from(start) + 1) as u16, tags }
}

/// The values of a read's tags from its response. A response of the wrong
/// length makes every tag's result an error.
pub fn decode_response(
    device: &Device,
    req: &Request,
    data: Data<'_>,
) -> Vec<(usize, Result<Value, DecodeError>)> {
    let len = match data {
        Data::Registers(r) => r.len(),
        Data::Bits(b) => b.len(),
    };
    req.tags
        .iter()
        .map(|&t| {
            let tag = &device.tags[t];
            let offset = usize::from(tag.address - req.start);
            let result = if len != usize::from(req.count) {
                Err(DecodeError::Short {
                    tag: tag.name.clone(),
                    want: usize::from(req.count),
                    got: len,
                })
            } else {
                let slice = match data {
                    Data::Registers(r) => Data::Registers(&r[offset..]),
                    Data::Bits(b) => Data::Bits(&b[offset..]),
                };
                decode(tag, slice)
            };
            (t, result)
        })
        .collect()
}

/// The 40001-style number of a 0-based address (five digits while they
/// suffice, six beyond 9999).
pub fn modicon(area: Area, address: u32) -> String {
    let n = address + 1;
    if n <= 9999 {
        format!("{}{n:04}", area.modicon_digit())
    } else {
        format!("{}{n:05}", area.modicon_digit())
    }
}

/// The plan of every device in words, for `explain`: the 0-based addresses
/// the reads use, with their Modicon numbers beside them; each read with what it
/// serves, and totals against one read per tag.
pub fn explain(map: &RegisterMap) -> String {
    let mut out = String::new();
    let (mut total_reads, mut total_tags, mut per_second) = (0, 0, 0.0);
    for d in &map.devices {
        let p = plan(d, &map.groups, &Learned::new());
        let _ = writeln!(
            out,
            "device {:?} (unit {}, max {} registers / {} bits per read, gaps up to {}):",
            d.name, d.unit, d.max_registers, d.max_bits, d.max_gap
        );
        for (group, every, reqs) in &p.groups {
            let _ = writeln!(
                out,
                "  group {group:?} every {} ms: {} reads",
                every.as_millis(),
                reqs.len()
            );
            for r in reqs {
                let names: Vec<String> = r
                    .tags
                    .iter()
                    .map(|&t| {
                        let tag = &d.tags[t];
                        if &tag.group == group {
                            tag.name.clone()
                        } else {
                            format!("{} (from group {:?})", tag.name, tag.group)
                        }
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "    {} {}..={} ({} read, {} unused; Modicon {}..={}): {}",
                    r.area,
                    r.start,
                    r.end(),
                    r.count,
                    r.unused(&d.tags),
                    modicon(r.area, u32::from(r.start)),
                    modicon(r.area, r.end()),
                    names.join(", ")
                );
            }
        }
        total_reads += p.requests();
        total_tags += d.tags.len();
        per_second += p.requests_per_second();
    }
    let _ = writeln!(
        out,
        "total: {total_reads} reads for {total_tags} tags ({:.1} reads/s at the groups' intervals)",
        per_second
    );
    out
}
