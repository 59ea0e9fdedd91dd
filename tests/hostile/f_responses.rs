//! F. Responses from the target (hostile or broken upstream): RFC 9112 §6.3 (message body
//! length, no body after `HEAD`, `204`, `304`), RFC 9110 §15.2 (`1xx`).

use crate::support::*;

async fn app_for(up: &Upstream) -> App {
    let app = start_app(layer()).await;
    app.target(up, "");
    app
}

#[tokio::test]
async fn f2_upstream_cl_and_te_does_not_truncate_the_body() {
    let up = Upstream::canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n01234567890123456789\r\n0\r\n\r\n",
    )
    .await;
    let app = app_for(&up).await;
    let r = app.get("/proxy/x", "").await;
    assert_eq!(r.status, 200);
    assert!(!r.has("content-length"), "{}", r.head_str());
    assert!(r.body.complete);
    assert_eq!(r.text(), "01234567890123456789");
}

#[tokio::test]
async fn f4_truncated_content_length_body_stays_truncated() {
    let up = Upstream::replying(|_| {
        Action::close(&b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789"[..])
    })
    .await;
    let app = app_for(&up).await;
    let (r, mut c) = app
        .exchange(format!("GET /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.one("content-length"), "100");
    // Fewer bytes than announced, then the connection closes: visibly truncated.
    assert!(!r.body.complete);
    assert!(r.body.data.len() < 100);
    c.assert_closed().await;
}

#[tokio::test]
async fn f4_truncated_chunked_body_never_gets_a_last_chunk() {
    let up = Upstream::replying(|_| {
        Action::close(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"[..],
        )
    })
    .await;
    let app = app_for(&up).await;
    let (r, mut c) = app
        .exchange(format!("GET /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.body.complete, "a last chunk was sent: {:?}", r.body);
    assert!(
        !String::from_utf8_lossy(&r.body.raw).contains("0\r\n\r\n"),
        "{:?}",
        r.body
    );
    c.assert_closed().await;
}

/// Sends `GET /proxy/x` on a new connection; returns the response and the connection.
async fn get_x(app: &App) -> (Resp, Raw) {
    app.exchange(format!("GET /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await
}

#[tokio::test]
async fn f1_hop_by_hop_headers_in_responses_are_stripped() {
    let up = Upstream::replying(|_| {
        Action::close(
            &b"HTTP/1.1 200 OK\r\nConnection: X-Secret, close\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n\
               Proxy-Connection: x\r\nUpgrade: foo\r\nX-Kept: 2\r\nContent-Length: 2\r\n\r\nok"[..],
        )
    })
    .await;
    let app = app_for(&up).await;
    let (r, mut c) = get_x(&app).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(!r.has(gone), "{gone} relayed:\n{}", r.head_str());
    }
    assert_eq!(r.one("x-kept"), "2");
    // The target's `close` was for its own hop: the client connection goes on.
    c.send(format!("GET /proxy/y HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    let r = c.response(false).await.expect("second response");
    assert_eq!(r.status, 200);
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test]
async fn f3_broken_upstream_framing_is_502() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: foo\r\n\r\nab"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nab",
    ] {
        let up = Upstream::replying(move |_| Action::close(reply)).await;
        let app = app_for(&up).await;
        let (r, _c) = get_x(&app).await;
        assert_eq!(r.status, 502, "{:?}", String::from_utf8_lossy(reply));
        assert!(!r.text().contains("ab"));
    }
}

#[tokio::test]
async fn f3_a_content_length_list_is_relayed_as_one_value() {
    // RFC 9110 §8.6 lets a recipient take `2, 2` (or two `2` lines) as `2`; relayed as is,
    // an HTTP/2 client resets the stream and a strict HTTP/1.1 client refuses the response.
    for reply in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    ] {
        let up = Upstream::canned(reply).await;
        let app = app_for(&up).await;
        let r = app.get("/proxy/x", "Connection: close\r\n").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert_eq!(r.one("content-length"), "2", "{}", r.head_str());

        let mut h2 = crate::j_http2::h2_client(&app).await;
        let req = hyper::Request::get(format!("http://{}/proxy/x", app.addr))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let res = within("h2 response", h2.send_request(req))
            .await
            .expect("an HTTP/2 response, not a reset stream");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers().get_all("content-length").iter().count(), 1);
        let body = within("h2 body", collect(res.into_body())).await.unwrap();
        assert_eq!(&body[..], b"ok");
    }
}

#[tokio::test]
async fn f3_an_invalid_content_length_is_502_even_without_content() {
    // hyper's client does not read `Content-Length` where no body can follow (HEAD, 204,
    // 304), so the proxy checks it: relayed, it would reach the client as it came.
    for (method, reply) in [
        (
            "HEAD",
            &b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"[..],
        ),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"),
        (
            "HEAD",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ),
        (
            "GET",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1, 2\r\n\r\n",
        ),
        (
            "GET",
            b"HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n",
        ),
    ] {
        let up = Upstream::canned(reply).await;
        let app = app_for(&up).await;
        let (r, _c) = app
            .exchange(
                format!("{method} /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes(),
            )
            .await;
        assert_eq!(
            r.status,
            502,
            "{:?}\n{}",
            String::from_utf8_lossy(reply),
            r.head_str()
        );
    }
}

#[tokio::test]
async fn f5_extra_bytes_after_the_body_are_dropped_and_never_reused() {
    let up = Upstream::replying(|req| {
        if req.target == "/first" {
            Action::keep(&b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nSEE-THIS-BUT-NOT-THIS"[..])
        } else {
            Action::keep(OK)
        }
    })
    .await;
    let app = app_for(&up).await;
    let r = app.get("/proxy/first", "").await;
    assert_eq!(r.text(), "SEE-");
    for _ in 0..3 {
        let r = app.get("/proxy/next", "").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        assert!(!r.head_str().contains("THIS"), "{}", r.head_str());
    }
}

/// The target answers `HEAD` with `head_reply` and anything else with `ok`; a client
/// pipelines a `HEAD` and a `GET` on one connection. The app and both responses.
async fn head_then_get(head_reply: &'static [u8]) -> (App, Resp, Resp) {
    let up = Upstream::replying(move |req| {
        if req.method == "HEAD" {
            Action::keep(head_reply)
        } else {
            Action::keep(OK)
        }
    })
    .await;
    let app = app_for(&up).await;
    let a = app.addr;
    let mut c = app.raw().await;
    c.send(
        format!(
            "HEAD /proxy/x HTTP/1.1\r\nHost: {a}\r\n\r\nGET /proxy/y HTTP/1.1\r\nHost: {a}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    let head = c.response(true).await.expect("HEAD response");
    let next = c.response(false).await.expect("GET response");
    // In sync: the `GET` got its own response, not bytes of the `HEAD`'s.
    assert_eq!((next.status, next.text().as_str()), (200, "ok"));
    (app, head, next)
}

#[tokio::test]
async fn f6_head_response_has_no_body_and_stays_in_sync() {
    let (_app, head, _) = head_then_get(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.one("content-length"), "1000");
}

/// The target sends a body where none is allowed: the client gets no body and its
/// connection stays in sync.
async fn bodiless_status(reply: &'static [u8], status: u16) {
    let up = Upstream::replying(move |req| {
        if req.target == "/odd" {
            Action::keep(reply)
        } else {
            Action::keep(OK)
        }
    })
    .await;
    let app = app_for(&up).await;
    let a = app.addr;
    let mut c = app.raw().await;
    c.send(format!("GET /proxy/odd HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes())
        .await;
    let r = c.response(false).await.expect("response");
    assert_eq!(r.status, status);
    c.send(format!("GET /proxy/y HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes())
        .await;
    let next = c.response(false).await.expect("next response");
    assert_eq!(
        (next.status, next.text().as_str()),
        (200, "ok"),
        "out of sync"
    );
    assert!(!next.head_str().contains("HELLO"));
}

#[tokio::test]
async fn f6_204_with_a_body_relays_no_body() {
    bodiless_status(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHELLO",
        204,
    )
    .await;
}

#[tokio::test]
async fn f6_304_with_a_body_relays_no_body() {
    bodiless_status(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nHELLO",
        304,
    )
    .await;
}

#[tokio::test]
async fn f6_head_response_states_no_length_the_target_did_not() {
    // The target answers `HEAD` as it would `GET`, chunked: it states no length. The
    // client must not be told `Content-Length: 0`, that the `GET` has an empty body.
    let (app, head, _) =
        head_then_get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await;
    assert_eq!(head.status, 200);
    assert!(!head.has("content-length"), "{}", head.head_str());

    h2_has_no_length(&app, http::Method::HEAD, 200).await;
}

/// A `method` request for `/proxy/x` over HTTP/2: answered `status`, without `Content-Length`.
async fn h2_has_no_length(app: &App, method: http::Method, status: u16) {
    let mut h2 = crate::j_http2::h2_client(app).await;
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{}/proxy/x", app.addr))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let res = within("h2 response", h2.send_request(req)).await.unwrap();
    assert_eq!(res.status(), status);
    assert!(
        !res.headers().contains_key("content-length"),
        "{:?}",
        res.headers()
    );
}

#[tokio::test]
async fn f6_a_204_carries_no_content_length_over_http2() {
    // RFC 9110 §8.6: a server never sends `Content-Length` in a `204`: none made up for it,
    // and the target's dropped (hyper's HTTP/1.1 server drops it, its HTTP/2 server would
    // relay it).
    for reply in [
        &b"HTTP/1.1 204 No Content\r\n\r\n"[..],
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHELLO",
    ] {
        let up = Upstream::canned(reply).await;
        let app = app_for(&up).await;
        h2_has_no_length(&app, http::Method::DELETE, 204).await;
    }
}

#[tokio::test]
async fn f7_upstream_1xx_before_the_final_response() {
    for reply in [
        &b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 199 Whatever\r\nX: y\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ] {
        let up = Upstream::replying(move |_| Action::keep(reply)).await;
        let app = app_for(&up).await;
        let (mut r, mut c) = get_x(&app).await;
        // 1xx from the target are not relayed (hyper's client consumes them); the final
        // response arrives intact.
        while (100..200).contains(&r.status) {
            r = c.response(false).await.expect("final response");
        }
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
}

#[tokio::test]
async fn f8_set_cookie_lines_stay_separate_and_in_order() {
    // (Their paths are scoped under the prefix: see f11.)
    let up = Upstream::canned(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT\r\nX-Multi: 1\r\n\
          Set-Cookie: b=2\r\nX-Multi: 2\r\nDate: Wed, 21 Oct 2015 07:28:00 GMT\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let app = app_for(&up).await;
    let r = app.get("/proxy/x", "").await;
    assert_eq!(
        r.all("set-cookie"),
        [
            &b"a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT; Path=/proxy"[..],
            b"b=2; Path=/proxy"
        ]
    );
    assert_eq!(r.all("x-multi"), [b"1", b"2"]);
    assert_eq!(r.one("date"), "Wed, 21 Oct 2015 07:28:00 GMT");
}

#[tokio::test]
async fn f9_oversized_or_non_http_upstream_replies_are_502() {
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..5000 {
        huge.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(200)).as_bytes());
    }
    huge.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let huge: &'static [u8] = Box::leak(huge.into_boxed_slice());
    for reply in [
        huge,
        b"hello, I am not HTTP\r\n\r\n",
        b"HTTP/1.1 999999 Nope\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"\x00\x01\x02\x03",
    ] {
        let up = Upstream::replying(move |_| Action::close(reply)).await;
        let app = app_for(&up).await;
        let (r, _c) = get_x(&app).await;
        assert_eq!(
            r.status,
            502,
            "{:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(40)])
        );
        // The target was reached: the answer says what went wrong instead.
        assert_eq!(r.text(), "The proxy target sent no valid response.");
    }
}

#[tokio::test]
async fn f10_redirects_are_relayed_not_followed() {
    let up = Upstream::replying(|req| {
        Action::keep(format!(
            "HTTP/1.1 302 Found\r\nLocation: http://{}/api/v1/login\r\nContent-Length: 0\r\n\r\n",
            req.one("host")
        ))
    })
    .await;
    let app = app_for(&up).await;
    let r = app.get("/proxy/x", "").await;
    assert_eq!(r.status, 302);
    // Passed through as the target sent it (documented: no Location rewriting).
    assert_eq!(
        r.one("location"),
        format!("http://{}/api/v1/login", up.addr)
    );
    assert_eq!(up.requests().len(), 1, "the redirect was followed");
}

#[tokio::test]
async fn f11_set_cookie_cannot_reach_the_apps_paths_by_default() {
    let up = Upstream::canned(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=attacker; Path=/; HttpOnly\r\n\
          Set-Cookie: theirs=1; Path=/api/v1/x\r\nSet-Cookie: bare=2\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let app = start_app(layer()).await;
    app.target(&up, "/api/v1");
    let r = app.get("/proxy", "").await;
    // Every cookie the target sets lives under /proxy: `JSESSIONID` for `/` becomes a
    // different cookie than the app's, and `bare` does not take the default path `/`.
    assert_eq!(
        r.all("set-cookie"),
        [
            &b"JSESSIONID=attacker; HttpOnly; Path=/proxy"[..],
            b"theirs=1; Path=/proxy/x",
            b"bare=2; Path=/proxy"
        ]
    );
}

#[tokio::test]
async fn f11_set_cookie_cannot_overwrite_a_protected_cookie() {
    let up = Upstream::canned(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: JSESSIONID=attacker; Path=/\r\nSet-Cookie: theirs=1\r\n\
          Set-Cookie:  JSESSIONID =x\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let app = start_app(
        layer().cookies(
            tower_identity_proxy::rules::CookiePolicy::new()
                .protect("JSESSIONID")
                .scope_set_cookie_paths(false),
        ),
    )
    .await;
    app.target(&up, "");
    let r = app.get("/proxy/x", "").await;
    assert_eq!(r.all("set-cookie"), [b"theirs=1"], "{}", r.head_str());
}

#[tokio::test]
async fn f11_set_cookie_passes_unchanged_when_configured() {
    let up = Upstream::canned(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: theirs=1; Path=/\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    let app =
        start_app(layer().cookies(
            tower_identity_proxy::rules::CookiePolicy::new().scope_set_cookie_paths(false),
        ))
        .await;
    app.target(&up, "");
    let r = app.get("/proxy/x", "").await;
    assert_eq!(r.one("set-cookie"), "theirs=1; Path=/");
}

#[tokio::test]
async fn f12_encoded_bodies_are_relayed_byte_identical() {
    // Bytes labelled gzip (not inflated by the proxy): every byte value, 64 KiB.
    let body: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nETag: \"v1\"\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    reply.extend_from_slice(&body);
    let reply: &'static [u8] = Box::leak(reply.into_boxed_slice());
    let up = Upstream::canned(reply).await;
    let app = app_for(&up).await;
    let r = app.get("/proxy/x", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(r.one("content-encoding"), "gzip");
    assert_eq!(r.one("etag"), "\"v1\"");
    assert_eq!(r.one("content-length"), body.len().to_string());
    assert!(r.body.data == body, "body changed");
}
