//! Helpers shared by the driver tests (`drivers.rs`, `interop.rs`).

use std::time::Duration;

use shopfloor_mqtt::{Broker, DriverConfig, HostDriver};
use shopfloor_sparkplug::{HostApplication, HostConfig, HostEvent};
use shopfloor_testkit::Mosquitto;
use tokio::time::timeout;

/// How long a test waits for what a driver should do.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A driver on `broker` that retries fast (from 50 ms up to 400 ms) and
/// notices a dead broker within seconds (5 s keep-alive).
pub(crate) fn config(client_id: &str, broker: &Mosquitto) -> DriverConfig {
    let mut c = DriverConfig::new(client_id, Broker::new(broker.host(), broker.port()));
    c.backoff_min = Duration::from_millis(50);
    c.backoff_max = Duration::from_millis(400);
    c.connection.keep_alive = Duration::from_secs(5);
    c
}

/// Host application `scada`.
pub(crate) fn scada(config: DriverConfig) -> HostDriver {
    HostDriver::spawn(HostApplication::new(HostConfig::new("scada")), config)
}

/// The first host event that `matches`, within [`WAIT`].
pub(crate) async fn host_event(
    h: &mut HostDriver,
    what: &str,
    matches: impl Fn(&HostEvent) -> bool,
) -> HostEvent {
    let found = timeout(WAIT, async {
        loop {
            let e = h.next_event().await.expect("the host driver stopped");
            if matches(&e) {
                return e;
            }
        }
    });
    found.await.unwrap_or_else(|_| panic!("no host event {what} within {WAIT:?}"))
}
