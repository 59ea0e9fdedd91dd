//! [`ResponseBody`]: one body type for the three sources of a response.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::error::BoxError;

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
        Upstream { #[pin] body: Incoming },
        // The first bytes of the target's body, already read, then the rest as it arrives.
        Prefixed { head: Option<Bytes>, #[pin] body: Incoming },
        Local { #[pin] body: Full<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn upstream(body: Incoming) -> Self {
        Self {
            kind: Kind::Upstream { body },
        }
    }

    pub(crate) fn prefixed(head: Bytes, body: Incoming) -> Self {
        Self {
            kind: Kind::Prefixed {
                head: (!head.is_empty()).then_some(head),
                body,
            },
        }
    }

    pub(crate) fn local(body: Full<Bytes>) -> Self {
        Self {
            kind: Kind::Local { body },
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

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Upstream { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Prefixed { head, body } => match head.take() {
                Some(head) => Poll::Ready(Some(Ok(Frame::data(head)))),
                None => body.poll_frame(cx).map_err(Into::into),
            },
            KindProj::Local { body } => body.poll_frame(cx).map_err(|e| match e {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Prefixed { head, body } => head.is_none() && body.is_end_stream(),
            Kind::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Upstream { body } => body.size_hint(),
            Kind::Prefixed { head, body } => {
                let extra = head.as_ref().map_or(0, |h| h.len() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(extra));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint
            }
            Kind::Local { body } => body.size_hint(),
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Upstream { .. } | Kind::Prefixed { .. } => "Upstream",
            Kind::Local { .. } => "Local",
        };
        f.debug_tuple("ResponseBody").field(&kind).finish()
    }
}

/// A `text/plain; charset=utf-8` response.
pub(crate) fn plain_text(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A local plain-text response as a [`ResponseBody`].
pub(crate) fn local<B>(res: Response<Full<Bytes>>) -> Response<ResponseBody<B>> {
    res.map(ResponseBody::local)
}
