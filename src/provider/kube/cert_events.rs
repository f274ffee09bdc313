//! Warning Events for refused certificate rotations (reason
//! [`REASON`], on each Gateway whose listeners keep serving the last good
//! certificate): one per refused version of a Secret, announced by the
//! lease holder. A replica announces what it has not announced itself, so
//! a new lease holder announces the refusals in force when it takes over.
//! See docs/certificates.md.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

use crate::certs::{rfc3339, Rejection, Served};
use crate::inputs::{Inputs, Kind, ObjKey};

/// Event reason.
pub const REASON: &str = "InvalidCertificateRotation";

/// One Event to publish: the Gateway and the note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    pub gateway: ObjKey,
    pub note: String,
}

/// Refused versions announced so far (Secret → fingerprint of the refused
/// content).
#[derive(Default)]
pub struct RotationEvents {
    announced: BTreeMap<ObjKey, u64>,
}

impl RotationEvents {
    /// The Events due for refusals not yet announced (marking them
    /// announced); forgets refusals that ended.
    pub fn due(&mut self, inputs: &Inputs, served: &[Served]) -> Vec<Due> {
        let current: BTreeMap<&ObjKey, &Rejection> = inputs
            .certificate_rejections
            .iter()
            .filter(|(_, r)| r.serves_last_good())
            .collect();
        self.announced
            .retain(|k, print| current.get(k).is_some_and(|r| r.refused == *print));
        let mut out = Vec::new();
        for (secret, r) in current {
            if self.announced.contains_key(secret) {
                continue;
            }
            self.announced.insert(secret.clone(), r.refused);
            let mut by_gateway: BTreeMap<&ObjKey, BTreeSet<&str>> = BTreeMap::new();
            for s in served.iter().filter(|s| &s.secret == secret) {
                by_gateway
                    .entry(&s.gateway)
                    .or_default()
                    .insert(&s.listener);
            }
            let good = r.last_good_not_after.map(rfc3339).unwrap_or_default();
            for (gateway, listeners) in by_gateway {
                let names: Vec<String> = listeners
                    .iter()
                    .map(|l| match *l {
                        "" => "the client certificate to TLS backends".to_string(),
                        l => format!("listener {l}"),
                    })
                    .collect();
                out.push(Due {
                    gateway: gateway.clone(),
                    note: format!(
                        "the new version of Secret {secret} was refused ({}); {} keep serving the last good certificate (notAfter {good})",
                        r.why,
                        names.join(", ")
                    ),
                });
            }
        }
        out
    }

    /// Publishes the Events due (call only while holding the lease).
    pub async fn publish(&mut self, recorder: &Recorder, inputs: &Inputs, served: &[Served]) {
        for d in self.due(inputs, served) {
            let ev = Event {
                type_: EventType::Warning,
                reason: REASON.into(),
                note: Some(crate::provider::kube::events::truncated(&d.note)),
                action: "RotateCertificate".into(),
                secondary: None,
            };
            let reference = ObjectReference {
                api_version: Some(Kind::Gateway.info().api_version()),
                kind: Some("Gateway".into()),
                namespace: Some(d.gateway.namespace.clone()),
                name: Some(d.gateway.name.clone()),
                uid: inputs
                    .gateways
                    .get(&d.gateway)
                    .and_then(|g| g.metadata.uid.clone()),
                ..Default::default()
            };
            if let Err(e) = recorder.publish(&ev, &reference).await {
                warn!(gateway = %d.gateway, "publishing event failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(secret: &str, gw: &str, listener: &str) -> Served {
        Served {
            secret: ObjKey::new("ns", secret),
            gateway: ObjKey::new("ns", gw),
            listener: listener.into(),
            not_after: 0,
        }
    }

    #[test]
    fn one_event_per_refused_version_on_each_gateway_serving_it() {
        let mut inputs = Inputs::new("c");
        let key = ObjKey::new("ns", "cert");
        let rejection = |refused| Rejection {
            why: "its certificate expired at 2020-02-01T00:00:00Z".into(),
            last_good_not_after: Some(1_767_225_600),
            refused,
        };
        inputs
            .certificate_rejections
            .insert(key.clone(), rejection(1));
        let served = [
            served("cert", "a", "https"),
            served("cert", "a", "tls"),
            served("cert", "b", ""),
            served("other", "c", "https"),
        ];
        let mut ev = RotationEvents::default();
        let due = ev.due(&inputs, &served);
        assert_eq!(due.len(), 2, "{due:?}");
        assert_eq!(due[0].gateway, ObjKey::new("ns", "a"));
        assert_eq!(
            due[0].note,
            "the new version of Secret ns/cert was refused (its certificate expired at 2020-02-01T00:00:00Z); listener https, listener tls keep serving the last good certificate (notAfter 2026-01-01T00:00:00Z)"
        );
        assert!(due[1]
            .note
            .contains("the client certificate to TLS backends"));
        // Announced once while the same version is refused.
        assert!(ev.due(&inputs, &served).is_empty());
        // Another refused version: announced again.
        inputs
            .certificate_rejections
            .insert(key.clone(), rejection(2));
        assert_eq!(ev.due(&inputs, &served).len(), 2);
        // Cleared, then refused again: announced again.
        inputs.certificate_rejections.clear();
        assert!(ev.due(&inputs, &served).is_empty());
        inputs
            .certificate_rejections
            .insert(key.clone(), rejection(2));
        assert_eq!(ev.due(&inputs, &served).len(), 2);
        // A refusal with no last good is no rotation (the listener's status says it).
        inputs.certificate_rejections.insert(
            key,
            Rejection {
                last_good_not_after: None,
                ..rejection(3)
            },
        );
        assert!(ev.due(&inputs, &served).is_empty());
    }
}
