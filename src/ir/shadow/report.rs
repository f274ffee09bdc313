//! Keeps the shadowed rules between translations and reports changes: a
//! warning in the log once per rule that becomes shadowed, the gauge
//! `switchyard_shadowed_rules`, and the notes the standalone status files
//! and Kubernetes Events show (see docs/shadowed-rules.md).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Cover, Detector, RuleRef, Shadowed};
use crate::inputs::{Kind, ObjKey};
use crate::ir::Model;

/// How many covers one note spells out.
const NOTE_COVERS: usize = 4;

/// The route kind a [`RuleRef`] names.
pub fn kind_of(kind: &str) -> Option<Kind> {
    crate::kinds::routes().find(|k| k.as_str() == kind)
}

impl Shadowed {
    /// One line for people: which rule, and what always wins instead, e.g.
    /// `rule 1 (match 0) can never match: HTTPRoute default/a rule 0 match 0
    /// (hostname a.test) always wins`.
    pub fn note(&self) -> String {
        let winner = |c: &Cover| {
            let mut s = format!(
                "{} {} rule {} match {} (hostname {}",
                c.by.kind, c.by.route, c.by.rule, c.by.match_index, c.by_hostname
            );
            if c.hostname != c.by_hostname {
                let _ = write!(s, "; this match is attached under {}", c.hostname);
            }
            s.push_str(") always wins");
            s
        };
        let rule = self.rule.rule;
        match self.covers.as_slice() {
            [c] => format!(
                "rule {rule} (match {}) can never match: {}",
                c.match_index,
                winner(c)
            ),
            covers => {
                let mut s = format!("rule {rule} can never match:");
                for (i, c) in covers.iter().take(NOTE_COVERS).enumerate() {
                    let sep = if i == 0 { " " } else { "; " };
                    let _ = write!(s, "{sep}for match {}, {}", c.match_index, winner(c));
                }
                if covers.len() > NOTE_COVERS {
                    let _ = write!(s, "; and {} more", covers.len() - NOTE_COVERS);
                }
                s
            }
        }
    }
}

/// The shadowed rules as of the last translation.
#[derive(Default)]
pub struct Tracker {
    detector: Detector,
    current: BTreeMap<RuleRef, Shadowed>,
    /// Notes by route, in rule order.
    notes: BTreeMap<(Kind, ObjKey), Vec<String>>,
}

impl Tracker {
    /// Finds the shadowed rules of `model`; logs the rules that became
    /// shadowed (a warning each) and those that no longer are, and sets the
    /// gauge. Returns whether anything changed.
    pub fn update(&mut self, model: &Model) -> bool {
        let found: BTreeMap<RuleRef, Shadowed> = self
            .detector
            .update(model)
            .into_iter()
            .map(|s| (s.rule.clone(), s))
            .collect();
        crate::metrics::catalogue::SHADOWED_RULES.set([], found.len() as f64);
        if found == self.current {
            return false;
        }
        for (r, s) in &found {
            if !self.current.contains_key(r) {
                tracing::warn!(
                    kind = r.kind,
                    route = %r.route,
                    rule = r.rule,
                    "shadowed rule: {}",
                    s.note()
                );
            }
        }
        for r in self.current.keys().filter(|r| !found.contains_key(*r)) {
            tracing::info!(
                kind = r.kind,
                route = %r.route,
                rule = r.rule,
                "rule {} is no longer shadowed",
                r.rule
            );
        }
        self.notes.clear();
        for (r, s) in &found {
            if let Some(kind) = kind_of(r.kind) {
                self.notes
                    .entry((kind, (*r.route).clone()))
                    .or_default()
                    .push(s.note());
            }
        }
        self.current = found;
        true
    }

    /// The shadowed rules, sorted.
    pub fn current(&self) -> &BTreeMap<RuleRef, Shadowed> {
        &self.current
    }

    /// The notes of every route with a shadowed rule (one per rule).
    pub fn notes(&self) -> &BTreeMap<(Kind, ObjKey), Vec<String>> {
        &self.notes
    }
}
