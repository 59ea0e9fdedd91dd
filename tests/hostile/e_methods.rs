//! E. Methods, Expect, Max-Forwards, Via and loops, Upgrade.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tower::util::MapRequestLayer;

use crate::support::*;

async fn setup() -> (Upstream, App) {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "/api/v1");
    (up, app)
}

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
    let proxy = layer();
    let handle = proxy.handle();
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
