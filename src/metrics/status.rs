//! Status as metrics: `switchyard_status_condition` (1 per current
//! condition of every object whose status Switchyard owns) and the totals
//! (`switchyard_gateways_*`, `switchyard_routes_*`, `switchyard_listeners_invalid`).
//!
//! [`StatusMetrics::update`] is given the status as it is written (with
//! `Programmed` from Envoy's ACKs). It remembers what it exported per object:
//! an object whose status is unchanged costs one comparison, a changed one
//! swaps its own series only, and an object gone (or a condition whose
//! reason changed) leaves no stale series behind. Totals are kept as sums of
//! per-object contributions, so they too change only with the objects that
//! changed.

use std::collections::BTreeMap;

use super::catalogue as cat;
use crate::inputs::{Kind, ObjKey};
use crate::status::{Condition, ObjectStatus, ParentRef, StatusSet};

/// The seven label values of one `switchyard_status_condition` series:
/// kind, namespace, name, parent, type, status, reason.
type Series = [String; 7];

/// What one object adds to the totals.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Contribution {
    gateway: bool,
    programmed: bool,
    /// Route kind, when the object is a route with parents of ours.
    route: Option<Kind>,
    accepted: bool,
    unresolved: bool,
    listeners_invalid: u32,
}

/// What was exported for one object. Its series are not kept: they are
/// derived again from `status` when the object changes or goes (a few
/// microseconds), rather than held as seven label strings per condition
/// for every object (~0.8 KB per route, 3.8 MiB at 5,000 routes).
struct Exported {
    status: ObjectStatus,
    contribution: Contribution,
}

#[derive(Default, Debug, Clone, Copy, PartialEq)]
struct RouteCounts {
    total: u64,
    accepted: u64,
    unresolved: u64,
}

/// The exported state; one per process (controller loop or standalone reloader).
#[derive(Default)]
pub struct StatusMetrics {
    objects: BTreeMap<Id, Exported>,
    gateways: u64,
    programmed: u64,
    listeners_invalid: u64,
    routes: BTreeMap<Kind, RouteCounts>,
}

fn cond_true(conds: &[Condition], t: &str) -> bool {
    conds.iter().any(|c| c.type_ == t && c.is_true())
}

fn cond_false(conds: &[Condition], t: &str) -> bool {
    conds.iter().any(|c| c.type_ == t && c.status == "False")
}

/// `<ns>/<name>[/<sectionName>][:<port>]`; the namespace defaults to the
/// referring object's.
fn parent_label(p: &ParentRef, own_ns: &str) -> String {
    let mut s = format!("{}/{}", p.namespace.as_deref().unwrap_or(own_ns), p.name);
    if let Some(sec) = &p.section_name {
        s.push('/');
        s.push_str(sec);
    }
    if let Some(port) = p.port {
        s.push(':');
        s.push_str(&port.to_string());
    }
    s
}

fn push(
    out: &mut Vec<Series>,
    kind: &str,
    ns: &str,
    name: &str,
    parent: &str,
    conds: &[Condition],
) {
    for c in conds {
        out.push([
            kind.to_string(),
            ns.to_string(),
            name.to_string(),
            parent.to_string(),
            c.type_.to_string(),
            c.status.to_string(),
            c.reason.to_string(),
        ]);
    }
}

fn listener_invalid(conds: &[Condition]) -> bool {
    cond_false(conds, "Accepted")
        || cond_false(conds, "ResolvedRefs")
        || cond_true(conds, "Conflicted")
}

/// The series and contribution of one object's status.
fn derive(kind: Kind, key: &ObjKey, st: &ObjectStatus) -> (Vec<Series>, Contribution) {
    let (ns, name, k) = (key.namespace.as_str(), key.name.as_str(), kind.as_str());
    let mut out = Vec::new();
    let mut c = Contribution::default();
    match st {
        ObjectStatus::GatewayClass { conditions, .. } | ObjectStatus::Conditions { conditions } => {
            push(&mut out, k, ns, name, "", conditions)
        }
        ObjectStatus::Gateway {
            conditions,
            listeners,
            ..
        } => {
            push(&mut out, k, ns, name, "", conditions);
            c.gateway = true;
            c.programmed = cond_true(conditions, "Programmed");
            for l in listeners {
                push(
                    &mut out,
                    "Listener",
                    ns,
                    &format!("{name}/{}", l.name),
                    "",
                    &l.conditions,
                );
                c.listeners_invalid += u32::from(listener_invalid(&l.conditions));
            }
        }
        ObjectStatus::ListenerSet {
            conditions,
            listeners,
        } => {
            push(&mut out, k, ns, name, "", conditions);
            let parent = format!("{ns}/{name}");
            for l in listeners {
                push(
                    &mut out,
                    "Listener",
                    ns,
                    &format!("{name}/{}", l.name),
                    &parent,
                    &l.conditions,
                );
                c.listeners_invalid += u32::from(listener_invalid(&l.conditions));
            }
        }
        ObjectStatus::Route { parents } => {
            for p in parents {
                push(
                    &mut out,
                    k,
                    ns,
                    name,
                    &parent_label(&p.parent_ref, ns),
                    &p.conditions,
                );
            }
            if !parents.is_empty() {
                c.route = Some(kind);
                c.accepted = parents.iter().all(|p| cond_true(&p.conditions, "Accepted"));
                c.unresolved = parents
                    .iter()
                    .any(|p| cond_false(&p.conditions, "ResolvedRefs"));
            }
        }
        ObjectStatus::Policy { ancestors } => {
            for a in ancestors {
                push(
                    &mut out,
                    k,
                    ns,
                    name,
                    &parent_label(&a.ancestor_ref, ns),
                    &a.conditions,
                );
            }
        }
    }
    // Two entries for the same parent with the same condition are one series.
    out.sort();
    out.dedup();
    (out, c)
}

type Id = (Kind, ObjKey);

/// Keys exported before and absent from `now` (owned: they are removed), and
/// the entries of `now` that are new or whose status differs from what was
/// exported; one merge walk over the two ordered maps.
fn diff<'a>(
    exported: &BTreeMap<Id, Exported>,
    now: &'a BTreeMap<Id, ObjectStatus>,
) -> (Vec<Id>, Vec<(&'a Id, &'a ObjectStatus)>) {
    use std::cmp::Ordering;
    let (mut gone, mut touched) = (Vec::new(), Vec::new());
    let mut old = exported.iter().peekable();
    let mut new = now.iter().peekable();
    loop {
        match (old.peek(), new.peek()) {
            (Some((ko, _)), Some((kn, _))) => match ko.cmp(kn) {
                Ordering::Less => {
                    gone.push((*ko).clone());
                    old.next();
                }
                Ordering::Greater => {
                    touched.extend(new.next());
                }
                Ordering::Equal => {
                    let (Some((_, e)), Some(entry)) = (old.next(), new.next()) else {
                        break;
                    };
                    if &e.status != entry.1 {
                        touched.push(entry);
                    }
                }
            },
            (Some((ko, _)), None) => {
                gone.push((*ko).clone());
                old.next();
            }
            (None, Some(_)) => touched.extend(new.next()),
            (None, None) => break,
        }
    }
    (gone, touched)
}

fn as_refs(s: &Series) -> [&str; 7] {
    [&s[0], &s[1], &s[2], &s[3], &s[4], &s[5], &s[6]]
}

impl StatusMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn account(&mut self, c: &Contribution, sign: i64) {
        let add = |n: &mut u64, b: bool| {
            if b {
                *n = n.saturating_add_signed(sign);
            }
        };
        add(&mut self.gateways, c.gateway);
        add(&mut self.programmed, c.programmed);
        self.listeners_invalid = self
            .listeners_invalid
            .saturating_add_signed(sign * i64::from(c.listeners_invalid));
        if let Some(kind) = c.route {
            let r = self.routes.entry(kind).or_default();
            add(&mut r.total, true);
            add(&mut r.accepted, c.accepted);
            add(&mut r.unresolved, c.unresolved);
        }
    }

    /// Exports `status` (the status as written), replacing what the previous
    /// call exported. Returns how many objects changed.
    pub fn update(&mut self, status: &StatusSet) -> usize {
        let mut remove: Vec<Series> = Vec::new();
        let mut set: Vec<Series> = Vec::new();
        let mut changed = 0;
        // One ordered walk over both maps (same key order): no key clones or
        // lookups for the objects that did not change, which at thousands of
        // routes are nearly all of them.
        let (gone, touched) = diff(&self.objects, &status.objects);
        for k in gone {
            if let Some(old) = self.objects.remove(&k) {
                self.account(&old.contribution, -1);
                remove.extend(derive(k.0, &k.1, &old.status).0);
                changed += 1;
            }
        }
        for ((kind, key), st) in touched {
            let id = (*kind, key.clone());
            changed += 1;
            let (series, contribution) = derive(*kind, key, st);
            if let Some(old) = self.objects.get(&id) {
                let old_c = old.contribution;
                let (old_series, _) = derive(*kind, key, &old.status);
                remove.extend(
                    old_series
                        .into_iter()
                        .filter(|s| series.binary_search(s).is_err()),
                );
                self.account(&old_c, -1);
            }
            self.account(&contribution, 1);
            set.extend(series);
            self.objects.insert(
                id,
                Exported {
                    status: st.clone(),
                    contribution,
                },
            );
        }
        if changed == 0 {
            return 0;
        }
        cat::STATUS_CONDITION.update(
            remove.iter().map(as_refs),
            set.iter().map(|s| (as_refs(s), 1.0)),
        );
        self.publish_totals();
        changed
    }

    fn publish_totals(&self) {
        cat::GATEWAYS_TOTAL.set([], self.gateways as f64);
        cat::GATEWAYS_PROGRAMMED.set([], self.programmed as f64);
        cat::LISTENERS_INVALID.set([], self.listeners_invalid as f64);
        for kind in crate::kinds::routes() {
            let r = self.routes.get(&kind).copied().unwrap_or_default();
            cat::ROUTES_TOTAL.set([kind.as_str()], r.total as f64);
            cat::ROUTES_ACCEPTED.set([kind.as_str()], r.accepted as f64);
            cat::ROUTES_UNRESOLVED_REFS.set([kind.as_str()], r.unresolved as f64);
        }
    }

    /// Withdraws every series (e.g. this replica lost the Lease: only the
    /// replica writing status exports it).
    pub fn clear(&mut self) {
        if self.objects.is_empty() {
            return;
        }
        self.update(&StatusSet::default());
    }
}

#[cfg(test)]
mod tests;
