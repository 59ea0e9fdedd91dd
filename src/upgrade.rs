//! The byte tunnel of an upgraded connection (WebSocket and other `Upgrade`s).
//!
//! The tunnel is opened only after the target answered `101` with the `Upgrade` asked for
//! (see `forward::respond`). It copies bytes both ways; when one side half-closes, the
//! other side's write half is shut down and the remaining direction keeps flowing; the
//! task ends when both directions are done or either connection fails. HTTP/2 extended
//! `CONNECT` (RFC 8441) is not tunnelled.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

/// Once both sides have switched protocols, copies bytes both ways until either side closes;
/// a half-close is passed on, and the task ends when both directions are done.
pub(crate) fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(target: "tower_identity_proxy", error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(
                target: "tower_identity_proxy",
                bytes_up = up,
                bytes_down = down,
                "tunnel closed"
            ),
            Err(e) => tracing::debug!(target: "tower_identity_proxy", error = %e, "tunnel ended"),
        }
    });
}
