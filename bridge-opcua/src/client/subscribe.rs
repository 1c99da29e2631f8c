//! Subscriptions grouped by publishing interval, their monitored items, and resynchronising them after a silent transfer.

use super::*;

/// A data change as a reading; a bad status with no value repeats the
/// last value with the bad quality (a reading needs a value).
pub(super) fn reading(item: &mut Item, dv: &DataValue, now: Timestamp) -> Option<Reading> {
    let s = convert::sample(dv, now);
    if let Some(u) = s.unsupported {
        item.problem = Some(u.to_string());
    }
    let value = match s.value {
        Some(v) => {
            item.last = Some(v.clone());
            v
        }
        None => item.last.clone()?,
    };
    Some(Reading {
        metric: item.config.metric.as_str().into(),
        timestamp: s.timestamp,
        value,
        quality: s.quality,
    })
}

/// Notifications per publish response: bounded, so that no peer's array
/// or message limit is met by a big server.
pub(super) const MAX_NOTIFICATIONS: u32 = 1000;

/// The subscriptions of a session, by publishing interval.
pub(super) type Subscriptions = BTreeMap<Duration, u32>;

/// Creates the subscriptions (one per publishing interval) and their
/// items, in batches; an item the server refuses only loses that item.
pub(super) async fn subscribe(
    session: &Arc<Session>,
    items: &mut [Item],
    config: &ServerConfig,
    tx: &mpsc::UnboundedSender<Signal>,
) -> Result<Subscriptions, String> {
    for item in items.iter_mut() {
        item.monitored = None;
    }
    resolve(session, items).await?;
    describe(session, items).await?;
    let mut subs = Subscriptions::new();
    let all: Vec<usize> = (0..items.len()).filter(|&i| items[i].info.is_some()).collect();
    monitor(session, items, &mut subs, config, tx, &all).await?;
    Ok(subs)
}

/// Creates monitored items for `which`, making their subscriptions first
/// where needed.
pub(super) async fn monitor(
    session: &Arc<Session>,
    items: &mut [Item],
    subs: &mut Subscriptions,
    config: &ServerConfig,
    tx: &mpsc::UnboundedSender<Signal>,
    which: &[usize],
) -> Result<(), String> {
    let mut groups: BTreeMap<Duration, Vec<usize>> = BTreeMap::new();
    for &i in which {
        if items[i].info.is_some() && items[i].node_id.is_some() {
            groups.entry(items[i].config.publishing_interval).or_default().push(i);
        }
    }
    for (interval, members) in groups {
        let id = match subs.get(&interval) {
            Some(&id) => id,
            None => {
                let data_tx = tx.clone();
                let status_tx = tx.clone();
                let callbacks = SubscriptionCallbacks::new(
                    move |status| {
                        let _ = status_tx.send(Signal::SubscriptionStatus(status.status));
                    },
                    move |dv, item| {
                        let i = item.client_handle() as usize;
                        let _ = data_tx.send(Signal::Data(i.wrapping_sub(1), dv));
                    },
                    |_, _| {},
                );
                // Lifetime: long enough to outlive an outage the library
                // can bridge by reactivating the session (10 min at 1 s).
                let keep_alive = config.keep_alive_count;
                let lifetime = (600_000 / interval.as_millis().max(1) as u32).max(keep_alive * 3);
                let id = session
                    .create_subscription(
                        interval,
                        lifetime,
                        keep_alive,
                        MAX_NOTIFICATIONS,
                        0,
                        true,
                        callbacks,
                    )
                    .await
                    .map_err(|e| format!("CreateSubscription: {e}"))?;
                subs.insert(interval, id);
                id
            }
        };
        for chunk in members.chunks(500) {
            let requests: Vec<MonitoredItemCreateRequest> = chunk
                .iter()
                .map(|&i| {
                    let c = &items[i].config;
                    let filter = match c.deadband {
                        Deadband::None => ExtensionObject::null(),
                        Deadband::Absolute(v) => ExtensionObject::from_message(DataChangeFilter {
                            trigger: DataChangeTrigger::StatusValue,
                            deadband_type: DeadbandType::Absolute as u32,
                            deadband_value: v,
                        }),
                        Deadband::Percent(v) => ExtensionObject::from_message(DataChangeFilter {
                            trigger: DataChangeTrigger::StatusValue,
                            deadband_type: DeadbandType::Percent as u32,
                            deadband_value: v,
                        }),
                    };
                    MonitoredItemCreateRequest {
                        item_to_monitor: ReadValueId::from(
                            items[i].node_id.clone().unwrap_or_default(),
                        ),
                        monitoring_mode: MonitoringMode::Reporting,
                        requested_parameters: MonitoringParameters {
                            client_handle: i as u32 + 1,
                            sampling_interval: c.sampling_interval.as_secs_f64() * 1000.0,
                            filter,
                            queue_size: c.queue_size,
                            discard_oldest: true,
                        },
                    }
                })
                .collect();
            let results = session
                .create_monitored_items(id, TimestampsToReturn::Both, requests)
                .await
                .map_err(|e| format!("CreateMonitoredItems: {e}"))?;
            for (&i, r) in chunk.iter().zip(&results) {
                let status = r.result.status_code;
                let item = &mut items[i];
                if status.is_good() {
                    item.monitored = Some((id, r.result.monitored_item_id));
                    item.problem = None;
                } else {
                    item.problem = Some(format!(
                        "{}: the server refused to monitor it: {status}",
                        item.config.node
                    ));
                    if status == StatusCode::BadNodeIdUnknown {
                        item.node_id = None;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The periodic node check: monitored nodes the server no longer has
/// (asyncua, like many servers, says nothing to a subscription whose node
/// is deleted) go bad at once and their items are deleted; nodes missing
/// or refused before are tried again, and monitored once they exist.
/// Returns the readings of the nodes that went away (last value, bad).
pub(super) async fn check_nodes(
    session: &Arc<Session>,
    items: &mut [Item],
    subs: &mut Subscriptions,
    config: &ServerConfig,
    tx: &mpsc::UnboundedSender<Signal>,
) -> Result<Vec<Reading>, String> {
    let watched: Vec<usize> = (0..items.len()).filter(|&i| items[i].monitored.is_some()).collect();
    let reads: Vec<ReadValueId> = watched
        .iter()
        .map(|&i| ReadValueId {
            node_id: items[i].node_id.clone().unwrap_or_default(),
            attribute_id: AttributeId::NodeClass as u32,
            ..Default::default()
        })
        .collect();
    let classes = if reads.is_empty() { Vec::new() } else { read_chunked(session, &reads).await? };
    let now = Timestamp::now();
    let mut gone = Vec::new();
    for (&i, dv) in watched.iter().zip(&classes) {
        let status = dv.status.unwrap_or(StatusCode::Good);
        if status != StatusCode::BadNodeIdUnknown && status != StatusCode::BadNodeIdInvalid {
            continue;
        }
        let item = &mut items[i];
        if let Some((sub, id)) = item.monitored.take() {
            let _ = session.delete_monitored_items(sub, &[id]).await;
        }
        item.problem = Some(format!("{}: the server no longer has this node", item.config.node));
        item.node_id = None;
        if let Some(value) = item.last.clone() {
            gone.push(Reading {
                metric: item.config.metric.as_str().into(),
                timestamp: now,
                value,
                quality: Quality::Bad,
            });
        }
    }
    // Missing ones: resolve, check they exist, describe, monitor.
    let missing: Vec<usize> = (0..items.len()).filter(|&i| items[i].monitored.is_none()).collect();
    if missing.is_empty() {
        return Ok(gone);
    }
    resolve(session, items).await?;
    let reads: Vec<ReadValueId> = missing
        .iter()
        .filter_map(|&i| items[i].node_id.clone())
        .map(|node_id| ReadValueId {
            node_id,
            attribute_id: AttributeId::NodeClass as u32,
            ..Default::default()
        })
        .collect();
    let with_id: Vec<usize> =
        missing.iter().copied().filter(|&i| items[i].node_id.is_some()).collect();
    let classes = if reads.is_empty() { Vec::new() } else { read_chunked(session, &reads).await? };
    let mut back = Vec::new();
    for (&i, dv) in with_id.iter().zip(&classes) {
        if dv.status.is_none_or(|s| s.is_good()) {
            back.push(i);
        } else {
            items[i].node_id = None;
        }
    }
    describe(session, items).await?;
    monitor(session, items, subs, config, tx, &back).await?;
    Ok(gone)
}

/// Reads every bridged node's current value for the birth.
pub(super) async fn resync(
    session: &Session,
    items: &mut [Item],
    server: &str,
) -> Result<(Vec<MetricInfo>, Batch), String> {
    let live: Vec<usize> = (0..items.len()).filter(|&i| items[i].info.is_some()).collect();
    let reads: Vec<ReadValueId> = live
        .iter()
        .map(|&i| ReadValueId::from(items[i].node_id.clone().unwrap_or_default()))
        .collect();
    let values = if reads.is_empty() { Vec::new() } else { read_chunked(session, &reads).await? };
    let now = Timestamp::now();
    let mut metrics = Vec::new();
    let mut batch = Batch::new(server);
    for (&i, dv) in live.iter().zip(&values) {
        let item = &mut items[i];
        if let Some(info) = &item.info {
            metrics.push(info.clone());
        }
        match reading(item, dv, now) {
            Some(r) => batch.readings.push(r),
            None => {
                // No value yet (bad at the source): a placeholder of the
                // right type, marked bad, so the birth names the metric.
                let value =
                    placeholder(item.info.as_ref().map_or(DataType::Double, |m| m.datatype));
                batch.readings.push(Reading {
                    metric: item.config.metric.as_str().into(),
                    timestamp: now,
                    value,
                    quality: Quality::Bad,
                });
            }
        }
    }
    Ok((metrics, batch))
}

pub(super) fn placeholder(t: DataType) -> Value {
    match t {
        DataType::Boolean => Value::Bool(false),
        DataType::String | DataType::Text => Value::String(String::new()),
        DataType::Bytes => Value::Bytes(Vec::new().into()),
        DataType::UInt64 => Value::U64(0),
        DataType::Float | DataType::Double => Value::F64(0.0),
        _ => Value::I64(0),
    }
}
