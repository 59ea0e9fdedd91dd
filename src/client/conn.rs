//! The connections the pools hold: [`H1`] and [`H2`], made by a [`Handshake`] in
//! [`Http1`] or [`Http2`] over a connector (TCP, or TLS over TCP).
//!
//! Each is hyper's `client::conn` sender for one connection, whose connection task runs on
//! the runtime that made it, with what the pool needs to know of it: when it went idle,
//! whether it may be used again. hyper-util's pools hand a connection out and take it back
//! as a tower service; whether a pooled connection is still usable is asked through its
//! [`Probe`] service, so that a pool drops one that is not.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper::{
    client::conn::{http1, http2},
    rt::{Read, Write},
};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower_service::Service;

use crate::{boxed::pinned, client::UpstreamBody, error::BoxError};

/// The future of a connection being made.
pub(crate) type Connecting<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// The request of the readiness probe: a pooled connection's `poll_ready` for it fails when
/// the connection must not be used again (closed, idle too long, given up), and the pool
/// then drops it instead of handing it out or taking it back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe;

/// What the pool tells a connection it lent, or asks of it, through its `Service<Mark>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Only describe it.
    Describe,
    /// The exchange ended cleanly: it goes back to the pool.
    Idle,
    /// The exchange did not end cleanly: it must not be used again.
    Discard,
}

/// What a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Described {
    /// HTTP/2 (else HTTP/1.1).
    pub(crate) http2: bool,
    /// It served a request before (it came out of the pool).
    pub(crate) reused: bool,
}

/// A request to send on a connection (a type of its own, without lifetimes: a service's
/// future for it can be held across an `.await` in a future that must be `Send`).
#[derive(Debug)]
pub(crate) struct Outgoing(pub(crate) http::Request<UpstreamBody>);

/// The future of a request sent on a connection: the target's response head, or the
/// request back when it was never written (the connection closed first).
pub(crate) type Exchange = Pin<
    Box<
        dyn Future<
                Output = Result<
                    http::Response<hyper::body::Incoming>,
                    hyper::client::conn::TrySendError<http::Request<UpstreamBody>>,
                >,
            > + Send,
    >,
>;

/// Why a connection may not be used again.
#[derive(Debug)]
pub(crate) enum Unusable {
    /// The connection closed (the target closed it, or its task ended).
    Closed(hyper::Error),
    /// Idle in the pool for longer than the pool's idle timeout.
    Expired,
    /// Given up by the pool: a response not read to its end, a connection upgraded, or
    /// more idle connections than the pool keeps.
    Discarded,
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed(_) => f.write_str("the connection to the target closed"),
            Self::Expired => f.write_str("the pooled connection was idle too long"),
            Self::Discarded => f.write_str("the pooled connection was given up"),
        }
    }
}

impl std::error::Error for Unusable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Closed(e) => Some(e),
            _ => None,
        }
    }
}

/// The services a pool reaches a connection through (`Cached` and `Singled`, hyper-util's
/// handles of a pooled connection, are services over it and nothing else): its readiness
/// [`Probe`], its [`Mark`]s, and the requests it sends; each calls the connection's own
/// `probe`, `mark` or `send`.
macro_rules! pooled_services {
    ($conn:ty) => {
        impl Service<Probe> for $conn {
            type Response = ();
            type Error = Unusable;
            type Future = std::future::Ready<Result<(), Unusable>>;

            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Unusable>> {
                self.probe(cx)
            }

            fn call(&mut self, _: Probe) -> Self::Future {
                std::future::ready(Ok(()))
            }
        }

        impl Service<Mark> for $conn {
            type Response = Described;
            type Error = Unusable;
            type Future = std::future::Ready<Result<Described, Unusable>>;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Unusable>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, mark: Mark) -> Self::Future {
                std::future::ready(Ok(self.mark(mark)))
            }
        }

        impl Service<Outgoing> for $conn {
            type Response = http::Response<hyper::body::Incoming>;
            type Error = hyper::client::conn::TrySendError<http::Request<UpstreamBody>>;
            type Future = Exchange;

            /// Always ready: the pool asks readiness through [`Probe`] before it sends.
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, Outgoing(req): Outgoing) -> Exchange {
                self.send(req)
            }
        }
    };
}

/// An HTTP/1.1 connection: one request at a time.
#[derive(Debug)]
pub(crate) struct H1 {
    tx: http1::SendRequest<UpstreamBody>,
    /// When it went back to the pool; `None` while it has never been.
    idle_since: Option<Instant>,
    idle_timeout: Duration,
    /// Requests sent on it so far.
    uses: u32,
    discarded: bool,
}

impl H1 {
    /// Whether the pool should drop it: given up, closed, or idle for longer than the idle
    /// timeout.
    pub(crate) fn is_stale(&self, now: Instant) -> bool {
        self.discarded || self.tx.is_closed() || self.expired(now)
    }

    /// Idle for longer than the idle timeout.
    fn expired(&self, now: Instant) -> bool {
        self.idle_since
            .is_some_and(|since| now.saturating_duration_since(since) > self.idle_timeout)
    }

    fn probe(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Unusable>> {
        if self.discarded {
            return Poll::Ready(Err(Unusable::Discarded));
        }
        if self.expired(Instant::now()) {
            return Poll::Ready(Err(Unusable::Expired));
        }
        // Pending until the previous response has been read to its end by the connection's
        // task; an error once the connection is closed.
        self.tx.poll_ready(cx).map_err(Unusable::Closed)
    }

    fn mark(&mut self, mark: Mark) -> Described {
        match mark {
            Mark::Describe => {}
            // Back to the pool from now.
            Mark::Idle => self.idle_since = Some(Instant::now()),
            Mark::Discard => self.discarded = true,
        }
        Described {
            http2: false,
            reused: self.uses > 0,
        }
    }

    fn send(&mut self, req: http::Request<UpstreamBody>) -> Exchange {
        self.uses = self.uses.saturating_add(1);
        self.idle_since = None;
        pinned!(self.tx.try_send_request(req))
    }
}

pooled_services!(H1);

/// An HTTP/2 connection: shared by all requests (clones share it).
#[derive(Clone, Debug)]
pub(crate) struct H2 {
    tx: http2::SendRequest<UpstreamBody>,
    state: Arc<H2State>,
}

#[derive(Debug)]
struct H2State {
    /// Requests whose response has not ended yet.
    in_flight: AtomicUsize,
    /// Requests sent on it so far.
    served: AtomicU64,
    /// When the last request ended, in milliseconds since `epoch`.
    last_ms: AtomicU64,
    epoch: Instant,
    idle_timeout: Duration,
}

impl H2 {
    /// Counts a request in flight on it until [`H2::done`].
    fn start(&self) {
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        self.state.served.fetch_add(1, Ordering::Relaxed);
    }

    /// A request started with [`H2::start`] has ended.
    fn done(&mut self) {
        let state = &self.state;
        let ms = u64::try_from(state.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        state.last_ms.store(ms, Ordering::Relaxed);
        state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether the pool should drop it: closed, or without a request for longer than the
    /// idle timeout.
    pub(crate) fn is_stale(&self, now: Instant) -> bool {
        let state = &self.state;
        let last = state.epoch + Duration::from_millis(state.last_ms.load(Ordering::Relaxed));
        self.tx.is_closed()
            || (state.in_flight.load(Ordering::Relaxed) == 0
                && now.saturating_duration_since(last) > state.idle_timeout)
    }

    /// Never fails: hyper-util's `Singled` answers a failed probe by emptying its
    /// singleton, whatever the singleton holds by then, and a connection being made for other
    /// requests would be lost with it (its waiters then panic). The pool drops a closed or
    /// expired HTTP/2 connection under its lock instead (`Singleton::retain`, before each
    /// checkout); one that closes after that fails its request unwritten, which is sent again.
    fn probe(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Unusable>> {
        Poll::Ready(Ok(()))
    }

    /// An HTTP/2 connection serves many exchanges at once: one that ends, cleanly or not,
    /// only stops counting as in flight.
    fn mark(&mut self, mark: Mark) -> Described {
        if mark != Mark::Describe {
            self.done();
        }
        Described {
            http2: true,
            reused: self.state.served.load(Ordering::Relaxed) > 0,
        }
    }

    /// Counts the exchange in flight until the pool marks it ended.
    fn send(&mut self, req: http::Request<UpstreamBody>) -> Exchange {
        self.start();
        pinned!(self.tx.try_send_request(req))
    }
}

pooled_services!(H2);

/// HTTP/2 keep-alive pings (hyper's settings; off unless an interval is set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct H2KeepAlive {
    pub(crate) interval: Option<Duration>,
    pub(crate) timeout: Duration,
    pub(crate) while_idle: bool,
}

impl Default for H2KeepAlive {
    fn default() -> Self {
        Self {
            interval: None,
            timeout: Duration::from_secs(20),
            while_idle: false,
        }
    }
}

/// A protocol a connection is made to speak once connected: [`Http1`] or [`Http2`].
pub(crate) trait Protocol: Clone + Send + 'static {
    /// The connection it makes.
    type Conn;

    /// Speaks the protocol over `io`; the connection's task is spawned on this runtime.
    fn handshake<I>(self, io: I) -> impl Future<Output = Result<Self::Conn, BoxError>> + Send
    where
        I: Read + Write + Unpin + Send + 'static;
}

/// HTTP/1.1, making [`H1`] connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Http1 {
    pub(crate) idle_timeout: Duration,
}

impl Protocol for Http1 {
    type Conn = H1;

    async fn handshake<I>(self, io: I) -> Result<H1, BoxError>
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        let (tx, conn) = http1::Builder::new().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "connection to the target ended with an error");
            }
        });
        Ok(H1 {
            tx,
            idle_since: None,
            idle_timeout: self.idle_timeout,
            uses: 0,
            discarded: false,
        })
    }
}

/// HTTP/2, making [`H2`] connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Http2 {
    pub(crate) idle_timeout: Duration,
    pub(crate) keep_alive: H2KeepAlive,
}

impl Protocol for Http2 {
    type Conn = H2;

    async fn handshake<I>(self, io: I) -> Result<H2, BoxError>
    where
        I: Read + Write + Unpin + Send + 'static,
    {
        let keep_alive = self.keep_alive;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(keep_alive.interval)
            .keep_alive_timeout(keep_alive.timeout)
            .keep_alive_while_idle(keep_alive.while_idle);
        let (tx, conn) = builder.handshake(io).await?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "HTTP/2 connection to the target ended with an error");
            }
        });
        Ok(H2 {
            tx,
            state: Arc::new(H2State {
                in_flight: AtomicUsize::new(0),
                served: AtomicU64::new(0),
                last_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                idle_timeout: self.idle_timeout,
            }),
        })
    }
}

/// Makes connections speaking `P` over the connections of `C`: the make-service a pool
/// holds.
#[derive(Clone, Debug)]
pub(crate) struct Handshake<C, P> {
    connect: C,
    protocol: P,
}

impl<C, P> Handshake<C, P> {
    pub(crate) fn new(connect: C, protocol: P) -> Self {
        Self { connect, protocol }
    }
}

impl<C, P, Dst> Service<Dst> for Handshake<C, P>
where
    C: Service<Dst>,
    C::Response: Read + Write + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    P: Protocol,
{
    type Response = P::Conn;
    type Error = BoxError;
    type Future = Connecting<P::Conn>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.connect.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Dst) -> Self::Future {
        let connecting = self.connect.call(dst);
        let protocol = self.protocol.clone();
        Box::pin(async move {
            let io = connecting.await.map_err(Into::into)?;
            protocol.handshake(io).await
        })
    }
}

/// Turns `uri` into the origin form an HTTP/1.1 request line carries (`/path?query`), as
/// a client that is not talking to a forward proxy sends it (RFC 9112 §3.2.1).
pub(crate) fn origin_form(uri: &mut Uri) {
    let path = match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    };
    *uri = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query_only() {
        for (absolute, origin) in [
            ("http://a.test", "/"),
            ("http://a.test/", "/"),
            ("http://a.test:8080/x/y?q=1&r", "/x/y?q=1&r"),
            ("https://a.test/%2F?", "/%2F?"),
        ] {
            let mut uri: Uri = absolute.parse().unwrap();
            origin_form(&mut uri);
            assert_eq!(uri, origin, "{absolute}");
            assert!(uri.authority().is_none() && uri.scheme().is_none());
        }
    }
}
