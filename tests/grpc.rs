//! gRPC through the proxy: a tonic client whose channel adds the `/proxy` prefix calls a
//! tonic server (the standard health service) behind the proxy over h2c.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use common::*;
use http::{Uri, uri::PathAndQuery};
use tokio::net::TcpListener;
use tonic::{
    Code,
    transport::{Channel, Server, server::TcpIncoming},
};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_check_response, health_client::HealthClient},
    server::HealthReporter,
};
use tower::ServiceBuilder;
use tower_identity_proxy::client::ProxyClient;
use tower_identity_proxy::{ProxyHandle, Target};

/// A request head the gRPC target saw: path, version, `authorization`, `te`.
type Head = (String, http::Version, Option<String>, Option<String>);

/// The request heads the gRPC target saw.
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<Head>>>);

impl Recorded {
    fn all(&self) -> Vec<Head> {
        self.0.lock().unwrap().clone()
    }
}

/// A tonic server with the health service, behind a layer that records each request.
async fn grpc_target() -> (SocketAddr, HealthReporter, Recorded) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("demo.Orders", ServingStatus::Serving)
        .await;
    let recorded = Recorded::default();
    let r = recorded.clone();
    let record = ServiceBuilder::new().map_request(move |req: http::Request<tonic::body::Body>| {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map(|v| v.to_str().unwrap_or("?").to_owned())
        };
        r.0.lock().unwrap().push((
            req.uri().path().to_owned(),
            req.version(),
            h("authorization"),
            h("te"),
        ));
        req
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .layer(record)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (addr, reporter, recorded)
}

/// A health client to `app` whose channel puts every call under `/proxy`.
async fn client_via_proxy(
    app: SocketAddr,
) -> HealthClient<
    tower::util::MapRequest<
        Channel,
        fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body>,
    >,
> {
    fn add_prefix(mut req: http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body> {
        let mut parts = req.uri().clone().into_parts();
        let pq = parts
            .path_and_query
            .as_ref()
            .map_or("/", PathAndQuery::as_str);
        parts.path_and_query = Some(format!("/proxy{pq}").parse().unwrap());
        *req.uri_mut() = Uri::from_parts(parts).unwrap();
        req
    }
    let channel = Channel::from_shared(format!("http://{app}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let prefix: fn(_) -> _ = add_prefix;
    HealthClient::new(ServiceBuilder::new().map_request(prefix).service(channel))
}

fn status_of(v: i32) -> health_check_response::ServingStatus {
    health_check_response::ServingStatus::try_from(v).unwrap()
}

#[tokio::test]
async fn unary_streaming_and_error_calls_through_the_proxy() {
    let (taddr, mut reporter, recorded) = grpc_target().await;
    let upstream = ProxyClient::builder()
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let app = alice_app(upstream, &format!("http://{taddr}")).await;
    let mut client = client_via_proxy(app).await;

    // Unary.
    let res = within(
        "check",
        client.check(HealthCheckRequest {
            service: "demo.Orders".into(),
        }),
    )
    .await
    .expect("check through the proxy");
    assert_eq!(
        status_of(res.get_ref().status),
        health_check_response::ServingStatus::Serving
    );

    // Error status (a trailers-only response): code and message arrive intact.
    let err = within(
        "check unknown",
        client.check(HealthCheckRequest {
            service: "no.Such".into(),
        }),
    )
    .await
    .expect_err("unknown service");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "service not registered");

    // Server streaming: the current status, a change, then the end of the stream with an
    // OK status in the trailers.
    let mut stream = within(
        "watch",
        client.watch(HealthCheckRequest {
            service: "demo.Orders".into(),
        }),
    )
    .await
    .expect("watch through the proxy")
    .into_inner();
    let first = within("watch 1", stream.message()).await.unwrap().unwrap();
    assert_eq!(
        status_of(first.status),
        health_check_response::ServingStatus::Serving
    );
    reporter
        .set_service_status("demo.Orders", ServingStatus::NotServing)
        .await;
    let second = within("watch 2", stream.message()).await.unwrap().unwrap();
    assert_eq!(
        status_of(second.status),
        health_check_response::ServingStatus::NotServing
    );
    reporter.clear_service_status("demo.Orders").await;
    assert!(
        within("watch end", stream.message())
            .await
            .unwrap()
            .is_none()
    );
    let trailers = within("trailers", stream.trailers())
        .await
        .unwrap()
        .expect("trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");

    // The target saw every call under its own path, over HTTP/2, with the JWT and
    // `te: trailers`.
    let seen = recorded.all();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (path, version, authorization, te) in &seen {
        assert!(path.starts_with("/grpc.health.v1.Health/"), "{path}");
        assert_eq!(*version, http::Version::HTTP_2);
        assert_alice(authorization.as_deref().expect("the JWT"));
        assert_eq!(te.as_deref(), Some("trailers"));
    }
}

#[tokio::test]
async fn tonic_app_with_accept_http1_serves_grpc_and_http1_callers() {
    // The layer in front of a tonic server: gRPC callers and, with `accept_http1(true)`,
    // HTTP/1.1 callers both reach the targets.
    let (taddr, _reporter, recorded) = grpc_target().await;
    let upstream = ProxyClient::builder()
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let (_own_reporter, own_health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let handle = ProxyHandle::with_target(Target::parse(&format!("http://{taddr}")).unwrap());
    let proxy = alice_layer(upstream, &format!("http://{taddr}")).handle(handle.clone());
    tokio::spawn(
        Server::builder()
            .accept_http1(true)
            .layer(proxy)
            .add_service(own_health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let mut client = client_via_proxy(app).await;
    let err = within(
        "check",
        client.check(HealthCheckRequest {
            service: "demo.Orders".into(),
        }),
    )
    .await;
    assert_eq!(
        status_of(err.expect("proxied check").get_ref().status),
        health_check_response::ServingStatus::Serving
    );
    assert_alice(recorded.all()[0].2.as_deref().unwrap());

    // An HTTP/1.1 caller through the same tonic app to an HTTP target.
    let target = echo_target().await;
    handle
        .set_target(Some(&format!("http://{}", target.addr())))
        .unwrap();
    let got = within("h1 via tonic", get(&format!("http://{app}/proxy/hello"))).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.version, http::Version::HTTP_11);
    let seen = got.json();
    assert_eq!(
        seen["version"], "HTTP/2.0",
        "the upstream client speaks h2c"
    );
    assert_alice(header_of(&seen, "authorization").unwrap());
}
