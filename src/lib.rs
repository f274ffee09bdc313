//! Switchyard: a Kubernetes Gateway API implementation that drives Envoy over xDS.
//!
//! Data flows one way:
//! `provider (kube | file) → Arc<Inputs> → translate (pure) → ir::Model + StatusSet
//!  → xds::build (pure) → xds::cache → xds::server (ADS)`, and `StatusSet → status writer`.
#![forbid(unsafe_code)]

pub mod addressing;
pub mod admin;
pub mod admin_grpc;
pub mod allocator;
pub mod certgen;
pub mod certs;
pub mod cli;
pub mod controller;
pub mod engine;
pub mod inputs;
pub mod ir;
pub mod kinds;
pub mod metrics;
pub mod pipeline;
pub mod programmed;
pub mod provider;
pub mod quarantine;
pub mod standalone;
pub mod status;
pub mod status_file;
pub mod supervisor;
pub mod synthetic;
#[cfg(test)]
pub mod testing;
pub mod translate;
pub mod xds;
