//! [`Received`]: the body of a target's response, which gives its connection back to the
//! pool once read to its end.
//!
//! An HTTP/1.1 connection carries one exchange at a time: it can serve another request
//! only after the response body has been read whole. The body holds the connection's
//! [`Lease`] until then; a body dropped before its end (the client went away, a limit was
//! hit) gives the connection up instead, for hyper closes a connection whose response was
//! not read.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A connection lent by a pool for one exchange.
pub(crate) trait Lease: Send + Sync {
    /// The exchange ended cleanly: the connection goes back to the pool. Dropping a lease
    /// without calling this gives the connection up.
    fn release(self: Box<Self>);
}

/// The body of a target's response; see the [module docs](self).
pub(crate) struct Received {
    body: Incoming,
    lease: Option<Box<dyn Lease>>,
}

impl Received {
    pub(crate) fn new(body: Incoming, lease: Option<Box<dyn Lease>>) -> Self {
        let mut received = Self { body, lease };
        received.release_at_end();
        received
    }

    /// Gives the connection back once nothing is left to read.
    fn release_at_end(&mut self) {
        if self.body.is_end_stream()
            && let Some(lease) = self.lease.take()
        {
            lease.release();
        }
    }
}

impl Body for Received {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = self.lease.take() {
                    lease.release();
                }
            }
            Poll::Ready(Some(Ok(_))) => self.release_at_end(),
            // A broken body: the connection is given up.
            Poll::Ready(Some(Err(_))) => drop(self.lease.take()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("body", &self.body)
            .field("leased", &self.lease.is_some())
            .finish()
    }
}
