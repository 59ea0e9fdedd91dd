//! Forwarding one request: identity, token, rewrite, send, map the response back.
//!
//! The steps, in order (each failure is a plain-text response; nothing is sent upstream
//! before the last step):
//! 1. no target → `501 The proxy is disabled.` (checked in the service, before any work);
//! 2. the pure [`rewrite_request`] → `400`/`405`/`501`/`508`
//!    (or `200` for `OPTIONS` with `Max-Forwards: 0`);
//! 3. the [`IdentityExtractor`] → its rejection (`401`, or the status a
//!    [`Rejection`](crate::identity::Rejection) names), or `401` if no identity; a `401` always with
//!    `WWW-Authenticate` (see [`crate::identity`]);
//! 4. the [`JwtSigner`] → `500` if it fails;
//! 5. the pooled client, within the upstream timeout (counted from the request's last body
//!    bytes while it is still uploading) → `502` (unreachable or TLS failure: "could not be
//!    reached"; connected but no valid response head: "sent no valid response"; framing
//!    that cannot be relayed), `504` (timeout), `408` when the timeout ends with the target waiting for
//!    a client's upload that stopped coming, or `400` when the client's own body breaks on
//!    the way (a malformed chunk, fewer bytes than its `Content-Length`; `413` when it
//!    outgrew a limit set in front, such as `tower_http::limit`); the target's
//!    response streams back with its hop-by-hop headers removed, `Via` added and its cookies
//!    scoped under the prefix; a body that stalls longer than the upstream body timeout is
//!    aborted (the client sees it cut).
//!
//! A response whose end is marked only by the target closing the connection (HTTP/1.0
//! style: no `Content-Length`, not chunked, as Python's `http.server` answers) is read
//! ahead up to [`READ_AHEAD`] bytes within the upstream timeout: when it ends by then, the
//! client gets it with a `Content-Length`, as the Atoti proxy does; otherwise what was read
//! is sent first and the rest streams. The upstream body timeout holds while reading ahead
//! too: a body silent that long is sent as far as it came, then aborted.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use crate::client::Received;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;
use tracing::Instrument;

use crate::{
    boxed::pinned,
    client::ProxyClient,
    error::{BoxError, ProxyError, ProxyErrorKind, plain_text},
    identity::{IdentityExtractor, refusal},
    jwt::signer::JwtSigner,
    observability::record::{self, Exchange},
    proxy::{
        body::{ResponseBody, local},
        future::ProxyFuture,
        handle::ProxyHandle,
    },
    rules::{
        headers::{Present, connection_has, list_tokens},
        rewrite::{
            Framing, RewriteConfig, check_request, check_response_given, filter_request_trailers,
            rewrite_response, rewrite_response_given, scope_set_cookies, scope_set_cookies_given,
        },
    },
    target::Target,
};

/// What every service built from one layer shares.
pub(crate) struct Shared<I, J> {
    pub(crate) identity: I,
    pub(crate) signer: Arc<J>,
    pub(crate) handle: ProxyHandle,
    pub(crate) client: Option<ProxyClient>,
    pub(crate) rewrite: Arc<RewriteConfig>,
    pub(crate) timeout: Duration,
    pub(crate) body_timeout: Option<Duration>,
    pub(crate) upgrades: bool,
    pub(crate) tunnel_idle_timeout: Option<Duration>,
    pub(crate) tunnels: crate::proxy::upgrade::Tunnels,
}

/// The response to `error`, with its kind in the extensions.
pub(crate) fn error_response<B>(error: &ProxyError) -> Response<ResponseBody<B>> {
    let mut res = plain_text(
        error.status(),
        Bytes::from_static(error.body_text().as_bytes()),
    );
    if let Some(allow) = error.allow() {
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    res.extensions_mut().insert(error.kind());
    local(res)
}

/// The identity extractor's refusal (`None`: no identity), with its kind in the extensions.
fn unauthenticated<E: IdentityExtractor, B>(
    extractor: &E,
    rejection: Option<crate::identity::Rejection>,
) -> Response<ResponseBody<B>> {
    let mut res = refusal(extractor, rejection);
    res.extensions_mut().insert(ProxyErrorKind::Unauthenticated);
    local(res)
}

/// How the request body goes to the target: with the client's `Content-Length`, empty, or
/// chunked. An HTTP/2 request can follow a body of stated length with trailers, which an
/// HTTP/1.1 message with `Content-Length` cannot carry: one that announces trailers
/// (`Trailer`, RFC 9110 §6.6.2) goes chunked, so an HTTP/1.1 target gets them.
fn framing<B: Body>(parts: &http::request::Parts, present: Present, body: &B) -> Framing {
    let trailers_announced = parts.version >= Version::HTTP_2 && present.may_have(Present::TRAILER);
    if present.may_have(Present::CONTENT_LENGTH) && !trailers_announced {
        Framing::Length
    } else if body.is_end_stream() {
        Framing::Empty
    } else {
        Framing::Unknown
    }
}

/// The protocol a request asks to upgrade to, if it is a WebSocket-style upgrade that the
/// proxy will tunnel (`Connection: upgrade` + `Upgrade`, HTTP/1.1, not `h2c`).
fn requested_upgrade(parts: &http::request::Parts, present: Present) -> Option<HeaderValue> {
    if parts.version != Version::HTTP_11
        || !present.may_have(Present::CONNECTION)
        || !connection_has(&parts.headers, "upgrade")
    {
        return None;
    }
    let mut values = parts.headers.get_all(header::UPGRADE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    // h2c upgrades would turn the connection into an HTTP/2 tunnel past the proxy.
    let is_h2c = value
        .as_bytes()
        .split(|b| *b == b',')
        .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    (!is_h2c).then(|| value.clone())
}

/// Whether the protocols a `101` switches to (`chosen`) were all offered in the request.
fn offered(offer: &HeaderValue, chosen: &HeaderValue) -> bool {
    let mut any = false;
    for token in list_tokens(chosen) {
        any = true;
        if !list_tokens(offer).any(|o| o.eq_ignore_ascii_case(token)) {
            return false;
        }
    }
    any
}

/// Proxies one request under the prefix to `target`.
///
/// Not an `async fn` around `run`: each would keep the request in its state twice (as its
/// argument, then as the locals it is taken apart into), and this one would hold `run`'s
/// whole state again. The future is boxed here, allocated before it is built, so that it
/// is written into its box rather than copied there from the stack.
pub(crate) fn proxy<B, R, I, J>(
    shared: Arc<Shared<I, J>>,
    target: Arc<Target>,
    req: Request<B>,
) -> ProxyFuture<R>
where
    R: 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    I: IdentityExtractor,
    J: JwtSigner,
{
    // DEBUG, as tower-http's `TraceLayer` spans: at INFO, creating, entering and recording
    // a span on every request costs about a tenth of a proxied request with a `fmt`
    // subscriber. The warnings below name the target themselves.
    let span = tracing::debug_span!(
        target: "tower_identity_proxy",
        "proxy",
        method = %req.method(),
        path = req.uri().path(),
        target = target.as_str(),
        status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    #[cfg(feature = "opentelemetry")]
    crate::observability::trace::adopt(&span, req.headers());
    let started = (!span.is_disabled()).then(Instant::now);
    let (parts, body) = req.into_parts();
    pinned!(Proxied {
        run: run(shared, target, parts, body).instrument(span),
        started,
        in_flight: InFlight::enter(),
    })
}

/// A request under the prefix counted in `tower_identity_proxy_in_flight` until it is
/// answered, or dropped unanswered (`outcome="cancelled"`).
struct InFlight {
    open: bool,
}

impl InFlight {
    fn enter() -> Self {
        record::in_flight(true);
        Self { open: true }
    }

    /// The request is answered: `kind` if the proxy made the response itself.
    fn answered(&mut self, kind: Option<ProxyErrorKind>) {
        if std::mem::take(&mut self.open) {
            record::in_flight(false);
            record::request(kind);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.open {
            record::in_flight(false);
            record::cancelled();
        }
    }
}

pin_project! {
    /// [`proxy`]'s future: `run` in the request's span, which records the status and
    /// duration at the end when it is enabled, and the request's metrics.
    pub(crate) struct Proxied<F> {
        #[pin]
        run: tracing::instrument::Instrumented<F>,
        started: Option<Instant>,
        in_flight: InFlight,
    }
}

impl<F, B> Future for Proxied<F>
where
    F: Future<Output = Response<B>>,
{
    type Output = Response<B>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let res = std::task::ready!(this.run.as_mut().poll(cx));
        this.in_flight
            .answered(res.extensions().get::<ProxyErrorKind>().copied());
        if let Some(started) = this.started.take() {
            let span = this.run.span();
            span.record("status", res.status().as_u16());
            span.record("duration_ms", started.elapsed().as_secs_f64() * 1000.0);
        }
        Poll::Ready(res)
    }
}

#[allow(clippy::manual_async_fn)] // on purpose: see the comment on the block
fn run<B, R, I, J>(
    shared: Arc<Shared<I, J>>,
    target: Arc<Target>,
    mut parts: http::request::Parts,
    body: B,
) -> impl Future<Output = Response<ResponseBody<R>>> + Send
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    I: IdentityExtractor,
    J: JwtSigner,
{
    // An `async` block, not an `async fn`: the arguments stay where the block captured
    // them instead of being moved into locals too, which would keep them twice.
    async move {
        let shared = &*shared;
        // The head's names matched once, for every rule below.
        let present = Present::of(&parts.headers);
        let framing = framing(&parts, present, &body);
        let mut forwarding = match check_request(&parts, &target, &shared.rewrite, framing, present)
        {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(reason = e.body_text(), "request refused");
                return error_response(&e);
            }
        };

        let identity = match shared.identity.extract(&parts).await {
            // The token names the public origin the request came through.
            Ok(Some(identity)) => match forwarding.origin() {
                Some(origin) => identity.issued_by(Arc::clone(origin.issuer())),
                None => identity,
            },
            Ok(None) => return unauthenticated(&shared.identity, None),
            Err(rejection) => return unauthenticated(&shared.identity, Some(rejection)),
        };
        let token = match shared.signer.sign(&identity).await {
            Ok(t) => t,
            Err(e) if e.is_not_ready() => {
                tracing::warn!(error = %e, "identity token not signed yet; nothing sent upstream");
                return error_response(&ProxyError::new(ProxyErrorKind::NotReady));
            }
            Err(e) => {
                tracing::error!(error = %e, "identity token not signed; nothing sent upstream");
                return error_response(&ProxyError::new(ProxyErrorKind::Signing));
            }
        };
        // Identifying the caller can take long (a queue of password checks, a session store):
        // the token goes to the target in force now, never to one replaced meanwhile, and
        // nowhere once the proxy was disabled.
        let target = if shared.handle.is_current(&target) {
            target
        } else {
            let Some(now) = shared.handle.target() else {
                return error_response(&ProxyError::new(ProxyErrorKind::Disabled));
            };
            forwarding = match check_request(&parts, &now, &shared.rewrite, framing, present) {
                Ok(f) => f,
                Err(e) => {
                    tracing::debug!(reason = e.body_text(), "request refused");
                    return error_response(&e);
                }
            };
            tracing::Span::current().record("target", now.as_str());
            now
        };
        let target = &*target;

        // WebSocket and other upgrades: tunnel only once the target agrees with a matching 101.
        // Read from the client's head before it becomes the target's.
        let upgrade = if shared.upgrades {
            requested_upgrade(&parts, present).and_then(|proto| {
                parts
                    .extensions
                    .remove::<hyper::upgrade::OnUpgrade>()
                    .map(|on| (proto, on))
            })
        } else {
            None
        };
        if upgrade.is_some() && shared.tunnels.is_closed() {
            // A tunnel opened now would be closed at once: the target is not asked.
            return error_response(&ProxyError::new(ProxyErrorKind::ShuttingDown));
        }
        // The client's head becomes the target's, in place.
        // `Host` for HTTP/1.1 (dropped again if the connection turns out to be HTTP/2, which
        // names the target in `:authority`) and the token, over the client's own.
        let mut upstream = forwarding.apply(
            &mut parts,
            &shared.rewrite,
            Some(target.host_header().clone()),
            Some(token.authorization().clone()),
        );
        #[cfg(feature = "opentelemetry")]
        crate::observability::trace::inject(&mut upstream.headers);

        if let Some((proto, _)) = &upgrade {
            upstream
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            upstream.headers.insert(header::UPGRADE, proto.clone());
        }

        let Some(client) = &shared.client else {
            return error_response(&ProxyError::new(ProxyErrorKind::Unreachable));
        };
        // An empty body (most GETs) is sent as `Empty`, whose box allocates nothing; any other
        // body records when it last moved, for the upstream timeout.
        let (body, progress) = if body.is_end_stream() {
            (http_body_util::combinators::UnsyncBoxBody::default(), None)
        } else {
            let progress = Arc::new(Progress::new());
            let body = Tracked {
                body,
                progress: Arc::clone(&progress),
            };
            (body.map_err(Into::into).boxed_unsync(), Some(progress))
        };
        let request = Request::from_parts(upstream, body);

        // Pinned where it is made: passed by value, an `async fn` would keep the future twice
        // in its state (as its argument, then as the local it pins).
        let send = std::pin::pin!(client.send(target, request, upgrade.is_some()));
        let sent_at = tokio::time::Instant::now();
        let sent = await_response(send, sent_at, progress.as_deref(), shared.timeout).await;
        // `http.client.request.duration`: until the response head, or the failure.
        let observe =
            |exchange| record::upstream(&parts.method, target.server(), exchange, sent_at);
        let (response, deadline) = match sent {
            Some((Ok(res), deadline)) => {
                observe(Exchange::Response(res.status()));
                (res, deadline)
            }
            // The client's own body broke (malformed chunked framing, fewer bytes than its
            // `Content-Length`, a reset upload): the request failed through no fault of the
            // target's, and the client, if still there, is told so; a body that outgrew a limit
            // set in front of the proxy (`tower_http::limit`, or any body wrapped in
            // `http_body_util::Limited`) is too large.
            Some((Err(e), _)) if progress.as_deref().is_some_and(Progress::failed) => {
                observe(Exchange::Failed("request_body"));
                tracing::debug!(error = %e, "request body broken; upstream request abandoned");
                let kind = if caused_by::<http_body_util::LengthLimitError>(&e) {
                    ProxyErrorKind::BodyTooLarge
                } else {
                    ProxyErrorKind::BadRequest("The request body is incomplete or malformed.")
                };
                return error_response(&ProxyError::with_source(kind, e));
            }
            // No connection (refused, name not found, TLS handshake refused, a TLS 1.3 client
            // certificate refused once the handshake looked done): unreachable.
            Some((Err(e), _)) if e.is_connect() || tls_failure(&e) => {
                observe(Exchange::Failed("unreachable"));
                let error = ProxyError::with_source(ProxyErrorKind::Unreachable, e);
                tracing::warn!(
                    target = target.as_str(),
                    error = ?std::error::Error::source(&error),
                    "target unreachable"
                );
                return error_response(&error);
            }
            // Connected, but the exchange failed: the target closed or reset the connection
            // before a whole response head, or sent something that is not one.
            Some((Err(e), _)) => {
                observe(Exchange::Failed("bad_response"));
                let error = ProxyError::with_source(
                    ProxyErrorKind::BadResponse("The proxy target sent no valid response."),
                    e,
                );
                tracing::warn!(
                    target = target.as_str(),
                    error = ?std::error::Error::source(&error),
                    "target sent no valid response"
                );
                return error_response(&error);
            }
            // The wait ended while the target was waiting for the client's body, which stopped
            // coming: the client is late, not the target.
            None if progress.as_deref().is_some_and(Progress::awaiting_client) => {
                observe(Exchange::Failed("request_timeout"));
                tracing::debug!(timeout = ?shared.timeout, "request body stalled; upstream request abandoned");
                let mut res = error_response(&ProxyError::new(ProxyErrorKind::RequestTimeout));
                // The rest of the body will not be read (RFC 9110 §15.5.9).
                if parts.version < Version::HTTP_2 {
                    res.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                return res;
            }
            None => {
                observe(Exchange::Failed("timeout"));
                tracing::warn!(target = target.as_str(), timeout = ?shared.timeout, "target timed out");
                return error_response(&ProxyError::new(ProxyErrorKind::Timeout));
            }
        };
        let present = Present::of(response.headers());
        if upgrade.is_none() && is_close_delimited(&response, present) {
            // Rare (HTTP/1.0-style targets), and its state is the largest: boxed, so that the
            // future of every other request is smaller.
            return Box::pin(read_ahead(shared, target, response, deadline)).await;
        }
        respond(shared, target, response, present, upgrade)
    }
}

/// Whether TLS with the target failed after the connection was made: a TLS 1.3 server
/// refuses a client certificate (or its absence) only once the client considers the
/// handshake done, so the refusal comes as the first read of the response, not as a
/// connect error. TLS errors reach here as I/O errors of kind `InvalidData` (how
/// tokio-rustls reports them, with the rustls error as text); a plain TCP connection never
/// fails that way.
fn tls_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
    })
}

/// Whether an error of type `T` is `error` or one of its causes.
fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|e| e.is::<T>())
}

/// `error`, then its causes, outermost first.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// Awaits the target's response until `timeout` has passed since the request was sent or,
/// while its body is still being sent, since the body last moved: an upload that keeps
/// moving is never cut however long it takes, and the target gets the whole timeout once it
/// has the request. Returns the response and the deadline then in force, or `None` on
/// timeout.
async fn await_response<F: Future>(
    mut send: std::pin::Pin<&mut F>,
    sent: tokio::time::Instant,
    progress: Option<&Progress>,
    timeout: Duration,
) -> Option<(F::Output, tokio::time::Instant)> {
    let mut since = sent;
    loop {
        let deadline = crate::proxy::deadline::after(since, timeout);
        match tokio::time::timeout_at(deadline, send.as_mut()).await {
            Ok(out) => return Some((out, deadline)),
            Err(_) => match progress.map(Progress::last) {
                Some(last) if last > since => since = last,
                _ => return None,
            },
        }
    }
}

/// When a request body last moved towards the target, whether it is waiting for the
/// client, and whether it failed.
struct Progress {
    started: tokio::time::Instant,
    /// Milliseconds after `started`.
    last_ms: AtomicU64,
    /// Whether the body was last asked for bytes that the client had not sent yet (rather
    /// than handing over what it had, or not being asked: the target not reading).
    awaiting_client: AtomicBool,
    /// Whether reading the client's body failed.
    failed: AtomicBool,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            awaiting_client: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        }
    }

    fn awaiting_client(&self) -> bool {
        self.awaiting_client.load(Ordering::Relaxed)
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        let ms = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.checked_add(ms).unwrap_or(self.started)
    }
}

pin_project! {
    /// A request body that records in a [`Progress`] each frame it hands over, its end, and
    /// its failure, and filters its trailers.
    struct Tracked<B> {
        #[pin]
        body: B,
        progress: Arc<Progress>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        let progress = this.progress;
        progress
            .awaiting_client
            .store(polled.is_pending(), Ordering::Relaxed);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                progress.touch();
                // Trailers, if any, lose what the proxy manages (see `filter_request_trailers`).
                let frame = match frame.into_trailers() {
                    Ok(mut trailers) => {
                        filter_request_trailers(&mut trailers);
                        Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                progress.touch();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                progress.fail();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The most bytes of a close-delimited response body read ahead to give it a length.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// Whether the response body ends only when the target closes the connection.
fn is_close_delimited(response: &Response<Received>, present: Present) -> bool {
    matches!(response.version(), Version::HTTP_10 | Version::HTTP_11)
        && !present.may_have(Present::CONTENT_LENGTH | Present::TRANSFER_ENCODING)
        && !response.body().is_end_stream()
}

/// Reads a close-delimited body ahead (see the [module docs](self)): whole with a
/// `Content-Length` when it ends within [`READ_AHEAD`] bytes and the deadline, else what was
/// read followed by the rest, streamed.
async fn read_ahead<R, I, J>(
    shared: &Shared<I, J>,
    target: &Target,
    response: Response<Received>,
    deadline: tokio::time::Instant,
) -> Response<ResponseBody<R>> {
    let (mut parts, mut body) = response.into_parts();
    rewrite_response(&mut parts, &shared.rewrite);
    scope_set_cookies(&mut parts, &shared.rewrite, target);
    parts.version = Version::HTTP_11;
    let mut head = BytesMut::new();
    // When the target last sent something: the body timeout bounds each silence here as it
    // does once the body streams, however far off the upstream timeout's deadline is.
    let mut last = tokio::time::Instant::now();
    loop {
        let wait = match shared.body_timeout {
            Some(idle) => deadline.min(crate::proxy::deadline::after(last, idle)),
            None => deadline,
        };
        match tokio::time::timeout_at(wait, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                last = tokio::time::Instant::now();
                if let Ok(data) = frame.into_data() {
                    head.extend_from_slice(&data);
                    if head.len() > READ_AHEAD {
                        break;
                    }
                }
            }
            Ok(None) => {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(head.len()));
                let body = ResponseBody::local(http_body_util::Full::new(head.freeze()));
                return Response::from_parts(parts, body);
            }
            Ok(Some(Err(e))) => {
                let error = ProxyError::with_source(
                    ProxyErrorKind::BadResponse("The proxy target sent a broken response."),
                    e,
                );
                tracing::warn!(error = ?std::error::Error::source(&error), "target response broken");
                return error_response(&error);
            }
            // Slow, or silent for the body timeout: send what was read and stream the rest
            // (a silence that already lasted the body timeout aborts it at once).
            Err(_) => break,
        }
    }
    Response::from_parts(
        parts,
        ResponseBody::prefixed(head.freeze(), body, shared.body_timeout, last),
    )
}

fn respond<R, I, J>(
    shared: &Shared<I, J>,
    target: &Target,
    mut response: Response<Received>,
    present: Present,
    upgrade: Option<(HeaderValue, hyper::upgrade::OnUpgrade)>,
) -> Response<ResponseBody<R>> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some((proto, client_side)) = upgrade else {
            tracing::warn!("target switched protocols unasked");
            return error_response(&ProxyError::new(ProxyErrorKind::BadResponse(
                "The proxy target switched protocols without being asked.",
            )));
        };
        let chosen = match response.headers().get(header::UPGRADE) {
            Some(p) if connection_has(response.headers(), "upgrade") && offered(&proto, p) => {
                p.clone()
            }
            _ => {
                tracing::warn!("target answered 101 with another protocol");
                return error_response(&ProxyError::new(ProxyErrorKind::BadResponse(
                    "The proxy target switched to another protocol.",
                )));
            }
        };
        let upstream_side = hyper::upgrade::on(&mut response);
        crate::proxy::upgrade::spawn_tunnel(
            &shared.tunnels,
            client_side,
            upstream_side,
            shared.tunnel_idle_timeout,
        );
        let (mut parts, _) = response.into_parts();
        rewrite_response(&mut parts, &shared.rewrite);
        scope_set_cookies(&mut parts, &shared.rewrite, target);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, chosen);
        return Response::from_parts(parts, ResponseBody::local(Default::default()));
    }
    let (mut parts, body) = response.into_parts();
    // The head's names matched once, for the check and the rewrite.
    if let Err(e) = check_response_given(&parts, present) {
        tracing::warn!(reason = e.body_text(), "target response refused");
        return error_response(&e);
    }
    rewrite_response_given(&mut parts, &shared.rewrite, present);
    scope_set_cookies_given(&mut parts, &shared.rewrite, target, present);
    parts.version = Version::HTTP_11;
    let body = if body.is_end_stream() && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        // No content (`HEAD`, `204`, `304`) and no length stated: none must be made up.
        ResponseBody::no_content()
    } else {
        ResponseBody::upstream(body, shared.body_timeout)
    };
    Response::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures_util::StreamExt as _;
    use http_body_util::{Empty, StreamBody};
    use tokio::io::AsyncReadExt as _;
    use tower::ServiceExt as _;
    use tower_layer::Layer as _;

    use crate::{
        ProxyLayer,
        jwt::{KeyPair, KeySigner},
    };

    use super::*;

    /// A `408` closes an HTTP/1 connection, whose unread body would otherwise be taken for
    /// the next request; an HTTP/2 response carries no `Connection` header, which RFC 9113
    /// (§8.2.2) makes a malformed response. hyper's server drops such a header before the
    /// wire, so the response is looked at as the layer gives it to the server.
    #[tokio::test]
    async fn a_408_closes_http1_connections_only() {
        // A target that reads what comes and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        let layer = ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519().unwrap()))
            .upstream_timeout(Duration::from_millis(300))
            .handle(ProxyHandle::with_target(
                Target::parse(&format!("http://{addr}")).unwrap(),
            ));
        let inner = tower::service_fn(|_: Request<_>| async {
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        });
        for version in [Version::HTTP_11, Version::HTTP_2] {
            // 3 bytes of the 10 announced, then nothing.
            let body = StreamBody::new(
                futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(
                    b"abc",
                )))])
                .chain(futures_util::stream::pending()),
            );
            // As hyper's server hands them over: origin form and `Host` in HTTP/1.1, the
            // authority in the URI in HTTP/2.
            let req = if version == Version::HTTP_2 {
                Request::post("http://app.test/proxy/upload")
            } else {
                Request::post("/proxy/upload").header(header::HOST, "app.test")
            };
            let req = req
                .version(version)
                .header(header::CONTENT_LENGTH, "10")
                .body(body)
                .unwrap();
            let res =
                tokio::time::timeout(Duration::from_secs(20), layer.layer(inner).oneshot(req))
                    .await
                    .expect("hung")
                    .unwrap();
            assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT, "{version:?}");
            let connection = res.headers().get(header::CONNECTION);
            if version == Version::HTTP_2 {
                assert_eq!(connection, None);
            } else {
                assert_eq!(connection.unwrap(), "close");
            }
        }
    }
}
