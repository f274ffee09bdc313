//! Shadowed rules: route rules that can never match because an entry with
//! higher precedence always wins for every request they accept.
//!
//! Pure and deterministic, over the IR alone. In each virtual host, routes
//! are in precedence order (Envoy takes the first match), so an entry is
//! shadowed there when an earlier entry *covers* it: every request the later
//! matcher accepts, the earlier one accepts too ([`covers`]). A rule is
//! shadowed when every one of its entries is shadowed in every virtual host
//! it appears in; one reachable entry anywhere keeps it off the list.
//!
//! The test is conservative: it never reports a rule that some request can
//! reach. It only recognises covers by one earlier entry (never a union of
//! several) and compares regular expressions as text. What the reporting
//! side does with the result is in [`report`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;

use super::{App, Model, PathMatch, RouteMatch, StringMatch, VirtualHost};
use crate::inputs::ObjKey;

pub mod report;

/// One rule of one route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RuleRef {
    pub kind: &'static str,
    pub route: Arc<ObjKey>,
    pub rule: usize,
}

/// One match of one rule (an entry of a virtual host).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EntryRef {
    pub kind: &'static str,
    pub route: Arc<ObjKey>,
    pub rule: usize,
    pub match_index: usize,
}

/// Why one match of a shadowed rule never wins in one place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Cover {
    /// The match of the shadowed rule.
    pub match_index: usize,
    /// The hostname that match was attached under.
    pub hostname: String,
    /// The earlier entry that takes every request the match accepts.
    pub by: EntryRef,
    /// The hostname `by` was attached under.
    pub by_hostname: String,
}

/// A rule that can never match, with what wins instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shadowed {
    pub rule: RuleRef,
    /// Sorted, at least one per match of the rule (one per distinct cover
    /// when the rule appears in several virtual hosts).
    pub covers: Vec<Cover>,
}

/// At most this many candidate covers are examined for one entry; past it
/// the entry counts as reachable (only configurations with thousands of
/// matches on one path, each with many conditions, get there).
const BUDGET: usize = 1024;

/// Up to this many entries, a virtual host is checked pair by pair.
const SMALL: usize = 16;

/// Every shadowed rule of the model, sorted by rule.
pub fn shadowed(model: &Model) -> Vec<Shadowed> {
    Detector::default().update(model)
}

/// Every virtual host of every HTTP route table of the model.
fn virtual_hosts(model: &Model) -> impl Iterator<Item = &Arc<VirtualHost>> {
    model
        .gateways
        .values()
        .flat_map(|g| &g.listeners)
        .flat_map(|l| &l.chains)
        .filter_map(|c| match &c.app {
            App::Http(rc) => Some(rc),
            _ => None,
        })
        .flat_map(|rc| &rc.virtual_hosts)
}

/// Whether every request `later` accepts is also accepted by `earlier`
/// (Envoy's semantics, as `xds::build` spells the match).
pub fn covers(earlier: &RouteMatch, later: &RouteMatch) -> bool {
    path_covers(&earlier.path, &later.path)
        && (earlier.method.is_none() || earlier.method == later.method)
        && earlier.headers.iter().all(|h| {
            later
                .headers
                .iter()
                .any(|x| x.name.eq_ignore_ascii_case(&h.name) && x.value == h.value)
        })
        && earlier.query_params.iter().all(|q| {
            later
                .query_params
                .iter()
                .any(|x| x.name == q.name && x.value == q.value)
        })
}

/// Whether every path `later` accepts, `earlier` accepts. Prefix `/` is sent
/// as a plain prefix (every path Envoy routes starts with `/`: it refuses
/// others before routing), any other prefix as a path-separated prefix
/// (`/a` takes `/a` and `/a/...`, not `/ab`). Regular expressions are only
/// compared as text.
fn path_covers(earlier: &PathMatch, later: &PathMatch) -> bool {
    match (earlier, later) {
        (PathMatch::Prefix(p), _) if p == "/" => true,
        (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
        (PathMatch::Regex(a), PathMatch::Regex(b)) => a == b,
        (PathMatch::Prefix(p), PathMatch::Exact(q) | PathMatch::Prefix(q)) => segment_prefix(p, q),
        _ => false,
    }
}

/// Whether path-separated prefix `p` takes every path that starts with `q`
/// on a segment boundary (or equals it).
fn segment_prefix(p: &str, q: &str) -> bool {
    if p.ends_with('/') {
        // The translator trims trailing slashes; Envoy would refuse this
        // as a path-separated prefix anyway. Only an identical one counts.
        return p == q;
    }
    q.strip_prefix(p)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Which entry (by index in `vh.routes`) covers each entry, if any; an
/// entry is never covered by another match of its own rule (that one is
/// covered transitively, or the rule is reachable through it).
fn scan(vh: &VirtualHost) -> Vec<Option<usize>> {
    if vh.routes.len() <= SMALL {
        scan_pairs(vh)
    } else {
        scan_indexed(vh)
    }
}

/// [`scan`] by trying every earlier entry (small virtual hosts).
fn scan_pairs(vh: &VirtualHost) -> Vec<Option<usize>> {
    let m = |i: usize| &vh.routes[i].matcher;
    (0..vh.routes.len())
        .map(|i| (0..i).find(|&c| !same_rule(vh, c, i) && covers(m(c), m(i))))
        .collect()
}

/// [`scan`] through an index of the entries seen so far.
fn scan_indexed(vh: &VirtualHost) -> Vec<Option<usize>> {
    let mut index = Index::default();
    let mut out = Vec::with_capacity(vh.routes.len());
    for (i, r) in vh.routes.iter().enumerate() {
        out.push(index.find(vh, i));
        index.insert(vh, i, &r.matcher);
    }
    out
}

/// One condition besides the path: a header, a query parameter or the
/// method, with its value matcher.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Atom {
    /// 0 header (name lower-cased), 1 query parameter, 2 method.
    what: u8,
    name: String,
    /// 0 exact, 1 regex.
    how: u8,
    value: String,
}

fn atoms(m: &RouteMatch) -> Vec<Atom> {
    let value = |v: &StringMatch| match v {
        StringMatch::Exact(s) => (0, s.clone()),
        StringMatch::Regex(s) => (1, s.clone()),
    };
    let mut out = Vec::with_capacity(m.headers.len() + m.query_params.len() + 1);
    for h in &m.headers {
        let (how, value) = value(&h.value);
        out.push(Atom {
            what: 0,
            name: h.name.to_ascii_lowercase(),
            how,
            value,
        });
    }
    for q in &m.query_params {
        let (how, value) = value(&q.value);
        out.push(Atom {
            what: 1,
            name: q.name.clone(),
            how,
            value,
        });
    }
    if let Some(method) = &m.method {
        out.push(Atom {
            what: 2,
            name: String::new(),
            how: 0,
            value: method.clone(),
        });
    }
    out
}

/// 0 exact, 1 prefix, 2 regex.
fn path_key(p: &PathMatch) -> (usize, &str) {
    match p {
        PathMatch::Exact(s) => (0, s),
        PathMatch::Prefix(s) => (1, s),
        PathMatch::Regex(s) => (2, s),
    }
}

/// Every path key an entry covering `p` could have: its own, `/`, and for
/// an exact path or a prefix every segment prefix of it.
fn candidate_paths(p: &PathMatch) -> Vec<(usize, &str)> {
    let mut out = vec![(1, "/")];
    match p {
        PathMatch::Regex(s) => out.push((2, s)),
        PathMatch::Exact(s) | PathMatch::Prefix(s) => {
            if matches!(p, PathMatch::Exact(_)) {
                out.push((0, s));
            }
            for (i, b) in s.bytes().enumerate() {
                if b == b'/' && i > 0 {
                    out.push((1, &s[..i]));
                }
            }
            out.push((1, s));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The earliest entry inserted under one (path, condition set), and the
/// earliest one from another rule than that one.
#[derive(Clone, Copy)]
struct Slot {
    first: usize,
    other: Option<usize>,
}

/// Entries seen so far in one virtual host, by exact path key and then by
/// the exact set of their other conditions (interned atom ids, sorted).
#[derive(Default)]
struct Index {
    atoms: HashMap<Atom, u32>,
    paths: [HashMap<String, HashMap<Vec<u32>, Slot>>; 3],
}

fn same_rule(vh: &VirtualHost, a: usize, b: usize) -> bool {
    let (a, b) = (&vh.routes[a].source, &vh.routes[b].source);
    a.rule == b.rule && a.kind == b.kind && a.route == b.route
}

/// Whether sorted `a` is a subset of sorted `b`.
fn subset(a: &[u32], b: &[u32]) -> bool {
    let mut it = b.iter();
    a.iter().all(|x| it.any(|y| y == x))
}

impl Index {
    fn insert(&mut self, vh: &VirtualHost, i: usize, m: &RouteMatch) {
        let mut ids: Vec<u32> = atoms(m)
            .into_iter()
            .map(|a| {
                let next = self.atoms.len() as u32;
                *self.atoms.entry(a).or_insert(next)
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let (k, p) = path_key(&m.path);
        let slots = self.paths[k].entry(p.to_string()).or_default();
        match slots.get_mut(&ids) {
            None => {
                slots.insert(
                    ids,
                    Slot {
                        first: i,
                        other: None,
                    },
                );
            }
            Some(s) if s.other.is_none() && !same_rule(vh, s.first, i) => s.other = Some(i),
            Some(_) => {}
        }
    }

    /// The earliest entry before `i` that covers it (not of its own rule).
    fn find(&self, vh: &VirtualHost, i: usize) -> Option<usize> {
        let m = &vh.routes[i].matcher;
        // Conditions no earlier entry has cannot be part of a cover's set.
        let mut ids: Vec<u32> = atoms(m)
            .iter()
            .filter_map(|a| self.atoms.get(a).copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut slots_seen: Vec<Slot> = Vec::new();
        let mut budget = BUDGET;
        'paths: for (k, p) in candidate_paths(&m.path) {
            let Some(slots) = self.paths[k].get(p) else {
                continue;
            };
            // Either every subset of the entry's conditions, or every
            // condition set present under this path: whichever is fewer.
            if ids.len() < 20 && (1usize << ids.len()) <= slots.len() {
                for mask in 0u32..(1u32 << ids.len()) {
                    if budget == 0 {
                        break 'paths;
                    }
                    budget -= 1;
                    let sub: Vec<u32> = ids
                        .iter()
                        .enumerate()
                        .filter(|(b, _)| mask & (1 << b) != 0)
                        .map(|(_, id)| *id)
                        .collect();
                    slots_seen.extend(slots.get(&sub).copied());
                }
            } else {
                for (set, slot) in slots {
                    if budget == 0 {
                        break 'paths;
                    }
                    budget -= 1;
                    if subset(set, &ids) {
                        slots_seen.push(*slot);
                    }
                }
            }
        }
        // Every candidate is checked against the full definition: the index
        // only narrows the search (and past the budget, may miss a cover).
        slots_seen
            .into_iter()
            .filter_map(|s| {
                if same_rule(vh, s.first, i) {
                    s.other
                } else {
                    Some(s.first)
                }
            })
            .filter(|&c| c < i && covers(&vh.routes[c].matcher, m))
            .min()
    }
}

/// The hostname each entry of `vh` was attached under.
fn hostnames(vh: &VirtualHost) -> Vec<&str> {
    let fallback = vh.domains.first().map(String::as_str).unwrap_or("");
    let mut out = Vec::with_capacity(vh.routes.len());
    for (host, n) in &vh.route_domains {
        out.extend(std::iter::repeat_n(host.as_str(), *n));
    }
    out.resize(vh.routes.len(), fallback);
    out
}

/// What one virtual host says about each rule in it: `None` when an entry
/// of the rule is reachable there, else the covers of its entries.
type Verdict = Vec<(RuleRef, Option<Vec<Cover>>)>;

fn verdict(vh: &VirtualHost) -> Verdict {
    let found = scan(vh);
    // Hostnames are only needed to describe covers.
    let hosts = if found.iter().any(Option::is_some) {
        hostnames(vh)
    } else {
        Vec::new()
    };
    let mut rules: Vec<(RuleRef, Option<BTreeSet<Cover>>)> = Vec::new();
    // Where each rule is in `rules` (large virtual hosts only; small ones
    // are searched).
    let mut at: HashMap<RuleRef, usize> = HashMap::new();
    let small = vh.routes.len() <= SMALL;
    for (i, r) in vh.routes.iter().enumerate() {
        let s = &r.source;
        let rule = RuleRef {
            kind: s.kind,
            route: s.route.clone(),
            rule: s.rule,
        };
        let pos = if small {
            rules.iter().position(|(r, _)| *r == rule)
        } else {
            at.get(&rule).copied()
        };
        let pos = pos.unwrap_or_else(|| {
            if !small {
                at.insert(rule.clone(), rules.len());
            }
            rules.push((rule, Some(BTreeSet::new())));
            rules.len() - 1
        });
        let st = &mut rules[pos].1;
        let Some(covers) = st else { continue };
        let Some(c) = found.get(i).copied().flatten() else {
            *st = None;
            continue;
        };
        let by = &vh.routes[c].source;
        covers.insert(Cover {
            match_index: s.match_index,
            hostname: hosts[i].to_string(),
            by: EntryRef {
                kind: by.kind,
                route: by.route.clone(),
                rule: by.rule,
                match_index: by.match_index,
            },
            by_hostname: hosts[c].to_string(),
        });
    }
    rules
        .into_iter()
        .map(|(r, c)| (r, c.map(|c| c.into_iter().collect())))
        .collect()
}

/// In how many virtual hosts a rule appears, and is shadowed.
#[derive(Default, Clone, Copy)]
struct Counts {
    present: u32,
    shadowed: u32,
}

/// The shadowed rules, kept up to date across translations: only virtual
/// hosts that are new since the last update are examined (an incremental
/// translation rebuilds just the ones a change touched; the others are the
/// same shared values, recognised by address).
#[derive(Default)]
pub struct Detector {
    /// Examined virtual hosts by address, each kept alive while here (so
    /// the address stays its own) with its verdict.
    vhosts: HashMap<usize, (Arc<VirtualHost>, Verdict)>,
    counts: HashMap<RuleRef, Counts>,
    /// Rules shadowed in at least one virtual host: their covers there.
    local: HashMap<RuleRef, HashMap<usize, Vec<Cover>>>,
}

impl Detector {
    /// Every shadowed rule of `model`, sorted by rule.
    pub fn update(&mut self, model: &Model) -> Vec<Shadowed> {
        let mut now: HashMap<usize, &Arc<VirtualHost>> = HashMap::new();
        for vh in virtual_hosts(model) {
            now.entry(Arc::as_ptr(vh) as usize).or_insert(vh);
        }
        let gone: Vec<usize> = self
            .vhosts
            .keys()
            .filter(|k| !now.contains_key(*k))
            .copied()
            .collect();
        for k in gone {
            if let Some((_, v)) = self.vhosts.remove(&k) {
                self.count(k, &v, false);
            }
        }
        for (k, vh) in now {
            if self.vhosts.contains_key(&k) {
                continue;
            }
            let v = verdict(vh);
            self.count(k, &v, true);
            self.vhosts.insert(k, (vh.clone(), v));
        }
        let mut out: Vec<Shadowed> = self
            .local
            .iter()
            .filter(|(r, _)| self.counts.get(*r).is_some_and(|c| c.present == c.shadowed))
            .map(|(r, by_vhost)| {
                let covers: BTreeSet<&Cover> = by_vhost.values().flatten().collect();
                Shadowed {
                    rule: r.clone(),
                    covers: covers.into_iter().cloned().collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.rule.cmp(&b.rule));
        out
    }

    /// Adds (or removes) what the virtual host at `key` says.
    fn count(&mut self, key: usize, v: &Verdict, add: bool) {
        let step = |n: &mut u32| {
            if add {
                *n += 1
            } else {
                *n = n.saturating_sub(1)
            }
        };
        for (rule, covers) in v {
            let c = self.counts.entry(rule.clone()).or_default();
            step(&mut c.present);
            if covers.is_some() {
                step(&mut c.shadowed);
            }
            if c.present == 0 {
                self.counts.remove(rule);
            }
            let Some(covers) = covers else { continue };
            let by_vhost = self.local.entry(rule.clone()).or_default();
            if add {
                by_vhost.insert(key, covers.clone());
            } else {
                by_vhost.remove(&key);
                if by_vhost.is_empty() {
                    self.local.remove(rule);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
