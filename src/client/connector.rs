//! [`Quiet`]: a connector wrapper whose connections carry no per-response extension.
//!
//! hyper-util's `HttpConnector` describes each TCP connection with an `HttpInfo` (the local
//! and remote addresses), and its pooled client copies that description into the
//! extensions of every response: a boxed map and a boxed value, three allocations per
//! request, for a value the proxy never reads (and should not hand to the app: it names
//! the target's address). `Quiet` keeps what the client needs of a connection (whether it
//! goes through a proxy, whether ALPN chose `h2`) and drops the rest.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower_service::Service;

/// Wraps a connector; see the [module docs](self).
#[derive(Clone, Debug)]
pub(crate) struct Quiet<C>(pub(crate) C);

impl<C> Service<Uri> for Quiet<C>
where
    C: Service<Uri>,
    C::Future: Unpin,
{
    type Response = QuietIo<C::Response>;
    type Error = C::Error;
    type Future = Connecting<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Connecting(self.0.call(uri))
    }
}

/// The future of a [`Quiet`] connection.
#[derive(Debug)]
pub(crate) struct Connecting<F>(F);

impl<F, T, E> Future for Connecting<F>
where
    F: Future<Output = Result<T, E>> + Unpin,
{
    type Output = Result<QuietIo<T>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_ok(QuietIo)
    }
}

/// A connection of a [`Quiet`] connector: the same bytes, a shorter description.
#[derive(Debug)]
pub(crate) struct QuietIo<T>(T);

impl<T: Connection> Connection for QuietIo<T> {
    fn connected(&self) -> Connected {
        let inner = self.0.connected();
        let connected = Connected::new().proxy(inner.is_proxied());
        if inner.is_negotiated_h2() {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl<T: Read + Unpin> Read for QuietIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for QuietIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that describes itself the way `HttpConnector` and hyper-rustls do.
    struct Described(Connected);

    impl Connection for Described {
        fn connected(&self) -> Connected {
            let c = Connected::new().proxy(self.0.is_proxied());
            let c = if self.0.is_negotiated_h2() {
                c.negotiated_h2()
            } else {
                c
            };
            c.extra(42u32)
        }
    }

    #[test]
    fn keeps_alpn_and_proxy_and_drops_the_extra() {
        for (proxied, h2) in [(false, false), (true, false), (false, true), (true, true)] {
            let inner = Connected::new().proxy(proxied);
            let inner = if h2 { inner.negotiated_h2() } else { inner };
            let quiet = QuietIo(Described(inner)).connected();
            assert_eq!(quiet.is_proxied(), proxied);
            assert_eq!(quiet.is_negotiated_h2(), h2);
            let mut extensions = http::Extensions::new();
            quiet.get_extras(&mut extensions);
            assert!(extensions.is_empty(), "no extra is left");

            let mut described = http::Extensions::new();
            QuietIo(Described(Connected::new()))
                .0
                .connected()
                .get_extras(&mut described);
            assert_eq!(described.get::<u32>(), Some(&42), "the inner one had it");
        }
    }
}
