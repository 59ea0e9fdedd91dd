//! What an operator sees: the kind of every response the proxy makes itself (for outer
//! layers), the client's trace context passed to the target, and the metrics recorded,
//! through a Prometheus exporter's text, parsed by a Prometheus text parser.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::{Router, extract::Request, middleware::Next, response::Response, routing};
use common::{
    closed_port, echo_target, ed25519_keys, get, get_with, inner_echo, serve, silent_target,
    user_header, within,
};
use http::{HeaderValue, Method, StatusCode};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{io::AsyncReadExt as _, net::TcpListener};
use tower_identity_proxy::{
    ProxyErrorKind, ProxyHandle, ProxyLayer, Target,
    identity::{IdentityExtractor, Rejection},
    jwt::{Algorithm, CachingSigner, Jwks, JwtSigner, KeySigner},
    observability,
};

/// An outer layer, as a `TraceLayer` or a metrics layer would be: it reads the kind the
/// proxy put in the response's extensions and shows it as `x-proxy-error-kind`.
async fn show_kind(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let kind = res.extensions().get::<ProxyErrorKind>().copied();
    if let Some(kind) = kind {
        let name = observability::outcome(kind);
        res.headers_mut()
            .insert("x-proxy-error-kind", HeaderValue::from_static(name));
    }
    res
}

/// A target that answers garbage instead of a response head.
async fn garbage_target() -> String {
    use tokio::io::AsyncWriteExt as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"this is not HTTP\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

/// A layer with the `x-test-user` identity (none: `401`) and an Ed25519 signer (signed on
/// the calling task: no blocking pool), with a short upstream timeout.
fn layer() -> ProxyLayer<impl IdentityExtractor, CachingSigner<KeySigner>> {
    ProxyLayer::new(KeySigner::new(ed25519_keys()))
        .with_identity(user_header)
        .upstream_timeout(Duration::from_millis(500))
}

/// A handle whose target is `url`.
fn to(url: &str) -> ProxyHandle {
    ProxyHandle::with_target(Target::parse(url).unwrap())
}

/// Serves the echo inner service behind `layer` and the [`show_kind`] outer layer.
async fn app<I, J>(layer: ProxyLayer<I, J>) -> common::Server
where
    I: IdentityExtractor,
    J: JwtSigner,
{
    serve(
        inner_echo()
            .route("/app", routing::get(|| async { "app" }))
            .layer(layer)
            .layer(axum::middleware::from_fn(show_kind)),
    )
    .await
}

const ALICE: (&str, &str) = ("x-test-user", "alice:ROLE_USER");

#[tokio::test]
async fn every_response_the_proxy_makes_carries_its_kind() {
    let target = echo_target().await;

    // Disabled.
    let server = app(layer()).await;
    let res = get_with(&server.url("/proxy/x"), &[ALICE]).await;
    assert_eq!(res.status, StatusCode::NOT_IMPLEMENTED);
    assert_eq!(res.header("x-proxy-error-kind").unwrap(), "disabled");

    // Forwarded: the target's response carries none; nor does the inner service's.
    let server = app(layer().handle(to(&target.url()))).await;
    let res = get_with(&server.url("/proxy/x"), &[ALICE]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-proxy-error-kind"), None);
    let res = get(&server.url("/app")).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-proxy-error-kind"), None);

    // Unauthenticated: no identity.
    let res = get(&server.url("/proxy/x")).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    assert_eq!(res.header("x-proxy-error-kind").unwrap(), "unauthenticated");

    // Unauthenticated: the extractor's own rejection, with its status.
    let forbidding = ProxyLayer::new(KeySigner::new(ed25519_keys()))
        .with_identity(|_: &http::request::Parts| {
            std::future::ready(Err(Rejection::new(StatusCode::FORBIDDEN, "No.")))
        })
        .handle(to(&target.url()));
    let server = app(forbidding).await;
    let res = get(&server.url("/proxy/x")).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    assert_eq!(res.header("x-proxy-error-kind").unwrap(), "unauthenticated");

    // Refused by the request rules: TRACE.
    let server = app(layer().handle(to(&target.url()))).await;
    let req = http::Request::builder()
        .method(Method::TRACE)
        .uri(server.url("/proxy/x"))
        .header(ALICE.0, ALICE.1)
        .body(common::empty())
        .unwrap();
    let res = common::send(req).await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.header("x-proxy-error-kind").unwrap(), "refused");

    // OPTIONS with Max-Forwards: 0, answered by the proxy.
    let res = get_with_method(&server, Method::OPTIONS, &[ALICE, ("max-forwards", "0")]).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-proxy-error-kind").unwrap(), "max_forwards");

    // Unreachable, bad response, timeout.
    for (url, status, kind) in [
        (
            format!("http://{}", closed_port().await),
            StatusCode::BAD_GATEWAY,
            "unreachable",
        ),
        (
            garbage_target().await,
            StatusCode::BAD_GATEWAY,
            "bad_response",
        ),
        (
            silent_target().await,
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
        ),
    ] {
        let server = app(layer().handle(to(&url))).await;
        let res = within(kind, get_with(&server.url("/proxy/x"), &[ALICE])).await;
        assert_eq!(res.status, status, "{kind}");
        assert_eq!(res.header("x-proxy-error-kind").unwrap(), kind);
    }
}

async fn get_with_method(
    server: &common::Server,
    method: Method,
    headers: &[(&str, &str)],
) -> common::Reply {
    let mut req = http::Request::builder()
        .method(method)
        .uri(server.url("/proxy/x"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    common::send(req.body(common::empty()).unwrap()).await
}

/// By default (and without a span recorded by an OpenTelemetry layer), the proxy takes no
/// part in the trace: the client's W3C trace context and baggage reach the target as sent.
#[tokio::test]
async fn the_trace_context_reaches_the_target_unchanged() {
    let target = echo_target().await;
    let server = app(layer().handle(to(&target.url()))).await;
    let sent = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        (
            "baggage",
            "userId=alice,serverNode=DF%2028,isProduction=false",
        ),
    ];
    let res = get_with(&server.url("/proxy/x"), &[ALICE, sent[0], sent[1], sent[2]]).await;
    assert_eq!(res.status, StatusCode::OK);
    let seen = target.last();
    for (name, value) in sent {
        assert_eq!(seen.header(name).as_deref(), Some(value), "{name}");
    }
}

/// A Prometheus exporter's recorder, the duration histogram with OpenTelemetry's buckets.
fn prometheus() -> (
    metrics_exporter_prometheus::PrometheusRecorder,
    PrometheusHandle,
) {
    let recorder = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets_for_metric(
            Matcher::Prefix("http_client_request_duration".into()),
            &observability::HTTP_CLIENT_REQUEST_DURATION_BUCKETS,
        )
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    (recorder, handle)
}

/// Every sample of the scrape `text`, parsed by a Prometheus text parser.
fn samples(text: &str) -> Vec<prometheus_parse::Sample> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap().samples
}

/// The value of the counter or gauge `name` with exactly `labels`.
fn value(samples: &[prometheus_parse::Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.metric == name && s.labels.len() == labels.len())
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    match found.as_slice() {
        [] => 0.0,
        [one] => match one.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: not a counter or gauge: {other:?}"),
        },
        more => panic!("{name}{labels:?}: {} series", more.len()),
    }
}

/// The metrics of the target's side: one verification per request by result, one JWK Set
/// fetch per fetch by result. The recorder is this thread's (a current-thread runtime
/// polls every task on it).
#[tokio::test(flavor = "current_thread")]
async fn the_verifier_counts_its_checks_and_fetches() {
    use tower_identity_proxy::{identity::Identity, verify::VerifyProxyJwtLayer};
    let (recorder, handle) = prometheus();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let keys = ed25519_keys();
    let signer = KeySigner::new(keys.clone());
    let jwks = Jwks::from_keys([(keys.public_key(), Algorithm::EdDSA)]).unwrap();
    let jwks_server = serve(Router::new().route_service("/jwks.json", jwks)).await;
    let verifying = |url: &str| {
        VerifyProxyJwtLayer::jwks_url(url)
            .unwrap()
            .algorithms([Algorithm::EdDSA])
    };
    let protected = serve(
        Router::new()
            .route("/ok", routing::get(|| async { "ok" }))
            .layer(verifying(&jwks_server.url("/jwks.json"))),
    )
    .await;
    // Its JWK Set cannot be fetched.
    let down = closed_port().await;
    let stranded = serve(
        Router::new()
            .route("/ok", routing::get(|| async { "ok" }))
            .layer(verifying(&format!("http://{down}/jwks.json"))),
    )
    .await;

    let token = signer
        .sign_blocking(&Identity::new("alice", ["ROLE_USER"]))
        .unwrap();
    let bearer = format!("Bearer {}", token.as_str());
    // The first fetches the keys (one fetch), the next two use them.
    for _ in 0..3 {
        let res = get_with(&protected.url("/ok"), &[("authorization", &bearer)]).await;
        assert_eq!(res.status, StatusCode::OK);
    }
    let res = get_with(
        &protected.url("/ok"),
        &[("authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    let res = get(&protected.url("/ok")).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    // A fetch that fails, then the token does not verify.
    let res = get_with(&stranded.url("/ok"), &[("authorization", &bearer)]).await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);

    let scraped = samples(&handle.render());
    let verifications = "tower_identity_proxy_verifications_total";
    assert_eq!(value(&scraped, verifications, &[("result", "valid")]), 3.0);
    assert_eq!(
        value(&scraped, verifications, &[("result", "invalid")]),
        2.0
    );
    assert_eq!(
        value(&scraped, verifications, &[("result", "missing")]),
        1.0
    );
    let fetches = "tower_identity_proxy_jwks_fetches_total";
    assert_eq!(value(&scraped, fetches, &[("result", "ok")]), 1.0);
    assert_eq!(value(&scraped, fetches, &[("result", "error")]), 1.0);
    assert_eq!(value(&scraped, fetches, &[("result", "timeout")]), 0.0);
}
