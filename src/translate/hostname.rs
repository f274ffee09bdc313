//! Hostname rules: validation, wildcard matching, listener ∩ route intersection.

/// Whether `h` is a valid Gateway API hostname (RFC 1123, optional leading
/// `*.` label, no IP address).
pub fn is_valid(h: &str) -> bool {
    let rest = h.strip_prefix("*.").unwrap_or(h);
    if rest.is_empty() || rest.len() > 253 || rest.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    rest.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// Whether concrete-or-wildcard hostname `h` is covered by `pattern`.
/// `*.example.com` covers `a.example.com` and `a.b.example.com`, not `example.com`.
fn covers(pattern: &str, h: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => h.len() > suffix.len() && h.ends_with(suffix),
        None => pattern == h,
    }
}

/// The hostnames a route serves on a listener: `None` when they do not
/// intersect (the route cannot attach), `Some(vec![])` meaning "any host".
pub fn intersect(listener: Option<&str>, route: &[String]) -> Option<Vec<String>> {
    let listener = listener.filter(|l| !l.is_empty());
    match (listener, route.is_empty()) {
        (None, true) => Some(vec![]),
        (Some(l), true) => Some(vec![l.to_string()]),
        (None, false) => Some(route.to_vec()),
        (Some(l), false) => {
            let mut out: Vec<String> = Vec::new();
            for r in route {
                let hit = if covers(l, r) || l == r {
                    Some(r.clone())
                } else if covers(r, l) {
                    Some(l.to_string())
                } else {
                    None
                };
                if let Some(h) = hit {
                    if !out.contains(&h) {
                        out.push(h);
                    }
                }
            }
            if out.is_empty() {
                None
            } else {
                Some(out)
            }
        }
    }
}

/// Specificity order for domains: exact first (longer first), then
/// wildcards by suffix length, `*` last.
pub fn specificity_key(domain: &str) -> (u8, std::cmp::Reverse<usize>, String) {
    if domain == "*" {
        (2, std::cmp::Reverse(0), String::new())
    } else if domain.starts_with('*') {
        (1, std::cmp::Reverse(domain.len()), domain.to_string())
    } else {
        (0, std::cmp::Reverse(domain.len()), domain.to_string())
    }
}

/// Whether a request for `domain` (a vhost domain) can also be served by
/// routes of the less specific vhost `wider`.
pub fn falls_back_to(domain: &str, wider: &str) -> bool {
    if domain == wider {
        return false;
    }
    if wider == "*" {
        return true;
    }
    match (domain.strip_prefix('*'), wider.strip_prefix('*')) {
        // exact under a wildcard
        (None, Some(_)) => covers(wider, domain),
        // a narrower wildcard under a wider one
        (Some(d), Some(w)) => d.len() > w.len() && d.ends_with(w),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn validity() {
        assert!(is_valid("example.com"));
        assert!(is_valid("*.example.com"));
        assert!(!is_valid("*example.com"));
        assert!(!is_valid("10.0.0.1"));
        assert!(!is_valid("Upper.com"));
        assert!(!is_valid("a..b"));
    }

    #[test]
    fn intersection_follows_the_spec_examples() {
        assert_eq!(intersect(None, &[]), Some(vec![]));
        assert_eq!(
            intersect(Some("test.example.com"), &[]),
            Some(s(&["test.example.com"]))
        );
        assert_eq!(
            intersect(
                Some("test.example.com"),
                &s(&["*.example.com", "other.net"])
            ),
            Some(s(&["test.example.com"]))
        );
        assert_eq!(
            intersect(
                Some("*.example.com"),
                &s(&[
                    "*.example.com",
                    "test.example.com",
                    "foo.test.example.com",
                    "example.com",
                    "test.example.net"
                ])
            ),
            Some(s(&[
                "*.example.com",
                "test.example.com",
                "foo.test.example.com"
            ]))
        );
        assert_eq!(intersect(Some("*.example.com"), &s(&["example.com"])), None);
        assert_eq!(intersect(Some("a.com"), &s(&["b.com"])), None);
        assert_eq!(
            intersect(Some("*.example.com"), &s(&["*.foo.example.com"])),
            Some(s(&["*.foo.example.com"]))
        );
        assert_eq!(
            intersect(Some("*.foo.example.com"), &s(&["*.example.com"])),
            Some(s(&["*.foo.example.com"]))
        );
    }

    #[test]
    fn fallback_chain() {
        assert!(falls_back_to("a.example.com", "*.example.com"));
        assert!(falls_back_to("a.example.com", "*"));
        assert!(falls_back_to("*.a.example.com", "*.example.com"));
        assert!(!falls_back_to("*.example.com", "*.a.example.com"));
        assert!(!falls_back_to("example.com", "*.example.com"));
        let mut d = s(&[
            "*",
            "*.example.com",
            "a.example.com",
            "*.a.example.com",
            "b.com",
        ]);
        d.sort_by_key(|x| specificity_key(x));
        assert_eq!(
            d,
            s(&[
                "a.example.com",
                "b.com",
                "*.a.example.com",
                "*.example.com",
                "*"
            ])
        );
    }
}
