//! GatewayClass selection, Gateway addresses and listener validation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gateway_api::experimental::gateways::{Gateway, GatewayListeners};

use super::conditions::{reasons, types};
use super::refgrant::{self, Ref};
use super::{generation, hostname, GatewayMap};
use crate::inputs::{Inputs, Kind, ObjKey, GATEWAY_GROUP};
use crate::ir::{self, names};
use crate::status::{
    Condition, GatewayAddress, GroupKind, ListenerStatus, ObjectStatus, StatusSet, SupportedFeature,
};

/// Gateway API version whose semantics Switchyard implements.
pub const SUPPORTED_BUNDLE_VERSION: &str = "v1.6.1";

/// CRD bundle versions (major.minor) whose fields Switchyard understands.
pub const SUPPORTED_VERSIONS: [&str; 2] = ["v1.5", "v1.6"];

fn version_supported(v: &str) -> bool {
    SUPPORTED_VERSIONS
        .iter()
        .any(|s| v == *s || v.starts_with(&format!("{s}.")))
}

/// Features Switchyard honours (sorted, as `status.supportedFeatures` wants).
pub fn supported_features() -> Vec<&'static str> {
    let mut f = vec![
        "Gateway",
        "GatewayHTTPListenerIsolation",
        "GatewayPort8080",
        "GRPCRoute",
        "GRPCRouteNamedRouteRule",
        "HTTPRoute",
        "HTTPRoute303RedirectStatusCode",
        "HTTPRoute307RedirectStatusCode",
        "HTTPRoute308RedirectStatusCode",
        "HTTPRouteBackendProtocolH2C",
        "HTTPRouteBackendProtocolWebSocket",
        "HTTPRouteBackendRequestHeaderModification",
        "HTTPRouteBackendTimeout",
        "HTTPRouteHostRewrite",
        "HTTPRouteMethodMatching",
        "HTTPRouteNamedRouteRule",
        "HTTPRouteParentRefPort",
        "HTTPRoutePathRedirect",
        "HTTPRoutePathRewrite",
        "HTTPRoutePortRedirect",
        "HTTPRouteQueryParamMatching",
        "HTTPRouteRequestTimeout",
        "HTTPRouteResponseHeaderModification",
        "HTTPRouteSchemeRedirect",
        "ReferenceGrant",
        "TCPRoute",
        "TLSRoute",
        "TLSRouteModeMixed",
        "TLSRouteModeTerminate",
        "UDPRoute",
    ];
    f.sort_unstable();
    f
}

/// Route kinds a listener protocol can carry (only kinds Switchyard implements).
fn kinds_for_protocol(protocol: &str) -> &'static [&'static str] {
    match protocol {
        "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
        "TLS" => &["TLSRoute"],
        "TCP" => &["TCPRoute"],
        "UDP" => &["UDPRoute"],
        _ => &[],
    }
}

/// What a listener does with TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    None,
    Terminate,
    Passthrough,
}

/// Protocols that can share a port on one address: HTTP with HTTP; HTTPS and
/// TLS together (told apart by SNI); TCP and UDP each alone on their
/// transport (a TCP and a UDP listener may share a port number).
fn port_group(protocol: &str) -> (&'static str, &'static str) {
    match protocol {
        "UDP" => ("udp", "UDP"),
        "HTTPS" | "TLS" => ("tcp", "TLS"),
        "HTTP" => ("tcp", "HTTP"),
        _ => ("tcp", "TCP"),
    }
}

/// Accepts our GatewayClasses; returns their names.
pub fn gateway_classes(inputs: &Inputs, status: &mut StatusSet) -> BTreeSet<String> {
    let mut ours = BTreeSet::new();
    for (name, gc) in &inputs.gateway_classes {
        if gc.spec.controller_name != inputs.controller_name {
            continue;
        }
        let gen = generation(&gc.metadata);
        let unknown = inputs.unknown(Kind::GatewayClass, &ObjKey::cluster(name));
        let accepted = if let Some(p) = &gc.spec.parameters_ref {
            Condition::new(
                types::ACCEPTED,
                false,
                reasons::INVALID_PARAMETERS,
                format!("parametersRef {}/{} is not supported: Switchyard takes no GatewayClass parameters", p.kind, p.name),
                gen,
            )
        } else if !unknown.is_empty() {
            Condition::new(
                types::ACCEPTED,
                false,
                reasons::UNSUPPORTED,
                format!(
                    "fields not supported by this Switchyard: {}",
                    unknown.join(", ")
                ),
                gen,
            )
        } else if let Some(v) = inputs
            .crd_bundle_version
            .as_deref()
            .filter(|v| !version_supported(v))
        {
            Condition::new(
                types::ACCEPTED,
                false,
                reasons::UNSUPPORTED_VERSION,
                format!(
                    "installed Gateway API CRDs are {v}; Switchyard supports {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
                gen,
            )
        } else if !inputs.missing_kinds.is_empty() {
            Condition::new(
                types::ACCEPTED,
                true,
                reasons::ACCEPTED,
                format!(
                    "Accepted by Switchyard; these kinds are not installed in the cluster and cannot be used until their CRDs are: {}",
                    inputs.missing_kinds.join(", ")
                ),
                gen,
            )
        } else {
            Condition::new(
                types::ACCEPTED,
                true,
                reasons::ACCEPTED,
                "Accepted by Switchyard",
                gen,
            )
        };
        if accepted.is_true() {
            ours.insert(name.clone());
        }
        let supported_version = match inputs.crd_bundle_version.as_deref() {
            Some(v) if !version_supported(v) => Condition::new(
                types::SUPPORTED_VERSION,
                false,
                reasons::UNSUPPORTED_VERSION,
                format!(
                    "installed Gateway API CRDs are {v}; Switchyard supports {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
                gen,
            ),
            Some(v) => Condition::new(
                types::SUPPORTED_VERSION,
                true,
                reasons::SUPPORTED_VERSION,
                format!("installed Gateway API CRDs are {v}"),
                gen,
            ),
            None => Condition::new(
                types::SUPPORTED_VERSION,
                true,
                reasons::SUPPORTED_VERSION,
                format!("Gateway API {SUPPORTED_BUNDLE_VERSION}"),
                gen,
            ),
        };
        let conditions = vec![accepted, supported_version];
        let supported_features = supported_features()
            .into_iter()
            .map(|n| SupportedFeature {
                name: n.to_string(),
            })
            .collect();
        status.objects.insert(
            (Kind::GatewayClass, ObjKey::cluster(name)),
            ObjectStatus::GatewayClass {
                conditions,
                supported_features,
            },
        );
    }
    ours
}

/// Validation result of one Gateway listener.
#[derive(Clone, Debug)]
pub struct ListenerState {
    pub name: String,
    /// Namespace of the object that defines it (`allowedRoutes` Same).
    pub namespace: String,
    /// The ListenerSet that defines it (`None`: the Gateway itself).
    pub parent: Option<ObjKey>,
    pub port: u16,
    pub protocol: String,
    pub tls_mode: TlsMode,
    pub hostname: Option<String>,
    /// Route kinds this listener accepts (validated subset of allowedRoutes.kinds).
    pub kinds: Vec<String>,
    pub accepted: Result<(), (&'static str, String)>,
    pub resolved: Result<(), (&'static str, String)>,
    pub conflict: Option<(&'static str, String)>,
    /// SDS secret names (HTTPS).
    pub secrets: Vec<String>,
    pub attached_routes: i32,
    pub spec: GatewayListeners,
}

impl ListenerState {
    /// Routes may attach (and count) on an accepted, non-conflicted listener.
    pub fn attachable(&self) -> bool {
        self.accepted.is_ok() && self.conflict.is_none()
    }
    /// Envoy serves it. Route kinds it cannot carry do not stop it from
    /// serving the kinds it can (they are reported on ResolvedRefs).
    pub fn programmable(&self) -> bool {
        self.attachable()
            && match &self.resolved {
                Ok(()) => true,
                Err((reason, _)) => {
                    *reason == reasons::INVALID_ROUTE_KINDS && !self.kinds.is_empty()
                }
            }
    }
    /// Envoy transport of the listener.
    pub fn transport(&self) -> crate::ir::Transport {
        if self.protocol == "UDP" {
            crate::ir::Transport::Udp
        } else {
            crate::ir::Transport::Tcp
        }
    }
}

#[derive(Clone, Debug)]
pub struct GatewayState {
    pub key: ObjKey,
    pub generation: i64,
    pub address: Result<Vec<String>, (&'static str, &'static str, String)>,
    pub unsupported: Option<String>,
    pub listeners: Vec<ListenerState>,
    pub secrets: BTreeMap<String, ir::TlsCertificate>,
    /// ListenerSets attached to this Gateway (their listeners are in
    /// `listeners`, with `parent` set), with their generation.
    pub listener_sets: BTreeMap<ObjKey, i64>,
}

impl GatewayState {
    #[cfg(test)]
    pub fn for_tests(key: ObjKey, listeners: Vec<ListenerState>) -> Self {
        GatewayState {
            key,
            generation: 1,
            address: Ok(vec!["127.0.0.1".into()]),
            unsupported: None,
            listeners,
            secrets: BTreeMap::new(),
            listener_sets: BTreeMap::new(),
        }
    }

    pub fn status(&self) -> ObjectStatus {
        let gen = self.generation;
        let valid = self.listeners.iter().filter(|l| l.programmable()).count();
        let all_valid = valid == self.listeners.len();
        let mut conditions = Vec::new();
        let address_error = self.address.as_ref().err();
        let accepted = if let Some(msg) = &self.unsupported {
            Condition::new(
                types::ACCEPTED,
                false,
                reasons::UNSUPPORTED_VALUE,
                msg.clone(),
                gen,
            )
        } else if let Some((reason, _, msg)) =
            address_error.filter(|(r, _, _)| *r == reasons::UNSUPPORTED_ADDRESS)
        {
            Condition::new(types::ACCEPTED, false, reason, msg.clone(), gen)
        } else if all_valid {
            Condition::new(
                types::ACCEPTED,
                true,
                reasons::ACCEPTED,
                "Gateway is accepted",
                gen,
            )
        } else {
            let bad: Vec<&str> = self
                .listeners
                .iter()
                .filter(|l| !l.programmable())
                .map(|l| l.name.as_str())
                .collect();
            Condition::new(
                types::ACCEPTED,
                valid > 0,
                reasons::LISTENERS_NOT_VALID,
                format!("invalid listeners: {}", bad.join(", ")),
                gen,
            )
        };
        let accepted_ok = accepted.is_true();
        conditions.push(accepted);
        let programmed = match (&self.address, accepted_ok) {
            (Err((_, reason, msg)), _) => {
                Condition::new(types::PROGRAMMED, false, reason, msg.clone(), gen)
            }
            (Ok(_), false) => Condition::new(
                types::PROGRAMMED,
                false,
                reasons::INVALID,
                "Gateway is not accepted",
                gen,
            ),
            (Ok(_), true) => Condition::new(
                types::PROGRAMMED,
                true,
                reasons::PROGRAMMED,
                "Gateway is programmed",
                gen,
            ),
        };
        conditions.push(programmed);
        let addresses = self
            .address
            .as_ref()
            .map(|a| {
                a.iter()
                    .map(|v| GatewayAddress {
                        type_: "IPAddress".into(),
                        value: v.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let listeners = self
            .listeners
            .iter()
            .map(|l| listener_status(l, gen))
            .collect();
        ObjectStatus::Gateway {
            addresses,
            conditions,
            listeners,
        }
    }

    /// First address Envoy binds this Gateway's listeners to.
    pub fn bind_address(&self) -> Option<&str> {
        self.address
            .as_ref()
            .ok()
            .and_then(|a| a.first())
            .map(|s| s.as_str())
    }
}

fn listener_status(l: &ListenerState, gen: i64) -> ListenerStatus {
    let mut conditions = Vec::new();
    conditions.push(match &l.accepted {
        Ok(()) => Condition::new(
            types::ACCEPTED,
            true,
            reasons::ACCEPTED,
            "Listener is accepted",
            gen,
        ),
        Err((r, m)) => Condition::new(types::ACCEPTED, false, r, m.clone(), gen),
    });
    conditions.push(match &l.resolved {
        Ok(()) => Condition::new(
            types::RESOLVED_REFS,
            true,
            reasons::RESOLVED_REFS,
            "All references resolved",
            gen,
        ),
        Err((r, m)) => Condition::new(types::RESOLVED_REFS, false, r, m.clone(), gen),
    });
    conditions.push(match &l.conflict {
        None => Condition::new(
            types::CONFLICTED,
            false,
            reasons::NO_CONFLICTS,
            "No conflicts",
            gen,
        ),
        Some((r, m)) => Condition::new(types::CONFLICTED, true, r, m.clone(), gen),
    });
    conditions.push(if l.programmable() {
        Condition::new(
            types::PROGRAMMED,
            true,
            reasons::PROGRAMMED,
            "Listener is programmed",
            gen,
        )
    } else {
        Condition::new(
            types::PROGRAMMED,
            false,
            reasons::INVALID,
            "Listener is invalid; see its other conditions",
            gen,
        )
    });
    ListenerStatus {
        name: l.name.clone(),
        supported_kinds: l
            .kinds
            .iter()
            .map(|k| GroupKind {
                group: GATEWAY_GROUP.into(),
                kind: k.clone(),
            })
            .collect(),
        attached_routes: l.attached_routes,
        conditions,
    }
}

/// Gateways of our classes, validated.
pub fn gateways(inputs: &Inputs, classes: &BTreeSet<String>) -> GatewayMap {
    let mut out = GatewayMap::new();
    for (key, gw) in &inputs.gateways {
        if !classes.contains(&gw.spec.gateway_class_name) {
            continue;
        }
        out.insert(key.clone(), gateway_state(inputs, key, gw));
    }
    out
}

fn gateway_state(inputs: &Inputs, key: &ObjKey, gw: &Gateway) -> GatewayState {
    let gen = generation(&gw.metadata);
    let unknown = inputs.unknown(Kind::Gateway, key);
    let mut unsupported_fields: Vec<String> = unknown
        .iter()
        .filter(|p| !p.starts_with("spec.listeners["))
        .cloned()
        .collect();
    if gw
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
        .is_some()
    {
        unsupported_fields.push("spec.infrastructure.parametersRef".into());
    }
    if gw.spec.tls.is_some() {
        unsupported_fields.push("spec.tls".into());
    }
    if gw
        .spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_ref())
        .is_some_and(|f| {
            !matches!(
                f,
                gateway_api::experimental::gateways::GatewayAllowedListenersNamespacesFrom::None
            )
        })
    {
        unsupported_fields.push("spec.allowedListeners (ListenerSet)".into());
    }
    let unsupported = (!unsupported_fields.is_empty()).then(|| {
        format!(
            "fields not supported by this Switchyard: {}",
            unsupported_fields.join(", ")
        )
    });

    let address = gateway_address(inputs, key, gw);
    let mut secrets = BTreeMap::new();
    let mut listeners: Vec<ListenerState> = gw
        .spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let field_prefix = format!("spec.listeners[{i}]");
            let unknown_here: Vec<String> = unknown
                .iter()
                .filter(|p| p.starts_with(&field_prefix))
                .cloned()
                .collect();
            validate_listener(inputs, key, l, &unknown_here, &mut secrets)
        })
        .collect();
    detect_conflicts(&mut listeners);
    GatewayState {
        key: key.clone(),
        generation: gen,
        address,
        unsupported,
        listeners,
        secrets,
        listener_sets: BTreeMap::new(),
    }
}

fn gateway_address(
    inputs: &Inputs,
    key: &ObjKey,
    gw: &Gateway,
) -> Result<Vec<String>, (&'static str, &'static str, String)> {
    match gw.spec.addresses.as_deref() {
        Some(addrs) if !addrs.is_empty() => {
            let mut out = Vec::new();
            for (i, a) in addrs.iter().enumerate() {
                let ty = a.r#type.as_deref().unwrap_or("IPAddress");
                if ty != "IPAddress" {
                    return Err((
                        reasons::UNSUPPORTED_ADDRESS,
                        reasons::ADDRESS_NOT_ASSIGNED,
                        format!("spec.addresses[{i}]: address type {ty} is not supported (only IPAddress)"),
                    ));
                }
                let value = a.value.as_deref().unwrap_or("");
                if value.is_empty() {
                    // An empty value asks the implementation to assign one.
                    match inputs.assigned_addresses.get(key).and_then(|v| v.first()) {
                        Some(v) => out.push(v.clone()),
                        None => {
                            return Err((
                                reasons::ADDRESS_NOT_ASSIGNED,
                                reasons::ADDRESS_NOT_ASSIGNED,
                                "no address available in the address pool".into(),
                            ))
                        }
                    }
                    continue;
                }
                if value.parse::<IpAddr>().is_err() {
                    return Err((
                        reasons::UNSUPPORTED_ADDRESS,
                        reasons::ADDRESS_NOT_USABLE,
                        format!("spec.addresses[{i}]: {value:?} is not an IP address"),
                    ));
                }
                out.push(value.to_string());
            }
            Ok(out)
        }
        _ => match inputs.assigned_addresses.get(key) {
            Some(v) if !v.is_empty() => Ok(v.clone()),
            _ => Err((
                reasons::ADDRESS_NOT_ASSIGNED,
                reasons::ADDRESS_NOT_ASSIGNED,
                "no address assigned: the address pool is exhausted or not configured".into(),
            )),
        },
    }
}

fn validate_listener(
    inputs: &Inputs,
    gw_key: &ObjKey,
    l: &GatewayListeners,
    unknown: &[String],
    secrets: &mut BTreeMap<String, ir::TlsCertificate>,
) -> ListenerState {
    use gateway_api::experimental::gateways::GatewayListenersTlsMode as Mode;
    let mut st = ListenerState {
        name: l.name.clone(),
        namespace: gw_key.namespace.clone(),
        parent: None,
        port: u16::try_from(l.port).unwrap_or(0),
        protocol: l.protocol.clone(),
        tls_mode: match (
            l.protocol.as_str(),
            l.tls.as_ref().and_then(|t| t.mode.as_ref()),
        ) {
            ("HTTPS", _) | ("TLS", None) | ("TLS", Some(Mode::Terminate)) => TlsMode::Terminate,
            ("TLS", Some(Mode::Passthrough)) => TlsMode::Passthrough,
            _ => TlsMode::None,
        },
        hostname: l.hostname.clone().filter(|h| !h.is_empty()),
        kinds: Vec::new(),
        accepted: Ok(()),
        resolved: Ok(()),
        conflict: None,
        secrets: Vec::new(),
        attached_routes: 0,
        spec: l.clone(),
    };
    let supported = kinds_for_protocol(&l.protocol);
    // Route kinds.
    match l.allowed_routes.as_ref().and_then(|a| a.kinds.as_ref()) {
        Some(kinds) if !kinds.is_empty() => {
            let mut invalid = Vec::new();
            for k in kinds {
                let group = k.group.as_deref().unwrap_or(GATEWAY_GROUP);
                if group == GATEWAY_GROUP && supported.contains(&k.kind.as_str()) {
                    if !st.kinds.contains(&k.kind) {
                        st.kinds.push(k.kind.clone());
                    }
                } else {
                    invalid.push(format!("{group}/{}", k.kind));
                }
            }
            if !invalid.is_empty() {
                st.resolved = Err((
                    reasons::INVALID_ROUTE_KINDS,
                    format!(
                        "route kinds not supported on protocol {}: {}",
                        l.protocol,
                        invalid.join(", ")
                    ),
                ));
            }
        }
        _ => st.kinds = supported.iter().map(|s| s.to_string()).collect(),
    }
    if supported.is_empty() {
        st.accepted = Err((
            reasons::UNSUPPORTED_PROTOCOL,
            format!(
                "protocol {} is not supported (HTTP, HTTPS, TLS, TCP and UDP are)",
                l.protocol
            ),
        ));
        return st;
    }
    if st.port == 0 {
        st.accepted = Err((
            reasons::UNSUPPORTED_VALUE,
            format!("port {} is out of range", l.port),
        ));
        return st;
    }
    if let Some(h) = &st.hostname {
        if !hostname::is_valid(h) {
            st.accepted = Err((
                reasons::UNSUPPORTED_VALUE,
                format!("hostname {h:?} is not a valid hostname"),
            ));
            return st;
        }
    }
    if !unknown.is_empty() {
        st.accepted = Err((
            reasons::UNSUPPORTED_VALUE,
            format!(
                "fields not supported by this Switchyard: {}",
                unknown.join(", ")
            ),
        ));
        return st;
    }
    if let Some(ns) = l
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref())
    {
        use gateway_api::experimental::gateways::GatewayListenersAllowedRoutesNamespacesFrom as From;
        if matches!(ns.from, Some(From::Selector)) && ns.selector.is_none() {
            st.accepted = Err((
                reasons::UNSUPPORTED_VALUE,
                "allowedRoutes.namespaces.from is Selector but no selector is set".into(),
            ));
            return st;
        }
        if let Some(sel) = &ns.selector {
            for e in sel.match_expressions.iter().flatten() {
                if !matches!(
                    e.operator.as_str(),
                    "In" | "NotIn" | "Exists" | "DoesNotExist"
                ) {
                    st.accepted = Err((
                        reasons::UNSUPPORTED_VALUE,
                        format!(
                            "allowedRoutes.namespaces.selector: unknown operator {:?}",
                            e.operator
                        ),
                    ));
                    return st;
                }
            }
        }
    }
    match (l.protocol.as_str(), &l.tls) {
        ("HTTP" | "TCP" | "UDP", Some(_)) => {
            st.accepted = Err((
                reasons::UNSUPPORTED_VALUE,
                format!("tls must not be set on a {} listener", l.protocol),
            ));
        }
        ("HTTPS" | "TLS", None) => {
            st.accepted = Err((
                reasons::UNSUPPORTED_VALUE,
                format!("a {} listener needs tls", l.protocol),
            ));
        }
        ("HTTPS" | "TLS", Some(tls)) => {
            if l.protocol == "HTTPS" && matches!(tls.mode, Some(Mode::Passthrough)) {
                st.accepted = Err((
                    reasons::UNSUPPORTED_VALUE,
                    "tls.mode Passthrough is not valid on an HTTPS listener".into(),
                ));
                return st;
            }
            if let Some(opts) = tls.options.as_ref().filter(|o| !o.is_empty()) {
                let keys: Vec<&str> = opts.keys().map(|k| k.as_str()).collect();
                st.accepted = Err((
                    reasons::UNSUPPORTED_VALUE,
                    format!("tls.options are not supported: {}", keys.join(", ")),
                ));
                return st;
            }
            let refs = tls.certificate_refs.as_deref().unwrap_or(&[]);
            if st.tls_mode == TlsMode::Passthrough {
                // The backend owns the certificate; certificateRefs are not used.
                if !refs.is_empty() {
                    st.accepted = Err((
                        reasons::UNSUPPORTED_VALUE,
                        "tls.certificateRefs must be empty in mode Passthrough".into(),
                    ));
                }
                return st;
            }
            resolve_certificates(inputs, gw_key, refs, &mut st, secrets);
        }
        _ => {}
    }
    st
}

/// Resolves a terminating listener's certificateRefs into SDS secrets.
fn resolve_certificates(
    inputs: &Inputs,
    gw_key: &ObjKey,
    refs: &[gateway_api::experimental::gateways::GatewayListenersTlsCertificateRefs],
    st: &mut ListenerState,
    secrets: &mut BTreeMap<String, ir::TlsCertificate>,
) {
    if refs.is_empty() {
        st.resolved = Err((
            reasons::INVALID_CERTIFICATE_REF,
            "tls.certificateRefs is empty".into(),
        ));
    }
    // The referrer: the Gateway, or the ListenerSet that defines the listener.
    let (from_kind, from_ns) = match &st.parent {
        Some(ls) => ("ListenerSet", ls.namespace.clone()),
        None => ("Gateway", gw_key.namespace.clone()),
    };
    for (i, r) in refs.iter().enumerate() {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        let ns = r.namespace.as_deref().unwrap_or(&from_ns);
        let skey = ObjKey::new(ns, &r.name);
        let err = |reason: &'static str, msg: String| {
            Err((reason, format!("tls.certificateRefs[{i}]: {msg}")))
        };
        if !(group.is_empty() || group == "core") || kind != "Secret" {
            st.resolved = err(
                reasons::INVALID_CERTIFICATE_REF,
                format!("{group}/{kind} is not a Secret"),
            );
            break;
        }
        let from = Ref {
            group: GATEWAY_GROUP,
            kind: from_kind,
            namespace: &from_ns,
        };
        let to = Ref {
            group: "",
            kind: "Secret",
            namespace: ns,
        };
        if !refgrant::permits(inputs, &from, &to, &r.name) {
            st.resolved = err(
                reasons::REF_NOT_PERMITTED,
                format!("Secret {skey} is in another namespace and no ReferenceGrant allows it"),
            );
            break;
        }
        match inputs.secrets.get(&skey).and_then(tls_pair) {
            Some((crt, keypem)) => {
                let name = names::secret(&skey);
                secrets.insert(
                    name.clone(),
                    ir::TlsCertificate {
                        name: name.clone(),
                        certificate_chain: crt,
                        private_key: keypem,
                    },
                );
                st.secrets.push(name);
            }
            None => {
                let why = if inputs.secrets.contains_key(&skey) {
                    "does not hold a PEM certificate and key in tls.crt and tls.key"
                } else {
                    "does not exist"
                };
                st.resolved = err(
                    reasons::INVALID_CERTIFICATE_REF,
                    format!("Secret {skey} {why}"),
                );
                break;
            }
        }
    }
}

/// `tls.crt` and `tls.key` of a Secret, if both look like PEM.
fn tls_pair(s: &k8s_openapi::api::core::v1::Secret) -> Option<(String, String)> {
    let get = |k: &str| -> Option<String> {
        if let Some(v) = s.data.as_ref().and_then(|d| d.get(k)) {
            return String::from_utf8(v.0.clone()).ok();
        }
        s.string_data.as_ref().and_then(|d| d.get(k)).cloned()
    };
    let crt = get("tls.crt")?;
    let key = get("tls.key")?;
    (crt.contains("-----BEGIN CERTIFICATE-----") && key.contains("PRIVATE KEY-----"))
        .then_some((crt, key))
}

/// Listeners sharing a port must be compatible (see [`port_group`]) and,
/// within a group, have distinct hostnames. TCP and UDP listeners have no
/// hostname, so two on one port conflict.
fn detect_conflicts(listeners: &mut [ListenerState]) {
    let n = listeners.len();
    for i in 0..n {
        if listeners[i].accepted.is_err() {
            continue;
        }
        for j in 0..n {
            if i == j || listeners[j].accepted.is_err() || listeners[i].port != listeners[j].port {
                continue;
            }
            let (a, b) = (&listeners[i], &listeners[j]);
            let (ta, ga) = port_group(&a.protocol);
            let (tb, gb) = port_group(&b.protocol);
            if ta != tb {
                continue;
            }
            if ga != gb {
                let msg = format!(
                    "port {} is also used by listener {} with protocol {}",
                    a.port, b.name, b.protocol
                );
                listeners[i].conflict = Some((reasons::PROTOCOL_CONFLICT, msg));
                break;
            }
            if a.hostname == b.hostname {
                let msg = format!(
                    "listener {} uses the same port {} and hostname {}",
                    b.name,
                    a.port,
                    a.hostname.as_deref().unwrap_or("(none)")
                );
                listeners[i].conflict = Some((reasons::HOSTNAME_CONFLICT, msg));
                break;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use gateway_api::experimental::gateways::GatewayListenersAllowedRoutes;

    /// A valid listener for tests; `from` is allowedRoutes.namespaces.from.
    pub fn listener(
        name: &str,
        port: u16,
        protocol: &str,
        hostname: Option<&str>,
        from: &str,
    ) -> ListenerState {
        let spec: GatewayListeners = serde_json::from_value(serde_json::json!({
            "name": name, "port": port, "protocol": protocol, "hostname": hostname,
            "allowedRoutes": {"namespaces": {"from": from, "selector": {"matchLabels": {"team": "a"}}}},
        }))
        .expect("listener");
        let _: Option<&GatewayListenersAllowedRoutes> = spec.allowed_routes.as_ref();
        ListenerState {
            name: name.into(),
            namespace: "infra".into(),
            parent: None,
            port,
            protocol: protocol.into(),
            tls_mode: if protocol == "TLS" {
                TlsMode::Passthrough
            } else {
                TlsMode::None
            },
            hostname: hostname.map(String::from),
            kinds: kinds_for_protocol(protocol)
                .iter()
                .map(|s| s.to_string())
                .collect(),
            accepted: Ok(()),
            resolved: Ok(()),
            conflict: None,
            secrets: Vec::new(),
            attached_routes: 0,
            spec,
        }
    }

    #[test]
    fn port_sharing_follows_protocol_groups() {
        let mut ls = vec![
            listener("https", 443, "HTTPS", Some("a.example.com"), "Same"),
            listener("tls", 443, "TLS", Some("b.example.com"), "Same"),
            listener("tcp", 53, "TCP", None, "Same"),
            listener("udp", 53, "UDP", None, "Same"),
            listener("http", 8080, "HTTP", None, "Same"),
            listener("tcp2", 8080, "TCP", None, "Same"),
            listener("udp2", 53, "UDP", None, "Same"),
        ];
        detect_conflicts(&mut ls);
        let c: Vec<Option<&str>> = ls
            .iter()
            .map(|l| l.conflict.as_ref().map(|c| c.0))
            .collect();
        assert_eq!(
            c,
            vec![
                None,
                None,
                None,
                Some(reasons::HOSTNAME_CONFLICT),
                Some(reasons::PROTOCOL_CONFLICT),
                Some(reasons::PROTOCOL_CONFLICT),
                Some(reasons::HOSTNAME_CONFLICT),
            ]
        );
    }
}
