//! E. Methods, Expect, Max-Forwards, Via and loops, Upgrade: RFC 9110 §10.1.1 (`Expect`),
//! §7.6.2 (`Max-Forwards`), §7.6.3 (`Via`), §7.8 (`Upgrade`), §9.3.8 (`TRACE`);
//! CVE-2018-1002105 (Kubernetes: a tunnel left open after a refused upgrade).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tower::util::MapRequestLayer;

use crate::support::*;

#[tokio::test]
async fn e4_via_is_appended_to_the_clients() {
    let (up, app) = setup().await;
    let r = app
        .get("/proxy/echo", "Via: 1.0 fred\r\nVia: 1.1 p.example.net\r\n")
        .await;
    assert_eq!(r.status, 200);
    let via = up.only().one("via");
    let (before, ours) = via.rsplit_once(", ").expect("our entry appended");
    assert_eq!(before, "1.0 fred, 1.1 p.example.net");
    assert!(ours.starts_with("1.1 tip-"), "{via}");
    // The response carries our entry too.
    assert!(r.one("via").starts_with("1.1 tip-"), "{}", r.head_str());
}

#[tokio::test]
async fn e4_target_pointing_at_own_proxy_is_508_after_one_hop() {
    let handle = ProxyHandle::new();
    let proxy = layer().handle(handle.clone());
    let seen = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&seen);
    let router = inner_router().layer(proxy).layer(MapRequestLayer::new(
        move |req: axum::extract::Request| {
            count.fetch_add(1, Ordering::SeqCst);
            req
        },
    ));
    let app = serve_router(router, handle, ServeOptions::default()).await;
    app.handle
        .set_target(Some(&format!("http://{}/proxy", app.addr)))
        .unwrap();
    for round in 1..=5 {
        let r = app.get("/proxy/x", "").await;
        assert_eq!(r.status, 508, "{}", r.head_str());
        assert_eq!(r.text(), "The proxy target points back at this proxy.");
        // One request from the client, one looped back: never more.
        assert_eq!(seen.load(Ordering::SeqCst), 2 * round);
    }
    // Five client connections plus the pooled connection(s) of the looping hop.
    assert!(app.accepted.load(Ordering::SeqCst) <= 10);
}

#[tokio::test]
async fn e5_h2c_upgrade_is_never_tunnelled() {
    let (up, app) = setup().await;
    let req = format!(
        "GET /proxy/ HTTP/1.1\r\nHost: {}\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
        app.addr
    );
    let (r, mut c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.head_str());
    let got = up.only();
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(!got.has(gone), "{gone} forwarded:\n{}", got.head_str());
    }
    // The client connection still speaks HTTP/1.1 to the app.
    c.send(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    let r = c.response(false).await.expect("second response");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

#[tokio::test]
async fn e5_unsolicited_101_is_502_and_never_tunnelled() {
    let up = Upstream::replying(|_| {
        Action::stall(
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"[..],
        )
    })
    .await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let (r, mut c) = app
        .exchange(format!("GET /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    assert_eq!(r.status, 502);
    // The upstream connection that switched is closed by the proxy, not kept or piped.
    up.wait("upstream connection closed", |v| v.eofs >= 1).await;
    // The client connection is still an HTTP/1.1 connection to the app.
    c.send(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    let r = c.response(false).await.expect("second response");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

#[tokio::test]
async fn e5_h2c_request_answered_101_is_502() {
    let up = Upstream::replying(|_| {
        Action::stall(
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"[..],
        )
    })
    .await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let req = format!(
        "GET /proxy/ HTTP/1.1\r\nHost: {}\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 502);
    up.wait("upstream connection closed", |v| v.eofs >= 1).await;
}

#[tokio::test]
async fn e1_expect_100_continue_is_handled_at_this_hop() {
    let (up, app) = setup().await;
    let mut c = app.raw().await;
    c.send(
        format!(
            "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            app.addr
        )
        .as_bytes(),
    )
    .await;
    // The client waits for 100 before sending the body: it must come.
    let interim = c.response(false).await.expect("100 Continue");
    assert_eq!(interim.status, 100);
    c.send(b"hello").await;
    let r = c.response(false).await.expect("final response");
    assert_eq!(r.status, 200);
    let got = up.only();
    got.assert_framing();
    assert!(!got.has("expect"), "{}", got.head_str());
    assert_eq!(got.body.data, b"hello");
}

#[tokio::test]
async fn e1_expect_100_continue_refused_gets_a_final_status_without_100() {
    let app = start_app(layer()).await; // disabled
    let mut c = app.raw().await;
    c.send(
        format!(
            "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
            app.addr
        )
        .as_bytes(),
    )
    .await;
    let r = c.response(false).await.expect("a response");
    assert_eq!(r.status, 501);
    assert_eq!(r.text(), "The proxy is disabled.");
}

#[tokio::test]
async fn e2_options_with_max_forwards_zero_is_answered_by_the_proxy() {
    let (up, app) = setup().await;
    let (r, _c) = app
        .exchange(
            format!(
                "OPTIONS /proxy/x HTTP/1.1\r\nHost: {}\r\nMax-Forwards: 0\r\n\r\n",
                app.addr
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.one("allow"),
        "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"
    );
    up.assert_untouched();
}

#[tokio::test]
async fn e2_max_forwards_is_decremented_on_options_only() {
    let (up, app) = setup().await;
    for (method, sent, want) in [
        ("OPTIONS", "3", "2"),
        ("OPTIONS", "1", "0"),
        ("OPTIONS", "99999999999999999999", "4294967294"),
        ("GET", "3", "3"),
        ("POST", "0", "0"),
    ] {
        let req = format!(
            "{method} /proxy/x HTTP/1.1\r\nHost: {}\r\nMax-Forwards: {sent}\r\nContent-Length: 0\r\n\r\n",
            app.addr
        );
        let (r, _c) = app.exchange(req.as_bytes()).await;
        assert_eq!(r.status, 200, "{method} {sent}");
        let got = up.requests().pop().unwrap();
        assert_eq!(got.method, method);
        assert_eq!(got.one("max-forwards"), want, "{method} {sent}");
    }
    // Without the header, none is added.
    let (r, _c) = app
        .exchange(format!("OPTIONS /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    assert_eq!(r.status, 200);
    assert!(!up.requests().pop().unwrap().has("max-forwards"));
}

#[tokio::test]
async fn e2_invalid_max_forwards_on_options_is_400() {
    let (up, app) = setup().await;
    for v in ["-1", "x", "1, 2", ""] {
        let req = format!(
            "OPTIONS /proxy/x HTTP/1.1\r\nHost: {}\r\nMax-Forwards: {v}\r\n\r\n",
            app.addr
        );
        let (r, _c) = app.exchange(req.as_bytes()).await;
        assert_eq!(r.status, 400, "{v:?}");
    }
    up.assert_untouched();
}

/// `TRACE` (and IIS's `TRACK`, and `CONNECT`) asked for through a method-override header,
/// which some targets honour, is refused as the method itself; other overrides pass.
#[tokio::test]
async fn e3_trace_through_a_method_override_is_405_and_never_forwarded() {
    let (up, app) = setup().await;
    for header in [
        "X-HTTP-Method-Override: TRACE",
        "X-HTTP-Method: track",
        "X-Method-Override: CONNECT",
        "X_HTTP_Method_Override: trace",
    ] {
        let r = app.get("/proxy/x", &format!("{header}\r\n")).await;
        assert_eq!(r.status, 405, "{header}");
        assert!(!r.text().contains("Bearer"));
    }
    up.assert_untouched();
    let r = app
        .get("/proxy/echo", "X-HTTP-Method-Override: PATCH\r\n")
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(up.only().one("x-http-method-override"), "PATCH");
}

#[tokio::test]
async fn e3_trace_is_405_and_never_forwarded() {
    let (up, app) = setup().await;
    let (r, _c) = app
        .exchange(
            format!(
                "TRACE /proxy/x HTTP/1.1\r\nHost: {}\r\nMax-Forwards: 5\r\n\r\n",
                app.addr
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.one("allow"),
        "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"
    );
    assert!(!r.text().contains("Bearer"));
    up.assert_untouched();
}

#[tokio::test]
async fn e6_websocket_refused_by_the_target_is_a_normal_response() {
    let up = Upstream::replying(|req| {
        if req.has("upgrade") {
            Action::keep(&b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope"[..])
        } else {
            Action::keep(OK)
        }
    })
    .await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let a = app.addr;
    let basic = crate::h_credentials::base64_basic(ALICE, ALICE_PW);
    let mut c = app.raw().await;
    c.send(format!(
        "GET /proxy/ws HTTP/1.1\r\nHost: {a}\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 1337\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Basic {basic}\r\n\r\n"
    ).as_bytes()).await;
    let r = c.response(false).await.expect("426");
    assert_eq!((r.status, r.text().as_str()), (426, "nope"));
    // Not piped: the next request on this connection is handled by the app again.
    c.send(format!("GET /proxy/other HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes())
        .await;
    let r = c.response(false).await.expect("second response");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    // The upgrade request carried our token, not the client's credentials.
    assert_eq!(decode_rs512(&reqs[0].bearer())["sub"], ALICE);
    assert!(!reqs[0].head_str().contains(&basic));
    assert_eq!(reqs[0].one("upgrade"), "websocket");
    assert_eq!(reqs[1].target, "/other");
    assert!(!reqs[1].has("upgrade"));
}

#[tokio::test]
async fn e6_101_with_another_protocol_is_502() {
    let up = Upstream::replying(|_| {
        Action::stall(
            &b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"[..],
        )
    })
    .await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let (r, _c) = app
        .exchange(format!(
            "GET /proxy/ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            app.addr
        ).as_bytes())
        .await;
    assert_eq!(r.status, 502);
    up.wait("upstream connection closed", |v| v.eofs >= 1).await;
}
