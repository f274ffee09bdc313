//! The request evaluator: where a request (or connection) goes through the
//! IR, with Envoy's semantics, and which other rules it beat. One pure
//! module shared by `switchyard explain`, `explain --diff` and the tests
//! that compare it with a real Envoy.
//!
//! The IR's route lists are already in precedence order (Envoy takes the
//! first match), so the winner is the first route that matches; every
//! later match is reported as lost with the criterion that ranked it
//! lower, recomputed from the two matches (see [`lost_reason`]).

mod decision;
mod http;
mod matching;
mod request;

pub use decision::{
    BackendState, Decision, FilterStep, ListenerChoice, Lost, RouteRef, RuleRef, SCHEMA_VERSION,
};
pub use matching::{host_for_matching, split_path};
pub use request::{parse_gateway, ParseError, Protocol, Request};

use crate::inputs::ObjKey;
use crate::ir;
pub use crate::ir::re2::RegexCache;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EvalError {
    #[error("several Gateways listen on {protocol} port {port}: {}; choose one with --gateway or --address", names(.candidates))]
    Ambiguous {
        protocol: &'static str,
        port: u16,
        candidates: Vec<ObjKey>,
    },
    #[error("Gateway {0} is not served (unknown, not programmed, or not ours)")]
    UnknownGateway(ObjKey),
}

fn names(keys: &[ObjKey]) -> String {
    keys.iter()
        .map(|k| format!("{}/{}", k.namespace, k.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Evaluates one request against the model.
pub fn evaluate(model: &ir::Model, req: &Request) -> Result<Decision, EvalError> {
    evaluate_with(model, req, &RegexCache::default())
}

/// [`evaluate`] reusing compiled regexes across requests.
pub fn evaluate_with(
    model: &ir::Model,
    req: &Request,
    re: &RegexCache,
) -> Result<Decision, EvalError> {
    let mut d = Decision::new(req);
    let udp = req.protocol == Protocol::Udp;
    if let Some(g) = &req.gateway {
        if !model.gateways.contains_key(g) {
            return Err(EvalError::UnknownGateway(g.clone()));
        }
    }
    let candidates: Vec<(&ObjKey, &ir::Listener)> = model
        .gateways
        .iter()
        .filter(|(k, _)| req.gateway.as_ref().is_none_or(|g| g == *k))
        .filter_map(|(k, gw)| {
            gw.listeners
                .iter()
                .find(|l| {
                    l.port == req.port
                        && (l.transport == ir::Transport::Udp) == udp
                        && req
                            .address
                            .as_deref()
                            .is_none_or(|a| a == l.address || l.address == "0.0.0.0")
                })
                .map(|l| (k, l))
        })
        .collect();
    let (gw, listener) = match candidates.as_slice() {
        [] => {
            d.refuse(format!(
                "no Gateway listens on {} port {}",
                if udp { "UDP" } else { "TCP" },
                req.port
            ));
            return Ok(d);
        }
        [one] => *one,
        many => {
            return Err(EvalError::Ambiguous {
                protocol: if udp { "UDP" } else { "TCP" },
                port: req.port,
                candidates: many.iter().map(|(k, _)| (*k).clone()).collect(),
            })
        }
    };
    d.gateway = Some(format!("{}/{}", gw.namespace, gw.name));
    d.address = Some(listener.address.clone());
    let Some(chain) = select_chain(listener, req, &mut d) else {
        return Ok(d);
    };
    match &chain.app {
        ir::App::Http(rc) => {
            if !req.protocol.is_http() {
                d.refuse(format!(
                    "listener {} speaks HTTP: explain an http:// or https:// request",
                    d.listener_name()
                ));
                return Ok(d);
            }
            http::evaluate(model.gateways.get(gw), rc, req, re, &mut d);
        }
        ir::App::Tcp(p) | ir::App::Udp(p) => {
            l4(model.gateways.get(gw), p, &mut d);
        }
    }
    Ok(d)
}

/// The filter chain Envoy picks: SNI (exact, then the longest wildcard),
/// else the chain without server names; TLS or plain must fit the client.
fn select_chain<'m>(
    l: &'m ir::Listener,
    req: &Request,
    d: &mut Decision,
) -> Option<&'m ir::FilterChain> {
    let sni = if req.protocol.is_tls() {
        req.sni
            .as_deref()
            .map(host_for_matching)
            .filter(|s| !s.is_empty())
    } else {
        None
    };
    let by_name = sni.as_deref().and_then(|sni| {
        l.chains
            .iter()
            .filter_map(|c| {
                c.server_names
                    .iter()
                    .filter_map(|n| matching::domain_rank(n, sni).filter(|r| r.0 < 2))
                    .min()
                    .map(|rank| (rank, c))
            })
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, c)| c)
    });
    let chain = by_name.or_else(|| {
        l.chains.iter().find(|c| {
            c.server_names.is_empty()
                && (req.protocol.is_tls() || !matches!(c.tls, ir::ChainTls::Passthrough))
        })
    });
    let Some(chain) = chain else {
        d.refuse(match &sni {
            Some(s) => format!("no listener on port {} serves SNI {s}", l.port),
            None if req.protocol.is_tls() => {
                format!("every listener on port {} needs an SNI name", l.port)
            }
            None => format!("the listeners on port {} expect TLS", l.port),
        });
        return None;
    };
    // A plain TCP/UDP chain forwards any bytes; HTTP needs what it speaks.
    let fits = match (&chain.tls, &chain.app) {
        (ir::ChainTls::None, ir::App::Http(_)) => !req.protocol.is_tls(),
        (ir::ChainTls::None, _) => true,
        _ => req.protocol.is_tls(),
    };
    if !fits {
        d.refuse(format!(
            "the listener on port {} {} TLS",
            l.port,
            if req.protocol.is_tls() {
                "does not speak"
            } else {
                "expects"
            }
        ));
        return None;
    }
    let section = chain.name.split('/').next().unwrap_or(&chain.name);
    let why = match (&sni, chain.server_names.is_empty()) {
        (Some(s), false) => format!(
            "SNI {s} matches {} (exact names first, then the longest wildcard)",
            chain.server_names.join(", ")
        ),
        (Some(s), true) => {
            format!("no listener names SNI {s}; the listener without a hostname takes it")
        }
        (None, _) => format!("the only listener chain on port {}", l.port),
    };
    d.listener = Some(ListenerChoice {
        name: (chain.name != "http").then(|| section.to_string()),
        port: l.port,
        hostname: chain.server_names.first().cloned(),
        tls: match &chain.tls {
            ir::ChainTls::None => None,
            ir::ChainTls::Terminate { .. } => Some("Terminate".into()),
            ir::ChainTls::Passthrough => Some("Passthrough".into()),
        },
        why,
    });
    if let ir::ChainTls::Terminate {
        client_validation: Some(v),
        ..
    } = &chain.tls
    {
        d.notes.push(if v.insecure_fallback {
            format!(
                "the listener asks for a client certificate (CA {}) but accepts the connection \
                 without one or with one that fails validation (AllowInsecureFallback)",
                v.ca
            )
        } else {
            format!(
                "the listener requires a client certificate that chains to CA {}: without \
                 one the TLS handshake fails",
                v.ca
            )
        });
    }
    Some(chain)
}

/// A TCP/UDP/TLS chain: every connection goes to the weighted backends.
fn l4(gw: Option<&ir::Gateway>, p: &ir::L4Proxy, d: &mut Decision) {
    if !p.route.is_empty() {
        d.route = RouteRef::parse(&p.route);
    }
    d.backends = decision::backends(gw, &p.backends);
    if p.backends.is_empty() {
        d.refuse("no route is attached: connections are closed".into());
    } else if d.backends.iter().all(|b| !b.resolved) {
        d.refuse("no backend resolves: connections are closed".into());
    }
}

#[cfg(test)]
mod tests;
