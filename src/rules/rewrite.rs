//! The pure request and response rewriting: path mapping and header rules, testable and
//! fuzzable without sockets.
//!
//! [`rewrite_request`] turns the parts of a request under the prefix into the parts of the
//! request sent to the target, or refuses it:
//! - the path after the prefix is appended to the target's base path (`/proxy` → the base
//!   path, or `/`); the query string is kept byte for byte; dot-segments (`..`, `%2e%2e`,
//!   `..;`, with `\`, `%2f` or `%5c` as separators) are refused, so no request can climb out
//!   of the base path, and so are spellings that targets decode otherwise than the proxy
//!   reads them (a NUL, `%u002e`, escapes that are not UTF-8, double encoding: see
//!   `check_path`); the path is otherwise forwarded unchanged (`%2F` stays `%2F`);
//! - `Host` must be present once and valid (HTTP/2: `:authority`, and a `host` that
//!   disagrees is refused); an absolute-form request target never chooses the upstream, and
//!   one whose authority differs from `Host` is refused;
//! - `CONNECT`, `TRACE` and IIS's `TRACK` are refused (`405`), also when asked for through a
//!   method-override header (`X-HTTP-Method-Override: TRACE`); `OPTIONS` with
//!   `Max-Forwards: 0` is answered by the proxy, other values are decremented (RFC 9110
//!   §7.6.2);
//! - `Transfer-Encoding` must be exactly one `chunked` (`400`; another coding: `501`), and
//!   the body framing is the proxy's: one `Content-Length` or chunked, never both, so a GET
//!   with a body keeps it;
//! - hop-by-hop headers (RFC 9110 §7.6.1, every name listed on every `Connection` line, read
//!   once into a set of at most 32 names: more is `400`) are removed *before* the proxy adds
//!   its own, so `Connection: Authorization` cannot strip the
//!   token; `te: trailers` is kept when the client listed it;
//! - the client's `Authorization`, `Proxy-Authorization`, `Forwarded`, `X-Forwarded-*`,
//!   `X-Real-IP`, `X-Original-URL`, `X-Rewrite-URL`, `X-Original-URI` (they would move the
//!   request out of the base path on targets that honour them), the headers only a hop in
//!   front of the target may state (`Proxy`, client addresses, host overrides, identity
//!   headers: see the README), `Expect`, `Cookie` (see [`CookiePolicy`]) and their `_` twins
//!   (`X_Forwarded_Host`) never pass; `X-Forwarded-Proto` and `X-Forwarded-Host` are set,
//!   and `X-Forwarded-For` when the layer is told where to find the client's address
//!   ([`ProxyLayer::forwarded_for`](crate::ProxyLayer::forwarded_for)), as the
//!   [`origin`](crate::origin) rules say (public origins, trusted proxies);
//!   `Via` is appended (a request that already went through this proxy is a loop: `508`);
//! - the version becomes HTTP/1.1 (the client speaks HTTP/2 where the target does);
//! - the request's trailers, as the body streams, lose the same managed fields (and those
//!   RFC 9110 §6.5.1 keeps out of trailers), so none can be smuggled past these rules to a
//!   target that merges trailers into the header section.
//!
//! The `Authorization: Bearer` token is added afterwards, once the identity is known.
//!
//! On the way back, [`check_response`] refuses framing that cannot be relayed (`502`: a
//! transfer coding other than `chunked`, an invalid `Content-Length`), [`rewrite_response`]
//! removes hop-by-hop headers and the ones with an effect on the app's whole origin (see
//! [`ResponsePolicy`]), states `Content-Length` once and appends
//! `Via`, and
//! [`scope_set_cookies`] keeps the target's cookies under the prefix.
//!
//! # Example
//!
//! ```
//! use http::Request;
//! use tower_identity_proxy::{Target, __fuzzing::{Framing, RewriteConfig, rewrite_request}};
//!
//! let config = RewriteConfig::new("/proxy")?;
//! let target = Target::parse("http://127.0.0.1:1991/base")?;
//! let (parts, ()) = Request::get("/proxy/some/path?foo=bar")
//!     .header("host", "example.com:1337")
//!     .header("authorization", "Basic QWxpY2U6cHc=")
//!     .body(())
//!     .unwrap()
//!     .into_parts();
//! let up = rewrite_request(&parts, &target, &config, Framing::Empty).unwrap();
//! assert_eq!(up.uri, "http://127.0.0.1:1991/base/some/path?foo=bar");
//! assert_eq!(up.headers["x-forwarded-host"], "example.com:1337");
//! assert!(up.headers.get("authorization").is_none());
//! # Ok::<(), tower_identity_proxy::ConfigError>(())
//! ```

use std::{net::IpAddr, sync::Arc};

use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version, header, request,
    response,
    uri::{Authority, PathAndQuery},
};

use crate::{
    error::{ConfigError, ProxyError, ProxyErrorKind},
    rules::{
        headers::{
            CookiePolicy, Nominated, Present, ResponsePolicy, X_FORWARDED_FOR, X_FORWARDED_HOST,
            X_FORWARDED_PROTO, append_via, is_front_claim, is_hop_by_hop, is_method_override,
            is_path_override, is_refused_method_override, is_underscore_twin,
            remove_hop_by_hop_given, via_contains,
        },
        origin::{Origins, PublicOrigin, TrustedProxies},
        settings::{ForwardedProto, Prefix, Pseudonym},
    },
    target::Target,
};

/// How the request body is framed, as the caller knows it from the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// A body of known length (a `Content-Length` header is present).
    Length,
    /// A body of unknown length: sent chunked.
    Unknown,
}

/// What the rewriting needs to know, fixed when the layer is built.
#[derive(Clone, Debug)]
pub struct RewriteConfig {
    prefix: Prefix,
    forwarded_proto: HeaderValue,
    pseudonym: Pseudonym,
    via_request: [HeaderValue; 3],
    via_response: [HeaderValue; 3],
    cookies: CookiePolicy,
    responses: ResponsePolicy,
    forwarded_for: Option<ClientAddr>,
    origins: Origins,
}

/// How to find the client's address for `X-Forwarded-For`: see
/// [`ProxyLayer::forwarded_for`](crate::ProxyLayer::forwarded_for).
#[derive(Clone)]
pub(crate) struct ClientAddr(Arc<FindClientAddr>);

/// A function that finds the client's address in a request's head.
type FindClientAddr = dyn Fn(&request::Parts) -> Option<IpAddr> + Send + Sync;

impl std::fmt::Debug for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientAddr(..)")
    }
}

fn version_index(v: Version) -> usize {
    match v {
        Version::HTTP_10 | Version::HTTP_09 => 0,
        Version::HTTP_2 | Version::HTTP_3 => 2,
        _ => 1,
    }
}

impl RewriteConfig {
    /// Rewriting for requests under `prefix`, with a random `Via` pseudonym,
    /// `X-Forwarded-Proto: http` and the default [`CookiePolicy`].
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidPrefix`] unless the prefix starts with `/`, does not end with
    /// `/`, and holds only unreserved path characters.
    pub fn new(prefix: &str) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        config.set_prefix(Prefix::new(prefix)?);
        Ok(config)
    }

    pub(crate) fn set_prefix(&mut self, prefix: Prefix) {
        self.prefix = prefix;
    }

    pub(crate) fn set_pseudonym(&mut self, pseudonym: Pseudonym) {
        let values = pseudonym.via_values();
        self.pseudonym = pseudonym;
        self.via_request = values.clone();
        self.via_response = values;
    }

    pub(crate) fn set_forwarded_proto(&mut self, proto: ForwardedProto) {
        self.forwarded_proto = proto.header_value();
    }

    pub(crate) fn set_cookies(&mut self, cookies: CookiePolicy) {
        self.cookies = cookies;
    }

    pub(crate) fn set_responses(&mut self, responses: ResponsePolicy) {
        self.responses = responses;
    }

    /// Adds a public origin (once).
    pub(crate) fn add_public_origin(&mut self, origin: PublicOrigin) {
        if !self.origins.public.contains(&origin) {
            self.origins.public.push(origin);
        }
    }

    pub(crate) fn set_trusted_proxies(&mut self, trusted: TrustedProxies) {
        self.origins.trusted = trusted;
    }

    /// Whether forwarded headers may be trusted but no peer address can be found.
    pub(crate) fn trusts_without_peer(&self) -> bool {
        !self.origins.trusted.is_empty() && self.forwarded_for.is_none()
    }

    /// The app's public origins.
    pub fn public_origins(&self) -> &[PublicOrigin] {
        &self.origins.public
    }

    /// Sends `X-Forwarded-For` with the address `client` finds in each request.
    pub(crate) fn set_forwarded_for(
        &mut self,
        client: impl Fn(&request::Parts) -> Option<IpAddr> + Send + Sync + 'static,
    ) {
        self.forwarded_for = Some(ClientAddr(Arc::new(client)));
    }

    /// The prefix the layer takes over.
    pub fn prefix(&self) -> &str {
        self.prefix.as_str()
    }

    /// The `Via` pseudonym of this proxy, also used to detect loops.
    pub fn pseudonym(&self) -> &str {
        self.pseudonym.as_str()
    }

    /// Whether `path` is under the prefix: exactly the prefix or `prefix/…`.
    #[inline]
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl Default for RewriteConfig {
    /// The prefix `/proxy`, a random pseudonym, `X-Forwarded-Proto: http`, no cookies.
    fn default() -> Self {
        let pseudonym = Pseudonym::random();
        let values = pseudonym.via_values();
        Self {
            prefix: Prefix::default(),
            forwarded_proto: ForwardedProto::Http.header_value(),
            pseudonym,
            via_request: values.clone(),
            via_response: values,
            cookies: CookiePolicy::default(),
            responses: ResponsePolicy::default(),
            forwarded_for: None,
            origins: Origins::default(),
        }
    }
}

fn bad(reason: &'static str) -> ProxyError {
    ProxyError::new(ProxyErrorKind::BadRequest(reason))
}

/// Whether an authority (a `Host` value, or a request target's) can name the app: no user
/// info, a host, and a port (if any) that is a number below 65536.
pub(crate) fn authority_is_valid(s: &[u8]) -> bool {
    // Most are a name or an IPv4 address, with or without a port: told apart in one pass
    // over the bytes, without the copy into an `Authority` and the five walks of the
    // general check.
    match plain_authority_is_valid(s) {
        Some(valid) => valid,
        None => Authority::try_from(s).is_ok_and(|a| any_authority_is_valid(&a)),
    }
}

/// [`authority_is_valid`] for any authority.
fn any_authority_is_valid(a: &Authority) -> bool {
    let s = a.as_str();
    if s.contains('@') || a.host().is_empty() {
        return false;
    }
    match s.strip_prefix(a.host()) {
        Some("") => true,
        Some(port) => port.starts_with(':') && a.port_u16().is_some(),
        None => false,
    }
}

/// [`authority_is_valid`] for an authority made of a host name or IPv4 address (letters,
/// digits, `.`, `-`) and an optional port of up to five digits; `None` for anything else,
/// which the general check decides.
fn plain_authority_is_valid(s: &[u8]) -> Option<bool> {
    let host_len = s
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-'))
        .unwrap_or(s.len());
    if host_len == 0 {
        return None;
    }
    match &s[host_len..] {
        [] => Some(true),
        [b':', port @ ..]
            if (1..=5).contains(&port.len()) && port.iter().all(u8::is_ascii_digit) =>
        {
            let port = port.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
            Some(port <= u32::from(u16::MAX))
        }
        _ => None,
    }
}

/// The authority the client addressed: `Host` (or `:authority` over HTTP/2, or the
/// absolute-form target), validated.
fn client_authority(parts: &request::Parts) -> Result<HeaderValue, ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad("The request has more than one Host header."));
    }
    let check_host = |v: &HeaderValue| {
        if authority_is_valid(v.as_bytes()) {
            Ok(())
        } else {
            Err(bad("The Host header is invalid."))
        }
    };
    match (parts.uri.authority(), host) {
        // HTTP/2 `:authority` or HTTP/1.1 absolute-form: the URI's authority is the host
        // (RFC 9112 §3.2.2, RFC 9113 §8.3.1); a `Host` that disagrees is refused, so an
        // absolute-form target can never choose what the target is told about the app.
        (Some(authority), host) => {
            if !authority_is_valid(authority.as_str().as_bytes()) {
                return Err(bad("The request target's authority is invalid."));
            }
            if parts.version != Version::HTTP_2 && host.is_none() {
                return Err(bad("The request has no Host header."));
            }
            if let Some(h) = host {
                check_host(h)?;
                if !h
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes())
                {
                    return Err(bad("The Host header disagrees with the request target."));
                }
            }
            HeaderValue::from_str(authority.as_str())
                .map_err(|_| bad("The Host header is invalid."))
        }
        (None, Some(h)) => {
            check_host(h)?;
            Ok(h.clone())
        }
        (None, None) => Err(bad("The request has no Host header.")),
    }
}

/// Refuses a path that could climb out of the base path, or that targets could read
/// otherwise than the proxy does, in any spelling:
/// - dot-segments (`.`, `..`), also percent-encoded (`%2e%2e`) or followed by servlet
///   parameters (`..;x`): targets differ in what they treat as a separator (servlet
///   containers `\` and `;`, apps that decode `%2F` before routing), so every one of `/`,
///   `\`, `%2f` and `%5c` ends a segment here, and `;` (or `%3b`) starts a segment's
///   parameters;
/// - a NUL byte (`%00`): C-based targets end the path there (`..%00`);
/// - a `%` not followed by two hex digits, which covers IIS's `%u002e` escapes;
/// - percent-encoded bytes that, decoded, are not valid UTF-8, overlong forms included
///   (`%c0%ae` is `.` to a lenient decoder);
/// - a double-encoded dot, slash, backslash or NUL (`%252e`, `%252f`, `%255c`, `%2500`, in
///   any mix of encoded and plain digits): a target that decodes twice would see the
///   character itself.
///
/// The path itself is forwarded unchanged. `Err` holds the reason for the client.
pub(crate) fn check_path(rest: &str) -> Result<(), &'static str> {
    /// What is known of the segment read so far, without keeping its bytes.
    #[derive(Default)]
    struct Segment {
        /// Decoded bytes of its name (before any `;`).
        len: usize,
        /// Whether they are all '.'.
        dots_only: bool,
        /// Past a `;`: `..;param` is `..` to servlet containers.
        in_params: bool,
    }
    impl Segment {
        fn push(&mut self, b: u8) {
            if self.in_params {
            } else if b == b';' {
                self.in_params = true;
            } else {
                self.dots_only = (self.len == 0 || self.dots_only) && b == b'.';
                self.len += 1;
            }
        }
        fn end(&mut self) -> Result<(), &'static str> {
            if self.dots_only && (self.len == 1 || self.len == 2) {
                return Err("The path contains dot-segments.");
            }
            *self = Self::default();
            Ok(())
        }
    }

    let bytes = rest.as_bytes();
    let mut segment = Segment::default();
    // Whether a byte above ASCII was seen (plain or decoded): only then is UTF-8 checked.
    let mut high = false;
    let mut i = 0;
    while i < bytes.len() {
        let (b, len) = path_unit(bytes, i)?;
        if b == 0 {
            return Err("The path contains a NUL byte.");
        }
        high |= b >= 0x80;
        if b == b'%' && len == 3 {
            // `%25`, then two hex digits, plain or encoded: one more decoding would make
            // them a byte.
            if let Ok((h, l1)) = path_unit(bytes, i + 3)
                && let Ok((l, _)) = path_unit(bytes, i + 3 + l1)
                && let (Some(h), Some(l)) = (hex_value(h), hex_value(l))
                && matches!(h << 4 | l, b'.' | b'/' | b'\\' | 0)
            {
                return Err("The path contains double-encoded characters.");
            }
        }
        if b == b'/' || b == b'\\' {
            segment.end()?;
        } else {
            segment.push(b);
        }
        i += len;
    }
    segment.end()?;
    if high && !decodes_to_utf8(bytes) {
        return Err("The path contains percent-encoded bytes that are not UTF-8.");
    }
    Ok(())
}

/// The byte at `i` of a path, decoded if it is a `%XX` escape, and how many bytes it took;
/// `Err` for a `%` not followed by two hex digits.
fn path_unit(bytes: &[u8], i: usize) -> Result<(u8, usize), &'static str> {
    match bytes.get(i) {
        Some(b'%') => match (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) {
            (Some(h), Some(l)) => Ok((h << 4 | l, 3)),
            _ => Err("The path contains a malformed percent-encoding."),
        },
        Some(b) => Ok((*b, 1)),
        None => Err("The path ends within an escape."),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `bytes`, its `%XX` escapes decoded once, is UTF-8 (escapes already checked).
fn decodes_to_utf8(bytes: &[u8]) -> bool {
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Ok((b, len)) = path_unit(bytes, i) {
        decoded.push(b);
        i += len;
    }
    std::str::from_utf8(&decoded).is_ok()
}

/// Maps the request's path and query onto the target.
pub(crate) fn map_path(
    config: &RewriteConfig,
    target: &Target,
    uri: &Uri,
) -> Result<PathAndQuery, ProxyError> {
    let path = uri.path();
    let rest = path
        .strip_prefix(config.prefix.as_str())
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or_else(|| bad("The path is not under the proxy prefix."))?;
    check_path(rest).map_err(bad)?;
    PathAndQuery::try_from(joined(target.base_path(), rest, uri.query()))
        .map_err(|_| bad("The path cannot be forwarded."))
}

/// `base`, then `rest` (`/` if both are empty), then `?` and `query` if any, in a `String` of
/// exactly that capacity: `Bytes` takes a full `String` over as it is, but one with spare
/// capacity only with an allocation of its own.
fn joined(base: &str, rest: &str, query: Option<&str>) -> String {
    let path = base.len() + rest.len();
    let mut out = String::with_capacity(path.max(1) + query.map_or(0, |q| q.len() + 1));
    out.push_str(base);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Why a `Transfer-Encoding` cannot be relayed.
enum Coding {
    /// Not exactly one `chunked`: repeated, empty elements, or garbage (`400`).
    Ambiguous,
    /// A coding other than `chunked`, which the proxy would silently strip (`501`).
    Unsupported,
}

/// Accepts no `Transfer-Encoding`, or exactly one `chunked` over all lines (RFC 9112 §6.1:
/// chunked applied once; anything else is refused rather than re-framed ambiguously).
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), Coding> {
    let mut chunked = 0;
    let mut other = false;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"chunked") {
                chunked += 1;
            } else if token.is_empty() || !token.iter().all(|b| is_tchar(*b)) {
                return Err(Coding::Ambiguous);
            } else {
                other = true;
            }
        }
    }
    if chunked > 1 {
        return Err(Coding::Ambiguous);
    }
    if other {
        return Err(Coding::Unsupported);
    }
    Ok(())
}

/// Checks the framing of a response from the target: no `Transfer-Encoding`, or exactly one
/// `chunked`. A coding such as `gzip, chunked` cannot be relayed once the proxy re-frames
/// the body (the client would get gzip bytes labelled as plain), so it is `502`. Without
/// `Transfer-Encoding`, the `Content-Length` lines, if any, must all state one decimal
/// length (RFC 9112 §6.3: a proxy answers `502` to an invalid one), whether or not the
/// response has content (`HEAD`, `204`, `304`).
///
/// # Errors
///
/// A [`ProxyError`] of kind `BadResponse` (`502`).
pub fn check_response(parts: &response::Parts) -> Result<(), ProxyError> {
    check_response_given(parts, Present::of(&parts.headers))
}

/// [`check_response`], with what the head holds already known.
pub(crate) fn check_response_given(
    parts: &response::Parts,
    present: Present,
) -> Result<(), ProxyError> {
    let coded = present.may_have(Present::TRANSFER_ENCODING);
    if coded {
        check_transfer_encoding(&parts.headers).map_err(|_| {
            ProxyError::new(ProxyErrorKind::BadResponse(
                "The proxy target sent a transfer coding the proxy cannot relay.",
            ))
        })?;
    }
    // Most responses have one plain length, which `present` tells without a look.
    if !coded && present.may_have(Present::LENGTH_LIST) && stated_length(&parts.headers).is_err() {
        return Err(ProxyError::new(ProxyErrorKind::BadResponse(
            "The proxy target sent an invalid Content-Length.",
        )));
    }
    Ok(())
}

/// `Content-Length` lines that do not state one decimal length.
struct InvalidLength;

/// The length a message's `Content-Length` lines state: `None` without any; the number when
/// every element of every line is the same decimal number (`5`, `5, 5`, or two lines `5`,
/// which RFC 9110 §8.6 lets a recipient take as the one value).
fn stated_length(headers: &HeaderMap) -> Result<Option<u64>, InvalidLength> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for element in value.as_bytes().split(|b| *b == b',') {
            let digits = element.trim_ascii();
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(InvalidLength);
            }
            let n = digits.iter().try_fold(0u64, |n, d| {
                n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            match (n, length) {
                (None, _) => return Err(InvalidLength),
                (Some(n), Some(seen)) if n != seen => return Err(InvalidLength),
                (Some(n), _) => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// Rewrites a `Content-Length` stated as a list (`5, 5`, or several lines) as the one value:
/// the list is tolerated on the way in (RFC 9110 §8.6), but an HTTP/2 client resets the
/// stream on it and strict HTTP/1.1 clients refuse the response.
fn normalize_content_length(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return;
    };
    if values.next().is_none() && first.as_bytes().iter().all(u8::is_ascii_digit) {
        return;
    }
    if let Ok(Some(n)) = stated_length(headers) {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether any `TE` line lists `trailers`.
fn te_lists_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|t| {
            let t = t.split(|b| *b == b';').next().unwrap_or_default();
            t.trim_ascii().eq_ignore_ascii_case(b"trailers")
        })
    })
}

/// `Max-Forwards` on `OPTIONS` (RFC 9110 §7.6.2): `0` → the proxy answers itself; `n` → `n-1`
/// is forwarded. Other methods forward it unchanged (`None`).
fn max_forwards(parts: &request::Parts) -> Result<Option<u32>, ProxyError> {
    if parts.method != Method::OPTIONS {
        return Ok(None);
    }
    let mut values = parts.headers.get_all(header::MAX_FORWARDS).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let digits = value.as_bytes().trim_ascii();
    if values.next().is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("The Max-Forwards header is invalid."));
    }
    // Digits only: the parse fails only on overflow, which is "more than we support".
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u32>().ok())
        .unwrap_or(u32::MAX);
    if n == 0 {
        return Err(ProxyError::new(ProxyErrorKind::MaxForwardsReached));
    }
    Ok(Some(n - 1))
}

/// Rewrites a request under the prefix into the request for `target`, without the
/// `Authorization` token (added once the identity is known).
///
/// # Errors
///
/// A [`ProxyError`] of kind `BadRequest` (`400`), `MethodNotAllowed` (`405`, `CONNECT` and
/// `TRACE`, also through a method-override header), `NotImplemented` (`501`, a transfer
/// coding other than `chunked`), `LoopDetected` (`508`) or `MaxForwardsReached` (`200`,
/// `OPTIONS` with `Max-Forwards: 0`).
pub fn rewrite_request(
    parts: &request::Parts,
    target: &Target,
    config: &RewriteConfig,
    framing: Framing,
) -> Result<request::Parts, ProxyError> {
    let present = Present::of(&parts.headers);
    let forwarding = check_request(parts, target, config, framing, present)?;
    let (mut out, ()) = Request::new(()).into_parts();
    out.method = parts.method.clone();
    out.version = parts.version;
    out.headers = parts.headers.clone();
    let mut out = forwarding.apply(&mut out, config, None, None);
    // The parts put together at once: `Uri::builder()` moves its whole state at each step.
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(target.scheme().clone());
    uri.authority = Some(target.authority().clone());
    uri.path_and_query = out.uri.path_and_query().cloned();
    out.uri = Uri::from_parts(uri).map_err(|_| bad("The path cannot be forwarded."))?;
    Ok(out)
}

/// What [`check_request`] found: a request that may be forwarded, and what its head
/// becomes ([`Forwarding::apply`]).
pub(crate) struct Forwarding<'c> {
    uri: Uri,
    inbound: crate::rules::origin::Inbound<'c>,
    max_forwards: Option<u32>,
    framing: Framing,
    present: Present,
    /// The fields that stay behind.
    doomed: Doomed,
    /// Whether a `TE` line lists `trailers`.
    te_trailers: bool,
    /// The cookies that cross.
    cookie: Option<HeaderValue>,
}

impl<'c> Forwarding<'c> {
    /// The public origin the request came through, when the layer knows its origins.
    pub(crate) fn origin(&self) -> Option<&'c PublicOrigin> {
        self.inbound.origin
    }

    /// Makes `parts` (the request [`check_request`] looked at, its head unchanged) the
    /// request for the target, in place: the fields that do not cross the proxy are
    /// removed, the proxy's are set. Returns the request's method, URI (the target's path, in
    /// origin form: the client sends it to the target's origin), version (HTTP/1.1) and
    /// headers; `parts` keeps its extensions and an empty header map.
    ///
    /// `host` and `authorization`, when given, become the `Host` and `Authorization` fields,
    /// set over the client's own (one lookup each, instead of a removal and an insertion);
    /// without them the client's are removed and the head has none.
    ///
    /// Removing a field moves the last one into its place: fields of different names may
    /// reach the target in another order (RFC 9110 §5.3 makes that order insignificant);
    /// the lines of one name keep theirs.
    pub(crate) fn apply(
        mut self,
        parts: &mut request::Parts,
        config: &RewriteConfig,
        host: Option<HeaderValue>,
        authorization: Option<HeaderValue>,
    ) -> request::Parts {
        let present = self.present;
        let mut headers = std::mem::take(&mut parts.headers);
        if host.is_some() {
            self.doomed.spare(Doomed::HOST);
        }
        if authorization.is_some() {
            self.doomed.spare(Doomed::AUTHORIZATION);
        }
        self.doomed.remove_from(&mut headers);
        if let Some(host) = host {
            headers.insert(header::HOST, host);
        }
        if let Some(authorization) = authorization {
            headers.insert(header::AUTHORIZATION, authorization);
        }
        // One `Content-Length` line, the last, however many the client sent.
        if self.framing == Framing::Length
            && present.may_have(Present::LENGTH_LIST)
            && let Some(last) = headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .skip(1)
                .last()
        {
            let last = last.clone();
            headers.insert(header::CONTENT_LENGTH, last);
        }
        // `TE` is hop-by-hop; of its values only `trailers` means something to the next hop.
        if self.te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(n) = self.max_forwards {
            headers.insert(header::MAX_FORWARDS, HeaderValue::from(n));
        }
        if self.framing == Framing::Unknown {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        if let Some(cookie) = self.cookie {
            headers.insert(header::COOKIE, cookie);
        }
        append_via(
            &mut headers,
            &config.via_request[version_index(parts.version)],
            present,
        );
        let inbound = self.inbound;
        headers.insert(X_FORWARDED_PROTO.clone(), inbound.proto);
        headers.insert(X_FORWARDED_HOST.clone(), inbound.host);
        if let Some(client) = inbound.client
            && let Some(addr) = ip_value(client)
        {
            headers.insert(X_FORWARDED_FOR.clone(), addr);
        }
        let (mut out, ()) = Request::new(()).into_parts();
        out.method = parts.method.clone();
        out.uri = self.uri;
        out.version = Version::HTTP_11;
        out.headers = headers;
        out
    }
}

/// `ip` as a header value, spelt as `ip.to_string()` spells it (RFC 5952 for IPv6). An IPv4
/// address, the usual case, is written digit by digit: through `Display`, its four numbers
/// cost about 1,500 instructions of formatting machinery, and the `String` two allocations
/// (its growth, then `Bytes` taking one with spare capacity), where this costs one.
fn ip_value(ip: IpAddr) -> Option<HeaderValue> {
    match ip {
        IpAddr::V4(v4) => {
            let mut text = [0u8; 15];
            let mut len = 0;
            let mut push = |b: u8| {
                if let Some(slot) = text.get_mut(len) {
                    *slot = b;
                }
                len += 1;
            };
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    push(b'.');
                }
                if octet >= 100 {
                    push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    push(b'0' + octet / 10 % 10);
                }
                push(b'0' + octet % 10);
            }
            HeaderValue::from_bytes(text.get(..len)?).ok()
        }
        IpAddr::V6(v6) => {
            // At most 45 bytes (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`), written on the
            // stack.
            use std::io::Write as _;
            let mut text = [0u8; 64];
            let mut cursor = std::io::Cursor::new(&mut text[..]);
            write!(cursor, "{v6}").ok()?;
            let len = usize::try_from(cursor.position()).ok()?;
            HeaderValue::from_bytes(text.get(..len)?).ok()
        }
    }
}

/// Whether a field of the client's request stays behind (the proxy sets its own, or it is
/// hop-by-hop, or a front proxy's claim the client could forge). `Max-Forwards` stays: the
/// proxy replaces it only on `OPTIONS` (RFC 9110 §7.6.2).
fn crosses_not(name: &HeaderName, framing: Framing, nominated: &Nominated<'_>) -> bool {
    // Framing is the proxy's: one Content-Length (the body's) or chunked, never both,
    // whatever `Connection` nominates.
    if name == header::CONTENT_LENGTH {
        return framing != Framing::Length;
    }
    if name == header::MAX_FORWARDS {
        return false;
    }
    is_hop_by_hop(name, nominated)
        || name == header::HOST
        || name == header::AUTHORIZATION
        || name == header::EXPECT
        || name == header::COOKIE
        || is_front_claim(name)
        || is_path_override(name)
        || is_underscore_twin(name)
}

/// The names of the fields to remove from a head: the usual ones as bits of [`COMMON`],
/// any other in a vector (which allocates only then).
#[derive(Default)]
struct Doomed {
    common: u16,
    other: Vec<HeaderName>,
}

/// The fields a request most often has that stay behind.
static COMMON: [HeaderName; 7] = [
    header::HOST,
    header::CONNECTION,
    header::AUTHORIZATION,
    header::COOKIE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::EXPECT,
];

impl Doomed {
    /// Adds `name`, unless it is the one added last (a name's lines come one after another).
    fn push(&mut self, name: &HeaderName) {
        match COMMON.iter().position(|n| n == name) {
            Some(i) => self.common |= 1 << i,
            None if self.other.last() != Some(name) => self.other.push(name.clone()),
            None => {}
        }
    }

    /// `Host`'s bit in [`COMMON`].
    const HOST: u16 = 1 << 0;
    /// `Authorization`'s bit in [`COMMON`].
    const AUTHORIZATION: u16 = 1 << 2;

    /// Takes back the fields of `bits` (of [`COMMON`]): the caller sets them over the
    /// client's lines.
    fn spare(&mut self, bits: u16) {
        self.common &= !bits;
    }

    fn remove_from(self, headers: &mut HeaderMap) {
        for (i, name) in COMMON.iter().enumerate() {
            if self.common & (1 << i) != 0 {
                headers.remove(name);
            }
        }
        for name in self.other {
            headers.remove(name);
        }
    }
}

/// Checks a request under the prefix against the rules of the proxy, and finds what its
/// head becomes for `target` (see [`rewrite_request`] for the errors).
pub(crate) fn check_request<'c>(
    parts: &request::Parts,
    target: &Target,
    config: &'c RewriteConfig,
    framing: Framing,
    present: Present,
) -> Result<Forwarding<'c>, ProxyError> {
    if present.may_have(Present::VIA) && via_contains(&parts.headers, config.pseudonym.as_str()) {
        return Err(ProxyError::new(ProxyErrorKind::LoopDetected));
    }
    // CONNECT would ask the target for a tunnel; TRACE would reflect the minted token back
    // to the caller (RFC 9110 §9.3.8).
    if parts.method == Method::CONNECT {
        return Err(ProxyError::new(ProxyErrorKind::MethodNotAllowed(
            "CONNECT cannot be proxied.",
        )));
    }
    if parts.method == Method::TRACE {
        return Err(ProxyError::new(ProxyErrorKind::MethodNotAllowed(
            "TRACE cannot be proxied.",
        )));
    }
    // IIS's twin of TRACE.
    if parts.method.as_str().eq_ignore_ascii_case("TRACK") {
        return Err(ProxyError::new(ProxyErrorKind::MethodNotAllowed(
            "TRACK cannot be proxied.",
        )));
    }
    if present.may_have(Present::TRANSFER_ENCODING) {
        check_transfer_encoding(&parts.headers).map_err(|e| match e {
            Coding::Ambiguous => bad("The request's Transfer-Encoding is invalid."),
            Coding::Unsupported => ProxyError::new(ProxyErrorKind::NotImplemented(
                "The request's transfer coding is not supported.",
            )),
        })?;
    }
    let max_forwards = max_forwards(parts)?;
    let peer = match &config.forwarded_for {
        Some(ClientAddr(find)) => find(parts),
        None => None,
    };
    let inbound = config.origins.resolve(
        parts,
        client_authority(parts)?,
        &config.forwarded_proto,
        peer,
    )?;
    // In origin form: the client sends it to the target's origin (and makes it absolute
    // for HTTP/2).
    let uri = Uri::from(map_path(config, target, &parts.uri)?);

    let nominated = Nominated::given(&parts.headers, present)
        .map_err(|_| bad("The Connection header nominates too many fields."))?;
    let mut doomed = Doomed::default();
    for (name, value) in &parts.headers {
        // The methods refused above, asked for through a method-override header.
        if is_refused_method_override(name, value) {
            return Err(ProxyError::new(ProxyErrorKind::MethodNotAllowed(
                "The method override names a method that cannot be proxied.",
            )));
        }
        if crosses_not(name, framing, &nominated) {
            doomed.push(name);
        }
    }
    Ok(Forwarding {
        uri,
        inbound,
        max_forwards,
        framing,
        present,
        doomed,
        te_trailers: present.may_have(Present::TE) && te_lists_trailers(&parts.headers),
        cookie: config.cookies.request_cookie(&parts.headers, present),
    })
}

/// Removes from the client's request trailers (RFC 9110 §6.5) every field the proxy manages
/// in the header section — hop-by-hop and framing fields, `Trailer`, `Host`,
/// `Authorization`, `Cookie`, `Expect`, `Max-Forwards`, `Via`, `Forwarded`,
/// `X-Forwarded-*`, `X-Real-IP`, the path and method overrides (`X-Original-URL`,
/// `X-HTTP-Method-Override`...) and their `_` twins — and the content and control fields
/// that RFC 9110 §6.5.1 keeps out of trailers, as hyper's HTTP/1.1 encoder does (its HTTP/2
/// one sends every field): a target that merges trailers into the header section, as some
/// servers do, would take them for the header fields the proxy set or removed.
pub(crate) fn filter_request_trailers(trailers: &mut HeaderMap) {
    let managed = |name: &HeaderName| {
        crate::rules::headers::is_fixed_hop_by_hop(name)
            || is_front_claim(name)
            || is_path_override(name)
            || is_method_override(name)
            || is_underscore_twin(name)
            || [
                header::HOST,
                header::AUTHORIZATION,
                header::COOKIE,
                header::EXPECT,
                header::MAX_FORWARDS,
                header::VIA,
                header::CONTENT_LENGTH,
                header::TRAILER,
                header::CACHE_CONTROL,
                header::CONTENT_ENCODING,
                header::CONTENT_RANGE,
                header::CONTENT_TYPE,
                header::SET_COOKIE,
            ]
            .contains(name)
    };
    if !trailers.keys().any(managed) {
        return;
    }
    let dropped: Vec<HeaderName> = trailers.keys().filter(|n| managed(n)).cloned().collect();
    for name in dropped {
        trailers.remove(name);
    }
}

/// Rewrites the target's response head in place: a stale `Content-Length` next to
/// `Transfer-Encoding` is dropped (the body is forwarded whole, never cut to it), as is one
/// on a `1xx` or a `204`, which must have none; one stated as a list (`5, 5`) becomes the
/// one value, hop-by-hop headers are removed, protected
/// `Set-Cookie`s are dropped, and `Via` is appended.
pub fn rewrite_response(parts: &mut response::Parts, config: &RewriteConfig) {
    rewrite_response_given(parts, config, Present::of(&parts.headers));
}

/// [`rewrite_response`], with what the head holds already known (taken before any change).
pub(crate) fn rewrite_response_given(
    parts: &mut response::Parts,
    config: &RewriteConfig,
    present: Present,
) {
    // RFC 9110 §8.6: no `Content-Length` in a `1xx` or a `204` (hyper's HTTP/1.1 server
    // drops it; over HTTP/2 it would reach the client).
    let no_length = parts.status.is_informational() || parts.status == StatusCode::NO_CONTENT;
    if present.may_have(Present::CONTENT_LENGTH) {
        if no_length || present.may_have(Present::TRANSFER_ENCODING) {
            parts.headers.remove(header::CONTENT_LENGTH);
        } else if present.may_have(Present::LENGTH_LIST) {
            normalize_content_length(&mut parts.headers);
        }
    }
    remove_hop_by_hop_given(&mut parts.headers, present);
    config
        .responses
        .drop_origin_wide(&mut parts.headers, present);
    config
        .cookies
        .filter_set_cookie(&mut parts.headers, present);
    append_via(
        &mut parts.headers,
        &config.via_response[version_index(parts.version)],
        present,
    );
}

/// Scopes the target's `Set-Cookie`s to the proxy's prefix, mapping the target's base path
/// onto it (see [`CookiePolicy::scope_set_cookie_paths`]): a target can never set a cookie
/// for the app's paths outside the prefix; so is its `Service-Worker-Allowed` (see
/// [`ResponsePolicy`]). Called after [`rewrite_response`].
pub fn scope_set_cookies(parts: &mut response::Parts, config: &RewriteConfig, target: &Target) {
    scope_set_cookies_given(parts, config, target, Present::of(&parts.headers));
}

/// [`scope_set_cookies`], with what the head held before [`rewrite_response_given`] known.
pub(crate) fn scope_set_cookies_given(
    parts: &mut response::Parts,
    config: &RewriteConfig,
    target: &Target,
    present: Present,
) {
    if present.may_have(Present::SET_COOKIE) {
        config.cookies.scope_set_cookie(
            &mut parts.headers,
            config.prefix.as_str(),
            target.base_path(),
        );
    }
    if present.may_have(Present::ORIGIN_WIDE) {
        config.responses.scope_service_worker(
            &mut parts.headers,
            config.prefix.as_str(),
            target.base_path(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::headers::MAX_NOMINATED;

    #[test]
    fn an_ip_value_is_spelt_as_its_display() {
        let mut ips: Vec<IpAddr> = [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "203.0.113.77",
            "1.20.100.9",
            "99.100.101.199",
            "::",
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.128",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::1:0:0:1",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        // Every octet in every position.
        for o in 0..=255u8 {
            ips.push(IpAddr::from([o, 255 - o, o / 3, o.wrapping_mul(7)]));
        }
        for ip in ips {
            assert_eq!(ip_value(ip).unwrap(), ip.to_string().as_str(), "{ip}");
        }
    }

    #[test]
    fn a_joined_path_fills_its_string_exactly() {
        for (base, rest, query, expected) in [
            ("", "", None, "/"),
            ("", "", Some(""), "/?"),
            ("", "/", None, "/"),
            ("", "", Some("a=1"), "/?a=1"),
            ("/base", "", None, "/base"),
            ("/base", "/x/y", Some("q=%20&r"), "/base/x/y?q=%20&r"),
            ("", "/x", Some("é=1"), "/x?é=1"),
        ] {
            let out = joined(base, rest, query);
            assert_eq!(out, expected);
            assert_eq!(out.len(), out.capacity(), "{expected}");
        }
    }

    #[test]
    fn the_plain_authority_check_agrees_with_the_general_one() {
        let hosts = [
            "",
            "a",
            "example.com",
            "127.0.0.1",
            "x-y.z",
            "A.B",
            "[::1]",
            "h_st",
            "h~",
            "%41",
            "-",
            ".",
        ];
        let ports = [
            None,
            Some(""),
            Some("0"),
            Some("80"),
            Some("65535"),
            Some("65536"),
            Some("99999"),
            Some("123456"),
            Some("00080"),
            Some("8a"),
            Some("1:2"),
        ];
        let (mut decided, mut parsed) = (0, 0);
        for user in ["", "u@", "u:p@"] {
            for host in hosts {
                for port in ports {
                    let s = match port {
                        Some(p) => format!("{user}{host}:{p}"),
                        None => format!("{user}{host}"),
                    };
                    let Ok(a) = Authority::try_from(s.as_str()) else {
                        continue;
                    };
                    parsed += 1;
                    if let Some(valid) = plain_authority_is_valid(s.as_bytes()) {
                        decided += 1;
                        assert_eq!(valid, any_authority_is_valid(&a), "{s}");
                    }
                    assert_eq!(
                        authority_is_valid(s.as_bytes()),
                        any_authority_is_valid(&a),
                        "{s}"
                    );
                }
            }
        }
        // The plain check decides the common shapes, valid and not.
        assert!(decided >= 40 && parsed > decided, "{decided} of {parsed}");
        assert_eq!(plain_authority_is_valid(b"example.com:8080"), Some(true));
        assert_eq!(plain_authority_is_valid(b"example.com:65536"), Some(false));
        assert_eq!(plain_authority_is_valid(b"[::1]:80"), None);
    }

    /// The path check written the plain way, decoding the whole path into a vector first:
    /// the oracle for the one-pass, allocation-free one.
    fn check_path_reference(rest: &str) -> bool {
        let bytes = rest.as_bytes();
        // Decode once, remembering which bytes came from an escape.
        let mut decoded: Vec<(u8, bool)> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let Some(b) = hex
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                else {
                    return false;
                };
                decoded.push((b, true));
                i += 3;
            } else {
                decoded.push((bytes[i], false));
                i += 1;
            }
        }
        let plain: Vec<u8> = decoded.iter().map(|(b, _)| *b).collect();
        if plain.contains(&0) || std::str::from_utf8(&plain).is_err() {
            return false;
        }
        // A `%` from `%25` followed by two hex digits naming `.`, `/`, `\` or NUL.
        for (k, (b, escaped)) in decoded.iter().enumerate() {
            if *b == b'%' && *escaped && k + 2 < decoded.len() {
                let pair = [decoded[k + 1].0, decoded[k + 2].0];
                if let Ok(pair) = std::str::from_utf8(&pair)
                    && let Ok(v) = u8::from_str_radix(pair, 16)
                    && pair.bytes().all(|b| b.is_ascii_hexdigit())
                    && [b'.', b'/', b'\\', 0].contains(&v)
                {
                    return false;
                }
            }
        }
        plain.split(|b| *b == b'/' || *b == b'\\').all(|segment| {
            let name = segment.split(|b| *b == b';').next().unwrap_or_default();
            name != b"." && name != b".."
        })
    }

    #[test]
    fn path_check_agrees_with_the_reference_on_every_short_path() {
        let parts = [
            "", ".", "..", "%2e", "%2E", ";", "%3b", "a", "%2f", "%5C", "/", "\\", "%", "%2",
            "%25", "%32", "e", "%00", "%c3", "%a9", "%c0", "%ae", "%u", "\u{e9}",
        ];
        let mut checked = 0;
        for a in parts {
            for b in parts {
                for c in parts {
                    for d in parts {
                        let path = format!("/{a}{b}{c}{d}");
                        assert_eq!(
                            check_path(&path).is_ok(),
                            check_path_reference(&path),
                            "{path}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, parts.len().pow(4));
    }

    fn cfg() -> RewriteConfig {
        RewriteConfig::new("/proxy").unwrap()
    }

    fn req(uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn target(s: &str) -> Target {
        Target::parse(s).unwrap()
    }

    /// The head is rewritten in place: removing a field moves another, so every arrangement
    /// of removed and kept fields (several lines of one name among them) is tried, and the
    /// fields that cross must come out whole, each name's lines in their order.
    #[test]
    fn fields_cross_whole_and_in_order_whatever_is_removed_around_them() {
        let kept = [
            ("a", "1"),
            ("b", "1"),
            ("a", "2"),
            ("c", "x"),
            ("b", "2"),
            ("a", "3"),
        ];
        let dropped = [
            ("host", "app.test"),
            ("connection", "x-hop, keep-alive"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "10.0.0.1"),
            ("authorization", "Basic eA=="),
            ("x-hop", "2"),
            ("cookie", "SESSION=1"),
        ];
        let t = target("http://t:1");
        let c = cfg();
        // Each kept field put at each place among the dropped ones.
        for seed in 0..200u32 {
            let mut fields: Vec<(&str, &str)> = dropped.to_vec();
            for (i, field) in kept.iter().enumerate() {
                let at = (seed as usize * 7 + i * 13) % (fields.len() + 1);
                fields.insert(at, *field);
            }
            let turn = seed as usize % fields.len();
            fields.rotate_left(turn);
            let p = req("/proxy/x", &fields);
            let out = rewrite_request(&p, &t, &c, Framing::Empty).unwrap();
            for name in ["a", "b", "c"] {
                let want: Vec<&str> = fields
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .collect();
                let got: Vec<&str> = out
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                assert_eq!(got, want, "{name} in {fields:?}");
            }
            for gone in ["connection", "x-hop", "keep-alive", "authorization", "host"] {
                assert!(!out.headers.contains_key(gone), "{gone} in {fields:?}");
            }
            assert_eq!(out.headers["x-forwarded-host"], "app.test");
            assert!(!out.headers.contains_key("x-forwarded-for"));
            // `a`, `b`, `c`, and what the proxy sets.
            let names: Vec<&str> = out.headers.keys().map(|n| n.as_str()).collect();
            assert_eq!(names.len(), 3 + 3, "{names:?}");
        }
    }

    #[test]
    fn the_host_and_token_given_replace_every_line_of_the_client() {
        assert_eq!(COMMON[Doomed::HOST.trailing_zeros() as usize], header::HOST);
        assert_eq!(
            COMMON[Doomed::AUTHORIZATION.trailing_zeros() as usize],
            header::AUTHORIZATION
        );
        let t = target("http://t:1");
        let c = cfg();
        let with = [
            ("host", "app.test"),
            ("authorization", "Basic eA=="),
            ("a", "1"),
            ("authorization", "Bearer forged"),
        ];
        let without = [("host", "app.test"), ("a", "1")];
        for fields in [&with[..], &without[..]] {
            let mut p = req("/proxy/x", fields);
            let present = Present::of(&p.headers);
            let forwarding = check_request(&p, &t, &c, Framing::Empty, present).unwrap();
            let out = forwarding.apply(
                &mut p,
                &c,
                Some(HeaderValue::from_static("t:1")),
                Some(HeaderValue::from_static("Bearer minted")),
            );
            let all = |name| -> Vec<&str> {
                out.headers
                    .get_all(name)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect()
            };
            assert_eq!(all("host"), ["t:1"], "{fields:?}");
            assert_eq!(all("authorization"), ["Bearer minted"], "{fields:?}");
            assert_eq!(all("a"), ["1"], "{fields:?}");
            assert_eq!(all("x-forwarded-host"), ["app.test"], "{fields:?}");
        }
    }

    #[test]
    fn prefix_matching() {
        let c = cfg();
        for p in ["/proxy", "/proxy/", "/proxy/a"] {
            assert!(c.matches(p), "{p}");
        }
        for p in ["/proxyfoo", "/prox", "/", "/api/proxy"] {
            assert!(!c.matches(p), "{p}");
        }
    }

    #[test]
    fn prefixes_are_validated() {
        for bad in [
            "", "/", "proxy", "/proxy/", "/a//b", "/a/../b", "/a b", "/a?b",
        ] {
            assert!(RewriteConfig::new(bad).is_err(), "{bad:?}");
        }
        assert!(RewriteConfig::new("/api/v1/proxy").is_ok());
    }

    #[test]
    fn paths_map_onto_the_base_path() {
        let c = cfg();
        let cases = [
            ("http://t:1", "/proxy", "/"),
            ("http://t:1", "/proxy/", "/"),
            (
                "http://t:1",
                "/proxy/some/path?foo=bar",
                "/some/path?foo=bar",
            ),
            ("http://t:1/base", "/proxy", "/base"),
            ("http://t:1/base", "/proxy/x?y=1", "/base/x?y=1"),
            ("http://t:1/base/", "/proxy/", "/base/"),
            ("http://t:1", "/proxy/a%2Fb?q=%20+x&&", "/a%2Fb?q=%20+x&&"),
            ("http://t:1", "/proxy?x=1", "/?x=1"),
        ];
        for (t, uri, want) in cases {
            let got = map_path(&c, &target(t), &uri.parse().unwrap()).unwrap();
            assert_eq!(got.as_str(), want, "{t} {uri}");
        }
    }

    #[test]
    fn dot_segments_are_refused() {
        let c = cfg();
        for uri in [
            "/proxy/..",
            "/proxy/../admin",
            "/proxy/a/../../b",
            "/proxy/%2e%2e/x",
            "/proxy/%2E%2e/x",
            "/proxy/.%2e/x",
            "/proxy/..;/x",
            "/proxy/..;jsessionid=1/x",
            "/proxy/a\\..\\..\\b",
            "/proxy/a%5c..%5cb",
            "/proxy/./x",
            "/proxy/%2e/x",
            "/proxy/..%2fx",
            "/proxy/a%2f..%2fb",
            "/proxy/a%2F..%2F..%2Fb",
            // NUL, double encoding, `%u`, bytes that are not UTF-8 (overlong dots).
            "/proxy/..%00/x",
            "/proxy/a%00",
            "/proxy/%252e%252e/x",
            "/proxy/%252E%252E%252Fadmin",
            "/proxy/a%255c..",
            "/proxy/%25%32%65%25%32%65/x",
            "/proxy/%u002e%u002e/x",
            "/proxy/%U002E",
            "/proxy/%c0%ae%c0%ae/x",
            "/proxy/%e0%80%ae",
            "/proxy/%ff",
            "/proxy/a%",
            "/proxy/a%2",
            "/proxy/a%zz",
        ] {
            let e = map_path(&c, &target("http://t:1/base"), &uri.parse().unwrap()).unwrap_err();
            assert_eq!(e.status(), 400, "{uri}");
        }
        for ok in [
            "/proxy/...",
            "/proxy/a..b",
            "/proxy/.well-known/x",
            "/proxy/a%2fb%2F",
            "/proxy/a%2f..b",
            "/proxy/caf%c3%a9",
            "/proxy/100%25",
            "/proxy/%2541",
        ] {
            // Escapes other than dot-segments pass unchanged.
            assert!(
                map_path(&c, &target("http://t:1"), &ok.parse().unwrap()).is_ok(),
                "{ok}"
            );
        }
    }

    /// The work of reading `Connection` while rewriting a request of `headers` headers
    /// (each nominated once) plus `line` in `carrier`.
    fn connection_cost(headers: usize, carrier: &str, line: &str) -> (u64, u16) {
        let mut h: Vec<(String, String)> = vec![("host".into(), "a".into())];
        for i in 0..headers {
            h.push((format!("x-h{i}"), "v".into()));
        }
        h.push((carrier.into(), line.into()));
        let pairs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p = req("/proxy/x", &pairs);
        let before = crate::rules::headers::cost::units();
        let status = match rewrite_request(&p, &target("http://t:1"), &cfg(), Framing::Empty) {
            Ok(_) => 200,
            Err(e) => e.status().as_u16(),
        };
        (crate::rules::headers::cost::units() - before, status)
    }

    #[test]
    fn a_huge_connection_line_costs_what_its_bytes_cost() {
        // 90 headers and a 360 KB `Connection: a,a,…`: once the tokens were rescanned for
        // every header (90 × 180 000 comparisons); now each byte is read once, each
        // distinct name kept once, and each header compared with that one name.
        let bomb = "a,".repeat(180_000);
        let (cost, status) = connection_cost(90, "connection", &bomb);
        assert_eq!(status, 200);
        let bytes = bomb.len() as u64;
        assert!(cost <= 2 * bytes, "{cost} units for {bytes} bytes");
        // The same bytes elsewhere cost nothing to read; with `Connection` they cost no more
        // than reading them a couple of times, whatever the number of headers.
        let (elsewhere, status) = connection_cost(90, "x-padding", &bomb);
        assert_eq!(status, 200);
        assert!(cost <= elsewhere + 2 * bytes, "{cost} vs {elsewhere}");
        let (few_headers, _) = connection_cost(1, "connection", &bomb);
        assert!(cost <= few_headers + 2 * 90, "{cost} vs {few_headers}");

        // The most distinct names: each token is compared with at most that many.
        let names: Vec<String> = (0..MAX_NOMINATED).map(|i| format!("x-n{i}")).collect();
        let many = format!("{},", names.join(",")).repeat(2_000);
        let (cost, status) = connection_cost(90, "connection", &many);
        assert_eq!(status, 200);
        let tokens = (2_000 * MAX_NOMINATED) as u64;
        assert!(
            cost <= many.len() as u64 + tokens * MAX_NOMINATED as u64 + 90 * MAX_NOMINATED as u64,
            "{cost}"
        );
        // One more is refused.
        let over = format!("{},x-one-more", names.join(","));
        assert_eq!(connection_cost(0, "connection", &over).1, 400);
    }

    #[test]
    fn forwarded_for_is_the_address_the_layer_finds_never_the_clients() {
        #[derive(Clone)]
        struct Peer(IpAddr);
        let mut config = cfg();
        config.set_forwarded_for(|parts| parts.extensions.get::<Peer>().map(|p| p.0));
        let spoofed = [
            ("host", "example.com"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x_forwarded_for", "6.6.6.6"),
        ];
        for (peer, want) in [
            (Some("127.0.0.1"), Some("127.0.0.1")),
            (Some("::1"), Some("::1")),
            (None, None),
        ] {
            let mut p = req("/proxy/x", &spoofed);
            if let Some(peer) = peer {
                p.extensions.insert(Peer(peer.parse().unwrap()));
            }
            let up = rewrite_request(&p, &target("http://t:1"), &config, Framing::Empty).unwrap();
            let got: Vec<_> = up.headers.get_all("x-forwarded-for").iter().collect();
            assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{peer:?}");
            assert!(!up.headers.contains_key("x_forwarded_for"));
        }
        // Not configured: none at all, whatever the request holds.
        let mut p = req("/proxy/x", &spoofed);
        p.extensions.insert(Peer("127.0.0.1".parse().unwrap()));
        let up = rewrite_request(&p, &target("http://t:1"), &cfg(), Framing::Empty).unwrap();
        assert!(!up.headers.contains_key("x-forwarded-for"));
    }

    #[test]
    fn connection_cannot_strip_the_proxys_headers() {
        let p = req(
            "/proxy/x",
            &[
                ("host", "example.com:1337"),
                (
                    "connection",
                    "Authorization, X-Forwarded-Host, X-Forwarded-Proto, Via, x-drop",
                ),
                ("x-drop", "1"),
                ("x-keep", "2"),
                ("x-forwarded-host", "evil"),
                ("x-forwarded-for", "1.2.3.4"),
                ("forwarded", "for=evil"),
                ("proxy-authorization", "Basic Zm9v"),
                ("authorization", "Basic Zm9v"),
                ("te", "trailers"),
                ("expect", "100-continue"),
            ],
        );
        let up = rewrite_request(&p, &target("http://t:1"), &cfg(), Framing::Empty).unwrap();
        let h = &up.headers;
        assert_eq!(h["x-forwarded-host"], "example.com:1337");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h["via"].to_str().unwrap().starts_with("1.1 tip-"));
        assert_eq!(h["x-keep"], "2");
        assert_eq!(h["te"], "trailers");
        for gone in [
            "x-drop",
            "x-forwarded-for",
            "forwarded",
            "proxy-authorization",
            "authorization",
            "connection",
            "host",
            "expect",
        ] {
            assert!(!h.contains_key(gone), "{gone}");
        }
    }

    #[test]
    fn host_rules() {
        let t = target("http://t:1");
        let c = cfg();
        let status = |p: request::Parts| {
            rewrite_request(&p, &t, &c, Framing::Empty)
                .map(|_| ())
                .map_err(|e| e.status())
        };
        assert_eq!(status(req("/proxy", &[])), Err(400.try_into().unwrap()));
        assert_eq!(
            status(req("/proxy", &[("host", "a"), ("host", "b")])),
            Err(400.try_into().unwrap())
        );
        assert_eq!(
            status(req("/proxy", &[("host", "a b")])),
            Err(400.try_into().unwrap())
        );
        assert_eq!(
            status(req("/proxy", &[("host", "u@a")])),
            Err(400.try_into().unwrap())
        );
        assert_eq!(
            status(req("/proxy", &[("host", "a:99999")])),
            Err(400.try_into().unwrap())
        );
        assert_eq!(
            status(req("/proxy", &[("host", "a:8x")])),
            Err(400.try_into().unwrap())
        );
        // A port without a host (`:80`) parses as an authority, but names no one.
        assert_eq!(
            status(req("/proxy", &[("host", ":80")])),
            Err(400.try_into().unwrap())
        );
        assert!(status(req("/proxy", &[("host", "[::1]:8080")])).is_ok());
        // Absolute form: the URI's authority is the host, but never chooses the upstream,
        // and a `Host` that disagrees with it is refused.
        let p = req("http://app:8080/proxy/x", &[("host", "app:8080")]);
        let up = rewrite_request(&p, &t, &c, Framing::Empty).unwrap();
        assert_eq!(up.uri, "http://t:1/x");
        assert_eq!(up.headers["x-forwarded-host"], "app:8080");
        let p = req("http://evil.example/proxy/x", &[("host", "app:8080")]);
        assert_eq!(status(p), Err(400.try_into().unwrap()));
    }

    #[test]
    fn loops_are_detected_by_pseudonym() {
        let c = cfg();
        let via = format!("1.1 {}", c.pseudonym());
        let p = req("/proxy", &[("host", "a"), ("via", &via)]);
        let e = rewrite_request(&p, &target("http://t:1"), &c, Framing::Empty).unwrap_err();
        assert_eq!(e.status(), 508);
    }

    #[test]
    fn via_names_the_version_each_message_came_in() {
        let c = cfg();
        let t = target("http://t:1");
        for (version, proto) in [
            (Version::HTTP_10, "1.0"),
            (Version::HTTP_11, "1.1"),
            (Version::HTTP_2, "2"),
        ] {
            let want = format!("{proto} {}", c.pseudonym());
            let mut p = req("/proxy", &[("host", "a")]);
            p.version = version;
            let up = rewrite_request(&p, &t, &c, Framing::Empty).unwrap();
            assert_eq!(up.headers["via"], want.as_str(), "{version:?} request");
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.version = version;
            rewrite_response(&mut parts, &c);
            assert_eq!(parts.headers["via"], want.as_str(), "{version:?} response");
        }
    }

    #[test]
    fn unknown_length_bodies_are_chunked() {
        let p = req("/proxy", &[("host", "a"), ("transfer-encoding", "chunked")]);
        let up = rewrite_request(&p, &target("http://t:1"), &cfg(), Framing::Unknown).unwrap();
        assert_eq!(up.headers["transfer-encoding"], "chunked");
        assert!(!up.headers.contains_key("content-length"));
        let p = req("/proxy", &[("host", "a"), ("content-length", "0")]);
        let up = rewrite_request(&p, &target("http://t:1"), &cfg(), Framing::Length).unwrap();
        assert_eq!(up.headers["content-length"], "0");
    }

    #[test]
    fn responses_lose_hop_by_hop_and_stale_length() {
        let (mut parts, ()) = http::Response::builder()
            .header("transfer-encoding", "chunked")
            .header("content-length", "3")
            .header("connection", "x-secret")
            .header("x-secret", "1")
            .header("x-custom-header", "lorem ipsum")
            .body(())
            .unwrap()
            .into_parts();
        rewrite_response(&mut parts, &cfg());
        assert!(!parts.headers.contains_key("content-length"));
        assert!(!parts.headers.contains_key("x-secret"));
        assert!(!parts.headers.contains_key("transfer-encoding"));
        assert_eq!(parts.headers["x-custom-header"], "lorem ipsum");
        assert!(parts.headers.contains_key("via"));
    }

    #[test]
    fn transfer_codings_other_than_one_chunked_are_refused() {
        let t = target("http://t:1");
        let c = cfg();
        let status = |te: &[&str]| {
            let mut h: Vec<(&str, &str)> = vec![("host", "a")];
            h.extend(te.iter().map(|v| ("transfer-encoding", *v)));
            rewrite_request(&req("/proxy", &h), &t, &c, Framing::Unknown)
                .map(|_| 200)
                .map_err(|e| e.status().as_u16())
        };
        assert_eq!(status(&["chunked"]), Ok(200));
        assert_eq!(status(&["Chunked"]), Ok(200));
        assert_eq!(status(&["chunked", "chunked"]), Err(400));
        assert_eq!(status(&["chunked, chunked"]), Err(400));
        assert_eq!(status(&[",chunked"]), Err(400));
        assert_eq!(status(&["gzip, chunked"]), Err(501));
    }

    #[test]
    fn max_forwards_on_options() {
        let t = target("http://t:1");
        let c = cfg();
        let options = |mf: &str| {
            let mut b = Request::builder().method(Method::OPTIONS).uri("/proxy");
            b = b.header("host", "a").header("max-forwards", mf);
            let p = b.body(()).unwrap().into_parts().0;
            rewrite_request(&p, &t, &c, Framing::Empty)
        };
        assert_eq!(options("0").unwrap_err().status(), 200);
        assert_eq!(
            options("0").unwrap_err().allow(),
            Some(crate::error::ALLOWED_METHODS)
        );
        assert_eq!(options("5").unwrap().headers["max-forwards"], "4");
        assert_eq!(options("x").unwrap_err().status(), 400);
    }

    #[test]
    fn trace_and_track_are_refused() {
        for method in ["TRACE", "TRACK", "track"] {
            let p = Request::builder()
                .method(method)
                .uri("/proxy")
                .header("host", "a")
                .body(())
                .unwrap()
                .into_parts()
                .0;
            let e = rewrite_request(&p, &target("http://t:1"), &cfg(), Framing::Empty).unwrap_err();
            assert_eq!(e.status(), 405, "{method}");
        }
    }

    #[test]
    fn origin_wide_response_headers_are_dropped_unless_kept() {
        let response = || {
            let mut b = http::Response::builder();
            for (n, v) in [
                ("clear-site-data", "\"*\""),
                ("alt-svc", "h3=\":443\""),
                ("strict-transport-security", "max-age=1"),
                ("public-key-pins", "pin-sha256=\"x\""),
                ("public-key-pins-report-only", "pin-sha256=\"x\""),
                ("nel", "{}"),
                ("accept-ch", "Sec-CH-UA"),
                ("x-debug", "1"),
                ("x-kept", "1"),
            ] {
                b = b.header(n, v);
            }
            b.body(()).unwrap().into_parts().0
        };
        let mut parts = response();
        rewrite_response(&mut parts, &cfg());
        let mut left: Vec<&str> = parts.headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["via", "x-debug", "x-kept"]);

        let mut config = cfg();
        config.set_responses(
            ResponsePolicy::new()
                .keep(header::STRICT_TRANSPORT_SECURITY)
                .remove(HeaderName::from_static("x-debug")),
        );
        let mut parts = response();
        rewrite_response(&mut parts, &config);
        let mut left: Vec<&str> = parts.headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["strict-transport-security", "via", "x-kept"]);
    }

    #[test]
    fn service_worker_scopes_stay_under_the_prefix() {
        let scoped = |value: &str, base: &str, policy: ResponsePolicy| {
            let mut config = cfg();
            config.set_responses(policy);
            let mut parts = http::Response::builder()
                .header("service-worker-allowed", value)
                .body(())
                .unwrap()
                .into_parts()
                .0;
            scope_set_cookies(&mut parts, &config, &target(&format!("http://t:1{base}")));
            parts
                .headers
                .get("service-worker-allowed")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let default = ResponsePolicy::new;
        assert_eq!(scoped("/", "", default()).as_deref(), Some("/proxy/"));
        assert_eq!(
            scoped("/app", "", default()).as_deref(),
            Some("/proxy/app/")
        );
        assert_eq!(
            scoped("/base/x/", "/base", default()).as_deref(),
            Some("/proxy/x/")
        );
        assert_eq!(
            scoped("/admin", "/base", default()).as_deref(),
            Some("/proxy/")
        );
        for dropped in ["../", "x", "/a/../..", "/%2e%2e/", "//evil/", "/a\\b"] {
            assert_eq!(scoped(dropped, "", default()), None, "{dropped}");
        }
        let kept = ResponsePolicy::new().keep(HeaderName::from_static("service-worker-allowed"));
        assert_eq!(scoped("/", "", kept).as_deref(), Some("/"));
    }

    #[test]
    fn request_headers_that_claim_a_fronts_word_are_dropped() {
        let claims = [
            "proxy",
            "x-forwarded",
            "x-original-host",
            "x-host",
            "x-http-host-override",
            "x-forwarded-server",
            "true-client-ip",
            "x-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "x-cluster-client-ip",
            "remote-user",
            "x-remote-user",
            "x-forwarded-user",
            "x-forwarded-email",
            "x-forwarded-preferred-username",
            "x-auth-request-user",
            "x-auth-request-email",
            "x-auth-request-groups",
            "x-original-uri",
        ];
        let mut headers: Vec<(String, String)> = vec![("host".into(), "a".into())];
        for name in claims {
            headers.push((name.into(), "evil".into()));
            headers.push((name.replace('-', "_"), "evil".into()));
        }
        headers.push(("x-kept".into(), "1".into()));
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let up = rewrite_request(
            &req("/proxy", &pairs),
            &target("http://t:1"),
            &cfg(),
            Framing::Empty,
        )
        .unwrap();
        for (name, _) in &headers[1..headers.len() - 1] {
            let forwarded = up.headers.get(name.as_str());
            // The proxy's own `X-Forwarded-*` are set; none is the client's.
            assert!(forwarded.is_none_or(|v| v != "evil"), "{name} forwarded");
        }
        assert_eq!(up.headers["x-kept"], "1");
    }

    #[test]
    fn underscore_twins_are_dropped() {
        let p = req(
            "/proxy",
            &[
                ("host", "a"),
                ("x_forwarded_host", "evil"),
                ("transfer_encoding", "chunked"),
                ("_authorization", "x"),
                ("x_custom", "kept"),
            ],
        );
        let up = rewrite_request(&p, &target("http://t:1"), &cfg(), Framing::Empty).unwrap();
        assert!(!up.headers.contains_key("x_forwarded_host"));
        assert!(!up.headers.contains_key("transfer_encoding"));
        assert!(!up.headers.contains_key("_authorization"));
        assert_eq!(up.headers["x_custom"], "kept");
    }

    #[test]
    fn responses_with_other_codings_are_refused() {
        let parts = |te: &str| {
            http::Response::builder()
                .header("transfer-encoding", te)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert!(check_response(&parts("chunked")).is_ok());
        assert_eq!(
            check_response(&parts("gzip, chunked"))
                .unwrap_err()
                .status(),
            502
        );
        assert!(check_response(&parts("chunked, chunked")).is_err());
    }

    #[test]
    fn request_trailers_lose_the_managed_fields() {
        let mut t = HeaderMap::new();
        for (n, v) in [
            ("authorization", "Bearer forged"),
            ("x-forwarded-host", "evil"),
            ("x_forwarded_host", "evil"),
            ("forwarded", "for=evil"),
            ("x-real-ip", "1.2.3.4"),
            ("cookie", "session=1"),
            ("host", "evil"),
            ("via", "1.1 forged"),
            ("content-length", "9"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x"),
            ("max-forwards", "1"),
            ("content-type", "text/evil"),
            ("x-original-url", "/admin"),
            ("x_rewrite_url", "/admin"),
            ("x-http-method-override", "TRACE"),
            ("x-sum", "42"),
            ("grpc-status", "0"),
        ] {
            t.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        filter_request_trailers(&mut t);
        let mut kept: Vec<&str> = t.keys().map(HeaderName::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, ["grpc-status", "x-sum"]);
    }

    fn response_with_lengths(lengths: &[&str]) -> response::Parts {
        let mut b = http::Response::builder();
        for l in lengths {
            b = b.header("content-length", *l);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn content_length_lists_are_relayed_as_one_value() {
        for lengths in [&["5, 5"][..], &["5", "5"], &[" 5 ,5"], &["5", "5, 5"]] {
            let mut parts = response_with_lengths(lengths);
            assert!(check_response(&parts).is_ok(), "{lengths:?}");
            rewrite_response(&mut parts, &cfg());
            let got: Vec<_> = parts.headers.get_all("content-length").iter().collect();
            assert_eq!(got, ["5"], "{lengths:?}");
        }
        let mut parts = response_with_lengths(&["007"]);
        rewrite_response(&mut parts, &cfg());
        assert_eq!(parts.headers["content-length"], "007");
    }

    #[test]
    fn a_204_has_no_content_length() {
        let mut parts = response_with_lengths(&["0"]);
        parts.status = StatusCode::NO_CONTENT;
        rewrite_response(&mut parts, &cfg());
        assert!(!parts.headers.contains_key("content-length"));
        let mut parts = response_with_lengths(&["0"]);
        parts.status = StatusCode::NOT_MODIFIED;
        rewrite_response(&mut parts, &cfg());
        assert_eq!(parts.headers["content-length"], "0");
    }

    #[test]
    fn invalid_content_lengths_are_refused() {
        for lengths in [
            &["5, 6"][..],
            &["5", "6"],
            &["abc"],
            &[""],
            &["5,"],
            &["-1"],
            &["+5"],
            &["99999999999999999999"],
        ] {
            let e = check_response(&response_with_lengths(lengths)).unwrap_err();
            assert_eq!(e.status(), 502, "{lengths:?}");
        }
        // Next to `Transfer-Encoding` the length is stale and dropped, whatever it says.
        let mut parts = response_with_lengths(&["abc"]);
        parts
            .headers
            .insert("transfer-encoding", HeaderValue::from_static("chunked"));
        assert!(check_response(&parts).is_ok());
        rewrite_response(&mut parts, &cfg());
        assert!(!parts.headers.contains_key("content-length"));
    }
}
