//! Kubernetes provider: watches (watch.rs), status writes (status.rs) and
//! leader election (lease.rs). The controller loop lives in `crate::controller`.

pub mod lease;
pub mod status;
pub mod watch;
