//! The demo's server, run as its binary (`target/<profile>/examples/demo`): HTTP/1.1 and
//! h2c, its client timeouts (`--header-read-timeout-ms`, `--idle-timeout-ms`), its graceful
//! shutdown on SIGTERM (`--shutdown-timeout-ms`, WebSocket tunnels included),
//! `--forwarded-for`, the request body limit (`--body-limit-bytes`) and the request id.
//!
//! No test asserts on a duration: every wait polls for a condition within a generous bound
//! (`common::within`), and the timeouts under test are either far beyond every wait of the
//! test or short ones whose only effect checked is that they do fire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::HashSet, net::SocketAddr, path::PathBuf};

use common::{
    Example, bearer, dribbled_headers, echo_target, fixture_keys_dir, get, get_on, h2_client,
    remove_dir, within,
};
use serde_json::json;

/// The demo, unsecured (every caller holds `ROLE_ADMIN`), with the fixture's keys, proxying
/// to `target`, with `extra` options; and its key directory (to remove).
async fn start_demo(target: &str, extra: &[&str]) -> (Example, PathBuf) {
    let keys = fixture_keys_dir("demo-server");
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--keys",
        keys.to_str().unwrap(),
        "--unsecured",
        "--proxy-url",
        target,
    ];
    args.extend_from_slice(extra);
    (Example::start("demo", &args).await, keys)
}

/// The demo after its shutdown: exited with status 0, having cut `cut` connections when its
/// grace period ended (from its warning; none without one).
async fn stopped(demo: Example, keys: &std::path::Path, cut: usize) {
    let (status, stderr) = demo.exited().await;
    remove_dir(keys);
    assert!(status.success(), "{status:?}\n{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");
    let reported = stderr.lines().find_map(|line| {
        let (_, rest) = line.split_once("dropped ")?;
        rest.split_whitespace().next()?.parse().ok()
    });
    assert_eq!(reported.unwrap_or(0), cut, "{stderr}");
}

/// The first part of every [`streaming_target`] response, sent at once.
const FIRST: &str = "the first part, ";
/// The rest, sent once the test releases it.
const REST: &str = "and the rest";

/// A target whose every response is `200` with a body of unknown length (chunked over
/// HTTP/1.1): [`FIRST`] at once, then [`REST`] once the sender is set to `true` (never if it
/// is not). Also returns how many requests it received.
async fn streaming_target() -> (
    common::Server,
    tokio::sync::watch::Sender<bool>,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use futures_util::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::conn::auto,
    };
    let (release, released) = tokio::sync::watch::channel(false);
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&count);
    let server = common::Server::spawn(|listener| async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (released, seen) = (released.clone(), std::sync::Arc::clone(&seen));
            let service = hyper::service::service_fn(move |_req| {
                seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut released = released.clone();
                let first = futures_util::stream::once(async {
                    Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from(FIRST)))
                });
                let rest = futures_util::stream::once(async move {
                    let _ = released.wait_for(|released| *released).await;
                    Ok(Frame::data(bytes::Bytes::from(REST)))
                });
                let body = StreamBody::new(first.chain(rest));
                async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
    .await;
    (server, release, count)
}

/// Sends `GET /proxy/stream` on a client connection and waits for the [`FIRST`] part of
/// the response: the request is then in flight, from the client to the target.
async fn first_part<B>(
    send: impl Future<Output = hyper::Result<http::Response<B>>>,
) -> http::Response<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    let mut res = within("the streaming response's head", send).await.unwrap();
    assert_eq!(res.status(), 200);
    let frame = within("the first part", res.body_mut().frame())
        .await
        .expect("a first frame")
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), FIRST);
    res
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_forwards_and_serves_its_routes_over_http1_and_h2c() {
    let target = echo_target().await;
    let (demo, keys) = start_demo(&target.url(), &[]).await;
    let addr = demo.addr;

    for i in 0..4 {
        let reply = get(&format!("http://{addr}/proxy/n/{i}?q={i}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let seen = target.seen();
    let paths: Vec<String> = seen.iter().map(|s| s.uri.to_string()).collect();
    let want: Vec<String> = (0..4).map(|i| format!("/n/{i}?q={i}")).collect();
    assert_eq!(paths, want);
    for s in &seen {
        // Verified with jsonwebtoken and the fixture's public key, RS512 pinned.
        let claims = s.claims();
        assert_eq!(claims["sub"], "anonymousUser");
        assert_eq!(
            claims["authorities"],
            json!(["ROLE_ADMIN", "ROLE_ANONYMOUS", "ROLE_USER"])
        );
    }
    // One identity, one token from the cache.
    let tokens: HashSet<String> = seen.iter().map(|s| bearer(&s.headers)).collect();
    assert_eq!(tokens.len(), 1);

    // The app's own routes pass through the proxy layer, over HTTP/1.1 and h2c alike.
    let jwks = get(&format!("http://{addr}/.well-known/jwks.json")).await;
    assert_eq!(jwks.status, 200, "{}", jwks.text());
    assert!(
        jwks.json()["keys"]
            .as_array()
            .is_some_and(|k| !k.is_empty())
    );
    let whoami = get(&format!("http://{addr}/api/whoami")).await;
    assert_eq!(whoami.json()["name"], "anonymousUser");
    let h2 = get_on(&h2_client(), &format!("http://{addr}/proxy/h2")).await;
    assert_eq!(h2.status, 200, "{}", h2.text());
    assert_eq!(h2.version, http::Version::HTTP_2);
    let h2_whoami = get_on(&h2_client(), &format!("http://{addr}/api/whoami")).await;
    assert_eq!(h2_whoami.json()["name"], "anonymousUser");
    assert_eq!(target.count(), 5);

    // `PUT /admin/proxy` with a null URL disables the proxy.
    let disable = http::Request::put(format!("http://{addr}/admin/proxy"))
        .header("content-type", "application/json")
        .body(common::full(json!({ "url": null }).to_string()))
        .unwrap();
    let reply = common::send_on(&common::client(), disable).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "url": null }));
    let reply = get(&format!("http://{addr}/proxy/n")).await;
    assert_eq!(reply.status, 501);
    assert_eq!(reply.text(), "The proxy is disabled.");
    assert_eq!(target.count(), 5);
    drop(demo);
    remove_dir(&keys);
}

/// Slowloris: a client that sends its headers a byte at a time is disconnected once
/// `--header-read-timeout-ms` has passed, while ordinary requests are served.
#[tokio::test]
async fn a_client_that_dribbles_its_headers_is_disconnected() {
    let target = echo_target().await;
    // Long enough for an ordinary request's headers on a loaded machine; the dribble goes on
    // until the server gives up.
    let (demo, keys) = start_demo(&target.url(), &["--header-read-timeout-ms", "2000"]).await;
    let addr = demo.addr;

    let got = dribbled_headers(addr, "/proxy/slow").await;
    // hyper answers 408 or just closes.
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(
        target.count(),
        0,
        "the slow request never reached the target"
    );

    let reply = get(&format!("http://{addr}/proxy/ok")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(target.count(), 1);
    remove_dir(&keys);
}

/// A connection that never sends a whole request is closed once
/// `--header-read-timeout-ms` has passed: silent from the start, or stopped in the middle
/// of the HTTP/2 preface (where hyper's own header timer does not run yet).
#[tokio::test]
async fn a_connection_without_a_request_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = echo_target().await;
    let (demo, keys) = start_demo(&target.url(), &["--header-read-timeout-ms", "500"]).await;
    let addr = demo.addr;
    for sent in [&b""[..], b"PRI * HTTP/2.0\r\n"] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let mut buf = [0u8; 64];
        let read = within("the server closes the connection", stream.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "after {sent:?}: {read:?}, {:?}",
            String::from_utf8_lossy(&buf)
        );
    }
    assert_eq!(target.count(), 0);
    remove_dir(&keys);
}

/// hyper has no idle timeout for HTTP/2 connections: the demo shuts down a connection that
/// has had no request in flight for `--idle-timeout-ms` (h2c: `GOAWAY`, then closed;
/// HTTP/1.1 keep-alive: closed), but never one whose response is still on its way.
#[tokio::test]
async fn an_idle_connection_is_closed_but_not_a_slow_request() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let target = echo_target().await;
    // HTTP/1.1's own header timer far away: only the idle timeout can close.
    let (demo, keys) = start_demo(
        &target.url(),
        &[
            "--idle-timeout-ms",
            "300",
            "--header-read-timeout-ms",
            "600000",
            // HTTP/1.1: the idle timeout closes a released connection too.
            "--release-idle-buffers-ms",
            "0",
        ],
    )
    .await;
    let addr = demo.addr;

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    // The first request's response starts after three idle timeouts: the connection stays
    // open for it (its body is read whole). No wait between two requests, so nothing
    // depends on how fast the test sends.
    for delay in ["900"] {
        let req = http::Request::get(format!("http://{addr}/proxy/idle"))
            .header("x-echo-delay-ms", delay)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = within("the h2c response", send.send_request(req))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "after {delay} ms");
        within("the h2c body", res.into_body().collect())
            .await
            .unwrap();
    }
    // Then nothing: the server ends the connection (hyper's client ends it without an
    // error once the server's GOAWAY has come and no request is open).
    within("the server closes the idle h2c connection", connection)
        .await
        .unwrap()
        .unwrap();

    let mut wire = common::Raw::connect(addr).await;
    for delay in ["900"] {
        let request =
            format!("GET /proxy/idle HTTP/1.1\r\nhost: demo\r\nx-echo-delay-ms: {delay}\r\n\r\n");
        wire.send(request.as_bytes()).await;
        let res = wire.response(false).await.expect("a response");
        assert_eq!(res.status, 200, "after {delay} ms");
    }
    wire.assert_closed().await;
    assert_eq!(target.count(), 2);
    remove_dir(&keys);
}

/// A keep-alive HTTP/1.1 connection with no request in flight gives back the buffers hyper
/// holds for it (`--release-idle-buffers-ms`; 0: after every request) and serves on as
/// before: one request after another, two pipelined requests with a third one's head cut
/// in two, a request with a body, a WebSocket upgrade; a request with `Connection: close`
/// still ends it.
#[tokio::test]
async fn a_connection_serves_on_after_releasing_its_buffers() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let target = echo_target().await;
    let (demo, keys) = start_demo(&target.url(), &["--release-idle-buffers-ms", "0"]).await;
    let addr = demo.addr;
    let get = |path: &str| format!("GET /proxy/{path} HTTP/1.1\r\nhost: demo\r\n\r\n");
    let path_of = |res: &common::Resp| -> String {
        let seen: serde_json::Value = serde_json::from_slice(&res.body.data).unwrap();
        seen["uri"].as_str().unwrap().to_owned()
    };

    let mut wire = common::Raw::connect(addr).await;
    for path in ["one", "two"] {
        wire.send(get(path).as_bytes()).await;
        let res = wire.response(false).await.expect("a response");
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(path_of(&res), format!("/{path}"));
    }
    // Pipelined, and the head of the third cut in two.
    let pipelined = format!(
        "{}{}GET /proxy/five HTTP/1.1\r\nho",
        get("three"),
        get("four")
    );
    wire.send(pipelined.as_bytes()).await;
    for path in ["three", "four"] {
        let res = wire.response(false).await.expect("a response");
        assert_eq!(path_of(&res), format!("/{path}"));
    }
    wire.send(b"st: demo\r\n\r\n").await;
    let res = wire.response(false).await.expect("a response");
    assert_eq!(path_of(&res), "/five");
    // A body (echoed), then a request without one.
    wire.send(
        b"POST /proxy/six HTTP/1.1\r\nhost: demo\r\nx-echo: body\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    let res = wire.response(false).await.expect("a response");
    assert_eq!(res.text(), "hello");
    wire.send(get("seven").as_bytes()).await;
    let res = wire.response(false).await.expect("a response");
    assert_eq!(path_of(&res), "/seven");
    // `Connection: close`: the last response, then the end.
    wire.send(b"GET /proxy/eight HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n")
        .await;
    let res = wire.response(false).await.expect("a response");
    assert_eq!(path_of(&res), "/eight");
    wire.assert_closed().await;

    // A WebSocket on a connection released after its first request.
    let mut wire = common::Raw::connect(addr).await;
    wire.send(get("before-ws").as_bytes()).await;
    let res = wire.response(false).await.expect("a response");
    assert_eq!(res.status, 200);
    assert!(wire.wire.buf.is_empty());
    let req = format!("ws://{addr}/proxy/ws")
        .into_client_request()
        .unwrap();
    let (mut ws, res) = within(
        "ws handshake",
        tokio_tungstenite::client_async(req, wire.wire.stream),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 101);
    {
        use futures_util::StreamExt;
        // The echo target's opening ping, and its report of tungstenite's pong.
        for _ in 0..2 {
            within("opening frames", ws.next()).await.unwrap().unwrap();
        }
    }
    echoes(&mut ws, "over a released connection").await;
    assert_eq!(target.count(), 10);
    remove_dir(&keys);
}

/// Slowloris on a keep-alive connection: after a first request, the next request's headers
/// sent a byte every 100 ms end the connection once `--header-read-timeout-ms` has passed,
/// whether the connection's buffers were released meanwhile (0) or not (a delay far beyond
/// the test); nothing of them reaches the target.
#[tokio::test]
async fn a_keep_alive_client_that_dribbles_its_next_headers_is_disconnected() {
    use tokio::io::AsyncWriteExt;
    let target = echo_target().await;
    for release in ["0", "600000"] {
        let (demo, keys) = start_demo(
            &target.url(),
            &[
                "--header-read-timeout-ms",
                "1000",
                "--release-idle-buffers-ms",
                release,
            ],
        )
        .await;
        let mut wire = common::Raw::connect(demo.addr).await;
        wire.send(b"GET /proxy/first HTTP/1.1\r\nhost: demo\r\n\r\n")
            .await;
        let res = wire.response(false).await.expect("a response");
        assert_eq!(res.status, 200, "{}", res.text());
        let served = target.count();
        let (mut rd, mut wr) = wire.split();
        wr.write_all(b"GET /proxy/slow HTTP/1.1\r\nhost: demo\r\nx-slow: ")
            .await
            .unwrap();
        let dribble = tokio::spawn(async move {
            for _ in 0..600 {
                if wr.write_all(b"a").await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        // Closed without an answer (each read is bounded: a connection left open fails).
        let after = rd.response(false).await;
        dribble.abort();
        assert!(
            after.is_none(),
            "release {release}: {:?}",
            after.map(|r| r.text())
        );
        assert_eq!(
            target.count(),
            served,
            "the slow request never reached the target"
        );
        remove_dir(&keys);
    }
}

/// An idle HTTP/1.1 connection waits for `--idle-timeout-ms`, as an h2c one does: the
/// header-read timeout covers a request's headers, not the wait for them (hyper's own
/// header-read timer, which hyper starts on a keep-alive connection as soon as it is idle,
/// is not used). Released at once (0), after a delay (100 ms, the default) or not within
/// the test (a delay far beyond it), a connection idle for twice the header-read timeout
/// still serves its next request.
#[tokio::test]
async fn a_released_connection_waits_for_the_idle_timeout_not_the_header_timer() {
    let target = echo_target().await;
    for (header_read, release) in [("1000", "0"), ("1000", "100"), ("1000", "600000")] {
        let (demo, keys) = start_demo(
            &target.url(),
            &[
                "--header-read-timeout-ms",
                header_read,
                "--release-idle-buffers-ms",
                release,
                "--idle-timeout-ms",
                "600000",
            ],
        )
        .await;
        let mut wire = common::Raw::connect(demo.addr).await;
        let request = b"GET /proxy/idle HTTP/1.1\r\nhost: demo\r\n\r\n";
        wire.send(request).await;
        let res = wire.response(false).await.expect("a response");
        assert_eq!(res.status, 200, "{}", res.text());
        // Idle for twice the header-read timeout: hyper's own connection would be closed.
        let idle = 2 * header_read.parse::<u64>().unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(idle)).await;
        wire.send(request).await;
        let res = wire.response(false).await;
        let res = res.unwrap_or_else(|| panic!("{header_read} {release}: closed while idle"));
        assert_eq!(res.status, 200, "{}", res.text());
        remove_dir(&keys);
    }
}

/// SIGTERM's graceful shutdown: the
/// listening socket closes (new connections are refused) and an idle keep-alive connection
/// is closed at once, while a streaming response on an HTTP/1.1 connection and another on
/// an h2c one are served to their end; then both connections close (h2c: after `GOAWAY`,
/// the client ends without an error) and the demo exits with status 0, nothing cut. The grace period is
/// far beyond every wait of the test: nothing it does can pass for the graceful shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_serves_the_requests_in_flight_and_refuses_new_connections() {
    use common::Head as _;
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (target, release, received) = streaming_target().await;
    // Only the shutdown can close a connection within the test's bounds.
    let far = "600000";
    let (served, keys) = start_demo(
        &target.url(""),
        &[
            "--shutdown-timeout-ms",
            far,
            "--idle-timeout-ms",
            far,
            "--header-read-timeout-ms",
            far,
            // The idle connection without hyper's: released at once.
            "--release-idle-buffers-ms",
            "0",
        ],
    )
    .await;
    let addr = served.addr;
    // Origin form and `Host` over HTTP/1.1 (hyper's connection sends the URI as given),
    // absolute over h2c (`:authority`).
    let request = |uri: String| {
        http::Request::get(uri)
            .header("host", addr.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .unwrap()
    };

    // An idle HTTP/1.1 keep-alive connection.
    let mut idle = common::Raw::connect(addr).await;
    idle.send(b"GET /api/whoami HTTP/1.1\r\nhost: demo\r\n\r\n")
        .await;
    let res = idle.response(false).await.expect("a response");
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(!res.has("connection"), "{}", res.head_str());

    // A streaming response in flight over HTTP/1.1, and another over h2c.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h1, h1_connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let h1_connection = tokio::spawn(h1_connection);
    let h1_res = first_part(h1.send_request(request("/proxy/stream".into()))).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h2, h2_connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let h2_connection = tokio::spawn(h2_connection);
    let h2_res = first_part(h2.send_request(request(format!("http://{addr}/proxy/stream")))).await;
    assert_eq!(received.load(std::sync::atomic::Ordering::Relaxed), 2);

    served.terminate();

    // While both responses are held: the idle connection is closed...
    idle.assert_closed().await;
    // ... and new connections are refused once the demo has closed its socket. One
    // made before it saw the shutdown was accepted (or queued in its socket's
    // backlog): it is closed (or reset) without a byte. Nothing is sent on it, so no
    // request can slip in as the shutdown begins.
    refused(addr).await;
    assert!(!h1_connection.is_finished() && !h2_connection.is_finished());

    // The target finishes: both responses are served whole, then their connections close.
    release.send(true).unwrap();
    for (version, body) in [
        (
            "HTTP/1.1",
            h1_res.into_body().collect().await.map(|b| b.to_bytes()),
        ),
        (
            "h2c",
            h2_res.into_body().collect().await.map(|b| b.to_bytes()),
        ),
    ] {
        // The rest of it, after the first part `first_part` read.
        assert_eq!(body.unwrap(), REST, "{version}");
    }
    within("the server closes the HTTP/1.1 connection", h1_connection)
        .await
        .unwrap()
        .unwrap();
    // hyper's h2 client ends without an error only once the server's GOAWAY has come.
    within("the server closes the h2c connection", h2_connection)
        .await
        .unwrap()
        .unwrap();
    drop((h1, h2));

    stopped(served, &keys, 0).await;
    assert_eq!(received.load(std::sync::atomic::Ordering::Relaxed), 2);
}

/// A response still streaming when the grace period (`--shutdown-timeout-ms`) ends is cut
/// (the client gets an incomplete body) and the demo exits, counting it.
#[tokio::test]
async fn the_shutdown_grace_period_cuts_a_response_that_never_ends() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    // Never released.
    let (target, _release, _) = streaming_target().await;
    let (served, keys) = start_demo(&target.url(""), &["--shutdown-timeout-ms", "300"]).await;
    let addr = served.addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h1, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let req = http::Request::get("/proxy/stream")
        .header("host", addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = first_part(h1.send_request(req)).await;

    served.terminate();

    let rest = within("the response is cut", res.into_body().collect()).await;
    assert!(rest.is_err(), "an incomplete chunked body: {rest:?}");
    let _ = within("the connection ends", connection).await.unwrap();
    stopped(served, &keys, 1).await;
}

/// Waits until new connections to `addr` are refused: the demo has closed its listening
/// socket. One made before it saw the shutdown was accepted (or queued in its socket's
/// backlog): it is closed (or reset) without a byte. Nothing is sent on it, so no request
/// can slip in as the shutdown begins.
async fn refused(addr: SocketAddr) {
    use tokio::io::AsyncReadExt;
    within("new connections are refused", async {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
                // A handshake under way as the socket closed is reset instead.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("connecting after the shutdown: {e}"),
                Ok(mut late) => {
                    let mut buf = [0u8; 64];
                    let read = late.read(&mut buf).await;
                    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}: {buf:?}");
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Sends `text` on `ws` and reads it back from the echo target.
async fn echoes(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, text: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text)).await.unwrap();
    let echo = within("echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(echo, Message::text(text));
}

/// A WebSocket is no HTTP connection of the server's once upgraded, but the shutdown still
/// waits for it: through the grace period its frames keep flowing and the demo keeps running;
/// closed by its peers, the demo exits with nothing cut. One still open when the grace
/// period ends is closed (the client reads the end of its connection) and counted as cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_waits_for_websockets_then_closes_them() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let target = echo_target().await;
    let open_ws = |addr: SocketAddr| async move {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("ws://{addr}/proxy/ws")
            .into_client_request()
            .unwrap();
        let (mut ws, res) = within("ws handshake", tokio_tungstenite::client_async(req, stream))
            .await
            .unwrap();
        assert_eq!(res.status(), 101);
        // The echo target's opening ping, and its report of tungstenite's pong.
        for _ in 0..2 {
            within("opening frames", ws.next()).await.unwrap().unwrap();
        }
        ws
    };

    // Closed by its peers within the grace period: nothing cut.
    let far = "600000";
    let (mut served, keys) = start_demo(&target.url(), &["--shutdown-timeout-ms", far]).await;
    let mut ws = open_ws(served.addr).await;
    served.terminate();
    // Once the listener is closed the shutdown is under way, and the tunnel holds it.
    refused(served.addr).await;
    echoes(&mut ws, "after the shutdown began").await;
    assert!(served.is_running(), "the demo exited with a WebSocket open");
    ws.close(None).await.unwrap();
    let _ = within("the target's close", ws.next()).await;
    drop(ws);
    stopped(served, &keys, 0).await;

    // Still open when the grace period ends: closed, and counted.
    let (served, keys) = start_demo(&target.url(), &["--shutdown-timeout-ms", "300"]).await;
    let mut ws = open_ws(served.addr).await;
    echoes(&mut ws, "before the shutdown").await;
    served.terminate();
    match within("the tunnel is closed", ws.next()).await {
        // No close frame: the proxy does not speak the tunnelled protocol.
        None | Some(Err(_)) => {}
        Some(Ok(frame)) => panic!("a frame after the grace period: {frame:?}"),
    }
    stopped(served, &keys, 1).await;
}

/// `--forwarded-for`: the target gets `X-Forwarded-For` with the TCP peer's address
/// (`serve` puts it into each request), whatever the client claims, over HTTP/1.1 and h2c;
/// without it, none.
#[tokio::test]
async fn forwarded_for_is_the_peer_address_never_the_clients() {
    let target = echo_target().await;
    for (extra, want) in [
        (&["--forwarded-for"][..], Some("127.0.0.1")),
        (&[][..], None),
    ] {
        let (demo, keys) = start_demo(&target.url(), extra).await;
        let addr = demo.addr;
        let url = format!("http://{addr}/proxy/xff");
        let spoofed = || {
            http::Request::get(&url)
                .header("x-forwarded-for", "6.6.6.6")
                .body(common::empty())
                .unwrap()
        };
        for client in [common::client(), h2_client()] {
            let reply = common::send_on(&client, spoofed()).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(
                target.last().header("x-forwarded-for").as_deref(),
                want,
                "{extra:?} over {:?}",
                reply.version
            );
        }
        remove_dir(&keys);
    }
    assert_eq!(target.count(), 4);
}

#[tokio::test]
async fn the_demo_limits_bodies_and_forwards_its_request_id() {
    use common::{full, send};
    let target = echo_target().await;
    let (demo, keys) = start_demo(&target.url(), &["--body-limit-bytes", "16"]).await;

    // Over the limit: 413, nothing forwarded; at it, forwarded.
    let post = |len: usize| {
        http::Request::post(demo.url("/proxy/upload"))
            .body(full(vec![b'x'; len]))
            .unwrap()
    };
    let refused = within("too big", send(post(17))).await;
    assert_eq!(refused.status, 413);
    assert_eq!(target.count(), 0);
    let fits = within("fits", send(post(16))).await;
    assert_eq!(fits.status, 200);
    assert_eq!(target.count(), 1);

    // The request id the demo set is the one the target received and the client got back.
    let id = fits.header("x-request-id").expect("a request id");
    assert_eq!(target.last().header("x-request-id"), Some(id));

    demo.terminate();
    stopped(demo, &keys, 0).await;
}
