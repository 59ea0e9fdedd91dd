//! Forwarding: what the target receives, what the client gets back, and the failures.

use std::{convert::Infallible, time::Duration};

use axum::{Router, body::Body, extract::Request, response::Response};
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::{BodyExt, StreamBody};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};
use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    client::ProxyClient,
    identity::{BasicAuth, CredentialStore, Identity, IdentityExtractor},
    jwt::{JwtSigner, KeySigner, SignError, Token, TokenPolicy},
};

use crate::{
    common::{
        self, TestBody, basic, empty, full, get, get_with, random_bytes, raw, send, serve,
        spawn_app,
    },
    layer, layer_to,
};
use tower_identity_proxy::proxy::ForwardedProto;

fn request(method: &str, url: &str) -> http::request::Builder {
    http::Request::builder().method(method).uri(url)
}

#[tokio::test]
async fn method_path_and_query_are_forwarded_byte_for_byte() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PURGE"] {
        let r = send(
            request(method, &app.url("/proxy/some/path?foo=bar"))
                .body(empty())
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 200, "{method}");
        let seen = target.last();
        assert_eq!(seen.method.as_str(), method);
        assert_eq!(seen.uri.to_string(), "/some/path?foo=bar");
    }
    // Escapes, repeated and empty parameters, `+`, `%2F`, a bare `?`: all unchanged.
    for path_and_query in [
        "/proxy/a%2Fb/c%20d?x=1&x=2&&empty=&plus=a+b&pct=%41%2f%zz",
        "/proxy/p?",
        "/proxy/p?q=%E2%9C%93&json={%22a%22:1}",
        "/proxy/%7Euser/;matrix=1?a=b;c",
    ] {
        let head =
            format!("GET {path_and_query} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        let res = raw(app.addr, head.as_bytes()).await;
        assert_eq!(res.status, 200, "{path_and_query}");
        let expected = path_and_query.strip_prefix("/proxy").unwrap();
        assert_eq!(target.last().uri.to_string(), expected);
    }
}

#[tokio::test]
async fn request_headers_are_forwarded_in_order() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    let r = send(
        request("GET", &app.url("/proxy/h"))
            .header("x-multi", "one")
            .header("x-multi", "two")
            .header("accept", "application/json")
            .header("user-agent", "walkthrough/1")
            .header(
                "x-opaque",
                HeaderValue::from_bytes(b"caf\xc3\xa9 \x80").unwrap(),
            )
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = target.last();
    let multi: Vec<_> = seen.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["one", "two"]);
    assert_eq!(seen.header("accept").unwrap(), "application/json");
    assert_eq!(seen.header("user-agent").unwrap(), "walkthrough/1");
    assert_eq!(seen.headers["x-opaque"].as_bytes(), b"caf\xc3\xa9 \x80");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_any_bytes_and_size_round_trip() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    for size in [0, 1, 32, 65_537, 8 * 1024 * 1024] {
        let bytes = random_bytes(size);
        let r = echo_upload(&app, &bytes).await;
        assert_eq!(r.status, 200, "{size}");
        // Content-Length preserved both ways.
        let seen = target.last();
        assert_eq!(
            seen.header("content-length"),
            Some(size.to_string()),
            "{size}: {:?}",
            seen.headers
        );
        assert!(seen.header("transfer-encoding").is_none());
        assert_eq!(seen.body.len(), size);
        assert!(seen.body == bytes, "the target got the bytes sent ({size})");
        assert_eq!(r.header("content-length").unwrap(), size.to_string());
        assert!(r.body == bytes, "the client got the bytes back ({size})");
        assert_eq!(r.header("x-custom-header").unwrap(), "lorem ipsum");
    }
}

/// POSTs `bytes` with a `Content-Length` to `/proxy/upload`, asking the target to echo them.
async fn echo_upload(app: &common::Server, bytes: &[u8]) -> common::Reply {
    send(
        request("POST", &app.url("/proxy/upload"))
            .header("x-echo", "body")
            .header("content-length", bytes.len())
            .body(full(bytes.to_vec()))
            .unwrap(),
    )
    .await
}

/// A body sent in chunks through a channel, with no `Content-Length`.
fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, common::BoxError>(http_body::Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

#[tokio::test]
async fn a_chunked_upload_without_content_length_is_forwarded_chunked() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    let (tx, body) = channel_body();
    let sender = tokio::spawn(async move {
        for part in ["first ", "second ", "third"] {
            tx.send(Bytes::from(part)).await.unwrap();
        }
    });
    let r = send(
        request("PUT", &app.url("/proxy/chunks"))
            .header("x-echo", "body")
            .body(body)
            .unwrap(),
    )
    .await;
    sender.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "first second third");
    let seen = target.last();
    assert_eq!(seen.header("transfer-encoding").unwrap(), "chunked");
    assert!(seen.header("content-length").is_none());
    assert_eq!(seen.body, "first second third");

    // The same by hand, with chunk extensions and a trailer section.
    let res = raw(
        app.addr,
        b"POST /proxy/raw HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\
              Connection: close\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(target.last().body, "hello world");
}

#[tokio::test]
async fn a_get_with_a_body_keeps_it() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    let res = raw(
        app.addr,
        b"GET /proxy/search HTTP/1.1\r\nHost: app.test\r\nContent-Length: 13\r\n\
              Content-Type: application/json\r\nConnection: close\r\n\r\n{\"q\":\"rust\"}\n",
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = target.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.body, "{\"q\":\"rust\"}\n");
    assert_eq!(seen.header("content-length").unwrap(), "13");
    let r = send(
        request("GET", &app.url("/proxy/search"))
            .body(full("via hyper"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(target.last().body, "via hyper");
}

/// A target that answers as soon as the request's first chunk arrives, then echoes each
/// further chunk as it comes: only a proxy that streams both ways lets the client see the
/// first answer while its request is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bodies_are_streamed() {
    let streaming = Router::new().fallback(|req: Request| async move {
        let mut body = req.into_body();
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let mut echoed = b"got:".to_vec();
                    echoed.extend_from_slice(&data);
                    if tx.send(Bytes::from(echoed)).await.is_err() {
                        break;
                    }
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(http_body::Frame::data(b)), rx))
        });
        Response::new(Body::new(StreamBody::new(stream)))
    });
    let target = serve(streaming).await;
    let app = spawn_app(layer().handle(ProxyHandle::with_target(
        Target::parse(&target.url("")).unwrap(),
    )))
    .await;

    let (tx, body) = channel_body();
    tx.send(Bytes::from("one")).await.unwrap();
    let exchange = async {
        let res = common::client()
            .request(
                request("POST", &app.url("/proxy/duplex"))
                    .body(body)
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "got:one");
        tx.send(Bytes::from("two")).await.unwrap();
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "got:two");
        drop(tx);
        assert!(body.frame().await.is_none());
    };
    // Buffering would hang (the request never ends while we wait); the bound turns that
    // into a failure.
    crate::common::within("both bodies are streamed", exchange).await;
}

#[tokio::test]
async fn the_targets_status_headers_and_body_come_back() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    for status in [200, 201, 204, 301, 404, 418, 500, 503] {
        let r = get_with(
            &app.url("/proxy/status"),
            &[("x-echo-status", &status.to_string())],
        )
        .await;
        assert_eq!(r.status.as_u16(), status);
        assert_eq!(r.header("x-custom-header").unwrap(), "lorem ipsum");
        if status != 204 && status != 304 {
            assert_eq!(r.header("content-type").unwrap(), "application/json");
            let length: usize = r.header("content-length").unwrap().parse().unwrap();
            assert_eq!(length, r.body.len());
            assert_eq!(r.json()["path"], "/status");
        }
    }
}

#[tokio::test]
async fn authorization_is_always_replaced() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    for sent in [
        basic("Alice", "abcdef123456"),
        "Bearer forged.token.here".to_owned(),
        "Negotiate abc".to_owned(),
    ] {
        let r = get_with(&app.url("/proxy/a"), &[("authorization", &sent)]).await;
        assert_eq!(r.status, 200);
        let seen = target.last();
        assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
        assert_ne!(seen.header("authorization").unwrap(), sent);
        assert_eq!(seen.claims()["sub"], "anonymousUser");
    }
    // Two Authorization headers from the client: still exactly one, ours.
    let r = raw(
        app.addr,
        b"GET /proxy/two HTTP/1.1\r\nHost: a\r\nAuthorization: Basic eDp5\r\n\
              Authorization: Bearer x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(target.last().claims()["sub"], "anonymousUser");

    // With Basic authentication, the target learns the user from the token only.
    let users = CredentialStore::new();
    users
        .insert("Alice", "abcdef123456", ["ROLE_USER"])
        .unwrap();
    let app =
        spawn_app(layer_to(&target).with_identity(BasicAuth::new(users).or_anonymous())).await;
    let r = get_with(
        &app.url("/proxy/a"),
        &[("authorization", &basic("Alice", "abcdef123456"))],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = target.last();
    assert!(seen.header("authorization").unwrap().starts_with("Bearer "));
    assert!(!format!("{:?}", seen.headers).contains("abcdef123456"));
    assert_eq!(seen.claims()["sub"], "Alice");
}

/// `forwarded_for` with axum's `ConnectInfo`: the target learns the address the client
/// connected from, over IPv4 and IPv6, whatever `X-Forwarded-For` the client sent.
#[tokio::test]
async fn x_forwarded_for_is_the_peer_address_axum_reports() {
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    let target = common::echo_target().await;
    let app = common::inner_echo().layer(layer_to(&target).forwarded_for(|parts| {
        let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
        Some(peer.ip())
    }));
    for local in ["127.0.0.1:0", "[::1]:0"] {
        let Ok(listener) = tokio::net::TcpListener::bind(local).await else {
            eprintln!("skipped {local}: no such loopback address here");
            continue;
        };
        let addr = listener.local_addr().unwrap();
        let served = app
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let server = tokio::spawn(async move { axum::serve(listener, served).await });
        let reply = get_with(
            &format!("http://{addr}/proxy/fwd"),
            &[("x-forwarded-for", "6.6.6.6"), ("x-real-ip", "6.6.6.6")],
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = target.last();
        assert_eq!(
            seen.header("x-forwarded-for").unwrap(),
            addr.ip().to_string(),
            "{local}"
        );
        assert!(seen.header("x-real-ip").is_none());
        server.abort();
    }
    assert!(target.count() >= 1);
}

#[tokio::test]
async fn x_forwarded_headers_are_set_and_host_is_the_targets() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    let res = raw(
        app.addr,
        b"GET /proxy/fwd HTTP/1.1\r\nHost: example.com:1337\r\n\
              X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n\
              X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Port: 1\r\nForwarded: for=1.2.3.4\r\n\
              Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = target.last();
    assert_eq!(seen.header("x-forwarded-host").unwrap(), "example.com:1337");
    assert_eq!(seen.header("x-forwarded-proto").unwrap(), "http");
    assert_eq!(seen.header("host").unwrap(), target.addr().to_string());
    for gone in ["x-forwarded-for", "x-forwarded-port", "forwarded"] {
        assert!(seen.header(gone).is_none(), "{gone}");
    }
    // Through hyper: the Host the client used, port included.
    get(&app.url("/proxy/fwd")).await;
    assert_eq!(
        target.last().header("x-forwarded-host").unwrap(),
        app.addr.to_string()
    );

    // An app served over TLS (or behind a TLS terminator) says so.
    let tls_app = spawn_app(layer_to(&target).forwarded_proto(ForwardedProto::Https)).await;
    get(&tls_app.url("/proxy/fwd")).await;
    assert_eq!(target.last().header("x-forwarded-proto").unwrap(), "https");
    assert!("ftp".parse::<ForwardedProto>().is_err());
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    let res = raw(
        app.addr,
        b"GET /proxy/hop HTTP/1.1\r\nHost: app.test\r\n\
              Connection: close, X-Secret, Authorization\r\nConnection: x-other\r\n\
              X-Secret: s\r\nX-Other: o\r\nKeep-Alive: timeout=5\r\n\
              Proxy-Connection: keep-alive\r\nTE: gzip\r\nUpgrade: websocket\r\n\
              Proxy-Authorization: Basic eDp5\r\nX-End-To-End: kept\r\n\r\n",
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = target.last();
    for gone in [
        "connection",
        "x-secret",
        "x-other",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(seen.header(gone).is_none(), "{gone} reached the target");
    }
    assert_eq!(seen.header("x-end-to-end").unwrap(), "kept");
    // `Connection: Authorization` did not strip the token: it was added after.
    assert_eq!(seen.claims()["sub"], "anonymousUser");

    // From the target back: its hop-by-hop headers stay between it and the proxy.
    let r = get_with(&app.url("/proxy/hop"), &[("x-echo-hop", "1")]).await;
    assert_eq!(r.status, 200);
    for gone in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
    ] {
        assert!(r.header(gone).is_none(), "{gone} reached the client");
    }
    assert_eq!(r.header("x-end-to-end").unwrap(), "kept");
}

#[tokio::test]
async fn an_unreachable_target_is_a_502() {
    // A port that was just free: nothing listens there any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let app = spawn_app(layer().handle(ProxyHandle::with_target(
        Target::parse(&format!("http://{closed}")).unwrap(),
    )))
    .await;
    let r = get(&app.url("/proxy/x")).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.header("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    let text = r.text();
    assert!(!text.contains("127.0.0.1") && !text.contains(&closed.port().to_string()));
    assert!(!text.to_lowercase().contains("refused"), "{text}");
}

#[tokio::test]
async fn a_slow_target_is_a_504_after_the_configured_timeout() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target).upstream_timeout(Duration::from_millis(200))).await;
    // The target answers a minute later, after any wait of the suite: only the timeout
    // can answer first, however slow the test machine.
    let r = get_with(&app.url("/proxy/slow"), &[("x-echo-delay-ms", "60000")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        r.header("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(r.text(), "The proxy target did not respond in time.");
    // The default timeout (30 s) lets a slower answer through.
    let patient = spawn_app(layer_to(&target)).await;
    let r = get_with(&patient.url("/proxy/slow"), &[("x-echo-delay-ms", "400")]).await;
    assert_eq!(r.status, 200);
}

/// A signer whose key store is down.
struct FailingSigner;

impl JwtSigner for FailingSigner {
    async fn sign(&self, _identity: &Identity) -> Result<Token, SignError> {
        Err(SignError::new("HSM at 10.9.8.7 is offline"))
    }
}

#[tokio::test]
async fn a_signing_failure_is_a_500_and_nothing_is_sent() {
    let target = common::echo_target().await;
    let app = spawn_app(
        ProxyLayer::uncached(FailingSigner).handle(ProxyHandle::with_target(
            Target::parse(&target.url()).unwrap(),
        )),
    )
    .await;
    let r = send(
        request("POST", &app.url("/proxy/x"))
            .body(full("payload"))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.header("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert!(!r.text().contains("HSM") && !r.text().contains("10.9.8.7"));
    assert_eq!(target.count(), 0, "nothing reached the target");
}

#[tokio::test]
async fn http2_clients_are_forwarded_as_http1() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<TestBody>();
    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for part in ["over ", "h2"] {
            tx.send(Bytes::from(part)).await.unwrap();
        }
    });
    let res = h2
        .request(
            request("POST", &app.url("/proxy/h2?q=1"))
                .header("x-echo", "body")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.headers()["x-custom-header"], "lorem ipsum");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "over h2");
    let seen = target.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.uri.to_string(), "/h2?q=1");
    assert_eq!(seen.header("transfer-encoding").unwrap(), "chunked");
    // `:authority` is the Host the client used.
    assert_eq!(
        seen.header("x-forwarded-host").unwrap(),
        app.addr.to_string()
    );
    assert_eq!(seen.header("host").unwrap(), target.addr().to_string());
    assert_eq!(seen.claims()["sub"], "anonymousUser");
}

#[tokio::test]
async fn head_requests_keep_the_targets_length() {
    let file = Router::new().route("/file", axum::routing::get(|| async { vec![7u8; 1234] }));
    let target = serve(file).await;
    let app = spawn_app(layer().handle(ProxyHandle::with_target(
        Target::parse(&target.url("")).unwrap(),
    )))
    .await;
    let get = send(
        request("GET", &app.url("/proxy/file"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(get.header("content-length").unwrap(), "1234");
    assert_eq!(get.body.len(), 1234);
    let head = send(
        request("HEAD", &app.url("/proxy/file"))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length").unwrap(), "1234");
    assert!(head.body.is_empty());
}

/// `Duration::MAX` as "no limit" for every timeout and the token's lifetime: a request
/// still goes through (these used to overflow an instant and panic on the request path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_timeouts_and_lifetime_forward_normally() {
    let target = common::echo_target().await;
    let signer = KeySigner::rs512(common::rsa_keys())
        .unwrap()
        .policy(TokenPolicy::new().lifetime(Duration::MAX));
    let client = ProxyClient::builder()
        .pool_idle_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .build()
        .unwrap();
    let proxy = ProxyLayer::new(signer)
        .upstream_timeout(Duration::MAX)
        .upstream_body_timeout(Duration::MAX)
        .client(client)
        .handle(ProxyHandle::with_target(
            Target::parse(&target.url()).unwrap(),
        ));
    let app = spawn_app(proxy).await;
    for size in [0, 4 * 1024 * 1024] {
        let bytes = random_bytes(size);
        let r = echo_upload(&app, &bytes).await;
        assert_eq!(r.status, 200, "{size}: {}", r.text());
        assert!(r.body == bytes, "the client got the bytes back ({size})");
    }
    // The token lives as long as the policy allows, 100 years, and verifies.
    let claims = target.last().claims();
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    let century = 86_400 * 365 * 100;
    assert!(
        exp >= iat + century && exp <= iat + century + 60,
        "{claims}"
    );
}

/// A close-delimited body (HTTP/1.0 style, sent in two parts) is read ahead within the
/// upstream timeout; with `Duration::MAX` that deadline is far off, not an overflow.
#[tokio::test]
async fn an_unbounded_timeout_reads_a_close_delimited_body_ahead() {
    let old = common::Server::spawn(|listener| async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nhello, ")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = stream.write_all(b"world").await;
            });
        }
    })
    .await;
    let proxy = layer()
        .upstream_timeout(Duration::MAX)
        .upstream_body_timeout(Duration::MAX)
        .handle(ProxyHandle::with_target(
            Target::parse(&old.url("")).unwrap(),
        ));
    let app = spawn_app(proxy).await;
    let r = get(&app.url("/proxy/old")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello, world");
    assert_eq!(r.header("content-length").unwrap(), "12");
}
