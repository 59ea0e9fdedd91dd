//! The echo target's upgrade routes, for the WebSocket and upgrade tests.

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc::UnboundedSender;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{handshake::derive_accept_key, protocol::Role},
};

use super::target::response;

/// Answers the upgrade routes, `None` for any other request:
/// - `/ws` with `Upgrade`: a WebSocket echo (text, binary; pings are answered by
///   tungstenite); `ws_closed` is signalled when the peer closes the TCP connection after
///   the close handshake;
/// - `/x-echo` with `Upgrade: x-echo`: reads until the peer's half-close, answers
///   `got: <bytes>` and closes;
/// - `/wrong-upgrade`: answers `101` with another protocol than asked.
pub fn route(
    req: &mut Request<Incoming>,
    ws_closed: &UnboundedSender<()>,
) -> Option<Response<Full<Bytes>>> {
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    match req.uri().path() {
        "/ws" if wants_upgrade => {
            let Some(key) = req.headers().get("sec-websocket-key") else {
                return Some(response(StatusCode::BAD_REQUEST, "no key"));
            };
            let accept = derive_accept_key(key.as_bytes());
            let on = hyper::upgrade::on(&mut *req);
            let ws_closed = ws_closed.clone();
            tokio::spawn(async move {
                let Ok(upgraded) = on.await else { return };
                let mut ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                use futures_util::{SinkExt, StreamExt};
                use tokio_tungstenite::tungstenite::Message;
                // The target pings first; the client's pong is reported back as text.
                if ws
                    .send(Message::Ping(Bytes::from_static(b"from-target")))
                    .await
                    .is_err()
                {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(_) | Message::Binary(_) => msg,
                        Message::Pong(data) => {
                            Message::text(format!("pong seen: {}", String::from_utf8_lossy(&data)))
                        }
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
                // The close handshake is done (tungstenite answered the client's Close);
                // now wait for the proxy to pass on the client's TCP close.
                let mut io = ws.into_inner();
                let mut buf = [0u8; 64];
                use tokio::io::AsyncReadExt;
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 {
                        let _ = ws_closed.send(());
                        break;
                    }
                }
            });
            Some(switching("Upgrade", "websocket", Some(accept)))
        }
        "/x-echo" if wants_upgrade => {
            let on = hyper::upgrade::on(&mut *req);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(upgraded) = on.await else { return };
                let mut io = TokioIo::new(upgraded);
                let mut got = Vec::new();
                if io.read_to_end(&mut got).await.is_err() {
                    return;
                }
                let mut reply = b"got: ".to_vec();
                reply.extend_from_slice(&got);
                let _ = io.write_all(&reply).await;
                let _ = io.shutdown().await;
            });
            Some(switching("upgrade", "x-echo", None))
        }
        "/wrong-upgrade" => Some(switching("upgrade", "something-else", None)),
        _ => None,
    }
}

/// A `101 Switching Protocols` to `upgrade`, with `Sec-WebSocket-Accept: accept` if given.
fn switching(connection: &str, upgrade: &str, accept: Option<String>) -> Response<Full<Bytes>> {
    let mut res = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, connection)
        .header(header::UPGRADE, upgrade);
    if let Some(accept) = accept {
        res = res.header("sec-websocket-accept", accept);
    }
    res.body(Full::default()).expect("response")
}
