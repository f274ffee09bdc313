//! ReferenceGrant effects: which grants appeared or vanished between two
//! translations, and which routes' cross-namespace references became refused
//! or permitted as a result (`switchyard_reference_grant_changes_total`,
//! `switchyard_reference_grant_routes_affected_total`).
//!
//! A route is affected when its `ResolvedRefs` condition turns into
//! `RefNotPermitted` (a backendRef that resolved no longer does: counted as
//! `change="removed"`) or stops being so (`change="added"`), comparing the
//! status before and after the translation. Routes are counted only when a
//! ReferenceGrant changed in that translation; trust changes from route
//! edits alone are not grant effects (they still yield
//! `switchyard_trust_changes_total` and an Event).

use std::collections::BTreeSet;

use super::catalogue as cat;
use crate::inputs::{Changes, Inputs, Kind, ObjKey};
use crate::status::{ObjectStatus, StatusSet};
use crate::translate::Update;

/// A route whose cross-namespace references became refused or permitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustChange {
    pub kind: Kind,
    pub route: ObjKey,
    /// True: permitted again; false: now refused.
    pub permitted: bool,
    /// The route's `ResolvedRefs` message (refused), or a short note.
    pub message: String,
}

/// Routes whose cross-namespace trust changed between two translations. A
/// ReferenceGrant created or deleted shows up here as the routes it let in
/// or cut off.
pub fn trust_changes(up: &Update, now: &StatusSet) -> Vec<TrustChange> {
    let refused = |st: Option<&ObjectStatus>| -> Option<String> {
        match st {
            Some(ObjectStatus::Route { parents }) => parents.iter().find_map(|p| {
                p.conditions
                    .iter()
                    .find(|c| c.type_ == "ResolvedRefs" && c.reason == "RefNotPermitted")
                    .map(|c| c.message.to_string())
            }),
            _ => None,
        }
    };
    let mut out = Vec::new();
    let all: Vec<(Kind, ObjKey)>;
    let touched: &[(Kind, ObjKey)] = match &up.touched {
        Some(t) => t,
        None => {
            all = now.objects.keys().cloned().collect();
            &all
        }
    };
    for (kind, key) in touched {
        if !kind.is_route() {
            continue;
        }
        let before = refused(up.previous.get(*kind, key));
        let after = refused(now.get(*kind, key));
        let permitted = match (&before, &after) {
            (None, Some(_)) => false,
            (Some(_), None) => true,
            _ => continue,
        };
        out.push(TrustChange {
            kind: *kind,
            route: key.clone(),
            permitted,
            message: after
                .unwrap_or_else(|| "cross-namespace references are permitted again".into()),
        });
    }
    out
}

/// ReferenceGrants added, removed or changed by one translation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantChanges {
    pub added: Vec<ObjKey>,
    pub removed: Vec<ObjKey>,
    /// Some grant was touched (added, removed or edited).
    pub any: bool,
}

/// Remembers the ReferenceGrants of the last translation.
#[derive(Default)]
pub struct GrantTracker {
    known: Option<BTreeSet<ObjKey>>,
}

impl GrantTracker {
    /// Compares the grants in `inputs` with those of the previous call and
    /// counts `switchyard_reference_grant_changes_total`. The first call
    /// (process start) only learns them.
    pub fn observe(&mut self, inputs: &Inputs, changes: &Changes) -> GrantChanges {
        let touched = changes.all
            || changes
                .objects
                .iter()
                .any(|(k, _)| *k == Kind::ReferenceGrant);
        if self.known.is_some() && !touched {
            return GrantChanges::default();
        }
        let now: BTreeSet<ObjKey> = inputs.keys_of(Kind::ReferenceGrant).into_iter().collect();
        let Some(before) = self.known.replace(now.clone()) else {
            return GrantChanges::default();
        };
        let out = GrantChanges {
            added: now.difference(&before).cloned().collect(),
            removed: before.difference(&now).cloned().collect(),
            any: changes
                .objects
                .iter()
                .any(|(k, _)| *k == Kind::ReferenceGrant)
                || now != before,
        };
        if !out.added.is_empty() {
            cat::REFERENCE_GRANT_CHANGES.add(["added"], out.added.len() as u64);
        }
        if !out.removed.is_empty() {
            cat::REFERENCE_GRANT_CHANGES.add(["removed"], out.removed.len() as u64);
        }
        out
    }
}

/// Counts the routes a grant change affected (no-op when no grant changed).
pub fn record_effects(grants: &GrantChanges, trust: &[TrustChange]) {
    if !grants.any {
        return;
    }
    let cut = trust.iter().filter(|t| !t.permitted).count() as u64;
    let let_in = trust.iter().filter(|t| t.permitted).count() as u64;
    if cut > 0 {
        cat::REFERENCE_GRANT_ROUTES_AFFECTED.add(["removed"], cut);
    }
    if let_in > 0 {
        cat::REFERENCE_GRANT_ROUTES_AFFECTED.add(["added"], let_in);
    }
}

/// Logs, counts and returns the trust changes of one translation: routes
/// refused at warn (naming the ReferenceGrants removed, if any), routes let
/// in again at info; `switchyard_trust_changes_total` and the grant effects.
pub fn report(up: &Update, now: &StatusSet, grants: &GrantChanges) -> Vec<TrustChange> {
    let changes = trust_changes(up, now);
    for c in &changes {
        if c.permitted {
            tracing::info!(kind = c.kind.as_str(), route = %c.route, "trust restored: {}", c.message);
        } else if !grants.removed.is_empty() {
            tracing::warn!(
                kind = c.kind.as_str(),
                route = %c.route,
                reference_grants = %names(&grants.removed),
                "ReferenceGrant removed, route refused: {}",
                c.message
            );
        } else {
            tracing::warn!(kind = c.kind.as_str(), route = %c.route, "trust removed: {}", c.message);
        }
        cat::TRUST_CHANGES.inc([c.kind.as_str(), if c.permitted { "true" } else { "false" }]);
    }
    record_effects(grants, &changes);
    changes
}

/// "ns/a, ns/b": the grants of a list, for Event notes and logs.
pub fn names(keys: &[ObjKey]) -> String {
    keys.iter()
        .map(|k| format!("{}/{}", k.namespace, k.name))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
