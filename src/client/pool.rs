//! The connection pools the client sends through, built from hyper-util's composable pool
//! services (`client::pool`).
//!
//! Each worker thread has a shard of its own: a [`map`](hyper_util::client::pool::map) from a
//! target's scheme and authority to its pools,
//! - plain http: a [`cache`](hyper_util::client::pool::cache) of HTTP/1.1 connections, or,
//!   with prior knowledge (h2c), a [`singleton`](hyper_util::client::pool::singleton) HTTP/2
//!   connection;
//! - https: [`negotiate`](hyper_util::client::pool::negotiate) by ALPN between a cache of
//!   HTTP/1.1 connections and a singleton HTTP/2 connection, and a cache of HTTP/1.1-only
//!   connections (ALPN offers `http/1.1` alone) for upgrades.
//!
//! A request takes a connection from its own thread's shard: with one runtime per thread,
//! as the demo runs, a connection's task, the request that uses it and the pool it returns
//! to all live on one thread, and no lock is ever contended. An HTTP/1.1 connection goes back
//! to the pool when its response has been read to its end (see
//! [`Received`](super::received::Received)); one whose exchange did not end cleanly is
//! closed. Idle connections are closed after the idle timeout, checked when one is taken
//! and by a task per shard that runs while the shard has connections. An HTTP/2 connection
//! found closed or expired is dropped under the shard's lock before a checkout, never through
//! its handle (hyper-util's `Singled` would empty the singleton whatever it holds by then,
//! a connection being made for other requests included).

use std::{
    future::Future,
    pin::{Pin, pin},
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use http::{HeaderValue, Request, Response, Uri, header::HOST, uri::Scheme};
use hyper::{body::Incoming, client::conn::TrySendError};
use hyper_util::{
    client::{
        legacy::connect::HttpConnector,
        pool::{cache, map::Map, singleton::Singleton},
    },
    rt::TokioExecutor,
};
use tokio::time::Instant;
use tower_service::Service;

use crate::{
    boxed::{boxed, pinned},
    client::{
        UpstreamBody,
        conn::{
            Described, H2KeepAlive, Handshake, Http1, Http2, Mark, Outgoing, Probe, Unusable,
            origin_form,
        },
        received::{Lease, Received},
    },
    error::BoxError,
};

/// Which connections a request may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Whatever the target speaks: HTTP/1.1, h2c when configured, HTTP/2 when ALPN chooses it.
    Auto,
    /// HTTP/1.1 only: upgrades (WebSocket) exist only there.
    Upgrade,
}

/// Where a request goes, and which pools it goes to: a target's scheme and authority, as the
/// URI `scheme://authority/`, shared (handing it to the pools on each request costs a
/// reference count, not a copy), compared and hashed as written (`Authority`'s own `Hash`
/// lowercases and hashes byte by byte; a target's authority is written one way).
#[derive(Clone, Debug)]
pub(crate) struct Origin(Arc<OriginData>);

#[derive(Debug)]
struct OriginData {
    uri: Uri,
    /// Its hash, made once (the pools' map hashes it on every request).
    hash: u64,
    /// The `Host` header of HTTP/1.1 requests to it: the host, and the port unless it is
    /// the scheme's default.
    host: HeaderValue,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.is_https() == other.is_https() && self.authority() == other.authority())
    }
}

impl Eq for Origin {}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Equal origins have equal schemes and authorities as written, whose hashes are
        // equal.
        state.write_u64(self.0.hash);
    }
}

impl Origin {
    /// The origin of `uri`; `None` unless it has a scheme and an authority.
    pub(crate) fn of(uri: &Uri) -> Option<Self> {
        Self::new(uri.scheme()?.clone(), uri.authority()?.clone())
    }

    /// `scheme://authority/`; `None` if that is no URI, or its host and port cannot be sent
    /// as a `Host` header.
    pub(crate) fn new(scheme: Scheme, authority: http::uri::Authority) -> Option<Self> {
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host = HeaderValue::try_from(host).ok()?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme);
        parts.authority = Some(authority);
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::from_parts(parts).ok()?;
        // Any fixed hash will do: the map hashes this again with its own keys.
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&(uri.scheme() == Some(&Scheme::HTTPS)), &mut hasher);
        std::hash::Hash::hash(uri.authority().map_or("", |a| a.as_str()), &mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        Some(Self(Arc::new(OriginData { uri, hash, host })))
    }

    fn uri(&self) -> &Uri {
        &self.0.uri
    }

    /// The `Host` header of HTTP/1.1 requests to it.
    pub(crate) fn host(&self) -> &HeaderValue {
        &self.0.host
    }

    fn is_https(&self) -> bool {
        self.0.uri.scheme() == Some(&Scheme::HTTPS)
    }

    fn authority(&self) -> &str {
        self.0.uri.authority().map_or("", |a| a.as_str())
    }

    /// The absolute URI of `path` (a request's URI, of which only the path and query are
    /// taken) at this origin.
    fn join(&self, path: &Uri) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = self.0.uri.scheme().cloned();
        parts.authority = self.0.uri.authority().cloned();
        parts.path_and_query = Some(
            path.path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        Uri::from_parts(parts).unwrap_or_else(|_| self.0.uri.clone())
    }
}

/// A connector of URIs that the pools call with an [`Origin`]: the URI is copied only when a
/// connection is made.
#[derive(Clone)]
struct ByOrigin<C>(C);

impl<C: Service<Uri>> Service<Origin> for ByOrigin<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, origin: Origin) -> C::Future {
        self.0.call(Uri::clone(origin.uri()))
    }
}

/// What the pools are built from.
pub(crate) struct Settings {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_idle: usize,
    pub(crate) h2c: bool,
    pub(crate) keep_alive: H2KeepAlive,
    /// Plain http only.
    pub(crate) http: HttpConnector,
    /// https, ALPN offering `h2` and `http/1.1`.
    #[cfg(feature = "https")]
    pub(crate) tls: hyper_rustls::HttpsConnector<HttpConnector>,
    /// https, ALPN offering `http/1.1` alone.
    #[cfg(feature = "https")]
    pub(crate) tls_h1: hyper_rustls::HttpsConnector<HttpConnector>,
}

/// How a request to the target failed.
#[derive(Debug)]
pub(crate) struct SendError {
    connect: bool,
    source: BoxError,
}

impl SendError {
    fn connect(source: impl Into<BoxError>) -> Self {
        Self {
            connect: true,
            source: source.into(),
        }
    }

    fn exchange(source: impl Into<BoxError>) -> Self {
        Self {
            connect: false,
            source: source.into(),
        }
    }

    /// No connection could be made (refused, name not found, TLS refused, timed out).
    pub(crate) fn is_connect(&self) -> bool {
        self.connect
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.connect {
            "no connection to the target could be made"
        } else {
            "the exchange with the target failed"
        })
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The outcome of a request sent through the pools.
pub(crate) type Sent = Result<Response<Received>, SendError>;

/// The future of a request sent through the pools.
pub(crate) type Sending = Pin<Box<dyn Future<Output = Sent> + Send>>;

/// Where the `Host` header of a request sent over HTTP/1.1 comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    /// The request has it: the caller set the target's.
    Given,
    /// The request's own if it has one, else one made from the origin.
    FromOrigin,
}

/// The pools, whatever their types (which hyper-util's builders do not name).
pub(crate) trait Transport: Send + Sync {
    /// Sends `req` (its URI in origin form, or absolute at `origin`) to `origin` on a pooled
    /// connection, with the `Host` header that `host` says for HTTP/1.1.
    fn send(&self, origin: Origin, req: Request<UpstreamBody>, host: Host, route: Route)
    -> Sending;
}

/// One thread's pools.
struct Shard<M> {
    state: Mutex<ShardState<M>>,
    /// Connections lent out (or being made for a request) from this shard: the reaper keeps
    /// running while any may come back.
    leased: Arc<AtomicUsize>,
}

struct ShardState<M> {
    map: M,
    reaping: bool,
}

impl<M> Shard<M> {
    fn lock(&self) -> std::sync::MutexGuard<'_, ShardState<M>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Pools<M, F> {
    shards: Box<[Arc<Shard<M>>]>,
    send: F,
}

impl<M, F> Transport for Pools<M, F>
where
    M: Send,
    F: Fn(&Arc<Shard<M>>, Origin, Request<UpstreamBody>, Host, Route) -> Sending + Send + Sync,
{
    fn send(
        &self,
        origin: Origin,
        req: Request<UpstreamBody>,
        host: Host,
        route: Route,
    ) -> Sending {
        let shard = &self.shards[shard_index() % self.shards.len()];
        (self.send)(shard, origin, req, host, route)
    }
}

/// This thread's shard number: threads are numbered as they first send.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

/// How many shards: two per core, so that the threads of a runtime per core (and a few
/// more) rarely share one.
fn shard_count() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get().clamp(1, 64) * 2)
}

/// A target's pools in one shard; see the [module docs](self).
struct Entry<P, C, T, U> {
    plain: P,
    h2c: C,
    #[cfg_attr(not(feature = "https"), allow(dead_code))]
    tls: T,
    #[cfg_attr(not(feature = "https"), allow(dead_code))]
    tls_h1: U,
    /// Idle HTTP/1.1 connections in this entry's caches (at most `max_idle`).
    idle: Arc<AtomicUsize>,
}

/// What a lent connection needs to go back.
struct Pooling {
    idle: Arc<AtomicUsize>,
    max_idle: usize,
    /// Counts the connection as lent until this is dropped.
    _leased: Leased,
}

impl Pooling {
    /// Counts one more idle connection, if the pool keeps that many.
    fn keep_idle(&self) -> bool {
        let max = self.max_idle;
        self.idle
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }
}

/// Counts a connection lent out of a shard while it lives.
struct Leased(Arc<AtomicUsize>);

impl Leased {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for Leased {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn saturating_sub(count: &AtomicUsize, n: usize) {
    let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
        Some(c.saturating_sub(n))
    });
}

/// Builds the pools.
pub(crate) fn build(settings: Settings) -> Arc<dyn Transport> {
    let Settings {
        idle_timeout,
        max_idle,
        h2c,
        keep_alive,
        http,
        #[cfg(feature = "https")]
        tls,
        #[cfg(feature = "https")]
        tls_h1,
    } = settings;

    // Macros, not closures: each is used with more than one connector type, and the pools'
    // types cannot be named in a function's signature.
    macro_rules! h1_cache {
        ($connect:expr) => {
            cache::builder()
                .executor(TokioExecutor::new())
                .build(Handshake::new($connect, Http1 { idle_timeout }))
        };
    }
    macro_rules! h2_singleton {
        ($connect:expr) => {
            Singleton::new(Handshake::new(
                $connect,
                Http2 {
                    idle_timeout,
                    keep_alive,
                },
            ))
        };
    }
    let new_map = move || {
        let http = http.clone();
        #[cfg(feature = "https")]
        let (tls, tls_h1) = (tls.clone(), tls_h1.clone());
        Map::builder()
            .keys(Origin::clone)
            .values(move |_: &Origin| {
                #[cfg(feature = "https")]
                let (tls, tls_h1) = (
                    hyper_util::client::pool::negotiate::builder()
                        .connect(ByOrigin(tls.clone()))
                        .inspect(|io: &_| {
                            hyper_util::client::legacy::connect::Connection::connected(io)
                                .is_negotiated_h2()
                        })
                        .fallback(tower_layer::layer_fn(|connect| h1_cache!(connect)))
                        .upgrade(tower_layer::layer_fn(|connect| h2_singleton!(connect)))
                        .build::<Origin>(),
                    h1_cache!(ByOrigin(tls_h1.clone())),
                );
                #[cfg(not(feature = "https"))]
                let (tls, tls_h1) = ((), ());
                Entry {
                    plain: h1_cache!(ByOrigin(http.clone())),
                    h2c: h2_singleton!(ByOrigin(http.clone())),
                    tls,
                    tls_h1,
                    idle: Arc::new(AtomicUsize::new(0)),
                }
            })
            .build()
    };
    let shards: Box<[_]> = (0..shard_count())
        .map(|_| {
            Arc::new(Shard {
                state: Mutex::new(ShardState {
                    map: new_map(),
                    reaping: false,
                }),
                leased: Arc::new(AtomicUsize::new(0)),
            })
        })
        .collect();
    let period = idle_timeout.max(Duration::from_millis(100));

    Arc::new(Pools {
        send: pools_send(&shards, move |shard, origin, req, host, route| -> Sending {
            let https = origin.is_https();
            // Closes the connections idle for longer than the idle timeout, and those closed;
            // with none lent (`idle_shard`), forgets the targets left without a connection (a
            // target replaced at run time leaves nothing behind). Says whether none is left.
            let reap = reaper_for(shard, |map, now, idle_shard| {
                let mut empty = true;
                map.retain(|_, e| {
                    let mut removed = 0;
                    let mut h1 = |conn: &mut crate::client::conn::H1| {
                        let keep = !conn.is_stale(now);
                        removed += usize::from(!keep);
                        keep
                    };
                    e.plain.retain(&mut h1);
                    e.h2c.retain(|conn| !conn.is_stale(now));
                    let plain_none = e.plain.is_empty() && e.h2c.is_empty();
                    #[cfg(feature = "https")]
                    let none = {
                        e.tls_h1.retain(&mut h1);
                        e.tls.fallback_mut().retain(&mut h1);
                        e.tls.upgrade_mut().retain(|conn| !conn.is_stale(now));
                        plain_none
                            && e.tls_h1.is_empty()
                            && e.tls.fallback_mut().is_empty()
                            && e.tls.upgrade_mut().is_empty()
                    };
                    #[cfg(not(feature = "https"))]
                    let none = plain_none;
                    saturating_sub(&e.idle, removed);
                    empty &= none;
                    !(none && idle_shard)
                });
                empty
            });
            let pools = Checkout {
                shard: Arc::clone(shard),
                origin: origin.clone(),
                period,
                max_idle,
            };
            #[cfg(feature = "https")]
            if https {
                return match route {
                    Route::Upgrade => pinned!(exchange(req, origin, host, move || {
                        pools.take(reap, |map, origin| {
                            let e = map.service(origin);
                            (e.tls_h1.call(origin.clone()), Arc::clone(&e.idle))
                        })
                    })),
                    Route::Auto => pinned!(exchange(req, origin, host, move || {
                        pools.take(reap, |map, origin| {
                            let e = map.service(origin);
                            let now = Instant::now();
                            e.tls.upgrade_mut().retain(|conn| !conn.is_stale(now));
                            (e.tls.call(origin.clone()), Arc::clone(&e.idle))
                        })
                    })),
                };
            }
            let _ = https;
            if route == Route::Auto && h2c {
                pinned!(exchange(req, origin, host, move || {
                    pools.take(reap, |map, origin| {
                        let e = map.service(origin);
                        let now = Instant::now();
                        e.h2c.retain(|conn| !conn.is_stale(now));
                        (e.h2c.call(origin.clone()), Arc::clone(&e.idle))
                    })
                }))
            } else {
                pinned!(exchange(req, origin, host, move || {
                    pools.take(reap, |map, origin| {
                        let e = map.service(origin);
                        (e.plain.call(origin.clone()), Arc::clone(&e.idle))
                    })
                }))
            }
        }),
        shards,
    })
}

/// Gives `send` the signature the pools call it with, so that its argument types are known
/// inside it.
fn pools_send<M, F>(_: &[Arc<Shard<M>>], send: F) -> F
where
    F: Fn(&Arc<Shard<M>>, Origin, Request<UpstreamBody>, Host, Route) -> Sending,
{
    send
}

/// Gives `reap` the signature the reaper calls it with.
fn reaper_for<M, R>(_: &Arc<Shard<M>>, reap: R) -> R
where
    R: Fn(&mut M, Instant, bool) -> bool,
{
    reap
}

/// Takes a connection for a request out of its shard.
struct Checkout<M> {
    shard: Arc<Shard<M>>,
    origin: Origin,
    period: Duration,
    max_idle: usize,
}

impl<M: Send + 'static> Checkout<M> {
    /// The future of a connection from the target's entry, which `pick` chooses and calls.
    fn take<P, Fut, R>(&self, reap: R, pick: P) -> (Fut, Pooling)
    where
        P: FnOnce(&mut M, &Origin) -> (Fut, Arc<AtomicUsize>),
        R: Fn(&mut M, Instant, bool) -> bool + Send + 'static,
    {
        let mut state = self.shard.lock();
        if !state.reaping && tokio::runtime::Handle::try_current().is_ok() {
            state.reaping = true;
            tokio::spawn(run_reaper(Arc::downgrade(&self.shard), self.period, reap));
        }
        let leased = Leased::new(&self.shard.leased);
        let (future, idle) = pick(&mut state.map, &self.origin);
        (
            future,
            Pooling {
                idle,
                max_idle: self.max_idle,
                _leased: leased,
            },
        )
    }
}

/// Closes idle connections every `period` while the shard has connections, idle or lent.
async fn run_reaper<M, R>(shard: Weak<Shard<M>>, period: Duration, reap: R)
where
    R: Fn(&mut M, Instant, bool) -> bool,
{
    /// Lets the next checkout start a reaper again if this one is dropped (its runtime shut
    /// down) rather than ended.
    struct Running<M> {
        shard: Weak<Shard<M>>,
        armed: bool,
    }
    impl<M> Drop for Running<M> {
        fn drop(&mut self) {
            if self.armed
                && let Some(shard) = self.shard.upgrade()
            {
                shard.lock().reaping = false;
            }
        }
    }
    let mut running = Running {
        shard: shard.clone(),
        armed: true,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(shard) = shard.upgrade() else { return };
        let mut state = shard.lock();
        // Read under the lock, which every checkout takes before it lends: nothing can come
        // back to a shard with none lent.
        let idle_shard = shard.leased.load(Ordering::Relaxed) == 0;
        let empty = reap(&mut state.map, Instant::now(), idle_shard);
        // Recorded under the lock too, which a checkout takes to see whether a reaper runs:
        // the next one starts a reaper again.
        if empty && idle_shard {
            state.reaping = false;
            running.armed = false;
            return;
        }
    }
}

/// What a pooled connection is, asked through its `Service<Mark>` (which answers at once).
fn mark<S>(conn: &mut S, mark: Mark) -> Described
where
    S: Service<Mark, Response = Described, Error = Unusable>,
{
    let answer = pin!(conn.call(mark)).poll(&mut Context::from_waker(Waker::noop()));
    match answer {
        Poll::Ready(Ok(described)) => described,
        _ => Described {
            http2: false,
            reused: false,
        },
    }
}

/// Gives `conn` up: marked, and failing its probe, so that its pool drops it.
fn discard<S>(mut conn: S)
where
    S: Service<Mark, Response = Described, Error = Unusable>
        + Service<Probe, Response = (), Error = Unusable>,
{
    mark(&mut conn, Mark::Discard);
    let _ = Service::<Probe>::poll_ready(&mut conn, &mut Context::from_waker(Waker::noop()));
}

/// A connection lent for one exchange; see [`Lease`].
struct Held<S>
where
    S: Service<Mark, Response = Described, Error = Unusable>
        + Service<Probe, Response = (), Error = Unusable>,
{
    conn: Option<S>,
    http2: bool,
    pooling: Pooling,
}

impl<S> Lease for Held<S>
where
    S: Service<Mark, Response = Described, Error = Unusable>
        + Service<Probe, Response = (), Error = Unusable>
        + Send
        + Sync,
{
    fn release(mut self: Box<Self>) {
        if let Some(mut conn) = self.conn.take() {
            if self.http2 || self.pooling.keep_idle() {
                // Back to its pool as it drops.
                mark(&mut conn, Mark::Idle);
            } else {
                discard(conn);
            }
        }
    }
}

impl<S> Drop for Held<S>
where
    S: Service<Mark, Response = Described, Error = Unusable>
        + Service<Probe, Response = (), Error = Unusable>,
{
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            discard(conn);
        }
    }
}

/// How many times a request never written is sent again on another connection before its
/// failure is the answer: a bound, should a closing connection be handed out again.
const RESENDS: u32 = 3;

/// How many times a connection that closed before it was ever used is replaced before the
/// request fails.
const FRESH_RETRIES: u32 = 2;

/// Sends `req` on a connection from `checkout`: a pooled connection that turns out closed is
/// replaced, and a request that was never written because its reused connection closed is
/// sent again on another; once any of it was written, a failure is the answer.
async fn exchange<S, E, Fut, C>(
    mut req: Request<UpstreamBody>,
    origin: Origin,
    host: Host,
    checkout: C,
) -> Sent
where
    C: Fn() -> (Fut, Pooling),
    Fut: Future<Output = Result<S, E>>,
    E: Into<BoxError>,
    S: Service<Probe, Response = (), Error = Unusable>
        + Service<Mark, Response = Described, Error = Unusable>
        + Service<
            Outgoing,
            Response = Response<Incoming>,
            Error = TrySendError<Request<UpstreamBody>>,
        > + Send
        + Sync
        + 'static,
    <S as Service<Outgoing>>::Future: Send,
{
    let mut fresh_failures = 0;
    let mut resent = 0;
    let mut host_set_aside = None;
    loop {
        let (taking, pooling) = checkout();
        let mut conn = taking.await.map_err(SendError::connect)?;
        let described = mark(&mut conn, Mark::Describe);
        if !described.http2 && described.reused {
            saturating_sub(&pooling.idle, 1);
        }
        if let Err(unusable) =
            std::future::poll_fn(|cx| Service::<Probe>::poll_ready(&mut conn, cx)).await
        {
            // Dropped by its pool (the probe failed); another one is taken.
            drop(conn);
            if !described.reused {
                fresh_failures += 1;
                if fresh_failures > FRESH_RETRIES {
                    return Err(SendError::exchange(unusable));
                }
            }
            continue;
        }
        fit_head(
            &mut req,
            described.http2,
            &origin,
            host,
            &mut host_set_aside,
        );
        let sending = conn.call(Outgoing(req));
        let mut held = Held {
            conn: Some(conn),
            http2: described.http2,
            pooling,
        };
        match sending.await {
            Ok(response) => {
                if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    // The connection is the tunnel's now.
                    drop(held);
                    return Ok(response.map(|body| Received::new(body, None)));
                }
                return Ok(response.map(|body| Received::new(body, Some(boxed!(held)))));
            }
            Err(mut error) => match error.take_message() {
                // Never written: the connection closed first. Sent again on another.
                Some(unsent) if described.reused && resent < RESENDS => {
                    resent += 1;
                    req = unsent;
                    if let Some(conn) = held.conn.take() {
                        discard(conn);
                    }
                }
                _ => return Err(SendError::exchange(error.into_error())),
            },
        }
    }
}

/// Makes `req`'s head right for the protocol of the connection it is about to go on.
///
/// Over HTTP/1.1: a URI in origin form and a `Host`. Over HTTP/2: the scheme and the
/// authority in the URI (`:scheme`, `:authority`) and not the `Host` the caller set
/// ([`Host::Given`], RFC 9113 §8.3.1), which waits in `set_aside` in case the request comes
/// back unsent and goes again, over HTTP/1.1.
fn fit_head(
    req: &mut Request<UpstreamBody>,
    http2: bool,
    origin: &Origin,
    host: Host,
    set_aside: &mut Option<HeaderValue>,
) {
    if !http2 {
        if let Some(given) = set_aside.take() {
            req.headers_mut().insert(HOST, given);
        } else if host == Host::FromOrigin && !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, origin.host().clone());
        }
        if req.uri().scheme().is_some() {
            origin_form(req.uri_mut());
        }
    } else {
        if req.uri().scheme().is_none() {
            *req.uri_mut() = origin.join(req.uri());
        }
        if host == Host::Given
            && let Some(given) = req.headers_mut().remove(HOST)
        {
            *set_aside = Some(given);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, net::SocketAddr};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::sync::watch;

    use super::*;
    use crate::client::ProxyClient;

    #[test]
    fn a_head_fits_each_protocol_it_is_tried_on_in_turn() {
        let empty = || {
            http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync()
        };
        let origin = Origin::of(&"http://t.test:8080".parse().unwrap()).unwrap();
        let host = |req: &Request<UpstreamBody>| -> Vec<String> {
            req.headers()
                .get_all(HOST)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        // The proxy's request, its `Host` set: HTTP/2, then (sent back unsent) HTTP/1.1,
        // then HTTP/2 and HTTP/1.1 again.
        let mut req = Request::get("/p?q=1")
            .header(HOST, "t.test:8080")
            .body(empty())
            .unwrap();
        let mut aside = None;
        for round in 0..2 {
            fit_head(&mut req, true, &origin, Host::Given, &mut aside);
            assert!(host(&req).is_empty(), "round {round}");
            assert_eq!(req.uri(), "http://t.test:8080/p?q=1", "round {round}");
            fit_head(&mut req, false, &origin, Host::Given, &mut aside);
            assert_eq!(host(&req), ["t.test:8080"], "round {round}");
            assert_eq!(req.uri(), "/p?q=1", "round {round}");
            assert!(aside.is_none(), "round {round}");
        }
        // A request of the client's own (the JWKS fetch): a `Host` from the origin for
        // HTTP/1.1, one it has kept as it is, and none added for HTTP/2.
        let mut req = Request::get("http://t.test:8080/jwks")
            .body(empty())
            .unwrap();
        fit_head(&mut req, true, &origin, Host::FromOrigin, &mut aside);
        assert!(host(&req).is_empty());
        fit_head(&mut req, false, &origin, Host::FromOrigin, &mut aside);
        assert_eq!(host(&req), ["t.test:8080"]);
        let mut req = Request::get("/jwks")
            .header(HOST, "other.test")
            .body(empty())
            .unwrap();
        fit_head(&mut req, false, &origin, Host::FromOrigin, &mut aside);
        assert_eq!(host(&req), ["other.test"]);
    }

    /// A target on 127.0.0.1 that answers every request with `size` bytes, and counts the
    /// connections it accepted and saw closed.
    struct Counting {
        addr: SocketAddr,
        accepted: watch::Receiver<usize>,
        closed: watch::Receiver<usize>,
    }

    async fn counting(size: usize) -> Counting {
        counting_over(size, None).await
    }

    /// [`counting`], over TLS when `tls` is given; HTTP/1.1 or HTTP/2, as the client speaks.
    async fn counting_over(size: usize, tls: Option<tokio_rustls::TlsAcceptor>) -> Counting {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted_tx, accepted) = watch::channel(0);
        let (closed_tx, closed) = watch::channel(0);
        let closed_tx = Arc::new(closed_tx);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted_tx.send_modify(|n| *n += 1);
                let closed_tx = Arc::clone(&closed_tx);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| async move {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'x'; size]))))
                    });
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                server.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => Ok(()),
                        },
                        None => server.serve_connection(TokioIo::new(stream), service).await,
                    };
                    closed_tx.send_modify(|n| *n += 1);
                });
            }
        });
        Counting {
            addr,
            accepted,
            closed,
        }
    }

    /// Waits (for at most 10 s, a bound that only a broken pool reaches) until `count` is
    /// at least `n`.
    async fn reaches(count: &mut watch::Receiver<usize>, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), count.wait_for(|c| *c >= n))
            .await
            .expect("the count was not reached")
            .unwrap();
    }

    async fn read_whole(client: &ProxyClient, addr: SocketAddr) -> usize {
        read_url(client, &format!("http://{addr}/")).await.1
    }

    /// The version and the length of the body of a `GET` of `url`.
    async fn read_url(client: &ProxyClient, url: &str) -> (http::Version, usize) {
        let read = async {
            let res = client.get(url.parse().unwrap()).await.unwrap();
            let version = res.version();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (version, body.len())
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("no answer")
    }

    #[test]
    fn pools_are_keyed_by_scheme_and_authority_as_written() {
        use std::hash::BuildHasher;
        let key = |uri: &str| Origin::of(&uri.parse().unwrap()).unwrap();
        let a = key("http://a.test:8080/x?y");
        assert_eq!(
            a,
            key("http://a.test:8080/other"),
            "the path is not part of it"
        );
        assert_ne!(a, key("https://a.test:8080/"), "nor is the scheme ignored");
        assert_ne!(a, key("http://a.test:8081/"));
        assert_ne!(a, key("http://b.test:8080/"));
        // Equal keys hash alike (with one hasher's keys).
        let state = std::collections::hash_map::RandomState::new();
        assert_eq!(
            state.hash_one(&a),
            state.hash_one(key("http://a.test:8080/z"))
        );
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_gives_its_connection_back() {
        let target = counting(100_000).await;
        let client = ProxyClient::new().unwrap();
        for _ in 0..3 {
            assert_eq!(read_whole(&client, target.addr).await, 100_000);
        }
        assert_eq!(
            *target.accepted.borrow(),
            1,
            "one connection served all three"
        );
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_its_connection() {
        let mut target = counting(4 << 20).await;
        let client = ProxyClient::new().unwrap();
        let res = client
            .get(format!("http://{}/", target.addr).parse().unwrap())
            .await
            .unwrap();
        let mut body = res.into_body();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        drop(body);
        reaches(&mut target.closed, 1).await;
        // The next request is not sent on it.
        assert_eq!(read_whole(&client, target.addr).await, 4 << 20);
        assert_eq!(*target.accepted.borrow(), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_idle_timeout_without_another_request() {
        let mut target = counting(10).await;
        let client = ProxyClient::builder()
            .pool_idle_timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        assert_eq!(read_whole(&client, target.addr).await, 10);
        reaches(&mut target.closed, 1).await;
        assert_eq!(*target.accepted.borrow(), 1);
        // The shard's reaper stopped with nothing left to close; the next connection is
        // closed all the same.
        assert_eq!(read_whole(&client, target.addr).await, 10);
        reaches(&mut target.closed, 2).await;
        assert_eq!(*target.accepted.borrow(), 2);
    }

    /// An https target that chooses `h2` by ALPN: once made, its connection is shared by
    /// concurrent requests, and closed after the idle timeout.
    #[cfg(feature = "https")]
    #[tokio::test]
    async fn an_h2_connection_chosen_by_alpn_is_shared_and_closed_when_idle() {
        use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut target = counting_over(10, Some(tls)).await;
        // Long enough that no pause of a loaded machine between the requests below reaches it.
        let client = ProxyClient::builder()
            .pool_idle_timeout(Duration::from_secs(1))
            .add_root_certificates_pem(ca.pem().as_bytes())
            .unwrap()
            .build()
            .unwrap();
        let url = format!("https://localhost:{}/", target.addr.port());

        assert_eq!(read_url(&client, &url).await, (http::Version::HTTP_2, 10));
        let answers = futures_util::future::join_all((0..8).map(|_| read_url(&client, &url))).await;
        assert!(answers.iter().all(|a| *a == (http::Version::HTTP_2, 10)));
        assert_eq!(*target.accepted.borrow(), 1, "one connection for all nine");
        reaches(&mut target.closed, 1).await;
        assert_eq!(read_url(&client, &url).await, (http::Version::HTTP_2, 10));
        assert_eq!(*target.accepted.borrow(), 2);
    }

    /// An h2c target: `/hold` is never answered (the target says when it has one); `kill`
    /// drops the open connections at once.
    struct Killable {
        addr: SocketAddr,
        kill: Arc<tokio::sync::Notify>,
        held: tokio::sync::mpsc::UnboundedReceiver<()>,
        closed: watch::Receiver<usize>,
    }

    async fn killable_h2c() -> Killable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let kill = Arc::new(tokio::sync::Notify::new());
        let (held_tx, held) = tokio::sync::mpsc::unbounded_channel();
        let (closed_tx, closed) = watch::channel(0);
        let closed_tx = Arc::new(closed_tx);
        let killer = Arc::clone(&kill);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (held_tx, closed_tx, kill) =
                    (held_tx.clone(), Arc::clone(&closed_tx), Arc::clone(&killer));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let held_tx = held_tx.clone();
                        async move {
                            if req.uri().path() == "/hold" {
                                let _ = held_tx.send(());
                                std::future::pending::<()>().await;
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        () = kill.notified() => {}
                    }
                    closed_tx.send_modify(|n| *n += 1);
                });
            }
        });
        Killable {
            addr,
            kill,
            held,
            closed,
        }
    }

    /// A request in flight on an HTTP/2 connection that dies, ending after a new request has
    /// begun making the next connection, leaves that new connection to it.
    #[tokio::test]
    async fn a_dying_h2_connection_does_not_take_the_next_one_with_it() {
        let mut target = killable_h2c().await;
        let client = ProxyClient::builder()
            .http2_prior_knowledge(true)
            .build()
            .unwrap();
        let url = format!("http://{}/", target.addr);
        assert_eq!(read_url(&client, &url).await, (http::Version::HTTP_2, 2));
        let hold = format!("http://{}/hold", target.addr).parse().unwrap();
        let mut held = Box::pin(client.get(hold));
        tokio::select! {
            _ = &mut held => panic!("/hold was answered"),
            _ = target.held.recv() => {}
        }
        target.kill.notify_waiters();
        reaches(&mut target.closed, 1).await;
        // Time for the client's connection task to see the connection end; should it not
        // have, the request below is sent on a new connection all the same.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A new request finds the connection closed and starts making another...
        let mut next = Box::pin(read_url(&client, &url));
        assert!(futures_util::poll!(next.as_mut()).is_pending());
        // ...while the request on the dead connection fails, and gives it up.
        assert!(held.await.is_err());
        assert_eq!(next.await, (http::Version::HTTP_2, 2));
        let answers = futures_util::future::join_all((0..4).map(|_| read_url(&client, &url))).await;
        assert!(answers.iter().all(|a| *a == (http::Version::HTTP_2, 2)));
    }

    #[test]
    fn each_thread_takes_connections_from_its_own_pool() {
        // The target runs on a thread of its own.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let target = rt.block_on(counting(10));
        let client = ProxyClient::new().unwrap();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let client = client.clone();
                let addr = target.addr;
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        for _ in 0..3 {
                            assert_eq!(read_whole(&client, addr).await, 10);
                        }
                    });
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        // A connection per thread, each reused by its thread's three requests.
        assert_eq!(*target.accepted.borrow(), 2);
        drop(rt);
    }
}
