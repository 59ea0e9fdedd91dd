//! B. Hop-by-hop and control headers on the forwarded request.

use crate::support::*;

async fn setup() -> (Upstream, App) {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "/api/v1");
    (up, app)
}

#[tokio::test]
async fn b1_standard_hop_by_hop_headers_are_stripped() {
    let (up, app) = setup().await;
    let r = app
        .get(
            "/proxy/echo",
            "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
             TE: gzip\r\nProxy-Authorization: Basic cHJveHk6cHc=\r\nHTTP2-Settings: AAMAAABk\r\n\
             Upgrade: foo/2\r\nX-Keep: 1\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    for gone in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "proxy-authorization",
        "http2-settings",
        "upgrade",
    ] {
        assert!(!got.has(gone), "{gone} forwarded:\n{}", got.head_str());
    }
    assert_eq!(got.one("x-keep"), "1");
}

#[tokio::test]
async fn b2_connection_nominated_headers_on_every_line_are_stripped() {
    let (up, app) = setup().await;
    let r = app
        .get(
            "/proxy/echo",
            "Connection: close, X-Hop1\r\nConnection: ,  x-HOP2 ,\r\nconnection: X-Hop3\r\n\
             X-Hop1: a\r\nX-Hop2: b\r\nX-Hop3: c\r\nX-End: d\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    for gone in ["x-hop1", "x-hop2", "x-hop3", "connection"] {
        assert!(!got.has(gone), "{gone} forwarded:\n{}", got.head_str());
    }
    assert_eq!(got.one("x-end"), "d");
}

#[tokio::test]
async fn b2_obs_text_in_connection_does_not_panic() {
    let (up, app) = setup().await;
    let mut req = format!(
        "GET /proxy/echo HTTP/1.1\r\nHost: {}\r\nConnection: ",
        app.addr
    )
    .into_bytes();
    req.extend_from_slice(b"\xff\xfe, X-Drop\r\nX-Drop: 1\r\nX-End: 2\r\n\r\n");
    let (r, _c) = app.exchange(&req).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert!(!got.has("x-drop"));
    assert!(!got.has("connection"));
    assert_eq!(got.one("x-end"), "2");
}

#[tokio::test]
async fn b3_connection_cannot_strip_the_headers_the_proxy_adds() {
    let (up, app) = setup().await;
    let r = app
        .get(
            "/proxy/echo",
            "Connection: Authorization, X-Forwarded-Host, X-Forwarded-Proto, Via, Host\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    let claims = decode_jwt(&got.bearer());
    assert_eq!(claims["sub"], "anonymousUser");
    assert_eq!(got.one("x-forwarded-host"), app.addr.to_string());
    assert_eq!(got.one("x-forwarded-proto"), "http");
    assert!(got.one("via").starts_with("1.1 tip-"), "{}", got.head_str());
    assert_eq!(got.one("host"), up.addr.to_string());
}
