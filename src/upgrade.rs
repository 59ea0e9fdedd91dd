//! The byte tunnel of an upgraded connection (WebSocket and other `Upgrade`s).
//!
//! The tunnel is opened only after the target answered `101` with the `Upgrade` asked for
//! (see `forward::respond`). It copies bytes both ways; when one side half-closes, the
//! other side's write half is shut down and the remaining direction keeps flowing; the
//! task ends when both directions are done, either connection fails, or no byte moved in
//! either direction for the idle timeout (then both connections are closed). HTTP/2
//! extended `CONNECT` (RFC 8441) is not tunnelled.

use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
    time::Duration,
};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Instant,
};

/// Once both sides have switched protocols, copies bytes both ways until both directions are
/// done (a half-close is passed on and the other direction keeps flowing), either connection
/// fails, or, with an `idle_timeout`, no byte moved either way for that long.
pub(crate) fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, idle_timeout: Option<Duration>) {
    tokio::spawn(async move {
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
        // Dropping both connections (at the end of this task) closes them.
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
    });
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
