//! The small end-to-end pipeline of the foundation: simulated readings,
//! encoded with each of the three codecs, published to a real Mosquitto,
//! received, decoded by MQTT 5 content type, and shown as a live table.
//!
//! Start a broker first; `scripts/demo` does all of it (installs Mosquitto if
//! missing, starts it on a free port, runs this, stops it on Ctrl-C):
//!
//! ```text
//! scripts/demo
//! cargo run -p shopfloor-examples --bin shopfloor-demo -- --port 1883
//! ```
//!
//! Later issues replace this with the full edge-to-dashboard deployment.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use shopfloor_schemas::{Batch, Codec, Quality, Reading, Timestamp, TopicTemplate, topic};

const HELP: &str = "\
shopfloor-demo: simulated readings → JSON/Protobuf/CBOR → MQTT → decoded live table

USAGE:
    shopfloor-demo [--host HOST] [--port PORT] [--rate HZ] [--duration SECS] [--plain]

OPTIONS:
    --host HOST       broker address [default: 127.0.0.1]
    --port PORT       broker port [default: 1883]
    --rate HZ         samples per second per sensor [default: 2]
    --duration SECS   stop after this long (default: run until Ctrl-C); exits
                      non-zero unless every codec's messages came back decoded
    --plain           print plain status lines instead of redrawing the screen
    -h, --help        this text

EXAMPLES:
    scripts/demo                                  # starts a broker, then this
    shopfloor-demo --port 1883 --rate 10
    shopfloor-demo --port 1883 --duration 5 --plain
";

struct Args {
    host: String,
    port: u16,
    rate: f64,
    duration: Option<Duration>,
    plain: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a =
        Args { host: "127.0.0.1".into(), port: 1883, rate: 2.0, duration: None, plain: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value; see --help"));
        match flag.as_str() {
            "--host" => a.host = value()?,
            "--port" => a.port = value()?.parse().context("--port: expected 1..=65535")?,
            "--rate" => a.rate = value()?.parse().context("--rate: expected a number of Hz")?,
            "--duration" => {
                a.duration = Some(Duration::from_secs_f64(
                    value()?.parse().context("--duration: expected seconds")?,
                ));
            }
            "--plain" => a.plain = true,
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    if !(0.1..=1000.0).contains(&a.rate) {
        bail!("--rate {} is outside 0.1..=1000 Hz", a.rate);
    }
    Ok(a)
}

/// One simulated machine per codec, three sensors each.
const MACHINES: [(&str, Codec); 3] =
    [("press-1", Codec::Json), ("press-2", Codec::Protobuf), ("press-3", Codec::Cbor)];

fn simulate(machine: usize, tick: u64, now: Timestamp) -> [(&'static str, Reading); 3] {
    let t = tick as f64 / 10.0 + machine as f64;
    let temperature = 60.0 + 8.0 * t.sin() + machine as f64;
    let pressure = 4.0 + 0.5 * (t * 0.7).cos();
    // Every 40 ticks press-2's pressure sensor drops out for a while: stale.
    let quality = if machine == 1 && tick % 40 >= 30 { Quality::Stale } else { Quality::Good };
    [
        ("temperature", Reading::new("temperature", now, (temperature * 100.0).round() / 100.0)),
        (
            "pressure",
            Reading::new("pressure", now, (pressure * 1000.0).round() / 1000.0)
                .with_quality(quality),
        ),
        ("cycles", Reading::new("cycles", now, tick * (machine as u64 + 1))),
    ]
}

#[derive(Default)]
struct Row {
    codec: String,
    value: String,
    quality: String,
    count: u64,
    bytes: usize,
    last: Option<Instant>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut opts =
        MqttOptions::new(format!("shopfloor-demo-{}", std::process::id()), &args.host, args.port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 256);
    let template = TopicTemplate::parse(topic::defaults::READINGS)?;
    let filter = template.filter();

    // Publisher: every tick, each sensor's reading as a one-reading batch on its topic.
    let publisher = client.clone();
    let pub_template = template.clone();
    let period = Duration::from_secs_f64(1.0 / args.rate);
    tokio::spawn(async move {
        let mut tick = 0_u64;
        let mut interval = tokio::time::interval(period);
        loop {
            interval.tick().await;
            let now = Timestamp::now();
            for (m, (machine, codec)) in MACHINES.iter().enumerate() {
                for (sensor, reading) in simulate(m, tick, now) {
                    let levels = [
                        ("site", "plant1"),
                        ("area", "press"),
                        ("machine", *machine),
                        ("sensor", sensor),
                    ];
                    let (Ok(topic), Ok(payload)) = (
                        pub_template.render(&levels),
                        codec.encode_batch(&Batch::new(*machine).with(reading)),
                    ) else {
                        continue;
                    };
                    let props = PublishProperties {
                        content_type: Some(codec.content_type().into()),
                        ..Default::default()
                    };
                    if publisher
                        .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            tick += 1;
        }
    });

    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut errors = 0_u64;
    let mut last_error = String::from("none");
    let started = Instant::now();
    let mut redraw =
        tokio::time::interval(Duration::from_millis(if args.plain { 1000 } else { 250 }));
    let fancy = !args.plain && std::io::stdout().is_terminal();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let stop = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);

    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = redraw.tick() => draw(&rows, errors, &last_error, started, fancy),
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    // Subscribe on every (re)connect, from a task so the poll loop never waits on it.
                    let (c, f) = (client.clone(), filter.clone());
                    tokio::spawn(async move { c.subscribe(f, QoS::AtLeastOnce).await });
                    // One deliberately malformed payload shows how bad input is reported.
                    let c = client.clone();
                    tokio::spawn(async move {
                        let props = PublishProperties { content_type: Some("application/json".into()), ..Default::default() };
                        c.publish_with_properties("shopfloor/plant1/press/press-9/garbage", QoS::AtLeastOnce, false, &b"{\"readings\": [{\"metric\": 1"[..], props).await
                    });
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let ct = p.properties.as_ref().and_then(|pr| pr.content_type.as_deref()).unwrap_or("application/json");
                    match Codec::from_content_type(ct).map_err(anyhow::Error::from).and_then(|c| Ok((c, c.decode_batch(&p.payload)?))) {
                        Ok((codec, batch)) => {
                            for r in batch.readings {
                                let row = rows.entry(topic.clone()).or_default();
                                row.codec = codec.to_string();
                                row.value = r.value.to_string();
                                row.quality = r.quality.to_string();
                                row.count += 1;
                                row.bytes += p.payload.len();
                                row.last = Some(Instant::now());
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            last_error = format!("{topic}: {e:#}");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("mqtt: {e}; retrying in 1 s (is the broker at {}:{} up?)", args.host, args.port);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    let _ = client.disconnect().await;
    draw(&rows, errors, &last_error, started, false);
    let codecs_seen: std::collections::BTreeSet<&str> =
        rows.values().map(|r| r.codec.as_str()).collect();
    println!("stopped: {} topics, codecs decoded: {codecs_seen:?}", rows.len());
    if args.duration.is_some() && codecs_seen.len() < Codec::ALL.len() {
        bail!("not every codec's messages came back: saw {codecs_seen:?}");
    }
    Ok(())
}

fn draw(
    rows: &BTreeMap<String, Row>,
    errors: u64,
    last_error: &str,
    started: Instant,
    fancy: bool,
) {
    let mut out = String::new();
    if fancy {
        out.push_str("\x1b[2J\x1b[H");
    }
    let total: u64 = rows.values().map(|r| r.count).sum();
    let secs = started.elapsed().as_secs_f64().max(0.001);
    out.push_str(&format!(
        "shopfloor demo: {total} readings decoded ({:.1}/s), {errors} malformed payloads refused; Ctrl-C stops\n",
        total as f64 / secs
    ));
    out.push_str(&format!(
        "{:<44} {:<9} {:>14} {:<8} {:>6} {:>8} {:>7}\n",
        "topic", "codec", "value", "quality", "msgs", "avg B", "age ms"
    ));
    for (topic, r) in rows {
        let age = r.last.map_or(0, |t| t.elapsed().as_millis());
        let avg = r.bytes / r.count.max(1) as usize;
        out.push_str(&format!(
            "{topic:<44} {:<9} {:>14} {:<8} {:>6} {avg:>8} {age:>7}\n",
            r.codec, r.value, r.quality, r.count
        ));
    }
    out.push_str(&format!("last refused payload: {last_error}\n"));
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}
