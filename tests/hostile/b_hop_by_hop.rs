//! B. Hop-by-hop and control headers on the forwarded request: RFC 9110 §7.6.1 (`Connection`);
//! CVE-2022-31813 (Apache: `Connection` naming the headers the proxy adds).

use http_body_util::BodyExt;

use crate::support::*;

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
    let claims = decode_rs512(&got.bearer());
    assert_eq!(claims["sub"], "anonymousUser");
    assert_eq!(got.one("x-forwarded-host"), app.addr.to_string());
    assert_eq!(got.one("x-forwarded-proto"), "http");
    assert!(got.one("via").starts_with("1.1 tip-"), "{}", got.head_str());
    assert_eq!(got.one("host"), up.addr.to_string());
}

#[tokio::test]
async fn b4_connection_cannot_nominate_away_the_framing() {
    let (up, app) = setup().await;
    let req = format!(
        "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nConnection: Content-Length, Content-Type\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    got.assert_framing();
    assert_eq!(got.one("content-length"), "5");
    assert_eq!(got.body.data, b"hello");
    // An end-to-end header nominated as hop-by-hop is the client's choice: removed.
    assert!(!got.has("content-type"));
}

#[tokio::test]
async fn b5_te_trailers_survives_other_te_values_do_not() {
    let (up, app) = setup().await;
    let r = app
        .get("/proxy/echo", "TE: gzip, trailers\r\nConnection: TE\r\n")
        .await;
    assert_eq!(r.status, 200);
    let r = app.get("/proxy/echo", "TE: gzip\r\n").await;
    assert_eq!(r.status, 200);
    let r = app
        .get("/proxy/echo", "TE: deflate;q=0.5\r\nTE: Trailers\r\n")
        .await;
    assert_eq!(r.status, 200);
    let reqs = up.requests();
    assert_eq!(reqs[0].all("te"), [b"trailers"]);
    assert!(!reqs[1].has("te"), "{}", reqs[1].head_str());
    assert_eq!(reqs[2].all("te"), [b"trailers"]);
}

#[tokio::test]
async fn b6_request_trailers_are_forwarded() {
    let (up, app) = setup().await;
    let req = format!(
        "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nTE: trailers\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n",
        app.addr
    );
    let (r, _c) = app.exchange(req.as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    got.assert_framing();
    assert_eq!(got.body.data, b"hello");
    assert_eq!(got.one("trailer"), "X-Sum");
    assert_eq!(values(&got.body.trailers, "x-sum"), [b"42"]);
}

/// A chunked upload whose trailer section forges what the proxy manages, plus `X-Sum`.
fn forged_trailers_request(app: &App) -> String {
    const FORGED: &str = "Authorization: Bearer forged\r\nX-Forwarded-Host: evil.example\r\n\
         Forwarded: for=evil\r\nX-Real-IP: 1.2.3.4\r\nX_Forwarded_Host: evil.example\r\n\
         Cookie: session=s3cr3t\r\nProxy-Authorization: Basic eDp5\r\nVia: 1.1 forged\r\n\
         Host: evil.example\r\nContent-Length: 99\r\nX-Sum: 42\r\n";
    let names: Vec<&str> = FORGED
        .split("\r\n")
        .filter_map(|l| l.split(':').next())
        .filter(|n| !n.is_empty())
        .collect();
    format!(
        "POST /proxy/echo HTTP/1.1\r\nHost: {}\r\nTE: trailers\r\nTrailer: {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n{FORGED}\r\n",
        app.addr,
        names.join(", ")
    )
}

#[tokio::test]
async fn b6_request_trailers_never_carry_what_the_proxy_manages() {
    // The header section's rules hold in the trailer section too: a target that merges
    // trailers into the headers must not find the client's token, forwarding claims or
    // cookies there.
    let (up, app) = setup().await;
    let (r, _c) = app.exchange(forged_trailers_request(&app).as_bytes()).await;
    assert_eq!(r.status, 200);
    let got = up.only();
    assert_eq!(got.body.data, b"hello");
    let names: Vec<&str> = got.body.trailers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["x-sum"], "{:?}", got.body.trailers);
}

#[tokio::test]
async fn b6_request_trailers_to_an_h2c_target_never_carry_what_the_proxy_manages() {
    use hyper::{Response, body::Incoming, service::service_fn};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    // An HTTP/2 target answering the names of the trailer fields it received.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = service_fn(|req: hyper::Request<Incoming>| async move {
                let collected = req.into_body().collect().await.unwrap();
                let mut names: Vec<String> = collected
                    .trailers()
                    .map(|t| t.keys().map(|n| n.as_str().to_owned()).collect())
                    .unwrap_or_default();
                names.sort();
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                    bytes::Bytes::from(names.join(",")),
                )))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    let h2c = tower_identity_proxy::client::ProxyClient::builder()
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let app = start_app(layer().client(h2c)).await;
    app.handle
        .set_target(Some(&format!("http://{target}")))
        .unwrap();
    let (r, _c) = app.exchange(forged_trailers_request(&app).as_bytes()).await;
    assert_eq!((r.status, r.text().as_str()), (200, "x-sum"));
}

#[tokio::test]
async fn b7_underscore_twins_of_sensitive_names_are_dropped() {
    let (up, app) = setup().await;
    let r = app
        .get(
            "/proxy/echo",
            "X_Forwarded_Host: evil.example\r\nX_Forwarded_For: 1.2.3.4\r\nTransfer_Encoding: chunked\r\n\
             Authorization_: x\r\nContent_Length: 99\r\nX_Real_IP: 1.2.3.4\r\nX_App_Flag: kept\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    let got = up.only();
    let head = got.head_str().to_ascii_lowercase();
    for gone in [
        "x_forwarded_host",
        "x_forwarded_for",
        "transfer_encoding",
        "authorization_",
        "content_length",
        "x_real_ip",
    ] {
        assert!(!head.contains(gone), "{gone} forwarded:\n{head}");
    }
    // Other names with `_` are the app's business and pass.
    assert_eq!(got.one("x_app_flag"), "kept");
    assert_eq!(got.one("x-forwarded-host"), app.addr.to_string());
}
