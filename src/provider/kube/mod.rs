//! Kubernetes provider: watches (watch.rs), status writes (status.rs),
//! leader election (lease.rs), Events for shadowed rules (events.rs) and
//! the Service each Gateway gets (infra.rs). The controller loop lives in
//! `crate::controller`.

pub mod cert_events;
pub mod events;
pub mod infra;
pub mod lease;
pub mod sent;
pub mod status;
pub mod watch;
