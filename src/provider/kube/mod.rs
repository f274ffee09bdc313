//! Kubernetes provider: watches (watch.rs), status writes (status.rs),
//! leader election (lease.rs) and Events for shadowed rules (events.rs). The
//! controller loop lives in `crate::controller`.

pub mod events;
pub mod lease;
pub mod status;
pub mod watch;
