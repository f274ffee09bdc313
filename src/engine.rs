//! Runs the pipeline for a provider and feeds the xDS cache: an incremental
//! translation of what changed (see [`Translator`]), and an EDS-only update
//! (no route re-translation) when only EndpointSlices did.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::inputs::{Changes, Inputs};
use crate::status::StatusSet;
use crate::translate::{Translator, Update};
use crate::xds;
use crate::xds::build::Builder;
use crate::xds::cache::Cache;

pub struct Engine {
    cache: Arc<Cache>,
    translator: Translator,
    builder: Builder,
    pub version: u64,
    /// Rules that can never match, as of the last translation.
    shadow: crate::ir::shadow::report::Tracker,
    latest: ModelHandle,
    certificates: crate::certs::Metrics,
    served: Vec<crate::certs::Served>,
    /// Objects Envoy rejected (NACK isolation).
    quarantine: crate::quarantine::Quarantine,
    /// The translator's status with the quarantine's reports (only while
    /// something is quarantined).
    overlaid: Option<StatusSet>,
    /// LDS/RDS ACKs arrived since the confirmation floor was last computed.
    acks_unsettled: bool,
}

/// Routes only reach Envoy through listeners and route tables: a change is
/// confirmed once every node runs these types at or after it.
const CONFIRMING: [&str; 3] = [
    xds::type_url::LISTENER,
    xds::type_url::SCOPED_ROUTE,
    xds::type_url::ROUTE,
];

/// The model being served (with current endpoints), for `explain` over the
/// admin API. Cloning the handle is cheap; reading it clones an `Arc`.
#[derive(Clone, Default)]
pub struct ModelHandle(Arc<std::sync::Mutex<Arc<crate::ir::Model>>>);

impl ModelHandle {
    pub fn get(&self) -> Arc<crate::ir::Model> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub(crate) fn set(&self, m: Arc<crate::ir::Model>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = m;
    }
    /// Replaces the endpoints of the named clusters.
    fn refresh(&self, clusters: &BTreeMap<String, crate::ir::Cluster>) {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let model = Arc::make_mut(&mut guard);
        for gw in model.gateways.values_mut() {
            for (name, c) in gw.clusters.iter_mut() {
                if let Some(new) = clusters.get(name) {
                    c.endpoints.clone_from(&new.endpoints);
                    c.split.clone_from(&new.split);
                }
            }
        }
    }
}

impl Engine {
    pub fn new(cache: Arc<Cache>) -> Self {
        Engine {
            cache,
            translator: Translator::default(),
            builder: Builder::default(),
            version: 0,
            shadow: Default::default(),
            latest: ModelHandle::default(),
            certificates: Default::default(),
            served: Vec::new(),
            quarantine: Default::default(),
            overlaid: None,
            acks_unsettled: false,
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Envoy configuration choices of the operator (access log, ...).
    pub fn with_build_options(mut self, options: crate::xds::build::Options) -> Self {
        self.builder = Builder::with_options(options);
        self
    }

    /// Publishes each served model (for explain) through `handle`.
    pub fn with_model_handle(mut self, handle: ModelHandle) -> Self {
        self.latest = handle;
        self
    }

    /// The status of everything as of the last translation.
    pub fn status(&self) -> &StatusSet {
        self.overlaid
            .as_ref()
            .unwrap_or_else(|| self.translator.status())
    }

    /// Objects quarantined because Envoy rejected what they produced.
    pub fn quarantined(&self) -> &BTreeMap<crate::quarantine::Src, crate::quarantine::Entry> {
        self.quarantine.entries()
    }

    /// Confirms the changes every node now runs (LDS and RDS, those it
    /// subscribes to, at or after the change): they are no longer suspects
    /// of a later NACK. Call it once a burst of ACKs has settled.
    pub fn settle_acks(&mut self) {
        if std::mem::take(&mut self.acks_unsettled) {
            if let Some(floor) = self.cache.acked_floor(&CONFIRMING) {
                self.quarantine.on_ack(floor);
            }
        }
    }

    /// Feeds an ACK/NACK to the NACK isolation. Returns the objects newly
    /// quarantined: the caller re-translates (with them recorded as changed,
    /// e.g. [`Engine::translate`] with [`Changes`] naming them) so the
    /// rebuild without them goes out.
    pub fn on_xds_event(&mut self, ev: &xds::cache::XdsEvent) -> Vec<crate::quarantine::Src> {
        use xds::cache::XdsEvent;
        match ev {
            XdsEvent::Ack { type_url, .. } => {
                // Only LDS/RDS ACKs can confirm a change, and only pending
                // changes need confirming; the fleet-wide floor is computed
                // once per burst ([`Engine::settle_acks`]): a change to N
                // nodes brings 5×N ACKs, each floor walks N nodes.
                if CONFIRMING.contains(&type_url.as_str()) && self.quarantine.awaits_confirmation()
                {
                    self.acks_unsettled = true;
                }
                Vec::new()
            }
            XdsEvent::Nack {
                node,
                type_url,
                version,
                error,
                resource_names,
            } => {
                // What the fleet confirmed before this NACK is not a suspect.
                self.settle_acks();
                let acked = self
                    .cache
                    .node_states()
                    .iter()
                    .filter(|n| &n.node_id == node)
                    .filter_map(|n| n.types.get(type_url).map(|t| t.acked_version))
                    .min()
                    .unwrap_or(0);
                self.quarantine
                    .on_nack(
                        node,
                        *version,
                        acked,
                        error,
                        resource_names,
                        self.translator.status(),
                    )
                    .quarantined
            }
        }
    }

    /// The certificates served, as of the last translation.
    pub fn served_certificates(&self) -> &[crate::certs::Served] {
        &self.served
    }

    /// Rules that can never match (shadowed), as of the last translation.
    pub fn shadowed(&self) -> &crate::ir::shadow::report::Tracker {
        &self.shadow
    }

    /// Translates what changed, builds and publishes the snapshot; returns
    /// the update (for status) and the snapshot (for debug views).
    pub fn translate(&mut self, inputs: &Inputs, changes: &Changes) -> (Update, xds::Snapshot) {
        let t0 = Instant::now();
        let next = self.cache.current().version + 1;
        let lifted = self.quarantine.observe(inputs, changes, next);
        let mut changes = changes.clone();
        for (kind, key) in &lifted {
            changes.record(*kind, key);
        }
        let inputs = self.quarantine.apply(inputs, &mut changes);
        let up = self.translator.update(&inputs, &changes);
        let t1 = Instant::now();
        let snap = self.builder.build(&up.model);
        let t2 = Instant::now();
        self.latest.set(up.model.clone());
        let mode = if up.full { "full" } else { "incremental" };
        crate::pipeline::observe(t1 - t0, t2 - t1);
        crate::metrics::catalogue::TRANSLATIONS.inc([mode]);
        self.version = self.cache.set_snapshot(snap.clone());
        self.quarantine.record(self.version, up.model.clone());
        self.overlaid = (!self.quarantine.is_empty())
            .then(|| self.quarantine.overlay_status(self.translator.status()));
        // After the push: off the propagation path.
        self.shadow.update(&up.model);
        self.served = self.translator.served_certificates(&up.model);
        self.certificates.publish(&self.served, &inputs);
        (up, snap)
    }

    /// Recomputes only the endpoints of known clusters and pushes EDS.
    pub fn endpoints_only(&mut self, inputs: &Inputs) -> usize {
        let t0 = Instant::now();
        let Some(clusters) = self.translator.refresh_endpoints(inputs) else {
            return 0;
        };
        let mut clas = BTreeMap::new();
        for (name, c) in clusters {
            clas.insert(name.clone(), self.builder.endpoints(c));
        }
        let n = clas.len();
        self.latest.refresh(clusters);
        self.cache.set_endpoints(clas);
        crate::metrics::catalogue::ENDPOINTS_UPDATE_SECONDS.observe([], t0.elapsed().as_secs_f64());
        n
    }
}
