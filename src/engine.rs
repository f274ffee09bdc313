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
}

impl Engine {
    pub fn new(cache: Arc<Cache>) -> Self {
        Engine {
            cache,
            translator: Translator::default(),
            builder: Builder::default(),
            version: 0,
            shadow: Default::default(),
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
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
