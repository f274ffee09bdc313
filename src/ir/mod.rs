//! Protocol-neutral intermediate representation.
//!
//! The translator has already applied every Gateway API rule here: listener
//! validity, attachment, hostname intersection, precedence, ReferenceGrants.
//! `xds::build` only has to spell this in Envoy's terms. Names are stable so
//! a route edit changes route configurations only.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use crate::inputs::ObjKey;

pub mod eval;
pub mod re2;
pub mod shadow;

/// Everything to serve, per Gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Model {
    pub gateways: BTreeMap<ObjKey, Gateway>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Gateway {
    pub key: ObjKey,
    /// One Envoy listener per (address, port).
    pub listeners: Vec<Listener>,
    /// Upstream clusters this Gateway's routes use, by cluster name.
    pub clusters: BTreeMap<String, Cluster>,
    /// TLS certificates its listeners serve, by secret name.
    pub secrets: BTreeMap<String, TlsCertificate>,
    /// CA bundles its listeners validate client certificates against
    /// (`spec.tls.frontend`), by secret name: SDS secrets too.
    pub client_cas: BTreeMap<String, ClientCa>,
}

/// One Envoy listener: an (address, port, transport) with filter chains.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Listener {
    /// `<gw-ns>/<gw-name>/<port>` (TCP) or `<gw-ns>/<gw-name>/<port>/udp`.
    pub name: String,
    pub address: String,
    /// The port Envoy listens on (LoadBalancer mode: from the class's port
    /// range; the name keeps the Gateway's listener port).
    pub port: u16,
    /// Bind before the address is on the node (`IP_FREEBIND`: VirtualIP
    /// mode, where MetalLB, kube-vip or keepalived move the address).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub freebind: bool,
    pub transport: Transport,
    /// Envoy picks the chain whose match is the most specific for the
    /// connection (SNI); at most one chain matches any (no `server_names`).
    pub chains: Vec<FilterChain>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    Tcp,
    Udp,
}

impl Listener {
    /// Whether the listener needs Envoy's TLS inspector (any chain matches on SNI or TLS).
    pub fn inspects_tls(&self) -> bool {
        self.chains
            .iter()
            .any(|c| !c.server_names.is_empty() || !matches!(c.tls, ChainTls::None))
    }
}

/// One filter chain: which connections (SNI), what TLS does, and what
/// handles the bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FilterChain {
    /// Unique within the listener: the Gateway listener (`sectionName`), plus
    /// the route for SNI-routed chains.
    pub name: String,
    /// SNI names (empty: any).
    pub server_names: Vec<String>,
    pub tls: ChainTls,
    pub app: App,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainTls {
    /// Plain bytes (HTTP, TCP, UDP).
    None,
    /// Envoy terminates TLS with these SDS secrets.
    Terminate {
        secrets: Vec<String>,
        alpn: Vec<String>,
        /// Client certificate validation (`spec.tls.frontend` of the
        /// Gateway, HTTPS listeners only).
        #[serde(skip_serializing_if = "Option::is_none")]
        client_validation: Option<ClientValidation>,
    },
    /// The client's TLS goes to the backend untouched (chosen by SNI).
    Passthrough,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum App {
    /// HTTP connection manager with this route table (RDS).
    Http(RouteConfig),
    /// Bytes to weighted backends.
    Tcp(L4Proxy),
    /// Datagrams to one (possibly weight-split, see [`Cluster::split`]) cluster.
    Udp(L4Proxy),
}

/// Where an L4 chain sends its connections (or datagrams).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct L4Proxy {
    /// Stat prefix and the route that owns the chain (`<kind>/<ns>/<name>`).
    pub route: String,
    /// Weighted; `cluster: None` is an unresolved backendRef whose share of
    /// connections is refused. Empty: every connection is refused.
    pub backends: Vec<WeightedBackend>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteConfig {
    pub name: String,
    /// Sorted: exact domains first, then wildcards, `*` last. Shared: an
    /// incremental translation rebuilds only the virtual hosts a change
    /// touched and keeps the others (and their encoded bytes).
    pub virtual_hosts: Vec<Arc<VirtualHost>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    /// In precedence order: Envoy takes the first match. A route attached
    /// under several domains is one shared value.
    pub routes: Vec<Arc<Route>>,
    /// The hostname each run of `routes` was attached under, in order, with
    /// the run's length: the domain's own routes, then those of each wider
    /// wildcard it falls back to (for `explain`; Envoy never sees it).
    pub route_domains: Vec<(String, usize)>,
    /// The Gateway listener (`sectionName`, hostname) that owns this host.
    pub listener: Option<(String, Option<String>)>,
    /// The host belongs to another HTTPS listener of the port than the one
    /// whose route table this is (the connection's SNI chose that one): every
    /// request is answered 421 Misdirected Request, and `routes` is empty.
    /// `listener` names the listener that owns the host.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub misdirected: bool,
    /// The xDS builder's encoding of this virtual host, made once per value.
    #[serde(skip)]
    pub encoded: Memo<Encoded>,
}

/// Bytes derived from an IR node, with a short content digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub digest: [u8; 8],
}

/// A slot for a value derived from the enclosing IR node (computed at most
/// once). It is not part of the node's meaning: equality ignores it, a clone
/// starts empty, and it is never serialized.
pub struct Memo<T>(OnceLock<T>);

impl<T> Memo<T> {
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(f)
    }
    pub fn get(&self) -> Option<&T> {
        self.0.get()
    }
}

impl<T> Default for Memo<T> {
    fn default() -> Self {
        Memo(OnceLock::new())
    }
}

impl<T> Clone for Memo<T> {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl<T> PartialEq for Memo<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Memo<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Memo(set)"
        } else {
            "Memo(empty)"
        })
    }
}

/// Where a compiled route came from (for names, `explain` and NACK mapping).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RouteSource {
    pub kind: &'static str,
    /// Shared by every entry of the route.
    pub route: Arc<ObjKey>,
    pub rule: usize,
    /// Index of the match in the rule (0 when the rule has no matches).
    pub match_index: usize,
    /// `rules[].name`, when set.
    pub rule_name: Option<Arc<str>>,
    /// The route's place in the precedence tie-break (creation time, then
    /// namespace/name), shared by its entries.
    pub age: Arc<Age>,
}

/// Creation timestamp (RFC 3339, empty when unset), key and kind of a route:
/// routes of equal match specificity rank by it.
pub type Age = (String, ObjKey, crate::inputs::Kind);

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Route {
    pub source: RouteSource,
    pub matcher: RouteMatch,
    /// Shared by the entries of one rule when it does not depend on the match or listener.
    pub action: Arc<RouteAction>,
    pub request_headers: HeaderMods,
    pub response_headers: HeaderMods,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    /// Segment-aware prefix (`/foo` matches `/foo` and `/foo/bar`, not `/foobar`).
    Prefix(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StringMatch {
    Exact(String),
    Regex(String),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeaderMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<HeaderMatch>,
    pub method: Option<String>,
}

/// Rank of a match among the routes of one hostname (smaller wins): path
/// kind (Exact, RegularExpression, PathPrefix), longer path, a method
/// match, more header matches, more query parameter matches. Ties go to
/// the older route ([`Age`]), then to rule and match order.
pub type Precedence = (
    u8,
    std::cmp::Reverse<usize>,
    u8,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
);

impl RouteMatch {
    pub fn precedence(&self) -> Precedence {
        use std::cmp::Reverse;
        let (kind, len) = match &self.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::Regex(p) => (1, p.len()),
            PathMatch::Prefix(p) => (2, p.len()),
        };
        (
            kind,
            Reverse(len),
            u8::from(self.method.is_none()),
            Reverse(self.headers.len()),
            Reverse(self.query_params.len()),
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HeaderMods {
    pub add: Vec<(String, String)>,
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl HeaderMods {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    Forward(Forward),
    Redirect(Redirect),
    Direct { status: u32, body: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Forward {
    pub backends: Vec<WeightedBackend>,
    pub rewrite: Option<Rewrite>,
    pub timeouts: Timeouts,
    /// `rules[].retry`.
    pub retry: Option<Retry>,
    /// RequestMirror filters, in order; an unresolved one has no cluster
    /// and is not configured (the primary route is unaffected).
    pub mirrors: Vec<Mirror>,
    /// The CORS filter (boxed, like `session`: rarely set, and it keeps
    /// `RouteAction` small).
    pub cors: Option<Box<Cors>>,
    /// `rules[].sessionPersistence` (boxed, like `cors`).
    pub session: Option<Box<SessionPersistence>>,
}

/// `rules[].sessionPersistence`: the first response tells the client which
/// endpoint answered (a cookie or a header); later requests carrying it go
/// to that endpoint while it is in the rule's cluster, and to another one
/// (with a new token) when it is gone.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionPersistence {
    /// Cookie or header name: `sessionName`, or one made for the rule.
    pub name: String,
    pub kind: SessionKind,
    /// When the rule splits across several backends: the one cluster made
    /// for it (a locality per backend, weighted like `backends`), which the
    /// route uses instead of a weighted pick of clusters, so a session holds
    /// across the split.
    pub cluster: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// `None`: a session cookie (no `Max-Age`, no expiry). `Some`: a
    /// permanent cookie with this `Max-Age`; Envoy also refuses the token
    /// once it has expired.
    Cookie {
        max_age: Option<std::time::Duration>,
    },
    Header,
}

/// HTTPRoute rule retries. Connection errors (connect failure, reset,
/// refused stream, per-try timeout) are always retried.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Retry {
    /// Response codes that are retried (`retry.codes`).
    pub codes: Vec<u32>,
    /// Retries after the first attempt (`retry.attempts`; `None`: Envoy's default, 1).
    pub attempts: Option<u32>,
    /// Minimum wait before a retry (`retry.backoff`; `None`: Envoy's 25 ms).
    pub backoff: Option<std::time::Duration>,
}

/// One RequestMirror filter: a copy of each request (`numerator` out of
/// `denominator` of them) goes to `cluster`; its answer is discarded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mirror {
    /// `None`: the backendRef did not resolve; nothing is mirrored.
    pub cluster: Option<String>,
    pub numerator: u32,
    pub denominator: u32,
    pub origin: Arc<BackendOrigin>,
}

/// The CORS filter of a rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Cors {
    pub allow_origins: Vec<CorsOrigin>,
    /// As written; `["*"]` allows every method.
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    /// Seconds (`maxAge`, 5 when unset).
    pub max_age: u32,
    pub allow_credentials: bool,
}

/// An allowed `Origin`: `scheme://host[:port]` where the host may start
/// with `*` (any number of labels), or any origin at all.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorsOrigin {
    Any,
    /// Lower-cased. `wildcard`: the host is any name ending with `host`
    /// (`*.example.com` → `.example.com`, `*` alone → empty). `port: None`:
    /// the scheme's default port, written or not.
    Origin {
        scheme: String,
        host: String,
        wildcard: bool,
        port: Option<u16>,
    },
}

/// HTTPRoute rule timeouts. `Some(ZERO)` disables the timeout.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Timeouts {
    /// Whole request, gateway receipt to response (`timeouts.request`).
    pub request: Option<std::time::Duration>,
    /// One request to a backend (`timeouts.backendRequest`).
    pub backend_request: Option<std::time::Duration>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightedBackend {
    /// `None`: the backendRef could not be resolved; its share gets HTTP 500.
    pub cluster: Option<String>,
    pub weight: u32,
    pub request_headers: HeaderMods,
    pub response_headers: HeaderMods,
    /// The backendRef this backend was compiled from (`None` for a backend
    /// the translator made, like a UDP weight split).
    pub origin: Option<Arc<BackendOrigin>>,
}

/// What a route's backendRef named, and why it did not resolve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendOrigin {
    /// `Service`, or `<group>/<kind>` for any other kind.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub port: Option<i32>,
    /// The ReferenceGrant that allows a reference to another namespace.
    pub grant: Option<ObjKey>,
    /// The reason and message when it did not resolve.
    pub problem: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewrite {
    Full(String),
    /// Replace the matched prefix (the route's `PathMatch::Prefix`).
    Prefix {
        matched: String,
        replacement: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rewrite {
    pub hostname: Option<String>,
    pub path: Option<PathRewrite>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub port: Option<u16>,
    pub path: Option<PathRewrite>,
    pub status_code: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Http1,
    /// HTTP/2 over cleartext (`appProtocol: kubernetes.io/h2c`).
    H2c,
}

/// One Service port (`<ns>/<svc>/<port>`), shared by every route using it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cluster {
    pub name: String,
    pub service: ObjKey,
    pub port: u16,
    /// Name of the Service port (EndpointSlice ports are matched by it).
    pub port_name: String,
    pub protocol: UpstreamProtocol,
    pub endpoints: Vec<Endpoint>,
    /// A weighted split across Service ports (UDP: Envoy's UDP proxy sends a
    /// session to one cluster; HTTP session persistence: Envoy pins a session
    /// within one cluster; so weights become locality weights of one
    /// cluster). Empty for a plain Service port cluster.
    pub split: Vec<SplitMember>,
    /// TLS to the backend (a BackendTLSPolicy applies to this Service port).
    pub tls: Option<UpstreamTls>,
}

/// How Envoy originates TLS to a backend: from the BackendTLSPolicy that
/// applies to the Service port, and the Gateway's client certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    /// The BackendTLSPolicy this comes from.
    pub policy: ObjKey,
    /// SNI sent to the backend (`validation.hostname`).
    pub sni: String,
    pub trusted_ca: TrustedCa,
    /// The backend's certificate must carry one of these (never empty: the
    /// translator puts `hostname` here when the policy names no SAN).
    pub subject_alt_names: Vec<SubjectAltName>,
    /// SDS secret of the Gateway's client certificate
    /// (`spec.tls.backend.clientCertificateRef`), if any.
    pub client_certificate: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustedCa {
    /// PEM bundle from the policy's `caCertificateRefs`.
    Pem(String),
    /// A CA bundle file on the Envoy host (`wellKnownCACertificates: System`).
    File(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectAltName {
    Dns(String),
    Uri(String),
}

/// One backend of a weight-split cluster: its endpoints form one locality.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SplitMember {
    pub service: ObjKey,
    pub port_name: String,
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
}

/// How a terminating chain checks client certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientValidation {
    /// SDS secret (a [`ClientCa`]) holding the trusted CA bundle.
    pub ca: String,
    /// `AllowInsecureFallback`: a missing or untrusted client certificate
    /// is accepted (else the handshake fails without a trusted one).
    pub insecure_fallback: bool,
}

/// A CA bundle served as an SDS validation-context secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientCa {
    pub name: String,
    pub pem: String,
}

#[derive(Clone, PartialEq, Serialize)]
pub struct TlsCertificate {
    pub name: String,
    pub certificate_chain: String,
    #[serde(skip)]
    pub private_key: String,
}

impl std::fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Stable resource names.
pub mod names {
    use crate::inputs::ObjKey;

    pub fn cluster(service: &ObjKey, port: u16) -> String {
        format!("{}/{}/{}", service.namespace, service.name, port)
    }
    /// A Service port's cluster for UDP (`<ns>/<service>/<port>/udp`).
    pub fn udp_cluster(service: &ObjKey, port: u16) -> String {
        format!("{}/udp", cluster(service, port))
    }
    pub fn listener(gateway: &ObjKey, port: u16) -> String {
        format!("{}/{}/{}", gateway.namespace, gateway.name, port)
    }
    pub fn udp_listener(gateway: &ObjKey, port: u16) -> String {
        format!("{}/{}/{}/udp", gateway.namespace, gateway.name, port)
    }
    /// The weight-split cluster of one UDP route rule on one listener.
    pub fn split_cluster(route: &ObjKey, rule: usize) -> String {
        format!("udproute/{}/{}/{}", route.namespace, route.name, rule)
    }
    /// The cluster of one HTTPRoute/GRPCRoute rule with session persistence
    /// that splits across several backends (one locality per backend).
    pub fn session_split_cluster(kind: &str, route: &ObjKey, rule: usize) -> String {
        format!(
            "{}/{}/{}/{}/session",
            kind.to_ascii_lowercase(),
            route.namespace,
            route.name,
            rule
        )
    }
    pub fn http_route_config(gateway: &ObjKey, port: u16) -> String {
        listener(gateway, port)
    }
    pub fn https_route_config(gateway: &ObjKey, port: u16, section: &str) -> String {
        format!(
            "{}/{}/{}/{}",
            gateway.namespace, gateway.name, port, section
        )
    }
    pub fn secret(secret: &ObjKey) -> String {
        format!("{}/{}", secret.namespace, secret.name)
    }
    /// The client CA bundle of one `spec.tls.frontend` entry of a Gateway
    /// (`default`, or the port of a `perPort` entry). Object names have no
    /// `/`, so it never collides with a Secret's name.
    pub fn client_ca(gateway: &ObjKey, entry: &str) -> String {
        format!("{}/{}/client-ca/{}", gateway.namespace, gateway.name, entry)
    }
}
