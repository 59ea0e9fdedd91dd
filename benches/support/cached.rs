//! An upstream HTTP/1.1 connection as a tower service, for a `cache` of hyper-util's
//! composable pool, and a response body that gives its connection back: what
//! `benches/floor.rs` (the `hyper-cache` floor) and `benches/instructions.rs` (`direct`)
//! forward with.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use hyper::{body::Incoming, client::conn::http1::SendRequest};

/// An upstream HTTP/1.1 connection, sending requests with bodies of type `B`.
pub(crate) struct H1<B>(pub(crate) SendRequest<B>);

impl<B> tower::Service<Request<B>> for H1<B>
where
    B: http_body::Body + Send + 'static,
{
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// A response body that holds its connection until it ends, then lets it go back to its
/// cache (dropped before its end, the connection closes: hyper does not reuse it).
pub(crate) struct Held<C> {
    pub(crate) body: Incoming,
    pub(crate) conn: Option<C>,
}

impl<C: Unpin> http_body::Body for Held<C> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.body.is_end_stream() {
            self.conn = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
