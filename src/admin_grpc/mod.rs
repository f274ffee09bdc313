//! The gRPC admin API `switchyard.admin.v1` (proto/switchyard/admin/v1/admin.proto),
//! served by standalone mode and the controller on `--admin-grpc-listen`.
//!
//! It reads the same sources as the HTTP debug views: the xDS cache (node
//! registry and the served resources), the model being served (explain)
//! and the status last computed. Private keys never leave the process:
//! every resource goes through [`crate::pipeline::redact`].

use std::sync::{Arc, Mutex};

use tonic::{Request, Response, Status};

use crate::engine::ModelHandle;
use crate::status::StatusSet;
use crate::xds::cache::Cache;

pub mod view;

/// Code generated from admin.proto by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("switchyard.admin.v1");
}

use pb::admin_service_server::{AdminService, AdminServiceServer};

/// The status last computed (with `Programmed` as the fleet reports it),
/// for `GetStatus`. Cloning the handle is cheap.
#[derive(Clone, Default)]
pub struct StatusHandle(Arc<Mutex<Arc<StatusSet>>>);

impl StatusHandle {
    pub fn get(&self) -> Arc<StatusSet> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    pub fn set(&self, s: StatusSet) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }
}

/// What the admin service answers from.
#[derive(Clone)]
pub struct AdminState {
    pub cache: Arc<Cache>,
    pub model: ModelHandle,
    pub status: StatusHandle,
    /// The GatewayClass controllerName this instance acts for (the default
    /// of `Translate`).
    pub controller_name: String,
}

/// Largest request or response message (a `GetNodeConfig` of a big fleet
/// Gateway can be several MiB of JSON).
const MAX_MESSAGE: usize = 64 << 20;

/// The tonic service for `state`.
pub fn service(state: AdminState) -> AdminServiceServer<Service> {
    AdminServiceServer::new(Service { state })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// Serves the admin API on `listener` until `shutdown` resolves. A failure
/// is logged (loudly: `fleet` commands stop working) and returned.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let r = tonic::transport::Server::builder()
        .add_service(service(state))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await;
    if let Err(e) = &r {
        tracing::error!("the gRPC admin API stopped: {e}");
    }
    Ok(r?)
}

pub struct Service {
    state: AdminState,
}

#[tonic::async_trait]
impl AdminService for Service {
    async fn list_nodes(
        &self,
        _req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let st = self.state.cache.current();
        let nodes = self.state.cache.node_states();
        Ok(Response::new(view::list_nodes(&st, &nodes)))
    }

    async fn get_node_config(
        &self,
        req: Request<pb::GetNodeConfigRequest>,
    ) -> Result<Response<pb::GetNodeConfigResponse>, Status> {
        let req = req.into_inner();
        let types = view::parse_types(&req.types).map_err(Status::invalid_argument)?;
        let nodes = self.state.cache.node_states();
        // The newest stream of that node id.
        let Some(node) = nodes
            .iter()
            .filter(|n| n.node_id == req.node_id)
            .max_by_key(|n| n.stream_id)
        else {
            return Err(Status::not_found(format!(
                "no connected node {:?} (see ListNodes)",
                req.node_id
            )));
        };
        let st = self.state.cache.current();
        view::node_config(&st, node, &types)
            .map(Response::new)
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn get_status(
        &self,
        _req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        Ok(Response::new(view::status(&self.state.status.get())))
    }

    async fn translate(
        &self,
        req: Request<pb::TranslateRequest>,
    ) -> Result<Response<pb::TranslateResponse>, Status> {
        let req = req.into_inner();
        let controller = if req.controller_name.is_empty() {
            self.state.controller_name.as_str()
        } else {
            req.controller_name.as_str()
        };
        let pool = if req.address_pool.is_empty() {
            "127.0.0.1/32"
        } else {
            req.address_pool.as_str()
        };
        // Translation is CPU work: keep it off the async workers.
        let (yaml, controller, pool) = (req.yaml, controller.to_string(), pool.to_string());
        tokio::task::spawn_blocking(move || view::translate(&yaml, &controller, &pool))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(Response::new)
            .map_err(|e| Status::invalid_argument(format!("{e:#}")))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::ExplainResponse>, Status> {
        let mut specs = Vec::new();
        for (i, r) in req.into_inner().requests_json.iter().enumerate() {
            let spec: crate::cli::explain::RequestSpec = serde_json::from_str(r)
                .map_err(|e| Status::invalid_argument(format!("requests_json[{i}]: {e}")))?;
            specs.push(spec);
        }
        let model = self.state.model.get();
        let answers =
            tokio::task::spawn_blocking(move || crate::cli::explain::batch(&model, &specs))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ExplainResponse {
            answers_json: answers.iter().map(|a| a.to_string()).collect(),
        }))
    }
}

#[cfg(test)]
mod tests;
