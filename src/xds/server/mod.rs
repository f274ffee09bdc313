//! ADS over gRPC: state of the world (`StreamAggregatedResources`) and
//! incremental (`DeltaAggregatedResources`) on one tonic service.
//!
//! One task per stream. It waits on the request stream, on the cache's
//! full-snapshot watch and (only while the node subscribes to EDS) on the
//! endpoints watch; after each of those it *flushes*: for every subscribed
//! type, in [`type_url::PUSH_ORDER`], it compares what the node should have
//! with what it was last sent and pushes the difference.
//!
//! Make-before-break:
//! - Listeners and routes change only once clusters, endpoints and secrets
//!   have nothing in flight and the node's EDS subscription covers every
//!   cluster it was sent (Envoy asks for endpoints while new clusters warm,
//!   and may ACK the clusters only once warm), so no route names a cluster
//!   that is still warming.
//! - A cluster, endpoint set or secret that leaves the view (and, gated on
//!   LDS only, a route configuration) is still served until the node has
//!   ACKed LDS and RDS at the version that dropped it, with no LDS/RDS
//!   response in flight. Only then does a push remove it (absent from the
//!   SotW set, or in delta `removed_resources`).
//!
//! A NACK keeps the last good config: the rejected content counts as sent, so
//! it goes out again only once the snapshot changes it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as WireResource,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::cache::{self, Cache, Nack, NodeHandle, Protocol, Selection, TypeMap};
use super::tls::{PeerInfo, ServerTls};
use super::{type_url, Resource};

/// The ADS service. Build it with [`service`], or run it with [`serve`].
#[derive(Clone)]
pub struct Ads {
    cache: Arc<Cache>,
    stop: watch::Receiver<bool>,
}

/// The ADS service for embedding in a tonic router. Its streams end when
/// the server shuts down; use [`serve`] to also end them on a signal.
pub fn service(cache: Arc<Cache>) -> AggregatedDiscoveryServiceServer<Ads> {
    // The sender is dropped at once: `stopped` then never completes.
    let (_, stop) = watch::channel(false);
    AggregatedDiscoveryServiceServer::new(Ads { cache, stop })
}

/// Serves ADS on `listener` until `shutdown` completes; then every stream
/// ends with `UNAVAILABLE` (so Envoy reconnects elsewhere) and the server
/// returns.
///
/// With `tls`, clients must present a certificate from its CA, and each
/// receives only what the identity in its certificate entitles it to
/// ([`super::authz`]). Without, the port trusts what nodes say about
/// themselves: keep it on loopback.
pub async fn serve(
    cache: Arc<Cache>,
    listener: tokio::net::TcpListener,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().ok();
    let (stop_tx, stop) = watch::channel(false);
    let svc = AggregatedDiscoveryServiceServer::new(Ads { cache, stop });
    let secure = tls.is_some();
    let incoming = super::tls::incoming(listener, tls);
    let signal = async move {
        shutdown.await;
        info!("xDS server shutting down");
        let _ = stop_tx.send(true);
    };
    if secure {
        info!(addr = ?addr, "xDS server listening (mTLS; per-node authorization from client certificates)");
    } else {
        warn!(addr = ?addr, "xDS server listening WITHOUT TLS: any client that reaches this port can read every Gateway's configuration and private keys; keep it on loopback or pass the mTLS certificate directory");
    }
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, signal)
        .await
        .context("serving xDS")
}

type Outbox<T> = mpsc::Sender<Result<T, Status>>;
/// The response stream of an ADS call.
type Responses<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Responses<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Responses<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.open::<Sotw>(request)
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.open::<Delta>(request)
    }
}

impl Ads {
    /// Authorizes the stream and runs it on its own task.
    fn open<W: Wire>(
        &self,
        request: Request<Streaming<W::Req>>,
    ) -> Result<Response<Responses<W::Resp>>, Status> {
        let (peer, entitled) = authorize(&request)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(run_stream::<W>(
            self.cache.clone(),
            self.stop.clone(),
            request.into_inner(),
            tx,
            peer,
            entitled,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The peer's address and, on the mTLS port, its entitlement; refuses a
/// stream whose certificate names no Switchyard identity.
fn authorize<T>(
    request: &Request<T>,
) -> Result<(Option<SocketAddr>, Option<Arc<super::authz::Entitlement>>), Status> {
    let Some(info) = request.extensions().get::<PeerInfo>() else {
        // Embedded through `service()` in someone else's server: plaintext.
        return Ok((request.remote_addr(), None));
    };
    match &info.identity {
        None => Ok((info.addr, None)),
        Some(Ok(e)) => Ok((info.addr, Some(e.clone()))),
        Some(Err(why)) => Err(Status::permission_denied(format!(
            "xDS client not authorized: {why}"
        ))),
    }
}

/// Completes when the server stops (never, if the sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Inputs of one type's evaluation in a flush.
struct Step<'a> {
    t: &'a str,
    /// Global version of the state being served.
    version: u64,
    /// The node's view of the type.
    w: &'a TypeMap,
    /// Removals of resources that left the view at or before this version
    /// may go out (see [`Session::gate`]).
    gate: u64,
    /// A change must wait (listeners and routes while clusters warm).
    hold: bool,
    nonce: String,
}

enum Outcome<R> {
    /// The client has exactly what it should.
    Unchanged,
    /// Something differs but must wait.
    Held,
    Send(R),
}

/// What differs between the two protocols; the stream loop is shared.
trait Wire: Send + 'static {
    type Req: Message + Default + Send + 'static;
    type Resp: Message + Send + 'static;
    const PROTOCOL: Protocol;
    fn node(req: &Self::Req) -> Option<&Node>;
    fn on_request(s: &mut Session, req: Self::Req);
    /// The response that brings the client to `step.w` (the node's view of
    /// type `step.t`), unless it already has it or the push is held.
    fn build(st: &mut TypeState, step: Step<'_>) -> Outcome<Self::Resp>;
    /// (version, nonce, resources, removed) for logs.
    fn describe(resp: &Self::Resp) -> (&str, &str, usize, usize);
}

async fn run_stream<W: Wire>(
    cache: Arc<Cache>,
    stop: watch::Receiver<bool>,
    mut input: Streaming<W::Req>,
    tx: Outbox<W::Resp>,
    peer: Option<SocketAddr>,
    entitled: Option<Arc<super::authz::Entitlement>>,
) {
    let first = tokio::select! {
        m = input.next() => m,
        _ = stopped(stop.clone()) => return,
    };
    let first = match first {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            debug!(?peer, "xDS stream failed before its first request: {e}");
            return;
        }
        None => return,
    };
    let Some(node) = W::node(&first).cloned() else {
        warn!(?peer, protocol = ?W::PROTOCOL, "xDS stream without `node` in its first request; closing it");
        let _ = tx
            .send(Err(Status::invalid_argument(
                "the first request must carry `node`",
            )))
            .await;
        return;
    };
    let selection = Selection {
        requested: cache::requested_from_metadata(node.metadata.as_ref()),
        entitled,
    };
    let handle = cache.register(&node.id, &node.cluster, W::PROTOCOL, &selection);
    info!(
        node = %node.id, cluster = %node.cluster, protocol = ?W::PROTOCOL, ?peer,
        gateways = ?selection.requested, entitled = ?selection.entitled,
        "xDS stream connected"
    );
    let mut s = Session {
        node: node.id,
        cluster: node.cluster,
        selection,
        handle,
        types: BTreeMap::new(),
        nonce: 0,
        retry_at: None,
        retry_backoff: RETRY_FIRST,
    };
    let mut full = cache.watch_full();
    full.borrow_and_update();
    let mut eds = cache.watch_endpoints();
    eds.borrow_and_update();
    let stop = stopped(stop);
    tokio::pin!(stop);

    W::on_request(&mut s, first);
    let reason: String = loop {
        if s.flush::<W>(&cache, &tx).await.is_err() {
            break "client went away".into();
        }
        let watch_eds = s
            .types
            .get(type_url::ENDPOINT)
            .is_some_and(|t| t.subscribed);
        tokio::select! {
            m = input.next() => match m {
                Some(Ok(req)) => W::on_request(&mut s, req),
                Some(Err(e)) => break format!("stream error: {e}"),
                None => break "closed by client".into(),
            },
            r = full.changed() => if r.is_err() { break "cache dropped".into() },
            r = eds.changed(), if watch_eds => if r.is_err() { break "cache dropped".into() },
            _ = tokio::time::sleep_until(s.retry_at.unwrap_or_else(tokio::time::Instant::now)), if s.retry_at.is_some() => {
                s.retry_rejected();
            }
            _ = &mut stop => {
                let _ = tx.send(Err(Status::unavailable("control plane shutting down"))).await;
                break "server shutting down".into();
            }
            _ = tx.closed() => break "client went away".into(),
        }
    };
    info!(node = %s.node, cluster = %s.cluster, protocol = ?W::PROTOCOL, ?peer, %reason, "xDS stream disconnected");
}

/// Where a type's latest response stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Nothing sent yet.
    #[default]
    Idle,
    /// Sent, neither ACKed nor NACKed.
    Pending,
    Acked,
    Nacked,
}

/// A resource the client has, as far as we know. `res` is kept for SotW
/// (retained resources are sent again in the full set); delta only needs
/// the version, and versions from `initial_resource_versions` have no body.
#[derive(Debug)]
struct Held {
    version: String,
    res: Option<Arc<Resource>>,
}

/// Per-stream, per-type protocol state.
#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    /// All resources of the type (LDS/CDS in SotW always are).
    wildcard: bool,
    /// Explicitly subscribed names.
    names: BTreeSet<String>,
    /// What the client has, by name.
    have: BTreeMap<String, Held>,
    /// Resources kept after leaving the view (make-before-break), with the
    /// global version at which they left it.
    stale: BTreeMap<String, u64>,
    /// Delta: subscribed names already reported as absent.
    absent_told: BTreeSet<String>,
    /// Respond even if nothing changed (a (re)subscription asked for it).
    force: bool,
    phase: Phase,
    nonce: String,
    /// Global version the latest response was built from.
    sent_at: u64,
    /// Latest global version at which the latest response was still current.
    current_at: u64,
    /// Latest global version the node is known to run.
    acked_at: u64,
    /// Resources carried by the latest response (for NACK reports).
    sent_names: Vec<String>,
    /// Resources whose latest delivery was rejected (NACKed).
    rejected: BTreeSet<String>,
    /// Deliver `rejected` again (a rejection may be transient: a port
    /// briefly in use, a file not there yet).
    retry: bool,
    /// SotW `version_info` bookkeeping: (global version, suffix).
    last_vi: (u64, u32),
}

impl TypeState {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Records a response just built.
    fn sent(&mut self, nonce: String, version: u64, names: Vec<String>) {
        self.force = false;
        self.retry = false;
        self.phase = Phase::Pending;
        self.nonce = nonce;
        self.sent_at = version;
        self.current_at = version;
        for n in &names {
            self.rejected.remove(n);
        }
        self.sent_names = names;
    }

    /// Nothing to send at `version`; true when that moved `acked_at`.
    fn unchanged(&mut self, version: u64) -> bool {
        self.current_at = self.current_at.max(version);
        if self.phase == Phase::Acked && self.acked_at < version {
            self.acked_at = version;
            return true;
        }
        false
    }

    /// `version_info`: the global version; a second, different response at
    /// the same version (a deferred removal) gets a `.N` suffix.
    fn version_info(&mut self, version: u64) -> String {
        if self.last_vi.0 == version {
            self.last_vi.1 += 1;
            format!("{version}.{}", self.last_vi.1)
        } else {
            self.last_vi = (version, 0);
            version.to_string()
        }
    }
}

/// Whether a listener of the view routes through scopes: some sharded
/// table is served as shards only (a table between half the threshold and
/// the threshold is served both ways, its listener using the one table).
fn scopes_in_use(view: &cache::View) -> bool {
    let routes = view.get(type_url::ROUTE);
    view.get(type_url::SCOPED_ROUTE).keys().any(|n| {
        super::build::shard::parse_shard_name(n)
            .is_some_and(|(table, _, _)| !routes.contains_key(table))
    })
}

/// Types whose removal waits for LDS/RDS ACKs.
fn gates(t: &str) -> &'static [&'static str] {
    match t {
        type_url::CLUSTER | type_url::ENDPOINT | type_url::SECRET => {
            &[type_url::LISTENER, type_url::ROUTE]
        }
        // A shard's table goes once no scope (and no listener) names it;
        // scopes once no listener uses them.
        type_url::ROUTE => &[type_url::LISTENER, type_url::SCOPED_ROUTE],
        type_url::SCOPED_ROUTE => &[type_url::LISTENER],
        _ => &[],
    }
}

fn any(r: &Resource) -> Any {
    Any {
        type_url: r.any.type_url.clone(),
        value: r.any.value.clone(),
    }
}

struct Session {
    node: String,
    cluster: String,
    selection: Selection,
    handle: NodeHandle,
    types: BTreeMap<String, TypeState>,
    nonce: u64,
    /// When rejected resources go out again (see [`Session::retry_rejected`]).
    retry_at: Option<tokio::time::Instant>,
    retry_backoff: Duration,
}

/// First and longest wait before re-sending rejected resources.
const RETRY_FIRST: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(60);

impl Session {
    /// Handles the client's answer to our latest response for `t`.
    fn on_reply(&mut self, t: &str, error: Option<RpcStatus>) {
        let Some(st) = self.types.get_mut(t) else {
            return;
        };
        if st.phase != Phase::Pending {
            return; // a repeated ACK/NACK of the same response
        }
        match error {
            Some(e) => {
                st.phase = Phase::Nacked;
                st.rejected.extend(st.sent_names.iter().cloned());
                if self.retry_at.is_none() {
                    self.retry_at = Some(tokio::time::Instant::now() + self.retry_backoff);
                    self.retry_backoff = (self.retry_backoff * 2).min(RETRY_MAX);
                }
                warn!(
                    node = %self.node, cluster = %self.cluster, type_url = t, version = st.sent_at,
                    nonce = %st.nonce, resources = ?st.sent_names, error = %e.message,
                    "Envoy rejected an xDS response (NACK); it keeps its last good config"
                );
                self.handle.nacked(
                    t,
                    Nack {
                        version: st.sent_at,
                        nonce: st.nonce.clone(),
                        error: e.message,
                        resource_names: st.sent_names.clone(),
                        at_unix_ms: cache::now_unix_ms(),
                    },
                );
            }
            None => {
                st.phase = Phase::Acked;
                st.acked_at = st.acked_at.max(st.current_at);
                debug!(node = %self.node, type_url = t, version = st.acked_at, nonce = %st.nonce, "ACK");
                self.handle.acked(t, st.acked_at, &st.nonce);
                if self.types.values().all(|s| s.rejected.is_empty()) {
                    self.retry_backoff = RETRY_FIRST;
                }
            }
        }
    }

    /// Marks every rejected resource for delivery again. Envoy rejects a
    /// whole response for one listener whose port is briefly taken; sending
    /// it again later (backoff 2 s doubling to 60 s) heals that without a
    /// config change, and a resource that is really invalid is only
    /// reported again.
    fn retry_rejected(&mut self) {
        self.retry_at = None;
        for (t, st) in self
            .types
            .iter_mut()
            .filter(|(_, s)| !s.rejected.is_empty())
        {
            st.retry = true;
            info!(node = %self.node, type_url = %t, resources = ?st.rejected, "re-sending resources Envoy rejected");
            crate::metrics::catalogue::XDS_NACK_RETRIES.inc([cache::type_label(t)]);
        }
    }

    /// The type's state, creating it (and registering the subscription) on
    /// first use. Returns whether it was new.
    fn subscribe(&mut self, t: &str) -> (&mut TypeState, bool) {
        let new = !self.types.get(t).is_some_and(|s| s.subscribed);
        if new {
            self.handle.subscribed(t);
        }
        let st = self.types.entry(t.to_string()).or_default();
        st.subscribed = true;
        (st, new)
    }

    /// Highest "left the view at" version whose removal may go out now: the
    /// node runs LDS (and RDS) at that version or later, with nothing of
    /// theirs in flight. Gate types the node does not subscribe to do not
    /// hold removals back.
    fn gate(&self, t: &str) -> u64 {
        gates(t)
            .iter()
            .filter_map(|g| self.types.get(*g))
            .filter(|s| s.subscribed)
            .map(|s| match s.phase {
                Phase::Acked | Phase::Nacked => s.acked_at,
                Phase::Idle | Phase::Pending => 0,
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Whether listeners and routes may change: clusters, endpoints and
    /// secrets have nothing in flight (Envoy may ACK clusters only once they
    /// are warm) and the EDS subscription covers every cluster the node was
    /// sent that has endpoints in its view, so no route can name a cluster
    /// that is still warming. Rejected clusters are not waited for.
    fn warm(&self, view: &cache::View) -> bool {
        let settled = |t: &str| {
            self.types
                .get(t)
                .filter(|s| s.subscribed)
                .is_none_or(|s| matches!(s.phase, Phase::Acked | Phase::Nacked))
        };
        if !(settled(type_url::CLUSTER) && settled(type_url::ENDPOINT) && settled(type_url::SECRET))
        {
            return false;
        }
        let Some(cds) = self.types.get(type_url::CLUSTER).filter(|s| s.subscribed) else {
            return true;
        };
        let cla = view.get(type_url::ENDPOINT);
        let mut needed = cds
            .have
            .keys()
            .filter(|c| cla.contains_key(*c) && !cds.rejected.contains(*c));
        match self.types.get(type_url::ENDPOINT).filter(|s| s.subscribed) {
            Some(eds) => eds.wildcard || needed.all(|c| eds.names.contains(c)),
            // Envoy asks for endpoints once it sees clusters: wait for that.
            None => needed.next().is_none(),
        }
    }

    /// After a listener push: every scope goes out again (right after it, in
    /// push order). A listener that starts using scoped routes opens a new
    /// SRDS watch, and when Envoy already holds a wildcard SRDS subscription
    /// (or held one until a listener drained) it asks for nothing: the new
    /// watch is only fed by the next SRDS response, without which the
    /// listener waits out its initial fetch timeout and then serves with no
    /// scopes (measured: `e2e/tests/test_route_shards.py`). Scopes are small
    /// (256 of ~230 bytes per sharded table) and listener pushes rare.
    fn resend_scopes(&mut self) {
        if let Some(st) = self
            .types
            .get_mut(type_url::SCOPED_ROUTE)
            .filter(|s| s.subscribed)
        {
            for h in st.have.values_mut() {
                h.version.clear();
            }
            st.force = true;
        }
    }

    /// Subscribed types, in push order.
    fn order(&self) -> Vec<String> {
        let mut out: Vec<String> = type_url::PUSH_ORDER
            .iter()
            .filter(|t| self.types.contains_key(**t))
            .map(|t| t.to_string())
            .collect();
        out.extend(
            self.types
                .keys()
                .filter(|t| !type_url::PUSH_ORDER.contains(&t.as_str()))
                .cloned(),
        );
        out
    }

    /// Pushes whatever the node is missing. Repeats while a pass lets a
    /// gate open (an unchanged LDS/RDS counting as ACKed at the new version
    /// can release a deferred removal).
    async fn flush<W: Wire>(&mut self, cache: &Cache, tx: &Outbox<W::Resp>) -> Result<(), ()> {
        let state = cache.current();
        // Version 0: the control plane has not published its first snapshot
        // (e.g. a restarted controller still listing the API server). An
        // answer now would tell a reconnecting Envoy to drop what it serves.
        if state.version == 0 {
            return Ok(());
        }
        let view = state.view(&self.selection);
        for _ in 0..=self.types.len() {
            let mut progressed = false;
            for t in self.order() {
                let gate = self.gate(&t);
                let hold = matches!(
                    t.as_str(),
                    type_url::LISTENER | type_url::SCOPED_ROUTE | type_url::ROUTE
                ) && !self.warm(&view);
                let Some(st) = self.types.get_mut(&t) else {
                    continue;
                };
                if !st.subscribed {
                    continue;
                }
                let step = Step {
                    t: &t,
                    version: state.version,
                    w: view.get(&t),
                    gate,
                    hold,
                    nonce: (self.nonce + 1).to_string(),
                };
                let resp = match W::build(st, step) {
                    Outcome::Send(resp) => resp,
                    Outcome::Held => continue,
                    Outcome::Unchanged => {
                        if st.unchanged(state.version) {
                            self.handle.acked(&t, st.acked_at, &st.nonce);
                            progressed = true;
                        }
                        continue;
                    }
                };
                self.nonce += 1;
                let bytes = resp.encoded_len();
                let label = cache::type_label(&t);
                let (version, nonce, n, removed) = W::describe(&resp);
                debug!(
                    node = %self.node, type_url = %t, version, nonce, resources = n, removed, bytes,
                    "xDS push"
                );
                crate::metrics::catalogue::XDS_PUSHES.inc([label]);
                crate::metrics::catalogue::XDS_PUSH_BYTES.add([label], bytes as u64);
                tx.send(Ok(resp)).await.map_err(|_| ())?;
                if t == type_url::LISTENER {
                    self.resend_scopes();
                }
                if t == type_url::SCOPED_ROUTE && !scopes_in_use(&view) {
                    // No listener of the view uses scopes: once the last
                    // one drained, Envoy has no SRDS watch and leaves the
                    // response unanswered (measured). It carries nothing a
                    // request depends on, so it counts as applied.
                    self.on_reply(&t, None);
                }
            }
            if !progressed {
                break;
            }
        }
        Ok(())
    }
}

mod wire;
use wire::{Delta, Sotw};
