//! Leader election on a `coordination.k8s.io/v1` Lease. Every replica serves
//! ADS; only the holder writes status. A holder that cannot renew within the
//! lease duration stops considering itself leader before another replica may
//! take over.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Runs forever, publishing whether this replica holds the lease.
pub async fn run(client: Client, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renew: Option<Instant> = None;
    loop {
        let held = match try_acquire_or_renew(&api, &cfg).await {
            Ok(held) => {
                if held {
                    last_renew = Some(Instant::now());
                }
                held
            }
            Err(e) => {
                warn!(lease = %cfg.name, "lease update failed: {e}");
                // Keep leadership only while the last successful renewal is fresh.
                last_renew.is_some_and(|t| {
                    t.elapsed() < cfg.lease_duration.saturating_sub(cfg.renew_every)
                })
            }
        };
        if *tx.borrow() != held {
            info!(identity = %cfg.identity, leader = held, "leadership changed");
            crate::metrics::gauge_set(
                "switchyard_leader",
                "1 while this replica writes status.",
                &[],
                if held { 1.0 } else { 0.0 },
            );
            let _ = tx.send(held);
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
}

async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(15);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let expired = spec.renew_time.as_ref().is_none_or(|t| {
                let dur = spec.lease_duration_seconds.unwrap_or(secs);
                let age = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
                age.as_secs() > i64::from(dur)
            });
            if holder != cfg.identity && !holder.is_empty() && !expired {
                return Ok(false);
            }
            let mut new_spec = spec.clone();
            if holder != cfg.identity {
                new_spec.acquire_time = Some(now());
                new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            new_spec.holder_identity = Some(cfg.identity.clone());
            new_spec.lease_duration_seconds = Some(secs);
            new_spec.renew_time = Some(now());
            lease.spec = Some(new_spec);
            // replace carries resourceVersion: a concurrent taker makes this fail with 409.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the lease up on a clean shutdown, so that a standby replica takes
/// over at its next attempt instead of after the lease duration.
pub async fn release(client: Client, namespace: &str, name: &str, identity: &str) {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let Ok(Some(mut lease)) = api.get_opt(name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(identity) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => info!(identity, "lease released"),
        Err(e) => warn!(identity, "releasing the lease failed: {e}"),
    }
}
