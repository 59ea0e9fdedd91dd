//! Header rules of an intermediary: hop-by-hop removal (RFC 9110 §7.6.1), `Via`
//! (§7.6.3), and the cookie policy.

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// The hop-by-hop headers removed in both directions, besides those named by `Connection`.
///
/// `HTTP2-Settings` belongs to an `h2c` upgrade of this hop only (RFC 7540 §3.2.1); it is
/// never passed on.
pub(crate) static HOP_BY_HOP: [HeaderName; 9] = [
    HeaderName::from_static(HOP_BY_HOP_NAMES[0]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[1]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[2]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[3]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[4]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[5]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[6]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[7]),
    HeaderName::from_static(HOP_BY_HOP_NAMES[8]),
];

/// The names of [`HOP_BY_HOP`] as strings, which `Connection` tokens are compared with
/// (a `HeaderName` of a standard header spells itself through a lookup).
const HOP_BY_HOP_NAMES: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "http2-settings",
];

/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Whether a client-sent header claims what only a hop in front of the target may state:
/// such headers are never passed on, whatever the client sends. By group:
/// - forwarding (`Forwarded`, `X-Forwarded`, `X-Forwarded-*`, `X-Real-IP`): the proxy sets
///   its own, and a target that read the client's would take them for the proxy's;
/// - the client's address (`True-Client-IP`, `X-Client-IP`, `CF-Connecting-IP`,
///   `Fastly-Client-IP`, `X-Cluster-Client-IP`...): CDNs and balancers set them, and targets
///   behind such fronts log, rate-limit or allow-list by them;
/// - host overrides (`X-Original-Host`, `X-Host`, `X-HTTP-Host-Override`,
///   `X-Forwarded-Server`): frameworks that honour them build absolute URLs (password reset
///   links, redirects, call-backs) on the host they name;
/// - identity (`Remote-User`, `X-Remote-User`, `X-Forwarded-User`, `X-Forwarded-Email`,
///   `X-Forwarded-Preferred-Username`, `X-Auth-Request-*`, Authelia's `Remote-Groups`...):
///   apps behind authenticating proxies (oauth2-proxy, Authelia, Apache's `REMOTE_USER`)
///   take the caller for the user they name; the target learns who the caller is from the
///   signed token only;
/// - `Proxy` (httpoxy, CVE-2016-5385): CGI targets read it as the `HTTP_PROXY` variable and
///   send their own outbound requests through the host it names.
pub(crate) fn is_front_claim(name: &HeaderName) -> bool {
    is_front_claim_str(name.as_str())
}

/// [`is_front_claim`] for a lowercase name.
fn is_front_claim_str(n: &str) -> bool {
    n.starts_with("x-forwarded")
        || n.starts_with("x-auth-request-")
        || matches!(
            n,
            "forwarded"
                | "x-real-ip"
                | "proxy"
                // The client's address.
                | "true-client-ip"
                | "x-client-ip"
                | "client-ip"
                | "cf-connecting-ip"
                | "cf-connecting-ipv6"
                | "fastly-client-ip"
                | "x-cluster-client-ip"
                | "x-originating-ip"
                | "x-remote-ip"
                | "x-remote-addr"
                // Host overrides.
                | "x-original-host"
                | "x-host"
                | "x-http-host-override"
                // Identity.
                | "remote-user"
                | "remote-groups"
                | "remote-email"
                | "remote-name"
                | "x-remote-user"
                | "x-remote-group"
                | "x-remote-groups"
                | "x-remote-email"
                | "x-webauth-user"
                | "x-authenticated-user"
                | "x-authenticated-userid"
        )
}

/// Whether a client-sent header asks the target to serve another path than the request
/// line's (`X-Original-URL`, `X-Rewrite-URL`: IIS URL Rewrite, Symfony and Zend honour them;
/// `X-Original-URI`, which nginx's `auth_request` sets for the authorising service): passed
/// on, it would take a request out of the target's base path, or show an authorising target
/// another path than the one it serves, so such headers are never passed on.
pub(crate) fn is_path_override(name: &HeaderName) -> bool {
    is_path_override_str(name.as_str())
}

fn is_path_override_str(n: &str) -> bool {
    matches!(n, "x-original-url" | "x-rewrite-url" | "x-original-uri")
}

/// The headers with which a client may ask a target to take the request for another method
/// (Google APIs, ASP.NET, Express's `method-override`...).
const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether `name` is a method-override header, also spelt with `_`.
pub(crate) fn is_method_override(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with('x')
        && (METHOD_OVERRIDES.contains(&n)
            || (n.contains('_') && METHOD_OVERRIDES.contains(&n.replace('_', "-").as_str())))
}

/// Whether this header is a method override (also spelt with `_`) naming a method the proxy
/// refuses (`TRACE`, IIS's `TRACK`, `CONNECT`): a target that honours it would reflect the
/// minted token, or open a tunnel, as the refused method itself would.
pub(crate) fn is_refused_method_override(name: &HeaderName, value: &HeaderValue) -> bool {
    is_method_override(name)
        && value.as_bytes().split(|b| *b == b',').any(|m| {
            let m = m.trim_ascii();
            [&b"TRACE"[..], b"TRACK", b"CONNECT"]
                .iter()
                .any(|refused| m.eq_ignore_ascii_case(refused))
        })
}

/// Whether `name` holds `_` and reads, with `_` as `-`, as a header the proxy removes or
/// sets itself (`X_Forwarded_Host`, `Transfer_Encoding`, `Authorization_`...): CGI and WSGI
/// targets map `-` and `_` to the same variable (RFC 9110 §17.10), so such twins are never
/// forwarded.
pub(crate) fn is_underscore_twin(name: &HeaderName) -> bool {
    let n = name.as_str();
    if !n.contains('_') {
        return false;
    }
    let dashed = n.replace('_', "-");
    let dashed = dashed.trim_matches('-');
    is_front_claim_str(dashed)
        || is_path_override_str(dashed)
        || matches!(
            dashed,
            "host"
                | "authorization"
                | "proxy-authorization"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "cookie"
                | "via"
                | "te"
                | "upgrade"
                | "expect"
                | "keep-alive"
                | "proxy-connection"
                | "max-forwards"
        )
}

/// Which of the fields the proxy reads a message holds, found in one pass over its names.
///
/// Each check of a field is a map lookup (the name hashed, then probed) even when the field
/// is absent, which it mostly is: `Via`, `TE`, `Transfer-Encoding`, `Connection`... A
/// message's few names are matched once instead, and a check is skipped only when its field
/// is known to be absent. Taken before the message changes, it may say a field is present
/// that a later step removed (the check then finds nothing), never the other way round.
///
/// Each name of [`HOP_BY_HOP`] has a bit of its own (bit `i` for `HOP_BY_HOP[i]`), so that
/// removing them looks up only those a message holds.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Present(u32);

impl Present {
    pub(crate) const CONNECTION: u32 = 1;
    pub(crate) const TE: u32 = 1 << 3;
    pub(crate) const TRANSFER_ENCODING: u32 = 1 << 4;
    /// Any of [`HOP_BY_HOP`].
    pub(crate) const HOP_BY_HOP: u32 = (1 << HOP_BY_HOP.len()) - 1;
    pub(crate) const VIA: u32 = 1 << 9;
    pub(crate) const MAX_FORWARDS: u32 = 1 << 10;
    pub(crate) const CONTENT_LENGTH: u32 = 1 << 11;
    /// Any of [`ORIGIN_WIDE`] or `Service-Worker-Allowed`.
    pub(crate) const ORIGIN_WIDE: u32 = 1 << 12;
    pub(crate) const SET_COOKIE: u32 = 1 << 13;
    pub(crate) const COOKIE: u32 = 1 << 14;
    pub(crate) const TRAILER: u32 = 1 << 15;
    /// A `Content-Length` that is not one line of one plain length: a list (`5, 5`, or
    /// several lines) to be made one value, or an invalid one. Without it, a message with
    /// [`Self::CONTENT_LENGTH`] has one line of 1 to 19 digits.
    pub(crate) const LENGTH_LIST: u32 = 1 << 16;

    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let mut bits = 0;
        for (name, value) in headers {
            bits |= match name.as_str() {
                "via" => Self::VIA,
                "max-forwards" => Self::MAX_FORWARDS,
                // Most messages: one line of digits, which any `u64` holds up to 19 of.
                "content-length" if bits & Self::CONTENT_LENGTH == 0 && is_plain_length(value) => {
                    Self::CONTENT_LENGTH
                }
                "content-length" => Self::CONTENT_LENGTH | Self::LENGTH_LIST,
                "set-cookie" => Self::SET_COOKIE,
                "cookie" => Self::COOKIE,
                "trailer" => Self::TRAILER,
                // `ORIGIN_WIDE_NAMES`, spelt out: one `match` over the lengths and bytes,
                // not a comparison with each name in turn (a unit test keeps them equal).
                "service-worker-allowed"
                | "alt-svc"
                | "clear-site-data"
                | "strict-transport-security"
                | "public-key-pins"
                | "public-key-pins-report-only"
                | "expect-ct"
                | "nel"
                | "report-to"
                | "accept-ch"
                | "critical-ch"
                | "origin-agent-cluster"
                | "set-login" => Self::ORIGIN_WIDE,
                other => hop_by_hop_bit(other),
            };
        }
        Self(bits)
    }

    /// Whether the message may hold `field` (one of the constants).
    pub(crate) fn may_have(self, field: u32) -> bool {
        self.0 & field != 0
    }
}

/// Whether `value` is one plain length: 1 to 19 digits, which any `u64` holds.
fn is_plain_length(value: &HeaderValue) -> bool {
    (1..=19).contains(&value.len()) && value.as_bytes().iter().all(u8::is_ascii_digit)
}

/// The comma-separated tokens of one list-valued header line (`Connection`, `Upgrade`), OWS
/// trimmed, empty ones skipped.
pub(crate) fn list_tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The most distinct names a request's `Connection` lines may nominate; a request that
/// nominates more is refused (`400`). Real clients nominate a handful (`keep-alive`,
/// `upgrade`, `te`, `close`).
pub(crate) const MAX_NOMINATED: usize = 32;

/// The names a message's `Connection` lines nominate as hop-by-hop: read once, into a set of
/// at most [`MAX_NOMINATED`] distinct names that borrow the header's bytes (nothing is
/// allocated), so that checking every header of a message costs the headers times that
/// bound at most, never the headers times the tokens of a huge `Connection` line.
pub(crate) struct Nominated<'a>(Option<NameSet<'a>>);

/// Up to [`MAX_NOMINATED`] names; `None` above (most messages have no `Connection`, and
/// then no set is made at all).
struct NameSet<'a> {
    names: [&'a [u8]; MAX_NOMINATED],
    len: usize,
}

impl NameSet<'_> {
    fn contains(&self, name: &[u8]) -> bool {
        self.names[..self.len].iter().any(|n| {
            cost::add(1);
            n.eq_ignore_ascii_case(name)
        })
    }
}

/// The `Connection` lines nominate more than [`MAX_NOMINATED`] distinct names.
#[derive(Debug)]
pub(crate) struct TooManyNominated;

impl<'a> Nominated<'a> {
    /// The names the `Connection` lines of `headers` (which holds what `present` says)
    /// nominate, each once, compared case-insensitively.
    pub(crate) fn given(
        headers: &'a HeaderMap,
        present: Present,
    ) -> Result<Self, TooManyNominated> {
        if !present.may_have(Present::CONNECTION) {
            return Ok(Self(None));
        }
        let mut set = NameSet {
            names: [&[]; MAX_NOMINATED],
            len: 0,
        };
        for line in headers.get_all(header::CONNECTION) {
            cost::add(line.len());
            for token in list_tokens(line) {
                if set.contains(token) {
                    continue;
                }
                if set.len == MAX_NOMINATED {
                    return Err(TooManyNominated);
                }
                set.names[set.len] = token;
                set.len += 1;
            }
        }
        Ok(Self(Some(set)))
    }

    /// Whether some `Connection` line lists `name` (case-insensitively). Tokens that are not
    /// header names match nothing.
    pub(crate) fn contains(&self, name: &HeaderName) -> bool {
        self.0
            .as_ref()
            .is_some_and(|set| set.contains(name.as_str().as_bytes()))
    }
}

/// The work of reading `Connection` lines, counted in tests: bytes scanned and names
/// compared, so that a test can show it grows with the bytes of a message, not with its
/// headers times its tokens. Nothing outside tests.
pub(crate) mod cost {
    #[cfg(test)]
    thread_local! {
        static UNITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    /// Counts `n` units of work.
    #[inline(always)]
    pub(crate) fn add(n: usize) {
        #[cfg(test)]
        UNITS.with(|u| u.set(u.get() + n as u64));
        #[cfg(not(test))]
        let _ = n;
    }

    /// The units counted on this thread so far.
    #[cfg(test)]
    pub(crate) fn units() -> u64 {
        UNITS.with(std::cell::Cell::get)
    }
}

/// Whether `Connection` lists `token` (e.g. `upgrade`), case-insensitively.
pub(crate) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Whether `name` is in [`HOP_BY_HOP`]: matched as a string, which costs less than
/// comparing it with each name of the list in turn.
pub(crate) fn is_fixed_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_bit(name.as_str()) != 0
}

/// `1 << i` for the lowercase name `HOP_BY_HOP[i]`, `0` for any other: one string `match`,
/// the [`Present`] bit of that name.
#[inline]
fn hop_by_hop_bit(name: &str) -> u32 {
    match name {
        "connection" => Present::CONNECTION,
        "keep-alive" => 1 << 1,
        "proxy-connection" => 1 << 2,
        "te" => Present::TE,
        "transfer-encoding" => Present::TRANSFER_ENCODING,
        "upgrade" => 1 << 5,
        "proxy-authorization" => 1 << 6,
        "proxy-authenticate" => 1 << 7,
        "http2-settings" => 1 << 8,
        _ => 0,
    }
}

/// Whether a `Connection` token names one of [`HOP_BY_HOP`] (case-insensitively).
fn is_fixed_hop_by_hop_token(token: &[u8]) -> bool {
    HOP_BY_HOP_NAMES
        .iter()
        .any(|fixed| token.eq_ignore_ascii_case(fixed.as_bytes()))
}

/// Whether `name` is hop-by-hop for this message: fixed list or nominated by `Connection`.
pub(crate) fn is_hop_by_hop(name: &HeaderName, nominated: &Nominated<'_>) -> bool {
    is_fixed_hop_by_hop(name) || nominated.contains(name)
}

/// Removes the hop-by-hop headers, including every name listed on every `Connection` line.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_hop_by_hop_given(headers, Present::of(headers));
}

/// [`remove_hop_by_hop`], with what `headers` holds already known.
pub(crate) fn remove_hop_by_hop_given(headers: &mut HeaderMap, present: Present) {
    // Most messages have none (`Connection` is in the list): one pass over their few names
    // costs less than a lookup per hop-by-hop name.
    if !present.may_have(Present::HOP_BY_HOP) {
        return;
    }
    // `Connection: keep-alive`, `upgrade`: names the fixed list removes anyway.
    let nominates_others = present.may_have(Present::CONNECTION)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| list_tokens(value).any(|token| !is_fixed_hop_by_hop_token(token)));
    // Line by line (a clone of a value is a reference count), so that the names are looked
    // up as `&str`, on the stack, instead of being parsed into owned `HeaderName`s.
    let mut line = 0;
    while nominates_others
        && let Some(value) = headers
            .get_all(header::CONNECTION)
            .iter()
            .nth(line)
            .cloned()
    {
        for token in list_tokens(&value) {
            // The fixed names go below, looked up only if present; `Connection` itself goes
            // there too, last: its later lines still count.
            if is_fixed_hop_by_hop_token(token) {
                continue;
            }
            if let Ok(name) = std::str::from_utf8(token) {
                headers.remove(name);
            }
        }
        line += 1;
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present.may_have(1 << i) {
            headers.remove(name);
        }
    }
}

/// Appends our `Via` entry to whatever `Via` lines the message had, as one line.
pub(crate) fn append_via(headers: &mut HeaderMap, entry: &HeaderValue, present: Present) {
    if !present.may_have(Present::VIA) {
        headers.insert(header::VIA, entry.clone());
        return;
    }
    let mut combined: Vec<u8> = Vec::new();
    for v in headers.get_all(header::VIA) {
        if !combined.is_empty() {
            combined.extend_from_slice(b", ");
        }
        combined.extend_from_slice(v.as_bytes());
    }
    let value = if combined.is_empty() {
        entry.clone()
    } else {
        combined.extend_from_slice(b", ");
        combined.extend_from_slice(entry.as_bytes());
        HeaderValue::from_bytes(&combined).unwrap_or_else(|_| entry.clone())
    };
    headers.insert(header::VIA, value);
}

/// Whether any `Via` line names `pseudonym` as a received-by entry.
pub(crate) fn via_contains(headers: &HeaderMap, pseudonym: &str) -> bool {
    headers.get_all(header::VIA).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|entry| {
            // `received-protocol received-by [comment]`
            let mut parts = entry.trim_ascii().split(|b| *b == b' ' || *b == b'\t');
            let _protocol = parts.next();
            parts.next().is_some_and(|by| by == pseudonym.as_bytes())
        })
    })
}

/// The response headers whose effect reaches beyond the response, over the app's whole
/// origin, and which [`ResponsePolicy`] drops by default.
const ORIGIN_WIDE_NAMES: [&str; 12] = [
    "alt-svc",
    "clear-site-data",
    "strict-transport-security",
    "public-key-pins",
    "public-key-pins-report-only",
    "expect-ct",
    "nel",
    "report-to",
    "accept-ch",
    "critical-ch",
    "origin-agent-cluster",
    "set-login",
];

/// Which of the target's response headers with an effect on the app's whole origin reach
/// the client.
///
/// The target's responses are served from the app's origin, and a browser applies some
/// headers to everything that origin serves, not only to the proxied paths. By default
/// they are dropped:
/// - `Clear-Site-Data` (would log users out of the app, wipe its storage), `Alt-Svc`
///   (would tell browsers to reach the app's origin elsewhere), `Strict-Transport-Security`,
///   `Public-Key-Pins` and `Public-Key-Pins-Report-Only`, `Expect-CT` (transport policy of
///   the app's host name), `NEL` and `Report-To` (network error reports of the whole origin
///   sent where the target says), `Accept-CH` and `Critical-CH` (client hints the browser
///   then sends to every path), `Origin-Agent-Cluster` and `Set-Login` (origin-keyed
///   settings);
/// - `Service-Worker-Allowed` is scoped instead: its path is mapped under the proxy's
///   prefix as a cookie's `Path` is (see [`CookiePolicy::scope_set_cookie_paths`]), and
///   always ends with `/`, so a script served under `/proxy` can never register a service
///   worker that intercepts the app's other paths (`/`, `/admin`); a value that is not a
///   plain absolute path (relative, with dot-segments or escapes) is dropped.
///
/// [`keep`](Self::keep) lets a header through as the target sent it (an app whose target
/// is trusted with its origin), [`remove`](Self::remove) drops another one.
///
/// # Example
///
/// ```
/// use http::header::STRICT_TRANSPORT_SECURITY;
/// use tower_identity_proxy::{
///     ProxyLayer,
///     jwt::{KeyPair, KeySigner},
///     rules::ResponsePolicy,
/// };
///
/// // The default: origin-wide headers dropped.
/// let proxy = ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519()?));
/// # let _ = proxy;
///
/// // The target may set HSTS for the app; its `X-Debug` never reaches clients.
/// let proxy = ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519()?)).responses(
///     ResponsePolicy::new()
///         .keep(STRICT_TRANSPORT_SECURITY)
///         .remove(http::HeaderName::from_static("x-debug")),
/// );
/// # let _ = proxy;
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ResponsePolicy {
    keep: Vec<HeaderName>,
    remove: Vec<HeaderName>,
}

impl ResponsePolicy {
    /// Drops the origin-wide headers and scopes `Service-Worker-Allowed` (see above).
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `name` through as the target sent it.
    ///
    /// # Security
    ///
    /// The target then decides for the app's whole origin what the header decides: keep
    /// only what the app would send itself, for a target it trusts as much as itself.
    #[must_use]
    pub fn keep(mut self, name: HeaderName) -> Self {
        self.remove.retain(|n| *n != name);
        self.keep.push(name);
        self
    }

    /// Drops `name` from every response of the target as well.
    #[must_use]
    pub fn remove(mut self, name: HeaderName) -> Self {
        self.keep.retain(|n| *n != name);
        self.remove.push(name);
        self
    }

    /// Drops the origin-wide headers `headers` holds (as `present` says) and the ones named
    /// with [`remove`](Self::remove), except the kept ones.
    pub(crate) fn drop_origin_wide(&self, headers: &mut HeaderMap, present: Present) {
        if present.may_have(Present::ORIGIN_WIDE) {
            for name in ORIGIN_WIDE_NAMES {
                if headers.contains_key(name) && !self.keeps(name) {
                    headers.remove(name);
                }
            }
        }
        for name in &self.remove {
            headers.remove(name);
        }
    }

    fn keeps(&self, name: &str) -> bool {
        self.keep.iter().any(|k| k.as_str() == name)
    }

    /// Maps `Service-Worker-Allowed` under `prefix` (see above), unless it is kept.
    pub(crate) fn scope_service_worker(&self, headers: &mut HeaderMap, prefix: &str, base: &str) {
        let name = HeaderName::from_static("service-worker-allowed");
        if self.keeps(name.as_str()) || !headers.contains_key(&name) {
            return;
        }
        let mut values = headers.get_all(&name).iter();
        let scoped = match (values.next(), values.next()) {
            (Some(v), None) => scoped_worker_path(v.as_bytes(), prefix, base),
            _ => None,
        };
        match scoped {
            Some(v) => headers.insert(name, v),
            None => headers.remove(name),
        };
    }
}

/// A `Service-Worker-Allowed` path of the target, seen from the client: under `prefix`,
/// ending with `/`; `None` unless it is a plain absolute path.
fn scoped_worker_path(value: &[u8], prefix: &str, base: &str) -> Option<HeaderValue> {
    let path = std::str::from_utf8(value).ok()?.trim_ascii();
    let plain = path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains(['%', '\\', '?', '#', ';'])
        && !path.split('/').any(|s| s == "." || s == "..");
    if !plain {
        return None;
    }
    let rest = path
        .strip_prefix(base)
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or("/");
    let mut scoped = String::with_capacity(prefix.len() + rest.len() + 1);
    scoped.push_str(prefix);
    scoped.push_str(rest);
    if !scoped.ends_with('/') {
        scoped.push('/');
    }
    HeaderValue::try_from(scoped).ok()
}

/// Which cookies cross the proxy.
///
/// Default: the client's `Cookie` header is not forwarded (the target learns who the caller
/// is from the signed token, and the app's session cookie must not reach it); `Set-Cookie`
/// from the target passes, scoped to the proxy's prefix (its `Path` is mapped from the
/// target's base path onto the prefix, as nginx's `proxy_cookie_path` does), so a target can
/// never set or replace a cookie the app uses outside the prefix; cookies declared as the
/// app's own are dropped.
///
/// # Example
///
/// ```
/// use tower_identity_proxy::{ProxyLayer, jwt::{KeyPair, KeySigner}, rules::CookiePolicy};
///
/// // Forward the client's cookies, except the app's session cookie, which is also never
/// // set by the target.
/// let proxy = ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519()?))
///     .cookies(CookiePolicy::new().forward(true).protect("SESSION"));
/// # let _ = proxy;
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CookiePolicy {
    forward: bool,
    protected: Vec<String>,
    scope_paths: bool,
}

impl Default for CookiePolicy {
    fn default() -> Self {
        Self {
            forward: false,
            protected: Vec::new(),
            scope_paths: true,
        }
    }
}

impl CookiePolicy {
    /// Forward no cookies; protect none by name; scope the target's cookies to the prefix.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the `Path` of every `Set-Cookie` from the target is rewritten to lie under
    /// the proxy's prefix (`Path=/x` → `Path=/proxy/x` for a target without base path,
    /// such as `http://t`; `Path=/base/x` → `Path=/proxy/x` for `http://t/base`; a path
    /// outside the base, `/`, or none → `Path=/proxy`). Default on.
    ///
    /// # Security
    ///
    /// Turned off, the target's responses, served from the app's origin, can set cookies for
    /// the whole app — including one named like the app's session cookie (fixation). Name
    /// such cookies with [`protect`](Self::protect) then.
    #[must_use]
    pub fn scope_set_cookie_paths(mut self, on: bool) -> Self {
        self.scope_paths = on;
        self
    }

    /// Forward the client's cookies to the target, except the protected ones.
    #[must_use]
    pub fn forward(mut self, on: bool) -> Self {
        self.forward = on;
        self
    }

    /// Declares a cookie as the app's own (e.g. its session cookie): it is never forwarded,
    /// and a `Set-Cookie` from the target that would set it is dropped.
    #[must_use]
    pub fn protect(mut self, name: impl Into<String>) -> Self {
        self.protected.push(name.into());
        self
    }

    /// Whether `name` names a protected cookie in any spelling a server may read as it:
    /// blanks around it, any letter case (ASP.NET's cookie collection ignores case), or
    /// percent-encoded (PHP decodes cookie names).
    fn is_protected(&self, name: &[u8]) -> bool {
        if self.protected.is_empty() {
            return false;
        }
        let name = name.trim_ascii();
        let decoded;
        let name = if name.contains(&b'%') {
            decoded = percent_decoded(name);
            decoded.trim_ascii()
        } else {
            name
        };
        self.protected
            .iter()
            .any(|p| p.as_bytes().eq_ignore_ascii_case(name))
    }

    /// The `Cookie` value to forward, all lines joined with `; ` (RFC 9113 §8.2.3), without
    /// the protected cookies; `None` when nothing is to be forwarded.
    pub(crate) fn request_cookie(
        &self,
        headers: &HeaderMap,
        present: Present,
    ) -> Option<HeaderValue> {
        if !self.forward || !present.may_have(Present::COOKIE) {
            return None;
        }
        let mut out: Vec<u8> = Vec::new();
        for line in headers.get_all(header::COOKIE) {
            for pair in line.as_bytes().split(|b| *b == b';') {
                let pair = pair.trim_ascii();
                if pair.is_empty() {
                    continue;
                }
                let name = pair
                    .split(|b| *b == b'=')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                if self.is_protected(name) {
                    continue;
                }
                if !out.is_empty() {
                    out.extend_from_slice(b"; ");
                }
                out.extend_from_slice(pair);
            }
        }
        if out.is_empty() {
            return None;
        }
        HeaderValue::from_bytes(&out).ok()
    }

    /// Rewrites the `Path` of each `Set-Cookie` so the cookie lives under `prefix` (see
    /// [`scope_set_cookie_paths`](Self::scope_set_cookie_paths)); `base` is the target's
    /// base path (`""` for the root). A line that cannot be rewritten is dropped.
    pub(crate) fn scope_set_cookie(&self, headers: &mut HeaderMap, prefix: &str, base: &str) {
        if !self.scope_paths || !headers.contains_key(header::SET_COOKIE) {
            return;
        }
        let scoped: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| scoped_set_cookie(v.as_bytes(), prefix, base))
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in scoped {
            headers.append(header::SET_COOKIE, v);
        }
    }

    /// Drops `Set-Cookie` lines that would set a protected cookie, and nameless ones
    /// (`=SESSION=evil`, or `SESSION` without `=`: browsers store a cookie with an empty
    /// name and send its value alone, `SESSION=evil`, which the app reads as its own
    /// cookie).
    pub(crate) fn filter_set_cookie(&self, headers: &mut HeaderMap, present: Present) {
        if !present.may_have(Present::SET_COOKIE) {
            return;
        }
        let refused = |v: &HeaderValue| {
            let pair = v
                .as_bytes()
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default();
            match pair.iter().position(|b| *b == b'=') {
                None => true,
                Some(eq) => {
                    let name = pair[..eq].trim_ascii();
                    name.is_empty() || self.is_protected(name)
                }
            }
        };
        if !headers.get_all(header::SET_COOKIE).iter().any(refused) {
            return;
        }
        let kept: Vec<HeaderValue> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter(|v| !refused(v))
            .cloned()
            .collect();
        headers.remove(header::SET_COOKIE);
        for v in kept {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

/// `bytes` with its `%XX` escapes decoded (others kept as they are).
fn percent_decoded(bytes: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// One `Set-Cookie` value with its `Path` mapped under `prefix` (added when absent: the
/// browser's default path for a response to `/proxy` would be `/`).
fn scoped_set_cookie(value: &[u8], prefix: &str, base: &str) -> Option<HeaderValue> {
    let mut attrs = value.split(|b| *b == b';');
    let pair = attrs.next()?;
    let mut out = Vec::with_capacity(value.len() + prefix.len() + 8);
    out.extend_from_slice(pair);
    let mut path = None;
    for attr in attrs {
        // `name[=value]`, blanks around the name ignored, as browsers parse it (RFC 6265
        // §5.2); the last Path attribute is the one they use (§5.3).
        let mut kv = attr.splitn(2, |b| *b == b'=');
        let name = kv.next().unwrap_or_default().trim_ascii();
        if name.eq_ignore_ascii_case(b"path") {
            path = Some(kv.next().unwrap_or_default());
            continue;
        }
        out.push(b';');
        out.extend_from_slice(attr);
    }
    out.extend_from_slice(b"; Path=");
    out.extend_from_slice(cookie_path_under(path, prefix, base).as_bytes());
    HeaderValue::from_bytes(&out).ok()
}

/// The target's cookie path, seen from the client: under `prefix`.
fn cookie_path_under(path: Option<&[u8]>, prefix: &str, base: &str) -> String {
    let rest = path
        .and_then(|p| std::str::from_utf8(p).ok())
        .and_then(|p| p.trim_ascii().strip_prefix(base))
        .filter(|rest| rest.starts_with('/'))
        .unwrap_or("");
    if rest.is_empty() || rest == "/" {
        prefix.to_owned()
    } else {
        format!("{prefix}{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_says_what_a_lookup_would() {
        let fields = [
            (Present::VIA, header::VIA),
            (Present::TE, header::TE),
            (Present::TRANSFER_ENCODING, header::TRANSFER_ENCODING),
            (Present::CONNECTION, header::CONNECTION),
            (Present::MAX_FORWARDS, header::MAX_FORWARDS),
            (Present::CONTENT_LENGTH, header::CONTENT_LENGTH),
            (Present::SET_COOKIE, header::SET_COOKIE),
            (Present::COOKIE, header::COOKIE),
            (Present::TRAILER, header::TRAILER),
        ];
        let mut names: Vec<HeaderName> = fields.iter().map(|(_, n)| n.clone()).collect();
        names.extend(HOP_BY_HOP.iter().cloned());
        names.extend(["host", "x-via", "via-not", "content-type"].map(HeaderName::from_static));
        // Every message of up to two of these names.
        for a in &names {
            for b in &names {
                let mut h = HeaderMap::new();
                h.append(a.clone(), HeaderValue::from_static("x"));
                h.append(b.clone(), HeaderValue::from_static("y"));
                let present = Present::of(&h);
                for (bit, name) in &fields {
                    assert_eq!(
                        present.may_have(*bit),
                        h.contains_key(name),
                        "{a} {b}: {name}"
                    );
                }
                assert_eq!(
                    present.may_have(Present::HOP_BY_HOP),
                    h.keys().any(|n| HOP_BY_HOP.contains(n)),
                    "{a} {b}"
                );
            }
        }
        assert!(!Present::of(&HeaderMap::new()).may_have(u32::MAX));
        // The origin-wide names have their bit, and nothing else has it.
        for name in ORIGIN_WIDE_NAMES.iter().chain(&["service-worker-allowed"]) {
            let mut h = HeaderMap::new();
            h.append(HeaderName::from_static(name), HeaderValue::from_static("x"));
            assert_eq!(Present::of(&h).0, Present::ORIGIN_WIDE, "{name}");
        }
        for name in &names {
            let mut h = HeaderMap::new();
            h.append(name.clone(), HeaderValue::from_static("x"));
            assert!(!Present::of(&h).may_have(Present::ORIGIN_WIDE), "{name}");
        }
        // Each hop-by-hop name has its own bit, the one removal looks at.
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.append(name.clone(), HeaderValue::from_static("x"));
            assert_eq!(Present::of(&h).0, 1 << i, "{name}");
        }
    }

    /// Only one line of one plain length goes without [`Present::LENGTH_LIST`], which sends
    /// the others to the full check of the lengths.
    #[test]
    fn present_tells_a_plain_length_from_any_other() {
        let of = |lines: &[&'static str]| {
            let mut h = HeaderMap::new();
            h.append(header::HOST, HeaderValue::from_static("a.test"));
            for line in lines {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_static(line));
            }
            h.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            let present = Present::of(&h);
            assert!(present.may_have(Present::CONTENT_LENGTH), "{lines:?}");
            present.may_have(Present::LENGTH_LIST)
        };
        for plain in ["0", "5", "1234567890123456789"] {
            assert!(!of(&[plain]), "{plain}");
        }
        for other in [
            &["5, 5"][..],
            &["5", "5"],
            &["5", "6"],
            &["12345678901234567890"],
            &["+5"],
            &["5 "],
            &[""],
            &["0x5"],
            &["-1"],
        ] {
            assert!(of(other), "{other:?}");
        }
    }

    /// `remove_hop_by_hop` as first written, every name looked up: the oracle for the one
    /// that looks up only what `Present` says a message holds.
    fn remove_hop_by_hop_reference(headers: &mut HeaderMap) {
        let nominated: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| list_tokens(v).map(|t| String::from_utf8_lossy(t).into_owned()))
            .collect();
        for name in nominated {
            headers.remove(name.as_str());
        }
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }

    #[test]
    fn hop_by_hop_removal_matches_the_reference() {
        let connection_values = [
            "keep-alive",
            "Keep-Alive, X-Custom",
            "close",
            "upgrade, TE",
            "x-custom, ,Proxy-Connection",
            "CONNECTION, x-other",
        ];
        let mut names: Vec<HeaderName> = HOP_BY_HOP.to_vec();
        names.extend(["x-custom", "x-other", "host", "close"].map(HeaderName::from_static));
        let mut messages = 0;
        for first in &connection_values {
            for second in [None, Some("x-other"), Some("keep-alive, Upgrade")] {
                for a in &names {
                    for b in &names {
                        let mut h = HeaderMap::new();
                        h.append(header::CONNECTION, HeaderValue::from_static(first));
                        if let Some(second) = second {
                            h.append(header::CONNECTION, HeaderValue::from_static(second));
                        }
                        h.append(a.clone(), HeaderValue::from_static("a"));
                        h.append(b.clone(), HeaderValue::from_static("b"));
                        let mut want = h.clone();
                        remove_hop_by_hop_reference(&mut want);
                        let mut got = h.clone();
                        remove_hop_by_hop(&mut got);
                        assert_eq!(got, want, "{h:?}");
                        messages += 1;
                    }
                }
            }
        }
        // Without `Connection`, too.
        for a in &names {
            let mut h = HeaderMap::new();
            h.append(a.clone(), HeaderValue::from_static("a"));
            let mut want = h.clone();
            remove_hop_by_hop_reference(&mut want);
            remove_hop_by_hop(&mut h);
            assert_eq!(h, want);
        }
        assert_eq!(messages, 6 * 3 * names.len() * names.len());
    }

    #[test]
    fn the_fixed_hop_by_hop_match_is_the_list() {
        for name in &HOP_BY_HOP {
            assert!(is_fixed_hop_by_hop(name), "{name}");
        }
        let others = [
            "content-length",
            "host",
            "via",
            "x-te",
            "tee",
            "proxy",
            "upgrade-insecure-requests",
        ];
        for name in others {
            assert!(
                !is_fixed_hop_by_hop(&HeaderName::from_static(name)),
                "{name}"
            );
        }
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn method_overrides_to_refused_methods_are_recognised_in_every_spelling() {
        let refused = |name: &str, value: &str| {
            is_refused_method_override(
                &HeaderName::from_bytes(name.as_bytes()).unwrap(),
                &HeaderValue::from_str(value).unwrap(),
            )
        };
        for (name, value) in [
            ("x-http-method-override", "TRACE"),
            ("x-http-method", " track "),
            ("x-method-override", "connect"),
            ("x_http_method_override", "Trace"),
            ("x-http-method-override", "GET, TRACE"),
        ] {
            assert!(refused(name, value), "{name}: {value}");
        }
        for (name, value) in [
            ("x-http-method-override", "PATCH"),
            ("x-http-method-override", "TRACES"),
            ("x-other", "TRACE"),
            ("method-override", "TRACE"),
            // A name with `_` is a method override only when it reads as one with `-`.
            ("x_other", "TRACE"),
            ("x_request_id", "connect"),
        ] {
            assert!(!refused(name, value), "{name}: {value}");
        }
        for name in ["x-original-url", "x-rewrite-url"] {
            assert!(is_path_override(&HeaderName::from_static(name)));
            let twin = HeaderName::from_bytes(name.replace('-', "_").as_bytes()).unwrap();
            assert!(is_underscore_twin(&twin), "{twin}");
        }
    }

    #[test]
    fn removes_everything_connection_names_on_every_line() {
        let mut h = map(&[
            ("connection", "keep-alive, X-A"),
            ("Connection", " x-b ,,UPGRADE "),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-c", "3"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-connection", "keep-alive"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-c"));
    }

    #[test]
    fn nominated_names_are_matched_in_place_whatever_their_case() {
        let mut h = map(&[
            ("connection", "close, X-A, not a name, Connection"),
            ("connection", "x-b"),
            ("x-a", "1"),
            ("x-b", "2"),
            ("x-c", "3"),
        ]);
        let nominated = Nominated::given(&h, Present::of(&h)).unwrap();
        for name in ["x-a", "x-b", "connection", "close"] {
            assert!(nominated.contains(&HeaderName::from_static(name)), "{name}");
        }
        assert!(!nominated.contains(&HeaderName::from_static("x-c")));
        let none = HeaderMap::new();
        assert!(
            !Nominated::given(&none, Present::of(&none))
                .unwrap()
                .contains(&header::HOST)
        );

        // A line that nominates `Connection` itself does not hide the lines after it.
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-c"));
    }

    #[test]
    fn via_is_appended_and_detected() {
        let ours = HeaderValue::from_static("1.1 tip-1234");
        let mut h = map(&[("via", "1.0 fred"), ("via", "1.1 p.example.net")]);
        let present = Present::of(&h);
        append_via(&mut h, &ours, present);
        assert_eq!(h["via"], "1.0 fred, 1.1 p.example.net, 1.1 tip-1234");
        // Without `Via`, ours alone; a stale `present` (the lines since removed) as well.
        let mut none = HeaderMap::new();
        append_via(&mut none, &ours, Present::of(&HeaderMap::new()));
        assert_eq!(none["via"], "1.1 tip-1234");
        let mut gone = map(&[("via", "1.0 fred")]);
        let stale = Present::of(&gone);
        gone.remove("via");
        append_via(&mut gone, &ours, stale);
        assert_eq!(gone["via"], "1.1 tip-1234");
        assert!(via_contains(&h, "tip-1234"));
        assert!(!via_contains(&h, "tip-12"));
        assert!(!via_contains(&h, "fred2"));
    }

    #[test]
    fn set_cookie_paths_are_scoped_under_the_prefix() {
        let scope = |v: &str, base: &str| {
            let mut h = map(&[("set-cookie", v)]);
            CookiePolicy::new().scope_set_cookie(&mut h, "/proxy", base);
            h.get("set-cookie").map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(scope("a=1", "").unwrap(), "a=1; Path=/proxy");
        assert_eq!(scope("a=1; Path=/", "").unwrap(), "a=1; Path=/proxy");
        assert_eq!(
            scope("a=1; path=/x/y; HttpOnly", "").unwrap(),
            "a=1; HttpOnly; Path=/proxy/x/y"
        );
        assert_eq!(
            scope("a=1; Path=/base/x", "/base").unwrap(),
            "a=1; Path=/proxy/x"
        );
        assert_eq!(
            scope("a=1; Path=/basex", "/base").unwrap(),
            "a=1; Path=/proxy"
        );
        assert_eq!(
            scope("a=1; Path=/other", "/base").unwrap(),
            "a=1; Path=/proxy"
        );
        assert_eq!(
            scope("a=1; Path=/x; Path=/", "").unwrap(),
            "a=1; Path=/proxy",
            "the last Path counts"
        );
        assert_eq!(scope("a=1; path =/; PATH", "").unwrap(), "a=1; Path=/proxy");
        let mut h = map(&[("set-cookie", "a=1; Path=/")]);
        CookiePolicy::new()
            .scope_set_cookie_paths(false)
            .scope_set_cookie(&mut h, "/proxy", "");
        assert_eq!(h["set-cookie"], "a=1; Path=/");
    }

    #[test]
    fn cookies_follow_the_policy() {
        let h = map(&[("cookie", "a=1; session=s3cr3t"), ("cookie", "b=2")]);
        assert_eq!(
            CookiePolicy::new().request_cookie(&h, Present::of(&h)),
            None
        );
        let p = CookiePolicy::new().forward(true).protect("session");
        assert_eq!(p.request_cookie(&h, Present::of(&h)).unwrap(), "a=1; b=2");
        let mut r = map(&[
            ("set-cookie", "session=evil; Path=/"),
            ("set-cookie", "theirs=1"),
        ]);
        let present = Present::of(&r);
        p.filter_set_cookie(&mut r, present);
        assert_eq!(r.get_all("set-cookie").iter().count(), 1);
        assert_eq!(r["set-cookie"], "theirs=1");
    }

    #[test]
    fn nameless_and_protected_cookies_never_reach_the_client_in_any_spelling() {
        let p = CookiePolicy::new().protect("SESSION");
        let mut r = HeaderMap::new();
        for v in [
            "=SESSION=evil; Path=/",
            " =SESSION=evil",
            "SESSION",
            "SESSION; Path=/",
            "session=evil",
            " SESSION =evil",
            "\tSession\t=evil",
            "%53ESSION=evil",
            "SESS%49ON=evil",
            "theirs=1",
            "other=SESSION=x",
        ] {
            r.append(header::SET_COOKIE, HeaderValue::from_str(v).unwrap());
        }
        let present = Present::of(&r);
        p.filter_set_cookie(&mut r, present);
        let kept: Vec<_> = r.get_all("set-cookie").iter().collect();
        assert_eq!(kept, ["theirs=1", "other=SESSION=x"]);
        // Nameless cookies go without any protected name, too.
        let mut r = map(&[("set-cookie", "=x"), ("set-cookie", "a=1")]);
        let present = Present::of(&r);
        CookiePolicy::new().filter_set_cookie(&mut r, present);
        assert_eq!(r["set-cookie"], "a=1");
        assert_eq!(r.get_all("set-cookie").iter().count(), 1);
        // And the client's protected cookie is never forwarded in another spelling.
        let h = map(&[("cookie", "session=1; %53ESSION=2; a=3")]);
        assert_eq!(
            CookiePolicy::new()
                .forward(true)
                .protect("SESSION")
                .request_cookie(&h, Present::of(&h))
                .unwrap(),
            "a=3"
        );
    }
}
