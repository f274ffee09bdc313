//! NACK isolation in Kubernetes mode: feed every ACK/NACK to the engine;
//! objects it quarantines are recorded as changed (the loop re-translates
//! them at their last accepted content, or without them) and get a Warning
//! Event from the lease holder.

use crate::engine::Engine;
use crate::inputs::{Changes, Kind, ObjKey};
use crate::provider::kube::events;
use crate::provider::kube::status::RawObjects;
use crate::xds::cache::XdsEvent;

/// An object just quarantined, with the condition message it reports.
pub(super) type Quarantined = (Kind, ObjKey, String);

pub(super) fn isolate(
    engine: &mut Engine,
    ev: &XdsEvent,
    changes: &mut Changes,
    out: &mut Vec<Quarantined>,
) {
    for (kind, key) in engine.on_xds_event(ev) {
        changes.record(kind, &key);
        let msg = engine
            .quarantined()
            .get(&(kind, key.clone()))
            .map(|e| e.message())
            .unwrap_or_default();
        out.push((kind, key, msg));
    }
}

pub(super) async fn publish_events(
    recorder: &kube::runtime::events::Recorder,
    items: Vec<Quarantined>,
    raw: &RawObjects,
) {
    for (kind, key, msg) in items {
        events::publish_rejected(recorder, kind, &key, &msg, raw).await;
    }
}
