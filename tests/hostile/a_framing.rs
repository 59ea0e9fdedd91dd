//! A. Message framing and request smuggling (inbound HTTP/1.1): RFC 9112 §6 and §6.3 (message
//! body length), RFC 9110 §5.5 (field values); hyper's RUSTSEC-2021-0078 (`Content-Length`
//! with `+`), RUSTSEC-2021-0079 (chunk size overflow), RUSTSEC-2021-0020 (several
//! `Transfer-Encoding`).
//!
//! Every case also checks that each forwarded request carries one framing header at most
//! (exactly one with a body) and a complete body: [`Captured::assert_framing`].

use crate::support::*;

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

#[tokio::test]
async fn a3_identical_duplicate_content_length_is_forwarded_once() {
    let (up, app) = setup().await;
    let req = format!(
        "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    got.assert_framing();
    assert_eq!(got.body.data, b"hello");
}

#[tokio::test]
async fn a4_malformed_content_length_is_400() {
    let (up, app) = setup().await;
    for value in [
        "+3",
        "0x10",
        "-1",
        "",
        "3,2",
        "1000.1000",
        "18446744073709551616",
        "3 3",
        "٣",
    ] {
        let req = format!(
            "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nContent-Length: {value}\r\n\r\nabc",
            app.addr
        );
        let (r, mut c) = app.exchange(req.as_bytes()).await;
        assert_eq!(r.status, 400, "Content-Length: {value:?}");
        c.assert_closed().await;
    }
    up.assert_untouched();
}

#[tokio::test]
async fn a5_obfuscated_transfer_encoding_is_400() {
    let (up, app) = setup().await;
    for te in [
        &b"Transfer-Encoding: xchunked\r\n"[..],
        b"Transfer-Encoding : chunked\r\n",
        b"Transfer-Encoding:\x0bchunked\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Transfer-Encoding: ,chunked\r\n",
        b"Transfer-Encoding: chunked,\r\n",
        b"Transfer-Encoding: \"chunked\"\r\n",
        b"X: y\r\n Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding:\r\n chunked\r\n",
        b" Transfer-Encoding: chunked\r\n",
    ] {
        let mut req = format!("POST /proxy/echo HTTP/1.1\r\nHost: {}\r\n", app.addr).into_bytes();
        req.extend_from_slice(te);
        req.extend_from_slice(b"Content-Length: 5\r\n\r\n0\r\n\r\n");
        let (r, _c) = app.exchange(&req).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(te));
    }
    up.assert_untouched();
}

#[tokio::test]
async fn a6_repeated_chunked_is_400() {
    let (up, app) = setup().await;
    for te in [
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\ntransfer-encoding: CHUNKED\r\n",
    ] {
        let req = format!(
            "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n",
            app.addr
        );
        let (r, _c) = app.exchange(req.as_bytes()).await;
        assert_eq!(r.status, 400, "{te:?}");
    }
    up.assert_untouched();
}

#[tokio::test]
async fn a7_transfer_codings_other_than_chunked_are_501() {
    let (up, app) = setup().await;
    for te in ["gzip, chunked", "deflate,chunked", "x-custom, chunked"] {
        let req = format!(
            "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: {te}\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            app.addr
        );
        let (r, _c) = app.exchange(req.as_bytes()).await;
        assert_eq!(r.status, 501, "{te}");
        assert_eq!(r.text(), "The request's transfer coding is not supported.");
    }
    up.assert_untouched();
}

#[tokio::test]
async fn a8_http10_with_transfer_encoding_is_400() {
    let (up, app) = setup().await;
    let req = format!(
        "POST /proxy/echo HTTP/1.0\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        app.addr
    );
    let (r, mut c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 400);
    c.assert_closed().await;
    up.assert_untouched();
}

/// Sends a chunked request with a broken body: never forwarded as complete.
async fn broken_chunked(body: &[u8]) {
    let (up, app) = setup().await;
    let mut req = format!(
        "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.addr
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut c = app.raw().await;
    c.send(&req).await;
    // The proxy notices the broken body: 400 (from hyper, or from the proxy once the
    // upstream request it was streaming failed), or the connection closes; it never goes
    // on, and the target, which did nothing wrong, is not blamed with a 502.
    if let Some(r) = c.response(false).await {
        assert_eq!(r.status, 400, "{}", r.head_str());
        c.assert_closed().await;
    }
    assert_no_complete_request(&up).await;
}

#[tokio::test]
async fn a9_a_request_body_broken_mid_stream_is_400() {
    // The upstream request is under way when the client's body breaks: a malformed chunk,
    // or fewer bytes than `Content-Length` before the client stops sending.
    for (framing, body) in [
        ("Transfer-Encoding: chunked", &b"5\r\nhello\r\nzz\r\n"[..]),
        ("Transfer-Encoding: chunked", b"5\r\nhelloXX\r\n0\r\n\r\n"),
        ("Content-Length: 10", b"hello"),
    ] {
        let (up, app) = setup().await;
        let mut req = format!(
            "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\n{framing}\r\n\r\n",
            app.addr
        )
        .into_bytes();
        req.extend_from_slice(body);
        let mut c = app.raw().await;
        c.send(&req).await;
        // No more to come (the write side closes; the response can still be read).
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut c.wire.stream).await;
        let r = c.response(false).await.expect("a response");
        let what = String::from_utf8_lossy(body);
        assert_eq!(r.status, 400, "{what:?}: {}", r.head_str());
        assert_eq!(
            r.text(),
            "The request body is incomplete or malformed.",
            "{what:?}"
        );
        assert_no_complete_request(&up).await;
    }
}

#[tokio::test]
async fn a9_chunk_size_overflow_is_never_forwarded_complete() {
    broken_chunked(b"f0000000000000003\r\nabc\r\n0\r\n\r\n").await;
}

#[tokio::test]
async fn a9_empty_chunk_size_is_never_forwarded_complete() {
    broken_chunked(b"\r\n\r\n\r\n\r\n").await;
}

#[tokio::test]
async fn a9_bare_lf_after_last_chunk_is_never_forwarded_complete() {
    broken_chunked(b"5\r\nhello\r\n0\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n").await;
}

#[tokio::test]
async fn a9_chunk_data_longer_than_its_size_is_never_forwarded_complete() {
    broken_chunked(b"3\r\nhello\r\n0\r\n\r\n").await;
}

#[tokio::test]
async fn a10_cr_lf_nul_in_header_values_are_400() {
    let (up, app) = setup().await;
    for line in [
        &b"X-A: a\rb\r\n"[..],
        b"X-A: a\x00b\r\n",
        b"X-A: a\r\n b\r\n",
        b"X-A: a\x7fb\r\n",
    ] {
        let mut req = format!("GET /proxy/echo HTTP/1.1\r\nHost: {}\r\n", app.addr).into_bytes();
        req.extend_from_slice(line);
        req.extend_from_slice(b"\r\n");
        let mut c = app.raw().await;
        c.send(&req).await;
        // A response is 400; a closed connection is a refusal too.
        if let Some(r) = c.response(false).await {
            assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(line));
        }
    }
    // Whatever was accepted never carried CR, LF or NUL inside a value upstream.
    for got in up.requests() {
        for (_, v) in &got.headers {
            assert!(!v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)), "{got:?}");
        }
    }
    up.assert_untouched();
}

#[tokio::test]
async fn a10_bare_lf_ends_a_line_and_never_reaches_a_value() {
    let (up, app) = setup().await;
    let mut req = format!("GET /proxy/echo HTTP/1.1\r\nHost: {}\r\n", app.addr).into_bytes();
    req.extend_from_slice(b"X-A: a\nX-B: b\r\n\r\n");
    let (r, _c) = app.exchange(&req).await;
    // RFC 9112 §2.2 lets a recipient read a bare LF as a line end: two clean fields.
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.one("x-a"), "a");
    assert_eq!(got.one("x-b"), "b");
    assert!(!got.head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
}

/// The disabled proxy answers without reading the body: the body is never parsed as a
/// request, and the next pipelined request is answered in order or the connection closes.
async fn early_response(app: &App, first: &str, status: u16) {
    let req = format!(
        "{first}\r\nHost: {a}\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: {a}\r\n\r\n",
        a = app.addr
    );
    let mut c = app.raw().await;
    c.send(req.as_bytes()).await;
    let r = c.response(false).await.expect("a response");
    assert_eq!(r.status, status);
    // Either the connection closed after the early response, or /health comes next (a
    // parsed `/smuggled` would have answered `404 inner 404` first).
    if let Some(next) = c.response(false).await {
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "ok"),
            "smuggled?"
        );
    }
}

#[tokio::test]
async fn a11_early_response_of_the_disabled_proxy_never_parses_the_body() {
    let app = start_app(layer()).await;
    early_response(&app, "POST /proxy/x HTTP/1.1", 501).await;
}

#[tokio::test]
async fn a11_early_response_of_a_refusal_never_parses_the_body() {
    let (up, app) = setup().await;
    early_response(&app, "POST /proxy/../x HTTP/1.1", 400).await;
    up.assert_untouched();
}

#[tokio::test]
async fn a12_pipelined_requests_keep_their_order() {
    let up = Upstream::replying(|req| {
        let body = req.target.clone();
        Action::keep(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    })
    .await;
    let app = start_app(layer()).await;
    app.target(&up, "/api/v1");
    let a = app.addr;
    let mut c = app.raw().await;
    c.send(
        format!(
            "GET /proxy/echo?n=1 HTTP/1.1\r\nHost: {a}\r\n\r\nGET /proxy/echo?n=2 HTTP/1.1\r\nHost: {a}\r\n\r\nGET /health HTTP/1.1\r\nHost: {a}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let first = c.response(false).await.unwrap();
    let second = c.response(false).await.unwrap();
    let third = c.response(false).await.unwrap();
    assert_eq!(first.text(), "/api/v1/echo?n=1");
    assert_eq!(second.text(), "/api/v1/echo?n=2");
    assert_eq!(third.text(), "ok");
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        r.assert_framing();
    }
    assert_eq!(reqs[0].target, "/api/v1/echo?n=1");
    assert_eq!(reqs[1].target, "/api/v1/echo?n=2");
}
