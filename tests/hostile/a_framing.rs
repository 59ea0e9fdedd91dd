//! A. Message framing and request smuggling (inbound HTTP/1.1).
//!
//! Every case also checks that each forwarded request carries one framing header at most
//! (exactly one with a body) and a complete body: [`Captured::assert_framing`].

use crate::support::*;

/// The app, pointed at a `200 ok` upstream under `/api/v1`.
async fn setup() -> (Upstream, App) {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "/api/v1");
    (up, app)
}

#[tokio::test]
async fn a1_cl_te_is_neutralised() {
    let (up, app) = setup().await;
    let req = format!(
        "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        app.addr
    );
    let (r, mut c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.head_str());
    // hyper dropped the Content-Length and closes the connection: `G` never starts a request.
    c.assert_closed().await;
    let got = up.only();
    got.assert_framing();
    assert_eq!(got.target, "/api/v1/echo");
    assert!(!got.has("content-length"), "{}", got.head_str());
    assert_eq!(got.one("transfer-encoding"), "chunked");
    assert_eq!(got.body.data, b"");
}

#[tokio::test]
async fn a2_te_cl_is_neutralised() {
    let (up, app) = setup().await;
    let req = format!(
        "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
        app.addr
    );
    let (r, mut c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.head_str());
    c.assert_closed().await;
    let got = up.only();
    got.assert_framing();
    assert!(!got.has("content-length"), "{}", got.head_str());
    assert_eq!(got.body.data, b"SMUGGLED");
}

#[tokio::test]
async fn a3_duplicate_content_length_is_400() {
    let (up, app) = setup().await;
    let req = format!(
        "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nContent-Length: 31\r\n\r\nGET /evil HTTP/1.1\r\nHost: a\r\n\r\n",
        app.addr
    );
    let (r, mut c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 400);
    c.assert_closed().await;
    up.assert_untouched();
}

#[tokio::test]
async fn a13_get_with_chunked_body_keeps_it() {
    let (up, app) = setup().await;
    let req = format!(
        "GET /proxy/echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    got.assert_framing();
    assert_eq!(got.method, "GET");
    assert_eq!(got.body.data, b"hello");
}

#[tokio::test]
async fn a13_get_with_content_length_body_keeps_it() {
    let (up, app) = setup().await;
    let req = format!(
        "GET /proxy/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 10\r\n\r\n1234567890",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    got.assert_framing();
    assert_eq!(got.one("content-length"), "10");
    assert_eq!(got.body.data, b"1234567890");
}

#[tokio::test]
async fn a14_content_length_zero_is_forwarded() {
    let (up, app) = setup().await;
    let req = format!(
        "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    got.assert_framing();
    assert_eq!(got.one("content-length"), "0");
}
