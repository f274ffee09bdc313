//! Providers turn an outside world (a YAML directory, a Kubernetes API
//! server) into [`crate::inputs::Inputs`] snapshots.

pub mod addresses;
pub mod file;
pub mod kube;
