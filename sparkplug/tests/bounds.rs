//! Remote input cannot grow a host application without bound: a flood of
//! births of new edge nodes, new devices and new metric names, and DATA
//! and deaths of nodes and devices never born, stays within
//! `HostConfig::max_nodes`, `max_devices_per_node` and
//! `max_metrics_per_node`. Measured with a counting allocator: the live
//! heap, beside the limits.

use std::time::Instant;

use shopfloor_sparkplug::edge::{Message, Now};
use shopfloor_sparkplug::payload::EncodeOptions;
use shopfloor_sparkplug::{HostApplication, HostConfig, Metric, MetricValue, Payload};

#[global_allocator]
static ALLOCATOR: shopfloor_testkit::Counting = shopfloor_testkit::Counting;

fn message(topic: String, seq: u64, names: impl IntoIterator<Item = String>) -> Message {
    let mut p = Payload { timestamp: Some(1_000), seq: Some(seq), ..Default::default() };
    if topic.contains("/NBIRTH/") {
        p.metrics.push(Metric::new("bdSeq", 1_000, MetricValue::Int64(0)));
    }
    for n in names {
        p.metrics.push(Metric::new(n, 1_000, MetricValue::Double(1.0)));
    }
    Message { topic, payload: p.encode(EncodeOptions::default()).into(), retain: false }
}

#[test]
fn a_flood_of_nodes_devices_and_names_is_bounded() {
    let mut config = HostConfig::new("scada");
    config.publish_state = false;
    config.max_nodes = 100;
    config.max_devices_per_node = 50;
    config.max_metrics_per_node = 1_000;
    let limits = (config.max_nodes, config.max_devices_per_node, config.max_metrics_per_node);
    let mut host = HostApplication::new(config);
    let now = Now { instant: Instant::now(), unix_ms: 1_000 };
    host.handle_connected(now);
    let flood = |host: &mut HostApplication, round: u64| {
        let mut refused = 0;
        for n in 0..300 {
            let edge = format!("spBv1.0/G/NBIRTH/e{round}-{n}");
            refused += usize::from(host.handle_message(&message(edge, 0, []), now).is_err());
            // DATA and a device death from nodes never born.
            let _ = host.handle_message(
                &message(format!("spBv1.0/G/NDATA/x{round}-{n}"), 1, [format!("m{n}")]),
                now,
            );
            let _ = host
                .handle_message(&message(format!("spBv1.0/G/DDEATH/x{round}-{n}/d"), 2, []), now);
        }
        // One followed node: devices and names past its limits.
        for d in 0..200 {
            let names = (0..20).map(|i| format!("d{round}-{d}-{i}"));
            let topic = format!("spBv1.0/G/DBIRTH/e0-0/d{round}-{d}");
            refused +=
                usize::from(host.handle_message(&message(topic, d + 1, names), now).is_err());
            // DATA of devices never born.
            let _ = host.handle_message(
                &message(format!("spBv1.0/G/DDATA/e0-0/u{round}-{d}"), 300 + d, [format!("m{d}")]),
                now,
            );
        }
        while host.poll_event().is_some() {}
        let _ = host.drain_transmits().count();
        refused
    };
    // The first round fills the host to its limits; later rounds of new
    // names must not grow it.
    flood(&mut host, 0);
    let filled = shopfloor_testkit::live_heap();
    let mut refused = 0;
    for round in 1..=10 {
        refused += flood(&mut host, round);
    }
    let grown = shopfloor_testkit::live_heap() - filled;
    println!(
        "10 more rounds of 300 node births, 600 messages from nodes never born and 200 device \
         births of 20 new names: heap {:+.1} KiB after the host was full (limits: {} nodes, \
         {} devices a node, {} names a node); {refused} births refused",
        grown as f64 / 1024.0,
        limits.0,
        limits.1,
        limits.2
    );
    assert_eq!(refused, 10 * (300 + 200), "every birth past a limit is refused");
    // Nothing kept per hostile message: the heap stays where the full host
    // left it (a few KiB of hash-table slack at most).
    assert!(grown < 64 << 10, "the heap grew {grown} bytes after the host was full");
}
