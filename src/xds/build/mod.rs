//! Pure IR → Envoy resources. No I/O; the same IR always yields the same bytes.

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sha2::Digest;

use super::{type_url, Resource, ResourceSet, Snapshot};
use crate::ir;

mod access_log;
mod cluster_tls;
mod listener;
mod options;
mod route_policy;
pub mod shard;
pub use listener::{build_listener, downstream_tls_context};
pub use options::{stat_name, Options};
pub use shard::DEFAULT_THRESHOLD as DEFAULT_SHARD_THRESHOLD;

/// Cluster name that is never defined: Envoy answers requests routed to it
/// with `cluster_not_found_response_code` (500), which is what the spec asks
/// for a backendRef that cannot be resolved.
pub const INVALID_BACKEND_CLUSTER: &str = "switchyard/invalid-backend";

fn any<M: prost::Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: prost::Message::encode_to_vec(m),
    }
}

/// Builds every Gateway's resources.
pub fn build(model: &ir::Model) -> Snapshot {
    Builder::default().build(model)
}

/// Builds snapshots, reusing the encoding of whatever did not change since
/// the previous build: virtual hosts are encoded once per IR value (an
/// incremental translation keeps the unchanged ones), clusters, endpoints
/// and secrets when their IR is equal to last time's. The bytes are the
/// same as a fresh build's.
#[derive(Default)]
pub struct Builder {
    options: Options,
    clusters: HashMap<String, (ir::Cluster, Resource, Resource)>,
    secrets: HashMap<String, (ir::TlsCertificate, Resource)>,
    client_cas: HashMap<String, (ir::ClientCa, Resource)>,
    /// Route configurations by name, with the virtual hosts they were
    /// spliced from: unchanged when every virtual host is the same value.
    route_configs: HashMap<String, (Vec<Arc<ir::VirtualHost>>, Resource)>,
    /// The scopes of each sharded table, by table name, with the shard
    /// count they were built for.
    scopes: HashMap<String, (u32, Arc<Vec<Resource>>)>,
}

impl Builder {
    /// A builder whose output follows `options`.
    pub fn with_options(options: Options) -> Self {
        Builder {
            options,
            ..Default::default()
        }
    }

    pub fn build(&mut self, model: &ir::Model) -> Snapshot {
        encode_vhosts_in_parallel(model);
        let mut snap = Snapshot::default();
        let mut used_clusters = HashSet::new();
        let mut used_secrets = HashSet::new();
        let mut used_route_configs: HashSet<String> = HashSet::new();
        let mut used_scopes = HashSet::new();
        for (key, gw) in &model.gateways {
            let mut set = ResourceSet::default();
            for c in gw.clusters.values() {
                used_clusters.insert(c.name.as_str());
                let (cr, er) = self.cluster(c);
                set.insert(type_url::CLUSTER, cr);
                set.insert(type_url::ENDPOINT, er);
            }
            for s in gw.secrets.values() {
                used_secrets.insert(s.name.as_str());
                set.insert(type_url::SECRET, self.secret(s));
            }
            for ca in gw.client_cas.values() {
                used_secrets.insert(ca.name.as_str());
                set.insert(type_url::SECRET, self.client_ca(ca));
            }
            for l in &gw.listeners {
                set.insert(
                    type_url::LISTENER,
                    Resource::new(&l.name, &build_listener(l, &self.options)),
                );
                for rc in route_configs(l) {
                    let threshold = self.options.route_shards_above;
                    if shard::shards_of(rc, threshold) == 1 {
                        used_route_configs.insert(rc.name.clone());
                        set.insert(type_url::ROUTE, self.route_config(rc));
                    }
                    if !shard::serves_shards_of(rc, threshold) {
                        continue;
                    }
                    let k = shard::SHARDS;
                    for part in shard::split(rc, k) {
                        used_route_configs.insert(part.name.clone());
                        set.insert(type_url::ROUTE, self.route_config(&part));
                    }
                    used_scopes.insert(rc.name.as_str());
                    for r in self.scopes(&rc.name, k).iter() {
                        set.insert(type_url::SCOPED_ROUTE, r.clone());
                    }
                }
            }
            snap.gateways.insert(key.to_string(), set);
        }
        self.route_configs
            .retain(|k, _| used_route_configs.contains(k.as_str()));
        self.scopes.retain(|k, _| used_scopes.contains(k.as_str()));
        self.clusters
            .retain(|k, _| used_clusters.contains(k.as_str()));
        self.secrets
            .retain(|k, _| used_secrets.contains(k.as_str()));
        self.client_cas
            .retain(|k, _| used_secrets.contains(k.as_str()));
        snap
    }

    fn cluster(&mut self, c: &ir::Cluster) -> (Resource, Resource) {
        match self.clusters.get(&c.name) {
            Some((ir, cr, er)) if ir == c => (cr.clone(), er.clone()),
            _ => {
                let cr = Resource::new(&c.name, &build_cluster(c));
                let mut er = Resource::new(&c.name, &build_endpoints(c));
                // Envoy warms a changed cluster until its endpoints arrive
                // again (else it waits initial_fetch_timeout): a new cluster
                // version makes a new endpoints version, so both are sent.
                er.version = format!("{}.{}", cr.version, er.version);
                self.clusters
                    .insert(c.name.clone(), (c.clone(), cr.clone(), er.clone()));
                (cr, er)
            }
        }
    }

    fn route_config(&mut self, rc: &ir::RouteConfig) -> Resource {
        if let Some((vhosts, r)) = self.route_configs.get(&rc.name) {
            let same = vhosts.len() == rc.virtual_hosts.len()
                && vhosts
                    .iter()
                    .zip(&rc.virtual_hosts)
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            if same {
                return r.clone();
            }
        }
        let r = route_config_resource(rc);
        self.route_configs
            .insert(rc.name.clone(), (rc.virtual_hosts.clone(), r.clone()));
        r
    }

    /// The scope resources of the sharded table `table` with `k` shards.
    fn scopes(&mut self, table: &str, k: u32) -> Arc<Vec<Resource>> {
        if let Some((built_for, r)) = self.scopes.get(table) {
            if *built_for == k {
                return Arc::clone(r);
            }
        }
        let r: Arc<Vec<Resource>> = Arc::new(
            shard::scopes(table, k)
                .iter()
                .map(|s| Resource::new(&s.name, s))
                .collect(),
        );
        self.scopes.insert(table.to_string(), (k, Arc::clone(&r)));
        r
    }

    /// Endpoints of a cluster (only its endpoints changed).
    pub fn endpoints(&mut self, c: &ir::Cluster) -> Resource {
        self.cluster(c).1
    }

    fn client_ca(&mut self, ca: &ir::ClientCa) -> Resource {
        match self.client_cas.get(&ca.name) {
            Some((ir, r)) if ir == ca => r.clone(),
            _ => {
                let r = Resource::new(&ca.name, &build_client_ca(ca));
                self.client_cas
                    .insert(ca.name.clone(), (ca.clone(), r.clone()));
                r
            }
        }
    }

    fn secret(&mut self, s: &ir::TlsCertificate) -> Resource {
        match self.secrets.get(&s.name) {
            Some((ir, r)) if ir == s => r.clone(),
            _ => {
                let r = Resource::new(&s.name, &build_secret(s));
                self.secrets.insert(s.name.clone(), (s.clone(), r.clone()));
                r
            }
        }
    }
}

/// The route configurations a listener refers to.
fn route_configs(l: &ir::Listener) -> impl Iterator<Item = &ir::RouteConfig> {
    l.chains.iter().filter_map(|c| match &c.app {
        ir::App::Http(rc) => Some(rc),
        ir::App::Tcp(_) | ir::App::Udp(_) => None,
    })
}

/// A RouteConfiguration resource spliced from its virtual hosts' cached
/// encodings: the message without virtual hosts, then each virtual host as
/// its length-delimited field (protobuf fields may come in any order). The
/// version is a digest of the parts, not of the whole (which can be
/// megabytes).
pub fn route_config_resource(rc: &ir::RouteConfig) -> Resource {
    let head = prost::Message::encode_to_vec(&build_route_config(&ir::RouteConfig {
        name: rc.name.clone(),
        virtual_hosts: Vec::new(),
    }));
    let parts: Vec<&ir::Encoded> = rc
        .virtual_hosts
        .iter()
        .map(|vh| encoded_vhost(vh))
        .collect();
    let mut value =
        Vec::with_capacity(head.len() + parts.iter().map(|p| p.bytes.len()).sum::<usize>());
    value.extend_from_slice(&head);
    let mut digest = sha2::Sha256::new();
    digest.update(&head);
    for p in &parts {
        value.extend_from_slice(&p.bytes);
        digest.update(p.digest);
    }
    let d = digest.finalize();
    Resource {
        name: rc.name.clone(),
        any: Arc::new(prost_types::Any {
            type_url: <route::RouteConfiguration as prost::Name>::type_url(),
            value,
        }),
        version: hex::encode(&d[..8]),
    }
}

/// Encodes the virtual hosts not encoded yet on up to four threads when
/// there are many (a full translation of thousands of routes); the
/// RouteConfigurations are then spliced from the cached bytes.
fn encode_vhosts_in_parallel(model: &ir::Model) {
    const MIN_PER_THREAD: usize = 500;
    let pending: Vec<&ir::VirtualHost> = model
        .gateways
        .values()
        .flat_map(|gw| gw.listeners.iter())
        .flat_map(route_configs)
        .flat_map(|rc| rc.virtual_hosts.iter())
        .filter(|vh| vh.encoded.get().is_none())
        .map(|vh| &**vh)
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
        .min(pending.len() / MIN_PER_THREAD);
    if threads < 2 {
        return;
    }
    let chunk = pending.len().div_ceil(threads);
    std::thread::scope(|s| {
        for part in pending.chunks(chunk) {
            s.spawn(move || {
                for vh in part {
                    encoded_vhost(vh);
                }
            });
        }
    });
}

/// A virtual host encoded as field 2 (`virtual_hosts`) of a RouteConfiguration.
fn encoded_vhost(vh: &ir::VirtualHost) -> &ir::Encoded {
    vh.encoded.get_or_init(|| {
        let mut bytes = Vec::new();
        prost::encoding::message::encode(2, &build_virtual_host(vh), &mut bytes);
        let d = sha2::Sha256::digest(&bytes);
        let mut digest = [0u8; 8];
        digest.copy_from_slice(&d[..8]);
        ir::Encoded { bytes, digest }
    })
}

fn ads() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

pub fn build_cluster(c: &ir::Cluster) -> cluster::Cluster {
    let mut out = cluster::Cluster {
        name: c.name.clone(),
        alt_stat_name: stat_name(&c.name),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        connect_timeout: Some(Duration {
            seconds: 5,
            nanos: 0,
        }),
        // Removed endpoints stop taking traffic at once, not after health checks.
        ignore_health_on_host_removal: true,
        // Envoy's default allows 3 retries in flight per cluster: a route's
        // retry policy would silently not retry under load.
        circuit_breakers: Some(cluster::CircuitBreakers {
            thresholds: vec![cluster::circuit_breakers::Thresholds {
                max_retries: Some(UInt32Value { value: 1024 }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    if !c.split.is_empty() {
        // One locality per backend, weighted by its backendRef weight.
        out.common_lb_config = Some(cluster::cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    cluster::cluster::common_lb_config::LocalityWeightedLbConfig {},
                ),
            ),
            ..Default::default()
        });
    }
    if c.protocol == ir::UpstreamProtocol::H2c {
        let opts = upstream_http::HttpProtocolOptions {
            upstream_protocol_options: Some(upstream_http::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                upstream_http::http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            core::Http2ProtocolOptions::default(),
                        ),
                    ),
                },
            )),
            ..Default::default()
        };
        out.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
            any(&opts),
        );
    }
    if let Some(t) = &c.tls {
        cluster_tls::apply(&mut out, t, &c.protocol);
    }
    out
}

pub fn build_endpoints(c: &ir::Cluster) -> endpoint::ClusterLoadAssignment {
    let lb_endpoints = |eps: &[ir::Endpoint]| -> Vec<endpoint::LbEndpoint> {
        eps.iter()
            .map(|e| endpoint::LbEndpoint {
                host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                    endpoint::Endpoint {
                        address: Some(socket_address(&e.address, e.port)),
                        ..Default::default()
                    },
                )),
                health_status: core::HealthStatus::Healthy as i32,
                ..Default::default()
            })
            .collect()
    };
    let endpoints = if c.split.is_empty() {
        vec![endpoint::LocalityLbEndpoints {
            lb_endpoints: lb_endpoints(&c.endpoints),
            ..Default::default()
        }]
    } else {
        c.split
            .iter()
            .enumerate()
            .map(|(i, m)| endpoint::LocalityLbEndpoints {
                // Localities must differ; the index keeps two backendRefs to
                // the same Service port apart.
                locality: Some(core::Locality {
                    sub_zone: format!("{i}/{}/{}", m.service, m.port_name),
                    ..Default::default()
                }),
                lb_endpoints: lb_endpoints(&m.endpoints),
                load_balancing_weight: Some(UInt32Value { value: m.weight }),
                ..Default::default()
            })
            .collect()
    };
    endpoint::ClusterLoadAssignment {
        cluster_name: c.name.clone(),
        endpoints,
        ..Default::default()
    }
}

fn socket_address(address: &str, port: u16) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: address.to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                port,
            ))),
            ..Default::default()
        })),
    }
}

pub fn build_secret(s: &ir::TlsCertificate) -> tls::Secret {
    let inline = |v: &str| core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineString(v.to_string())),
        ..Default::default()
    };
    tls::Secret {
        name: s.name.clone(),
        r#type: Some(tls::secret::Type::TlsCertificate(tls::TlsCertificate {
            certificate_chain: Some(inline(&s.certificate_chain)),
            private_key: Some(inline(&s.private_key)),
            ..Default::default()
        })),
    }
}

/// A CA bundle clients' certificates must chain to, as an SDS
/// validation-context secret.
pub fn build_client_ca(ca: &ir::ClientCa) -> tls::Secret {
    tls::Secret {
        name: ca.name.clone(),
        r#type: Some(tls::secret::Type::ValidationContext(
            tls::CertificateValidationContext {
                trusted_ca: Some(core::DataSource {
                    specifier: Some(core::data_source::Specifier::InlineString(ca.pem.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    }
}

fn cluster_name(b: &ir::WeightedBackend) -> String {
    b.cluster
        .clone()
        .unwrap_or_else(|| INVALID_BACKEND_CLUSTER.into())
}

pub fn build_route_config(rc: &ir::RouteConfig) -> route::RouteConfiguration {
    // A shard's table (`shard`) drops the scope key header the Lua filter
    // wrote, so backends never see it.
    let request_headers_to_remove = if rc.name.contains(shard::SHARD_SUFFIX) {
        vec![shard::SHARD_HEADER.to_string()]
    } else {
        Vec::new()
    };
    route::RouteConfiguration {
        request_headers_to_remove,
        name: rc.name.clone(),
        virtual_hosts: rc
            .virtual_hosts
            .iter()
            .map(|vh| build_virtual_host(vh))
            .collect(),
        // Backends that do not resolve must answer 500, not fail the config.
        validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        // The spec: the port in the Host header is ignored for matching; the
        // header itself reaches the backend unchanged.
        ignore_port_in_host_matching: true,
        ..Default::default()
    }
}

fn build_virtual_host(vh: &ir::VirtualHost) -> route::VirtualHost {
    let routes = if vh.misdirected {
        vec![misdirected_route()]
    } else {
        vh.routes.iter().map(|r| build_route(r)).collect()
    };
    route::VirtualHost {
        name: vh.name.clone(),
        domains: vh.domains.clone(),
        routes,
        ..Default::default()
    }
}

/// Every request of a misdirected host (another HTTPS listener of the port
/// owns it): 421 Misdirected Request, so that a client that reused a
/// connection opens one with the right SNI.
fn misdirected_route() -> route::Route {
    route::Route {
        name: "misdirected".into(),
        r#match: Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(route::route::Action::DirectResponse(
            route::DirectResponseAction {
                status: 421,
                body: None,
                body_format: None,
            },
        )),
        ..Default::default()
    }
}

fn string_matcher(m: &ir::StringMatch) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(match m {
            ir::StringMatch::Exact(v) => matcher::string_matcher::MatchPattern::Exact(v.clone()),
            ir::StringMatch::Regex(r) => matcher::string_matcher::MatchPattern::SafeRegex(regex(r)),
        }),
        ignore_case: false,
    }
}

fn regex(r: &str) -> matcher::RegexMatcher {
    matcher::RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }
}

fn build_match(m: &ir::RouteMatch) -> route::RouteMatch {
    use route::route_match::PathSpecifier;
    let path_specifier = match &m.path {
        ir::PathMatch::Exact(p) => PathSpecifier::Path(p.clone()),
        ir::PathMatch::Prefix(p) if p == "/" => PathSpecifier::Prefix("/".into()),
        ir::PathMatch::Prefix(p) => PathSpecifier::PathSeparatedPrefix(p.clone()),
        ir::PathMatch::Regex(r) => PathSpecifier::SafeRegex(regex(r)),
    };
    let mut headers: Vec<route::HeaderMatcher> = m
        .headers
        .iter()
        .map(|h| route::HeaderMatcher {
            name: h.name.clone(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&h.value),
            )),
            ..Default::default()
        })
        .collect();
    if let Some(method) = &m.method {
        headers.push(route::HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&ir::StringMatch::Exact(method.clone())),
            )),
            ..Default::default()
        });
    }
    let query_parameters = m
        .query_params
        .iter()
        .map(|q| route::QueryParameterMatcher {
            name: q.name.clone(),
            query_parameter_match_specifier: Some(
                route::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                    string_matcher(&q.value),
                ),
            ),
        })
        .collect();
    route::RouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        query_parameters,
        ..Default::default()
    }
}

fn header_options(mods: &ir::HeaderMods) -> Vec<core::HeaderValueOption> {
    use core::header_value_option::HeaderAppendAction;
    let opt = |(k, v): &(String, String), action: HeaderAppendAction| core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    };
    mods.set
        .iter()
        .map(|h| opt(h, HeaderAppendAction::OverwriteIfExistsOrAdd))
        .chain(
            mods.add
                .iter()
                .map(|h| opt(h, HeaderAppendAction::AppendIfExistsOrAdd)),
        )
        .collect()
}

/// Regex rewrite that replaces a matched path prefix segment-wise.
fn prefix_rewrite(matched: &str, replacement: &str) -> matcher::RegexMatchAndSubstitute {
    let escaped = regex::escape(matched.trim_end_matches('/'));
    let (pattern, substitution) = if replacement.ends_with('/') {
        // "/api" → "/": "/api/x" → "/x", "/api" → "/".
        (format!("^{escaped}/*"), replacement.to_string())
    } else {
        // "/api" → "/v2": "/api/x" → "/v2/x", "/api" → "/v2".
        (format!("^{escaped}(/|$)"), format!("{replacement}\\1"))
    };
    matcher::RegexMatchAndSubstitute {
        pattern: Some(regex(&pattern)),
        substitution,
    }
}

fn full_rewrite(path: &str) -> matcher::RegexMatchAndSubstitute {
    matcher::RegexMatchAndSubstitute {
        pattern: Some(regex("^.*$")),
        substitution: path.to_string(),
    }
}

fn build_route(r: &ir::Route) -> route::Route {
    let mut out = route::Route {
        name: format!(
            "{}/{}/rule/{}/match/{}",
            r.source.kind, r.source.route, r.source.rule, r.source.match_index
        ),
        r#match: Some(build_match(&r.matcher)),
        request_headers_to_add: header_options(&r.request_headers),
        request_headers_to_remove: r.request_headers.remove.clone(),
        response_headers_to_add: header_options(&r.response_headers),
        response_headers_to_remove: r.response_headers.remove.clone(),
        ..Default::default()
    };
    out.action = Some(match &*r.action {
        ir::RouteAction::Direct { status, body } => {
            route::route::Action::DirectResponse(route::DirectResponseAction {
                status: *status,
                body: (!body.is_empty()).then(|| core::DataSource {
                    specifier: Some(core::data_source::Specifier::InlineString(body.clone())),
                    ..Default::default()
                }),
                body_format: None,
            })
        }
        ir::RouteAction::Redirect(rd) => route::route::Action::Redirect(build_redirect(rd)),
        ir::RouteAction::Forward(f) => forward(f),
    });
    if let ir::RouteAction::Forward(ir::Forward { cors: Some(c), .. }) = &*r.action {
        out.typed_per_filter_config.insert(
            route_policy::CORS_FILTER.into(),
            route_policy::enabled(route_policy::cors_policy(c)),
        );
    }
    if let ir::RouteAction::Forward(ir::Forward {
        session: Some(s), ..
    }) = &*r.action
    {
        out.typed_per_filter_config.insert(
            route_policy::STATEFUL_SESSION_FILTER.into(),
            route_policy::enabled(route_policy::stateful_session(s, &r.matcher.path)),
        );
    }
    out
}

fn build_redirect(rd: &ir::Redirect) -> route::RedirectAction {
    use route::redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
    };
    let response_code = match rd.status_code {
        301 => RedirectResponseCode::MovedPermanently,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        _ => RedirectResponseCode::Found,
    };
    route::RedirectAction {
        host_redirect: rd.hostname.clone().unwrap_or_default(),
        port_redirect: rd.port.map(u32::from).unwrap_or(0),
        response_code: response_code as i32,
        scheme_rewrite_specifier: rd
            .scheme
            .clone()
            .map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: rd.path.as_ref().map(|p| match p {
            ir::PathRewrite::Full(full) => PathRewriteSpecifier::PathRedirect(full.clone()),
            ir::PathRewrite::Prefix {
                matched,
                replacement,
            } => PathRewriteSpecifier::RegexRewrite(prefix_rewrite(matched, replacement)),
        }),
        strip_query: false,
    }
}

fn forward(f: &ir::Forward) -> route::route::Action {
    use route::route_action::{ClusterSpecifier, HostRewriteSpecifier};
    if f.backends.is_empty() {
        return route::route::Action::DirectResponse(route::DirectResponseAction {
            status: 500,
            body: None,
            body_format: None,
        });
    }
    let specifier = if let Some(c) = f.session.as_ref().and_then(|s| s.cluster.as_ref()) {
        // Session persistence across a split: one cluster, a locality per backend.
        ClusterSpecifier::Cluster(c.clone())
    } else if f.backends.len() == 1
        && f.backends[0].request_headers.is_empty()
        && f.backends[0].response_headers.is_empty()
    {
        ClusterSpecifier::Cluster(cluster_name(&f.backends[0]))
    } else {
        ClusterSpecifier::WeightedClusters(route::WeightedCluster {
            clusters: f
                .backends
                .iter()
                .map(|b| route::weighted_cluster::ClusterWeight {
                    name: cluster_name(b),
                    weight: Some(UInt32Value { value: b.weight }),
                    request_headers_to_add: header_options(&b.request_headers),
                    request_headers_to_remove: b.request_headers.remove.clone(),
                    response_headers_to_add: header_options(&b.response_headers),
                    response_headers_to_remove: b.response_headers.remove.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    };
    let mut action = route::RouteAction {
        cluster_specifier: Some(specifier),
        cluster_not_found_response_code:
            route::route_action::ClusterNotFoundResponseCode::InternalServerError as i32,
        ..Default::default()
    };
    route_policy::timeouts_and_retry(f, &mut action);
    action.request_mirror_policies = route_policy::mirror_policies(f);
    if let Some(rw) = &f.rewrite {
        if let Some(h) = &rw.hostname {
            action.host_rewrite_specifier =
                Some(HostRewriteSpecifier::HostRewriteLiteral(h.clone()));
        }
        match &rw.path {
            Some(ir::PathRewrite::Full(p)) => action.regex_rewrite = Some(full_rewrite(p)),
            Some(ir::PathRewrite::Prefix {
                matched,
                replacement,
            }) => action.regex_rewrite = Some(prefix_rewrite(matched, replacement)),
            None => {}
        }
    }
    route::route::Action::Route(action)
}

#[cfg(test)]
mod tests;
