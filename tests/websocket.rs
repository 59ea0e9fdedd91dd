//! WebSockets and other upgrades through the proxy: the handshake carries the identity,
//! the tunnel opens only on a matching `101`, frames flow both ways, closes propagate, and
//! no task outlives the connection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    client_async,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};
use tower_identity_proxy::client::ProxyClient;
use tower_identity_proxy::proxy::Tunnels;

/// One WebSocket session through the app: handshake with a multi-token `Connection`,
/// ping/pong both ways, text, binary, close. Returns the handshake the target saw.
async fn session(app: SocketAddr, target: &mut EchoTarget) -> serde_json::Value {
    let (mut ws, res) = open_ws(app, Some("keep-alive, Upgrade")).await;
    assert_eq!(res.headers()["upgrade"], "websocket");
    assert!(res.headers().contains_key("via"));

    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        within("text", ws_next(&mut ws)).await,
        Message::text("hello")
    );
    let binary = vec![0u8, 1, 2, 0xff, 0xfe];
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(
        within("binary", ws_next(&mut ws)).await,
        Message::binary(binary)
    );
    ws.send(Message::Ping("from-client".into())).await.unwrap();
    assert_eq!(
        within("pong", ws_next(&mut ws)).await,
        Message::Pong("from-client".into())
    );

    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .unwrap();
    match within("close", ws_next(&mut ws)).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the target's close, got {other:?}"),
    }
    drop(ws);
    // The client's TCP close went through the tunnel to the target.
    within("target sees the close", target.ws_closed.recv())
        .await
        .expect("close signal");
    target.last().json()
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;
type Handshake = tokio_tungstenite::tungstenite::handshake::client::Response;

/// The frames the target sends first on every WebSocket: its ping, then its report of the
/// pong (which tungstenite sends by itself).
fn opening_frames() -> [Message; 2] {
    [
        Message::Ping("from-target".into()),
        Message::text("pong seen: from-target"),
    ]
}

/// A WebSocket to the target's `/ws` through `app` (with this `Connection` header, if
/// any), past the target's opening ping and its report of the pong: the socket and the
/// `101`.
async fn open_ws(app: SocketAddr, connection: Option<&str>) -> (Ws, Handshake) {
    let (mut ws, res) = handshake(app, connection).await;
    let [ping, report] = opening_frames();
    // The target pings first; tungstenite answers with a pong that the target reports.
    assert_eq!(within("ping", ws_next(&mut ws)).await, ping);
    assert_eq!(within("pong report", ws_next(&mut ws)).await, report);
    (ws, res)
}

/// [`open_ws`] up to the `101`, before any frame.
async fn handshake(app: SocketAddr, connection: Option<&str>) -> (Ws, Handshake) {
    let stream = TcpStream::connect(app).await.unwrap();
    let mut req = format!("ws://{app}/proxy/ws")
        .into_client_request()
        .unwrap();
    if let Some(connection) = connection {
        req.headers_mut()
            .insert("connection", connection.parse().unwrap());
    }
    let (ws, res) = within("ws handshake", client_async(req, stream))
        .await
        .expect("handshake through the proxy");
    assert_eq!(res.status(), 101);
    (ws, res)
}

async fn ws_next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.next().await.expect("a frame").expect("no error")
}

fn assert_handshake(seen: &serde_json::Value, app: SocketAddr) {
    assert_eq!(seen["version"], "HTTP/1.1", "{seen}");
    assert_eq!(seen["method"], "GET");
    assert_alice(header_of(seen, "authorization").expect("the JWT on the handshake"));
    assert_eq!(
        header_of(seen, "x-forwarded-host"),
        Some(app.to_string().as_str())
    );
    assert_eq!(header_of(seen, "x-forwarded-proto"), Some("http"));
    assert_eq!(header_of(seen, "upgrade"), Some("websocket"));
    assert!(
        header_of(seen, "connection").is_some_and(|c| c.eq_ignore_ascii_case("upgrade")),
        "{seen}"
    );
    assert!(header_of(seen, "sec-websocket-key").is_some());
    assert_eq!(header_of(seen, "sec-websocket-version"), Some("13"));
}

/// Alive tasks of this (current-thread) runtime.
fn alive() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits until the runtime is back to `baseline` tasks, for at most the liveness bound,
/// and returns how many are alive then.
async fn settles_to(baseline: usize) -> usize {
    let settled = async {
        while alive() > baseline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    // Out of time, the caller's assertion names the tasks still alive.
    let _ = tokio::time::timeout(LIVENESS, settled).await;
    alive()
}

#[tokio::test]
async fn websocket_echo_carries_the_identity_and_leaks_no_task() {
    let mut target = echo_target().await;
    let app = alice_app(
        ProxyClient::new().unwrap(),
        &format!("http://{}", target.addr()),
    )
    .await;

    // The runtime's tasks before any session: the app's and the target's accept loops.
    let before = alive();
    for _ in 0..2 {
        let seen = session(app, &mut target).await;
        assert_handshake(&seen, app);
        // The tunnel task and every connection task end once the sockets close.
        let after = settles_to(before).await;
        assert_eq!(after, before, "tasks alive after the session");
    }
}

#[tokio::test]
async fn websocket_with_an_h2c_client_still_upgrades_over_http1() {
    // The client speaks h2c to plain-http targets; an upgrade exists only in HTTP/1.1.
    let mut target = echo_target().await;
    let client = ProxyClient::builder()
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let app = alice_app(client, &format!("http://{}", target.addr())).await;
    let seen = session(app, &mut target).await;
    assert_handshake(&seen, app);
}

#[cfg(feature = "https")]
#[tokio::test]
async fn wss_follows_an_https_target_that_offers_h2() {
    // A TLS target offering h2 and http/1.1 (as most do): the WebSocket handshake must go
    // over HTTP/1.1, whatever ALPN would pick for ordinary requests.
    let ca = Ca::new("ws CA");
    let leaf = ca.leaf(&["localhost"], false);
    let mut target = tls_echo_target(server_config(&leaf, &[b"h2", b"http/1.1"], None)).await;
    let client = client_trusting(&ca).build().unwrap();
    let app = alice_app(
        client,
        &format!("https://localhost:{}", target.addr().port()),
    )
    .await;

    // Ordinary requests still use h2 on the same target.
    let got = within("h2 get", get(&format!("http://{app}/proxy/plain"))).await;
    assert_eq!(got.json()["version"], "HTTP/2.0");

    let seen = session(app, &mut target).await;
    assert_handshake(&seen, app);
    assert_eq!(seen["alpn"], "http/1.1");
}

/// Sends a raw upgrade request and returns the stream and the response head.
async fn raw_upgrade(app: SocketAddr, path: &str, extra: &str) -> (TcpStream, String, Vec<u8>) {
    let mut c = Raw::connect(app).await;
    let req = format!("GET /proxy{path} HTTP/1.1\r\nHost: {app}\r\n{extra}\r\n");
    c.send(req.as_bytes()).await;
    let head = within("raw head", c.wire.read_until(b"\r\n\r\n"))
        .await
        .expect("a response head before the connection closed");
    let head = String::from_utf8_lossy(&head).into_owned();
    (c.wire.stream, head, c.wire.buf)
}

#[tokio::test]
async fn half_close_passes_both_ways() {
    let target = echo_target().await;
    let app = alice_app(
        ProxyClient::new().unwrap(),
        &format!("http://{}", target.addr()),
    )
    .await;
    let (mut s, head, rest) = raw_upgrade(
        app,
        "/x-echo",
        "Connection: keep-alive, Upgrade\r\nUpgrade: x-echo\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: x-echo"),
        "{head}"
    );
    assert!(rest.is_empty());

    // Write, then half-close: the target reads to EOF and only then answers.
    s.write_all(b"hello ").await.unwrap();
    s.write_all(b"tunnel").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("reply after half-close", s.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"got: hello tunnel");

    let seen = target.last().json();
    assert_alice(header_of(&seen, "authorization").unwrap());
    assert_eq!(header_of(&seen, "upgrade"), Some("x-echo"));

    // Offered among several protocols, the one the target picks is the one switched to.
    let (mut s, head, _) = raw_upgrade(
        app,
        "/x-echo",
        "Connection: Upgrade\r\nUpgrade: other/2, X-Echo\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("upgrade: x-echo\r\n"), "{head}");
    s.write_all(b"again").await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("second tunnel", s.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"got: again");
    assert_eq!(
        header_of(&target.last().json(), "upgrade"),
        Some("other/2, X-Echo")
    );
}

#[tokio::test]
async fn no_tunnel_without_a_matching_101() {
    let target = echo_target().await;
    let app = alice_app(
        ProxyClient::new().unwrap(),
        &format!("http://{}", target.addr()),
    )
    .await;

    // The target switches to another protocol than asked: 502, no tunnel.
    let want: &[u8] = b"The proxy target switched to another protocol.";
    let (mut s, head, mut body) = raw_upgrade(
        app,
        "/wrong-upgrade",
        "Connection: Upgrade\r\nUpgrade: x-echo\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    while body.len() < want.len() {
        let mut more = [0u8; 256];
        let n = within("502 body", s.read(&mut more)).await.unwrap();
        assert!(n > 0, "closed early");
        body.extend_from_slice(&more[..n]);
    }
    assert_eq!(body, want);

    // The target declines (answers 200): the client gets that answer, nothing switches.
    let (_s, head, rest) = raw_upgrade(
        app,
        "/plain",
        "Connection: Upgrade\r\nUpgrade: websocket\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("upgrade:"), "{head}");
    let _ = rest;
}

#[tokio::test]
async fn h2c_upgrade_is_not_tunnelled() {
    let target = echo_target().await;
    let app = alice_app(
        ProxyClient::new().unwrap(),
        &format!("http://{}", target.addr()),
    )
    .await;
    let (_s, head, _) = raw_upgrade(
        app,
        "/plain",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = target.last().json();
    for gone in ["upgrade", "connection", "http2-settings"] {
        assert!(header_of(&seen, gone).is_none(), "{gone}: {seen}");
    }
    assert_alice(header_of(&seen, "authorization").unwrap());
}

#[tokio::test]
async fn http2_extended_connect_is_refused_not_tunnelled() {
    // WebSockets over HTTP/2 (RFC 8441) are not proxied: the request is refused with a
    // plain 405 (CONNECT is never forwarded) and nothing reaches the target.
    let target = echo_target().await;
    let app = alice_app(
        ProxyClient::new().unwrap(),
        &format!("http://{}", target.addr()),
    )
    .await;
    let tcp = TcpStream::connect(app).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    within("ready", sender.ready()).await.unwrap();
    let req = http::Request::connect(format!("http://{app}/proxy/ws"))
        .extension(hyper::ext::Protocol::from_static("websocket"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = within("extended connect", sender.send_request(req))
        .await
        .expect("an answer");
    assert_eq!(res.status(), 405);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"CONNECT cannot be proxied.");
    assert_eq!(target.count(), 0);
}

// ---------------------------------------------------------------------------------------
// Idle tunnels
// ---------------------------------------------------------------------------------------

/// The test app, its tunnels closed after `idle` without a byte moving.
async fn start_app_idle(target: &EchoTarget, idle: Duration) -> SocketAddr {
    let proxy = alice_layer(
        ProxyClient::new().unwrap(),
        &format!("http://{}", target.addr()),
    )
    .tunnel_idle_timeout(idle);
    let app = axum::Router::new().layer(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_on_both_sides() {
    let mut target = echo_target().await;
    let app = start_app_idle(&target, Duration::from_millis(200)).await;
    let before = alive();
    let (mut ws, _) = handshake(app, None).await;

    // Nobody sends anything: the proxy closes the caller's connection (no close frame: the
    // stream just ends) and the target's (its read sees EOF). The target's opening frames
    // come first, unless the test machine stalled for the timeout before they crossed.
    let mut opening = opening_frames().into_iter();
    let end = loop {
        match within("the caller's side closes", ws.next()).await {
            Some(Ok(frame)) if opening.next().as_ref() == Some(&frame) => {}
            end => break end,
        }
    };
    assert!(
        !matches!(end, Some(Ok(_))),
        "a frame instead of the close: {end:?}"
    );
    within("the target's side closes", target.ws_closed.recv())
        .await
        .expect("close signal");
    drop(ws);
    assert_eq!(
        settles_to(before).await,
        before,
        "tasks alive after the close"
    );
}

#[tokio::test]
async fn a_tunnel_with_traffic_stays_open() {
    despite_stalls(Duration::from_secs(1), traffic_keeps_a_tunnel_open).await;
}

/// Sends a message every tenth of `idle` and reads its echo, until one went through more
/// than twice `idle` after the tunnel opened: the tunnel stays open only if traffic resets
/// its idle clock. A close is judged by [`stalled_or_broken`] from the sending of the last
/// message echoed (the proxy moved it no earlier), or from before the handshake.
async fn traffic_keeps_a_tunnel_open(idle: Duration) -> Attempt {
    let mut target = echo_target().await;
    let app = start_app_idle(&target, idle).await;
    let mut quiet_since = Instant::now();
    let (mut ws, _) = handshake(app, None).await;
    for expected in opening_frames() {
        match within("opening frame", ws.next()).await {
            Some(Ok(frame)) => assert_eq!(frame, expected),
            end => return stalled_or_broken(&format!("closed at {end:?}"), idle, quiet_since),
        }
    }
    // The tunnel's clock started before its first frame reached the caller.
    let opened_by = Instant::now();

    let mut i = 0;
    while quiet_since < opened_by + 2 * idle {
        tokio::time::sleep(idle / 10).await;
        let sent = Instant::now();
        let text = format!("tick {i}");
        let echo = match ws.send(Message::text(text.clone())).await {
            Ok(()) => within("echo", ws.next()).await,
            Err(e) => Some(Err(e)),
        };
        match echo {
            Some(Ok(frame)) => assert_eq!(frame, Message::text(text)),
            end => {
                return stalled_or_broken(&format!("closed at {text}: {end:?}"), idle, quiet_since);
            }
        }
        quiet_since = sent;
        i += 1;
    }

    // Still open: closed by the caller, the close goes through.
    let closed = match ws.close(None).await {
        Ok(()) => within("close", ws.next()).await,
        Err(e) => Some(Err(e)),
    };
    match closed {
        Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("expected the target's close, got {other:?}"),
        end => {
            return stalled_or_broken(&format!("closed at the close: {end:?}"), idle, quiet_since);
        }
    }
    drop(ws);
    within("target sees the close", target.ws_closed.recv())
        .await
        .expect("close signal");
    Attempt::Held
}

/// `tower_identity_proxy_tunnels_open` counts the open tunnels. The recorder is this
/// thread's: a current-thread runtime polls every task (the tunnels' included) on it.
#[tokio::test(flavor = "current_thread")]
async fn the_tunnels_open_gauge_follows_the_tunnels() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let target = echo_target().await;
    let layer = alice_layer(
        ProxyClient::new().unwrap(),
        &format!("http://{}", target.addr()),
    );
    let tunnels = Tunnels::new();
    let layer = layer.tunnels(tunnels.clone());
    let app = serve(axum::Router::new().layer(layer)).await.detach();

    let (mut ws, _) = open_ws(app, None).await;
    assert_eq!(tunnels.open(), 1);
    let text = metrics.render();
    assert!(
        text.contains("\ntower_identity_proxy_tunnels_open 1\n"),
        "{text}"
    );

    ws.close(None).await.unwrap();
    let _ = within("the target's close", ws.next()).await;
    drop(ws);
    within("the tunnel ends", tunnels.ended()).await;
    let text = metrics.render();
    assert!(
        text.contains("\ntower_identity_proxy_tunnels_open 0\n"),
        "{text}"
    );
}

/// `ProxyLayer::tunnels`: a graceful shutdown's view of the WebSockets, which the server no
/// longer sees once upgraded. An open tunnel counts until its peers close it, and `ended`
/// waits for that; `close` closes both its connections at once (the client reads the end,
/// the target sees its peer go), and an upgrade asked for afterwards is refused (`503`)
/// without reaching the target.
#[tokio::test]
async fn a_layers_tunnels_are_counted_waited_for_and_closed() {
    let mut target = echo_target().await;
    let layer = alice_layer(
        ProxyClient::new().unwrap(),
        &format!("http://{}", target.addr()),
    );
    let tunnels = Tunnels::new();
    let layer = layer.tunnels(tunnels.clone());
    let app = serve(axum::Router::new().layer(layer)).await.detach();
    assert_eq!(tunnels.open(), 0);
    within("nothing to wait for", tunnels.ended()).await;

    // Closed by its peers: counted while open, waited for until then.
    let (mut ws, _) = open_ws(app, None).await;
    assert_eq!(tunnels.open(), 1);
    let waiting = tunnels.clone();
    let mut ended = tokio::spawn(async move { waiting.ended().await });
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        within("echo", ws_next(&mut ws)).await,
        Message::text("still here")
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut ended)
            .await
            .is_err(),
        "ended() resolved with a tunnel open"
    );
    ws.close(None).await.unwrap();
    let _ = within("the target's close", ws.next()).await;
    drop(ws);
    within("ended() once the peers closed", ended)
        .await
        .unwrap();
    assert_eq!(tunnels.open(), 0);
    within("target sees the close", target.ws_closed.recv())
        .await
        .expect("close signal");

    // Closed by the layer's owner: both connections end at once.
    let (mut ws, _) = open_ws(app, None).await;
    assert_eq!(tunnels.open(), 1);
    assert!(!tunnels.is_closed());
    assert_eq!(tunnels.close(), 1);
    assert!(tunnels.is_closed());
    within("ended() after close", tunnels.ended()).await;
    match within("the client's end", ws.next()).await {
        // No close frame: the proxy does not speak the tunnelled protocol.
        None | Some(Err(_)) => {}
        Some(Ok(frame)) => panic!("a frame after the tunnel was closed: {frame:?}"),
    }
    within("target sees its peer go", target.ws_closed.recv())
        .await
        .expect("close signal");

    // Once closed, an upgrade is refused without asking the target; plain requests pass.
    let asked = target.count();
    let stream = TcpStream::connect(app).await.unwrap();
    let req = format!("ws://{app}/proxy/ws")
        .into_client_request()
        .unwrap();
    match within("a late handshake", client_async(req, stream)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 503);
            assert_eq!(
                res.body().as_deref(),
                Some(&b"The proxy is shutting down."[..])
            );
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    assert_eq!(target.count(), asked, "the target was asked");
    assert_eq!(get(&format!("http://{app}/proxy/plain")).await.status, 200);
    assert_eq!(tunnels.open(), 0);
}
