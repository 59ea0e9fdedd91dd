//! K. Pass-through and tower plumbing.

use tower::{ServiceBuilder, limit::ConcurrencyLimitLayer};
use tower_identity_proxy::identity::Identity;

use crate::support::*;

#[tokio::test]
async fn k1_requests_outside_the_prefix_are_untouched() {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let req = format!(
        "POST /inner/echo?q=%2e%2e HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
         TE: trailers\r\nAuthorization: Basic eDp5\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=x\r\n\
         Cookie: JSESSIONID=s\r\nVia: 1.0 fred\r\nContent-Length: 4\r\n\r\nbody",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let seen = r.text();
    assert!(
        seen.starts_with("POST /inner/echo?q=%2e%2e HTTP/1.1\n"),
        "{seen}"
    );
    for line in [
        "connection: keep-alive, X-Hop",
        "x-hop: 1",
        "te: trailers",
        "authorization: Basic eDp5",
        "x-forwarded-for: 1.2.3.4",
        "forwarded: for=x",
        "cookie: JSESSIONID=s",
        "via: 1.0 fred",
    ] {
        assert!(
            seen.contains(&format!("\n{line}\n")),
            "{line} missing:\n{seen}"
        );
    }
    assert!(seen.ends_with("\n\nbody"), "{seen}");
    assert!(!r.has("via"), "the proxy touched an inner response");
    up.assert_untouched();
}

#[tokio::test]
async fn k2_proxied_requests_never_hold_the_inner_services_readiness() {
    let up = Upstream::ok().await;
    let handle = ProxyHandle::new();
    let proxy = layer().handle(handle.clone());
    let service = ServiceBuilder::new()
        .layer(proxy)
        .layer(ConcurrencyLimitLayer::new(1))
        .service(inner_router());
    let app = serve_service(service, handle, ServeOptions::default()).await;
    app.target(&up, "");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let addr = app.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Raw::connect(addr).await;
            c.send(format!("GET /proxy/x HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                .await;
            c.response(false).await.expect("response").status
        }));
    }
    let inner = app.get("/health", "").await;
    assert_eq!((inner.status, inner.text().as_str()), (200, "ok"));
    for t in tasks {
        assert_eq!(within("proxied request", t).await.unwrap(), 200);
    }
    assert_eq!(up.requests().len(), 50);
}

#[tokio::test]
async fn k3_a_panicking_extractor_costs_one_request_only() {
    let extractor = |parts: &http::request::Parts| {
        let boom = parts.headers.contains_key("x-panic");
        async move {
            if boom {
                panic!("extractor bug (expected by this test)");
            }
            Ok(Some(Identity::anonymous()))
        }
    };
    let up = Upstream::ok().await;
    let app = start_app(layer().with_identity(extractor)).await;
    app.target(&up, "");
    let mut c = app.raw().await;
    c.send(
        format!(
            "GET /proxy/x HTTP/1.1\r\nHost: {}\r\nX-Panic: 1\r\n\r\n",
            app.addr
        )
        .as_bytes(),
    )
    .await;
    // The connection ends (or a 500): never a forwarded request.
    if let Some(r) = c.response(false).await {
        assert_eq!(r.status, 500);
    }
    up.assert_untouched();
    // Shared state (target, pool, token cache) still works.
    for _ in 0..3 {
        assert_eq!(app.get("/proxy/x", "").await.status, 200);
    }
    assert_eq!(up.requests().len(), 3);
}
