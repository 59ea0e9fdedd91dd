//! No panic anywhere on a request path: odd bytes, huge header counts, empty and maximal
//! request targets, beyond the cases of the other modules.

use crate::support::*;

#[tokio::test]
async fn nopanic_non_utf8_header_values_are_forwarded_byte_exact() {
    let (up, app) = setup().await;
    let mut req = format!("GET /proxy/x HTTP/1.1\r\nHost: {}\r\n", app.addr).into_bytes();
    req.extend_from_slice(
        b"X-Latin: caf\xe9\r\nX-Utf8: \xc3\xbc\xe2\x82\xac\r\nX-Obs: \x80\xff\r\n\r\n",
    );
    let (r, _c) = app.exchange(&req).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.all("x-latin"), [b"caf\xe9"]);
    assert_eq!(got.all("x-utf8"), [b"\xc3\xbc\xe2\x82\xac"]);
    assert_eq!(got.all("x-obs"), [b"\x80\xff"]);
}

#[tokio::test]
async fn nopanic_non_ascii_host_and_header_names_are_400() {
    let (up, app) = setup().await;
    for line in [&b"Host: caf\xe9.example\r\n"[..], b"Host: \xff\r\n"] {
        let mut req = b"GET /proxy/x HTTP/1.1\r\n".to_vec();
        req.extend_from_slice(line);
        req.extend_from_slice(b"\r\n");
        let (r, _c) = app.exchange(&req).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(line));
    }
    let mut req = format!("GET /proxy/x HTTP/1.1\r\nHost: {}\r\n", app.addr).into_bytes();
    req.extend_from_slice(b"X-\xe9: 1\r\n\r\n");
    let mut c = app.raw().await;
    c.send(&req).await;
    if let Some(r) = c.response(false).await {
        assert_eq!(r.status, 400);
    }
    up.assert_untouched();
}

#[tokio::test]
async fn nopanic_many_headers_are_forwarded_or_431() {
    let (up, app) = setup().await;
    let lines: String = (0..90).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let r = app.get("/proxy/x", &lines).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    for i in 0..90 {
        assert_eq!(got.one(&format!("x-h{i}")), i.to_string());
    }
    let lines: String = (0..500).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let r = app.get("/proxy/x", &lines).await;
    assert_eq!(r.status, 431);
    // Many lines of one name (the HeaderMap's worst case) are fine too.
    let lines: String = (0..90).map(|i| format!("X-Same: {i}\r\n")).collect();
    assert_eq!(app.get("/proxy/x", &lines).await.status, 200);
    assert_eq!(up.requests().last().unwrap().count("x-same"), 90);
}

#[tokio::test]
async fn nopanic_huge_header_values_are_forwarded_or_refused() {
    let (up, app) = setup().await;
    let big = "v".repeat(64 * 1024);
    let r = app.get("/proxy/x", &format!("X-Big: {big}\r\n")).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.only().one("x-big").len(), big.len());
    let huge = "v".repeat(1024 * 1024);
    let mut c = app.raw().await;
    let req = format!(
        "GET /proxy/x HTTP/1.1\r\nHost: {}\r\nX-Huge: {huge}\r\n\r\n",
        app.addr
    );
    let _ = c.try_send(req.as_bytes()).await;
    if let Some(r) = c.response(false).await {
        assert_eq!(r.status, 431);
    }
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn nopanic_empty_and_odd_request_targets() {
    let (up, app) = setup().await;
    for target in ["", "*", "proxy/x", "//proxy/x", "/proxy/%", "/proxy/%zz%"] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
        let mut c = app.raw().await;
        c.send(req.as_bytes()).await;
        if let Some(r) = c.response(false).await {
            assert!(r.status < 500, "{target:?}: {}", r.head_str());
        }
    }
    // `OPTIONS *` is for the app, not the target.
    let (r, _c) = app
        .exchange(format!("OPTIONS * HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    assert!(r.status < 500);
    // Only the two percent-sign paths are proxied (forwarded unchanged).
    let targets: Vec<String> = up.requests().iter().map(|r| r.target.clone()).collect();
    assert!(
        targets
            .iter()
            .all(|t| t == "/api/v1/%" || t == "/api/v1/%zz%"),
        "{targets:?}"
    );
}

#[tokio::test]
async fn nopanic_odd_methods() {
    let (up, app) = setup().await;
    for method in ["PROPFIND", "X-CUSTOM", "get", "M-SEARCH"] {
        let r = app
            .exchange(
                format!("{method} /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes(),
            )
            .await
            .0;
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(up.requests().last().unwrap().method, method);
    }
    for bad in ["GE T", "G\x01T", "(GET)"] {
        let mut c = app.raw().await;
        c.send(format!("{bad} /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
            .await;
        if let Some(r) = c.response(false).await {
            assert_eq!(r.status, 400, "{bad:?}");
        }
    }
    assert_eq!(up.requests().len(), 4);
}
