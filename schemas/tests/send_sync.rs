//! Every public type can cross threads.

use shopfloor_schemas::*;

fn is_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn public_types_are_send_and_sync() {
    is_send_sync::<Batch>();
    is_send_sync::<Reading>();
    is_send_sync::<Value>();
    is_send_sync::<Quality>();
    is_send_sync::<Timestamp>();
    is_send_sync::<Codec>();
    is_send_sync::<TopicTemplate>();
    is_send_sync::<DecodeError>();
    is_send_sync::<EncodeError>();
    is_send_sync::<TopicError>();
    is_send_sync::<UnknownCodec>();
}
