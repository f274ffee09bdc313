//! Gateway API semantics: a pure, deterministic function from [`Inputs`] to
//! the IR plus every status condition. No clocks, no I/O.

use std::collections::BTreeMap;

use crate::inputs::{Inputs, Kind, ObjKey};
use crate::ir;
use crate::status::{ObjectStatus, StatusSet};

pub mod backend;
pub mod conditions;
mod gateway;
mod grpc;
pub mod hostname;
mod http;
mod refgrant;

pub use backend::endpoints;
pub use gateway::supported_features;

/// What one translation produces.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub model: ir::Model,
    pub status: StatusSet,
}

/// Translates a snapshot.
pub fn translate(inputs: &Inputs) -> Output {
    let mut status = StatusSet::default();
    let classes = gateway::gateway_classes(inputs, &mut status);
    let mut gateways = gateway::gateways(inputs, &classes);
    let routes = http::attach_routes(inputs, &mut gateways);

    let mut model = ir::Model::default();
    for gw in gateways.values() {
        let ir_gw = http::build_gateway_ir(gw, &routes);
        model.gateways.insert(gw.key.clone(), ir_gw);
    }
    for gw in gateways.values() {
        status
            .objects
            .insert((Kind::Gateway, gw.key.clone()), gw.status());
    }
    for (key, parents) in routes.statuses {
        status.objects.insert(key, ObjectStatus::Route { parents });
    }
    Output { model, status }
}

/// Generation of an object (1 when the manifest has none, as in standalone files).
pub(crate) fn generation(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.generation.unwrap_or(1)
}

pub(crate) type GatewayMap = BTreeMap<ObjKey, gateway::GatewayState>;
