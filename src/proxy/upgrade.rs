//! The byte tunnel of an upgraded connection (WebSocket and other `Upgrade`s).
//!
//! The tunnel is opened only after the target answered `101` with the `Upgrade` asked for
//! (see `forward::respond`). It copies bytes both ways; when one side half-closes, the
//! other side's write half is shut down and the remaining direction keeps flowing; the
//! task ends when both directions are done, either connection fails, or no byte moved in
//! either direction for the idle timeout (then both connections are closed). HTTP/2
//! extended `CONNECT` (RFC 8441) is not tunnelled.
//!
//! A tunnel outlives the HTTP connection it came from: once hyper hands the connection
//! over, a server's graceful shutdown no longer sees it. [`Tunnels`] is what a server uses
//! instead: how many are open, a wait for them to end, and a way to close them.

use std::{
    fmt, io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{Notify, watch},
    time::Instant,
};

/// The upgraded connections (WebSocket tunnels) of a [`ProxyLayer`](crate::ProxyLayer):
/// how many are open, a wait for them to end, and a way to close them, for a server's
/// graceful shutdown.
///
/// A handle: clones share the same tunnels. Create one, keep a clone, and give it to
/// [`ProxyLayer::tunnels`](crate::ProxyLayer::tunnels): the layer's clones and every service
/// built from them count their tunnels in it. Give each server thread its own to wait for
/// its own.
///
/// # Example
///
/// A graceful shutdown that gives WebSockets a grace period, then closes them:
///
/// ```no_run
/// use std::time::Duration;
/// use tower_identity_proxy::{ProxyLayer, jwt::{KeyPair, KeySigner}, proxy::Tunnels};
///
/// # async fn run(listener: tokio::net::TcpListener, shutdown_signal: impl std::future::Future<Output = ()> + Send + 'static) -> Result<(), Box<dyn std::error::Error>> {
/// let tunnels = Tunnels::new();
/// let proxy = ProxyLayer::new(KeySigner::new(KeyPair::generate_rsa(2048)?))
///     .tunnels(tunnels.clone());
/// let app = axum::Router::new().layer(proxy);
/// axum::serve(listener, app)
///     .with_graceful_shutdown(shutdown_signal)
///     .await?;
/// // The HTTP connections are closed; the WebSockets get ten more seconds.
/// if tokio::time::timeout(Duration::from_secs(10), tunnels.ended()).await.is_err() {
///     let cut = tunnels.close();
///     eprintln!("closed {cut} WebSocket(s) still open");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Tunnels(Arc<TunnelSet>);

#[derive(Default)]
struct TunnelSet {
    /// Tunnels whose task runs: waiting for both sides to switch protocols, or copying.
    open: AtomicUsize,
    /// Told when `open` drops to zero.
    ended: Notify,
    /// `true` once [`Tunnels::close`] was called.
    closing: watch::Sender<bool>,
}

impl Tunnels {
    /// A set with no tunnel.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tunnels are open (counting those whose `101` was just sent and whose
    /// connections are being handed over).
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// Resolves once no tunnel is open; at once if none is. A tunnel opened after it
    /// resolved is not waited for.
    pub async fn ended(&self) {
        loop {
            let notified = self.0.ended.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a tunnel ending in between still wakes
            // this wait.
            notified.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Closes every open tunnel (both its connections, without a WebSocket close frame:
    /// the proxy does not parse the tunnelled protocol), at once; returns how many were
    /// open. For the end of a server's shutdown: the set stays closed, and an upgrade asked
    /// for from now on is refused with `503 Service Unavailable`
    /// ([`ProxyErrorKind::ShuttingDown`](crate::ProxyErrorKind::ShuttingDown)) without
    /// reaching the target.
    ///
    /// Each tunnel's task ends the next time its runtime polls it; [`ended`](Self::ended)
    /// tells when they all have.
    pub fn close(&self) -> usize {
        // Counted before the tunnels are told: once told, a tunnel on another thread may
        // end, and leave the count, before this one reads it.
        let open = self.open();
        self.0.closing.send_replace(true);
        open
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        *self.0.closing.borrow()
    }

    /// Counts a tunnel as open until the returned guard is dropped.
    fn enter(&self) -> Open {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        crate::observability::record::tunnel(true);
        Open(self.clone())
    }
}

impl fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tunnels")
            .field("open", &self.open())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// One open tunnel of a [`Tunnels`] set, for as long as its task runs.
struct Open(Tunnels);

impl Drop for Open {
    fn drop(&mut self) {
        crate::observability::record::tunnel(false);
        if self.0.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.0.ended.notify_waiters();
        }
    }
}

/// Once both sides have switched protocols, copies bytes both ways until both directions are
/// done (a half-close is passed on and the other direction keeps flowing), either connection
/// fails, or, with an `idle_timeout`, no byte moved either way for that long, or `tunnels`
/// is closed. The tunnel counts in `tunnels` until its task ends (or is dropped with its
/// runtime).
pub(crate) fn spawn_tunnel(
    tunnels: &Tunnels,
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: Option<Duration>,
) {
    let open = tunnels.enter();
    let mut closing = tunnels.0.closing.subscribe();
    tokio::spawn(async move {
        let _open = open;
        tokio::select! {
            () = tunnel(client, upstream, idle_timeout) => {}
            // The sender lives in the set this task holds: it cannot be dropped first.
            _ = closing.wait_for(|closed| *closed) => tracing::debug!(
                target: "tower_identity_proxy",
                "tunnel closed: its layer's tunnels were closed"
            ),
        }
    });
}

/// One tunnel, as [`spawn_tunnel`] describes it.
async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, idle_timeout: Option<Duration>) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(target: "tower_identity_proxy", error = %e, "upgrade failed");
            return;
        }
    };
    let clock = Activity::new();
    let mut client = Watched::new(TokioIo::new(client), &clock);
    let mut upstream = Watched::new(TokioIo::new(upstream), &clock);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    let ended = match idle_timeout {
        Some(idle) => tokio::select! {
            ended = copy => Some(ended),
            () = clock.idle_for(idle) => None,
        },
        None => Some(copy.await),
    };
    // Dropping both connections (on return) closes them.
    match ended {
        Some(Ok((up, down))) => tracing::debug!(
            target: "tower_identity_proxy",
            bytes_up = up,
            bytes_down = down,
            "tunnel closed"
        ),
        Some(Err(e)) => {
            tracing::debug!(target: "tower_identity_proxy", error = %e, "tunnel ended");
        }
        None => tracing::debug!(
            target: "tower_identity_proxy",
            idle_timeout = ?idle_timeout,
            "tunnel idle: both sides closed"
        ),
    }
}

/// When a byte last moved through the tunnel, in milliseconds since the tunnel opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Completes once no byte moved for `idle`; never for an `idle` too long to represent.
    async fn idle_for(&self, idle: Duration) {
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        loop {
            let last = self.last_ms.load(Ordering::Relaxed);
            let due = last.saturating_add(idle_ms);
            let now = self.elapsed_ms();
            if now >= due {
                return;
            }
            match self.opened.checked_add(Duration::from_millis(due)) {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        }
    }
}

/// A connection that records in an [`Activity`] every read or write that moved bytes.
struct Watched<'a, T> {
    io: T,
    activity: &'a Activity,
}

impl<'a, T> Watched<'a, T> {
    fn new(io: T, activity: &'a Activity) -> Self {
        Self { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_either_way_are_activity() {
        let clock = Activity::new();
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Watched::new(a, &clock);

        tokio::time::sleep(Duration::from_millis(20)).await;
        a.write_all(b"x").await.unwrap();
        let written = clock.last_ms.load(Ordering::Relaxed);
        assert!(written >= 20, "{written}");
        let mut one = [0u8; 1];
        b.read_exact(&mut one).await.unwrap();

        tokio::time::sleep(Duration::from_millis(20)).await;
        b.write_all(b"y").await.unwrap();
        a.read_exact(&mut one).await.unwrap();
        let read = clock.last_ms.load(Ordering::Relaxed);
        assert!(read >= written + 20, "{written} then {read}");

        // Flushes and empty writes move nothing.
        tokio::time::sleep(Duration::from_millis(20)).await;
        a.flush().await.unwrap();
        a.write_all(b"").await.unwrap();
        assert_eq!(clock.last_ms.load(Ordering::Relaxed), read);

        // Idle since the last byte: due at once for a timeout shorter than the silence.
        bounded(clock.idle_for(Duration::from_millis(10))).await;
    }

    #[tokio::test]
    async fn an_unrepresentable_timeout_never_fires() {
        let clock = Activity::new();
        let never =
            tokio::time::timeout(Duration::from_millis(50), clock.idle_for(Duration::MAX)).await;
        assert!(never.is_err());
    }

    async fn bounded<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .expect("within 5 s")
    }
}
