//! Gateway API semantics: a pure, deterministic function from [`Inputs`] to
//! the IR plus every status condition. No clocks, no I/O.

use std::collections::BTreeMap;

pub use crate::inputs::Changes;
use crate::inputs::{Inputs, Kind, ObjKey};
use crate::ir;
use crate::status::{ObjectStatus, StatusSet};

mod addresses;
mod attach;
pub mod backend;
pub mod backend_tls;
pub mod conditions;
mod frontend_tls;
mod gateway;
mod gatewayclass;
mod grpc;
pub mod hostname;
mod http;
mod http_policy;
mod index;
mod l4;
mod listener;
mod listenerset;
mod refgrant;
pub mod session;
mod tables;
pub mod validate;

pub use backend::endpoints;
pub use gatewayclass::supported_features;

/// What one translation produces.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub model: ir::Model,
    pub status: StatusSet,
}

/// Translates a snapshot from scratch.
pub fn translate(inputs: &Inputs) -> Output {
    let mut t = Translator::default();
    let up = t.update(inputs, &Changes::everything());
    Output {
        model: std::sync::Arc::unwrap_or_clone(up.model),
        status: t.into_status(),
    }
}

/// A translator that keeps its work between runs: when only routes (and
/// endpoints) changed, it recompiles just those routes and rebuilds just the
/// virtual hosts they touch. Anything else (Gateways, Services, grants,
/// namespaces, ...) starts over. Either way the result is exactly what
/// [`translate`] returns for the same inputs (a test checks this).
#[derive(Default)]
pub struct Translator {
    state: Option<State>,
}

struct State {
    gateways: GatewayMap,
    routes: index::RouteIndex,
    status: StatusSet,
}

/// What one [`Translator::update`] did.
#[derive(Debug)]
pub struct Update {
    pub model: std::sync::Arc<ir::Model>,
    /// Everything was re-translated (else only the changed routes).
    pub full: bool,
    /// Status objects that may have changed: `None` means all of them.
    pub touched: Option<Vec<(Kind, ObjKey)>>,
    /// The status the touched objects had before (absent: none).
    pub previous: StatusSet,
}

/// Kinds whose changes an incremental update handles.
const INCREMENTAL_KINDS: [Kind; 6] = [
    Kind::HTTPRoute,
    Kind::GRPCRoute,
    Kind::TLSRoute,
    Kind::TCPRoute,
    Kind::UDPRoute,
    Kind::EndpointSlice,
];

impl Translator {
    /// The status of everything, as of the last update.
    pub fn status(&self) -> &StatusSet {
        static EMPTY: std::sync::OnceLock<StatusSet> = std::sync::OnceLock::new();
        match &self.state {
            Some(s) => &s.status,
            None => EMPTY.get_or_init(StatusSet::default),
        }
    }

    fn into_status(self) -> StatusSet {
        self.state.map(|s| s.status).unwrap_or_default()
    }

    /// The certificates the served `model` presents, with their `notAfter`
    /// (see [`crate::certs::Served`]).
    pub fn served_certificates(&self, model: &ir::Model) -> Vec<crate::certs::Served> {
        let mut out = Vec::new();
        let Some(st) = &self.state else { return out };
        for (key, gw) in &model.gateways {
            let mut push = |sds: &str, listener: String| {
                let (Some(cert), Some((ns, name))) = (gw.secrets.get(sds), sds.split_once('/'))
                else {
                    return;
                };
                if let Ok(not_after) = crate::certs::not_after(&cert.certificate_chain) {
                    out.push(crate::certs::Served {
                        secret: ObjKey::new(ns, name),
                        gateway: key.clone(),
                        listener,
                        not_after,
                    });
                }
            };
            if let Some(gs) = st.gateways.get(key) {
                for l in gs.listeners.iter().filter(|l| l.programmable()) {
                    let name = match &l.parent {
                        Some(ls) => format!("{}/{}", ls.name, l.name),
                        None => l.name.clone(),
                    };
                    for sds in &l.secrets {
                        push(sds, name.clone());
                    }
                }
            }
            // The rest: the client certificate to TLS backends.
            let client = gw
                .clusters
                .values()
                .filter_map(|c| c.tls.as_ref()?.client_certificate.as_deref())
                .collect::<std::collections::BTreeSet<_>>();
            for sds in client {
                push(sds, String::new());
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Re-reads endpoints of the resolved clusters (only EndpointSlices
    /// changed); returns them by cluster name.
    pub fn refresh_endpoints(&mut self, inputs: &Inputs) -> Option<&BTreeMap<String, ir::Cluster>> {
        self.state
            .as_mut()
            .map(|s| s.routes.refresh_endpoints(inputs))
    }

    /// Brings the translation up to date with `inputs`, of which `changes`
    /// changed since the last update.
    pub fn update(&mut self, inputs: &Inputs, changes: &Changes) -> Update {
        let incremental = self.state.is_some() && changes.only(&INCREMENTAL_KINDS);
        let (full, touched, previous) = match (&mut self.state, incremental) {
            (Some(st), true) => {
                let (touched, previous) = st.apply(inputs, changes);
                (false, Some(touched), previous)
            }
            _ => {
                let mut new = State::new(inputs);
                let old = match self.state.take() {
                    Some(State {
                        gateways,
                        routes,
                        status,
                    }) => {
                        // Unchanged virtual hosts keep their value (and its
                        // encoding) from the previous translation.
                        new.routes.adopt_equal_vhosts(&routes);
                        // Freeing a large index takes milliseconds nobody
                        // needs to wait for: it happens off the update path.
                        let _ = std::thread::Builder::new()
                            .name("free-index".into())
                            .spawn(move || drop((gateways, routes)));
                        status
                    }
                    None => StatusSet::default(),
                };
                self.state = Some(new);
                (true, None, old)
            }
        };
        let st = self.state.get_or_insert_with(|| State::new(inputs));
        let mut model = ir::Model::default();
        for gw in st.gateways.values() {
            let mut gw_ir = st.routes.gateway_ir(gw);
            if let Some(Ok(cert)) = backend_tls::client_certificate(inputs, &gw.key) {
                backend_tls::apply_client_certificate(&mut gw_ir, &cert);
            }
            model.gateways.insert(gw.key.clone(), gw_ir);
        }
        let (mut touched, mut previous) = (touched, previous);
        st.sync_policy_status(inputs, &model, touched.as_mut(), &mut previous);
        Update {
            model: std::sync::Arc::new(model),
            full,
            touched,
            previous,
        }
    }
}

impl State {
    fn new(inputs: &Inputs) -> State {
        let mut status = StatusSet::default();
        let classes = gatewayclass::gateway_classes(inputs, &mut status);
        let mut gateways = gateway::gateways(inputs, &classes);
        let mut routes = index::RouteIndex::new(&gateways);
        let items = index::RouteInput::all(inputs);
        let all_parents = routes.add_all(inputs, &items, &mut gateways);
        for (it, parents) in items.iter().zip(all_parents) {
            if !parents.is_empty() {
                status
                    .objects
                    .insert((it.kind, it.key.clone()), ObjectStatus::Route { parents });
            }
        }
        routes.refresh();
        for gw in gateways.values() {
            status.objects.extend(gateway_statuses(inputs, gw));
        }
        State {
            gateways,
            routes,
            status,
        }
    }

    /// Re-translates the changed routes; returns the touched status keys and
    /// their previous status.
    fn apply(&mut self, inputs: &Inputs, changes: &Changes) -> (Vec<(Kind, ObjKey)>, StatusSet) {
        let mut touched = Vec::new();
        let mut previous = StatusSet::default();
        if changes
            .objects
            .iter()
            .any(|(k, _)| *k == Kind::EndpointSlice)
        {
            self.routes.refresh_endpoints(inputs);
        }
        for (kind, key) in &changes.objects {
            if !index::ROUTE_KINDS.contains(kind) {
                continue;
            }
            let rk = (*kind, key.clone());
            self.routes.remove(&rk, &mut self.gateways);
            let parents = index::RouteInput::of(inputs, *kind, key)
                .map(|r| self.routes.add(inputs, &r, &mut self.gateways))
                .unwrap_or_default();
            let old = if parents.is_empty() {
                self.status.objects.remove(&rk)
            } else {
                self.status
                    .objects
                    .insert(rk.clone(), ObjectStatus::Route { parents })
            };
            if let Some(old) = old {
                previous.objects.insert(rk.clone(), old);
            }
            touched.push(rk);
        }
        self.routes.refresh();
        // attachedRoutes counts may have moved.
        for gw in self.gateways.values() {
            for (key, new) in gateway_statuses(inputs, gw) {
                if self.status.objects.get(&key) != Some(&new) {
                    if let Some(old) = self.status.objects.insert(key.clone(), new) {
                        previous.objects.insert(key.clone(), old);
                    }
                    touched.push(key);
                }
            }
        }
        (touched, previous)
    }
}

impl State {
    /// Brings BackendTLSPolicy statuses up to date with `model` (their
    /// ancestors are the Gateways whose routes use their Services).
    fn sync_policy_status(
        &mut self,
        inputs: &Inputs,
        model: &ir::Model,
        mut touched: Option<&mut Vec<(Kind, ObjKey)>>,
        previous: &mut StatusSet,
    ) {
        let new = backend_tls::statuses(inputs, model);
        let start = (Kind::BackendTLSPolicy, ObjKey::default());
        let gone: Vec<(Kind, ObjKey)> = self
            .status
            .objects
            .range(start..)
            .take_while(|((k, _), _)| *k == Kind::BackendTLSPolicy)
            .map(|(k, _)| k.clone())
            .filter(|k| !new.contains_key(k))
            .collect();
        let mut note = |k: (Kind, ObjKey), old: Option<ObjectStatus>| {
            if let Some(t) = touched.as_deref_mut() {
                if let Some(old) = old {
                    previous.objects.insert(k.clone(), old);
                }
                t.push(k);
            }
        };
        for k in gone {
            let old = self.status.objects.remove(&k);
            note(k, old);
        }
        for (k, v) in new {
            if self.status.objects.get(&k) != Some(&v) {
                let old = self.status.objects.insert(k.clone(), v);
                note(k, old);
            }
        }
    }
}

/// A Gateway's statuses (and its ListenerSets'), with the `ResolvedRefs`
/// condition of its backend client certificate when it names one.
fn gateway_statuses(
    inputs: &Inputs,
    gw: &gateway::GatewayState,
) -> Vec<((Kind, ObjKey), ObjectStatus)> {
    let mut out = gw.statuses();
    if let Some(c) = backend_tls::gateway_condition(inputs, &gw.key, gw.generation) {
        for ((kind, _), st) in out.iter_mut() {
            if let (Kind::Gateway, ObjectStatus::Gateway { conditions, .. }) = (*kind, st) {
                conditions.push(c.clone());
            }
        }
    }
    out
}

/// Generation of an object (1 when the manifest has none, as in standalone files).
pub(crate) fn generation(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> i64 {
    meta.generation.unwrap_or(1)
}

pub(crate) type GatewayMap = BTreeMap<ObjKey, gateway::GatewayState>;
