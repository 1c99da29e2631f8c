//! The request planner: worked examples, learning from refusals, and
//! properties over random maps (every tag covered once, limits kept, the
//! fewest reads, merged decoding equal to one read per tag).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use shopfloor_bridge_modbus::codec::{Data, decode};
use shopfloor_bridge_modbus::config::{Area, Device, Tag, TagType, Transport};
use shopfloor_bridge_modbus::plan::{Caution, Learned, Refusal, Request, decode_response, plan};

fn tag(name: impl Into<String>, area: Area, address: u16, kind: TagType, group: &str) -> Tag {
    let mut tag = Tag::new(name, area, address, kind);
    tag.group = group.into();
    tag
}

fn device(tags: Vec<Tag>, max_registers: u16, max_gap: u16) -> Device {
    let mut d = Device::new("d", Transport::Tcp { host: "h".into(), port: 502 });
    (d.max_registers, d.max_gap, d.tags) = (max_registers, max_gap, tags);
    d
}

fn groups() -> BTreeMap<String, Duration> {
    [
        ("fast".to_owned(), Duration::from_millis(100)),
        ("default".to_owned(), Duration::from_secs(1)),
    ]
    .into()
}

/// (area, start, count, tag names) of each read of `group`.
fn reads(d: &Device, learned: &Learned, group: &str) -> Vec<(Area, u16, u16, Vec<String>)> {
    let p = plan(d, &groups(), learned);
    let (_, _, reqs) = p.groups.iter().find(|g| g.0 == group).expect("group planned");
    reqs.iter()
        .map(|r| {
            (r.area, r.start, r.count, r.tags.iter().map(|&t| d.tags[t].name.clone()).collect())
        })
        .collect()
}

const H: Area = Area::HoldingRegister;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn neighbours_merge_across_small_gaps_and_split_at_the_limit() {
    let d = device(
        vec![
            tag("a", H, 0, TagType::U16, "default"),
            tag("b", H, 1, TagType::F32, "default"),
            tag("c", H, 10, TagType::U16, "default"), // gap of 7: merged (max_gap 8)
            tag("d", H, 30, TagType::U16, "default"), // gap of 19: new read
            tag("e", H, 45, TagType::F64, "default"), // would make 30..=48 = 19 > 16: new read
            tag("coil", Area::Coil, 3, TagType::Bool, "default"),
        ],
        16,
        8,
    );
    assert_eq!(
        reads(&d, &Learned::new(), "default"),
        [
            (Area::Coil, 3, 1, names(&["coil"])),
            (H, 0, 11, names(&["a", "b", "c"])),
            (H, 30, 1, names(&["d"])),
            (H, 45, 4, names(&["e"])),
        ]
    );
}

#[test]
fn a_status_word_and_its_bits_are_one_register() {
    let mut tags = vec![tag("word", H, 5, TagType::U16, "default")];
    tags.extend((0..16).map(|b| tag(format!("bit{b}"), H, 5, TagType::Bit(b), "default")));
    tags.push(tag("next", H, 6, TagType::U16, "default"));
    let d = device(tags, 2, 0);
    let r = reads(&d, &Learned::new(), "default");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].1, r[0].2, r[0].3.len()), (5, 2, 18));
}

#[test]
fn slower_groups_ride_along_in_faster_reads() {
    let d = device(
        vec![
            tag("fast1", H, 0, TagType::U16, "fast"),
            tag("slow-inside", H, 2, TagType::U16, "default"),
            tag("fast2", H, 4, TagType::U16, "fast"),
            tag("slow-outside", H, 50, TagType::U16, "default"),
        ],
        125,
        8,
    );
    assert_eq!(
        reads(&d, &Learned::new(), "fast"),
        [(H, 0, 5, names(&["fast1", "slow-inside", "fast2"]))]
    );
    assert_eq!(reads(&d, &Learned::new(), "default"), [(H, 50, 1, names(&["slow-outside"]))]);
}

#[test]
fn a_refused_read_is_replanned_without_gaps_then_per_tag() {
    let d = device(
        vec![
            tag("a", H, 0, TagType::U16, "default"),
            tag("b", H, 1, TagType::U16, "default"),
            tag("c", H, 5, TagType::U16, "default"),
            tag("far", H, 100, TagType::U16, "default"),
        ],
        125,
        8,
    );
    let mut learned = Learned::new();
    let p = plan(&d, &groups(), &learned);
    let merged = p.groups[0].2[0].clone();
    assert_eq!((merged.start, merged.count), (0, 6));
    // The device does not map 2..=4: the read without the gap works.
    assert_eq!(learned.refused(&merged, &d.tags), Refusal::Replan(Caution::NoGaps));
    assert_eq!(
        reads(&d, &learned, "default"),
        [(H, 0, 2, names(&["a", "b"])), (H, 5, 1, names(&["c"])), (H, 100, 1, names(&["far"]))]
    );
    // Then 0..=1 is refused too: one read per tag there.
    let pair = Request { area: H, start: 0, count: 2, tags: vec![0, 1] };
    assert_eq!(learned.refused(&pair, &d.tags), Refusal::Replan(Caution::PerTag));
    assert_eq!(reads(&d, &learned, "default").len(), 4);
    // A single tag refused alone is the tag's fault.
    let single = Request { area: H, start: 0, count: 1, tags: vec![0] };
    assert_eq!(learned.refused(&single, &d.tags), Refusal::BadTag(0));
    assert_eq!(learned.len(), 2);
}

#[test]
fn a_short_response_fails_its_tags_without_panic() {
    let d = device(vec![tag("a", H, 0, TagType::U32, "default")], 125, 0);
    let req = Request { area: H, start: 0, count: 2, tags: vec![0] };
    let out = decode_response(&d, &req, Data::Registers(&[1]));
    assert!(out[0].1.is_err());
    let out = decode_response(&d, &req, Data::Registers(&[0, 7]));
    assert_eq!(out[0].1, Ok(shopfloor_schemas::Value::I64(7)));
}

fn kind() -> impl Strategy<Value = TagType> {
    prop_oneof![
        Just(TagType::U16),
        Just(TagType::I16),
        Just(TagType::F32),
        Just(TagType::U32),
        Just(TagType::F64),
        Just(TagType::U64),
        (0_u8..16).prop_map(TagType::Bit),
        (1_u16..6).prop_map(TagType::String),
    ]
}

fn random_device() -> impl Strategy<Value = Device> {
    let tags = prop::collection::vec((0_u16..300, kind(), any::<bool>(), any::<bool>()), 1..40);
    (tags, 8_u16..126, 0_u16..20).prop_map(|(raw, max_registers, max_gap)| {
        let tags = raw
            .into_iter()
            .enumerate()
            .map(|(i, (address, k, fast, coil))| {
                let group = if fast { "fast" } else { "default" };
                if coil {
                    tag(format!("t{i}"), Area::Coil, address, TagType::Bool, group)
                } else {
                    tag(format!("t{i}"), H, address, k, group)
                }
            })
            .collect();
        device(tags, max_registers, max_gap)
    })
}

/// The fewest reads for tags of one area and group, by dynamic programming
/// over the sorted tags (the same feasibility rule as the planner).
fn fewest(d: &Device, mut list: Vec<usize>) -> usize {
    list.sort_by_key(|&t| (d.tags[t].address, d.tags[t].end(), t));
    let n = list.len();
    let mut best = vec![usize::MAX; n + 1];
    best[0] = 0;
    let limit =
        u32::from(if d.tags[list[0]].area.is_bits() { d.max_bits } else { d.max_registers });
    for i in 0..n {
        if best[i] == usize::MAX {
            continue;
        }
        let start = u32::from(d.tags[list[i]].address);
        let mut end = d.tags[list[i]].end();
        for j in i..n {
            let t = &d.tags[list[j]];
            if j > i {
                if u32::from(t.address) > end + 1 + u32::from(d.max_gap) {
                    break;
                }
                end = end.max(t.end());
            }
            if end - start >= limit {
                break;
            }
            best[j + 1] = best[j + 1].min(best[i] + 1);
        }
    }
    best[n]
}

proptest! {
    #[test]
    fn every_tag_is_read_once_within_the_limits(d in random_device()) {
        let p = plan(&d, &groups(), &Learned::new());
        let mut seen = vec![0; d.tags.len()];
        for (group, _, reqs) in &p.groups {
            for r in reqs {
                let limit = if r.area.is_bits() { d.max_bits } else { d.max_registers };
                prop_assert!(r.count >= 1 && r.count <= limit, "{r:?} over {limit}");
                for &t in &r.tags {
                    let tag = &d.tags[t];
                    seen[t] += 1;
                    prop_assert_eq!(tag.area, r.area);
                    prop_assert!(tag.address >= r.start && tag.end() <= r.end(), "{} outside {:?}", tag.name, r);
                    // A tag is read by its own group or a faster one.
                    prop_assert!(&tag.group == group || group == "fast");
                }
            }
        }
        prop_assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn the_merge_is_the_fewest_reads(d in random_device()) {
        // Planned alone (one group), each area's reads are as few as possible.
        let mut one = d.clone();
        for t in &mut one.tags {
            t.group = "default".into();
        }
        let p = plan(&one, &groups(), &Learned::new());
        let reqs = &p.groups[0].2;
        for area in [Area::Coil, H] {
            let list: Vec<usize> = (0..one.tags.len()).filter(|&t| one.tags[t].area == area).collect();
            if list.is_empty() {
                continue;
            }
            let planned = reqs.iter().filter(|r| r.area == area).count();
            prop_assert_eq!(planned, fewest(&one, list));
        }
    }

    /// Decoding the merged reads gives what one read per tag gives.
    #[test]
    fn merged_reads_decode_like_single_reads(d in random_device(), seed in any::<u64>()) {
        let memory: Vec<u16> = (0..400_u64).map(|i| (i.wrapping_mul(0x9E37_79B9).wrapping_add(seed) >> 7) as u16).collect();
        let bits: Vec<bool> = memory.iter().map(|r| r & 1 == 1).collect();
        let p = plan(&d, &groups(), &Learned::new());
        for (_, _, reqs) in &p.groups {
            for r in reqs {
                let (s, e) = (usize::from(r.start), r.end() as usize + 1);
                let data = if r.area.is_bits() { Data::Bits(&bits[s..e]) } else { Data::Registers(&memory[s..e]) };
                for (t, value) in decode_response(&d, r, data) {
                    let tag = &d.tags[t];
                    let a = usize::from(tag.address);
                    let single = if tag.area.is_bits() {
                        decode(tag, Data::Bits(&bits[a..a + 1]))
                    } else {
                        decode(tag, Data::Registers(&memory[a..a + usize::from(tag.kind.width())]))
                    };
                    // NaN is a value too: compare floats by their bits.
                    let bits = |v: Result<shopfloor_schemas::Value, _>| match v {
                        Ok(shopfloor_schemas::Value::F64(f)) => Ok(Err(f.to_bits())),
                        other => other.map(Ok),
                    };
                    prop_assert_eq!(bits(value), bits(single), "{}", tag.name);
                }
            }
        }
    }

    /// Whatever the device refuses, re-planning ends: each refusal makes a
    /// span more cautious or names a bad tag, and plans stay valid.
    #[test]
    fn refusals_converge(d in random_device(), pick in any::<prop::sample::Index>()) {
        let mut learned = Learned::new();
        for _ in 0..200 {
            let p = plan(&d, &groups(), &learned);
            let all: Vec<&Request> = p.groups.iter().flat_map(|g| &g.2).collect();
            let r = all[pick.index(all.len())];
            if let Refusal::BadTag(t) = learned.refused(r, &d.tags) {
                prop_assert!(r.tags.contains(&t));
                return Ok(());
            }
        }
        let summary: Vec<String> = d.tags.iter().map(|t| format!("{}@{:?}{}:{:?}:{}", t.name, t.area, t.address, t.kind, t.group)).collect();
        prop_assert!(false, "200 refusals without reaching a single tag: {summary:?} gap {} max {} learned {learned:?} pick {pick:?}", d.max_gap, d.max_registers);
    }
}
