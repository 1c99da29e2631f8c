//! Subscriptions grouped by publishing interval, their monitored items, and resynchronising them after a silent transfer.

use super::*;

/// Notifications per publish response: bounded, so that no peer's array
/// or message limit is met by a big server.
pub(super) const MAX_NOTIFICATIONS: u32 = 1000;

/// The subscriptions of a session, by publishing interval.
pub(super) type Subscriptions = BTreeMap<Duration, u32>;

/// What subscribing needs of a connection: its session, its server's
/// configuration, and the channel the notifications go to.
#[derive(Clone, Copy)]
pub(super) struct Monitoring<'a> {
    pub(super) session: &'a Arc<Session>,
    pub(super) config: &'a ServerConfig,
    pub(super) tx: &'a mpsc::UnboundedSender<Signal>,
}

/// Creates the subscriptions (one per publishing interval) and their
/// items, in batches; an item the server refuses only loses that item.
pub(super) async fn subscribe(
    m: Monitoring<'_>,
    items: &mut Items,
) -> Result<Subscriptions, String> {
    items.unmonitor_all();
    resolve(m.session, items).await?;
    describe(m.session, items).await?;
    let mut subs = Subscriptions::new();
    let all = items.bridged();
    monitor(m, items, &mut subs, &all).await?;
    Ok(subs)
}

/// Creates monitored items for `which`, making their subscriptions first
/// where needed.
pub(super) async fn monitor(
    m: Monitoring<'_>,
    items: &mut Items,
    subs: &mut Subscriptions,
    which: &[usize],
) -> Result<(), String> {
    let Monitoring { session, config, tx } = m;
    for (interval, members) in items.monitor_groups(which) {
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
                .filter_map(|&i| Some((i, items.get(i)?.config())))
                .map(|(i, c)| {
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
                        item_to_monitor: ReadValueId::from(node_id(items, i)),
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
                items.monitored(i, id, r.result.monitored_item_id, r.result.status_code);
            }
        }
    }
    Ok(())
}

/// The NodeClass of each of the nodes `indices` (read in chunks): a Good
/// status says the node exists.
async fn node_classes(
    session: &Session,
    items: &Items,
    indices: &[usize],
) -> Result<Vec<DataValue>, String> {
    let reads: Vec<ReadValueId> = indices
        .iter()
        .map(|&i| ReadValueId {
            node_id: node_id(items, i),
            attribute_id: AttributeId::NodeClass as u32,
            ..Default::default()
        })
        .collect();
    if reads.is_empty() { Ok(Vec::new()) } else { read_chunked(session, &reads).await }
}

/// The periodic node check: monitored nodes the server no longer has
/// (asyncua, like many servers, says nothing to a subscription whose node
/// is deleted) go bad at once and their items are deleted; nodes missing
/// or refused before are tried again, and monitored once they exist.
/// Returns the readings of the nodes that went away (last value, bad).
pub(super) async fn check_nodes(
    m: Monitoring<'_>,
    items: &mut Items,
    subs: &mut Subscriptions,
) -> Result<Vec<Reading>, String> {
    let session = m.session;
    let watched = items.watched();
    let classes = node_classes(session, items, &watched).await?;
    let now = Now::now();
    let mut gone = Vec::new();
    for (&i, dv) in watched.iter().zip(&classes) {
        let Some(g) = items.gone(i, dv.status, now) else { continue };
        if let Some((sub, id)) = g.monitored {
            let _ = session.delete_monitored_items(sub, &[id]).await;
        }
        gone.extend(g.reading);
    }
    // Missing ones: resolve, check they exist, describe, monitor.
    let missing = items.missing();
    if missing.is_empty() {
        return Ok(gone);
    }
    resolve(session, items).await?;
    let with_id: Vec<usize> = missing
        .iter()
        .copied()
        .filter(|&i| items.get(i).is_some_and(|i| i.node_id().is_some()))
        .collect();
    let classes = node_classes(session, items, &with_id).await?;
    let mut back = Vec::new();
    for (&i, dv) in with_id.iter().zip(&classes) {
        if items.back(i, dv.status) {
            back.push(i);
        }
    }
    describe(session, items).await?;
    monitor(m, items, subs, &back).await?;
    Ok(gone)
}

/// Reads every bridged node's current value for the birth.
pub(super) async fn resync(session: &Session, items: &mut Items) -> Result<ServerEvent, String> {
    let live = items.bridged();
    let reads: Vec<ReadValueId> =
        live.iter().map(|&i| ReadValueId::from(node_id(items, i))).collect();
    let values = if reads.is_empty() { Vec::new() } else { read_chunked(session, &reads).await? };
    Ok(items.birth(&live, &values, Now::now()))
}
