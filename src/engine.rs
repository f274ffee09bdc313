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
}

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
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Publishes each served model (for explain) through `handle`.
    pub fn with_model_handle(mut self, handle: ModelHandle) -> Self {
        self.latest = handle;
        self
    }

    /// The status of everything as of the last translation.
    pub fn status(&self) -> &StatusSet {
        self.translator.status()
    }

    /// Rules that can never match (shadowed), as of the last translation.
    pub fn shadowed(&self) -> &crate::ir::shadow::report::Tracker {
        &self.shadow
    }

    /// Translates what changed, builds and publishes the snapshot; returns
    /// the update (for status) and the snapshot (for debug views).
    pub fn translate(&mut self, inputs: &Inputs, changes: &Changes) -> (Update, xds::Snapshot) {
        let t0 = Instant::now();
        let up = self.translator.update(inputs, changes);
        let t1 = Instant::now();
        let snap = self.builder.build(&up.model);
        let t2 = Instant::now();
        self.latest.set(up.model.clone());
        let mode = if up.full { "full" } else { "incremental" };
        crate::pipeline::observe(t1 - t0, t2 - t1);
        crate::metrics::counter_add(
            "switchyard_translations_total",
            "Translations, by mode (full: everything; incremental: changed routes only).",
            &[("mode", mode)],
            1,
        );
        self.version = self.cache.set_snapshot(snap.clone());
        // After the push: off the propagation path.
        self.shadow.update(&up.model);
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
        crate::metrics::observe(
            "switchyard_endpoints_update_seconds",
            "Time to rebuild and publish endpoints without re-translating routes.",
            &[],
            t0.elapsed().as_secs_f64(),
        );
        n
    }
}
