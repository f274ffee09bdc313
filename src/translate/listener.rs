//! Listener validation (protocol, TLS, certificates, allowedRoutes),
//! conflicts between listeners sharing a port, and listener status.

use std::collections::BTreeMap;

use gateway_api::experimental::gateways::GatewayListeners;

use super::conditions::{reasons, types};
use super::hostname;
use super::refgrant::{self, Ref};
use crate::inputs::{Inputs, ObjKey, GATEWAY_GROUP};
use crate::ir::{self, names};
use crate::status::{Condition, GroupKind, ListenerStatus};

/// Route kinds a listener protocol can carry (only kinds Switchyard implements).
pub(super) fn kinds_for_protocol(protocol: &str) -> &'static [&'static str] {
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
    /// `OverlappingTLSConfig` (set only when true): the overlapping listeners.
    pub overlapping_tls: Option<String>,
    /// SDS secret names (HTTPS).
    pub secrets: Vec<String>,
    /// A referenced Secret's latest version was refused and its last good
    /// certificate is served (or the served certificate expired):
    /// reported as `ResolvedRefs=False` (`InvalidCertificateRef`) while the
    /// listener keeps serving.
    pub stale_certificate: Option<String>,
    /// Certificates expiring within [`crate::certs::WARN_DAYS`] days:
    /// appended to a `ResolvedRefs=True` message.
    pub certificate_notes: Vec<String>,
    /// Client certificate validation from the Gateway's `spec.tls.frontend`
    /// (HTTPS listeners it targets).
    pub client_validation: Option<super::frontend_tls::ListenerValidation>,
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

pub(super) fn listener_status(l: &ListenerState, gen: i64) -> ListenerStatus {
    let mut conditions = Vec::new();
    // A conflicted listener is not accepted: the spec forbids picking a
    // winner among indistinct listeners (within one Gateway or ListenerSet).
    conditions.push(match (&l.accepted, &l.conflict) {
        (Ok(()), None) => Condition::new(
            types::ACCEPTED,
            true,
            reasons::ACCEPTED,
            "Listener is accepted",
            gen,
        ),
        (Err((r, m)), _) | (Ok(()), Some((r, m))) => {
            Condition::new(types::ACCEPTED, false, r, m.clone(), gen)
        }
    });
    let frontend_refs = l
        .client_validation
        .as_ref()
        .and_then(|v| v.refs.as_ref().err());
    conditions.push(match (&l.resolved, frontend_refs, &l.stale_certificate) {
        (Err((r, m)), _, _) | (Ok(()), Some((r, m)), _) => {
            Condition::new(types::RESOLVED_REFS, false, r, m.clone(), gen)
        }
        (Ok(()), None, Some(m)) => Condition::new(
            types::RESOLVED_REFS,
            false,
            reasons::INVALID_CERTIFICATE_REF,
            m.clone(),
            gen,
        ),
        (Ok(()), None, None) if l.certificate_notes.is_empty() => Condition::new(
            types::RESOLVED_REFS,
            true,
            reasons::RESOLVED_REFS,
            "All references resolved",
            gen,
        ),
        (Ok(()), None, None) => Condition::new(
            types::RESOLVED_REFS,
            true,
            reasons::RESOLVED_REFS,
            format!(
                "All references resolved; {}",
                l.certificate_notes.join("; ")
            ),
            gen,
        ),
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
    conditions.push(match (&l.conflict, l.programmable()) {
        (_, true) => Condition::new(
            types::PROGRAMMED,
            true,
            reasons::PROGRAMMED,
            "Listener is programmed",
            gen,
        ),
        (Some((r, m)), false) => Condition::new(types::PROGRAMMED, false, r, m.clone(), gen),
        (None, false) => Condition::new(
            types::PROGRAMMED,
            false,
            reasons::INVALID,
            "Listener is invalid; see its other conditions",
            gen,
        ),
    });
    if let Some(msg) = &l.overlapping_tls {
        conditions.push(Condition::new(
            types::OVERLAPPING_TLS_CONFIG,
            true,
            reasons::OVERLAPPING_HOSTNAMES,
            msg.clone(),
            gen,
        ));
    }
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

/// Validates one listener of Gateway `gw_key`, defined by the Gateway itself
/// or by ListenerSet `parent`.
pub(super) fn validate_listener(
    inputs: &Inputs,
    gw_key: &ObjKey,
    l: &GatewayListeners,
    parent: Option<&ObjKey>,
    unknown: &[String],
    secrets: &mut BTreeMap<String, ir::TlsCertificate>,
) -> ListenerState {
    use gateway_api::experimental::gateways::GatewayListenersTlsMode as Mode;
    let mut st = ListenerState {
        name: l.name.clone(),
        namespace: parent.unwrap_or(gw_key).namespace.clone(),
        parent: parent.cloned(),
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
        stale_certificate: None,
        certificate_notes: Vec::new(),
        client_validation: None,
        conflict: None,
        overlapping_tls: None,
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
        let (crt, keypem) = match crate::certs::usable(inputs, &skey) {
            crate::certs::Usable::Good { crt, key, warning } => {
                if let Some(w) = warning {
                    st.certificate_notes
                        .push(format!("tls.certificateRefs[{i}]: {w}"));
                }
                (crt, key)
            }
            crate::certs::Usable::Degraded { crt, key, problem } => {
                st.stale_certificate
                    .get_or_insert_with(|| format!("tls.certificateRefs[{i}]: {problem}"));
                (crt, key)
            }
            crate::certs::Usable::Refused(why) => {
                st.resolved = err(
                    reasons::INVALID_CERTIFICATE_REF,
                    format!("Secret {skey}: {why}"),
                );
                break;
            }
        };
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
}

/// Listeners sharing a port must be compatible (see [`port_group`]) and,
/// within a group, have distinct hostnames. TCP and UDP listeners have no
/// hostname, so two on one port conflict. `ranks` is each listener's merge
/// precedence (0: the Gateway, then its ListenerSets), and owners are
/// settled in that order: a listener that clashes with a kept listener of
/// higher precedence is conflicted; then, among one owner's remaining
/// listeners, every indistinct one is (the spec: no winner among them). A
/// conflicted listener holds no port.
pub(super) fn detect_conflicts(listeners: &mut [ListenerState], ranks: &[usize]) {
    let n = listeners.len();
    let rank = |i: usize| ranks.get(i).copied().unwrap_or(0);
    let max_rank = (0..n).map(rank).max().unwrap_or(0);
    let live = |l: &ListenerState| l.accepted.is_ok() && l.conflict.is_none();
    for r in 0..=max_rank {
        let here: Vec<usize> = (0..n).filter(|&i| rank(i) == r).collect();
        // Listeners of higher precedence that hold their port win.
        for &i in &here {
            if !live(&listeners[i]) {
                continue;
            }
            let found = (0..n)
                .filter(|&j| rank(j) < r && live(&listeners[j]))
                .find_map(|j| clash(&listeners[i], &listeners[j]));
            listeners[i].conflict = found;
        }
        // Among the rest of this owner's listeners, no winner.
        let before: Vec<bool> = (0..n).map(|i| live(&listeners[i])).collect();
        for &i in &here {
            if !before[i] {
                continue;
            }
            let found = here
                .iter()
                .filter(|&&j| j != i && before[j])
                .find_map(|&j| clash(&listeners[i], &listeners[j]));
            if found.is_some() {
                listeners[i].conflict = found;
            }
        }
    }
}

/// Marks `OverlappingTLSConfig` on every listener that terminates TLS and
/// whose hostname overlaps another such listener's on the same port (one
/// covers the other; no hostname covers all): with HTTP/2 connection
/// coalescing a client may reuse one listener's connection for the other.
pub(super) fn mark_overlapping_tls(listeners: &mut [ListenerState]) {
    let terminates = |l: &ListenerState| {
        l.tls_mode == TlsMode::Terminate && l.accepted.is_ok() && l.conflict.is_none()
    };
    let overlap = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => {
            a == b || hostname::falls_back_to(a, b) || hostname::falls_back_to(b, a)
        }
    };
    let n = listeners.len();
    for i in 0..n {
        if !terminates(&listeners[i]) {
            continue;
        }
        let others: Vec<&str> = (0..n)
            .filter(|&j| {
                j != i
                    && terminates(&listeners[j])
                    && listeners[j].port == listeners[i].port
                    && overlap(
                        listeners[i].hostname.as_deref(),
                        listeners[j].hostname.as_deref(),
                    )
            })
            .map(|j| listeners[j].name.as_str())
            .collect();
        if !others.is_empty() {
            let msg = format!(
                "hostname {} overlaps listeners {} on port {}",
                listeners[i].hostname.as_deref().unwrap_or("(any)"),
                others.join(", "),
                listeners[i].port
            );
            listeners[i].overlapping_tls = Some(msg);
        }
    }
}

/// Why listener `a` cannot share its port with `b`, if it cannot.
fn clash(a: &ListenerState, b: &ListenerState) -> Option<(&'static str, String)> {
    if a.port != b.port {
        return None;
    }
    let (ta, ga) = port_group(&a.protocol);
    let (tb, gb) = port_group(&b.protocol);
    if ta != tb {
        return None;
    }
    let whose = match &b.parent {
        Some(ls) => format!("listener {} of ListenerSet {ls}", b.name),
        None => format!("listener {}", b.name),
    };
    if ga != gb {
        return Some((
            reasons::PROTOCOL_CONFLICT,
            format!(
                "port {} is also used by {whose} with protocol {}",
                a.port, b.protocol
            ),
        ));
    }
    (a.hostname == b.hostname).then(|| {
        (
            reasons::HOSTNAME_CONFLICT,
            format!(
                "{whose} uses the same port {} and hostname {}",
                a.port,
                a.hostname.as_deref().unwrap_or("(none)")
            ),
        )
    })
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
            stale_certificate: None,
            certificate_notes: Vec::new(),
            client_validation: None,
            conflict: None,
            overlapping_tls: None,
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
        detect_conflicts(&mut ls, &[]);
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

    #[test]
    fn overlapping_tls_hostnames_are_marked_on_both_sides() {
        let tls = |name, host: Option<&str>| {
            let mut l = listener(name, 443, "HTTPS", host, "Same");
            l.tls_mode = TlsMode::Terminate;
            l
        };
        // The spec's example: A and C overlap, B does not.
        let mut ls = vec![
            tls("a", Some("foo.example.com")),
            tls("b", Some("foo.example.org")),
            tls("c", Some("*.example.com")),
            listener("http", 443, "TLS", Some("*.example.com"), "Same"), // passthrough
        ];
        mark_overlapping_tls(&mut ls);
        let marked: Vec<bool> = ls.iter().map(|l| l.overlapping_tls.is_some()).collect();
        assert_eq!(marked, vec![true, false, true, false]);
        let st = listener_status(&ls[0], 1);
        let c = st
            .conditions
            .iter()
            .find(|c| c.type_ == types::OVERLAPPING_TLS_CONFIG)
            .expect("set");
        assert_eq!(c.reason, reasons::OVERLAPPING_HOSTNAMES);
        assert!(listener_status(&ls[1], 1)
            .conditions
            .iter()
            .all(|c| c.type_ != types::OVERLAPPING_TLS_CONFIG));
    }

    #[test]
    fn higher_precedence_keeps_the_port_and_conflicted_listeners_hold_none() {
        // Gateway (rank 0): two HTTP listeners on 80. ListenerSet 1: an HTTP
        // listener, a TCP listener on 80 (clashes with the Gateway's) and an
        // HTTP listener with a Gateway hostname. ListenerSet 2: the same
        // hostname as ListenerSet 1's first listener.
        let mut ls = vec![
            listener("gw-a", 80, "HTTP", Some("a.example.com"), "All"),
            listener("gw-b", 80, "HTTP", Some("b.example.com"), "All"),
            listener("ls1-ok", 80, "HTTP", Some("c.example.com"), "All"),
            listener("ls1-tcp", 80, "TCP", None, "All"),
            listener("ls1-dup", 80, "HTTP", Some("b.example.com"), "All"),
            listener("ls2-dup", 80, "HTTP", Some("c.example.com"), "All"),
            listener("ls2-ok", 80, "HTTP", Some("d.example.com"), "All"),
        ];
        detect_conflicts(&mut ls, &[0, 0, 1, 1, 1, 2, 2]);
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
                Some(reasons::PROTOCOL_CONFLICT),
                Some(reasons::HOSTNAME_CONFLICT),
                Some(reasons::HOSTNAME_CONFLICT),
                None,
            ]
        );
    }
}
