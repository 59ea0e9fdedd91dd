//! Errors: [`ConfigError`] for bad configuration, [`ProxyError`] for requests that could not
//! be forwarded.
//!
//! A `ConfigError` is returned when something is built (a layer, a target, a key) and names
//! the bad value. A `ProxyError` never reaches the client as is: it becomes a short
//! plain-text response with the right status code, and its detail goes to `tracing`.

use std::{borrow::Cow, error::Error as StdError, fmt};

use http::StatusCode;

/// A boxed error, as tower and hyper use it.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A configuration value was refused when the layer, a target or a key was built.
///
/// Each variant names the value and says what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The path prefix the layer takes over is not usable.
    InvalidPrefix {
        /// The prefix as given.
        prefix: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A target URL was refused; the previous target stays in force.
    InvalidTarget {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// A key could not be read, generated or used with the chosen algorithm.
    InvalidKey(Cow<'static, str>),
    /// Some other setting is out of range.
    InvalidSetting {
        /// The setting's name.
        name: &'static str,
        /// Why it was refused.
        reason: Cow<'static, str>,
    },
    /// The TLS client for https targets could not be built.
    Tls(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidPrefix { prefix, reason } => {
                write!(f, "invalid proxy prefix {prefix:?}: {reason}")
            }
            Self::InvalidTarget { url, reason } => {
                write!(f, "invalid proxy target URL {url:?}: {reason}")
            }
            Self::InvalidKey(reason) => write!(f, "invalid key: {reason}"),
            Self::InvalidSetting { name, reason } => write!(f, "invalid {name}: {reason}"),
            Self::Tls(reason) => write!(f, "TLS client configuration failed: {reason}"),
        }
    }
}

impl StdError for ConfigError {}

/// Why a request under the prefix was answered by the proxy itself instead of the target.
///
/// Every response the proxy makes itself carries its [`ProxyErrorKind`] in its extensions
/// (see [`observability`](crate::observability)). Every kind maps to one status code and one short sentence, see [`ProxyError::status`]
/// and [`ProxyError::body_text`]; neither ever contains internals.
#[derive(Debug)]
pub struct ProxyError {
    kind: ProxyErrorKind,
    source: Option<BoxError>,
}

/// The kind of a [`ProxyError`].
///
/// Found in the extensions of every response the proxy makes itself, so an outer layer can
/// classify it: `res.extensions().get::<ProxyErrorKind>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyErrorKind {
    /// No target is set: `501 Not Implemented`, `The proxy is disabled.`
    Disabled,
    /// The request cannot be forwarded safely (bad `Host`, dot-segments, smuggling attempt),
    /// or its body broke while it was forwarded: `400 Bad Request`.
    BadRequest(&'static str),
    /// The request came back to this proxy through its own target: `508 Loop Detected`.
    LoopDetected,
    /// `CONNECT` (a tunnel), `TRACE` or IIS's `TRACK` (they would reflect the identity token
    /// back), also when
    /// asked for through a method-override header (`X-HTTP-Method-Override: TRACE`, or
    /// IIS's `TRACK`): `405 Method Not Allowed` with `Allow`.
    MethodNotAllowed(&'static str),
    /// The request uses something the proxy cannot relay, such as a transfer coding other
    /// than `chunked`: `501 Not Implemented`.
    NotImplemented(&'static str),
    /// An `OPTIONS` request with `Max-Forwards: 0` is for the proxy itself (RFC 9110
    /// §7.6.2): `200 OK` with `Allow`, nothing forwarded.
    MaxForwardsReached,
    /// The [`IdentityExtractor`](crate::identity::IdentityExtractor) refused the caller (its
    /// [`Rejection`](crate::identity::Rejection)'s status, `401` with `WWW-Authenticate` by default)
    /// or found no identity (`401`): nothing was sent to the target. The status and message
    /// of this kind are the default ones; the response has the rejection's.
    Unauthenticated,
    /// The identity token could not be signed: `500`; nothing was sent to the target.
    Signing,
    /// The target could not be reached (no connection, name not found, TLS refused):
    /// `502 Bad Gateway`. A target reached that then sends no valid response is
    /// [`BadResponse`](Self::BadResponse).
    Unreachable,
    /// The target answered something that cannot be forwarded: `502 Bad Gateway`.
    BadResponse(&'static str),
    /// The target did not answer within the upstream timeout: `504 Gateway Timeout`.
    Timeout,
    /// The client's request body stopped coming, the target waiting for it, for the upstream
    /// timeout: `408 Request Timeout` (the client is late, not the target).
    RequestTimeout,
    /// The client's request body outgrew a limit set in front of the proxy (such as
    /// `tower_http::limit`, which wraps it in `http_body_util::Limited`) while it was
    /// forwarded: `413 Content Too Large`.
    BodyTooLarge,
    /// The request's host (or the one a trusted proxy forwarded) is none of the app's
    /// [public origins](crate::ProxyLayer::public_origin): `421 Misdirected Request`;
    /// nothing was sent to the target.
    Misdirected,
    /// An upgrade (a WebSocket) asked for once the layer's tunnels were closed
    /// ([`Tunnels::close`](crate::proxy::Tunnels::close), at the end of a shutdown): `503 Service
    /// Unavailable`; nothing was sent to the target.
    ShuttingDown,
    /// The proxy cannot serve yet: its shared state is not synchronised, or its signing key
    /// is not published long enough for the targets to know it: `503 Service Unavailable`;
    /// nothing was sent to the target.
    NotReady,
}

impl ProxyError {
    /// A new error of this kind.
    pub fn new(kind: ProxyErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// A new error of this kind, keeping its cause for logs.
    pub fn with_source(kind: ProxyErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ProxyErrorKind {
        self.kind
    }

    /// The status code the client receives.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ProxyErrorKind::Disabled => StatusCode::NOT_IMPLEMENTED,
            ProxyErrorKind::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyErrorKind::LoopDetected => StatusCode::LOOP_DETECTED,
            ProxyErrorKind::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyErrorKind::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ProxyErrorKind::MaxForwardsReached => StatusCode::OK,
            ProxyErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ProxyErrorKind::Signing => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyErrorKind::Unreachable | ProxyErrorKind::BadResponse(_) => StatusCode::BAD_GATEWAY,
            ProxyErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyErrorKind::ShuttingDown | ProxyErrorKind::NotReady => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyErrorKind::Misdirected => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// The plain-text body the client receives.
    pub fn body_text(&self) -> &'static str {
        match self.kind {
            ProxyErrorKind::Disabled => "The proxy is disabled.",
            ProxyErrorKind::BadRequest(reason) => reason,
            ProxyErrorKind::LoopDetected => "The proxy target points back at this proxy.",
            ProxyErrorKind::MethodNotAllowed(reason) => reason,
            ProxyErrorKind::NotImplemented(reason) => reason,
            ProxyErrorKind::MaxForwardsReached => "",
            ProxyErrorKind::Unauthenticated => "Authentication is required.",
            ProxyErrorKind::Signing => "The proxy could not sign the identity token.",
            ProxyErrorKind::Unreachable => "The proxy target could not be reached.",
            ProxyErrorKind::BadResponse(reason) => reason,
            ProxyErrorKind::Timeout => "The proxy target did not respond in time.",
            ProxyErrorKind::RequestTimeout => "The request body did not arrive in time.",
            ProxyErrorKind::BodyTooLarge => "The request body is too large.",
            ProxyErrorKind::ShuttingDown => "The proxy is shutting down.",
            ProxyErrorKind::NotReady => "The proxy is not ready.",
            ProxyErrorKind::Misdirected => "The request's host is not served here.",
        }
    }
}

/// The methods the proxy forwards, for `Allow`.
pub(crate) const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";

impl ProxyError {
    /// The `Allow` header of the response, for the kinds that carry one.
    pub(crate) fn allow(&self) -> Option<&'static str> {
        match self.kind {
            ProxyErrorKind::MethodNotAllowed(_) | ProxyErrorKind::MaxForwardsReached => {
                Some(ALLOWED_METHODS)
            }
            _ => None,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.body_text())
    }
}

impl StdError for ProxyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl From<ProxyErrorKind> for ProxyError {
    fn from(kind: ProxyErrorKind) -> Self {
        Self::new(kind)
    }
}

/// A `text/plain; charset=utf-8` response.
pub(crate) fn plain_text(
    status: StatusCode,
    body: bytes::Bytes,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    let mut res = http::Response::new(http_body_util::Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_messages_leak_nothing() {
        let e = ProxyError::with_source(ProxyErrorKind::Unreachable, "connect to 10.1.2.3 refused");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(!e.body_text().contains("10.1.2.3"));
        assert!(e.source().is_some());
        assert_eq!(
            ProxyError::new(ProxyErrorKind::Disabled).body_text(),
            "The proxy is disabled."
        );
        assert_eq!(ProxyError::new(ProxyErrorKind::Timeout).status(), 504);
        assert_eq!(
            ProxyError::new(ProxyErrorKind::RequestTimeout).status(),
            408
        );
        assert_eq!(ProxyError::new(ProxyErrorKind::LoopDetected).status(), 508);
        assert_eq!(ProxyError::new(ProxyErrorKind::ShuttingDown).status(), 503);
        assert_eq!(ProxyError::new(ProxyErrorKind::Misdirected).status(), 421);
    }

    #[test]
    fn config_errors_name_the_value() {
        let e = ConfigError::InvalidTarget {
            url: "ftp://x".into(),
            reason: "the scheme must be http or https".into(),
        };
        assert!(e.to_string().contains("ftp://x"));
        assert!(e.to_string().contains("scheme"));
    }
}
