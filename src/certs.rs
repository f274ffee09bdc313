//! Served certificates: how a TLS Secret is checked (PEM, key match,
//! expiry), the last-good rule when a Secret is rotated to something
//! unusable, and the expiry of what is served (metrics, the 14-day warning
//! in listener conditions). See docs/certificates.md.
//!
//! The last good certificate is kept by the input store ([`Inputs`]): when
//! a new version of a Secret is refused and the version before was served,
//! the store keeps that version and records a [`Rejection`]. The translator
//! only reads what the store decided (it stays pure; "now" is
//! [`Inputs::now`]). The store lives as long as the process: after a
//! restart with a bad Secret there is no last good, and the listener is
//! refused.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::Secret;

use crate::inputs::{Inputs, ObjKey};

/// A listener whose certificate expires within this many days says so in
/// its `ResolvedRefs` message.
pub const WARN_DAYS: i64 = 14;

const DAY: i64 = 86_400;

/// Why the newest version of a TLS Secret is not what is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// What is wrong with it, as a clause ("its certificate expired at ...").
    pub why: String,
    /// `notAfter` (unix seconds) of the last good certificate, served
    /// instead; `None`: there is no last good, nothing is served from
    /// this Secret.
    pub last_good_not_after: Option<i64>,
    /// Fingerprint of the refused content: the same content delivered
    /// again (a watch relist) is not a new rotation.
    pub refused: u64,
}

impl Rejection {
    /// The last good certificate is served in place of the Secret's content.
    pub fn serves_last_good(&self) -> bool {
        self.last_good_not_after.is_some()
    }
}

/// `tls.crt` and `tls.key` of a Secret, checked the way Envoy will use
/// them: a PEM chain, a PEM private key of a supported type, and the key
/// belonging to the leaf certificate. The error says what is wrong
/// as a clause ("tls.key is missing", "tls.key does not belong to ...").
pub fn tls_pair(s: &Secret) -> Result<(String, String), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let get = |k: &str| -> Result<String, String> {
        if let Some(v) = s.data.as_ref().and_then(|d| d.get(k)) {
            return String::from_utf8(v.0.clone()).map_err(|_| format!("{k} is not text"));
        }
        s.string_data
            .as_ref()
            .and_then(|d| d.get(k))
            .cloned()
            .ok_or_else(|| format!("{k} is missing"))
    };
    let crt = get("tls.crt")?;
    let key = get("tls.key")?;
    let certs = CertificateDer::pem_slice_iter(crt.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crt is not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let der = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| format!("tls.key is not a PEM private key: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("tls.key is not a supported private key: {e}"))?;
    rustls::sign::CertifiedKey::new(certs, signer)
        .keys_match()
        .map_err(|e| format!("tls.key does not belong to the certificate in tls.crt: {e}"))?;
    Ok((crt, key))
}

/// `notAfter` (unix seconds) of the first (leaf) certificate of a PEM chain.
pub fn not_after(chain_pem: &str) -> Result<i64, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use x509_parser::prelude::{FromDer, X509Certificate};
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or("tls.crt holds no certificate")?
        .map_err(|e| format!("tls.crt is not a PEM certificate chain: {e}"))?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("tls.crt is not an X.509 certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// [`tls_pair`], and the leaf certificate not expired at `now`; returns
/// its `notAfter`.
pub fn check(s: &Secret, now: i64) -> Result<i64, String> {
    let (crt, _) = tls_pair(s)?;
    let t = not_after(&crt)?;
    if t <= now {
        return Err(format!("its certificate expired at {}", rfc3339(t)));
    }
    Ok(t)
}

/// Unix seconds as `2026-01-31T12:00:00Z`.
pub fn rfc3339(t: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        ),
        Err(_) => format!("@{t}"),
    }
}

/// The current time as unix seconds (for providers; never read by the
/// translator).
pub fn wall_clock() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn fingerprint(s: &Secret) -> u64 {
    let mut h = DefaultHasher::new();
    if let Some(d) = &s.data {
        for (k, v) in d {
            (k, &v.0).hash(&mut h);
        }
    }
    if let Some(d) = &s.string_data {
        d.hash(&mut h);
    }
    h.finish()
}

fn is_tls(s: &Secret) -> bool {
    s.type_.as_deref() == Some("kubernetes.io/tls")
        || s.data.as_ref().is_some_and(|d| d.contains_key("tls.crt"))
        || s.string_data
            .as_ref()
            .is_some_and(|d| d.contains_key("tls.crt"))
}

/// What the store does when Secret `key` was just stored (replacing
/// `previous`, its version before): a refused version never replaces a
/// served one. Returns `true` when this is a newly rejected rotation.
pub(crate) fn on_secret_update(
    inputs: &mut Inputs,
    key: &ObjKey,
    previous: Option<Secret>,
    now: i64,
) -> bool {
    let old = inputs.certificate_rejections.remove(key);
    let Some(new) = inputs.secrets.get(key) else {
        return false;
    };
    if !is_tls(new) {
        return false;
    }
    let print = fingerprint(new);
    // The refused content again (a relist): nothing new.
    if let Some(r) = old.as_ref().filter(|r| r.refused == print) {
        if let Some(prev) = previous.filter(|_| r.serves_last_good()) {
            inputs.secrets.insert(key.clone(), prev);
        }
        inputs.certificate_rejections.insert(key.clone(), r.clone());
        return false;
    }
    // The served content again: still served, even if it expired since.
    let was_served = old.as_ref().is_none_or(Rejection::serves_last_good);
    if was_served && previous.as_ref().is_some_and(|p| fingerprint(p) == print) {
        return false;
    }
    let Err(why) = check(new, now) else {
        return false;
    };
    // The previous version is the last good if it was served (it passed
    // these checks then; it may have expired since, and still beats no
    // certificate at all).
    let last_good = previous.filter(|_| was_served).and_then(|p| {
        tls_pair(&p)
            .ok()
            .and_then(|(c, _)| not_after(&c).ok())
            .map(|t| (p, t))
    });
    let rejection = Rejection {
        why: why.clone(),
        last_good_not_after: last_good.as_ref().map(|(_, t)| *t),
        refused: print,
    };
    inputs.certificate_rejections.insert(key.clone(), rejection);
    match last_good {
        Some((p, t)) => {
            tracing::warn!(secret = %key, "refusing the new version of TLS Secret {key} ({why}); the last good certificate (notAfter {}) stays in use", rfc3339(t));
            inputs.secrets.insert(key.clone(), p);
            crate::metrics::catalogue::CERTIFICATE_ROTATIONS_REJECTED
                .inc([&key.namespace, &key.name]);
            true
        }
        None => {
            tracing::warn!(secret = %key, "TLS Secret {key} is unusable ({why}); no earlier good version to serve, its listeners are refused");
            false
        }
    }
}

/// How a referenced Secret is served, as the translator sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Usable {
    /// Its certificate, valid; `warning` when it expires within
    /// [`WARN_DAYS`].
    Good {
        crt: String,
        key: String,
        warning: Option<String>,
    },
    /// Something is served, but not what the Secret holds now (last good)
    /// or not something clients accept (expired while served): reported
    /// as `ResolvedRefs=False` while traffic is served.
    Degraded {
        crt: String,
        key: String,
        problem: String,
    },
    /// Nothing is served.
    Refused(String),
}

/// How Secret `skey` is served at `inputs.now` (`None`: expiry is not
/// checked). Pure.
pub fn usable(inputs: &Inputs, skey: &ObjKey) -> Usable {
    let Some(secret) = inputs.secrets.get(skey) else {
        return Usable::Refused("not found".into());
    };
    let rejection = inputs.certificate_rejections.get(skey);
    if let Some(r) = rejection.filter(|r| !r.serves_last_good()) {
        return Usable::Refused(r.why.clone());
    }
    let (crt, key) = match tls_pair(secret) {
        Ok(p) => p,
        Err(why) => return Usable::Refused(why),
    };
    let expiry = not_after(&crt);
    if let Some(r) = rejection {
        let good = r.last_good_not_after.map(rfc3339).unwrap_or_default();
        return Usable::Degraded {
            crt,
            key,
            problem: format!(
                "the latest version of Secret {skey} was refused ({}); the last good certificate (notAfter {good}) is still served",
                r.why
            ),
        };
    }
    let (Some(now), Ok(t)) = (inputs.now, expiry) else {
        return Usable::Good {
            crt,
            key,
            warning: None,
        };
    };
    if t <= now {
        return Usable::Degraded {
            crt,
            key,
            problem: format!(
                "the certificate of Secret {skey} expired at {} and is still served (no valid replacement); clients that check expiry refuse it",
                rfc3339(t)
            ),
        };
    }
    let warning = (t - now < WARN_DAYS * DAY).then(|| {
        format!(
            "the certificate of Secret {skey} expires at {} ({} days left)",
            rfc3339(t),
            (t - now) / DAY
        )
    });
    Usable::Good { crt, key, warning }
}

/// A certificate a Gateway serves: a listener's (`listener` its name;
/// `<listenerset>/<name>` for a ListenerSet's) or the Gateway's client
/// certificate to TLS backends (`listener` empty).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Served {
    pub secret: ObjKey,
    pub gateway: ObjKey,
    pub listener: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// Whether a translation made at `then` (unix seconds) is to be redone at
/// `wall`: the day changed while a served certificate is within the warning
/// window or expired (its listener's message counts the days, and a
/// certificate crossing the window gets its warning without any config
/// change). At most one full translation a day, and none when all
/// certificates are far from expiry.
pub fn expiry_refresh_due(served: &[Served], then: Option<i64>, wall: i64) -> bool {
    let Some(then) = then else { return false };
    then.div_euclid(DAY) != wall.div_euclid(DAY)
        && served
            .iter()
            .any(|s| s.not_after - wall < (WARN_DAYS + 1) * DAY)
}

/// Keeps the certificate metrics in line with what is served: series of
/// certificates no longer served are removed.
#[derive(Default)]
pub struct Metrics {
    expiry: std::collections::BTreeSet<[String; 4]>,
    last_good: std::collections::BTreeSet<ObjKey>,
}

impl Metrics {
    pub fn publish(&mut self, served: &[Served], inputs: &Inputs) {
        let mut expiry = std::collections::BTreeSet::new();
        for s in served {
            let labels = [
                s.secret.namespace.clone(),
                s.secret.name.clone(),
                s.gateway.to_string(),
                s.listener.clone(),
            ];
            crate::metrics::catalogue::CERTIFICATE_EXPIRY
                .set(labels.each_ref().map(String::as_str), s.not_after as f64);
            expiry.insert(labels);
        }
        for gone in self.expiry.difference(&expiry) {
            crate::metrics::catalogue::CERTIFICATE_EXPIRY
                .remove(gone.each_ref().map(String::as_str));
        }
        self.expiry = expiry;
        let last_good: std::collections::BTreeSet<ObjKey> = inputs
            .certificate_rejections
            .iter()
            .filter(|(_, r)| r.serves_last_good())
            .map(|(k, _)| k.clone())
            .collect();
        self.last_good.extend(last_good.iter().cloned());
        // 1 while the last good is served; then 0 (a dashboard shows the
        // recovery) until the Secret is deleted.
        self.last_good.retain(|k| {
            let l = [k.namespace.as_str(), k.name.as_str()];
            let gauge = &crate::metrics::catalogue::CERTIFICATE_LAST_GOOD_SERVED;
            if last_good.contains(k) {
                gauge.set(l, 1.0);
            } else if inputs.secrets.contains_key(k) {
                gauge.set(l, 0.0);
            } else {
                gauge.remove(l);
                return false;
            }
            true
        });
    }
}

#[cfg(test)]
#[path = "certs_tests.rs"]
mod tests;
