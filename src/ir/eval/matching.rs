//! Envoy's matching rules, as the configuration `xds::build` writes asks
//! for them: host lookup (case-insensitive, port ignored), path
//! normalization (RFC 3986 dot segments, merged slashes), case-sensitive
//! paths, segment-aware prefixes, RE2 full-match regexes, headers joined
//! with `,` when repeated, the first value of a repeated query parameter.

use crate::ir::{self, HeaderMatch, PathMatch, RouteMatch, StringMatch};

use super::RegexCache;

/// The Host as Envoy looks it up: lower case, without a port.
pub fn host_for_matching(host: &str) -> String {
    let (h, port) = super::request::split_host_port(host);
    let h = match port {
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ if host.starts_with('[') => h,
        _ => host,
    };
    h.to_ascii_lowercase()
}

/// How well a virtual host domain matches a host (smaller is better):
/// exact, then the longest `*suffix`, then the longest `prefix*`, then `*`.
pub fn domain_rank(domain: &str, host: &str) -> Option<(u8, std::cmp::Reverse<usize>)> {
    let domain = domain.to_ascii_lowercase();
    if domain == "*" {
        return Some((3, std::cmp::Reverse(0)));
    }
    if domain == host {
        return Some((0, std::cmp::Reverse(domain.len())));
    }
    if let Some(suffix) = domain.strip_prefix('*') {
        // Envoy: the wildcard stands for at least one character.
        return (host.len() > suffix.len() && host.ends_with(suffix))
            .then_some((1, std::cmp::Reverse(suffix.len())));
    }
    if let Some(prefix) = domain.strip_suffix('*') {
        return (host.len() > prefix.len() && host.starts_with(prefix))
            .then_some((2, std::cmp::Reverse(prefix.len())));
    }
    None
}

/// The virtual host Envoy picks for `host` (already lower case, no port).
pub fn select_vhost<'a>(rc: &'a ir::RouteConfig, host: &str) -> Option<&'a ir::VirtualHost> {
    rc.virtual_hosts
        .iter()
        .filter_map(|vh| {
            vh.domains
                .iter()
                .filter_map(|d| domain_rank(d, host))
                .min()
                .map(|rank| (rank, vh))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, vh)| &**vh)
}

/// Splits `:path` into the normalized path and the raw query string, as the
/// HTTP connection manager does before routing (`normalize_path`: escaped
/// unreserved characters decoded, other escapes upper-cased, dot segments
/// removed; then `merge_slashes`); a fragment is dropped.
pub fn split_path(raw: &str) -> (String, Option<String>) {
    let raw = raw.split('#').next().unwrap_or("");
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (raw, None),
    };
    let decoded = decode_unreserved(path);
    (merge_slashes(&remove_dot_segments(&decoded)), query)
}

/// `%41` → `A` for RFC 3986 unreserved characters; other escapes keep
/// their meaning with upper-case hex digits.
fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = char::from(u8::try_from(h * 16 + l).unwrap_or(0));
                if c.is_ascii_alphanumeric() || "-._~".contains(c) {
                    out.push(c);
                } else {
                    out.push('%');
                    out.push(char::from(b[i + 1]).to_ascii_uppercase());
                    out.push(char::from(b[i + 2]).to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        let ch = path[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

/// RFC 3986 section 5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    // The leading "" (paths start with '/').
    for (i, seg) in segments.iter().enumerate().skip(1) {
        match *seg {
            "." | ".." => {
                if *seg == ".." && !out.is_empty() {
                    out.pop();
                }
                // A trailing dot segment leaves a directory ("/a/." → "/a/").
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Envoy's `merge_slashes`: when the path has `//`, its non-empty segments
/// joined with one `/`, keeping a leading and a trailing slash (so `//`
/// stays `//`).
fn merge_slashes(path: &str) -> String {
    if !path.contains("//") {
        return path.to_string();
    }
    let prefix = if path.starts_with('/') { "/" } else { "" };
    let suffix = if path.ends_with('/') { "/" } else { "" };
    let inner: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("{prefix}{}{suffix}", inner.join("/"))
}

/// The values Envoy matches a header condition against: each occurrence
/// (a condition holds when one of them matches).
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim_matches([' ', '\t']))
        .collect()
}

/// The first value of query parameter `name`, compared raw (Envoy does not
/// percent-decode it for matching).
pub fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a path match holds for a normalized path.
pub fn path_holds(m: &PathMatch, path: &str, re: &RegexCache) -> Result<bool, String> {
    Ok(match m {
        PathMatch::Exact(p) => path == p,
        PathMatch::Prefix(p) if p == "/" => path.starts_with('/'),
        // path_separated_prefix: the prefix, then the end or a '/'.
        PathMatch::Prefix(p) => path
            .strip_prefix(p.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        PathMatch::Regex(r) => re.is_full_match(r, path)?,
    })
}

fn string_holds(m: &StringMatch, value: &str, re: &RegexCache) -> Result<bool, String> {
    match m {
        StringMatch::Exact(v) => Ok(value == v),
        StringMatch::Regex(r) => re.is_full_match(r, value),
    }
}

/// A request as the route matchers see it.
pub struct Seen<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a [(String, String)],
}

/// The conditions of `m` that held, described, or `None` if one failed.
pub fn route_holds(
    m: &RouteMatch,
    req: &Seen<'_>,
    re: &RegexCache,
) -> Result<Option<Vec<String>>, String> {
    let mut held = Vec::new();
    if !path_holds(&m.path, req.path, re)? {
        return Ok(None);
    }
    held.push(describe_path(&m.path));
    if let Some(method) = &m.method {
        if req.method != method {
            return Ok(None);
        }
        held.push(format!("method {method}"));
    }
    for h in &m.headers {
        let mut any = false;
        for v in header_values(req.headers, &h.name) {
            if string_holds(&h.value, v, re)? {
                any = true;
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        held.push(format!("header {}", describe(h)));
    }
    for q in &m.query_params {
        match query_value(req.query, &q.name) {
            Some(v) if string_holds(&q.value, v, re)? => {
                held.push(format!("query {}", describe(q)));
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(held))
}

pub fn describe_path(m: &PathMatch) -> String {
    match m {
        PathMatch::Exact(p) => format!("path Exact {p}"),
        PathMatch::Prefix(p) => format!("path PathPrefix {p}"),
        PathMatch::Regex(r) => format!("path RegularExpression {r}"),
    }
}

fn describe(h: &HeaderMatch) -> String {
    match &h.value {
        StringMatch::Exact(v) => format!("{} = {v:?}", h.name),
        StringMatch::Regex(r) => format!("{} ~ {r:?}", h.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_like_envoy() {
        let cases = [
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../a", "/a"),
            ("//a///b", "/a/b"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/", "/"),
            ("//", "//"),
            ("///", "//"),
            ("//static//x", "/static/x"),
            ("/a//", "/a/"),
            ("/%73tatic/%7e%2fx", "/static/~%2Fx"),
            ("/a/%2E%2E/b", "/b"),
        ];
        for (raw, want) in cases {
            assert_eq!(split_path(raw).0, want, "{raw}");
        }
        assert_eq!(
            split_path("/p?a=1&b#frag"),
            ("/p".to_string(), Some("a=1&b".to_string()))
        );
    }

    #[test]
    fn hosts_match_without_port_and_case() {
        assert_eq!(
            host_for_matching("Shop.Example.com:8080"),
            "shop.example.com"
        );
        assert_eq!(host_for_matching("[::1]:80"), "::1");
        assert_eq!(
            domain_rank("*.example.com", "a.b.example.com").map(|r| r.0),
            Some(1)
        );
        assert_eq!(domain_rank("*.example.com", "example.com"), None);
        assert!(domain_rank("*.example.com", "a.example.com") < domain_rank("*", "a.example.com"));
        assert!(
            domain_rank("*.b.example.com", "a.b.example.com")
                < domain_rank("*.example.com", "a.b.example.com")
        );
    }

    #[test]
    fn each_header_occurrence_counts_and_query_takes_the_first_raw_value() {
        let h = vec![
            ("X-A".to_string(), "1".to_string()),
            ("x-a".to_string(), " 2 ".to_string()),
        ];
        assert_eq!(header_values(&h, "x-a"), vec!["1", "2"]);
        assert!(header_values(&h, "x-b").is_empty());
        assert_eq!(query_value(Some("a=1&a=2"), "a"), Some("1"));
        assert_eq!(query_value(Some("b&a=%41"), "a"), Some("%41"));
        assert_eq!(query_value(Some("b&a=x"), "b"), Some(""));
        assert_eq!(query_value(Some("A=1"), "a"), None);
        assert_eq!(query_value(None, "a"), None);
    }

    #[test]
    fn prefixes_respect_segments() {
        let re = RegexCache::default();
        let p = |s: &str| PathMatch::Prefix(s.to_string());
        assert!(path_holds(&p("/api"), "/api", &re).unwrap_or(false));
        assert!(path_holds(&p("/api"), "/api/", &re).unwrap_or(false));
        assert!(path_holds(&p("/api"), "/api/v1", &re).unwrap_or(false));
        assert!(!path_holds(&p("/api"), "/apis", &re).unwrap_or(true));
        assert!(path_holds(&p("/"), "/anything", &re).unwrap_or(false));
        assert!(!path_holds(&PathMatch::Exact("/a".into()), "/A", &re).unwrap_or(true));
    }
}
