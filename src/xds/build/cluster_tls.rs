//! TLS origination to a backend: an `UpstreamTlsContext` transport socket on
//! the cluster of a Service port that a BackendTLSPolicy applies to.
//!
//! - SNI is the policy's `hostname`.
//! - The trusted CA is inline (the PEM bundle of the policy's
//!   `caCertificateRefs`: public data, small, and versioned with the cluster)
//!   or a file on the Envoy host for `wellKnownCACertificates: System`.
//! - The backend's certificate must carry one of the policy's subject alt
//!   names (`match_typed_subject_alt_names`, DNS or URI, exact); the
//!   translator already put `hostname` there when the policy names none.
//! - The Gateway's client certificate (`spec.tls.backend.clientCertificateRef`)
//!   is an SDS secret, like listener certificates: the private key never sits
//!   in the cluster, and a rotated certificate updates the secret alone.

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;

use crate::ir;

/// Envoy's name of the TLS transport socket.
const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// Sets the cluster's transport socket for `t`.
pub fn apply(out: &mut cluster::Cluster, t: &ir::UpstreamTls, protocol: &ir::UpstreamProtocol) {
    out.transport_socket = Some(core::TransportSocket {
        name: TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(super::any(
            &upstream_tls_context(t, protocol),
        ))),
    });
}

pub fn upstream_tls_context(
    t: &ir::UpstreamTls,
    protocol: &ir::UpstreamProtocol,
) -> tls::UpstreamTlsContext {
    let trusted_ca = core::DataSource {
        specifier: Some(match &t.trusted_ca {
            ir::TrustedCa::Pem(pem) => core::data_source::Specifier::InlineString(pem.clone()),
            ir::TrustedCa::File(path) => core::data_source::Specifier::Filename(path.clone()),
        }),
        ..Default::default()
    };
    let validation = tls::CertificateValidationContext {
        trusted_ca: Some(trusted_ca),
        match_typed_subject_alt_names: t.subject_alt_names.iter().map(san_matcher).collect(),
        ..Default::default()
    };
    let tls_certificate_sds_secret_configs = t
        .client_certificate
        .iter()
        .map(|name| tls::SdsSecretConfig {
            name: name.clone(),
            sds_config: Some(super::ads()),
        })
        .collect();
    // HTTP/2 over TLS is negotiated with ALPN; HTTP/1.1 needs none.
    let alpn_protocols = match protocol {
        ir::UpstreamProtocol::H2c => vec!["h2".to_string()],
        ir::UpstreamProtocol::Http1 => Vec::new(),
    };
    tls::UpstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificate_sds_secret_configs,
            validation_context_type: Some(
                tls::common_tls_context::ValidationContextType::ValidationContext(validation),
            ),
            alpn_protocols,
            ..Default::default()
        }),
        sni: t.sni.clone(),
        ..Default::default()
    }
}

fn san_matcher(san: &ir::SubjectAltName) -> tls::SubjectAltNameMatcher {
    use tls::subject_alt_name_matcher::SanType;
    let (san_type, value) = match san {
        ir::SubjectAltName::Dns(v) => (SanType::Dns, v),
        ir::SubjectAltName::Uri(v) => (SanType::Uri, v),
    };
    tls::SubjectAltNameMatcher {
        san_type: san_type as i32,
        matcher: Some(matcher::StringMatcher {
            match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(value.clone())),
            ignore_case: false,
        }),
        oid: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(client: Option<&str>) -> ir::UpstreamTls {
        ir::UpstreamTls {
            policy: crate::inputs::ObjKey::new("apps", "p"),
            sni: "api.example.com".into(),
            trusted_ca: ir::TrustedCa::Pem("-----BEGIN CERTIFICATE-----".into()),
            subject_alt_names: vec![
                ir::SubjectAltName::Dns("api.example.com".into()),
                ir::SubjectAltName::Uri("spiffe://example/ns/apps/sa/api".into()),
            ],
            client_certificate: client.map(str::to_string),
        }
    }

    #[test]
    fn sni_ca_sans_and_client_certificate_are_spelled_for_envoy() {
        let ctx = upstream_tls_context(
            &upstream(Some("infra/client")),
            &ir::UpstreamProtocol::Http1,
        );
        assert_eq!(ctx.sni, "api.example.com");
        let common = ctx.common_tls_context.expect("common");
        assert_eq!(common.tls_certificate_sds_secret_configs.len(), 1);
        assert_eq!(
            common.tls_certificate_sds_secret_configs[0].name,
            "infra/client"
        );
        assert!(common.alpn_protocols.is_empty());
        let Some(tls::common_tls_context::ValidationContextType::ValidationContext(v)) =
            common.validation_context_type
        else {
            panic!("an inline validation context");
        };
        let types: Vec<i32> = v
            .match_typed_subject_alt_names
            .iter()
            .map(|m| m.san_type)
            .collect();
        use tls::subject_alt_name_matcher::SanType;
        assert_eq!(types, [SanType::Dns as i32, SanType::Uri as i32]);
        assert!(matches!(
            v.trusted_ca.and_then(|d| d.specifier),
            Some(core::data_source::Specifier::InlineString(_))
        ));
    }

    #[test]
    fn system_ca_is_a_file_and_h2_is_negotiated() {
        let mut t = upstream(None);
        t.trusted_ca = ir::TrustedCa::File("/etc/ssl/certs/ca-certificates.crt".into());
        let ctx = upstream_tls_context(&t, &ir::UpstreamProtocol::H2c);
        let common = ctx.common_tls_context.expect("common");
        assert!(common.tls_certificate_sds_secret_configs.is_empty());
        assert_eq!(common.alpn_protocols, ["h2"]);
        let Some(tls::common_tls_context::ValidationContextType::ValidationContext(v)) =
            common.validation_context_type
        else {
            panic!("an inline validation context");
        };
        assert!(matches!(
            v.trusted_ca.and_then(|d| d.specifier),
            Some(core::data_source::Specifier::Filename(f)) if f.ends_with("ca-certificates.crt")
        ));
    }
}
