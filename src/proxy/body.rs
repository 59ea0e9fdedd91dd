//! [`ResponseBody`]: one body type for the three sources of a response.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use crate::client::Received;
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use crate::{boxed::boxed, error::BoxError};

pin_project! {
    /// The body of a response from a [`Proxy`](crate::Proxy) (or a
    /// [`VerifyProxyJwt`](crate::verify::VerifyProxyJwt)): the inner service's body, the
    /// target's body streamed as it arrives (possibly after a first part read ahead), or a
    /// short local message.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        // Boxed: a pass-through response (`Inner`) is moved around as often as it is
        // wrapped and unwrapped on its way out, and should be no larger than the inner
        // service's body (with axum's `Body`, a `Response<ResponseBody<Body>>` is then as
        // large as a `Response<Body>`, small enough to be moved without a `memcpy` call).
        // A box per proxied or local response is nothing next to what such a response
        // costs.
        Own { body: Box<Own> },
    }
}

/// A body of the proxy's own making.
enum Own {
    /// The target's body.
    Upstream(Upstream),
    /// A short local message.
    Local(Full<Bytes>),
    /// The target's response has no content (to `HEAD`, a `204`, a `304`): see
    /// `ResponseBody::no_content`.
    NoContent,
}

/// The target's body: possibly a first part already read, then the rest as it arrives,
/// with the silence allowed while waiting for it.
struct Upstream {
    head: Option<Bytes>,
    body: Received,
    idle: Option<Idle>,
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// The target's body; `idle` bounds the silence while waiting for a frame (see
    /// [`ProxyLayer::upstream_body_timeout`](crate::ProxyLayer::upstream_body_timeout)).
    pub(crate) fn upstream(body: Received, idle: Option<Duration>) -> Self {
        Self {
            kind: Kind::Own {
                body: boxed!(Own::Upstream(Upstream {
                    head: None,
                    body,
                    idle: idle.map(Idle::new),
                })),
            },
        }
    }

    /// `head`, already read, then the rest of the target's body; `last` is when the target
    /// last sent a byte (or its headers), so that the silence allowed by `idle` counts from
    /// there and not from the first poll.
    pub(crate) fn prefixed(
        head: Bytes,
        body: Received,
        idle: Option<Duration>,
        last: tokio::time::Instant,
    ) -> Self {
        Self {
            kind: Kind::Own {
                body: boxed!(Own::Upstream(Upstream {
                    head: (!head.is_empty()).then_some(head),
                    body,
                    idle: idle.map(|timeout| Idle::since(timeout, last)),
                })),
            },
        }
    }

    pub(crate) fn local(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Own {
                body: Box::new(Own::Local(body)),
            },
        }
    }

    /// The body of a target's response that ended with its head (one to `HEAD`, a `204`,
    /// a `304`): it ends at once, but its size is not given as 0, for the length such a
    /// response states is the one in its `Content-Length`, if any, not that of the empty
    /// body. A size of 0 would have axum (which fills in a missing `Content-Length` from
    /// an exact size) tell the client that the `GET` of a `HEAD` has an empty body.
    pub(crate) fn no_content() -> Self {
        Self {
            kind: Kind::Own {
                body: Box::new(Own::NoContent),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Own { body } => match &mut **body {
                Own::Upstream(body) => match body.head.take() {
                    Some(head) => Poll::Ready(Some(Ok(Frame::data(head)))),
                    None => poll_upstream(Pin::new(&mut body.body), &mut body.idle, cx),
                },
                Own::Local(body) => Pin::new(body).poll_frame(cx).map_err(|e| match e {}),
                Own::NoContent => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Own { body } => match &**body {
                Own::Upstream(body) => body.head.is_none() && body.body.is_end_stream(),
                Own::Local(body) => body.is_end_stream(),
                Own::NoContent => true,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Own { body } => match &**body {
                Own::Upstream(body) => {
                    let inner = body.body.size_hint();
                    let Some(head) = &body.head else {
                        return inner;
                    };
                    let extra = head.len() as u64;
                    let mut hint = SizeHint::new();
                    hint.set_lower(inner.lower().saturating_add(extra));
                    if let Some(upper) = inner.upper() {
                        hint.set_upper(upper.saturating_add(extra));
                    }
                    hint
                }
                Own::Local(body) => body.size_hint(),
                // Not exactly 0: see `ResponseBody::no_content`.
                Own::NoContent => SizeHint::new(),
            },
        }
    }
}

/// Polls the target's body, aborting it once it has been silent for the idle timeout.
fn poll_upstream(
    body: Pin<&mut Received>,
    idle: &mut Option<Idle>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    match body.poll_frame(cx) {
        Poll::Ready(frame) => {
            if let Some(idle) = idle {
                idle.waiting = false;
                idle.flushed = false;
            }
            Poll::Ready(frame.map(|f| f.map_err(Into::into)))
        }
        Poll::Pending => {
            let Some(idle) = idle else {
                return Poll::Pending;
            };
            if !idle.expired(cx) {
                return Poll::Pending;
            }
            // Once, before the abort: a connection that fails is closed without flushing,
            // so let the server write out what it already has (the head and the bytes read
            // ahead, when the silence began before the response did).
            if !idle.flushed {
                idle.flushed = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            tracing::warn!(
                target: "tower_identity_proxy",
                timeout = ?idle.timeout,
                "target body stalled; response aborted"
            );
            Poll::Ready(Some(Err(BodyStalled.into())))
        }
    }
}

/// The silence allowed while waiting for the next frame of the target's body. Only time
/// spent waiting on the target counts (a slow client that polls late does not), so the
/// timer is (re)armed when a wait starts, created on the first one.
struct Idle {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the previous poll was already waiting.
    waiting: bool,
    /// Whether the server was given a chance to flush after the timeout expired.
    flushed: bool,
}

impl Idle {
    fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            sleep: None,
            waiting: false,
            flushed: false,
        }
    }

    /// A wait that started at `last`: the target has been silent since then.
    fn since(timeout: Duration, last: tokio::time::Instant) -> Self {
        let deadline = crate::proxy::deadline::after(last, timeout);
        Self {
            timeout,
            sleep: Some(Box::pin(tokio::time::sleep_until(deadline))),
            waiting: true,
            flushed: false,
        }
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = crate::proxy::deadline::after(tokio::time::Instant::now(), self.timeout);
        if !self.waiting {
            self.waiting = true;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
            None => false,
        }
    }
}

/// The target's body stayed silent longer than the upstream body timeout.
#[derive(Debug)]
struct BodyStalled;

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the proxy target's body stalled")
    }
}

impl std::error::Error for BodyStalled {}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Own { body } => match &**body {
                Own::Upstream(_) | Own::NoContent => "Upstream",
                Own::Local(_) => "Local",
            },
        };
        f.debug_tuple("ResponseBody").field(&kind).finish()
    }
}

/// A local plain-text response as a [`ResponseBody`].
pub(crate) fn local<B>(res: Response<Full<Bytes>>) -> Response<ResponseBody<B>> {
    res.map(ResponseBody::local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, combinators::UnsyncBoxBody};

    type Boxed = UnsyncBoxBody<Bytes, BoxError>;

    #[test]
    fn a_pass_through_body_is_no_larger_than_the_inner_one() {
        // What a pass-through response costs over the inner service's: with a boxed body
        // (axum's `Body`), nothing in size.
        assert_eq!(
            std::mem::size_of::<ResponseBody<Boxed>>(),
            std::mem::size_of::<Boxed>()
        );
        assert_eq!(
            std::mem::size_of::<Response<ResponseBody<Boxed>>>(),
            std::mem::size_of::<Response<Boxed>>()
        );
    }

    #[tokio::test]
    async fn each_kind_reads_as_its_body() {
        let inner = ResponseBody::inner(Full::new(Bytes::from_static(b"inner")));
        assert_eq!(inner.size_hint().exact(), Some(5));
        assert_eq!(inner.collect().await.unwrap().to_bytes(), "inner");

        let local: ResponseBody<Empty<Bytes>> =
            ResponseBody::local(Full::new(Bytes::from_static(b"local")));
        assert_eq!(local.size_hint().exact(), Some(5));
        assert!(!local.is_end_stream());
        assert_eq!(local.collect().await.unwrap().to_bytes(), "local");

        // Ends at once, with no exact size (see `ResponseBody::no_content`).
        let none: ResponseBody<Empty<Bytes>> = ResponseBody::no_content();
        assert!(none.is_end_stream());
        assert_eq!(none.size_hint().exact(), None);
        assert!(none.collect().await.unwrap().to_bytes().is_empty());
    }
}
