//! Kubernetes watches → changes on one channel.
//!
//! Every kind is watched untyped (`DynamicObject`) and decoded through
//! [`crate::inputs::Inputs::insert_value`], so fields newer than our typed
//! model are detected exactly as in standalone mode. Kinds whose CRD is not
//! installed are reported and picked up when they appear (rediscovery).
//! What is watched, at which version and with which field selector comes
//! from the table of kinds ([`crate::kinds::KINDS`]).

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::discovery::Discovery;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::kinds::{self, Kind, KindInfo};

/// Retry delays of a failed watch: 250 ms doubling to at most 4 s, with
/// up to 25% jitter so replicas do not retry in step. (kube's default grows
/// to 30 s: after an API server outage the controller would see changes up
/// to 30 s late.) A watch that works again starts over from 250 ms.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    seed: u64,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(250);
    pub const MAX: Duration = Duration::from_secs(4);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1)
            | 1;
        WatchBackoff {
            next: Self::FIRST,
            seed,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        // xorshift: cheap jitter, no dependency.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let jitter = base.mul_f64((self.seed % 1000) as f64 / 4000.0);
        Some(base - jitter)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// One change from the API server.
#[derive(Debug)]
pub enum Change {
    Applied(Kind, serde_json::Value),
    Deleted(Kind, serde_json::Value),
    /// A (re-)list finished: these are all the objects of the kind now.
    Relisted(Kind, Vec<serde_json::Value>),
    /// The set of kinds that cannot be watched (CRD missing) changed.
    MissingKinds(Vec<String>),
    /// The `bundle-version` annotation of the installed Gateway API CRDs.
    BundleVersion(Option<String>),
    /// A kind is now watched at this API resource (group/version/plural).
    Watching(Kind, ApiResource),
}

fn to_value(kind: Kind, ar: &ApiResource, obj: DynamicObject) -> Option<serde_json::Value> {
    let mut v = serde_json::to_value(obj).ok()?;
    if let Some(m) = v.as_object_mut() {
        // Watch events carry no type meta for some clients; make it explicit.
        m.insert("apiVersion".into(), ar.api_version.clone().into());
        m.insert("kind".into(), kind.as_str().into());
        if let Some(meta) = m.get_mut("metadata").and_then(|x| x.as_object_mut()) {
            // managedFields are large and never read.
            meta.remove("managedFields");
        }
    }
    Some(v)
}

/// Where a kind is served: the table's version when the API server serves
/// it, else the group's preferred version. `None`: not installed.
fn find_resource(discovery: &Discovery, info: &KindInfo) -> Option<ApiResource> {
    let group = discovery.get(info.group)?;
    group
        .versioned_resources(info.version)
        .into_iter()
        .find(|(ar, _)| ar.kind == info.name)
        .or_else(|| group.recommended_kind(info.name))
        .map(|(ar, _caps)| ar)
}

/// Runs forever: discovers kinds, watches the available ones, rediscovers
/// every `rediscover` to pick up CRDs installed later.
pub async fn run(client: Client, tx: mpsc::Sender<Change>, rediscover: Duration) {
    let mut watching: BTreeSet<Kind> = BTreeSet::new();
    let mut last_missing: Option<Vec<String>> = None;
    let mut last_bundle: Option<Option<String>> = None;
    loop {
        let discovery = tokio::time::timeout(
            Duration::from_secs(30),
            Discovery::new(client.clone())
                .filter(&kinds::groups())
                .run(),
        )
        .await
        .unwrap_or_else(|_| Err(kube::Error::Service("API discovery timed out".into())));
        match discovery {
            Ok(discovery) => {
                let mut missing = Vec::new();
                for info in kinds::all() {
                    if watching.contains(&info.kind) {
                        continue;
                    }
                    match find_resource(&discovery, info) {
                        Some(ar) => {
                            info!(kind = info.name, version = %ar.version, "watching");
                            watching.insert(info.kind);
                            let _ = tx.send(Change::Watching(info.kind, ar.clone())).await;
                            tokio::spawn(watch_kind(
                                client.clone(),
                                info.kind,
                                ar,
                                info.watch_fields,
                                tx.clone(),
                            ));
                        }
                        None => missing.push(info.name.to_string()),
                    }
                }
                // The bundle version before the missing kinds: the latter ends
                // discovery, and a first translation without the version would
                // write a GatewayClass status that is rewritten a moment later.
                // A failed read (API server gone between discovery and
                // here) keeps what we know: reporting "no version" would
                // rewrite the GatewayClass status twice for nothing.
                match bundle_version(&client).await {
                    Ok(bundle) if last_bundle.as_ref() != Some(&bundle) => {
                        let _ = tx.send(Change::BundleVersion(bundle.clone())).await;
                        last_bundle = Some(bundle);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!("reading the Gateway CRD's bundle version failed (will retry): {e}")
                    }
                }
                if last_missing.as_ref() != Some(&missing) {
                    if !missing.is_empty() {
                        warn!(kinds = ?missing, "Gateway API kinds not installed in this cluster; they will be picked up when their CRDs appear");
                    }
                    crate::metrics::catalogue::MISSING_KINDS.set([], missing.len() as f64);
                    let _ = tx.send(Change::MissingKinds(missing.clone())).await;
                    last_missing = Some(missing);
                }
            }
            Err(e) => warn!("API discovery failed (will retry): {e}"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(rediscover).await;
    }
}

/// `gateway.networking.k8s.io/bundle-version` of the Gateway CRD (`None`:
/// no CRD or no annotation); an error when the API server did not answer.
async fn bundle_version(client: &Client) -> Result<Option<String>, kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let gw = Kind::Gateway.info();
    let crd = tokio::time::timeout(
        Duration::from_secs(10),
        api.get_opt(&format!("{}.{}", gw.plural, gw.group)),
    )
    .await
    .map_err(|_| kube::Error::Service("timed out".into()))??;
    Ok(crd.and_then(|crd| {
        crd.metadata
            .annotations?
            .get("gateway.networking.k8s.io/bundle-version")
            .cloned()
    }))
}

async fn watch_kind(
    client: Client,
    kind: Kind,
    ar: ApiResource,
    field_selector: Option<&'static str>,
    tx: mpsc::Sender<Change>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut cfg = watcher::Config::default();
    if let Some(fs) = field_selector {
        cfg = cfg.fields(fs);
    }
    let mut stream = watcher::watcher(api, cfg)
        .backoff(WatchBackoff::default())
        .boxed();
    let mut relist: Option<Vec<serde_json::Value>> = None;
    while let Some(ev) = stream.next().await {
        let change = match ev {
            Ok(Event::Apply(o)) => to_value(kind, &ar, o).map(|v| Change::Applied(kind, v)),
            Ok(Event::Delete(o)) => to_value(kind, &ar, o).map(|v| Change::Deleted(kind, v)),
            Ok(Event::Init) => {
                relist = Some(Vec::new());
                None
            }
            Ok(Event::InitApply(o)) => {
                if let (Some(list), Some(v)) = (relist.as_mut(), to_value(kind, &ar, o)) {
                    list.push(v);
                }
                None
            }
            Ok(Event::InitDone) => relist.take().map(|l| Change::Relisted(kind, l)),
            Err(e) => {
                warn!(
                    kind = kind.as_str(),
                    "watch error (retrying with backoff): {e}"
                );
                crate::metrics::catalogue::WATCH_ERRORS.inc([kind.as_str()]);
                None
            }
        };
        if let Some(c) = change {
            debug!(kind = kind.as_str(), "change");
            if tx.send(c).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn watch_retries_back_off_to_four_seconds_and_start_over_after_a_reset() {
        let mut b = WatchBackoff::default();
        let delays: Vec<Duration> = b.by_ref().take(12).collect();
        assert!(delays[0] <= Duration::from_millis(250) && delays[0] >= Duration::from_millis(187));
        assert!(delays.iter().all(|d| *d <= WatchBackoff::MAX), "{delays:?}");
        assert!(delays[11] >= WatchBackoff::MAX.mul_f64(0.75), "{delays:?}");
        // The sum of the first few stays small: an outage is noticed over quickly.
        assert!(delays[..5].iter().sum::<Duration>() < Duration::from_secs(8));
        b.reset();
        assert!(b.next().is_some_and(|d| d <= Duration::from_millis(250)));
    }
}
