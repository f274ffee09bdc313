//! What the evaluator answers (`explain -o json` prints it; the schema is
//! documented in docs/explain.md and versioned by [`SCHEMA_VERSION`]).

use serde::Serialize;

use super::request::Request;
use crate::ir;

/// Bumped on any incompatible change of the JSON output.
pub const SCHEMA_VERSION: &str = "switchyard.dev/explain/v1";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    pub schema: &'static str,
    pub request: Request,
    /// `namespace/name` of the Gateway that owns the port, or null.
    pub gateway: Option<String>,
    pub address: Option<String>,
    pub listener: Option<ListenerChoice>,
    /// The virtual host (route table domain) the Host selected.
    pub virtual_host: Option<String>,
    pub route: Option<RouteRef>,
    pub rule: Option<RuleRef>,
    /// The conditions of the winning match that held.
    pub matched: Vec<String>,
    /// The HTTP status the Gateway answers itself (404: no route; 500: no
    /// backend resolves; a redirect's code; a direct response), or null
    /// when the request is forwarded.
    pub status: Option<u32>,
    /// The redirect's `Location`.
    pub location: Option<String>,
    /// Why the connection is refused or closed (nothing to answer with).
    pub refused: Option<String>,
    /// The rule's backends (weight > 0).
    pub backends: Vec<BackendState>,
    /// What the rule does to the request and response, in order.
    pub filters: Vec<FilterStep>,
    /// Rules that matched too but lost, with the criterion that decided.
    pub lost: Vec<Lost>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerChoice {
    /// The Gateway listener's `sectionName` (null before the Host chose one
    /// of several plain HTTP listeners sharing the port).
    pub name: Option<String>,
    pub port: u16,
    pub hostname: Option<String>,
    /// `Terminate` or `Passthrough` for TLS listeners.
    pub tls: Option<String>,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RouteRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl RouteRef {
    pub fn of(kind: &str, key: &crate::inputs::ObjKey) -> RouteRef {
        RouteRef {
            kind: kind.to_string(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        }
    }
    /// `<kind>/<namespace>/<name>` as L4 chains name their route.
    pub fn parse(s: &str) -> Option<RouteRef> {
        let mut it = s.splitn(3, '/');
        match (it.next(), it.next(), it.next()) {
            (Some(kind), Some(ns), Some(name)) => Some(RouteRef {
                kind: crate::kinds::routes()
                    .find(|k| k.as_str().eq_ignore_ascii_case(kind))
                    .map_or_else(|| kind.to_string(), |k| k.as_str().to_string()),
                namespace: ns.to_string(),
                name: name.to_string(),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for RouteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleRef {
    pub index: usize,
    pub name: Option<String>,
    /// Index of the match within the rule.
    #[serde(rename = "match")]
    pub match_index: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendState {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub port: Option<i32>,
    pub weight: u32,
    pub resolved: bool,
    /// The Envoy cluster (`<ns>/<service>/<port>`).
    pub cluster: Option<String>,
    pub endpoints: usize,
    /// `namespace/name` of the ReferenceGrant that allows a cross-namespace
    /// reference.
    pub reference_grant: Option<String>,
    /// Why it did not resolve (its share is answered with 500).
    pub problem: Option<String>,
    /// TLS to the backend (a BackendTLSPolicy applies): policy, SNI, SANs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FilterStep {
    #[serde(rename = "type")]
    pub kind: String,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lost {
    pub route: RouteRef,
    pub rule: usize,
    pub rule_name: Option<String>,
    #[serde(rename = "match")]
    pub match_index: usize,
    pub reason: String,
}

impl Decision {
    pub fn new(req: &Request) -> Decision {
        Decision {
            schema: SCHEMA_VERSION,
            request: req.clone(),
            gateway: None,
            address: None,
            listener: None,
            virtual_host: None,
            route: None,
            rule: None,
            matched: Vec::new(),
            status: None,
            location: None,
            refused: None,
            backends: Vec::new(),
            filters: Vec::new(),
            lost: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(super) fn refuse(&mut self, why: String) {
        self.refused = Some(why);
    }

    pub(super) fn listener_name(&self) -> String {
        self.listener
            .as_ref()
            .and_then(|l| l.name.clone())
            .unwrap_or_else(|| "?".into())
    }
}

/// The state of each weighted backend, from the Gateway's clusters.
pub(super) fn backends(
    gw: Option<&ir::Gateway>,
    list: &[ir::WeightedBackend],
) -> Vec<BackendState> {
    list.iter()
        .map(|b| {
            let cluster = b
                .cluster
                .as_ref()
                .and_then(|c| gw.and_then(|g| g.clusters.get(c)));
            let endpoints = cluster.map_or(0, |c| {
                c.endpoints.len() + c.split.iter().map(|m| m.endpoints.len()).sum::<usize>()
            });
            let (kind, namespace, name, port) = match (&b.origin, cluster) {
                (Some(o), _) => (o.kind.clone(), o.namespace.clone(), o.name.clone(), o.port),
                (None, Some(c)) => (
                    "Service".to_string(),
                    c.service.namespace.clone(),
                    c.service.name.clone(),
                    Some(i32::from(c.port)),
                ),
                (None, None) => Default::default(),
            };
            let origin = b.origin.as_deref();
            BackendState {
                kind,
                namespace,
                name,
                port,
                weight: b.weight,
                resolved: b.cluster.is_some(),
                cluster: b.cluster.clone(),
                endpoints,
                reference_grant: origin
                    .and_then(|o| o.grant.as_ref())
                    .map(|g| format!("{}/{}", g.namespace, g.name)),
                problem: origin
                    .and_then(|o| o.problem.as_ref())
                    .map(|(reason, message)| format!("{reason}: {message}")),
                tls: cluster.and_then(|c| c.tls.as_ref()).map(tls_summary),
            }
        })
        .collect()
}

/// "TLS to the backend (BackendTLSPolicy ns/name), SNI x, SANs DNS:a, URI:b".
fn tls_summary(t: &ir::UpstreamTls) -> String {
    let sans: Vec<String> = t
        .subject_alt_names
        .iter()
        .map(|s| match s {
            ir::SubjectAltName::Dns(v) => format!("DNS:{v}"),
            ir::SubjectAltName::Uri(v) => format!("URI:{v}"),
        })
        .collect();
    let ca = match &t.trusted_ca {
        ir::TrustedCa::Pem(_) => "CA from caCertificateRefs".to_string(),
        ir::TrustedCa::File(f) => format!("system CAs ({f})"),
    };
    let client = t
        .client_certificate
        .as_ref()
        .map(|c| format!(", client certificate {c}"))
        .unwrap_or_default();
    format!(
        "TLS to the backend (BackendTLSPolicy {}), SNI {}, SANs {}, {ca}{client}",
        t.policy,
        t.sni,
        sans.join(", ")
    )
}
