//! The layer: which requests it takes over, pass-through, readiness, axum and tonic stacks,
//! the disabled state, and the target handle.

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    middleware::{self, Next},
    routing::get as route_get,
};
use bytes::Bytes;
use futures_util::FutureExt as _;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::sync::Notify;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_identity_proxy::ConfigError;

use crate::{
    common::{self, Marker, empty, full, get, inner_echo, raw, serve, spawn_app},
    layer, layer_to,
};
use tower_identity_proxy::{ProxyHandle, Target, proxy::Prefix};

#[tokio::test]
async fn takes_over_the_prefix_and_nothing_else() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target)).await;
    for (path, upstream) in [
        ("/proxy", "/"),
        ("/proxy/", "/"),
        ("/proxy/a", "/a"),
        ("/proxy?x=1", "/?x=1"),
        ("/proxy/a/b/?x=1&y", "/a/b/?x=1&y"),
    ] {
        let before = target.count();
        let r = get(&app.url(path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["inner"], serde_json::Value::Null, "{path}");
        assert_eq!(target.count(), before + 1, "{path}");
        assert_eq!(target.last().uri.to_string(), upstream, "{path}");
    }
    let before = target.count();
    for path in [
        "/proxyfoo",
        "/proxyfoo/a",
        "/prox",
        "/",
        "/api/proxy",
        "/PROXY",
        "/proxy.json",
    ] {
        let r = get(&app.url(path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["inner"], true, "{path}");
        assert_eq!(r.json()["path"], path);
    }
    assert_eq!(target.count(), before, "no other path reached the target");
}

#[tokio::test]
async fn the_prefix_is_configurable() {
    let target = common::echo_target().await;
    let app = spawn_app(layer_to(&target).prefix("/api/forward".parse().unwrap())).await;
    let r = get(&app.url("/api/forward/x?y=1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(target.last().uri.to_string(), "/x?y=1");
    get(&app.url("/api/forward")).await;
    assert_eq!(target.last().uri.to_string(), "/");
    for inner in ["/proxy/x", "/api/forwarder", "/api"] {
        assert_eq!(get(&app.url(inner)).await.json()["inner"], true, "{inner}");
    }
    assert_eq!(target.count(), 2);
}

#[test]
fn invalid_prefixes_are_config_errors() {
    for bad in [
        "", "proxy", "/", "/proxy/", "/a b", "/a//b", "/a/../b", "/a/./b", "/a?x", "/a#x", "/é",
    ] {
        match bad.parse::<Prefix>() {
            Err(e @ ConfigError::InvalidPrefix { .. }) => {
                assert!(e.to_string().contains(&format!("{bad:?}")), "{bad}: {e}");
            }
            other => panic!("{bad:?} accepted: {other:?}"),
        }
    }
    for good in ["/p", "/api/v1/proxy", "/a-b_c.d~e"] {
        assert_eq!(Prefix::new(good).unwrap().as_str(), good);
    }
}

#[tokio::test]
async fn other_requests_pass_through_untouched() {
    let target = common::echo_target().await;
    // An outer middleware puts an extension in; the inner service must see it.
    let app = serve(
        inner_echo()
            .layer(layer_to(&target))
            .layer(middleware::from_fn(|mut req: Request, next: Next| async {
                req.extensions_mut().insert(Marker("from outside".into()));
                next.run(req).await
            })),
    )
    .await;
    let auth = common::basic("Alice", "secret");
    let res = common::send(
        http::Request::builder()
            .method("PATCH")
            .uri(app.url("/api/thing?q=%20a&b"))
            .header("authorization", &auth)
            .header("connection", "x-not-hop-for-the-app")
            .header("x-not-hop-for-the-app", "1")
            .header("x-forwarded-host", "client.example")
            .header("x-multi", "1")
            .header("x-multi", "2")
            .body(full("the body"))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, 200);
    let seen = res.json();
    assert_eq!(seen["inner"], true);
    assert_eq!(seen["method"], "PATCH");
    assert_eq!(seen["path"], "/api/thing");
    assert_eq!(seen["query"], "q=%20a&b");
    assert_eq!(seen["body"], "the body");
    assert_eq!(seen["marker"], "from outside");
    let headers: Vec<(String, String)> = serde_json::from_value(seen["headers"].clone()).unwrap();
    let has = |k: &str, v: &str| headers.iter().any(|(hk, hv)| hk == k && hv == v);
    assert!(has("authorization", &auth), "{headers:?}");
    assert!(has("connection", "x-not-hop-for-the-app"));
    assert!(has("x-not-hop-for-the-app", "1"));
    assert!(has("x-forwarded-host", "client.example"));
    assert!(has("x-multi", "1") && has("x-multi", "2"));
    assert!(!headers.iter().any(|(k, _)| k == "via"));
    // The inner response is not rewritten either.
    assert!(res.header("via").is_none());
    assert!(res.header("x-custom-header").is_none());
    assert_eq!(target.count(), 0);
}

/// An inner service whose `/hold` request waits until released, behind a concurrency limit
/// of one: `/proxy` requests and other inner requests sent meanwhile all complete once it
/// is released (the proxy forwards the inner service's readiness and never deadlocks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_backpressure_is_forwarded_without_deadlock() {
    let target = common::echo_target().await;
    let release = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let inner = Router::new()
        .route(
            "/hold",
            route_get({
                let (release, entered) = (Arc::clone(&release), Arc::clone(&entered));
                move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "released"
                }
            }),
        )
        .route("/inner", route_get(|| async { "inner" }));
    let svc = ServiceBuilder::new()
        .layer(layer_to(&target))
        .concurrency_limit(1)
        .service(inner)
        .map_request(|r: Request| r)
        .map_response(|r: http::Response<_>| r.map(axum::body::Body::new));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, axum::ServiceExt::into_make_service(svc)).await
    });
    let url = |p: &str| format!("http://{addr}{p}");

    let hold = tokio::spawn(get_owned(url("/hold")));
    crate::common::within(
        "the held request reaches the inner service",
        entered.notified(),
    )
    .await;
    let mut others = Vec::new();
    for i in 0..12 {
        others.push(tokio::spawn(get_owned(url(&format!("/proxy/n{i}")))));
    }
    others.push(tokio::spawn(get_owned(url("/inner"))));
    release.notify_one();
    let all = async {
        assert_eq!(hold.await.unwrap(), (StatusCode::OK, "released".to_owned()));
        for o in others {
            assert_eq!(o.await.unwrap().0, StatusCode::OK);
        }
    };
    // A hang would be the bug; this bound only turns it into a failure.
    crate::common::within("every request completes", all).await;
    assert_eq!(target.count(), 12);
    server.abort();
}

async fn get_owned(url: String) -> (StatusCode, String) {
    let r = get(&url).await;
    (r.status, r.text())
}

/// In process: the proxy's `poll_ready` is the inner service's.
#[tokio::test]
async fn poll_ready_is_the_inner_services() {
    let target = common::echo_target().await;
    let inner = tower::service_fn(|_req: http::Request<Full<Bytes>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("inner"))))
    });
    let mut first = ServiceBuilder::new()
        .layer(layer_to(&target))
        .concurrency_limit(1)
        .service(inner);
    let mut second = first.clone();
    first.ready().await.unwrap();
    assert!(
        second.ready().now_or_never().is_none(),
        "not ready while the limit is taken"
    );
    // A request under the prefix does not use the reserved slot of the inner service...
    let res = first
        .call(
            http::Request::get("/proxy/x")
                .header("host", "app.test")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(target.last().uri.to_string(), "/x");
    // ...which is freed when the service holding it goes.
    drop(first);
    second.ready().await.unwrap();
    let res = second
        .call(http::Request::get("/other").body(Full::default()).unwrap())
        .await
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "inner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_in_a_tonic_server_with_grpc_passing_through() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus as Status,
        health_client::HealthClient,
    };

    let target = common::echo_target().await;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("demo.Greeter", tonic_health::ServingStatus::Serving)
        .await;
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(layer_to(&target))
            .add_service(health)
            .serve_with_incoming(incoming),
    );

    // A real gRPC call to the inner service, through the layer.
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let ok = client
        .check(HealthCheckRequest {
            service: "demo.Greeter".into(),
        })
        .await
        .unwrap();
    assert_eq!(ok.into_inner().status, Status::Serving as i32);
    let err = client
        .check(HealthCheckRequest {
            service: "unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The same call by hand over HTTP/2: the trailers come back intact.
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<common::TestBody>();
    // An empty HealthCheckRequest in a gRPC frame: uncompressed, length 0.
    let frame = Bytes::from_static(&[0, 0, 0, 0, 0]);
    let res = h2
        .request(
            http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(full(frame))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/grpc");
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("gRPC trailers");
    assert_eq!(trailers["grpc-status"], "0");
    let message = collected.to_bytes();
    // Frame header, then `status: SERVING` (field 1, varint 1): the server's overall status.
    assert_eq!(message.as_ref(), &[0, 0, 0, 0, 2, 8, 1]);

    // /proxy on the same server, over HTTP/1.1 (accept_http1) and HTTP/2.
    let r = get(&format!("http://{addr}/proxy/over-h1?x=1")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-custom-header").unwrap(), "lorem ipsum");
    assert_eq!(target.last().uri.to_string(), "/over-h1?x=1");
    let r = h2
        .request(
            http::Request::get(format!("http://{addr}/proxy/over-h2"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(target.last().uri.to_string(), "/over-h2");
    assert_eq!(target.last().claims()["sub"], "anonymousUser");
    assert_eq!(target.count(), 2);
    server.abort();
}

#[tokio::test]
async fn disabled_by_default() {
    let app = spawn_app(layer()).await;
    for method in [Method::GET, Method::POST, Method::DELETE] {
        for path in ["/proxy", "/proxy/", "/proxy/some/path?foo=bar"] {
            let r = common::send(
                http::Request::builder()
                    .method(method.clone())
                    .uri(app.url(path))
                    .body(full("ignored"))
                    .unwrap(),
            )
            .await;
            assert_eq!(r.status, 501, "{method} {path}");
            assert_eq!(
                r.header("content-type").unwrap(),
                "text/plain; charset=utf-8"
            );
            assert_eq!(r.text(), "The proxy is disabled.");
        }
    }
    // The app itself works.
    assert_eq!(get(&app.url("/api")).await.json()["inner"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handle_changes_the_target_from_any_thread() {
    let one = common::echo_target().await;
    let two = common::echo_target().await;
    let handle = ProxyHandle::new();
    let proxy = layer().handle(handle.clone());
    let app = spawn_app(proxy).await;
    assert!(!handle.is_enabled());
    assert_eq!(get(&app.url("/proxy/a")).await.status, 501);

    let (h, url) = (handle.clone(), one.url());
    std::thread::spawn(move || h.set_target(Some(&url)).unwrap())
        .join()
        .unwrap();
    assert_eq!(get(&app.url("/proxy/a")).await.status, 200);
    assert_eq!(one.count(), 1);

    let (h, url) = (handle.clone(), two.url());
    std::thread::spawn(move || h.set_target(Some(&url)).unwrap())
        .join()
        .unwrap();
    assert_eq!(get(&app.url("/proxy/b")).await.status, 200);
    assert_eq!((one.count(), two.count()), (1, 1));
    assert_eq!(handle.target().unwrap().as_str(), two.url());

    let h = handle.clone();
    std::thread::spawn(move || h.set_target(None).unwrap())
        .join()
        .unwrap();
    assert_eq!(
        get(&app.url("/proxy/c")).await.text(),
        "The proxy is disabled."
    );
    assert_eq!((one.count(), two.count()), (1, 1));
}

#[tokio::test]
async fn invalid_urls_are_refused_and_the_previous_target_stays() {
    let target = common::echo_target().await;
    let handle = ProxyHandle::with_target(Target::parse(&target.url()).unwrap());
    let proxy = layer().handle(handle.clone());
    let app = spawn_app(proxy).await;
    for (url, names) in [
        ("ftp://example.com", "scheme"),
        ("unix:/var/run/x.sock", "scheme"),
        ("example.com:80", "scheme"),
        ("http://", "parsed"),
        ("http://:80", "host"),
        ("http://example.com/?q=1", "query"),
        ("http://example.com/#top", "fragment"),
        ("http://user:pw@example.com", "user info"),
        ("not a url", "spaces"),
        ("", "empty"),
    ] {
        let err = handle.set_target(Some(url)).unwrap_err();
        let ConfigError::InvalidTarget { .. } = &err else {
            panic!("{url}: {err:?}")
        };
        assert!(err.to_string().contains(names), "{url}: {err}");
        assert_eq!(handle.target().unwrap().as_str(), target.url());
        let r = get(&app.url("/proxy/still")).await;
        assert_eq!(r.status, 200, "{url}");
    }
    assert!(Target::parse("ftp://x").is_err());
}

#[tokio::test]
async fn the_target_base_path_is_kept() {
    let target = common::echo_target().await;
    let handle = ProxyHandle::new();
    let proxy = layer().handle(handle.clone());
    let app = spawn_app(proxy).await;
    for base in ["/base", "/base/"] {
        handle
            .set_target(Some(&format!("{}{base}", target.url())))
            .unwrap();
        for (path, upstream) in [
            ("/proxy", "/base"),
            ("/proxy/", "/base/"),
            ("/proxy/x?y=1", "/base/x?y=1"),
            ("/proxy?y=1", "/base?y=1"),
            ("/proxy/a/b/", "/base/a/b/"),
        ] {
            get(&app.url(path)).await;
            assert_eq!(target.last().uri.to_string(), upstream, "{base} {path}");
        }
    }
    handle.set_target(Some(&target.url())).unwrap();
    get(&app.url("/proxy")).await;
    assert_eq!(target.last().uri.to_string(), "/");
    // Dot-segments cannot climb out of the base path.
    handle
        .set_target(Some(&format!("{}/base", target.url())))
        .unwrap();
    let before = target.count();
    let r = raw(
        app.addr,
        b"GET /proxy/../admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(target.count(), before);
}
