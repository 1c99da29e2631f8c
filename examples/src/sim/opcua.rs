//! A machine as an OPC UA server (async-opcua's), as a PLC with an
//! embedded server: one object per machine under Objects, one variable per
//! sensor, `ns=urn:shopfloor:sim;s={machine}/{metric}`, values changing
//! every tick. A dropped-out sensor reads `BadSensorFailure`; an offline
//! machine's server stops (every session ends) and starts again after.
//!
//! Security policy None with anonymous access: the simulator stands in for
//! devices on a test bench, not for a hardened server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opcua::server::ServerBuilder;
use opcua::server::address_space::VariableBuilder;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::types::{DataTypeId, DataValue, DateTime, NodeId, QualifiedName, StatusCode, Variant};
use tokio::net::TcpListener;

use super::model::{Signal, Value};
use super::{Sim, Stop, now_s, until};

/// The namespace of every simulated node.
pub const NAMESPACE: &str = "urn:shopfloor:sim";

/// The servers' application URI.
const APPLICATION_URI: &str = "urn:shopfloor:sim:server";

/// The string identifier of a sensor's node.
pub fn node_name(machine: &str, metric: &str) -> String {
    format!("{machine}/{metric}")
}

/// A sensor's node id with its namespace by URI, as the gateway's
/// deployment file names it.
pub fn node_id_text(machine: &str, metric: &str) -> String {
    format!("nsu={NAMESPACE};s={}", node_name(machine, metric))
}

fn variant(v: Value) -> Variant {
    match v {
        Value::F64(x) => Variant::Double(x),
        Value::U32(n) => Variant::UInt32(n),
        Value::Bool(b) => Variant::Boolean(b),
    }
}

/// Serves machine `index` on `listener` until `stop`, values changing every
/// `tick`; stops while a scripted `offline` fault is on. `pki_dir` holds
/// the server's certificate (made on first start; share it between
/// machines so it is made once).
pub async fn serve(
    sim: Arc<Sim>,
    index: usize,
    listener: TcpListener,
    pki_dir: PathBuf,
    tick: Duration,
    stop: Stop,
) -> anyhow::Result<()> {
    let name = &sim.plant.machines[index].name;
    let (sim, pki_dir, stop) = (&sim, &pki_dir, &stop);
    let what = "OPC UA server stopped";
    sim.serve_machine(index, listener, stop, what, move |l, addr| async move {
        let (server, handle, nodes) = build(sim, index, addr, pki_dir)?;
        let manager = handle
            .node_managers()
            .get_of_type::<SimpleNodeManager>()
            .context("the simulator's node manager is missing")?;
        let subscriptions = handle.subscriptions().clone();
        let run = server.run_with(l);
        tokio::pin!(run);
        let updates = async {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let now = now_s();
                let stamp = DateTime::now();
                let values: Vec<DataValue> = (0..nodes.len())
                    .map(|j| {
                        let (value, status) = match sim.plant.reading(index, j, sim.start_s, now) {
                            Some(v) => (Some(variant(v)), StatusCode::Good),
                            None => (None, StatusCode::BadSensorFailure),
                        };
                        // No picosecond fields: asyncua reads 0 as a bogus time.
                        DataValue {
                            value,
                            status: Some(status),
                            source_timestamp: Some(stamp),
                            server_timestamp: Some(stamp),
                            ..DataValue::null()
                        }
                    })
                    .collect();
                let updates = nodes.iter().zip(values).map(|(id, dv)| (id, None, dv));
                if let Err(e) = manager.set_values(&subscriptions, updates) {
                    tracing::warn!(machine = %name, "setting values: {e}");
                }
                sim.stats
                    .opcua_updates
                    .fetch_add(nodes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let offline = tokio::select! {
            r = &mut run => anyhow::bail!("{name}: OPC UA server on {addr} stopped: {r:?}"),
            () = updates => unreachable!("the update loop does not end"),
            () = until(|| !sim.online(index)) => true,
            () = stop.wait() => false,
        };
        handle.cancel();
        if tokio::time::timeout(Duration::from_secs(5), &mut run).await.is_err() {
            tracing::warn!(machine = %name, "OPC UA server took over 5 s to stop");
        }
        Ok(offline)
    })
    .await
}

/// Makes the servers' certificate in `pki_dir` if it is not there yet, so
/// that the servers, started together, do not each make one.
pub fn prepare_pki(pki_dir: &Path) -> anyhow::Result<()> {
    ServerBuilder::new_anonymous("shopfloor-sim")
        .application_uri(APPLICATION_URI)
        .pki_dir(pki_dir)
        .create_sample_keypair(true)
        .build()
        .map(drop)
        .map_err(|e| {
            anyhow::anyhow!("{}: cannot make the OPC UA certificate: {e}", pki_dir.display())
        })
}

/// The server of one machine, and its sensors' node ids.
fn build(
    sim: &Sim,
    index: usize,
    addr: std::net::SocketAddr,
    pki_dir: &Path,
) -> anyhow::Result<(opcua::server::Server, opcua::server::ServerHandle, Vec<NodeId>)> {
    let machine = &sim.plant.machines[index];
    let namespace = NamespaceMetadata { namespace_uri: NAMESPACE.into(), ..Default::default() };
    let (server, handle) = ServerBuilder::new_anonymous(format!("shopfloor-sim {}", machine.name))
        // One application URI for all (they share one certificate), not
        // the namespace's: the server's diagnostics claim that one.
        .application_uri(APPLICATION_URI)
        .product_uri("urn:shopfloor:sim")
        .host(addr.ip().to_string())
        .port(addr.port())
        .pki_dir(pki_dir)
        .create_sample_keypair(true)
        .trust_client_certs(true)
        .with_node_manager(simple_node_manager(namespace, "shopfloor-sim"))
        .build()
        .map_err(|e| anyhow::anyhow!("{}: cannot build the OPC UA server: {e}", machine.name))?;
    let ns = handle
        .get_namespace_index(NAMESPACE)
        .context("the simulator's namespace was not registered")?;
    let manager = handle
        .node_managers()
        .get_of_type::<SimpleNodeManager>()
        .context("the simulator's node manager is missing")?;
    let space = manager.address_space();
    let mut space = space.write();
    let folder = NodeId::new(ns, machine.name.clone());
    space.add_folder(
        &folder,
        QualifiedName::new(ns, machine.name.as_str()),
        machine.name.as_str(),
        &NodeId::objects_folder_id(),
    );
    let mut ids = Vec::new();
    for spec in machine.sensors() {
        let id = NodeId::new(ns, node_name(&machine.name, spec.metric));
        let (data_type, initial) = match spec.signal {
            Signal::Analog { .. } => (DataTypeId::Double, Variant::Double(0.0)),
            Signal::Counter { .. } => (DataTypeId::UInt32, Variant::UInt32(0)),
            Signal::State { .. } => (DataTypeId::Boolean, Variant::Boolean(false)),
        };
        let inserted = VariableBuilder::new(&id, QualifiedName::new(ns, spec.metric), spec.metric)
            .data_type(data_type)
            .value(initial)
            .organized_by(folder.clone())
            .insert(&mut *space);
        debug_assert!(inserted, "{id} is new");
        ids.push(id);
    }
    drop(space);
    Ok((server, handle, ids))
}
