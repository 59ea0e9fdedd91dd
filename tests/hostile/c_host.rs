//! C. Host, forwarding headers, absolute-form, SSRF: RFC 9110 §7.2 (`Host`), RFC 9112 §3.2.2
//! (absolute-form), RFC 7239 §8.1 (forwarding headers); CVE-2021-40438 (Apache mod_proxy
//! SSRF through the request target).

use crate::support::*;

#[tokio::test]
async fn c1_host_is_the_targets_authority() {
    let (up, app) = setup().await;
    let (r, _c) = app
        .exchange(b"GET /proxy/echo HTTP/1.1\r\nHost: app.example:1337\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.one("host"), up.addr.to_string());
    assert_eq!(got.one("x-forwarded-host"), "app.example:1337");
}

#[tokio::test]
async fn c2_spoofed_forwarding_headers_are_replaced() {
    let (up, app) = setup().await;
    let r = app
        .get(
            "/proxy/echo",
            "X-Forwarded-Host: evil.example\r\nX-Forwarded-Host: evil2.example\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Port: 666\r\nX-Forwarded-Prefix: /evil\r\n\
             X-Forwarded-Server: evil\r\nForwarded: for=1.2.3.4;host=evil.example;proto=https\r\n\
             X-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.one("x-forwarded-host"), app.addr.to_string());
    assert_eq!(got.one("x-forwarded-proto"), "http");
    for gone in [
        "forwarded",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-forwarded-for",
        "x-real-ip",
    ] {
        assert!(!got.has(gone), "{gone} forwarded:\n{}", got.head_str());
    }
    assert!(!got.head_str().contains("evil"), "{}", got.head_str());
    assert!(!got.head_str().contains("1.2.3.4"), "{}", got.head_str());
}

/// `X-Original-URL` / `X-Rewrite-URL` would have a target that honours them (IIS URL
/// Rewrite, Symfony, Zend) serve another path than the request line's, outside the base
/// path the proxy keeps every request under: they are a front proxy's to set, never passed.
#[tokio::test]
async fn c2_path_override_headers_never_reach_the_target() {
    let (up, app) = setup().await;
    let r = app
        .get(
            "/proxy/echo",
            "X-Original-URL: /admin/evil\r\nX-Rewrite-URL: /admin/evil\r\n\
             X_Original_URL: /admin/evil\r\nX-Kept: 1\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.target, "/api/v1/echo");
    assert!(!got.head_str().contains("evil"), "{}", got.head_str());
    assert_eq!(got.one("x-kept"), "1");
}

#[tokio::test]
async fn c4_duplicate_host_is_400() {
    let (up, app) = setup().await;
    let req = format!(
        "GET /proxy/echo HTTP/1.1\r\nHost: {}\r\nHost: evil.example\r\n\r\n",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 400);
    up.assert_untouched();
}

#[tokio::test]
async fn c4_missing_host_is_400() {
    let (up, app) = setup().await;
    let (r, _c) = app.exchange(b"GET /proxy/echo HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.status, 400);
    up.assert_untouched();
}

#[tokio::test]
async fn c4_http10_without_host_is_400() {
    let (up, app) = setup().await;
    let (r, _c) = app.exchange(b"GET /proxy/echo HTTP/1.0\r\n\r\n").await;
    assert_eq!(r.status, 400);
    up.assert_untouched();
}

#[tokio::test]
async fn c4_invalid_host_values_are_400() {
    let (up, app) = setup().await;
    let a = app.addr;
    for bad in [
        "evil.example/x".to_owned(),
        "a@evil.example".to_owned(),
        format!("evil.example:80@{a}"),
        "[::1".to_owned(),
        "h:99999".to_owned(),
        "h:".to_owned(),
        "".to_owned(),
        "a b".to_owned(),
        "h:8x".to_owned(),
    ] {
        let req = format!("GET /proxy/echo HTTP/1.1\r\nHost: {bad}\r\n\r\n");
        let (r, _c) = app.exchange(req.as_bytes()).await;
        assert_eq!(r.status, 400, "Host: {bad:?}");
    }
    up.assert_untouched();
}

#[tokio::test]
async fn c3_scheme_comes_from_configuration_not_the_request() {
    let (up, app) = setup().await;
    let req = format!(
        "GET https://{a}/proxy/echo HTTP/1.1\r\nHost: {a}\r\nX-Forwarded-Proto: https\r\n\r\n",
        a = app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.one("x-forwarded-proto"), "http");
    assert_eq!(got.target, "/api/v1/echo");
}

#[tokio::test]
async fn c3_https_is_sent_when_configured() {
    let up = Upstream::ok().await;
    let app = start_app(layer().forwarded_proto(ForwardedProto::Https)).await;
    app.target(&up, "");
    assert_eq!(app.get("/proxy/x", "").await.status, 200);
    assert_eq!(up.only().one("x-forwarded-proto"), "https");
}

#[tokio::test]
async fn c5_absolute_form_never_chooses_the_upstream() {
    let (up, app) = setup().await;
    // Another authority than Host: refused, nothing forwarded anywhere.
    let req = format!(
        "GET http://169.254.169.254/proxy/latest/meta-data HTTP/1.1\r\nHost: {}\r\n\r\n",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 400);
    up.assert_untouched();
    // The same authority as Host: forwarded to the configured target only.
    let req = format!(
        "GET http://{a}/proxy/latest/meta-data HTTP/1.1\r\nHost: {a}\r\n\r\n",
        a = app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.target, "/api/v1/latest/meta-data");
    assert_eq!(got.one("host"), up.addr.to_string());
    assert_eq!(got.one("x-forwarded-host"), app.addr.to_string());
}

#[tokio::test]
async fn c5_absolute_form_outside_the_prefix_reaches_the_app_untouched() {
    let (up, app) = setup().await;
    let req = format!(
        "GET http://169.254.169.254/inner/echo HTTP/1.1\r\nHost: {}\r\n\r\n",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text()
            .starts_with("GET http://169.254.169.254/inner/echo"),
        "{}",
        r.text()
    );
    up.assert_untouched();
}

#[tokio::test]
async fn c6_connect_under_the_prefix_is_405() {
    let (up, app) = setup().await;
    let (r, _c) = app
        .exchange(format!("CONNECT /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.one("allow"),
        "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"
    );
    up.assert_untouched();
}

#[tokio::test]
async fn c6_authority_form_connect_goes_to_the_app_not_the_target() {
    let (up, app) = setup().await;
    let (r, _c) = app
        .exchange(format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n", t = up.addr).as_bytes())
        .await;
    // The inner app answers (no route: 404); no tunnel, no upstream connection.
    assert_eq!(r.status, 404, "{}", r.head_str());
    up.assert_untouched();
}
