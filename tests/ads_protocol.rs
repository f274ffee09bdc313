//! ADS protocol tests: a real tonic server on 127.0.0.1:0, driven by the
//! generated tonic client with real Envoy messages, behaving like Envoy
//! (CDS, then EDS, SDS, LDS, RDS; ACK with the latest nonce).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, Node, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, HttpConnectionManager, Rds,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{value::Kind, Any, ListValue, Struct, Value};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::{Message, Name};
use switchyard::xds::cache::{Cache, XdsEvent};
use switchyard::xds::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use switchyard::xds::{server, Resource, ResourceSet, Snapshot};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

// ---------------------------------------------------------------- resources

fn cluster(name: &str) -> Resource {
    let c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 2,
            nanos: 0,
        }),
        ..Default::default()
    };
    Resource::new(name, &c)
}

fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn cla(name: &str, ips: &[&str]) -> Resource {
    let lb_endpoints = ips
        .iter()
        .map(|ip| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket(ip, 8080)),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    let c = ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::new(name, &c)
}

fn listener(name: &str, port: u32, route_name: &str) -> Resource {
    let hcm = HttpConnectionManager {
        stat_prefix: name.into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: route_name.into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let l = Listener {
        name: name.into(),
        address: Some(socket("0.0.0.0", port)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(Any {
                    type_url: HttpConnectionManager::type_url(),
                    value: hcm.encode_to_vec(),
                })),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::new(name, &l)
}

fn route_config(name: &str, clusters: &[&str]) -> Resource {
    let routes = clusters
        .iter()
        .map(|c| Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix(format!("/{c}"))),
                ..Default::default()
            }),
            action: Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster((*c).into())),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    let r = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: name.into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    };
    Resource::new(name, &r)
}

fn tls_secret(name: &str) -> Resource {
    let s = Secret {
        name: name.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate::default())),
    };
    Resource::new(name, &s)
}

/// One Gateway: listeners (name, port, route), route configs (name,
/// clusters), with a cluster and CLA for every cluster a route names.
fn gateway(
    listeners: &[(&str, u32, &str)],
    routes: &[(&str, &[&str])],
    secrets: &[&str],
) -> ResourceSet {
    let mut set = ResourceSet::default();
    for (name, port, rt) in listeners {
        set.insert(LISTENER, listener(name, *port, rt));
    }
    for (name, clusters) in routes {
        set.insert(ROUTE, route_config(name, clusters));
        for c in *clusters {
            set.insert(CLUSTER, cluster(c));
            set.insert(ENDPOINT, cla(c, &["10.0.0.1"]));
        }
    }
    for s in secrets {
        set.insert(SECRET, tls_secret(s));
    }
    set
}

fn snapshot(gws: Vec<(&str, ResourceSet)>) -> Snapshot {
    Snapshot {
        gateways: gws.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    }
}

/// The usual single-Gateway config: listener `l` on 8080 → route `r` →
/// the given clusters, plus secret `s`.
fn basic(clusters: &[&str]) -> Snapshot {
    snapshot(vec![(
        "ns/gw",
        gateway(&[("l", 8080, "r")], &[("r", clusters)], &["s"]),
    )])
}

// ------------------------------------------------------------------ harness

struct Harness {
    cache: Arc<Cache>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start() -> Harness {
    let cache = Cache::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(cache.clone(), listener, None, async {
        let _ = rx.await;
    }));
    Harness {
        cache,
        addr,
        stop: Some(tx),
        task,
    }
}

fn node(id: &str, gateways: Option<Kind>) -> Node {
    let metadata = gateways.map(|k| Struct {
        fields: [("gateways".to_string(), Value { kind: Some(k) })]
            .into_iter()
            .collect(),
    });
    Node {
        id: id.into(),
        cluster: "test-cluster".into(),
        metadata,
        ..Default::default()
    }
}

async fn client(addr: SocketAddr) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    timeout(
        WAIT,
        AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// Envoy's `error_detail` on a NACK.
fn rejected(msg: &str) -> Option<RpcStatus> {
    Some(RpcStatus {
        code: 3,
        message: msg.into(),
        details: vec![],
    })
}

/// The name inside an encoded resource of a served type.
fn name_of(any: &Any) -> String {
    let v = any.value.as_slice();
    match any.type_url.as_str() {
        CLUSTER => Cluster::decode(v).expect("cluster").name,
        ENDPOINT => ClusterLoadAssignment::decode(v).expect("cla").cluster_name,
        LISTENER => Listener::decode(v).expect("listener").name,
        ROUTE => RouteConfiguration::decode(v).expect("route").name,
        SECRET => Secret::decode(v).expect("secret").name,
        other => panic!("unexpected type {other}"),
    }
}

fn names(r: &DiscoveryResponse) -> Vec<String> {
    let mut n: Vec<String> = r.resources.iter().map(name_of).collect();
    n.sort();
    n
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Polls `cond` until it holds (or fails the test).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: Option<Node>,
}

impl Sotw {
    async fn connect(addr: SocketAddr, node: Node) -> Sotw {
        let (tx, rx) = mpsc::channel(64);
        let resp = timeout(
            WAIT,
            client(addr)
                .await
                .stream_aggregated_resources(ReceiverStream::new(rx)),
        )
        .await
        .expect("stream in time")
        .expect("stream");
        Sotw {
            tx,
            rx: resp.into_inner(),
            node: Some(node),
        }
    }

    /// Sends a request; the node goes with the first one only (as Envoy does).
    async fn send(&mut self, t: &str, names: &[&str], nonce: &str, error: Option<RpcStatus>) {
        let req = DiscoveryRequest {
            node: self.node.take(),
            type_url: t.into(),
            resource_names: strs(names),
            response_nonce: nonce.into(),
            error_detail: error,
            ..Default::default()
        };
        self.tx.send(req).await.expect("send request");
    }

    async fn request(&mut self, t: &str, names: &[&str]) {
        self.send(t, names, "", None).await
    }

    async fn ack(&mut self, r: &DiscoveryResponse, names: &[&str]) {
        self.send(&r.type_url, names, &r.nonce, None).await
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("a healthy stream")
            .expect("an open stream")
    }

    async fn recv_type(&mut self, t: &str) -> DiscoveryResponse {
        let r = self.recv().await;
        assert_eq!(
            r.type_url,
            t,
            "unexpected response {:?} ({:?})",
            r.type_url,
            names(&r)
        );
        r
    }

    async fn quiet(&mut self) {
        if let Ok(m) = timeout(QUIET, self.rx.message()).await {
            let m = m.map(|o| o.map(|r| (r.type_url.clone(), names(&r), r.version_info)));
            panic!("expected no message, got {m:?}");
        }
    }

    /// Subscribes like Envoy (CDS, EDS, SDS, LDS, RDS), ACKing each
    /// response; returns them by type.
    async fn sync(
        &mut self,
        eds: &[&str],
        sds: &[&str],
        rds: &[&str],
    ) -> BTreeMap<&'static str, DiscoveryResponse> {
        let mut out = BTreeMap::new();
        for (t, names) in [
            (CLUSTER, &[][..]),
            (ENDPOINT, eds),
            (SECRET, sds),
            (LISTENER, &[][..]),
            (ROUTE, rds),
        ] {
            self.request(t, names).await;
            let r = self.recv_type(t).await;
            self.ack(&r, names).await;
            out.insert(t, r);
        }
        out
    }
}

struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    node: Option<Node>,
}

impl Delta {
    async fn connect(addr: SocketAddr, node: Node) -> Delta {
        let (tx, rx) = mpsc::channel(64);
        let resp = timeout(
            WAIT,
            client(addr)
                .await
                .delta_aggregated_resources(ReceiverStream::new(rx)),
        )
        .await
        .expect("stream in time")
        .expect("stream");
        Delta {
            tx,
            rx: resp.into_inner(),
            node: Some(node),
        }
    }

    async fn subscribe(&mut self, t: &str, names: &[&str], initial: &[(&str, &str)]) {
        let req = DeltaDiscoveryRequest {
            node: self.node.take(),
            type_url: t.into(),
            resource_names_subscribe: strs(names),
            initial_resource_versions: initial
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        self.tx.send(req).await.expect("send request");
    }

    async fn ack(&mut self, r: &DeltaDiscoveryResponse) {
        let req = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        self.tx.send(req).await.expect("send ack");
    }

    async fn recv_type(&mut self, t: &str) -> DeltaDiscoveryResponse {
        let r = timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("a healthy stream")
            .expect("an open stream");
        assert_eq!(
            r.type_url,
            t,
            "unexpected response {:?} (+{:?} -{:?})",
            r.type_url,
            dnames(&r),
            r.removed_resources
        );
        r
    }

    async fn quiet(&mut self) {
        if let Ok(m) = timeout(QUIET, self.rx.message()).await {
            let m = m.map(|o| o.map(|r| (r.type_url.clone(), dnames(&r), r.removed_resources)));
            panic!("expected no message, got {m:?}");
        }
    }

    /// Subscribes like Envoy and ACKs each response.
    async fn sync(&mut self, eds: &[&str], rds: &[&str]) {
        for (t, names) in [
            (CLUSTER, &[][..]),
            (ENDPOINT, eds),
            (LISTENER, &[][..]),
            (ROUTE, rds),
        ] {
            self.subscribe(t, names, &[]).await;
            let r = self.recv_type(t).await;
            self.ack(&r).await;
        }
    }
}

fn dnames(r: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut n: Vec<String> = r.resources.iter().map(|x| x.name.clone()).collect();
    n.sort();
    n
}

// -------------------------------------------------------------------- tests

#[tokio::test]
async fn sotw_initial_fetch_serves_all_five_types() {
    let h = start().await;
    let v = h.cache.set_snapshot(basic(&["a", "b"]));
    assert_eq!(v, 1);
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    let got = c.sync(&["a", "b"], &["s"], &["r"]).await;

    assert_eq!(
        names(&got[CLUSTER]),
        strs(&["a", "b"]),
        "CDS is the full set"
    );
    assert_eq!(names(&got[ENDPOINT]), strs(&["a", "b"]));
    assert_eq!(names(&got[SECRET]), strs(&["s"]));
    assert_eq!(names(&got[LISTENER]), strs(&["l"]));
    assert_eq!(names(&got[ROUTE]), strs(&["r"]));
    let mut nonces: Vec<&str> = got.values().map(|r| r.nonce.as_str()).collect();
    for r in got.values() {
        assert_eq!(r.version_info, "1", "{}", r.type_url);
        assert!(!r.nonce.is_empty());
        assert!(r.resources.iter().all(|a| a.type_url == r.type_url));
    }
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), 5, "a fresh nonce per response");

    // The encoded resource is the one the cache was given.
    let l = Listener::decode(got[LISTENER].resources[0].value.as_slice()).expect("listener");
    assert_eq!(l.address, Some(socket("0.0.0.0", 8080)));

    eventually("node registered with id and cluster", || {
        h.cache
            .node_states()
            .iter()
            .any(|n| n.node_id == "envoy-1" && n.cluster == "test-cluster")
    })
    .await;

    // EDS (like RDS and SDS) answers with the names asked for.
    c.send(ENDPOINT, &["a"], &got[ENDPOINT].nonce, None).await;
    let eds = c.recv_type(ENDPOINT).await;
    assert_eq!(names(&eds), strs(&["a"]));
}

#[tokio::test]
async fn ack_is_recorded_and_nothing_is_resent() {
    let h = start().await;
    h.cache.set_snapshot(basic(&["a"]));
    let mut events = h.cache.subscribe_events();
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    let got = c.sync(&["a"], &["s"], &["r"]).await;
    c.quiet().await;

    eventually("every type ACKed", || h.cache.acked_everywhere(1)).await;
    assert!(!h.cache.acked_everywhere(2));
    let states = h.cache.node_states();
    assert_eq!(states.len(), 1);
    for t in [CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE] {
        let st = &states[0].types[t];
        assert_eq!(st.acked_version, 1, "{t}");
        assert_eq!(st.acked_nonce, got[t].nonce, "{t}");
        assert!(st.last_nack.is_none());
    }
    let mut acked = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let XdsEvent::Ack {
            node,
            type_url,
            version,
            ..
        } = ev
        {
            assert_eq!((node.as_str(), version), ("envoy-1", 1));
            acked.push(type_url);
        }
    }
    acked.sort();
    let mut want = strs(&[CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE]);
    want.sort();
    assert_eq!(acked, want);
}

#[tokio::test]
async fn nack_is_recorded_and_the_last_good_config_kept() {
    let h = start().await;
    h.cache.set_snapshot(basic(&["a"]));
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    c.sync(&["a"], &["s"], &["r"]).await;
    eventually("v1 acked", || h.cache.acked_everywhere(1)).await;

    // v2 moves the listener to a port Envoy "cannot bind".
    let bad = snapshot(vec![(
        "ns/gw",
        gateway(&[("l", 99999, "r")], &[("r", &["a"])], &["s"]),
    )]);
    assert_eq!(h.cache.set_snapshot(bad.clone()), 2);
    let lds = c.recv_type(LISTENER).await;
    assert_eq!(lds.version_info, "2");
    let before =
        switchyard::metrics::value("switchyard_xds_nacks_total", &[("type", "lds")]).unwrap_or(0.0);
    let mut events = h.cache.subscribe_events();
    c.send(LISTENER, &[], &lds.nonce, rejected("Invalid port 99999"))
        .await;

    let ev = timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(ev @ XdsEvent::Nack { .. }) => return ev,
                Ok(_) => continue,
                Err(e) => panic!("event stream: {e}"),
            }
        }
    })
    .await
    .expect("a NACK event");
    assert_eq!(
        ev,
        XdsEvent::Nack {
            node: "envoy-1".into(),
            type_url: LISTENER.into(),
            version: 2,
            error: "Invalid port 99999".into(),
            resource_names: strs(&["l"]),
        }
    );
    let states = h.cache.node_states();
    let lds_state = &states[0].types[LISTENER];
    let nack = lds_state.last_nack.as_ref().expect("NACK recorded");
    assert_eq!(
        (nack.version, nack.nonce.as_str(), nack.error.as_str()),
        (2, lds.nonce.as_str(), "Invalid port 99999")
    );
    assert_eq!(nack.resource_names, strs(&["l"]));
    assert_eq!(lds_state.acked_version, 1, "Envoy still runs v1 listeners");
    let after =
        switchyard::metrics::value("switchyard_xds_nacks_total", &[("type", "lds")]).unwrap_or(0.0);
    assert!(after >= before + 1.0, "nack metric {before} -> {after}");
    assert!(!h.cache.acked_everywhere(2));

    // No resend of the rejected config, not even for an identical rebuild.
    c.quiet().await;
    assert_eq!(h.cache.set_snapshot(bad), 2);
    c.quiet().await;

    // A fixed snapshot goes out, and its ACK makes v3 programmed.
    let good = snapshot(vec![(
        "ns/gw",
        gateway(&[("l", 8081, "r")], &[("r", &["a"])], &["s"]),
    )]);
    assert_eq!(h.cache.set_snapshot(good), 3);
    let lds = c.recv_type(LISTENER).await;
    assert_eq!(lds.version_info, "3");
    let l = Listener::decode(lds.resources[0].value.as_slice()).expect("listener");
    assert_eq!(l.address, Some(socket("0.0.0.0", 8081)));
    c.ack(&lds, &[]).await;
    eventually("v3 acked everywhere", || h.cache.acked_everywhere(3)).await;
    c.quiet().await;
}

#[tokio::test]
async fn stale_nonce_is_ignored() {
    let h = start().await;
    h.cache.set_snapshot(basic(&["a"]));
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    c.request(CLUSTER, &[]).await;
    let first = c.recv_type(CLUSTER).await;
    h.cache.set_snapshot(basic(&["a", "b"]));
    let second = c.recv_type(CLUSTER).await;
    assert_eq!(names(&second), strs(&["a", "b"]));
    assert_ne!(first.nonce, second.nonce);

    // A NACK of the superseded response: neither recorded nor answered.
    c.send(CLUSTER, &[], &first.nonce, rejected("old news"))
        .await;
    c.quiet().await;
    let st = h.cache.node_states();
    assert!(
        st[0].types[CLUSTER].last_nack.is_none(),
        "stale NACK must be ignored"
    );
    assert_eq!(st[0].types[CLUSTER].acked_version, 0);

    // The ACK of the latest one counts.
    c.ack(&second, &[]).await;
    eventually("latest nonce ACKed", || {
        h.cache.node_states()[0].types[CLUSTER].acked_version == 2
    })
    .await;
    c.quiet().await;
}

#[tokio::test]
async fn sotw_removal_drops_listener_then_cluster() {
    let h = start().await;
    let two = gateway(
        &[("l1", 8080, "r1"), ("l2", 8081, "r2")],
        &[("r1", &["a"]), ("r2", &["b"])],
        &[],
    );
    h.cache.set_snapshot(snapshot(vec![("ns/gw", two)]));
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    let got = c.sync(&["a", "b"], &[], &["r1", "r2"]).await;
    assert_eq!(names(&got[CLUSTER]), strs(&["a", "b"]));
    assert_eq!(names(&got[LISTENER]), strs(&["l1", "l2"]));

    // v2 deletes l2, its route and its cluster.
    let one = gateway(&[("l1", 8080, "r1")], &[("r1", &["a"])], &[]);
    h.cache.set_snapshot(snapshot(vec![("ns/gw", one)]));
    let lds = c.recv_type(LISTENER).await;
    assert_eq!(names(&lds), strs(&["l1"]), "absent from LDS = deleted");
    c.quiet().await; // the cluster stays until the listener change is ACKed

    c.ack(&lds, &[]).await;
    let cds = c.recv_type(CLUSTER).await;
    assert_eq!(names(&cds), strs(&["a"]), "absent from CDS = deleted");
    let eds = c.recv_type(ENDPOINT).await;
    assert_eq!(names(&eds), strs(&["a"]));
    c.quiet().await; // routes wait while clusters change
    c.ack(&cds, &[]).await;
    c.ack(&eds, &["a"]).await;
    let rds = c.recv_type(ROUTE).await;
    assert_eq!(names(&rds), strs(&["r1"]));
    c.ack(&rds, &["r1"]).await;
    c.quiet().await;
    eventually("v2 acked", || h.cache.acked_everywhere(2)).await;
}

#[tokio::test]
async fn make_before_break_sotw() {
    let h = start().await;
    h.cache.set_snapshot(basic(&["a", "b"]));
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    let got = c.sync(&["a", "b"], &["s"], &["r"]).await;
    let eds_nonce = got[ENDPOINT].nonce.clone();

    // v2: the route moves from b to c; b is deleted.
    assert_eq!(h.cache.set_snapshot(basic(&["a", "c"])), 2);
    let cds = c.recv_type(CLUSTER).await;
    assert_eq!(
        names(&cds),
        strs(&["a", "b", "c"]),
        "first CDS after the change is old ∪ new"
    );
    assert_eq!(cds.version_info, "2");
    c.quiet().await; // routes must not name c while it warms

    // Envoy asks for c's endpoints while c warms, and ACKs CDS once warm.
    c.send(ENDPOINT, &["a", "b", "c"], &eds_nonce, None).await;
    let eds = c.recv_type(ENDPOINT).await;
    assert_eq!(
        names(&eds),
        strs(&["a", "b", "c"]),
        "b's endpoints stay while b does"
    );
    c.quiet().await;
    c.ack(&eds, &["a", "b", "c"]).await;
    c.ack(&cds, &[]).await;
    let rds = c.recv_type(ROUTE).await;
    let rc = RouteConfiguration::decode(rds.resources[0].value.as_slice()).expect("route");
    let targets: Vec<String> = rc.virtual_hosts[0]
        .routes
        .iter()
        .filter_map(|r| match &r.action {
            Some(route::Action::Route(RouteAction {
                cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c)),
                ..
            })) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(targets, strs(&["a", "c"]));
    c.quiet().await; // b stays until the routes are ACKed

    c.ack(&rds, &["r"]).await;
    let cds2 = c.recv_type(CLUSTER).await;
    assert_eq!(
        names(&cds2),
        strs(&["a", "c"]),
        "b removed after the routes ACK"
    );
    assert_ne!(cds2.version_info, cds.version_info);
    let eds2 = c.recv_type(ENDPOINT).await;
    assert_eq!(names(&eds2), strs(&["a", "c"]));
    c.ack(&cds2, &[]).await;
    c.ack(&eds2, &["a", "c"]).await;
    c.quiet().await;
    eventually("v2 acked", || h.cache.acked_everywhere(2)).await;
}

#[tokio::test]
async fn endpoints_only_update_sends_only_eds() {
    let h = start().await;
    h.cache.set_snapshot(basic(&["a", "b"]));
    let mut full = Sotw::connect(h.addr, node("envoy-eds", None)).await;
    full.sync(&["a", "b"], &["s"], &["r"]).await;
    let mut no_eds = Sotw::connect(h.addr, node("envoy-no-eds", None)).await;
    no_eds.request(LISTENER, &[]).await;
    let lds = no_eds.recv_type(LISTENER).await;
    no_eds.ack(&lds, &[]).await;

    let mut m = BTreeMap::new();
    m.insert("a".to_string(), cla("a", &["10.0.0.7", "10.0.0.8"]));
    m.insert("b".to_string(), cla("b", &["10.0.0.1"])); // unchanged
    h.cache.set_endpoints(m.clone());
    let eds = full.recv_type(ENDPOINT).await;
    assert_eq!(names(&eds), strs(&["a", "b"]));
    assert_eq!(eds.version_info, "2");
    let a = eds
        .resources
        .iter()
        .map(|r| ClusterLoadAssignment::decode(r.value.as_slice()).expect("cla"));
    let a = a.into_iter().find(|c| c.cluster_name == "a").expect("a");
    assert_eq!(a.endpoints[0].lb_endpoints.len(), 2);
    full.ack(&eds, &["a", "b"]).await;
    full.quiet().await; // no CDS/LDS/RDS
    no_eds.quiet().await;

    // The same endpoints again: nothing at all.
    h.cache.set_endpoints(m);
    full.quiet().await;
}

#[tokio::test]
async fn identical_snapshot_pushes_nothing() {
    let h = start().await;
    let v = h.cache.set_snapshot(basic(&["a"]));
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    c.sync(&["a"], &["s"], &["r"]).await;
    let mut d = Delta::connect(h.addr, node("envoy-2", None)).await;
    d.sync(&["a"], &["r"]).await;
    let pushes = switchyard::metrics::value("switchyard_xds_pushes_total", &[("type", "cds")])
        .unwrap_or(0.0);
    assert!(pushes >= 2.0);

    assert_eq!(
        h.cache.set_snapshot(basic(&["a"])),
        v,
        "same content, same version"
    );
    c.quiet().await;
    d.quiet().await;
    eventually("still acked", || h.cache.acked_everywhere(v)).await;
}

#[tokio::test]
async fn node_metadata_selects_gateways() {
    let h = start().await;
    let a = gateway(&[("a/l", 8080, "a/r")], &[("a/r", &["svc-a"])], &[]);
    let b = gateway(&[("b/l", 8081, "b/r")], &[("b/r", &["svc-b"])], &[]);
    h.cache
        .set_snapshot(snapshot(vec![("ns/a", a.clone()), ("ns/b", b)]));

    let mut only_a = Sotw::connect(
        h.addr,
        node("only-a", Some(Kind::StringValue("ns/a".into()))),
    )
    .await;
    let list = ListValue {
        values: vec![Value {
            kind: Some(Kind::StringValue("ns/b".into())),
        }],
    };
    let mut only_b = Sotw::connect(h.addr, node("only-b", Some(Kind::ListValue(list)))).await;
    let mut both =
        Sotw::connect(h.addr, node("both", Some(Kind::StringValue(String::new())))).await;
    let mut lds = BTreeMap::new();
    for (id, c) in [("a", &mut only_a), ("b", &mut only_b), ("all", &mut both)] {
        c.request(CLUSTER, &[]).await;
        let cds = c.recv_type(CLUSTER).await;
        let clusters = names(&cds);
        let clusters: Vec<&str> = clusters.iter().map(String::as_str).collect();
        c.request(ENDPOINT, &clusters).await;
        let eds = c.recv_type(ENDPOINT).await;
        c.ack(&eds, &clusters).await;
        c.ack(&cds, &[]).await;
        c.request(LISTENER, &[]).await;
        let l = c.recv_type(LISTENER).await;
        c.ack(&l, &[]).await;
        lds.insert(id, (names(&cds), names(&l)));
    }
    assert_eq!(lds["a"], (strs(&["svc-a"]), strs(&["a/l"])));
    assert_eq!(lds["b"], (strs(&["svc-b"]), strs(&["b/l"])));
    assert_eq!(
        lds["all"],
        (strs(&["svc-a", "svc-b"]), strs(&["a/l", "b/l"]))
    );
    let st = h.cache.node_states();
    let sel: BTreeMap<&str, &Vec<String>> = st
        .iter()
        .map(|n| (n.node_id.as_str(), &n.selection.requested))
        .collect();
    assert_eq!(sel["only-b"], &strs(&["ns/b"]));

    // A change to ns/b only reaches the nodes that serve it.
    let b2 = gateway(&[("b/l", 9091, "b/r")], &[("b/r", &["svc-b"])], &[]);
    h.cache
        .set_snapshot(snapshot(vec![("ns/a", a), ("ns/b", b2)]));
    assert_eq!(names(&only_b.recv_type(LISTENER).await), strs(&["b/l"]));
    assert_eq!(
        names(&both.recv_type(LISTENER).await),
        strs(&["a/l", "b/l"])
    );
    only_a.quiet().await;
}

#[tokio::test]
async fn reconnect_gets_current_state() {
    let h = start().await;
    h.cache.set_snapshot(basic(&["a"]));
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    c.sync(&["a"], &["s"], &["r"]).await;
    drop(c);
    eventually("disconnect noticed", || h.cache.node_states().is_empty()).await;

    assert_eq!(h.cache.set_snapshot(basic(&["a", "b"])), 2);
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    let got = c.sync(&["a", "b"], &["s"], &["r"]).await;
    assert_eq!(names(&got[CLUSTER]), strs(&["a", "b"]));
    assert_eq!(names(&got[ENDPOINT]), strs(&["a", "b"]));
    assert!(got.values().all(|r| r.version_info == "2"));
    let rc = RouteConfiguration::decode(got[ROUTE].resources[0].value.as_slice()).expect("route");
    assert_eq!(rc.virtual_hosts[0].routes.len(), 2);
    c.quiet().await;
    eventually("reconnected node acked v2", || h.cache.acked_everywhere(2)).await;
}

#[tokio::test]
async fn delta_initial_resource_versions_skip_unchanged() {
    let h = start().await;
    h.cache.set_snapshot(basic(&["a", "b"]));
    let mut d = Delta::connect(h.addr, node("envoy-d", None)).await;
    // Reconnecting Envoy: it has a (current), b (outdated) and z (gone).
    let a_version = cluster("a").version;
    d.subscribe(
        CLUSTER,
        &[],
        &[("a", &a_version), ("b", "outdated"), ("z", "whatever")],
    )
    .await;
    let cds = d.recv_type(CLUSTER).await;
    assert_eq!(dnames(&cds), strs(&["b"]), "a is current and not resent");
    assert_eq!(cds.resources[0].version, cluster("b").version);
    assert_eq!(cds.removed_resources, strs(&["z"]));
    assert_eq!(cds.system_version_info, "1");
    d.ack(&cds).await;

    // Everything already current: an empty answer, so Envoy does not wait.
    let cla_a = cla("a", &["10.0.0.1"]).version;
    d.subscribe(ENDPOINT, &["a"], &[("a", &cla_a)]).await;
    let eds = d.recv_type(ENDPOINT).await;
    assert!(eds.resources.is_empty() && eds.removed_resources.is_empty());
    d.ack(&eds).await;

    // Subscribing to b later sends b only; a name that does not exist is
    // reported as removed once.
    d.subscribe(ENDPOINT, &["b", "nope"], &[]).await;
    let eds = d.recv_type(ENDPOINT).await;
    assert_eq!(dnames(&eds), strs(&["b"]));
    assert_eq!(eds.removed_resources, strs(&["nope"]));
    d.ack(&eds).await;
    d.quiet().await;
    eventually("delta node acked", || h.cache.acked_everywhere(1)).await;
}

#[tokio::test]
async fn delta_removal_waits_for_route_ack() {
    let h = start().await;
    let two = gateway(
        &[("l1", 8080, "r1"), ("l2", 8081, "r2")],
        &[("r1", &["a"]), ("r2", &["b"])],
        &[],
    );
    h.cache.set_snapshot(snapshot(vec![("ns/gw", two)]));
    let mut d = Delta::connect(h.addr, node("envoy-d", None)).await;
    d.sync(&["a", "b"], &["r1", "r2"]).await;

    // v2: r1 now sends to c (new) instead of a; l2, r2 and b are gone.
    let next = gateway(&[("l1", 8080, "r1")], &[("r1", &["c"])], &[]);
    h.cache.set_snapshot(snapshot(vec![("ns/gw", next)]));
    let cds = d.recv_type(CLUSTER).await;
    assert_eq!(dnames(&cds), strs(&["c"]));
    assert!(
        cds.removed_resources.is_empty(),
        "no removal before the routes move away"
    );
    d.quiet().await; // listeners and routes wait for c to warm
    d.subscribe(ENDPOINT, &["c"], &[]).await;
    let eds = d.recv_type(ENDPOINT).await;
    assert_eq!(dnames(&eds), strs(&["c"]));
    assert!(eds.removed_resources.is_empty());
    d.ack(&eds).await;
    d.ack(&cds).await;

    let lds = d.recv_type(LISTENER).await;
    assert!(lds.resources.is_empty());
    assert_eq!(
        lds.removed_resources,
        strs(&["l2"]),
        "listeners are removed at once"
    );
    let rds = d.recv_type(ROUTE).await;
    assert_eq!(dnames(&rds), strs(&["r1"]));
    assert!(rds.removed_resources.is_empty(), "r2 waits for the LDS ACK");
    d.quiet().await;

    d.ack(&lds).await;
    let rds_rm = d.recv_type(ROUTE).await;
    assert_eq!(rds_rm.removed_resources, strs(&["r2"]));
    d.quiet().await; // clusters wait for the RDS ACK

    d.ack(&rds).await; // superseded by rds_rm: stale, ignored
    d.quiet().await;
    d.ack(&rds_rm).await;
    let cds_rm = d.recv_type(CLUSTER).await;
    assert!(cds_rm.resources.is_empty());
    assert_eq!(cds_rm.removed_resources, strs(&["a", "b"]));
    let eds_rm = d.recv_type(ENDPOINT).await;
    assert_eq!(eds_rm.removed_resources, strs(&["a", "b"]));
    d.ack(&cds_rm).await;
    d.ack(&eds_rm).await;
    d.quiet().await;
    eventually("v2 acked", || h.cache.acked_everywhere(2)).await;
}

#[tokio::test]
async fn delta_nack_keeps_last_good_and_reconnect_resumes() {
    let h = start().await;
    h.cache.set_snapshot(basic(&["a"]));
    let mut d = Delta::connect(h.addr, node("envoy-d", None)).await;
    d.sync(&["a"], &["r"]).await;

    h.cache.set_snapshot(basic(&["a", "b"]));
    let cds = d.recv_type(CLUSTER).await;
    assert_eq!(dnames(&cds), strs(&["b"]));
    d.quiet().await; // routes wait for the clusters
    d.tx.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        response_nonce: cds.nonce.clone(),
        error_detail: rejected("cluster b: bad config"),
        ..Default::default()
    })
    .await
    .expect("send nack");
    // A rejected cluster is not waited for: the routes go out.
    let rds = d.recv_type(ROUTE).await;
    d.ack(&rds).await;
    eventually("NACK recorded", || {
        h.cache.node_states()[0].types[CLUSTER]
            .last_nack
            .as_ref()
            .is_some_and(|n| n.resource_names == strs(&["b"]))
    })
    .await;
    d.quiet().await;
    assert!(!h.cache.acked_everywhere(2));

    // Reconnect with what Envoy really has (a only): b comes again.
    drop(d);
    eventually("disconnect noticed", || h.cache.node_states().is_empty()).await;
    let mut d = Delta::connect(h.addr, node("envoy-d", None)).await;
    d.subscribe(CLUSTER, &[], &[("a", &cluster("a").version)])
        .await;
    let cds = d.recv_type(CLUSTER).await;
    assert_eq!(dnames(&cds), strs(&["b"]));
    assert!(cds.removed_resources.is_empty());
    d.ack(&cds).await;
    eventually("reconnected node acked v2", || h.cache.acked_everywhere(2)).await;
}

#[tokio::test]
async fn shutdown_ends_streams_and_the_server() {
    let mut h = start().await;
    h.cache.set_snapshot(basic(&["a"]));
    let mut c = Sotw::connect(h.addr, node("envoy-1", None)).await;
    c.request(CLUSTER, &[]).await;
    c.recv_type(CLUSTER).await;
    if let Some(stop) = h.stop.take() {
        let _ = stop.send(());
    }
    let end = timeout(WAIT, c.rx.message())
        .await
        .expect("stream ends in time");
    match end {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable),
        Ok(None) => {}
        Ok(Some(r)) => panic!("unexpected response {r:?}"),
    }
    let res = timeout(WAIT, &mut h.task)
        .await
        .expect("server stops in time")
        .expect("join");
    assert!(res.is_ok(), "{res:?}");
    eventually("node gone", || h.cache.node_states().is_empty()).await;
}

#[tokio::test]
async fn nothing_is_answered_before_the_first_snapshot() {
    // A restarted control plane has not listed the API server yet; an Envoy
    // that reconnects meanwhile must keep what it serves (no removals).
    let h = start().await;
    let mut d = Delta::connect(h.addr, node("envoy-early", None)).await;
    let a_version = cluster("a").version;
    d.subscribe(CLUSTER, &[], &[("a", &a_version), ("b", "old")])
        .await;
    d.quiet().await;
    h.cache.set_snapshot(basic(&["a", "b"]));
    let cds = d.recv_type(CLUSTER).await;
    assert_eq!(dnames(&cds), strs(&["b"]), "a is current; b is updated");
    assert!(
        cds.removed_resources.is_empty(),
        "{:?}",
        cds.removed_resources
    );
    assert_eq!(cds.system_version_info, "1");
}

#[tokio::test]
async fn an_empty_first_snapshot_is_published() {
    let h = start().await;
    assert_eq!(h.cache.set_snapshot(Snapshot::default()), 1);
    assert_eq!(
        h.cache.set_snapshot(Snapshot::default()),
        1,
        "identical: no new version"
    );
    let mut d = Delta::connect(h.addr, node("envoy-empty", None)).await;
    d.subscribe(CLUSTER, &[], &[("gone", "1")]).await;
    let cds = d.recv_type(CLUSTER).await;
    assert_eq!(cds.removed_resources, strs(&["gone"]));
}
