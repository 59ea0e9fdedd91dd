//! D. Path and query mapping: prefix strip, traversal, encoding: RFC 3986 §5.2.4 (dot-segments);
//! Envoy CVE-2019-9901 and CVE-2021-29492 (path normalisation).

use crate::support::*;

#[tokio::test]
async fn d2_dot_segments_are_refused_in_every_spelling() {
    let (up, app) = setup().await;
    for path in [
        "/proxy/..",
        "/proxy/../admin",
        "/proxy/a/../../admin",
        "/proxy/%2e%2e/admin",
        "/proxy/%2E%2e/admin",
        "/proxy/.%2E/admin",
        "/proxy/..%2fadmin",
        "/proxy/..%2Fadmin",
        "/proxy/a%2F..%2F..%2Fadmin",
        "/proxy/..;/admin",
        "/proxy/..;x=y/admin",
        "/proxy/..\\admin",
        "/proxy/%2e%2e%5cadmin",
        "/proxy/%2e%2e%5Cadmin",
        "/proxy/a\\..\\..\\admin",
        "/proxy/.",
        "/proxy/./x",
        "/proxy/%2e/x",
    ] {
        let r = app.get(path, "").await;
        assert_eq!(r.status, 400, "{path}");
    }
    up.assert_untouched();
}

#[tokio::test]
async fn d2_dot_lookalikes_are_forwarded_unchanged() {
    let (up, app) = setup().await;
    let r = app.get("/proxy/a..b/c.d/..x/.well-known/...", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(up.only().target, "/api/v1/a..b/c.d/..x/.well-known/...");
}

#[tokio::test]
async fn d1_prefix_boundary_and_mapping() {
    let (up, app) = setup().await;
    for inner in ["/proxyfoo", "/PROXY/x", "/prox", "/api/proxy/x"] {
        let r = app.get(inner, "").await;
        assert_eq!((r.status, r.text().as_str()), (404, "inner 404"), "{inner}");
    }
    up.assert_untouched();
    for (path, want) in [
        ("/proxy", "/api/v1"),
        ("/proxy/", "/api/v1/"),
        ("/proxy?x=1", "/api/v1?x=1"),
        ("/proxy/x", "/api/v1/x"),
    ] {
        assert_eq!(app.get(path, "").await.status, 200, "{path}");
        assert_eq!(up.requests().last().unwrap().target, want, "{path}");
    }
    // A base path with a trailing slash maps the same way.
    app.handle
        .set_target(Some(&format!("http://{}/api/v1/", up.addr)))
        .unwrap();
    assert_eq!(app.get("/proxy/x", "").await.status, 200);
    assert_eq!(up.requests().last().unwrap().target, "/api/v1/x");
    // No base path: `/proxy` is `/`.
    app.target(&up, "");
    assert_eq!(app.get("/proxy", "").await.status, 200);
    assert_eq!(up.requests().last().unwrap().target, "/");
}

#[tokio::test]
async fn d3_encoded_slashes_pass_unchanged() {
    let (up, app) = setup().await;
    assert_eq!(app.get("/proxy/a%2Fb%2f", "").await.status, 200);
    assert_eq!(up.only().target, "/api/v1/a%2Fb%2f");
}

#[tokio::test]
async fn d4_double_slashes_and_odd_characters_pass_unchanged() {
    let (up, app) = setup().await;
    for (path, want) in [
        ("/proxy//x//y", "/api/v1//x//y"),
        ("/proxy/a;b=c/{x}/\"q\"", "/api/v1/a;b=c/{x}/\"q\""),
        (
            "/proxy/~user/a+b/%41%7e/@x/!$&'()*,=:",
            "/api/v1/~user/a+b/%41%7e/@x/!$&'()*,=:",
        ),
        ("/proxy/caf%C3%A9/%41", "/api/v1/caf%C3%A9/%41"),
    ] {
        assert_eq!(app.get(path, "").await.status, 200, "{path}");
        assert_eq!(up.requests().last().unwrap().target, want);
    }
}

#[tokio::test]
async fn d5_query_string_is_byte_exact() {
    let (up, app) = setup().await;
    let query = "?b=2&a=1&a=%2B+x&&;c=d&e&f=%zz&g=a?b/c";
    assert_eq!(
        app.get(&format!("/proxy/echo{query}"), "").await.status,
        200
    );
    assert_eq!(up.only().target, format!("/api/v1/echo{query}"));
}

#[tokio::test]
async fn d6_fragment_never_reaches_the_target() {
    let (up, app) = setup().await;
    let r = app.get("/proxy/a#/../../admin", "").await;
    match r.status {
        200 => assert_eq!(up.only().target, "/api/v1/a"),
        400 => up.assert_untouched(),
        s => panic!("status {s}"),
    }
    for got in up.requests() {
        assert!(!got.target.contains('#'));
    }
}

#[tokio::test]
async fn d7_control_bytes_and_raw_non_ascii_in_the_path_are_400() {
    let (up, app) = setup().await;
    for path in [
        &b"/proxy/a\x01b"[..],
        b"/proxy/a\x7fb",
        b"/proxy/\xff",
        b"/proxy/a\tb",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(path);
        req.extend_from_slice(format!(" HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes());
        let mut c = app.raw().await;
        c.send(&req).await;
        // 400, or the connection closed: never forwarded.
        if let Some(r) = c.response(false).await {
            assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(path));
        }
    }
    up.assert_untouched();
}

#[tokio::test]
async fn d7_encoded_control_bytes_pass_percent_encoded() {
    let (up, app) = setup().await;
    assert_eq!(app.get("/proxy/%0D%0A%09%7F", "").await.status, 200);
    assert_eq!(up.only().target, "/api/v1/%0D%0A%09%7F");
    // Except NUL, where C-based targets end the path (see `o4`).
    assert_eq!(app.get("/proxy/%0D%00", "").await.status, 400);
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn d7_long_paths_are_forwarded_or_414_never_a_panic() {
    let (up, app) = setup().await;
    let long = format!("/proxy/{}", "a".repeat(60_000));
    assert_eq!(app.get(&long, "").await.status, 200);
    assert_eq!(up.only().target.len(), "/api/v1/".len() + 60_000);
    let too_long = format!("/proxy/{}", "a".repeat(70_000));
    let mut c = app.raw().await;
    c.send(format!("GET {too_long} HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr).as_bytes())
        .await;
    let r = c.response(false).await.expect("a response");
    assert_eq!(r.status, 414);
    assert_eq!(up.requests().len(), 1);
}
