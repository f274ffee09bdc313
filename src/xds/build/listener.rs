//! Listeners: filter chains (SNI, TLS terminate or passthrough) with an HTTP
//! connection manager, a TCP proxy or a UDP proxy (IR → Envoy, pure).

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp_proxy;
use envoy_types::pb::envoy::extensions::filters::udp::udp_proxy::v3 as udp_proxy;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;

use super::{
    access_log, ads, any, cluster_name, socket_address, stat_name, Options, INVALID_BACKEND_CLUSTER,
};
use crate::ir;

fn http_connection_manager(
    stat_prefix: &str,
    route_config: &str,
    shards: u32,
    access_log: Option<envoy_types::pb::envoy::config::accesslog::v3::AccessLog>,
) -> listener::Filter {
    // Applies the per-route CORS policies. Always in the chain, so a route
    // gaining CORS changes only RDS; disabled unless the route's config
    // enables it (`route_policy::enabled`), so other requests never create
    // it (a filter per request costs throughput).
    let cors = hcm::HttpFilter {
        name: super::route_policy::CORS_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
            &envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors::default(),
        ))),
        disabled: true,
        ..Default::default()
    };
    // Keeps sessions on one endpoint for routes that enable it per route;
    // in the chain and disabled by default, like CORS.
    let session = hcm::HttpFilter {
        name: super::route_policy::STATEFUL_SESSION_FILTER.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
            &envoy_types::pb::envoy::extensions::filters::http::stateful_session::v3::StatefulSession::default(),
        ))),
        disabled: true,
        ..Default::default()
    };
    let router = hcm::HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(
            &Router::default(),
        ))),
        ..Default::default()
    };
    // A sharded table: the scope key is computed first, before any filter
    // looks up the route (`shard`).
    let (route_specifier, http_filters) = if shards > 1 {
        (
            super::shard::scoped_routes(route_config, shards),
            vec![
                super::shard::key_filter(route_config, shards),
                cors,
                session,
                router,
            ],
        )
    } else {
        (
            hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
                config_source: Some(ads()),
                route_config_name: route_config.to_string(),
            }),
            vec![cors, session, router],
        )
    };
    let m = hcm::HttpConnectionManager {
        stat_prefix: stat_name(stat_prefix),
        access_log: access_log.into_iter().collect(),
        route_specifier: Some(route_specifier),
        http_filters,
        // The Host header reaches the backend exactly as the client sent it,
        // port included (conformance HTTPRouteListenerPortMatching); matching
        // ignores the port (ignore_port_in_host_matching on the route table).
        normalize_path: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        merge_slashes: true,
        upgrade_configs: vec![hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    listener::Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(listener::filter::ConfigType::TypedConfig(any(&m))),
    }
}

fn tls_inspector() -> listener::ListenerFilter {
    listener::ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener::listener_filter::ConfigType::TypedConfig(any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// TCP proxy to weighted backends; a connection whose share has no usable
/// backend (or a chain without backends) is closed: the cluster is unknown.
fn tcp_proxy(
    stat_prefix: &str,
    p: &ir::L4Proxy,
    access_log: Option<envoy_types::pb::envoy::config::accesslog::v3::AccessLog>,
) -> listener::Filter {
    use tcp_proxy::tcp_proxy::{
        weighted_cluster::ClusterWeight, ClusterSpecifier, WeightedCluster,
    };
    let specifier = match p.backends.as_slice() {
        [] => ClusterSpecifier::Cluster(INVALID_BACKEND_CLUSTER.into()),
        [one] => ClusterSpecifier::Cluster(cluster_name(one)),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|b| ClusterWeight {
                    name: cluster_name(b),
                    weight: b.weight,
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let m = tcp_proxy::TcpProxy {
        stat_prefix: stat_name(stat_prefix),
        access_log: access_log.into_iter().collect(),
        cluster_specifier: Some(specifier),
        ..Default::default()
    };
    listener::Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(listener::filter::ConfigType::TypedConfig(any(&m))),
    }
}

/// UDP proxy: every session goes to one cluster (weights live in a split
/// cluster's localities, see `ir::Cluster::split`).
fn udp_proxy(stat_prefix: &str, p: &ir::L4Proxy) -> listener::ListenerFilter {
    use envoy_types::pb::xds::core::v3::TypedExtensionConfig;
    use envoy_types::pb::xds::r#type::matcher::v3::matcher::{on_match, OnMatch};
    use envoy_types::pb::xds::r#type::matcher::v3::Matcher;
    let cluster = p
        .backends
        .first()
        .map(cluster_name)
        .unwrap_or_else(|| INVALID_BACKEND_CLUSTER.into());
    let route = udp_proxy::Route { cluster };
    let m = udp_proxy::UdpProxyConfig {
        stat_prefix: stat_name(stat_prefix),
        route_specifier: Some(udp_proxy::udp_proxy_config::RouteSpecifier::Matcher(
            Matcher {
                on_no_match: Some(Box::new(OnMatch {
                    keep_matching: false,
                    on_match: Some(on_match::OnMatch::Action(TypedExtensionConfig {
                        name: "route".into(),
                        typed_config: Some(any(&route)),
                    })),
                })),
                matcher_type: None,
            },
        )),
        ..Default::default()
    };
    listener::ListenerFilter {
        name: "envoy.filters.udp_listener.udp_proxy".into(),
        config_type: Some(listener::listener_filter::ConfigType::TypedConfig(any(&m))),
        ..Default::default()
    }
}

/// Envoy's TLS server context: the listener's certificates (SDS), ALPN, and
/// the client certificate check of `spec.tls.frontend` when it has one.
pub fn downstream_tls_context(
    secrets: &[String],
    alpn: &[String],
    client: Option<&ir::ClientValidation>,
) -> tls::DownstreamTlsContext {
    use tls::common_tls_context::{CombinedCertificateValidationContext, ValidationContextType};
    let sds = |name: &str| tls::SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    };
    // The CA bundle is an SDS secret: a rotated CA updates that secret
    // alone, and the listener (whose change would drain its connections)
    // stays as it is.
    let validation_context_type = client.map(|c| {
        if c.insecure_fallback {
            // Ask for a certificate, but neither require one nor fail the
            // handshake when it does not chain to the CA; the SDS context
            // (the CA) is merged over this default one.
            ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
                default_validation_context: Some(tls::CertificateValidationContext {
                    trust_chain_verification:
                        tls::certificate_validation_context::TrustChainVerification::AcceptUntrusted
                            as i32,
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(sds(&c.ca)),
                ..Default::default()
            })
        } else {
            ValidationContextType::ValidationContextSdsSecretConfig(sds(&c.ca))
        }
    });
    tls::DownstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_certificate_sds_secret_configs: secrets.iter().map(|s| sds(s)).collect(),
            alpn_protocols: alpn.to_vec(),
            validation_context_type,
            ..Default::default()
        }),
        require_client_certificate: client.map(|c| envoy_types::pb::google::protobuf::BoolValue {
            value: !c.insecure_fallback,
        }),
        ..Default::default()
    }
}

fn downstream_tls(
    secrets: &[String],
    alpn: &[String],
    client: Option<&ir::ClientValidation>,
) -> core::TransportSocket {
    let ctx = downstream_tls_context(secrets, alpn, client);
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(&ctx))),
    }
}

pub fn build_listener(l: &ir::Listener, opts: &Options) -> listener::Listener {
    let mut address = socket_address(&l.address, l.port);
    let mut out = listener::Listener {
        name: l.name.clone(),
        // Drain quickly on the rare listener change (route edits never touch it).
        drain_type: listener::listener::DrainType::Default as i32,
        freebind: l
            .freebind
            .then_some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        ..Default::default()
    };
    if l.transport == ir::Transport::Udp {
        if let Some(core::address::Address::SocketAddress(sa)) = address.address.as_mut() {
            sa.protocol = core::socket_address::Protocol::Udp as i32;
        }
        out.address = Some(address);
        out.udp_listener_config = Some(listener::UdpListenerConfig::default());
        for ch in &l.chains {
            if let ir::App::Udp(p) = &ch.app {
                out.listener_filters
                    .push(udp_proxy(&format!("{}/{}", l.name, ch.name), p));
            }
        }
        return out;
    }
    out.address = Some(address);
    if l.inspects_tls() {
        out.listener_filters.push(tls_inspector());
    }
    for ch in &l.chains {
        // A plain chain that takes every connection speaks for the listener.
        let stat = if ch.server_names.is_empty() && matches!(ch.tls, ir::ChainTls::None) {
            l.name.clone()
        } else {
            format!("{}/{}", l.name, ch.name)
        };
        let filter = match &ch.app {
            ir::App::Http(rc) => http_connection_manager(
                &stat,
                &rc.name,
                super::shard::shards_of(rc, opts.route_shards_above),
                opts.access_log
                    .then(|| access_log::stdout_json(&l.name, false)),
            ),
            ir::App::Tcp(p) | ir::App::Udp(p) => tcp_proxy(
                &stat,
                p,
                opts.access_log
                    .then(|| access_log::stdout_json(&l.name, true)),
            ),
        };
        let mut m = listener::FilterChainMatch {
            server_names: ch.server_names.clone(),
            ..Default::default()
        };
        let transport_socket = match &ch.tls {
            ir::ChainTls::None => None,
            ir::ChainTls::Terminate {
                secrets,
                alpn,
                client_validation,
            } => Some(downstream_tls(secrets, alpn, client_validation.as_ref())),
            ir::ChainTls::Passthrough => {
                m.transport_protocol = "tls".into();
                None
            }
        };
        let has_match = !m.server_names.is_empty() || !m.transport_protocol.is_empty();
        out.filter_chains.push(listener::FilterChain {
            name: ch.name.clone(),
            filter_chain_match: has_match.then_some(m),
            filters: vec![filter],
            transport_socket,
            ..Default::default()
        });
    }
    out
}
