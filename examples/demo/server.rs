//! The demo's server: HTTP/1.1 and h2c with upgrades, the client timeouts its options
//! promise, and a graceful shutdown on SIGTERM or Ctrl-C that waits for WebSocket tunnels.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::extract::ConnectInfo;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet, time::timeout};
use tower::{Service, ServiceExt};
use tower_identity_proxy::proxy::Tunnels;

use crate::{Error, signals::Signals};

/// How long the server waits for a client (`--*-timeout-ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
    pub(crate) shutdown: Duration,
}

/// Serves `app` on `listener` (HTTP/1.1 and h2c, with upgrades) until SIGTERM or Ctrl-C,
/// then shuts down gracefully; a second signal exits at once.
///
/// hyper-util's server rather than `axum::serve`, for what the options promise: hyper's
/// header-read timeout for HTTP/1.1, and a timer per connection for the rest (a first
/// request, an idle connection, HTTP/2 included). hyper-util's `GracefulShutdown` cannot
/// be told to close one idle connection, so each connection also watches for the shutdown.
pub(crate) async fn serve<A, B>(
    listener: TcpListener,
    (app, tunnels): (A, Tunnels),
    t: Timeouts,
    mut signals: Signals,
) -> Result<(), Error>
where
    A: Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    A::Future: Send,
    B: http_body::Body<Data = bytes::Bytes, Error: Into<Error>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(t.header_read);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let signal = loop {
        let (tcp, peer) = tokio::select! {
            signal = signals.next() => break signal,
            // Forgets the connections that ended.
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let load = Arc::new(watch::Sender::new(Load::default()));
        // Each request carries the peer's address (axum's `ConnectInfo`, which
        // `--forwarded-for` reads) and counts as in flight until its response body is done.
        let service = hyper::service::service_fn({
            let (app, load) = (app.clone(), Arc::clone(&load));
            move |mut req: http::Request<hyper::body::Incoming>| {
                let in_flight = InFlight::begin(&load);
                req.extensions_mut().insert(ConnectInfo(peer));
                let call = app.clone().oneshot(req);
                async move {
                    let res = call.await?;
                    Ok::<_, Infallible>(res.map(|body| Counted { body, in_flight }))
                }
            }
        });
        let (builder, mut stopping) = (builder.clone(), stopping.clone());
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                quiet = quiet(load.subscribe(), t) => if !quiet { return },
                _ = stopping.wait_for(|stop| *stop) => {}
            }
            // HTTP/2: GOAWAY, the streams in flight finish; HTTP/1.1: closed after the
            // response in progress. A client that then neither sends nor closes is dropped.
            connection.as_mut().graceful_shutdown();
            loop {
                tokio::select! {
                    _ = connection.as_mut() => return,
                    () = tokio::time::sleep(t.header_read) => {
                        if load.borrow().in_flight == 0 {
                            return;
                        }
                    }
                }
            }
        });
    };

    tracing::info!(signal = signal.0, "shutting down gracefully");
    // Closing the socket: new connections are refused.
    drop(listener);
    let _ = stop.send(true);
    // An upgraded connection (a WebSocket) is no longer hyper's: its tunnel is waited for
    // apart, within the same grace period.
    let drain = timeout(t.shutdown, async {
        while connections.join_next().await.is_some() {}
        tunnels.ended().await;
    });
    let drained = tokio::select! {
        drained = drain => drained.is_ok(),
        (signal, status) = signals.next() => {
            tracing::warn!(signal, "second shutdown signal: exiting at once");
            std::process::exit(status)
        }
    };
    if !drained {
        while connections.try_join_next().is_some() {}
        let cut = connections.len() + tunnels.close();
        // The tunnels' tasks close both their connections once polled.
        let _ = timeout(Duration::from_secs(1), tunnels.ended()).await;
        tracing::warn!(
            cut,
            "the shutdown grace period ended: dropped {cut} connection(s) still open"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// The requests of one connection: how many have begun, how many are in flight.
#[derive(Debug, Default)]
struct Load {
    started: u64,
    in_flight: usize,
}

/// One request in flight, from its headers to the end (or drop) of its response body.
struct InFlight(Arc<watch::Sender<Load>>);

impl InFlight {
    fn begin(load: &Arc<watch::Sender<Load>>) -> Self {
        load.send_modify(|load| {
            load.started += 1;
            load.in_flight += 1;
        });
        Self(Arc::clone(load))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|load| load.in_flight -= 1);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it is done (or dropped).
    struct Counted<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

impl<B: http_body::Body> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Resolves once a connection has been quiet too long: `false` if it sent no request
/// within `header_read` (hyper's own timer does not cover the silence before the first
/// byte, nor a partial HTTP/2 preface), `true` once none has been in flight for `idle`
/// (hyper has no idle timeout for HTTP/2).
async fn quiet(mut load: watch::Receiver<Load>, t: Timeouts) -> bool {
    let first = async { load.wait_for(|l| l.started > 0).await.is_ok() };
    if timeout(t.header_read, first).await.is_err() {
        return false;
    }
    loop {
        let seen = load.wait_for(|l| l.in_flight == 0).await.map(|l| l.started);
        // Err: the connection is gone.
        let Ok(seen) = seen else {
            return std::future::pending().await;
        };
        let next = async { load.wait_for(|l| l.started != seen).await.is_ok() };
        if timeout(t.idle, next).await.is_err() {
            return true;
        }
    }
}
