//! GatewayClass selection and the features Switchyard claims.

use std::collections::BTreeSet;

use super::conditions::{reasons, types};
use super::generation;
use crate::inputs::{Inputs, Kind, ObjKey};
use crate::status::{Condition, ObjectStatus, StatusSet, SupportedFeature};

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
/// Only what the conformance suite proves here. The RequestMirror tests read
/// the mirror Pod's logs (pods/log), which the local cluster's process
/// kubelet serves like a real one. HTTPRouteRetryBackendTimeout/
/// ConnectionError have no v1.6.1 conformance test; the end-to-end tests
/// cover them.
pub fn supported_features() -> Vec<&'static str> {
    let mut f = vec![
        "BackendTLSPolicy",
        "BackendTLSPolicySANValidation",
        "Gateway",
        "GatewayAddressEmpty",
        "GatewayBackendClientCertificate",
        "GatewayFrontendClientCertificateValidation",
        "GatewayFrontendClientCertificateValidationInsecureFallback",
        "GatewayHTTPListenerIsolation",
        "GatewayHTTPSListenerDetectMisdirectedRequests",
        "GatewayInfrastructurePropagation",
        "GatewayPort8080",
        "GatewayStaticAddresses",
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
        "HTTPRouteCORS",
        "HTTPRouteDestinationPortMatching",
        "HTTPRouteHostRewrite",
        "HTTPRouteMethodMatching",
        "HTTPRouteNamedRouteRule",
        "HTTPRouteParentRefPort",
        "HTTPRoutePathRedirect",
        "HTTPRoutePathRewrite",
        "HTTPRoutePortRedirect",
        "HTTPRouteQueryParamMatching",
        "HTTPRouteRequestMirror",
        "HTTPRouteRequestMultipleMirrors",
        "HTTPRouteRequestPercentageMirror",
        "HTTPRouteRequestTimeout",
        "HTTPRouteRetry",
        "HTTPRouteRetryBackendTimeout",
        "HTTPRouteRetryConnectionError",
        "HTTPRouteResponseHeaderModification",
        "HTTPRouteSchemeRedirect",
        "ListenerSet",
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

/// Accepts our GatewayClasses; returns their names.
pub fn gateway_classes(inputs: &Inputs, status: &mut StatusSet) -> BTreeSet<String> {
    let mut ours = BTreeSet::new();
    for (name, gc) in &inputs.gateway_classes {
        if gc.spec.controller_name != inputs.controller_name {
            continue;
        }
        let gen = generation(&gc.metadata);
        let unknown = inputs.unknown(Kind::GatewayClass, &ObjKey::cluster(name));
        let violations = super::validate::typed_spec(Kind::GatewayClass, &gc.spec);
        let accepted = if !violations.is_empty() {
            // What the API server would have refused.
            Condition::new(
                types::ACCEPTED,
                false,
                reasons::UNSUPPORTED,
                super::validate::summary(&violations),
                gen,
            )
        } else if let Err(msg) = crate::addressing::resolve(inputs, name) {
            // parametersRef to another kind, a missing or invalid
            // GatewayClassConfig, or a mode the defaults cannot serve.
            Condition::new(
                types::ACCEPTED,
                false,
                reasons::INVALID_PARAMETERS,
                msg,
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
