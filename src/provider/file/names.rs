//! Names are data, not paths: the checks the Kubernetes API server applies to
//! `metadata.name` and `metadata.namespace`, applied to standalone input so
//! that no name can reach a file path, a metric label or an Envoy resource
//! name unless the API server would have stored it too.

use crate::inputs::{Kind, ObjKey};

const LABEL_MAX: usize = 63;
const SUBDOMAIN_MAX: usize = 253;

fn alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// One DNS label without a length check: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// RFC 1123 label (namespaces, Namespace names): at most 63 characters.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > LABEL_MAX {
        return Err(format!("must be no more than {LABEL_MAX} characters"));
    }
    if !label_chars(s) {
        return Err(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric \
                    characters or '-', and must start and end with an alphanumeric character"
                .into(),
        );
    }
    Ok(())
}

/// RFC 1123 subdomain (most object names): at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > SUBDOMAIN_MAX {
        return Err(format!("must be no more than {SUBDOMAIN_MAX} characters"));
    }
    if !s.split('.').all(label_chars) {
        return Err(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character"
                .into(),
        );
    }
    Ok(())
}

/// RFC 1035 label (Service names): at most 63 characters, starts with a letter.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    dns1123_label(s).map_err(|e| e.replace("RFC 1123", "RFC 1035"))?;
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return Err("a DNS-1035 label must start with an alphabetic character".into());
    }
    Ok(())
}

/// A name for messages: escaped (no control characters reach a log line)
/// and cut to a readable length.
pub fn shown(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_debug).collect();
    if s.chars().count() > MAX {
        out.push_str(&format!("…({} bytes)", s.len()));
    }
    format!("\"{out}\"")
}

/// Checks an object's name and namespace as the API server would.
/// Returns the offending field and why.
pub fn check_key(kind: Kind, key: &ObjKey) -> Result<(), (&'static str, String)> {
    if kind.namespaced() {
        dns1123_label(&key.namespace).map_err(|e| ("metadata.namespace", e))?;
    }
    let name_rule = match kind {
        Kind::Namespace => dns1123_label,
        Kind::Service => dns1035_label,
        _ => dns1123_subdomain,
    };
    name_rule(&key.name).map_err(|e| ("metadata.name", e))
}

/// The message for a key that [`check_key`] refused.
pub fn key_error(kind: Kind, key: &ObjKey, field: &str, why: &str) -> String {
    let who = if kind.namespaced() {
        format!(
            "{} {}/{}",
            kind.as_str(),
            shown(&key.namespace),
            shown(&key.name)
        )
    } else {
        format!("{} {}", kind.as_str(), shown(&key.name))
    };
    format!("{who}: field `{field}`: invalid value: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        let long = "a".repeat(254);
        for bad in [
            "../x", "a/b", "..", ".", "", "a\0b", "A", "é", "a_b", "-a", "a-", "a..b", ".a", "a.",
            &long, "a\nb", "日本",
        ] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad:?}");
            assert!(dns1123_label(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a-b", "a.b", "0a", "x.example.com"] {
            assert!(dns1123_subdomain(good).is_ok(), "{good:?}");
        }
        assert!(dns1123_subdomain(&"a".repeat(253)).is_ok());
        assert!(dns1123_label(&"a".repeat(63)).is_ok());
        assert!(dns1123_label(&"a".repeat(64)).is_err());
        assert!(dns1123_label("a.b").is_err());
        assert!(dns1035_label("0a").is_err());
        assert!(dns1035_label("a0").is_ok());
    }

    #[test]
    fn keys_are_checked_per_kind_and_messages_are_escaped() {
        let k = ObjKey::new("default", "../x");
        let (field, why) = check_key(Kind::HTTPRoute, &k).unwrap_err();
        assert_eq!(field, "metadata.name");
        let msg = key_error(Kind::HTTPRoute, &k, field, &why);
        assert!(
            msg.starts_with("HTTPRoute \"default\"/\"../x\": field `metadata.name`"),
            "{msg}"
        );
        let (field, _) = check_key(Kind::HTTPRoute, &ObjKey::new("a/b", "x")).unwrap_err();
        assert_eq!(field, "metadata.namespace");
        assert!(check_key(Kind::GatewayClass, &ObjKey::cluster("gc.example")).is_ok());
        assert!(check_key(Kind::Namespace, &ObjKey::cluster("a.b")).is_err());
        assert!(check_key(Kind::Service, &ObjKey::new("n", "1svc")).is_err());
        assert_eq!(shown("a\0b\n"), "\"a\\0b\\n\"");
        assert!(shown(&"x".repeat(500)).contains("(500 bytes)"));
    }
}
