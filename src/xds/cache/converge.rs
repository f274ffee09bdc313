//! Fleet convergence: how many connected nodes do not run what they
//! should. Recomputed on ACK/NACK/snapshot events and on a slow tick (for
//! the grace running out), in O(nodes × subscribed types); never per scrape.

use std::collections::VecDeque;

use super::NodeState;

/// A push may be in flight this long before its node counts as not converged.
pub const GRACE_MS: u64 = 10_000;

/// ACKs recompute the gauge at most this often (the slow tick does the rest).
pub const ACK_REFRESH_MS: u64 = 100;

/// Versions kept with their publication time (older ones are long past the grace).
const KEPT: usize = 64;

/// When each recent global version was published.
#[derive(Debug, Default)]
pub struct Published {
    at: VecDeque<(u64, u64)>,
}

impl Published {
    pub fn record(&mut self, version: u64, at_ms: u64) {
        self.at.push_back((version, at_ms));
        while self.at.len() > KEPT {
            self.at.pop_front();
        }
    }

    /// When the first version after `acked` was published: the node has been
    /// behind since then. `None` if that is older than what is kept
    /// (versions are consecutive).
    fn behind_since(&self, acked: u64) -> Option<u64> {
        self.at
            .iter()
            .find(|(v, _)| *v == acked + 1)
            .map(|(_, at)| *at)
    }
}

/// Nodes that, for some subscribed type, NACKed a version they do not yet
/// run a newer one of, or have not ACKed `version` although the first
/// version they lack was published more than `grace_ms` ago. A node that
/// subscribed to nothing yet counts once it has been connected longer than
/// the grace.
pub fn not_converged<'a>(
    nodes: impl IntoIterator<Item = &'a NodeState>,
    version: u64,
    published: &Published,
    now_ms: u64,
    grace_ms: u64,
) -> usize {
    let late = |since: u64| now_ms.saturating_sub(since) > grace_ms;
    nodes
        .into_iter()
        .filter(|n| {
            if n.types.is_empty() {
                return version > 0 && late(n.connected_at_unix_ms);
            }
            n.types.values().any(|t| {
                let nacked = t
                    .last_nack
                    .as_ref()
                    .is_some_and(|k| k.version > t.acked_version);
                let behind = t.acked_version < version
                    && late(
                        published
                            .behind_since(t.acked_version)
                            .unwrap_or(0)
                            .max(n.connected_at_unix_ms),
                    );
                nacked || behind
            })
        })
        .count()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::xds::cache::{Nack, Protocol, Selection, TypeAckState};

    fn node(types: &[(&str, u64, Option<u64>)]) -> NodeState {
        NodeState {
            stream_id: 1,
            node_id: "n".into(),
            cluster: "c".into(),
            protocol: Protocol::Delta,
            selection: Selection::default(),
            connected_at_unix_ms: 0,
            types: types
                .iter()
                .map(|(t, acked, nack)| {
                    (
                        t.to_string(),
                        TypeAckState {
                            acked_version: *acked,
                            acked_nonce: String::new(),
                            last_nack: nack.map(|v| Nack {
                                version: v,
                                nonce: "1".into(),
                                error: "bad".into(),
                                resource_names: vec![],
                                at_unix_ms: 0,
                            }),
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn published() -> Published {
        let mut p = Published::default();
        p.record(1, 1_000);
        p.record(2, 50_000);
        p.record(3, 59_000);
        p
    }

    #[test]
    fn a_node_that_runs_the_current_version_is_converged() {
        let n = [node(&[("lds", 3, None), ("rds", 3, None)])];
        assert_eq!(not_converged(&n, 3, &published(), 60_000, GRACE_MS), 0);
    }

    #[test]
    fn a_push_within_the_grace_is_in_flight_not_late() {
        // Behind since version 3 (published at 59 s): 1 s ago.
        let n = [node(&[("lds", 3, None), ("rds", 2, None)])];
        assert_eq!(not_converged(&n, 3, &published(), 60_000, GRACE_MS), 0);
        // Behind since version 2 (published at 50 s): 10.5 s ago.
        let n = [node(&[("lds", 3, None), ("rds", 1, None)])];
        assert_eq!(not_converged(&n, 3, &published(), 60_500, GRACE_MS), 1);
    }

    #[test]
    fn a_current_nack_counts_at_once_and_a_later_ack_clears_it() {
        let n = [node(&[("rds", 2, Some(3))])];
        assert_eq!(not_converged(&n, 3, &published(), 59_001, GRACE_MS), 1);
        // A rebuild (version 4) without the bad object was ACKed.
        let mut p = published();
        p.record(4, 59_500);
        let n = [node(&[("rds", 4, Some(3))])];
        assert_eq!(not_converged(&n, 4, &p, 59_600, GRACE_MS), 0);
    }

    #[test]
    fn behind_a_version_older_than_the_kept_ones_is_late() {
        let n = [node(&[("rds", 0, None)])];
        let mut p = Published::default();
        for v in 1..=(KEPT as u64 + 5) {
            p.record(v, 100_000 + v);
        }
        assert_eq!(not_converged(&n, KEPT as u64 + 5, &p, 100_100, GRACE_MS), 1);
    }

    #[test]
    fn counts_nodes_not_types_and_waits_for_a_silent_node() {
        let bad = node(&[("lds", 1, None), ("rds", 1, Some(2))]);
        let good = node(&[("lds", 3, None)]);
        let silent = node(&[]);
        let n = [bad, good, silent.clone()];
        assert_eq!(not_converged(&n, 3, &published(), 60_000, GRACE_MS), 2);
        let mut fresh = silent;
        fresh.connected_at_unix_ms = 55_000;
        assert_eq!(
            not_converged(&[fresh], 3, &published(), 60_000, GRACE_MS),
            0
        );
    }
}
