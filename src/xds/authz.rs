//! Which Gateways an xDS client may receive, from its certificate.
//!
//! On the mTLS port a node's identity comes from the URI SANs of its client
//! certificate, never from what it says about itself: `node.metadata.gateways`
//! can narrow what it receives, not widen it. Three forms, all under the
//! trust domain `switchyard` of the installation's private CA:
//!
//! - `spiffe://switchyard/fleet`: every Gateway of this controller (the
//!   shared Envoy DaemonSet);
//! - `spiffe://switchyard/ns/<namespace>`: the Gateways of one namespace;
//! - `spiffe://switchyard/ns/<namespace>/gateway/<name>`: one Gateway.
//!
//! A certificate may carry several; the node is entitled to their union.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::provider::file::names::{dns1123_label, dns1123_subdomain};

/// SPIFFE trust domain of identities issued by `switchyard certgen`.
pub const TRUST_DOMAIN: &str = "switchyard";

/// What a client certificate entitles its node to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Entitlement {
    /// Every Gateway.
    pub fleet: bool,
    /// Every Gateway of these namespaces.
    pub namespaces: BTreeSet<String>,
    /// These Gateways (`ns/name`).
    pub gateways: BTreeSet<String>,
}

/// One identity, as written in a certificate and on the `certgen` command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Fleet,
    Namespace(String),
    Gateway { namespace: String, name: String },
}

impl Identity {
    /// Parses the `certgen --identity` form: `fleet`, `namespace:<ns>` or
    /// `gateway:<ns>/<name>`.
    pub fn parse_flag(s: &str) -> Result<Identity, String> {
        let id = if s == "fleet" {
            Identity::Fleet
        } else if let Some(ns) = s.strip_prefix("namespace:") {
            Identity::Namespace(ns.to_string())
        } else if let Some(rest) = s.strip_prefix("gateway:") {
            let (ns, name) = rest
                .split_once('/')
                .ok_or_else(|| format!("identity {s:?}: expected gateway:<namespace>/<name>"))?;
            Identity::Gateway {
                namespace: ns.to_string(),
                name: name.to_string(),
            }
        } else {
            return Err(format!(
                "identity {s:?}: expected `fleet`, `namespace:<ns>` or `gateway:<ns>/<name>`"
            ));
        };
        id.check()?;
        Ok(id)
    }

    /// Parses a URI SAN; `Ok(None)` for URIs outside our trust domain.
    pub fn parse_uri(uri: &str) -> Result<Option<Identity>, String> {
        let Some(rest) = uri.strip_prefix("spiffe://") else {
            return Ok(None);
        };
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if domain != TRUST_DOMAIN {
            return Ok(None);
        }
        let parts: Vec<&str> = path.split('/').collect();
        let id = match parts.as_slice() {
            ["fleet"] => Identity::Fleet,
            ["ns", ns] => Identity::Namespace(ns.to_string()),
            ["ns", ns, "gateway", name] => Identity::Gateway {
                namespace: ns.to_string(),
                name: name.to_string(),
            },
            _ => return Err(format!("unrecognised Switchyard identity URI {uri:?}")),
        };
        id.check()
            .map_err(|e| format!("identity URI {uri:?}: {e}"))?;
        Ok(Some(id))
    }

    pub fn uri(&self) -> String {
        match self {
            Identity::Fleet => format!("spiffe://{TRUST_DOMAIN}/fleet"),
            Identity::Namespace(ns) => format!("spiffe://{TRUST_DOMAIN}/ns/{ns}"),
            Identity::Gateway { namespace, name } => {
                format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/gateway/{name}")
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Identity::Fleet => Ok(()),
            Identity::Namespace(ns) => {
                dns1123_label(ns).map_err(|e| format!("namespace {ns:?}: {e}"))
            }
            Identity::Gateway { namespace, name } => {
                dns1123_label(namespace).map_err(|e| format!("namespace {namespace:?}: {e}"))?;
                dns1123_subdomain(name).map_err(|e| format!("name {name:?}: {e}"))
            }
        }
    }
}

impl Entitlement {
    /// The union of the identities among `uris` (URI SANs of a verified
    /// client certificate). Fails when none is a Switchyard identity, or
    /// when one in our trust domain is malformed (a typo must not silently
    /// grant less, or more, than meant).
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Entitlement, String> {
        let mut e = Entitlement::default();
        let mut any = false;
        for uri in uris {
            match Identity::parse_uri(uri)? {
                None => {}
                Some(id) => {
                    any = true;
                    e.add(id);
                }
            }
        }
        if !any {
            return Err(format!(
                "the client certificate carries no spiffe://{TRUST_DOMAIN}/... identity URI SAN"
            ));
        }
        Ok(e)
    }

    pub fn add(&mut self, id: Identity) {
        match id {
            Identity::Fleet => self.fleet = true,
            Identity::Namespace(ns) => {
                self.namespaces.insert(ns);
            }
            Identity::Gateway { namespace, name } => {
                self.gateways.insert(format!("{namespace}/{name}"));
            }
        }
    }

    /// Whether the node may receive Gateway `gw` (`ns/name`).
    pub fn allows(&self, gw: &str) -> bool {
        self.fleet
            || self.gateways.contains(gw)
            || gw
                .split_once('/')
                .is_some_and(|(ns, _)| self.namespaces.contains(ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_grant_their_scope() {
        for flag in ["fleet", "namespace:team-a", "gateway:team-a/web.v1"] {
            let id = Identity::parse_flag(flag).unwrap();
            assert_eq!(Identity::parse_uri(&id.uri()).unwrap(), Some(id));
        }
        let e = Entitlement::from_uris(["spiffe://switchyard/ns/team-a/gateway/web"]).unwrap();
        assert!(e.allows("team-a/web"));
        assert!(!e.allows("team-a/other"));
        assert!(!e.allows("team-b/web"));
        let e = Entitlement::from_uris(["spiffe://switchyard/ns/team-a"]).unwrap();
        assert!(e.allows("team-a/anything"));
        assert!(!e.allows("team-ab/x"));
        let e = Entitlement::from_uris([
            "spiffe://other/fleet",
            "spiffe://switchyard/ns/a/gateway/g",
            "spiffe://switchyard/ns/b",
        ])
        .unwrap();
        assert!(e.allows("a/g") && e.allows("b/x") && !e.allows("a/h"));
        assert!(Entitlement::from_uris(["spiffe://switchyard/fleet"])
            .unwrap()
            .allows("any/gw"));
    }

    #[test]
    fn no_identity_or_a_malformed_one_is_refused() {
        assert!(Entitlement::from_uris(std::iter::empty()).is_err());
        assert!(Entitlement::from_uris(["spiffe://other/fleet"]).is_err());
        for bad in [
            "spiffe://switchyard/fleet/extra",
            "spiffe://switchyard/ns/../gateway/x",
            "spiffe://switchyard/ns/A",
            "spiffe://switchyard/ns/a/gateway/",
            "spiffe://switchyard/ns/a/gateway/b/c",
            "spiffe://switchyardx/fleet",
        ] {
            // (`switchyardx` is another trust domain: no identity of ours.)
            assert!(Entitlement::from_uris([bad]).is_err(), "{bad} accepted");
        }
        assert!(Identity::parse_flag("gateway:a").is_err());
        assert!(Identity::parse_flag("ns:a").is_err());
    }
}
