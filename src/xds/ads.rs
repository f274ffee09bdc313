//! Aggregated Discovery Service: state-of-the-world and delta on one gRPC
//! server.
//!
//! Per stream, every resource type keeps what the node was last sent, the
//! nonce it still owes an answer for, and its subscription. Pushes follow
//! make-before-break:
//!
//! - types go out in `PUSH_ORDER` (CDS, EDS, SDS, LDS, RDS) with at most one
//!   unanswered response per stream, and a type is sent only when every
//!   earlier type is settled (answered, nothing left to send, EDS subscribed
//!   to every cluster), so a route never names a cluster that is warming;
//! - clusters, their endpoints and secrets that left the view stay until the
//!   node has ACKed listeners and routes that no longer use them.
//!
//! A NACK is logged with Envoy's message, counted and recorded; the node
//! keeps its last good config and the rejected content is not re-sent until
//! the snapshot changes.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as DeltaResource,
};
use envoy_types::pb::google::protobuf::Any;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::snapshot_cache::XdsEvent;
use super::snapshot_cache::{unix_now, Cache, Nack, NodeState, TypeState, View};
use super::type_url::{self, PUSH_ORDER};
use super::Resource;

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

/// Types whose default subscription is "everything" (the node gets all of them).
fn wildcard_type(t: &str) -> bool {
    t == type_url::LISTENER || t == type_url::CLUSTER
}

fn known_type(t: &str) -> Option<&'static str> {
    PUSH_ORDER.iter().copied().find(|k| *k == t)
}

fn short(t: &str) -> &'static str {
    match t {
        type_url::CLUSTER => "CDS",
        type_url::ENDPOINT => "EDS",
        type_url::LISTENER => "LDS",
        type_url::ROUTE => "RDS",
        type_url::SECRET => "SDS",
        _ => "other",
    }
}

fn to_any(r: &Resource) -> Any {
    Any {
        type_url: r.any.type_url.clone(),
        value: r.any.value.clone(),
    }
}

/// What a node was sent of one resource.
#[derive(Clone)]
struct Sent {
    version: String,
    /// Content (SotW keeps it to re-send a retained resource unchanged).
    resource: Option<Resource>,
}

#[derive(Default)]
struct TypeStream {
    requested: bool,
    /// Explicit subscription; `None` is the wildcard.
    names: Option<BTreeSet<String>>,
    sent: BTreeMap<String, Sent>,
    responded: bool,
    pending: Option<String>,
    /// Nonce of the latest response of this type.
    last_nonce: String,
    /// Version string of the pending response.
    pending_version: String,
    acked_version: String,
    last_nack: Option<Nack>,
}

/// The resources a type should hold now.
struct Plan {
    /// From the current view.
    want: BTreeMap<String, Resource>,
    /// Gone from the view but kept until listeners/routes stop naming them.
    retained: BTreeSet<String>,
}

impl Plan {
    /// Whether the node already holds exactly this.
    fn matches(&self, sent: &BTreeMap<String, Sent>) -> bool {
        sent.len() == self.want.len() + self.retained.len()
            && self
                .want
                .iter()
                .all(|(n, r)| sent.get(n).is_some_and(|s| s.version == r.version))
            && self.retained.iter().all(|n| sent.contains_key(n))
    }
}

/// Protocol-independent stream state.
struct StreamState {
    id: u64,
    node_id: String,
    cluster: String,
    gateways: Vec<String>,
    delta: bool,
    types: BTreeMap<&'static str, TypeStream>,
    nonce: u64,
    synced_version: u64,
}

/// One response to send.
struct Push {
    type_url: &'static str,
    nonce: String,
    version: String,
    resources: Vec<Resource>,
    removed: Vec<String>,
}

impl StreamState {
    fn new(delta: bool) -> Self {
        StreamState {
            id: STREAM_IDS.fetch_add(1, Ordering::Relaxed),
            node_id: String::new(),
            cluster: String::new(),
            gateways: Vec::new(),
            delta,
            types: BTreeMap::new(),
            nonce: 0,
            synced_version: 0,
        }
    }

    fn set_node(&mut self, node: Option<&Node>) {
        let Some(node) = node else { return };
        if !self.node_id.is_empty() {
            return;
        }
        self.node_id = node.id.clone();
        self.cluster = node.cluster.clone();
        self.gateways = gateways_from_metadata(node);
        info!(stream = self.id, node = %self.node_id, cluster = %self.cluster, gateways = ?self.gateways,
              protocol = if self.delta { "delta" } else { "sotw" }, "Envoy connected");
    }

    fn in_view<'v>(&self, t: &'static str, view: &'v View) -> BTreeMap<String, Resource> {
        let empty = BTreeMap::new();
        let all = view.get(t).unwrap_or(&empty);
        match self.types.get(t).and_then(|s| s.names.as_ref()) {
            None => all.clone(),
            Some(names) => names
                .iter()
                .filter_map(|n| all.get(n).map(|r| (n.clone(), r.clone())))
                .collect(),
        }
    }

    /// Listeners and routes are answered and hold exactly the view.
    fn users_settled(&self, view: &View) -> bool {
        [type_url::LISTENER, type_url::ROUTE]
            .into_iter()
            .all(|t| match self.types.get(t) {
                Some(ts) if ts.requested => {
                    ts.pending.is_none()
                        && Plan {
                            want: self.in_view(t, view),
                            retained: BTreeSet::new(),
                        }
                        .matches(&ts.sent)
                }
                _ => true,
            })
    }

    fn plan(&self, t: &'static str, view: &View, users_settled: bool) -> Plan {
        let want = self.in_view(t, view);
        let mut retained = BTreeSet::new();
        if !users_settled && matches!(t, type_url::CLUSTER | type_url::ENDPOINT | type_url::SECRET)
        {
            if let Some(ts) = self.types.get(t) {
                let subscribed = |n: &String| ts.names.as_ref().is_none_or(|s| s.contains(n));
                for (n, s) in &ts.sent {
                    // SotW re-sends the kept resource, so it needs its content.
                    if !want.contains_key(n)
                        && subscribed(n)
                        && (self.delta || s.resource.is_some())
                    {
                        retained.insert(n.clone());
                    }
                }
            }
        }
        Plan { want, retained }
    }

    /// Next response to send, if any. One response per type may be
    /// unanswered at a time. Endpoints follow clusters as soon as the
    /// clusters are sent (Envoy asks for them while the clusters warm, and
    /// may ACK the clusters only once warm); listeners and routes wait until
    /// clusters, endpoints and secrets are sent and answered.
    fn next_push(&mut self, version: u64, view: &View) -> Option<Push> {
        let users_settled = self.users_settled(view);
        let mut plans: BTreeMap<&'static str, Plan> = BTreeMap::new();
        for t in PUSH_ORDER {
            if self.types.get(t).is_some_and(|ts| ts.requested) {
                plans.insert(t, self.plan(t, view, users_settled));
            }
        }
        let sent_ok = |t: &'static str| match (self.types.get(t), plans.get(t)) {
            (Some(ts), Some(p)) => p.matches(&ts.sent) && ts.responded,
            _ => true,
        };
        let settled = |t: &'static str| match (self.types.get(t), plans.get(t)) {
            (Some(ts), Some(p)) => p.matches(&ts.sent) && ts.responded && ts.pending.is_none(),
            _ => true,
        };
        let warm = settled(type_url::CLUSTER)
            && settled(type_url::ENDPOINT)
            && settled(type_url::SECRET)
            && self.eds_covers_clusters();
        let mut all_settled = warm;
        for t in PUSH_ORDER {
            let Some(ts) = self.types.get(t) else {
                continue;
            };
            if !ts.requested {
                continue;
            }
            let Some(plan) = plans.get(t) else { continue };
            if !plan.retained.is_empty() || ts.pending.is_some() || !plan.matches(&ts.sent) {
                all_settled = false;
            }
            if ts.pending.is_some() {
                continue;
            }
            let allowed = match t {
                type_url::ENDPOINT => sent_ok(type_url::CLUSTER),
                type_url::LISTENER => warm,
                type_url::ROUTE => warm && sent_ok(type_url::LISTENER),
                _ => true,
            };
            if !allowed {
                continue;
            }
            let must_answer = !ts.responded && (wildcard_type(t) || !plan.want.is_empty());
            if plan.matches(&ts.sent) && !must_answer {
                continue;
            }
            let plan = plans.remove(t)?;
            return Some(self.make_push(t, version, plan));
        }
        if all_settled && users_settled {
            self.synced_version = version;
        }
        None
    }

    /// The EDS subscription includes every EDS cluster the node was sent.
    fn eds_covers_clusters(&self) -> bool {
        let Some(cds) = self.types.get(type_url::CLUSTER) else {
            return true;
        };
        if cds.sent.is_empty() {
            return true;
        }
        let Some(eds) = self.types.get(type_url::ENDPOINT) else {
            // Envoy asks for endpoints after it sees clusters; wait for that.
            return false;
        };
        match &eds.names {
            None => eds.requested,
            Some(names) => cds.sent.keys().all(|c| names.contains(c)),
        }
    }

    fn make_push(&mut self, t: &'static str, version: u64, plan: Plan) -> Push {
        self.nonce += 1;
        let nonce = format!("{}-{}", self.id, self.nonce);
        let version_s = version.to_string();
        let delta = self.delta;
        let ts = self.types.entry(t).or_default();
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        let mut new_sent: BTreeMap<String, Sent> = BTreeMap::new();
        for (n, r) in &plan.want {
            let changed = ts.sent.get(n).is_none_or(|s| s.version != r.version);
            if !delta || changed {
                resources.push(r.clone());
            }
            new_sent.insert(
                n.clone(),
                Sent {
                    version: r.version.clone(),
                    resource: Some(r.clone()),
                },
            );
        }
        for n in &plan.retained {
            if let Some(s) = ts.sent.get(n) {
                if !delta {
                    if let Some(r) = &s.resource {
                        resources.push(r.clone());
                    }
                }
                new_sent.insert(n.clone(), s.clone());
            }
        }
        if delta {
            removed = ts
                .sent
                .keys()
                .filter(|n| !new_sent.contains_key(*n))
                .cloned()
                .collect();
        }
        ts.sent = new_sent;
        ts.responded = true;
        ts.pending = Some(nonce.clone());
        ts.last_nonce = nonce.clone();
        ts.pending_version = version_s.clone();
        let bytes: usize = resources.iter().map(|r| r.any.value.len()).sum();
        crate::metrics::counter_add(
            "switchyard_xds_pushes_total",
            "xDS responses sent.",
            &[("type", short(t))],
            1,
        );
        crate::metrics::counter_add(
            "switchyard_xds_push_bytes_total",
            "Bytes of resources sent in xDS responses.",
            &[("type", short(t))],
            bytes as u64,
        );
        debug!(stream = self.id, node = %self.node_id, type_ = short(t), version, nonce = %nonce,
               resources = resources.len(), removed = removed.len(), bytes, "push");
        Push {
            type_url: t,
            nonce,
            version: version_s,
            resources,
            removed,
        }
    }

    /// Handles the ACK/NACK part of a request. Returns false for a stale nonce.
    fn answer(
        &mut self,
        cache: &Cache,
        t: &'static str,
        nonce: &str,
        version: &str,
        error: Option<String>,
    ) -> bool {
        let node = self.node_id.clone();
        let ts = self.types.entry(t).or_default();
        if nonce.is_empty() {
            return true;
        }
        if ts.last_nonce != nonce {
            debug!(
                stream = self.id,
                type_ = short(t),
                nonce,
                "stale nonce ignored"
            );
            return false;
        }
        if ts.pending.is_none() {
            // Already answered: a subscription change on the latest response.
            return true;
        }
        ts.pending = None;
        // Delta requests carry no version: the nonce names the response.
        let version = if version.is_empty() {
            ts.pending_version.clone()
        } else {
            version.to_string()
        };
        let version = version.as_str();
        match error {
            None => {
                ts.acked_version = version.to_string();
                cache.emit(XdsEvent::Ack {
                    node,
                    type_url: t.to_string(),
                    version: version.to_string(),
                });
            }
            Some(msg) => {
                let names: Vec<String> = ts.sent.keys().cloned().collect();
                warn!(node = %node, type_ = short(t), nonce, error = %msg,
                      "Envoy rejected configuration (NACK); it keeps its last good config");
                crate::metrics::counter_add(
                    "switchyard_xds_nacks_total",
                    "xDS responses rejected by Envoy.",
                    &[("type", short(t))],
                    1,
                );
                ts.last_nack = Some(Nack {
                    version: version.to_string(),
                    nonce: nonce.to_string(),
                    error: msg.clone(),
                    resource_names: names.clone(),
                    at_unix_secs: unix_now(),
                });
                cache.emit(XdsEvent::Nack {
                    node,
                    type_url: t.to_string(),
                    version: version.to_string(),
                    error: msg,
                    resource_names: names,
                });
            }
        }
        true
    }

    fn publish(&self, cache: &Cache) {
        let types = self
            .types
            .iter()
            .filter(|(_, ts)| ts.requested)
            .map(|(t, ts)| {
                (
                    t.to_string(),
                    TypeState {
                        acked_version: ts.acked_version.clone(),
                        pending_nonce: ts.pending.clone(),
                        resources: ts.sent.len(),
                        last_nack: ts.last_nack.clone(),
                    },
                )
            })
            .collect();
        cache.update_node(NodeState {
            stream_id: self.id,
            node_id: self.node_id.clone(),
            cluster: self.cluster.clone(),
            protocol: if self.delta { "delta" } else { "sotw" },
            gateways: self.gateways.clone(),
            synced_version: self.synced_version,
            types,
        });
    }
}

/// Node metadata `gateways`: "ns/a,ns/b" or a list of strings.
fn gateways_from_metadata(node: &Node) -> Vec<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let Some(md) = &node.metadata else {
        return Vec::new();
    };
    let Some(v) = md.fields.get("gateways") else {
        return Vec::new();
    };
    match &v.kind {
        Some(Kind::StringValue(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Some(Kind::ListValue(l)) => l
            .values
            .iter()
            .filter_map(|x| match &x.kind {
                Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A request, protocol-neutral.
enum Incoming {
    Sotw(DiscoveryRequest),
    Delta(DeltaDiscoveryRequest),
}

fn apply_request(st: &mut StreamState, cache: &Cache, req: Incoming) {
    match req {
        Incoming::Sotw(r) => {
            st.set_node(r.node.as_ref());
            let Some(t) = known_type(&r.type_url) else {
                warn!(node = %st.node_id, type_url = %r.type_url, "request for an unknown type ignored");
                return;
            };
            let error = r.error_detail.map(|e| e.message);
            if !st.answer(cache, t, &r.response_nonce, &r.version_info, error) {
                return;
            }
            let ts = st.types.entry(t).or_default();
            ts.requested = true;
            let names: BTreeSet<String> = r.resource_names.into_iter().collect();
            ts.names = if (wildcard_type(t) && names.is_empty()) || names.contains("*") {
                None
            } else {
                Some(names)
            };
            if let Some(names) = &ts.names {
                // SotW: the node drops what it no longer asks for.
                ts.sent.retain(|n, _| names.contains(n));
            }
        }
        Incoming::Delta(r) => {
            st.set_node(r.node.as_ref());
            let Some(t) = known_type(&r.type_url) else {
                warn!(node = %st.node_id, type_url = %r.type_url, "request for an unknown type ignored");
                return;
            };
            let error = r.error_detail.map(|e| e.message);
            // Subscription changes count even when the ACK part is stale.
            let _ = st.answer(cache, t, &r.response_nonce, "", error);
            let ts = st.types.entry(t).or_default();
            let first = !ts.requested;
            ts.requested = true;
            if first {
                for (n, v) in r.initial_resource_versions {
                    ts.sent.insert(
                        n,
                        Sent {
                            version: v,
                            resource: None,
                        },
                    );
                }
                if wildcard_type(t) && r.resource_names_subscribe.is_empty() {
                    ts.names = None;
                } else {
                    ts.names = Some(BTreeSet::new());
                }
            }
            for n in r.resource_names_subscribe {
                if n == "*" {
                    ts.names = None;
                } else if let Some(names) = ts.names.as_mut() {
                    names.insert(n);
                }
            }
            for n in r.resource_names_unsubscribe {
                if n == "*" {
                    if ts.names.is_none() {
                        ts.names = Some(BTreeSet::new());
                    }
                } else if let Some(names) = ts.names.as_mut() {
                    names.remove(&n);
                }
                ts.sent.remove(&n);
            }
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The tonic service.
pub struct Ads {
    cache: Arc<Cache>,
}

impl Ads {
    pub fn new(cache: Arc<Cache>) -> Self {
        Ads { cache }
    }
    pub fn into_server(self) -> AggregatedDiscoveryServiceServer<Ads> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(256 << 20)
    }
}

/// Drives one stream: requests in, pushes out, wakes on cache changes.
async fn run_stream<Req, Resp>(
    cache: Arc<Cache>,
    mut requests: Streaming<Req>,
    tx: mpsc::Sender<Result<Resp, Status>>,
    delta: bool,
    wrap: fn(Req) -> Incoming,
    render: fn(Push) -> Resp,
) where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let mut st = StreamState::new(delta);
    let mut changes = cache.subscribe();
    loop {
        tokio::select! {
            req = requests.next() => {
                match req {
                    Some(Ok(r)) => apply_request(&mut st, &cache, wrap(r)),
                    Some(Err(e)) => {
                        debug!(stream = st.id, node = %st.node_id, "stream error: {e}");
                        break;
                    }
                    None => break,
                }
            }
            r = changes.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
        let (version, view) = cache.view(&st.gateways);
        let mut closed = false;
        while let Some(push) = st.next_push(version, view.as_ref()) {
            if tx.send(Ok(render(push))).await.is_err() {
                closed = true;
                break;
            }
        }
        st.publish(&cache);
        if closed {
            break;
        }
    }
    cache.remove_node(st.id);
    info!(stream = st.id, node = %st.node_id, "Envoy disconnected");
}

fn render_sotw(p: Push) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: p.version,
        resources: p.resources.iter().map(to_any).collect(),
        type_url: p.type_url.to_string(),
        nonce: p.nonce,
        ..Default::default()
    }
}

fn render_delta(p: Push) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: p.version,
        resources: p
            .resources
            .iter()
            .map(|r| DeltaResource {
                name: r.name.clone(),
                version: r.version.clone(),
                resource: Some(to_any(r)),
                ..Default::default()
            })
            .collect(),
        type_url: p.type_url.to_string(),
        removed_resources: p.removed,
        nonce: p.nonce,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_stream(
            self.cache.clone(),
            request.into_inner(),
            tx,
            false,
            Incoming::Sotw,
            render_sotw,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_stream(
            self.cache.clone(),
            request.into_inner(),
            tx,
            true,
            Incoming::Delta,
            render_delta,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves ADS on `listener` until `shutdown` resolves.
pub async fn serve(
    cache: Arc<Cache>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(Ads::new(cache).into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
