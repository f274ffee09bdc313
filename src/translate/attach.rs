//! Kind-neutral route attachment: parentRef → Gateway listeners
//! (`sectionName`, `port`), `allowedRoutes` (kinds; namespaces Same, All,
//! Selector), hostname intersection, and one builder of the per-parentRef
//! route status for every route kind.
//!
//! Attachment depends only on the parentRef and `allowedRoutes`: a listener
//! that is conflicted or otherwise invalid still counts its attached routes
//! (it just serves nothing), as the spec asks.

use std::collections::BTreeMap;

use gateway_api::experimental::gateways::GatewayListenersAllowedRoutesNamespacesFrom as NsFrom;

use super::backend::RefError;
use super::conditions::{reasons, types};
use super::gateway::GatewayState;
use super::hostname;
use super::listener::ListenerState;
use crate::inputs::{Kind, ObjKey};
use crate::status::{Condition, ParentRef, RouteParentStatus};

/// Why a parentRef did not attach: (reason, message).
pub type NotAttached = (&'static str, String);

/// Normalizes a parentRef of any route kind (the generated types differ
/// only in name).
macro_rules! parent_ref {
    ($pr:expr) => {
        $crate::status::ParentRef {
            group: std::borrow::Cow::Owned(
                $pr.group
                    .clone()
                    .unwrap_or_else(|| $crate::inputs::GATEWAY_GROUP.to_string()),
            ),
            kind: std::borrow::Cow::Owned($pr.kind.clone().unwrap_or_else(|| "Gateway".into())),
            namespace: $pr.namespace.clone(),
            name: $pr.name.clone(),
            section_name: $pr.section_name.clone(),
            port: $pr.port,
        }
    };
}
pub(crate) use parent_ref;

/// The listeners a parentRef may attach to: those of the Gateway itself
/// (`owner: None`) or of one of its ListenerSets, narrowed by `sectionName`
/// and `port`. `Err` when none is left (`NoMatchingParent`).
pub fn candidates(
    gw: &GatewayState,
    owner: Option<&ObjKey>,
    pr: &ParentRef,
) -> Result<Vec<usize>, NotAttached> {
    let found: Vec<usize> = gw
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| l.parent.as_ref() == owner)
        .filter(|(_, l)| pr.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|(_, l)| pr.port.is_none_or(|p| i32::from(l.port) == p))
        .map(|(i, _)| i)
        .collect();
    if found.is_empty() {
        return Err((
            reasons::NO_MATCHING_PARENT,
            format!(
                "{} {} has no listener matching{}{}",
                pr.kind,
                owner.unwrap_or(&gw.key),
                pr.section_name
                    .as_ref()
                    .map(|s| format!(" sectionName {s}"))
                    .unwrap_or_default(),
                pr.port.map(|p| format!(" port {p}")).unwrap_or_default()
            ),
        ));
    }
    Ok(found)
}

/// Attaches among the candidate listeners: those whose `allowedRoutes`
/// admit the route, then whose hostname intersects the route's; returns
/// each with the effective hostnames (empty: any host).
pub fn attach_to(
    ns_labels: &BTreeMap<String, String>,
    (kind, route_ns): (Kind, &str),
    route_hostnames: &[String],
    gw: &GatewayState,
    candidates: &[usize],
) -> Result<Vec<(usize, Vec<String>)>, NotAttached> {
    let allowed: Vec<usize> = candidates
        .iter()
        .copied()
        .filter(|&i| listener_allows(&gw.listeners[i], kind, route_ns, ns_labels))
        .collect();
    if allowed.is_empty() {
        return Err((
            reasons::NOT_ALLOWED_BY_LISTENERS,
            format!(
                "no listener of Gateway {} allows {}s from namespace {}",
                gw.key,
                kind.as_str(),
                route_ns
            ),
        ));
    }
    let out: Vec<(usize, Vec<String>)> = allowed
        .into_iter()
        .filter_map(|i| {
            hostname::intersect(gw.listeners[i].hostname.as_deref(), route_hostnames)
                .map(|h| (i, h))
        })
        .collect();
    if out.is_empty() {
        return Err((
            reasons::NO_MATCHING_LISTENER_HOSTNAME,
            format!(
                "no hostname of the route intersects a listener hostname of Gateway {}",
                gw.key
            ),
        ));
    }
    Ok(out)
}

/// Whether a listener's `allowedRoutes` admits a route of `kind` from `route_ns`.
pub fn listener_allows(
    l: &ListenerState,
    kind: Kind,
    route_ns: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if !l.kinds.iter().any(|k| k == kind.as_str()) {
        return false;
    }
    let ns = l
        .spec
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match ns.and_then(|n| n.from.clone()).unwrap_or(NsFrom::Same) {
        NsFrom::Same => l.namespace == route_ns,
        NsFrom::All => true,
        NsFrom::Selector => ns.and_then(|n| n.selector.as_ref()).is_some_and(|sel| {
            selector_matches(
                labels,
                sel.match_labels.as_ref(),
                sel.match_expressions.iter().flatten().map(|e| {
                    (
                        e.key.as_str(),
                        e.operator.as_str(),
                        e.values.as_deref().unwrap_or(&[]),
                    )
                }),
            )
        }),
    }
}

/// Whether namespace `labels` satisfy a label selector (`matchLabels`, and
/// `matchExpressions` as (key, operator, values)). The generated selector
/// types differ per field, so they are passed apart.
pub fn selector_matches<'a>(
    labels: &BTreeMap<String, String>,
    match_labels: Option<&BTreeMap<String, String>>,
    mut expressions: impl Iterator<Item = (&'a str, &'a str, &'a [String])>,
) -> bool {
    match_labels
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && expressions.all(|(key, op, vals)| match op {
            "In" => labels.get(key).is_some_and(|v| vals.contains(v)),
            "NotIn" => labels.get(key).is_none_or(|v| !vals.contains(v)),
            "Exists" => labels.contains_key(key),
            "DoesNotExist" => !labels.contains_key(key),
            _ => false,
        })
}

/// What a route's compilation says about it, whatever its kind.
pub struct Verdict<'a> {
    /// `Err`: no usable rule (reason, message).
    pub accepted: Result<(), &'a NotAttached>,
    pub partially_invalid: Option<&'a str>,
    pub ref_error: Option<&'a RefError>,
}

/// The status entry of one parentRef: `Accepted` from the attachment (then
/// the compilation), `ResolvedRefs`, and `PartiallyInvalid` when rules were
/// dropped.
pub fn parent_status(
    controller: &str,
    pr: ParentRef,
    attached: Result<(), NotAttached>,
    v: &Verdict<'_>,
    gen: i64,
) -> RouteParentStatus {
    let accepted = match (attached, v.accepted) {
        (Err((reason, msg)), _) => Condition::new(types::ACCEPTED, false, reason, msg, gen),
        (Ok(()), Err((reason, msg))) => {
            Condition::new(types::ACCEPTED, false, reason, msg.clone(), gen)
        }
        (Ok(()), Ok(())) => Condition::new(
            types::ACCEPTED,
            true,
            reasons::ACCEPTED,
            "Route is accepted",
            gen,
        ),
    };
    let mut conditions = vec![accepted];
    conditions.push(match v.ref_error {
        None => Condition::new(
            types::RESOLVED_REFS,
            true,
            reasons::RESOLVED_REFS,
            "All references resolved",
            gen,
        ),
        Some(e) => Condition::new(
            types::RESOLVED_REFS,
            false,
            e.reason,
            e.message.clone(),
            gen,
        ),
    });
    if let Some(msg) = v.partially_invalid {
        conditions.push(Condition::new(
            types::PARTIALLY_INVALID,
            true,
            reasons::UNSUPPORTED_VALUE,
            msg.to_string(),
            gen,
        ));
    }
    RouteParentStatus {
        parent_ref: pr,
        controller_name: controller.to_string(),
        conditions,
    }
}

/// Records a bad backendRef: one reason per condition (the first); the
/// message names every bad reference.
pub fn note_ref_error(first: &mut Option<RefError>, e: RefError) {
    match first {
        Some(f) => {
            if !f.message.contains(&e.message) {
                f.message = format!("{}; {}", f.message, e.message);
            }
        }
        None => *first = Some(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::GATEWAY_GROUP;
    use crate::translate::listener::tests::listener;

    fn attach(
        labels: &BTreeMap<String, String>,
        route: (Kind, &str),
        hostnames: &[String],
        pr: &ParentRef,
        gw: &GatewayState,
    ) -> Result<Vec<(usize, Vec<String>)>, NotAttached> {
        let c = candidates(gw, None, pr)?;
        attach_to(labels, route, hostnames, gw, &c)
    }

    fn gw(listeners: Vec<ListenerState>) -> GatewayState {
        GatewayState::for_tests(ObjKey::new("infra", "gw"), listeners)
    }

    fn pr(section: Option<&str>, port: Option<i32>) -> ParentRef {
        ParentRef {
            group: GATEWAY_GROUP.into(),
            kind: "Gateway".into(),
            namespace: Some("infra".into()),
            name: "gw".into(),
            section_name: section.map(String::from),
            port,
        }
    }

    #[test]
    fn section_name_and_port_select_listeners() {
        let g = gw(vec![
            listener("a", 80, "HTTP", None, "All"),
            listener("b", 443, "TLS", Some("*.example.com"), "All"),
            listener("c", 5432, "TCP", None, "All"),
        ]);
        let none = BTreeMap::new();
        let got = attach(&none, (Kind::TCPRoute, "apps"), &[], &pr(None, None), &g);
        assert_eq!(got, Ok(vec![(2, vec![])]));
        let got = attach(
            &none,
            (Kind::TCPRoute, "apps"),
            &[],
            &pr(Some("a"), None),
            &g,
        );
        assert_eq!(got.map_err(|e| e.0), Err(reasons::NOT_ALLOWED_BY_LISTENERS));
        let got = attach(
            &none,
            (Kind::TLSRoute, "apps"),
            &[],
            &pr(None, Some(80)),
            &g,
        );
        assert_eq!(got.map_err(|e| e.0), Err(reasons::NOT_ALLOWED_BY_LISTENERS));
        let got = attach(
            &none,
            (Kind::TLSRoute, "apps"),
            &[],
            &pr(Some("x"), None),
            &g,
        );
        assert_eq!(got.map_err(|e| e.0), Err(reasons::NO_MATCHING_PARENT));
        let hosts = ["db.other.org".to_string()];
        let got = attach(&none, (Kind::TLSRoute, "apps"), &hosts, &pr(None, None), &g);
        assert_eq!(
            got.map_err(|e| e.0),
            Err(reasons::NO_MATCHING_LISTENER_HOSTNAME)
        );
        let hosts = ["db.example.com".to_string()];
        let got = attach(
            &none,
            (Kind::TLSRoute, "apps"),
            &hosts,
            &pr(None, Some(443)),
            &g,
        );
        assert_eq!(got, Ok(vec![(1, vec!["db.example.com".to_string()])]));
    }

    #[test]
    fn namespaces_same_and_selector() {
        let mut g = gw(vec![
            listener("same", 80, "HTTP", None, "Same"),
            listener("sel", 8080, "HTTP", None, "Selector"),
        ]);
        let none = BTreeMap::new();
        let got = attach(
            &none,
            (Kind::HTTPRoute, "infra"),
            &[],
            &pr(Some("same"), None),
            &g,
        );
        assert!(got.is_ok());
        let got = attach(
            &none,
            (Kind::HTTPRoute, "apps"),
            &[],
            &pr(Some("same"), None),
            &g,
        );
        assert_eq!(got.map_err(|e| e.0), Err(reasons::NOT_ALLOWED_BY_LISTENERS));
        // A conflicted listener still attaches (it serves nothing).
        g.listeners[0].conflict = Some((reasons::PROTOCOL_CONFLICT, "x".into()));
        let got = attach(
            &none,
            (Kind::HTTPRoute, "infra"),
            &[],
            &pr(Some("same"), None),
            &g,
        );
        assert!(got.is_ok());
        let labels: BTreeMap<String, String> = [("team".to_string(), "a".to_string())].into();
        let got = attach(
            &labels,
            (Kind::HTTPRoute, "apps"),
            &[],
            &pr(Some("sel"), None),
            &g,
        );
        assert!(got.is_ok(), "{got:?}");
        let got = attach(
            &none,
            (Kind::HTTPRoute, "apps"),
            &[],
            &pr(Some("sel"), None),
            &g,
        );
        assert_eq!(got.map_err(|e| e.0), Err(reasons::NOT_ALLOWED_BY_LISTENERS));
    }
}
