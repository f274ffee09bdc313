//! `--https` of `switchyard-echo`: the HTTP echo behind a TLS handshake,
//! optionally requiring client certificates.

use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{accept_loop, serve_io, TLS_HANDSHAKE_TIMEOUT};

/// Verifies client certificates against the CA bundle in `ca` (PEM).
pub(crate) fn client_verifier(
    ca: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", ca.display()))?
    {
        roots
            .add(c)
            .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
        .build()
        .map_err(|e| anyhow::anyhow!("client CA {}: {e}", ca.display()))
}

/// HTTPS accept loop (`--https`): the HTTP echo after a TLS handshake.
pub(crate) async fn run_https(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    name: Arc<str>,
    stop: watch::Receiver<bool>,
) {
    accept_loop(listener, move |stream, peer| {
        let acceptor = acceptor.clone();
        let name = name.clone();
        let stop = stop.clone();
        async move {
            let _ = stream.set_nodelay(true);
            let Ok(local) = stream.local_addr() else {
                return;
            };
            let tls =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        eprintln!("switchyard-echo: https {peer}: handshake: {e}");
                        return;
                    }
                    Err(_) => {
                        eprintln!("switchyard-echo: https {peer}: handshake timed out");
                        return;
                    }
                };
            let conn = tls.get_ref().1;
            let sni = conn.server_name().unwrap_or("-").to_string();
            let client = if conn.peer_certificates().is_some_and(|c| !c.is_empty()) {
                "verified"
            } else {
                "none"
            };
            let extra = [("x-echo-sni", sni), ("x-echo-client-cert", client.into())];
            serve_io(tls, local, name, stop, extra.into()).await;
        }
    })
    .await
}
