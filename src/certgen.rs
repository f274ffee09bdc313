//! `switchyard certgen`: the private CA and the certificates of the xDS mTLS.
//!
//! Layout under the output directory, each leaf directory shaped like a
//! Kubernetes TLS Secret (`ca.crt`, `tls.crt`, `tls.key`) so it can be
//! mounted or loaded with `kubectl create secret generic --from-file`:
//!
//! ```text
//! ca/ca.crt ca/ca.key     the CA (keep ca.key offline in production)
//! server/...              the xDS server (DNS/IP SANs of the xDS address)
//! <client>/...            an Envoy client, with its identity URI SANs
//! ```
//!
//! An existing CA is reused, so running it again rotates the leaf
//! certificates under the same trust. Every leaf directory is replaced
//! atomically the way the kubelet updates a Secret volume (files are
//! symlinks into `..data`, which is swapped with one rename), so a reader
//! never sees a new certificate with an old key.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::xds::authz::Identity;
use crate::xds::tls::{CA_FILE, CERT_FILE, KEY_FILE};

/// One client certificate to issue.
#[derive(Clone, Debug)]
pub struct Client {
    /// Directory name under the output directory.
    pub name: String,
    pub identities: Vec<Identity>,
}

impl Client {
    /// Parses `NAME=IDENTITY[,IDENTITY...]` (see [`Identity::parse_flag`]).
    pub fn parse(s: &str) -> Result<Client, String> {
        let (name, ids) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=IDENTITY[,IDENTITY...]"))?;
        if name.is_empty()
            || name.starts_with('.')
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(format!(
                "{name:?}: a client name is a directory name ([A-Za-z0-9._-], not starting with '.')"
            ));
        }
        if name == "ca" || name == "server" {
            return Err(format!("{name:?} is reserved"));
        }
        let identities = ids
            .split(',')
            .map(Identity::parse_flag)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            name: name.to_string(),
            identities,
        })
    }
}

pub struct Options {
    pub out: PathBuf,
    /// DNS names and IP addresses of the xDS server.
    pub server_names: Vec<String>,
    pub clients: Vec<Client>,
    /// Validity of leaf certificates.
    pub days: u32,
}

const CA_KEY_FILE: &str = "ca.key";

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack for clocks that are behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// Loads the CA under `out/ca`, or creates it.
fn ca(out: &Path) -> anyhow::Result<(String, Issuer<'static, KeyPair>, bool)> {
    let dir = out.join("ca");
    let (crt, key) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
    if crt.exists() || key.exists() {
        let pem = fs::read_to_string(&crt).with_context(|| format!("reading {}", crt.display()))?;
        let key_pem =
            fs::read_to_string(&key).with_context(|| format!("reading {}", key.display()))?;
        let kp = KeyPair::from_pem(&key_pem).with_context(|| format!("{}", key.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&pem, kp)
            .with_context(|| format!("{} is not a usable CA certificate", crt.display()))?;
        return Ok((pem, issuer, false));
    }
    let (pem, params, kp) = new_ca()?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    write_private(&key, kp.serialize_pem().as_bytes())?;
    write_file(&crt, pem.as_bytes(), 0o644)?;
    Ok((pem, Issuer::new(params, kp), true))
}

/// A new CA: (certificate PEM, its parameters, its key).
fn new_ca() -> anyhow::Result<(String, CertificateParams, KeyPair)> {
    let kp = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "Switchyard xDS CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, 3650);
    let cert = params.self_signed(&kp).context("signing the CA")?;
    Ok((cert.pem(), params, kp))
}

/// A server certificate for `names`: (certificate PEM, key PEM).
fn issue_server(
    issuer: &Issuer<'static, KeyPair>,
    names: &[String],
    days: u32,
) -> anyhow::Result<(String, String)> {
    let kp = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())
        .context("--server-name: not a DNS name or IP address")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "switchyard-xds");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let cert = params.signed_by(&kp, issuer)?;
    Ok((cert.pem(), kp.serialize_pem()))
}

/// A client certificate carrying `c`'s identities: (certificate PEM, key PEM).
fn issue_client(
    issuer: &Issuer<'static, KeyPair>,
    c: &Client,
    days: u32,
) -> anyhow::Result<(String, String)> {
    let kp = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("switchyard-envoy-{}", c.name));
    for id in &c.identities {
        params.subject_alt_names.push(SanType::URI(
            id.uri()
                .as_str()
                .try_into()
                .map_err(|e| anyhow::anyhow!("identity URI {}: {e}", id.uri()))?,
        ));
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, days);
    let cert = params.signed_by(&kp, issuer)?;
    Ok((cert.pem(), kp.serialize_pem()))
}

/// Issues (or re-issues) the server and client certificates; returns what
/// it wrote, for the operator.
pub fn run(opts: &Options) -> anyhow::Result<Vec<String>> {
    if opts.server_names.is_empty() {
        bail!("at least one --server-name is needed (the DNS name or IP Envoy dials)");
    }
    let (ca_pem, issuer, created) = ca(&opts.out)?;
    let mut report = vec![format!(
        "{} CA {}",
        if created { "created" } else { "reused" },
        opts.out.join("ca").join(CA_FILE).display()
    )];
    let (cert, key) = issue_server(&issuer, &opts.server_names, opts.days)?;
    let dir = opts.out.join("server");
    write_secret_dir(&dir, &ca_pem, &cert, &key)?;
    report.push(format!(
        "server {} for {}",
        dir.display(),
        opts.server_names.join(", ")
    ));
    for c in &opts.clients {
        let (cert, key) = issue_client(&issuer, c, opts.days)?;
        let dir = opts.out.join(&c.name);
        write_secret_dir(&dir, &ca_pem, &cert, &key)?;
        let uris: Vec<String> = c.identities.iter().map(Identity::uri).collect();
        report.push(format!("client {} as {}", dir.display(), uris.join(", ")));
    }
    Ok(report)
}

/// Names of the Secrets `certgen --kubernetes-namespace` manages.
pub const K8S_CA_SECRET: &str = "switchyard-xds-ca";
pub const K8S_SERVER_SECRET: &str = "switchyard-xds-server";
pub const K8S_ENVOY_SECRET: &str = "switchyard-xds-envoy";

/// Kubernetes flavour: the CA and the leaves live in Secrets of `namespace`
/// (the server's as `switchyard-xds-server`, the first client's as
/// `switchyard-xds-envoy`). Existing Secrets are kept unless `rotate`, which
/// re-issues the leaves under the same CA.
pub async fn run_kubernetes(
    opts: &Options,
    namespace: &str,
    rotate: bool,
) -> anyhow::Result<Vec<String>> {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::ByteString;
    use kube::api::{Api, PostParams};

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let secret = |name: &str, ty: &str, data: Vec<(&str, String)>| Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "switchyard-certgen".to_string(),
                )]
                .into_iter()
                .collect(),
            ),
            ..Default::default()
        },
        type_: Some(ty.to_string()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    };
    let field = |s: &Secret, k: &str| -> Option<String> {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let mut report = Vec::new();
    let (ca_pem, issuer) = match api.get_opt(K8S_CA_SECRET).await? {
        Some(s) => {
            let (Some(pem), Some(key)) = (field(&s, CA_FILE), field(&s, CA_KEY_FILE)) else {
                bail!("Secret {namespace}/{K8S_CA_SECRET} lacks {CA_FILE} or {CA_KEY_FILE}");
            };
            let kp = KeyPair::from_pem(&key).context("the CA key")?;
            report.push(format!("reused CA Secret {namespace}/{K8S_CA_SECRET}"));
            (pem.clone(), Issuer::from_ca_cert_pem(&pem, kp)?)
        }
        None => {
            let (pem, params, kp) = new_ca()?;
            api.create(
                &PostParams::default(),
                &secret(
                    K8S_CA_SECRET,
                    "Opaque",
                    vec![(CA_FILE, pem.clone()), (CA_KEY_FILE, kp.serialize_pem())],
                ),
            )
            .await
            .with_context(|| format!("creating Secret {namespace}/{K8S_CA_SECRET}"))?;
            report.push(format!("created CA Secret {namespace}/{K8S_CA_SECRET}"));
            (pem, Issuer::new(params, kp))
        }
    };
    let mut leaves: Vec<(&str, Option<&Client>)> = vec![(K8S_SERVER_SECRET, None)];
    if let Some(c) = opts.clients.first() {
        leaves.push((K8S_ENVOY_SECRET, Some(c)));
    }
    for (name, client) in leaves {
        let existing = api.get_opt(name).await?;
        if existing.is_some() && !rotate {
            continue;
        }
        let (cert, key) = match client {
            None => issue_server(&issuer, &opts.server_names, opts.days)?,
            Some(c) => issue_client(&issuer, c, opts.days)?,
        };
        let mut s = secret(
            name,
            "kubernetes.io/tls",
            vec![
                (CA_FILE, ca_pem.clone()),
                (CERT_FILE, cert),
                (KEY_FILE, key),
            ],
        );
        match existing {
            Some(old) => {
                s.metadata.resource_version = old.metadata.resource_version;
                api.replace(name, &PostParams::default(), &s)
                    .await
                    .with_context(|| format!("replacing Secret {namespace}/{name}"))?;
                report.push(format!("re-issued Secret {namespace}/{name}"));
            }
            None => {
                api.create(&PostParams::default(), &s)
                    .await
                    .with_context(|| format!("creating Secret {namespace}/{name}"))?;
                report.push(format!("created Secret {namespace}/{name}"));
            }
        }
    }
    Ok(report)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_file(path, bytes, 0o600)
}

/// Replaces the contents of `dir` atomically, kubelet style: the files live
/// in a fresh `..<timestamp>` directory, `..data` points at it (swapped by
/// one rename), and `ca.crt`/`tls.crt`/`tls.key` are symlinks through `..data`.
pub fn write_secret_dir(dir: &Path, ca: &str, cert: &str, key: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::symlink;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let gen_name = format!("..{stamp}");
    let gen_dir = dir.join(&gen_name);
    fs::create_dir(&gen_dir).with_context(|| format!("creating {}", gen_dir.display()))?;
    write_file(&gen_dir.join(CA_FILE), ca.as_bytes(), 0o644)?;
    write_file(&gen_dir.join(CERT_FILE), cert.as_bytes(), 0o644)?;
    write_private(&gen_dir.join(KEY_FILE), key.as_bytes())?;
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    symlink(&gen_name, &tmp).with_context(|| format!("linking {}", tmp.display()))?;
    fs::rename(&tmp, dir.join("..data"))
        .with_context(|| format!("swapping {}", dir.join("..data").display()))?;
    for f in [CA_FILE, CERT_FILE, KEY_FILE] {
        let link = dir.join(f);
        match fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => {
                // A plain file from elsewhere: replace it with the link.
                let t = dir.join(format!("..{f}.tmp"));
                let _ = fs::remove_file(&t);
                symlink(format!("..data/{f}"), &t)?;
                fs::rename(&t, &link)?;
            }
            Err(_) => symlink(format!("..data/{f}"), &link)
                .with_context(|| format!("linking {}", link.display()))?,
        }
    }
    // Older generations are no longer reachable.
    for e in fs::read_dir(dir)?.flatten() {
        let n = e.file_name();
        let n = n.to_string_lossy();
        if n.starts_with("..") && n != gen_name && n != "..data" && e.path().is_dir() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::tls::{entitlement_of, load_server_config};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn issues_a_usable_server_and_clients_and_rotates_under_the_same_ca() {
        let dir = std::env::temp_dir().join(format!("sy-certgen-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let opts = Options {
            out: dir.clone(),
            server_names: vec!["localhost".into(), "127.0.0.1".into()],
            clients: vec![
                Client::parse("envoy=fleet").unwrap(),
                Client::parse("team-a=gateway:team-a/web,namespace:shared").unwrap(),
            ],
            days: 30,
        };
        run(&opts).unwrap();
        let (_, d1) = load_server_config(&dir.join("server")).expect("server config loads");
        let ca1 = fs::read(dir.join("ca/ca.crt")).unwrap();
        let leaf = CertificateDer::from_pem_file(dir.join("team-a/tls.crt")).unwrap();
        let e = entitlement_of(&leaf).unwrap();
        assert!(e.allows("team-a/web") && e.allows("shared/x") && !e.allows("team-a/api"));
        assert!(!e.fleet);
        let leaf = CertificateDer::from_pem_file(dir.join("envoy/tls.crt")).unwrap();
        assert!(entitlement_of(&leaf).unwrap().fleet);
        // The server's own certificate carries no identity: it cannot be used as a client.
        let srv = CertificateDer::from_pem_file(dir.join("server/tls.crt")).unwrap();
        assert!(entitlement_of(&srv).is_err());

        run(&opts).unwrap();
        let (_, d2) = load_server_config(&dir.join("server")).unwrap();
        assert_ne!(d1, d2, "leaves re-issued");
        assert_eq!(ca1, fs::read(dir.join("ca/ca.crt")).unwrap(), "same CA");
        let gens = fs::read_dir(dir.join("server"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("..1"))
            .count();
        assert_eq!(gens, 1, "old generations removed");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_flags_are_checked() {
        assert!(Client::parse("envoy").is_err());
        assert!(Client::parse("../x=fleet").is_err());
        assert!(Client::parse("server=fleet").is_err());
        assert!(Client::parse("a=gateway:ns").is_err());
        assert_eq!(
            Client::parse("a=fleet,namespace:x")
                .unwrap()
                .identities
                .len(),
            2
        );
    }
}
