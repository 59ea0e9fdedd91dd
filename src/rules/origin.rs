//! Where the target is told the app is: [`PublicOrigin`], [`TrustedProxies`], and how a
//! request's origin and client are worked out (see the [`proxy`](crate::proxy) module
//! docs).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
    sync::Arc,
};

use http::{HeaderMap, HeaderValue, Version, header, request};
pub use ipnet::IpNet;

use crate::{
    error::{ConfigError, ProxyError, ProxyErrorKind},
    rules::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO},
};

/// An origin (`http` or `https`, a host and a port) under which clients reach the app,
/// e.g. `https://app.example.com`.
///
/// Parsed once and validated: no user info, no path other than `/`, no query or fragment;
/// the host is a DNS name, an IPv4 address or a bracketed IPv6 address, lowercased; the
/// port is kept only when it is not the scheme's default (`https://app:443` is
/// `https://app`).
///
/// # Example
///
/// ```
/// use tower_identity_proxy::proxy::PublicOrigin;
///
/// let origin: PublicOrigin = "HTTPS://App.Example.com:443/".parse()?;
/// assert_eq!(origin.as_str(), "https://app.example.com");
/// assert_eq!(origin.port(), 443);
/// assert!("https://app.example.com/path".parse::<PublicOrigin>().is_err());
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PublicOrigin {
    https: bool,
    /// Lowercase; an IPv6 address in brackets.
    host: Box<str>,
    port: u16,
    /// `scheme://host[:port]`, the `iss` of tokens.
    serialized: Arc<str>,
    proto: HeaderValue,
    /// `host[:port]`, the `X-Forwarded-Host` of requests through it.
    host_header: HeaderValue,
}

impl PublicOrigin {
    /// Parses and validates an origin.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] naming the problem: a scheme other than `http` or
    /// `https`, user info, a path, query or fragment, no host or an invalid one, a port that
    /// is empty or not below 65536.
    pub fn parse(origin: &str) -> Result<Self, ConfigError> {
        let fail = |reason: &str| ConfigError::InvalidSetting {
            name: "public origin",
            reason: format!("{origin:?}: {reason}").into(),
        };
        let (scheme, rest) = origin
            .trim()
            .split_once("://")
            .ok_or_else(|| fail("an origin starts with http:// or https://"))?;
        let https = if scheme.eq_ignore_ascii_case("https") {
            true
        } else if scheme.eq_ignore_ascii_case("http") {
            false
        } else {
            return Err(fail("the scheme must be http or https"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '\\']) {
            return Err(fail("an origin has no path, query or fragment"));
        }
        if authority.contains('@') {
            return Err(fail("an origin has no user info"));
        }
        let (host, port) = split_host_port(authority.as_bytes())
            .ok_or_else(|| fail("the host or port is invalid"))?;
        let host = std::str::from_utf8(host)
            .map_err(|_| fail("the host is invalid"))?
            .to_ascii_lowercase();
        if !valid_host(&host) {
            return Err(fail("the host must be a DNS name or an IP address"));
        }
        let default_port = if https { 443 } else { 80 };
        let port = port.unwrap_or(default_port);
        let host_header = if port == default_port {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        let serialized = format!("{}://{host_header}", if https { "https" } else { "http" });
        Ok(Self {
            https,
            proto: HeaderValue::from_static(if https { "https" } else { "http" }),
            host_header: HeaderValue::try_from(host_header)
                .map_err(|_| fail("the host is invalid"))?,
            host: host.into(),
            port,
            serialized: serialized.into(),
        })
    }

    /// Parses an origin written in the program, as `HeaderValue::from_static` does.
    ///
    /// # Panics
    ///
    /// If `origin` is not valid (see [`parse`](Self::parse)): a programmer's error. Parse
    /// origins that come from configuration with [`parse`](Self::parse) or `str::parse`.
    pub fn from_static(origin: &'static str) -> Self {
        match Self::parse(origin) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    /// `scheme://host[:port]`, the port only when it is not the scheme's default.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// The host, lowercase (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default when none was given.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `iss` of tokens for requests through this origin.
    pub(crate) fn issuer(&self) -> &Arc<str> {
        &self.serialized
    }

    /// Whether a client that addressed `authority` (a validated `Host` value) with
    /// `scheme` (when known) reached this origin.
    pub(crate) fn matches(&self, authority: &[u8], https: Option<bool>) -> bool {
        if https.is_some_and(|https| https != self.https) {
            return false;
        }
        let Some((host, port)) = split_host_port(authority) else {
            return false;
        };
        let default_port = if self.https { 443 } else { 80 };
        host.eq_ignore_ascii_case(self.host.as_bytes()) && port.unwrap_or(default_port) == self.port
    }
}

impl FromStr for PublicOrigin {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PublicOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialized)
    }
}

impl fmt::Debug for PublicOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicOrigin")
            .field(&self.serialized)
            .finish()
    }
}

/// `host` and the optional port of an authority; `None` for an empty host, or a port that
/// is empty, not digits, or not below 65536.
fn split_host_port(authority: &[u8]) -> Option<(&[u8], Option<u16>)> {
    let (host, port) = if authority.first() == Some(&b'[') {
        let end = authority.iter().position(|b| *b == b']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            [] => (host, None),
            [b':', port @ ..] => (host, Some(port)),
            _ => return None,
        }
    } else {
        match authority.iter().rposition(|b| *b == b':') {
            Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit) => {
            Some(std::str::from_utf8(p).ok()?.parse::<u16>().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// A DNS name (letters, digits, `-`, `.`; labels of at most 63), an IPv4 address, or an
/// IPv6 address in brackets.
fn valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63)
}

/// The networks of the proxies in front of the app (load balancers, TLS terminators) whose
/// forwarded headers count: see
/// [`ProxyLayer::trusted_proxies`](crate::ProxyLayer::trusted_proxies).
///
/// # Example
///
/// ```
/// use tower_identity_proxy::proxy::TrustedProxies;
///
/// let proxies = TrustedProxies::new()
///     .network("10.0.0.0/8".parse()?)
///     .network("::1/128".parse()?);
/// assert!(proxies.contains("10.1.2.3".parse()?));
/// assert!(!proxies.contains("192.0.2.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// No trusted proxy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the proxies in `network` (`10.0.0.0/8`, `192.0.2.7/32`, `fd00::/8`); an
    /// address alone is a network of one (`"192.0.2.7".parse::<IpAddr>()?.into()`).
    #[must_use]
    pub fn network(mut self, network: IpNet) -> Self {
        self.networks.push(network.trunc());
        self
    }

    /// Whether `addr` is in one of the networks. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4 peers) counts as its IPv4
    /// address.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.networks.iter().any(|n| n.contains(&addr))
    }

    /// Whether no network is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

/// What the target is told of a request's origin and client.
pub(crate) struct Inbound<'a> {
    /// `X-Forwarded-Proto`.
    pub(crate) proto: HeaderValue,
    /// `X-Forwarded-Host`.
    pub(crate) host: HeaderValue,
    /// The client's address, for `X-Forwarded-For`.
    pub(crate) client: Option<IpAddr>,
    /// The public origin the request came through, when the layer knows its origins.
    pub(crate) origin: Option<&'a PublicOrigin>,
}

/// Where the app is and who the client is, as far as the layer can tell: see the
/// [module docs](self).
#[derive(Clone, Debug, Default)]
pub(crate) struct Origins {
    pub(crate) public: Vec<PublicOrigin>,
    pub(crate) trusted: TrustedProxies,
}

impl Origins {
    /// Works out a request's origin and client. `authority` is the validated `Host`,
    /// `default_proto` the layer's `X-Forwarded-Proto`, `peer` the connection's peer.
    pub(crate) fn resolve(
        &self,
        parts: &request::Parts,
        authority: HeaderValue,
        default_proto: &HeaderValue,
        peer: Option<IpAddr>,
    ) -> Result<Inbound<'_>, ProxyError> {
        // The HTTP/2 `:scheme`; an HTTP/1.1 absolute-form target's is the client's word only.
        let mut https = match parts.uri.scheme_str() {
            Some(s) if parts.version == Version::HTTP_2 => Some(s.eq_ignore_ascii_case("https")),
            _ => None,
        };
        let mut host = authority;
        let mut client = peer;
        if let Some(peer) = peer
            && !self.trusted.is_empty()
            && self.trusted.contains(peer)
            && let Some(hop) = self.nearest_untrusted_hop(&parts.headers, peer)?
        {
            client = hop.client;
            if let Some(proto) = hop.https {
                https = Some(proto);
            }
            if let Some(h) = hop.host {
                host = h;
            }
        }
        if self.public.is_empty() {
            let proto = match https {
                Some(true) => HeaderValue::from_static("https"),
                Some(false) => HeaderValue::from_static("http"),
                None => default_proto.clone(),
            };
            return Ok(Inbound {
                proto,
                host,
                client,
                origin: None,
            });
        }
        let origin = self
            .public
            .iter()
            .find(|o| o.matches(host.as_bytes(), https))
            .ok_or_else(|| ProxyError::new(ProxyErrorKind::Misdirected))?;
        Ok(Inbound {
            proto: origin.proto.clone(),
            host: origin.host_header.clone(),
            client,
            origin: Some(origin),
        })
    }

    /// What a trusted `peer` forwarded: the hop that reached the first trusted proxy, read
    /// from `Forwarded` or else `X-Forwarded-*`; `None` when it forwarded nothing.
    fn nearest_untrusted_hop<'a>(
        &self,
        headers: &'a HeaderMap,
        peer: IpAddr,
    ) -> Result<Option<Hop>, ProxyError> {
        if headers.contains_key(header::FORWARDED) {
            let elements = parse_forwarded(headers)
                .ok_or_else(|| bad("The Forwarded header from a trusted proxy is invalid."))?;
            let i = self.client_index(elements.iter().map(|e| e.node));
            let Some(element) = i.map(|i| &elements[i]) else {
                return Ok(None);
            };
            let client = match element.node {
                Node::Ip(ip) => Some(ip),
                Node::Unknown => None,
                Node::Absent => Some(peer),
            };
            return Ok(Some(Hop {
                client,
                https: element.proto.map(parse_proto).transpose()?,
                host: element.host.map(parse_host).transpose()?,
            }));
        }
        let fors = list_elements(headers, &X_FORWARDED_FOR);
        let protos = list_elements(headers, &X_FORWARDED_PROTO);
        let hosts = list_elements(headers, &X_FORWARDED_HOST);
        if fors.is_empty() && protos.is_empty() && hosts.is_empty() {
            return Ok(None);
        }
        let nodes: Vec<Node> = fors.iter().map(|f| parse_node(f)).collect();
        let (i, client) = match self.client_index(nodes.iter().copied()) {
            Some(i) => (
                Some(i),
                match nodes[i] {
                    Node::Ip(ip) => Some(ip),
                    _ => None,
                },
            ),
            None => (None, Some(peer)),
        };
        // One value is the front's; a list that matches `X-Forwarded-For` hop for hop is
        // read at the client's hop; any other list is ambiguous, and ignored.
        let pick = |values: &[&'a [u8]]| -> Option<&'a [u8]> {
            match values {
                [one] => Some(*one),
                many if many.len() == nodes.len() => i.map(|i| many[i]),
                _ => None,
            }
        };
        Ok(Some(Hop {
            client,
            https: pick(&protos).map(parse_proto).transpose()?,
            host: pick(&hosts).map(parse_host).transpose()?,
        }))
    }

    /// Reading from the nearest hop back, the first that is not a trusted proxy (an
    /// unknown or hidden address is not one); the farthest when all are.
    fn client_index(
        &self,
        nodes: impl DoubleEndedIterator<Item = Node> + ExactSizeIterator,
    ) -> Option<usize> {
        let mut farthest = None;
        for (i, node) in nodes.enumerate().rev() {
            farthest = Some(i);
            match node {
                Node::Ip(ip) if self.trusted.contains(ip) => {}
                _ => return Some(i),
            }
        }
        farthest
    }
}

/// The hop a trusted proxy reports: who connected to it, how, and for which host.
struct Hop {
    client: Option<IpAddr>,
    https: Option<bool>,
    host: Option<HeaderValue>,
}

fn bad(reason: &'static str) -> ProxyError {
    ProxyError::new(ProxyErrorKind::BadRequest(reason))
}

fn parse_proto(proto: &[u8]) -> Result<bool, ProxyError> {
    if proto.eq_ignore_ascii_case(b"https") {
        Ok(true)
    } else if proto.eq_ignore_ascii_case(b"http") {
        Ok(false)
    } else {
        Err(bad(
            "The forwarded protocol from a trusted proxy is invalid.",
        ))
    }
}

fn parse_host(host: &[u8]) -> Result<HeaderValue, ProxyError> {
    if crate::rules::rewrite::authority_is_valid(host) {
        HeaderValue::from_bytes(host)
            .map_err(|_| bad("The forwarded host from a trusted proxy is invalid."))
    } else {
        Err(bad("The forwarded host from a trusted proxy is invalid."))
    }
}

/// A hop's address, as `for=` or `X-Forwarded-For` name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Ip(IpAddr),
    /// `unknown`, an obfuscated `_name`, or anything that is not an address.
    Unknown,
    /// An element without `for=`.
    Absent,
}

/// `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]:8080`, quotes removed.
fn parse_node(value: &[u8]) -> Node {
    let Ok(s) = std::str::from_utf8(value) else {
        return Node::Unknown;
    };
    let s = s.trim().trim_matches('"');
    if let Some(rest) = s.strip_prefix('[') {
        return rest
            .split_once(']')
            .and_then(|(ip, _)| ip.parse::<Ipv6Addr>().ok())
            .map_or(Node::Unknown, |ip| Node::Ip(IpAddr::V6(ip)));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Node::Ip(ip);
    }
    match s.split_once(':') {
        Some((ip, port)) if port.bytes().all(|b| b.is_ascii_digit()) => ip
            .parse::<Ipv4Addr>()
            .map_or(Node::Unknown, |ip| Node::Ip(IpAddr::V4(ip))),
        _ => Node::Unknown,
    }
}

/// The comma-separated elements of every line of a list header, trimmed, empty ones
/// skipped.
fn list_elements<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Vec<&'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(crate::rules::headers::list_tokens)
        .collect()
}

/// One element of `Forwarded` (RFC 7239 §4), its values unquoted.
struct Element<'a> {
    node: Node,
    proto: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
}

/// Every element of every `Forwarded` line, in order; `None` when the syntax is broken
/// (RFC 7239 §4: `pair *( ";" pair )` separated by commas, each value a token or a quoted
/// string; a parameter given twice in one element is invalid too).
fn parse_forwarded(headers: &HeaderMap) -> Option<Vec<Element<'_>>> {
    let mut elements = Vec::new();
    for line in headers.get_all(header::FORWARDED) {
        let bytes = line.as_bytes();
        let mut i = 0;
        let mut element = Element {
            node: Node::Absent,
            proto: None,
            host: None,
        };
        let mut seen = [false; 3];
        let mut pairs = 0;
        loop {
            // Blanks and empty pairs or elements (`;;`, `,,`) are allowed around pairs.
            while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b';') {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b',' {
                if pairs > 0 {
                    elements.push(std::mem::replace(
                        &mut element,
                        Element {
                            node: Node::Absent,
                            proto: None,
                            host: None,
                        },
                    ));
                    seen = [false; 3];
                    pairs = 0;
                }
                i += 1;
                continue;
            }
            if i == bytes.len() {
                break;
            }
            let name_start = i;
            while i < bytes.len() && is_tchar(bytes[i]) {
                i += 1;
            }
            let name = &bytes[name_start..i];
            if name.is_empty() || bytes.get(i) != Some(&b'=') {
                return None;
            }
            i += 1;
            let value = if bytes.get(i) == Some(&b'"') {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && bytes[j] != b'"' {
                    // Quoted pairs are not needed by any value read here: refused.
                    if bytes[j] == b'\\' {
                        return None;
                    }
                    j += 1;
                }
                if j == bytes.len() {
                    return None;
                }
                i = j + 1;
                &bytes[start..j]
            } else {
                let start = i;
                while i < bytes.len() && is_tchar(bytes[i]) {
                    i += 1;
                }
                &bytes[start..i]
            };
            // After a pair: blanks, then `;`, `,` or the end.
            while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
                i += 1;
            }
            if i < bytes.len() && !matches!(bytes[i], b';' | b',') {
                return None;
            }
            pairs += 1;
            let slot = if name.eq_ignore_ascii_case(b"for") {
                element.node = parse_node(value);
                0
            } else if name.eq_ignore_ascii_case(b"proto") {
                element.proto = Some(value);
                1
            } else if name.eq_ignore_ascii_case(b"host") {
                element.host = Some(value);
                2
            } else {
                continue;
            };
            if std::mem::replace(&mut seen[slot], true) {
                return None;
            }
        }
        if pairs > 0 {
            elements.push(element);
        }
    }
    Some(elements)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(public: &[&str], trusted: &[&str]) -> Origins {
        Origins {
            public: public
                .iter()
                .map(|o| PublicOrigin::parse(o).unwrap())
                .collect(),
            trusted: trusted
                .iter()
                .fold(TrustedProxies::new(), |t, n| t.network(n.parse().unwrap())),
        }
    }

    fn parts(version: Version, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut b = http::Request::builder().version(version).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// (proto, host, client, iss) or the status.
    fn resolve(
        o: &Origins,
        host: &str,
        headers: &[(&str, &str)],
        peer: &str,
    ) -> Result<(String, String, Option<String>, Option<String>), u16> {
        let p = parts(Version::HTTP_11, "/proxy", headers);
        o.resolve(
            &p,
            HeaderValue::from_str(host).unwrap(),
            &HeaderValue::from_static("http"),
            Some(peer.parse().unwrap()),
        )
        .map(|i| {
            (
                i.proto.to_str().unwrap().to_owned(),
                i.host.to_str().unwrap().to_owned(),
                i.client.map(|c| c.to_string()),
                i.origin.map(|o| o.as_str().to_owned()),
            )
        })
        .map_err(|e| e.status().as_u16())
    }

    #[test]
    fn origins_are_parsed_and_normalised() {
        for (given, want, port) in [
            ("https://app.example.com", "https://app.example.com", 443),
            (
                "HTTPS://App.Example.COM:443/",
                "https://app.example.com",
                443,
            ),
            ("http://app:80", "http://app", 80),
            ("http://app:8080", "http://app:8080", 8080),
            ("https://127.0.0.1:8443", "https://127.0.0.1:8443", 8443),
            ("http://[::1]:8080", "http://[::1]:8080", 8080),
        ] {
            let o = PublicOrigin::parse(given).unwrap();
            assert_eq!(o.as_str(), want, "{given}");
            assert_eq!(o.port(), port, "{given}");
        }
        for bad in [
            "app.example.com",
            "ftp://app",
            "https://",
            "https://u@app",
            "https://app/path",
            "https://app?x",
            "https://app#x",
            "https://app:",
            "https://app:99999",
            "https://app:8x",
            "https://a_b",
            "https://a..b",
            "https://[zz]",
            "https://app\\x",
        ] {
            assert!(PublicOrigin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    #[should_panic(expected = "public origin")]
    fn from_static_panics_on_a_bad_origin() {
        let _ = PublicOrigin::from_static("ftp://app");
    }

    #[test]
    fn a_host_must_match_a_public_origin() {
        let o = origins(&["https://app.example.com", "http://other:8080"], &[]);
        let ok = |host| resolve(&o, host, &[], "192.0.2.1");
        assert_eq!(
            ok("app.example.com").unwrap(),
            (
                "https".into(),
                "app.example.com".into(),
                Some("192.0.2.1".into()),
                Some("https://app.example.com".into())
            )
        );
        assert_eq!(ok("APP.example.com:443").unwrap().1, "app.example.com");
        assert_eq!(ok("other:8080").unwrap().0, "http");
        for misdirected in [
            "attacker.example",
            "app.example.com:80",
            "app.example.com:8443",
            "other",
            "app.example.com.",
            "evil.app.example.com",
        ] {
            assert_eq!(ok(misdirected), Err(421), "{misdirected}");
        }
        // The HTTP/2 `:scheme` counts: plain http is not the https origin.
        let p = parts(Version::HTTP_2, "http://app.example.com/proxy", &[]);
        let e = o
            .resolve(
                &p,
                HeaderValue::from_static("app.example.com"),
                &HeaderValue::from_static("http"),
                None,
            )
            .err()
            .unwrap();
        assert_eq!(e.status(), 421);
        // Without public origins: the host as sent, the scheme `:scheme` or the default.
        let none = origins(&[], &[]);
        assert_eq!(
            resolve(&none, "attacker.example:1", &[], "192.0.2.1").unwrap(),
            (
                "http".into(),
                "attacker.example:1".into(),
                Some("192.0.2.1".into()),
                None
            )
        );
        let p = parts(Version::HTTP_2, "https://a/proxy", &[]);
        let i = none
            .resolve(
                &p,
                HeaderValue::from_static("a"),
                &HeaderValue::from_static("http"),
                None,
            )
            .ok()
            .unwrap();
        assert_eq!(i.proto, "https");
    }

    #[test]
    fn forwarded_headers_count_from_trusted_peers_only() {
        let o = origins(&[], &["10.0.0.0/8"]);
        let headers = [
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com"),
        ];
        assert_eq!(
            resolve(&o, "internal:8080", &headers, "10.1.2.3").unwrap(),
            (
                "https".into(),
                "app.example.com".into(),
                Some("203.0.113.7".into()),
                None
            )
        );
        assert_eq!(
            resolve(&o, "internal:8080", &headers, "192.0.2.9").unwrap(),
            (
                "http".into(),
                "internal:8080".into(),
                Some("192.0.2.9".into()),
                None
            )
        );
        // IPv4-mapped peers are their IPv4 address.
        assert_eq!(
            resolve(&o, "internal", &headers, "::ffff:10.1.2.3")
                .unwrap()
                .1,
            "app.example.com"
        );
    }

    #[test]
    fn the_nearest_untrusted_hop_wins() {
        let o = origins(&[], &["10.0.0.0/8", "192.0.2.0/24"]);
        let client = |xff: &str| {
            resolve(&o, "h", &[("x-forwarded-for", xff)], "10.0.0.1")
                .unwrap()
                .2
        };
        // A client's own spoofed entry on the left is never reached.
        assert_eq!(
            client("6.6.6.6, 203.0.113.7, 192.0.2.5").as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(client("203.0.113.7:4711").as_deref(), Some("203.0.113.7"));
        assert_eq!(client("[2001:db8::1]:4711").as_deref(), Some("2001:db8::1"));
        assert_eq!(client("unknown, 10.0.0.2").as_deref(), None);
        // All trusted: the farthest.
        assert_eq!(client("10.9.9.9, 10.0.0.2").as_deref(), Some("10.9.9.9"));

        // Forwarded: the element of the client's hop gives scheme and host.
        let fwd = |value: &str| resolve(&o, "h", &[("forwarded", value)], "10.0.0.1");
        assert_eq!(
            fwd(r#"for=6.6.6.6;host=evil;proto=http, for=203.0.113.7;host=app.example.com;proto=https, for=192.0.2.5;host=lb;proto=http"#)
                .unwrap(),
            (
                "https".into(),
                "app.example.com".into(),
                Some("203.0.113.7".into()),
                None
            )
        );
        assert_eq!(
            fwd(r#"For="[2001:db8:cafe::17]:4711";Proto=HTTPS"#)
                .unwrap()
                .2
                .as_deref(),
            Some("2001:db8:cafe::17")
        );
        assert_eq!(fwd("proto=https;host=app").unwrap().0, "https");
        for broken in [
            r#"for="unterminated"#,
            "for",
            "for=a b",
            "for=1.2.3.4;for=5.6.7.8",
            r#"for="a\"b""#,
            "proto=ftp",
            "host=\"a b\"",
        ] {
            assert_eq!(fwd(broken), Err(400), "{broken}");
        }
    }

    #[test]
    fn forwarded_origins_must_be_public_ones() {
        let o = origins(&["https://app.example.com"], &["127.0.0.2/32"]);
        let through = |proto: &str, host: &str| {
            resolve(
                &o,
                "127.0.0.1:8080",
                &[("x-forwarded-proto", proto), ("x-forwarded-host", host)],
                "127.0.0.2",
            )
        };
        assert_eq!(
            through("https", "app.example.com").unwrap().3.as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(through("http", "app.example.com"), Err(421));
        assert_eq!(through("https", "attacker.example"), Err(421));
    }
}
