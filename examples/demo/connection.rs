//! One client connection, from its accept to its end: HTTP/1.1 or h2c with upgrades, the
//! client timeouts, and the buffers of an idle HTTP/1.1 keep-alive connection released.
//! The demo's server and the bench server (`benches/server.rs`) both serve with it.
//!
//! hyper's HTTP/1.1 connection keeps its 8 KiB read buffer and its 8 KiB buffer for the
//! heads it writes for as long as it is open, idle or not. Once one has had no request in
//! flight for [`Timeouts::release`] and waits for the next one with nothing of it read,
//! hyper is told to end it (`graceful_shutdown`, which closes an idle connection at once)
//! without shutting the socket down; the socket and the service are taken back from it
//! (`into_parts`) and wait for the next bytes with no buffer at all (tokio's readiness).
//! When they come, a new hyper connection, with the same settings, serves them; bytes
//! hyper had read ahead are handed to it first. An idle connection then costs its task,
//! its socket's registration and the count of its requests: about 2.2 KiB instead of 12.
//!
//! A connection is released only after a request that lets hyper keep it alive on its
//! own, with nothing of it left unread: HTTP/1.1 without `Connection: close`, no body, no
//! upgrade, and a response without `Connection: close` that switches no protocol. An
//! HTTP/2 connection is never released: its streams live in hyper's state.
//!
//! A release and the next request's new hyper connection cost about 5,800 instructions
//! (`benches/demo-instructions.sh` with `--release-idle-buffers-ms 0`, 14 % of a proxied
//! request): the delay keeps them off connections with steady traffic. Released or not,
//! an idle connection waits for the idle timeout, as nginx's `keepalive_timeout`.
//!
//! The header-read timeout of HTTP/1.1 is kept here, not by hyper, whose timer is armed
//! and dropped (and allocated) for every request of a keep-alive connection: the
//! connection's own timer looks at it at least every half timeout, and ends a connection
//! whose next request's headers have been seen incomplete, with no request handed to the
//! app since, for the whole timeout; such headers have taken between one and one and a
//! half timeouts. (hyper-util's connection for h2c keeps hyper's timer for the rare
//! HTTP/1.1 client that starts like HTTP/2's preface.)

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::extract::ConnectInfo;
use bytes::{Buf, Bytes};
use http::header;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::watch,
    time::{Instant, sleep_until},
};

/// How long the server waits for a client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// For a request's headers, and for a new connection's first request
    /// (`--header-read-timeout-ms`).
    pub(crate) header_read: Duration,
    /// For the next request once none is in flight (`--idle-timeout-ms`).
    pub(crate) idle: Duration,
    /// For the requests in flight once a shutdown begins (`--shutdown-timeout-ms`).
    pub(crate) shutdown: Duration,
    /// For the next request before an idle HTTP/1.1 connection's buffers are released
    /// (`--release-idle-buffers-ms`; zero: as soon as it is idle).
    pub(crate) release: Duration,
}

/// The client timeouts on the command line (the demo's and the bench server's).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TimeoutArgs {
    /// How long a client may take to send a request's headers, in ms: a new connection
    /// (HTTP/1.1 or h2c) must deliver its first request within it, and an HTTP/1.1
    /// connection each following request's headers once begun. A slower client (slowloris)
    /// is disconnected: at this timeout on a new connection, within one and a half times it
    /// on a keep-alive one.
    #[arg(long, value_name = "N", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_ms: u64,

    /// How long a connection may stay open with no request in flight, in ms, before it is
    /// closed gracefully (h2c: `GOAWAY`), as nginx's `keepalive_timeout`. A request whose
    /// response is still streaming keeps its connection open.
    #[arg(long, value_name = "N", default_value_t = 75_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_ms: u64,

    /// How long an HTTP/1.1 keep-alive connection waits for its next request, in ms,
    /// before the buffers hyper holds for it are freed (0: as soon as it is idle).
    #[arg(long, value_name = "N", default_value_t = 100)]
    release_idle_buffers_ms: u64,

    /// How long a shutdown (SIGTERM, Ctrl-C) waits for the requests in flight, in ms:
    /// connections still open after it are dropped. A second signal exits at once.
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    shutdown_timeout_ms: u64,
}

impl TimeoutArgs {
    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts {
            header_read: Duration::from_millis(self.header_read_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
            shutdown: Duration::from_millis(self.shutdown_timeout_ms),
            release: Duration::from_millis(self.release_idle_buffers_ms),
        }
    }
}

/// How every connection of one server thread is served: hyper's builders, with the same
/// HTTP/1.1 settings, and the timeouts.
pub(crate) struct Settings {
    /// For a connection whose first bytes cannot begin HTTP/2's preface, and for a released
    /// connection's next request.
    http1: http1::Builder,
    /// For any other: HTTP/1.1 or HTTP/2 (h2c), as hyper-util tells them apart.
    auto: auto::Builder<TokioExecutor>,
    timeouts: Timeouts,
}

impl Settings {
    pub(crate) fn new(timeouts: Timeouts) -> Arc<Self> {
        // No timer: the header-read timeout is [`serve`]'s (see the module's docs).
        let http1 = http1::Builder::new();
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(timeouts.header_read);
        Arc::new(Self {
            http1,
            auto,
            timeouts,
        })
    }
}

/// What [`serve`] needs of an app: a tower service of hyper's requests.
pub(crate) trait App:
    tower::Service<
        http::Request<Incoming>,
        Response = http::Response<Self::Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Unpin
    + 'static
{
    /// Its responses' body.
    type Body: http_body::Body<Data = Bytes, Error: Into<crate::Error>> + Send + 'static;
}

impl<S, B> App for S
where
    S: tower::Service<
            http::Request<Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Unpin
        + 'static,
    B: http_body::Body<Data = Bytes, Error: Into<crate::Error>> + Send + 'static,
{
    type Body = B;
}

/// Serves one accepted connection with `app` until it ends, `TCP_NODELAY` on. With `peer`,
/// each request carries it as axum's `ConnectInfo`.
///
/// Until its first request a connection has `header_read` in all, the silence before the
/// first byte and a partial HTTP/2 preface included; an HTTP/1.1 connection's later
/// requests have it for their headers (see the module's docs). After that, once no request
/// has been in flight for `idle`, it is shut down gracefully (hyper has no idle timeout for
/// HTTP/2, and a released HTTP/1.1 connection has no hyper connection). Once `stopping` says the server stops, it is shut
/// down gracefully at once; a client that then neither sends nor closes within
/// `header_read` is dropped, unless a request is still in flight.
pub(crate) async fn serve<A: App>(
    tcp: TcpStream,
    peer: Option<SocketAddr>,
    app: A,
    settings: Arc<Settings>,
    stopping: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let t = settings.timeouts;
    let service = TowerToHyperService::new(Tracked {
        inner: app,
        activity: Arc::clone(&activity),
        peer,
    });
    let socket = Socket {
        tcp,
        ahead: Bytes::new(),
        activity: Arc::clone(&activity),
    };
    // Pinned in the task itself and watched through a reference: the task's future holds
    // the connection once.
    let mut connection = std::pin::pin!(Connection {
        state: State::Peeking(Some((socket, service))),
        settings,
        activity: Arc::clone(&activity),
        shutting_down: false,
        release_timer: None,
    });
    let start = activity.origin;
    let mut timer = std::pin::pin!(sleep_until(start + t.header_read.min(t.idle)));
    // Waits for the stop on a receiver of its own: `stopping` tells whether it came.
    let mut stop = stopping.clone();
    let mut stop = std::pin::pin!(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    let mut watch = Watch::default();
    let mut head = HeadWatch::default();
    loop {
        match watch
            .next(
                connection.as_mut(),
                timer.as_mut(),
                stop.as_mut(),
                &stopping,
            )
            .await
        {
            Event::Ended => return,
            Event::Stopped => break,
            Event::Timer => {}
        }
        let now = Instant::now();
        let http1 = !connection.serves_http2();
        // A request's headers still incomplete after the header-read timeout.
        if head.expired(
            http1 && activity.partial_head(),
            activity.calls(),
            now,
            t.header_read,
        ) {
            return;
        }
        let deadline = match activity.idle_since() {
            // Not even a first request's headers in time.
            Idle::NeverUsed if now >= start + t.header_read => return,
            Idle::NeverUsed => (start + t.header_read).min(now + t.idle),
            Idle::Busy => now + t.idle,
            Idle::Since(since) if now < since + t.idle => since + t.idle,
            Idle::Since(_) => break,
        };
        let deadline = if http1 {
            deadline.min(head.next_look(now, t.header_read))
        } else {
            deadline
        };
        timer.as_mut().reset(deadline);
        watch.timer_polled = false;
    }
    // HTTP/2: GOAWAY, then the end once the streams in flight are done; HTTP/1.1: the end
    // after the request being read, if any.
    connection.as_mut().graceful_shutdown();
    loop {
        tokio::select! {
            () = connection.as_mut() => return,
            () = tokio::time::sleep(t.header_read) => {}
        }
        if activity.idle_since() != Idle::Busy {
            return;
        }
    }
}

/// [`serve`]'s watch over the headers of an HTTP/1.1 connection's next request (see the
/// module's docs).
#[derive(Debug, Default)]
struct HeadWatch {
    /// The requests handed to the app when last looked at.
    calls: u64,
    /// When incomplete headers were first seen, none handed to the app since.
    since: Option<Instant>,
}

impl HeadWatch {
    /// Whether the headers being read (`partial`) have been seen incomplete for `limit`,
    /// with the same count of requests handed to the app (`calls`) at every look since.
    fn expired(&mut self, partial: bool, calls: u64, now: Instant, limit: Duration) -> bool {
        if !partial || calls != self.calls {
            self.calls = calls;
            self.since = partial.then_some(now);
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now >= since + limit
    }

    /// When to look next: once incomplete headers have had `limit`, else within half of it.
    fn next_look(&self, now: Instant, limit: Duration) -> Instant {
        match self.since {
            Some(since) => since + limit,
            None => now + limit / 2,
        }
    }
}

/// What ends a wait of [`serve`]'s.
enum Event {
    /// The connection ended.
    Ended,
    /// The server stops.
    Stopped,
    /// The timer fired.
    Timer,
}

/// [`serve`]'s wait for the connection, its timer or the stop, whichever comes first.
///
/// `tokio::select!` would poll all three each time the task wakes, a few times per request;
/// here the timer and the stop are polled once each, which registers the task with them,
/// and then only looked at (`is_elapsed`, `has_changed`) until they fire.
#[derive(Default)]
struct Watch {
    /// Whether the timer was polled since it was last reset.
    timer_polled: bool,
    /// Whether the stop's future was polled (it stays registered from then on).
    stop_polled: bool,
}

impl Watch {
    fn next<C, S>(
        &mut self,
        mut connection: Pin<&mut C>,
        mut timer: Pin<&mut tokio::time::Sleep>,
        mut stop: Pin<&mut S>,
        stopping: &watch::Receiver<bool>,
    ) -> impl Future<Output = Event>
    where
        C: Future<Output = ()>,
        S: Future<Output = ()>,
    {
        std::future::poll_fn(move |cx| {
            if connection.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Ended);
            }
            if !self.timer_polled || timer.is_elapsed() {
                self.timer_polled = true;
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
            }
            // A stop sent, or the server gone.
            if !self.stop_polled || !matches!(stopping.has_changed(), Ok(false)) {
                self.stop_polled = true;
                if stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Stopped);
                }
            }
            Poll::Pending
        })
    }
}

/// What serves one connection's requests.
type Service<A> = TowerToHyperService<Tracked<A>>;

/// One connection's socket, as hyper reads and writes it.
type Io = TokioIo<Socket>;

/// What an HTTP/2 client with prior knowledge (h2c) sends first.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A served connection.
struct Connection<A: App> {
    state: State<A>,
    settings: Arc<Settings>,
    activity: Arc<Activity>,
    /// Whether `graceful_shutdown` was called: before hyper serves the connection, or once
    /// released, the end (as hyper-util's); never a release after it.
    shutting_down: bool,
    /// Armed once hyper's HTTP/1.1 connection is idle, for [`Timeouts::release`]; created
    /// for the first idle period, dropped with the release.
    release_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

enum State<A: App> {
    /// A new connection, waiting for its first bytes.
    Peeking(Option<(Socket, Service<A>)>),
    /// HTTP/1.1, served by hyper; boxed, so that a released connection's task is small.
    Http1(Box<http1::UpgradeableConnection<Io, Service<A>>>),
    /// HTTP/1.1 or h2c, as hyper-util tells them apart; its connection holds an HTTP/2
    /// connection inline (1.5 KiB), boxed too.
    Auto(Pin<Box<auto::UpgradeableConnection<'static, Io, Service<A>, TokioExecutor>>>),
    /// An idle HTTP/1.1 connection without hyper's, waiting for its next request.
    Released(Option<(Socket, Service<A>)>),
}

impl<A: App> Connection<A> {
    /// Whether hyper-util serves it, as h2c (or, rarely, HTTP/1.1 with hyper's own
    /// header-read timer).
    fn serves_http2(&self) -> bool {
        matches!(self.state, State::Auto(_))
    }

    /// HTTP/2: `GOAWAY`, then the end once the streams in flight are done; HTTP/1.1: the
    /// end after the request being read, if any; before the first bytes, or released: the
    /// end.
    fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.get_mut();
        this.shutting_down = true;
        match &mut this.state {
            State::Peeking(_) | State::Released(_) => {}
            State::Http1(conn) => {
                // A shutdown that takes over from a release: the socket is closed.
                this.activity.releasing.store(false, Relaxed);
                Pin::new(&mut **conn).graceful_shutdown();
            }
            State::Auto(conn) => conn.as_mut().graceful_shutdown(),
        }
    }
}

impl<A: App> Future for Connection<A> {
    /// An error ends the connection and is dropped: [`serve`] has no use for it.
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let next = match &mut this.state {
                State::Peeking(parts) | State::Released(parts) if this.shutting_down => {
                    // Dropped here, closing the socket.
                    parts.take();
                    return Poll::Ready(());
                }
                State::Peeking(parts) => {
                    let Some((socket, _)) = parts.as_ref() else {
                        return Poll::Ready(());
                    };
                    // Only peeked at (`MSG_PEEK`): hyper-util reads a connection's first
                    // bytes to tell the versions apart and hands them to hyper's HTTP/1.1
                    // connection ahead of the socket; hyper, finding them in its 8 KiB read
                    // buffer, would reserve 8 KiB more for its next read, kept for the
                    // connection's life. When the first bytes cannot begin HTTP/2's preface,
                    // or there are none (the client closed), hyper-util would choose
                    // HTTP/1.1 too, and hyper reads the socket itself.
                    let mut first = [0; H2_PREFACE.len()];
                    let mut first = ReadBuf::new(&mut first);
                    // A connection reset before its first byte.
                    if ready!(socket.tcp.poll_peek(cx, &mut first)).is_err() {
                        return Poll::Ready(());
                    }
                    let Some((socket, service)) = parts.take() else {
                        return Poll::Ready(());
                    };
                    let first = first.filled();
                    if first.is_empty() || !H2_PREFACE.starts_with(first) {
                        this.http1(socket, service)
                    } else {
                        this.auto(socket, service)
                    }
                }
                State::Released(parts) => {
                    let Some((socket, _)) = parts.as_ref() else {
                        return Poll::Ready(());
                    };
                    // Readable: the next request, or the client's close (which the new
                    // hyper connection reads, and ends).
                    ready!(socket.tcp.poll_read_ready(cx)).ok();
                    let Some((socket, service)) = parts.take() else {
                        return Poll::Ready(());
                    };
                    this.http1(socket, service)
                }
                State::Auto(conn) => return conn.as_mut().poll(cx).map(drop),
                State::Http1(conn) => match Pin::new(&mut **conn).poll(cx) {
                    Poll::Pending => {
                        if !this.idle_long_enough(cx) || !this.activity.may_release() {
                            return Poll::Pending;
                        }
                        // Idle: hyper closes it at once, without shutting the socket down.
                        this.activity.releasing.store(true, Relaxed);
                        this.release_timer = None;
                        let State::Http1(conn) = &mut this.state else {
                            return Poll::Pending;
                        };
                        Pin::new(&mut **conn).graceful_shutdown();
                        continue;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(())) => {
                        if !this.activity.releasing.swap(false, Relaxed) {
                            return Poll::Ready(());
                        }
                        let State::Http1(conn) =
                            std::mem::replace(&mut this.state, State::Released(None))
                        else {
                            return Poll::Ready(());
                        };
                        // `None`: upgraded, the socket is the upgrade's.
                        let Some(parts) = conn.into_parts() else {
                            return Poll::Ready(());
                        };
                        let (mut socket, service) = (parts.io.into_inner(), parts.service);
                        if parts.read_buf.is_empty() {
                            State::Released(Some((socket, service)))
                        } else {
                            // Read ahead: the next request's first bytes.
                            socket.ahead = parts.read_buf;
                            this.http1(socket, service)
                        }
                    }
                },
            };
            this.state = next;
        }
    }
}

impl<A: App> Connection<A> {
    /// Whether hyper's HTTP/1.1 connection, waiting, has had no request in flight for
    /// [`Timeouts::release`] (or one has just ended, without a delay). The timer is armed
    /// when a request ends with none in flight, and left to run while requests come and go;
    /// once it has fired, the next idle moment either finds it due (no request since) or
    /// arms it again for the rest of the delay from the last request's end. Under steady
    /// load that is one timer operation per delay, not one per request.
    fn idle_long_enough(&mut self, cx: &mut Context<'_>) -> bool {
        let delay = self.settings.timeouts.release;
        if self.shutting_down {
            return false;
        }
        if delay.is_zero() {
            return true;
        }
        // Running (polled whenever armed): it wakes the task when it fires.
        if self.release_timer.as_ref().is_some_and(|t| !t.is_elapsed()) {
            return false;
        }
        // With a request in flight: armed again once it ends.
        let Idle::Since(since) = self.activity.idle_since() else {
            return false;
        };
        let due = since + delay;
        let timer = match &mut self.release_timer {
            // Fired, with no request since it was armed: idle all along.
            Some(timer) if timer.deadline() >= due => return true,
            // A request ended since: the rest of the delay from that end.
            Some(timer) => {
                timer.as_mut().reset(due);
                timer
            }
            None => self
                .release_timer
                .insert(Box::pin(tokio::time::sleep_until(due))),
        };
        // Registered with the task; ready at once if `due` has passed.
        timer.as_mut().poll(cx).is_ready()
    }

    /// hyper's HTTP/1.1 connection for `socket`.
    fn http1(&self, socket: Socket, service: Service<A>) -> State<A> {
        let conn = self
            .settings
            .http1
            .serve_connection(TokioIo::new(socket), service)
            .with_upgrades();
        State::Http1(Box::new(conn))
    }

    /// hyper-util's connection for `socket`, HTTP/1.1 or h2c as its first bytes say.
    fn auto(&self, socket: Socket, service: Service<A>) -> State<A> {
        let conn = self
            .settings
            .auto
            .serve_connection_with_upgrades(TokioIo::new(socket), service)
            .into_owned();
        State::Auto(Box::pin(conn))
    }
}

/// A connection's TCP stream, with the bytes a released hyper connection had read ahead,
/// telling its [`Activity`] how hyper reads it.
struct Socket {
    tcp: TcpStream,
    /// Read before the socket's own bytes.
    ahead: Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.ahead.is_empty() {
            let n = this.ahead.len().min(buf.remaining());
            buf.put_slice(&this.ahead[..n]);
            this.ahead.advance(n);
            this.activity.read();
            this.activity.waiting.store(false, Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.tcp).poll_read(cx, buf);
        this.activity.waiting.store(read.is_pending(), Relaxed);
        if buf.filled().len() > before {
            this.activity.read();
        }
        read
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    /// Not while the connection is being released: the socket lives on.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.activity.releasing.load(Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// One connection's requests, and how hyper last read it. Its task alone touches it
/// (the atomics are for `Send`, all `Relaxed`).
#[derive(Debug)]
struct Activity {
    origin: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `origin` to the end of the last request; `u64::MAX` before the
    /// first one.
    idle_since_ms: AtomicU64,
    /// Whether the last request lets the connection be released (see the module's docs).
    releasable: AtomicBool,
    /// Whether bytes were read since the last request was handed to the app: the next
    /// request, begun.
    read_since_call: AtomicBool,
    /// Whether hyper's last read found nothing to read.
    waiting: AtomicBool,
    /// Whether hyper is ending the connection for a release: the socket is not shut down.
    releasing: AtomicBool,
    /// Requests handed to the app.
    calls: AtomicU64,
    /// Whether bytes were read with no request in flight since the last request was handed
    /// to the app: the next request's headers, begun.
    head_read: AtomicBool,
}

/// Whether a connection has a request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    NeverUsed,
    Busy,
    Since(Instant),
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            in_flight: 0.into(),
            idle_since_ms: u64::MAX.into(),
            releasable: false.into(),
            read_since_call: false.into(),
            waiting: false.into(),
            releasing: false.into(),
            calls: 0.into(),
            head_read: false.into(),
        }
    }

    fn begin<B>(self: &Arc<Self>, req: &http::Request<B>) -> InFlight
    where
        B: http_body::Body,
    {
        self.in_flight.fetch_add(1, Relaxed);
        self.calls.fetch_add(1, Relaxed);
        self.read_since_call.store(false, Relaxed);
        self.head_read.store(false, Relaxed);
        self.releasable.store(releasable(req), Relaxed);
        InFlight(Arc::clone(self))
    }

    fn idle_since(&self) -> Idle {
        if self.in_flight.load(Relaxed) > 0 {
            return Idle::Busy;
        }
        match self.idle_since_ms.load(Relaxed) {
            u64::MAX => Idle::NeverUsed,
            ms => Idle::Since(self.origin + Duration::from_millis(ms)),
        }
    }

    /// Bytes were read from the client.
    fn read(&self) {
        self.read_since_call.store(true, Relaxed);
        if self.in_flight.load(Relaxed) == 0 {
            self.head_read.store(true, Relaxed);
        }
    }

    /// Requests handed to the app so far.
    fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }

    /// Whether the next request's headers have begun, with no request in flight.
    fn partial_head(&self) -> bool {
        self.in_flight.load(Relaxed) == 0 && self.head_read.load(Relaxed)
    }

    /// Whether hyper's HTTP/1.1 connection waits for the next request with nothing of it
    /// read, after a request that lets it be released.
    fn may_release(&self) -> bool {
        self.in_flight.load(Relaxed) == 0
            && self.releasable.load(Relaxed)
            && self.waiting.load(Relaxed)
            && !self.read_since_call.load(Relaxed)
    }
}

/// Whether hyper keeps a connection alive after `req`, with nothing of `req` left to read:
/// HTTP/1.1, no `Connection: close`, no body, not `CONNECT`. (A request with `Upgrade` is
/// kept alive too unless its response is `101`, which [`TrackedFuture`] looks at.)
fn releasable<B: http_body::Body>(req: &http::Request<B>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.body().is_end_stream()
        && req.method() != http::Method::CONNECT
        && !closes(req.headers())
}

/// Whether `Connection` lists `close`.
fn closes(headers: &http::HeaderMap) -> bool {
    // Most messages have no `Connection`: one lookup, no iterator over its lines.
    if !headers.contains_key(header::CONNECTION) {
        return false;
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// One request in flight, from its headers to the end (or drop) of its response body.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        // Rounded up: the idle clock never starts before the request ended.
        let ms = activity.origin.elapsed().as_millis().saturating_add(1);
        activity
            .idle_since_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX - 1), Relaxed);
        activity.in_flight.fetch_sub(1, Relaxed);
    }
}

/// The app, counting the requests in flight on its connection.
#[derive(Debug, Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// The connection's peer, put into each request as axum's `ConnectInfo` when set.
    peer: Option<SocketAddr>,
}

impl<S, B> tower::Service<http::Request<Incoming>> for Tracked<S>
where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>>,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Incoming>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        TrackedFuture {
            in_flight: Some(self.activity.begin(&req)),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Tracked`]'s response future: hands the request's [`InFlight`] to the body.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        Poll::Ready(res.map(|res| {
            if let Some(in_flight) = &in_flight
                && (res.status() == http::StatusCode::SWITCHING_PROTOCOLS || closes(res.headers()))
            {
                in_flight.0.releasable.store(false, Relaxed);
            }
            res.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is done.
    struct TrackedBody<B> {
        #[pin]
        body: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
