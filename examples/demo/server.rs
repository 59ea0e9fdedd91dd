//! The demo's server: HTTP/1.1 and h2c with upgrades, the client timeouts its options
//! promise (see `connection`), and a graceful shutdown on SIGTERM or Ctrl-C that waits for
//! WebSocket tunnels.

use std::time::Duration;

use tokio::{net::TcpListener, sync::watch, task::JoinSet, time::timeout};
use tower_identity_proxy::proxy::Tunnels;

use crate::{
    Error,
    connection::{self, Settings, Timeouts},
    signals::Signals,
};

/// Serves `app` on `listener` (HTTP/1.1 and h2c, with upgrades) until SIGTERM or Ctrl-C,
/// then shuts down gracefully; a second signal exits at once. With `connect_info`, each
/// request carries its connection's peer address, as axum's `ConnectInfo`.
///
/// hyper's server driven directly rather than `axum::serve`, for what the options promise:
/// hyper's header-read timeout for HTTP/1.1, a timer per connection for the rest (a first
/// request, an idle connection, HTTP/2 included), and the buffers of an idle HTTP/1.1
/// connection released. hyper-util's `GracefulShutdown` cannot be told to close one idle
/// connection, so each connection also watches for the shutdown.
pub(crate) async fn serve<A: connection::App>(
    listener: TcpListener,
    (app, tunnels): (A, Tunnels),
    t: Timeouts,
    connect_info: bool,
    mut signals: Signals,
) -> Result<(), Error> {
    let settings = Settings::new(t);
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
        // Only when something reads it: inserting it allocates each request's extension map.
        connections.spawn(connection::serve(
            tcp,
            connect_info.then_some(peer),
            app.clone(),
            std::sync::Arc::clone(&settings),
            stopping.clone(),
        ));
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
