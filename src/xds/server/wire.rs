//! The two ADS protocols: how a response is built for each, and how the
//! client's requests update the per-type state.

use super::*;

pub(super) struct Sotw;

impl Wire for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const PROTOCOL: Protocol = Protocol::Sotw;

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(s: &mut Session, req: DiscoveryRequest) {
        debug!(node = %s.node, type_url = %req.type_url, nonce = %req.response_nonce,
            version = %req.version_info, names = req.resource_names.len(), "SotW request");
        let t = req.type_url;
        if t.is_empty() {
            warn!(node = %s.node, "request without type_url ignored");
            return;
        }
        if !req.response_nonce.is_empty() {
            let latest = s.types.get(&t).map(|st| st.nonce.as_str()).unwrap_or("");
            if req.response_nonce != latest {
                debug!(node = %s.node, type_url = %t, nonce = %req.response_nonce, latest, "stale nonce; request ignored");
                return;
            }
            s.on_reply(&t, req.error_detail);
        }
        let force = req.response_nonce.is_empty();
        let (st, first) = s.subscribe(&t);
        st.force |= force;
        let mut names: BTreeSet<String> = req.resource_names.into_iter().collect();
        if names.is_empty() {
            // Legacy wildcard on the first request; afterwards an empty list
            // keeps wildcard, or unsubscribes from everything.
            if first {
                st.wildcard = true;
            }
        } else {
            st.wildcard = names.remove("*");
        }
        st.names = names;
    }

    fn build(st: &mut TypeState, step: Step<'_>) -> Outcome<DiscoveryResponse> {
        let Step {
            t,
            version,
            w,
            gate,
            hold,
            nonce,
        } = step;
        let full = st.wildcard || wildcard_type(t);
        let mut desired: TypeMap = if full {
            w.clone()
        } else {
            st.names
                .iter()
                .filter_map(|n| w.get_key_value(n))
                .map(|(n, r)| (n.clone(), Arc::clone(r)))
                .collect()
        };
        // Keep what left the view until the gate opens.
        let mut stale = std::mem::take(&mut st.stale);
        for (name, held) in &st.have {
            if w.contains_key(name) || !(full || st.names.contains(name)) {
                continue;
            }
            let since = *stale.entry(name.clone()).or_insert(version);
            if !gates(t).is_empty() && since > gate {
                if let Some(r) = &held.res {
                    desired.insert(name.clone(), Arc::clone(r));
                }
            }
        }
        stale.retain(|n, _| desired.contains_key(n) && !w.contains_key(n));
        st.stale = stale;

        let same = desired.len() == st.have.len()
            && desired
                .iter()
                .zip(st.have.iter())
                .all(|((a, ra), (b, hb))| a == b && ra.version == hb.version);
        let retry = st.retry && st.rejected.iter().any(|n| desired.contains_key(n));
        if same && !st.force && !retry {
            return Outcome::Unchanged;
        }
        if hold {
            return Outcome::Held;
        }
        let resp = DiscoveryResponse {
            version_info: st.version_info(version),
            resources: desired.values().map(|r| any(r)).collect(),
            type_url: t.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let names: Vec<String> = desired.keys().cloned().collect();
        st.have = desired
            .into_iter()
            .map(|(n, r)| {
                (
                    n,
                    Held {
                        version: r.version.clone(),
                        res: Some(r),
                    },
                )
            })
            .collect();
        st.sent(nonce, version, names);
        Outcome::Send(resp)
    }

    fn describe(r: &DiscoveryResponse) -> (&str, &str, usize, usize) {
        (&r.version_info, &r.nonce, r.resources.len(), 0)
    }
}

pub(super) struct Delta;

impl Wire for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const PROTOCOL: Protocol = Protocol::Delta;

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }

    fn on_request(s: &mut Session, req: DeltaDiscoveryRequest) {
        debug!(node = %s.node, type_url = %req.type_url, nonce = %req.response_nonce,
            subscribe = ?req.resource_names_subscribe.iter().take(4).collect::<Vec<_>>(),
            unsubscribe = ?req.resource_names_unsubscribe.iter().take(4).collect::<Vec<_>>(),
            initial = req.initial_resource_versions.len(), "delta request");
        let t = req.type_url;
        if t.is_empty() {
            warn!(node = %s.node, "request without type_url ignored");
            return;
        }
        if !req.response_nonce.is_empty() {
            let latest = s.types.get(&t).map(|st| st.nonce.as_str()).unwrap_or("");
            if req.response_nonce == latest {
                s.on_reply(&t, req.error_detail);
            } else {
                // Not an answer to our latest response; its subscription
                // changes still apply (delta requests are incremental).
                debug!(node = %s.node, type_url = %t, nonce = %req.response_nonce, latest, "stale nonce; not an ACK/NACK");
            }
        }
        let (st, first) = s.subscribe(&t);
        if first {
            st.force = true;
            for (name, version) in req.initial_resource_versions {
                st.have.insert(name, Held { version, res: None });
            }
            if req.resource_names_subscribe.is_empty() && wildcard_type(&t) {
                st.wildcard = true;
            }
        }
        for name in req.resource_names_subscribe {
            if name == "*" {
                st.wildcard = true;
            } else {
                st.names.insert(name);
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                st.wildcard = false;
                continue;
            }
            st.names.remove(&name);
            st.absent_told.remove(&name);
            if !st.wildcard {
                st.have.remove(&name);
                st.stale.remove(&name);
            }
        }
    }

    fn build(st: &mut TypeState, step: Step<'_>) -> Outcome<DeltaDiscoveryResponse> {
        let Step {
            t,
            version,
            w,
            gate,
            hold,
            nonce,
        } = step;
        let updates: Vec<(&String, &Arc<Resource>)> = w
            .iter()
            .filter(|(n, r)| {
                st.wants(n)
                    && (st.have.get(*n).map(|h| h.version.as_str()) != Some(r.version.as_str())
                        || (st.retry && st.rejected.contains(*n)))
            })
            .collect();
        let mut removed: Vec<String> = Vec::new();
        let mut forget: Vec<String> = Vec::new();
        let mut stale = std::mem::take(&mut st.stale);
        for name in st.have.keys() {
            if !st.wants(name) {
                forget.push(name.clone()); // unsubscribed: the client drops it itself
            } else if !w.contains_key(name) {
                let since = *stale.entry(name.clone()).or_insert(version);
                if gates(t).is_empty() || since <= gate {
                    removed.push(name.clone());
                }
            }
        }
        // Subscribed names that do not exist: say so once, so the client
        // does not wait for them.
        for name in &st.names {
            if !w.contains_key(name)
                && !st.have.contains_key(name)
                && !st.absent_told.contains(name)
            {
                removed.push(name.clone());
            }
        }
        for name in &forget {
            st.have.remove(name);
        }
        st.absent_told
            .retain(|n| !w.contains_key(n) && st.names.contains(n));
        if (updates.is_empty() && removed.is_empty() && !st.force) || hold {
            stale.retain(|n, _| st.have.contains_key(n) && !w.contains_key(n));
            st.stale = stale;
            let nothing = updates.is_empty() && removed.is_empty() && !st.force;
            return if nothing {
                Outcome::Unchanged
            } else {
                Outcome::Held
            };
        }
        let resources: Vec<WireResource> = updates
            .iter()
            .map(|(n, r)| WireResource {
                name: (*n).clone(),
                version: r.version.clone(),
                resource: Some(any(r)),
                ..Default::default()
            })
            .collect();
        let names: Vec<String> = updates.iter().map(|(n, _)| (*n).clone()).collect();
        for (n, r) in &updates {
            st.have.insert(
                (*n).clone(),
                Held {
                    version: r.version.clone(),
                    res: None,
                },
            );
        }
        for name in &removed {
            st.have.remove(name);
            if st.names.contains(name) {
                st.absent_told.insert(name.clone());
            }
        }
        stale.retain(|n, _| st.have.contains_key(n) && !w.contains_key(n));
        st.stale = stale;
        let resp = DeltaDiscoveryResponse {
            system_version_info: version.to_string(),
            resources,
            type_url: t.to_string(),
            removed_resources: removed,
            nonce: nonce.clone(),
            ..Default::default()
        };
        st.sent(nonce, version, names);
        Outcome::Send(resp)
    }

    fn describe(r: &DeltaDiscoveryResponse) -> (&str, &str, usize, usize) {
        (
            &r.system_version_info,
            &r.nonce,
            r.resources.len(),
            r.removed_resources.len(),
        )
    }
}

/// Types Envoy subscribes to as a whole (no names): listeners, clusters,
/// and the scopes of sharded route tables.
fn wildcard_type(t: &str) -> bool {
    t == type_url::LISTENER || t == type_url::CLUSTER || t == type_url::SCOPED_ROUTE
}
