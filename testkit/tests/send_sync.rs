//! The handles can move to and be shared with other threads and tasks.

use shopfloor_testkit::{
    Error, FaultProxy, Mosquitto, MosquittoBuilder, Pki, Postgres, PostgresBuilder,
};

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}

#[test]
fn handles_are_send_and_sync() {
    is_send::<Mosquitto>();
    is_sync::<Mosquitto>();
    is_send::<MosquittoBuilder>();
    is_send::<Postgres>();
    is_sync::<Postgres>();
    is_send::<PostgresBuilder>();
    is_send::<FaultProxy>();
    is_sync::<FaultProxy>();
    is_send::<Pki>();
    is_sync::<Pki>();
    is_send::<Error>();
    is_sync::<Error>();
}
