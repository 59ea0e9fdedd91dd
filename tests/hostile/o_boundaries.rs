//! O. Boundaries: what a client may not claim, what a target may not set for the app's
//! whole origin, and input whose cost or meaning depends on who reads it.

use tower_identity_proxy::{
    proxy::PublicOrigin,
    rules::{CookiePolicy, ResponsePolicy},
};

use crate::support::*;

/// Every header the proxy drops because only a hop in front of the target (a balancer, a
/// CDN, an authenticating proxy) may state it, by group.
const FRONT_CLAIMS: [&str; 20] = [
    // httpoxy (CVE-2016-5385): CGI targets read it as `HTTP_PROXY`.
    "Proxy",
    // Forwarding, next to the `X-Forwarded-*` and `Forwarded` already dropped.
    "X-Forwarded",
    // Host overrides.
    "X-Original-Host",
    "X-Host",
    "X-HTTP-Host-Override",
    "X-Forwarded-Server",
    // The client's address.
    "True-Client-IP",
    "X-Client-IP",
    "CF-Connecting-IP",
    "Fastly-Client-IP",
    "X-Cluster-Client-IP",
    // Identity headers of apps behind authenticating proxies.
    "Remote-User",
    "X-Remote-User",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Preferred-Username",
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    // nginx `auth_request`'s original path.
    "X-Original-URI",
];

#[tokio::test]
async fn o1_headers_only_a_front_may_state_never_reach_the_target() {
    let (up, app) = setup().await;
    let mut extra = String::new();
    for name in FRONT_CLAIMS {
        extra.push_str(&format!("{name}: evil\r\n"));
        // The `_` twin, which CGI and WSGI targets read as the same variable.
        extra.push_str(&format!("{}: evil\r\n", name.replace('-', "_")));
    }
    extra.push_str("X-Kept: 1\r\n");
    let r = app.get("/proxy/echo", &extra).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    for name in FRONT_CLAIMS {
        for spelling in [name.to_owned(), name.replace('-', "_")] {
            let values = got.all(&spelling.to_ascii_lowercase());
            assert!(
                values.iter().all(|v| *v != b"evil"),
                "{spelling} forwarded:\n{}",
                got.head_str()
            );
        }
    }
    assert_eq!(got.one("x-kept"), "1");
    // The proxy's own stay: one of each, its values.
    assert_eq!(got.one("x-forwarded-host"), app.addr.to_string());
    assert_eq!(got.one("x-forwarded-proto"), "http");
}

#[tokio::test]
async fn o2_track_is_405_like_trace_and_never_forwarded() {
    let (up, app) = setup().await;
    for method in ["TRACK", "track", "TRACE"] {
        let req = format!("{method} /proxy/x HTTP/1.1\r\nHost: {}\r\n\r\n", app.addr);
        let (r, _) = app.exchange(req.as_bytes()).await;
        assert_eq!(r.status, 405, "{method}");
        assert!(r.one("allow").contains("GET"));
    }
    up.assert_untouched();
}

#[tokio::test]
async fn o3_a_connection_bomb_is_read_once_and_too_many_names_are_400() {
    let (up, app) = setup().await;
    // 90 headers and a 100 KB `Connection` line naming one of them over and over: read once,
    // it removes that header and nothing else.
    let mut extra = String::new();
    for i in 0..90 {
        extra.push_str(&format!("X-H{i}: v\r\n"));
    }
    extra.push_str(&format!("Connection: {}x-h7\r\n", "x-h7,".repeat(20_000)));
    let r = app.get("/proxy/x", &extra).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert!(!got.has("x-h7"));
    assert!(!got.has("connection"));
    for i in (0..90).filter(|i| *i != 7) {
        assert_eq!(got.one(&format!("x-h{i}")), "v");
    }
    // More distinct names than any client nominates: refused, nothing forwarded.
    let names: Vec<String> = (0..33).map(|i| format!("x-n{i}")).collect();
    let r = app
        .get("/proxy/x", &format!("Connection: {}\r\n", names.join(", ")))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body.data,
        b"The Connection header nominates too many fields."
    );
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn o4_path_spellings_targets_decode_otherwise_are_400() {
    let (up, app) = setup().await;
    for path in [
        // NUL anywhere.
        "/proxy/..%00/admin",
        "/proxy/a%00b",
        // Double encoding of dot, slash, backslash.
        "/proxy/%252e%252e/admin",
        "/proxy/%252E%252e%252fadmin",
        "/proxy/a%252fb",
        "/proxy/a%255cb",
        "/proxy/%25%32%65%25%32%65/admin",
        // IIS's `%u` escapes, and any `%` without two hex digits.
        "/proxy/%u002e%u002e/admin",
        "/proxy/%U002E",
        "/proxy/a%zz",
        "/proxy/a%2",
        // Escapes that do not decode to UTF-8, overlong forms included.
        "/proxy/%c0%ae%c0%ae/admin",
        "/proxy/%e0%80%ae",
        "/proxy/%c0%af",
        "/proxy/%ff",
        "/proxy/caf%e9",
    ] {
        let r = app.get(path, "").await;
        assert_eq!(r.status, 400, "{path}");
    }
    up.assert_untouched();
    // UTF-8 and an escaped `%` that decodes to no dot, slash or backslash pass unchanged.
    for path in ["/proxy/caf%C3%A9", "/proxy/100%25", "/proxy/%2541"] {
        let r = app.get(path, "").await;
        assert_eq!(r.status, 200, "{path}");
    }
    let targets: Vec<String> = up.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        ["/api/v1/caf%C3%A9", "/api/v1/100%25", "/api/v1/%2541"]
    );
    // The same rules for a target's base path.
    for base in [
        "http://h/base%2f..%2f..",
        "http://h/base/%2e%2e",
        "http://h/a%00",
        "http://h/%252e%252e",
        "http://h/%u002e",
        "http://h/%c0%ae",
    ] {
        assert!(app.handle.set_target(Some(base)).is_err(), "{base}");
    }
}

/// A response with every origin-wide header and hostile cookies.
const ORIGIN_WIDE: &[u8] = b"HTTP/1.1 200 OK\r\n\
    Service-Worker-Allowed: /\r\n\
    Clear-Site-Data: \"*\"\r\n\
    Alt-Svc: h3=\":443\"\r\n\
    Strict-Transport-Security: max-age=31536000; includeSubDomains\r\n\
    Public-Key-Pins: pin-sha256=\"AAAA\"; max-age=1\r\n\
    Set-Cookie: =SESSION=evil; Path=/\r\n\
    Set-Cookie: SESSION\r\n\
    Set-Cookie: session=evil\r\n\
    Set-Cookie: %53ESSION=evil\r\n\
    Set-Cookie: theirs=1\r\n\
    X-Custom: kept\r\n\
    Content-Length: 2\r\n\r\nok";

#[tokio::test]
async fn o5_origin_wide_response_headers_and_tossed_cookies_never_reach_the_client() {
    let up = Upstream::canned(ORIGIN_WIDE).await;
    let app = start_app(layer().cookies(CookiePolicy::new().protect("SESSION"))).await;
    app.target(&up, "");
    let r = app.get("/proxy/sw.js", "").await;
    assert_eq!(r.status, 200);
    for gone in [
        "clear-site-data",
        "alt-svc",
        "strict-transport-security",
        "public-key-pins",
    ] {
        assert!(!r.has(gone), "{gone} reached the client:\n{}", r.head_str());
    }
    // The service worker's scope stays under the prefix.
    assert_eq!(r.one("service-worker-allowed"), "/proxy/");
    let cookies: Vec<String> = r
        .all("set-cookie")
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert_eq!(cookies, ["theirs=1; Path=/proxy"]);
    assert_eq!(r.one("x-custom"), "kept");

    // An app that trusts its target with them keeps what it names.
    let app = start_app(
        layer().responses(
            ResponsePolicy::new()
                .keep(http::header::STRICT_TRANSPORT_SECURITY)
                .keep(http::HeaderName::from_static("service-worker-allowed")),
        ),
    )
    .await;
    app.target(&up, "");
    let r = app.get("/proxy/sw.js", "").await;
    assert_eq!(
        r.one("strict-transport-security"),
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(r.one("service-worker-allowed"), "/");
    assert!(!r.has("clear-site-data"));
}

#[tokio::test]
async fn o6_a_host_outside_the_public_origins_is_421_and_never_forwarded() {
    let up = Upstream::ok().await;
    let app =
        start_app(layer().public_origin(PublicOrigin::from_static("https://app.example.com")))
            .await;
    app.target(&up, "");
    let req = |host: &str| format!("GET /proxy/x HTTP/1.1\r\nHost: {host}\r\n\r\n");
    for host in ["attacker.example:1", "app.example.com.evil", "127.0.0.1"] {
        let (r, _) = app.exchange(req(host).as_bytes()).await;
        assert_eq!(r.status, 421, "{host}");
    }
    // An absolute-form target naming the origin does not help a Host that names another.
    let (r, _) = app
        .exchange(b"GET https://app.example.com/proxy/x HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
        .await;
    assert_eq!(r.status, 400);
    up.assert_untouched();
    let (r, _) = app.exchange(req("app.example.com").as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.one("x-forwarded-host"), "app.example.com");
    assert_eq!(got.one("x-forwarded-proto"), "https");
    assert_eq!(
        decode_rs512(&got.bearer())["iss"],
        "https://app.example.com"
    );
}
