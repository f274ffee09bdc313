//! mTLS on the xDS port.
//!
//! The server reads a directory laid out like a Kubernetes TLS Secret with a
//! CA (`tls.crt`, `tls.key`, `ca.crt`), requires every client to present a
//! certificate issued by that CA, and re-reads the directory every
//! [`RELOAD_EVERY`]: rotated files (including a Secret volume's symlink swap)
//! take effect for new connections without a restart; a broken set is
//! reported and the last good one stays in use.
//!
//! The identity of a connection is what its certificate's URI SANs entitle
//! it to ([`super::authz`]); it travels to the ADS handlers as [`PeerInfo`]
//! in the request extensions.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::authz::Entitlement;

/// How often the certificate directory is re-read.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {msg}")]
    Pem { path: PathBuf, msg: String },
    #[error("{0}")]
    Config(String),
}

/// Who is on the other end of an xDS connection.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub addr: Option<SocketAddr>,
    /// `None` on a plaintext port (the node's metadata is trusted);
    /// otherwise what its verified certificate entitles it to, or why it
    /// entitles it to nothing.
    pub identity: Option<Result<Arc<Entitlement>, String>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The three files of `dir`, and a digest of their contents.
fn read_dir_files(dir: &Path) -> Result<([Vec<u8>; 3], Vec<u8>), TlsError> {
    let (ca, cert, key) = (dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE));
    let files = [read(&ca)?, read(&cert)?, read(&key)?];
    let digest = Sha256::new()
        .chain_update(&files[0])
        .chain_update(&files[1])
        .chain_update(&files[2])
        .finalize()
        .to_vec();
    Ok((files, digest))
}

/// The server configuration from `dir`, and a digest of the files it came from.
pub fn load_server_config(dir: &Path) -> Result<(Arc<ServerConfig>, Vec<u8>), TlsError> {
    let (files, digest) = read_dir_files(dir)?;
    Ok((server_config(dir, files)?, digest))
}

fn server_config(dir: &Path, files: [Vec<u8>; 3]) -> Result<Arc<ServerConfig>, TlsError> {
    let (ca, cert, key) = (dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE));
    let [ca_pem, cert_pem, key_pem] = files;
    let pem_err = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.to_path_buf(),
        msg: e.to_string(),
    };
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca_pem) {
        let c = c.map_err(|e| pem_err(&ca, e))?;
        roots.add(c).map_err(|e| TlsError::Pem {
            path: ca.clone(),
            msg: format!("not a usable CA certificate: {e}"),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            path: ca,
            msg: "no CA certificate".into(),
        });
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(&cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert,
            msg: "no certificate".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_err(&key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError::Config(format!(
                "{} and {}: {e}",
                dir.join(CERT_FILE).display(),
                dir.join(KEY_FILE).display()
            ))
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The current server configuration, kept fresh by a background task.
#[derive(Clone)]
pub struct ServerTls {
    current: watch::Receiver<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads `dir` (failing if it is unusable now) and re-reads it every
    /// [`RELOAD_EVERY`] until the returned value and its clones are dropped.
    pub fn watch(dir: PathBuf) -> Result<ServerTls, TlsError> {
        let (cfg, mut digest) = load_server_config(&dir)?;
        info!(dir = %dir.display(), "xDS mTLS: certificates loaded");
        set_reload_metric(true);
        let (tx, current) = watch::channel(cfg);
        tokio::spawn(async move {
            let mut last_error = String::new();
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                if tx.is_closed() {
                    return;
                }
                let d = dir.clone();
                let last = digest.clone();
                // Unchanged files (the usual case) are only read and hashed.
                let loaded = tokio::task::spawn_blocking(move || {
                    let (files, new_digest) = read_dir_files(&d)?;
                    if new_digest == last {
                        return Ok(None);
                    }
                    server_config(&d, files).map(|cfg| Some((cfg, new_digest)))
                })
                .await;
                match loaded {
                    Ok(Ok(changed)) => {
                        last_error.clear();
                        set_reload_metric(true);
                        if let Some((cfg, new_digest)) = changed {
                            digest = new_digest;
                            let _ = tx.send(cfg);
                            info!(dir = %dir.display(), "xDS mTLS: rotated certificates loaded; new connections use them");
                        }
                    }
                    Ok(Err(e)) => {
                        set_reload_metric(false);
                        let msg = e.to_string();
                        if msg != last_error {
                            warn!("xDS mTLS: keeping the certificates in use; the new ones are unusable: {msg}");
                            last_error = msg;
                        }
                    }
                    Err(e) => warn!("xDS mTLS: certificate reload task failed: {e}"),
                }
            }
        });
        Ok(ServerTls { current })
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.borrow().clone())
    }
}

fn set_reload_metric(ok: bool) {
    crate::metrics::catalogue::XDS_TLS_CERTIFICATES_VALID.set([], if ok { 1.0 } else { 0.0 });
}

fn count_handshake_failure(reason: &'static str) {
    crate::metrics::catalogue::XDS_TLS_REJECTED.inc([reason]);
}

/// The identity in a verified client certificate.
pub fn entitlement_of(cert: &CertificateDer<'_>) -> Result<Entitlement, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, x) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("client certificate does not parse: {e}"))?;
    let sans = x
        .subject_alternative_name()
        .map_err(|e| format!("client certificate SANs: {e}"))?;
    let uris: Vec<&str> = sans
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|g| match g {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Entitlement::from_uris(uris)
}

/// An accepted xDS connection, plaintext or TLS.
pub enum Conn {
    Plain(TcpStream, PeerInfo),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, PeerInfo),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(_, p) | Conn::Tls(_, p) => p.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// Accepts connections on `listener`; with `tls`, each handshake runs in
/// its own task (a slow or hostile client cannot hold up the others) and
/// only verified clients come out.
pub fn incoming(listener: TcpListener, tls: Option<ServerTls>) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (sock, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!("xDS accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let _ = sock.set_nodelay(true);
            let Some(tls) = &tls else {
                let peer = PeerInfo {
                    addr: Some(addr),
                    identity: None,
                };
                if tx.send(Ok(Conn::Plain(sock, peer))).await.is_err() {
                    return;
                }
                continue;
            };
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            count_handshake_failure("handshake");
                            debug!(%addr, "xDS TLS handshake refused: {e}");
                            return;
                        }
                        Err(_) => {
                            count_handshake_failure("timeout");
                            debug!(%addr, "xDS TLS handshake timed out");
                            return;
                        }
                    };
                let identity = match stream.get_ref().1.peer_certificates() {
                    Some([leaf, ..]) => entitlement_of(leaf),
                    _ => Err("no client certificate".to_string()),
                }
                .map(Arc::new);
                if let Err(e) = &identity {
                    count_handshake_failure("identity");
                    warn!(%addr, "xDS client refused: {e}");
                }
                let peer = PeerInfo {
                    addr: Some(addr),
                    identity: Some(identity),
                };
                let _ = tx.send(Ok(Conn::Tls(Box::new(stream), peer))).await;
            });
        }
    });
    ReceiverStream::new(rx)
}
