//! Every metric Switchyard exports, declared once: name, help, type and
//! label names. Call sites use these typed handles; the label count is part
//! of the type, so a wrong number of label values does not compile.
//!
//! `docs/metrics.md` lists every metric here (a unit test keeps the two in
//! step). Metrics of the shared contract that other components emit
//! (certificates, NACK isolation, fleet convergence) are declared here too,
//! so their `# HELP`/`# TYPE` lines exist from process start.

use super::{Counter, Desc, Gauge, Histogram};

/// Declares each metric as a `pub static` and lists them all in [`ALL`].
macro_rules! catalogue {
    ($( $(#[$m:meta])* $id:ident : $ty:ident < $n:literal > = ($name:literal, $help:literal, [$($l:literal),*]); )*) => {
        $( $(#[$m])* pub static $id: $ty<$n> = $ty::new($name, $help, &[$($l),*]); )*
        /// Every declared metric, in declaration order.
        pub static ALL: &[&Desc] = &[$( &$id.0 ),*];
    };
}

catalogue! {
    // --- build and process ---
    BUILD_INFO: Gauge<2> = ("switchyard_build_info", "Always 1; the labels name the version and git commit of this binary.", ["version", "commit"]);
    LEADER: Gauge<0> = ("switchyard_leader", "1 while this replica holds the Lease and writes status (Kubernetes mode).", []);
    LEASE_TIMEOUTS: Counter<0> = ("switchyard_lease_timeouts_total", "Lease attempts abandoned after their own timeout.", []);
    ENVOY_UP: Gauge<0> = ("switchyard_envoy_up", "1 while the supervised Envoy is running.", []);
    ENVOY_RESTARTS: Counter<0> = ("switchyard_envoy_restarts_total", "Restarts of the supervised Envoy.", []);

    // --- inputs ---
    MISSING_KINDS: Gauge<0> = ("switchyard_missing_kinds", "Kinds Switchyard serves whose CRDs are not installed.", []);
    WATCH_ERRORS: Counter<1> = ("switchyard_watch_errors_total", "Errors from Kubernetes watches.", ["kind"]);
    INVALID_OBJECTS: Counter<1> = ("switchyard_invalid_objects_total", "Objects that could not be decoded.", ["kind"]);
    UNDECODABLE_OBJECTS: Gauge<0> = ("switchyard_undecodable_objects", "Objects whose newest version could not be decoded (their last good version, if any, is served).", []);
    RELOADS: Counter<0> = ("switchyard_reloads_total", "Configuration reloads (standalone mode).", []);
    CONFIG_ERRORS: Gauge<0> = ("switchyard_config_errors", "Files currently failing to load (their last good version is served; standalone mode).", []);

    // --- translation ---
    TRANSLATIONS: Counter<1> = ("switchyard_translations_total", "Translations, by mode (full: everything; incremental: changed routes only).", ["mode"]);
    TRANSLATE_SECONDS: Histogram<0> = ("switchyard_translate_seconds", "Time to translate Gateway API objects into the IR.", []);
    XDS_BUILD_SECONDS: Histogram<0> = ("switchyard_xds_build_seconds", "Time to build Envoy resources from the IR.", []);
    ENDPOINTS_UPDATE_SECONDS: Histogram<0> = ("switchyard_endpoints_update_seconds", "Time to rebuild and publish endpoints without re-translating routes.", []);
    SHADOWED_RULES: Gauge<0> = ("switchyard_shadowed_rules", "Route rules that can never match: rules with higher precedence always win.", []);
    TRUST_CHANGES: Counter<2> = ("switchyard_trust_changes_total", "Routes whose cross-namespace references became permitted or refused.", ["kind", "permitted"]);
    REFERENCE_GRANT_CHANGES: Counter<1> = ("switchyard_reference_grant_changes_total", "ReferenceGrants added or removed (change=added|removed).", ["change"]);
    REFERENCE_GRANT_ROUTES_AFFECTED: Counter<1> = ("switchyard_reference_grant_routes_affected_total", "Routes with a backendRef that resolved before and not after a ReferenceGrant change (change=removed), or the reverse (change=added).", ["change"]);

    // --- status ---
    STATUS_CONDITION: Gauge<7> = ("switchyard_status_condition", "1 per current status condition of each object whose status Switchyard owns.", ["kind", "namespace", "name", "parent", "type", "status", "reason"]);
    GATEWAYS_TOTAL: Gauge<0> = ("switchyard_gateways_total", "Gateways of our GatewayClasses.", []);
    GATEWAYS_PROGRAMMED: Gauge<0> = ("switchyard_gateways_programmed", "Gateways whose Programmed condition is True (acknowledged by Envoy).", []);
    ROUTES_TOTAL: Gauge<1> = ("switchyard_routes_total", "Routes with at least one parentRef to a Gateway of ours.", ["kind"]);
    ROUTES_ACCEPTED: Gauge<1> = ("switchyard_routes_accepted", "Routes Accepted=True on every parentRef of ours.", ["kind"]);
    ROUTES_UNRESOLVED_REFS: Gauge<1> = ("switchyard_routes_unresolved_refs", "Routes with ResolvedRefs=False on some parentRef of ours.", ["kind"]);
    LISTENERS_INVALID: Gauge<0> = ("switchyard_listeners_invalid", "Listeners with Accepted=False, ResolvedRefs=False or Conflicted=True.", []);
    STATUS_WRITES: Counter<1> = ("switchyard_status_writes_total", "Status updates written (files in standalone mode, patches in Kubernetes mode).", ["kind"]);
    STATUS_WRITE_ERRORS: Counter<1> = ("switchyard_status_write_errors_total", "Failed status patches.", ["kind"]);
    STATUS_WRITES_DEFERRED: Counter<0> = ("switchyard_status_writes_deferred_total", "Status patches postponed by the writer's rate limit.", []);
    STATUS_WRITES_ABANDONED: Counter<0> = ("switchyard_status_writes_abandoned_total", "Status patches not sent or abandoned because the Lease's renew deadline passed.", []);
    STATUS_REFUSED: Counter<1> = ("switchyard_status_refused_total", "Status files not written because the object's name is not a safe file name.", ["kind"]);
    ROUTE_PARENTS_TRUNCATED: Counter<1> = ("switchyard_route_parents_truncated_total", "Times a route's status.parents could not hold every entry of ours (32 at most).", ["kind"]);

    // --- xDS ---
    SNAPSHOT_VERSION: Gauge<0> = ("switchyard_snapshot_version", "Global version of the configuration served over xDS.", []);
    XDS_CONNECTED_NODES: Gauge<0> = ("switchyard_xds_connected_nodes", "xDS streams currently connected.", []);
    XDS_PUSHES: Counter<1> = ("switchyard_xds_pushes_total", "xDS responses sent.", ["type"]);
    XDS_PUSH_BYTES: Counter<1> = ("switchyard_xds_push_bytes_total", "Encoded bytes of xDS responses sent.", ["type"]);
    XDS_NACKS: Counter<1> = ("switchyard_xds_nacks_total", "xDS responses rejected by Envoy.", ["type"]);
    XDS_NACK_RETRIES: Counter<1> = ("switchyard_xds_nack_retries_total", "Re-deliveries of resources an Envoy had rejected.", ["type"]);
    XDS_REJECTED_OBJECTS: Gauge<3> = ("switchyard_xds_rejected_objects", "1 per object quarantined because Envoy rejected the configuration built from it (NACK isolation).", ["kind", "namespace", "name"]);
    XDS_NODES_NOT_CONVERGED: Gauge<0> = ("switchyard_xds_nodes_not_converged", "Connected xDS nodes that, for some subscribed type, rejected the current configuration or have not acknowledged it within the 10 s grace period.", []);
    XDS_TLS_CERTIFICATES_VALID: Gauge<0> = ("switchyard_xds_tls_certificates_valid", "1 when the xDS server's certificate directory loaded cleanly at the last check; 0 when the last good certificates are kept because the files are unusable.", []);
    XDS_TLS_REJECTED: Counter<1> = ("switchyard_xds_tls_rejected_total", "xDS connections refused during the TLS handshake or for lack of a Switchyard identity.", ["reason"]);

    // --- Gateway certificates ---
    CERTIFICATE_EXPIRY: Gauge<4> = ("switchyard_certificate_expiry_timestamp_seconds", "notAfter (unix seconds) of each certificate served, by Secret (namespace, name), Gateway (namespace/name) and listener (empty: the Gateway's client certificate to backends).", ["namespace", "name", "gateway", "listener"]);
    CERTIFICATE_LAST_GOOD_SERVED: Gauge<2> = ("switchyard_certificate_last_good_served", "1 while a TLS Secret's newest version is refused and its last good certificate is served instead; 0 after a good rotation.", ["namespace", "name"]);
    CERTIFICATE_ROTATIONS_REJECTED: Counter<2> = ("switchyard_certificate_rotations_rejected_total", "New versions of a TLS Secret refused (invalid, expired or mismatched key pair) while its last good certificate stayed in use.", ["namespace", "name"]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = BTreeSet::new();
        for d in ALL {
            assert!(seen.insert(d.name), "{} declared twice", d.name);
            assert!(d.name.starts_with("switchyard_"), "{}", d.name);
            let ok = |s: &str| {
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            };
            assert!(ok(d.name), "{}", d.name);
            for l in d.labels {
                assert!(ok(l) && *l != "le", "{}: label {l}", d.name);
            }
            // Counters end in _total (the contract's switchyard_gateways_total is a gauge).
            if d.kind == super::super::Kind::Counter {
                assert!(
                    d.name.ends_with("_total"),
                    "{}: a counter's name ends in _total",
                    d.name
                );
            }
            assert!(!d.help.is_empty());
        }
    }

    /// docs/metrics.md cannot drift from the catalogue: every metric is
    /// documented with its type and labels, and nothing documented is gone.
    #[test]
    fn docs_list_every_metric() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
            .unwrap_or_default();
        assert!(!doc.is_empty(), "docs/metrics.md is missing");
        for d in ALL {
            let labels = d.labels.join(", ");
            let row = format!(
                "| `{}` | {} | {} |",
                d.name,
                d.kind.as_str(),
                if labels.is_empty() {
                    "—".to_string()
                } else {
                    format!("`{labels}`")
                }
            );
            assert!(
                doc.contains(&row),
                "docs/metrics.md lacks the row starting `{row}`"
            );
        }
        let documented = doc
            .lines()
            .filter(|l| l.starts_with("| `switchyard_"))
            .count();
        assert_eq!(
            documented,
            ALL.len(),
            "docs/metrics.md lists metrics the catalogue does not declare"
        );
    }
}
