//! What `explain` evaluates: a request (HTTP) or a connection (TLS, TCP,
//! UDP) aimed at a Gateway port, and how it is written on the command line.

use serde::{Deserialize, Serialize};

use crate::inputs::ObjKey;

/// How the client talks to the Gateway port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Https,
    /// A TLS connection Envoy passes through or terminates (no HTTP).
    Tls,
    Tcp,
    Udp,
}

impl Protocol {
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
    /// The client speaks TLS to the Gateway.
    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
    fn default_port(self) -> Option<u16> {
        match self {
            Protocol::Http => Some(80),
            Protocol::Https | Protocol::Tls => Some(443),
            Protocol::Tcp | Protocol::Udp => None,
        }
    }
}

/// A request to evaluate. For L4 protocols only the target fields count.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Request {
    pub protocol: Protocol,
    /// The Gateway port the client connects to.
    pub port: u16,
    /// The Gateway address (when several Gateways use the port).
    pub address: Option<String>,
    /// The Gateway (when several use the port).
    pub gateway: Option<ObjKey>,
    /// TLS server name; defaults to the URL's host for https and tls.
    pub sni: Option<String>,
    pub method: String,
    /// The Host header (authority), as sent, possibly with a port.
    pub host: String,
    /// Path with its query string, as sent.
    pub path: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("request {0:?}: expected `[METHOD] SCHEME://HOST[:PORT][/PATH][?QUERY]`")]
    Shape(String),
    #[error("request {0:?}: unknown scheme {1:?} (http, https, tls, tcp, udp)")]
    Scheme(String, String),
    #[error("request {0:?}: port {1:?} is not a number from 1 to 65535")]
    Port(String, String),
    #[error("request {0:?}: a {1} URL needs an explicit port")]
    NoPort(String, &'static str),
    #[error("header {0:?}: expected `Name: value`")]
    Header(String),
    #[error("gateway {0:?}: expected NAMESPACE/NAME")]
    Gateway(String),
}

impl Request {
    /// Parses `GET https://shop.example.com:443/cart?x=1` (method optional,
    /// GET by default; `tls://`, `tcp://`, `udp://` URLs for L4).
    pub fn parse(text: &str) -> Result<Request, ParseError> {
        let shape = || ParseError::Shape(text.to_string());
        let mut words = text.split_whitespace();
        let first = words.next().ok_or_else(shape)?;
        let (method, url) = match words.next() {
            Some(url) => (first.to_string(), url),
            None => ("GET".to_string(), first),
        };
        if words.next().is_some() {
            return Err(shape());
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(shape)?;
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => return Err(ParseError::Scheme(text.into(), other.into())),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else if path.is_empty() {
            "/".to_string()
        } else {
            path.to_string()
        };
        let (host, port) = split_host_port(authority);
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| ParseError::Port(text.into(), p.into()))?,
            None => protocol.default_port().ok_or(ParseError::NoPort(
                text.into(),
                if protocol == Protocol::Tcp {
                    "tcp"
                } else {
                    "udp"
                },
            ))?,
        };
        if host.is_empty() && protocol.is_http() {
            return Err(shape());
        }
        Ok(Request {
            protocol,
            port,
            sni: (protocol.is_tls() && !host.is_empty()).then(|| host.to_string()),
            method: method.to_ascii_uppercase(),
            host: authority.to_string(),
            path,
            ..Request::default()
        })
    }

    /// Adds a `Name: value` header.
    pub fn header(&mut self, line: &str) -> Result<(), ParseError> {
        let (name, value) = line
            .split_once(':')
            .filter(|(n, _)| !n.trim().is_empty())
            .ok_or_else(|| ParseError::Header(line.to_string()))?;
        self.headers
            .push((name.trim().to_string(), value.trim().to_string()));
        Ok(())
    }
}

/// `NAMESPACE/NAME` (a bare name is in `default`).
pub fn parse_gateway(text: &str) -> Result<ObjKey, ParseError> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(ObjKey::new(ns, name))
        }
        None if !text.is_empty() => Ok(ObjKey::new("default", text)),
        _ => Err(ParseError::Gateway(text.to_string())),
    }
}

/// Splits `host:port`, `[v6]:port`, `host` (the port is not validated).
pub fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_method_scheme_host_port_path_query() {
        let r = Request::parse("POST https://Shop.example.com:8443/cart?x=1").expect("parses");
        assert_eq!(r.protocol, Protocol::Https);
        assert_eq!(r.method, "POST");
        assert_eq!(r.port, 8443);
        assert_eq!(r.host, "Shop.example.com:8443");
        assert_eq!(r.sni.as_deref(), Some("Shop.example.com"));
        assert_eq!(r.path, "/cart?x=1");
        let r = Request::parse("http://a.test?q").expect("parses");
        assert_eq!(
            (r.method.as_str(), r.port, r.path.as_str()),
            ("GET", 80, "/?q")
        );
        let r = Request::parse("tls://db.example.com:5432").expect("parses");
        assert_eq!((r.protocol, r.port), (Protocol::Tls, 5432));
        let r = Request::parse("http://[::1]:8080/x").expect("parses");
        assert_eq!((r.port, r.host.as_str()), (8080, "[::1]:8080"));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        assert!(matches!(
            Request::parse("GET shop/cart"),
            Err(ParseError::Shape(_))
        ));
        assert!(matches!(
            Request::parse("ftp://x/"),
            Err(ParseError::Scheme(..))
        ));
        assert!(matches!(
            Request::parse("http://x:0/"),
            Err(ParseError::Port(..))
        ));
        assert!(matches!(
            Request::parse("http://x:99999/"),
            Err(ParseError::Port(..))
        ));
        assert!(matches!(
            Request::parse("tcp://x"),
            Err(ParseError::NoPort(..))
        ));
        assert!(matches!(
            Request::parse("GET http://x/ extra"),
            Err(ParseError::Shape(_))
        ));
        let mut r = Request::default();
        assert!(r.header("x-a: b: c").is_ok());
        assert_eq!(r.headers, vec![("x-a".to_string(), "b: c".to_string())]);
        assert!(r.header("novalue").is_err());
        assert!(r.header(": v").is_err());
        assert_eq!(parse_gateway("ns/gw"), Ok(ObjKey::new("ns", "gw")));
        assert_eq!(parse_gateway("gw"), Ok(ObjKey::new("default", "gw")));
        assert!(parse_gateway("a/b/c").is_err());
    }
}
