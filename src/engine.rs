//! Runs the pipeline for a provider and feeds the xDS cache: a full
//! translation when anything but endpoints changed, and an EDS-only update
//! (no route re-translation) when only EndpointSlices did.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::inputs::Inputs;
use crate::ir;
use crate::translate::Output;
use crate::xds::cache::Cache;
use crate::xds::{self, Resource};

pub struct Engine {
    cache: Arc<Cache>,
    /// Every cluster of the last full translation, by name.
    clusters: BTreeMap<String, ir::Cluster>,
    pub version: u64,
}

impl Engine {
    pub fn new(cache: Arc<Cache>) -> Self {
        Engine {
            cache,
            clusters: BTreeMap::new(),
            version: 0,
        }
    }

    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Full translation; returns the output (for status) and the snapshot
    /// index (for debug views).
    pub fn full(&mut self, inputs: &Inputs) -> (Output, xds::Snapshot) {
        let (out, snap) = crate::pipeline::run(inputs);
        self.clusters = out
            .model
            .gateways
            .values()
            .flat_map(|g| g.clusters.clone())
            .collect();
        self.version = self.cache.set_snapshot(snap.clone());
        (out, snap)
    }

    /// Recomputes only the endpoints of known clusters and pushes EDS.
    pub fn endpoints_only(&mut self, inputs: &Inputs) -> usize {
        let t0 = Instant::now();
        let mut clas = BTreeMap::new();
        for (name, c) in self.clusters.iter_mut() {
            c.endpoints = crate::translate::endpoints(inputs, &c.service, &c.port_name);
            clas.insert(
                name.clone(),
                Resource::new(name.clone(), &xds::build::build_endpoints(c)),
            );
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
