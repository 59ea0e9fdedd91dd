//! One request through the layer, in-process, to a loopback hyper upstream; and the cost of
//! the layer on requests it does not take over.
//!
//! Run: `cargo bench --bench proxy`.
//!
//! - `proxy/*/direct`: the same request sent straight to the upstream with a pooled hyper
//!   client: the floor for any proxy in this process.
//! - `proxy/*/layer`: `Router.layer(ProxyLayer)` called with `ServiceExt::oneshot`, the
//!   identity signed with RS512 through the token cache (as `ProxyLayer::new` does).
//! - `proxy/small-get/layer-uncached`: the same with a fresh RS512 signature per request.
//! - `passthrough/*`: a non-`/proxy` route of a `Router` with and without the layer.
//! - `metrics/small-get/*`: `proxy/small-get/layer` without a metrics recorder
//!   (`no-recorder`: the facade's no-op) and with a Prometheus recorder installed
//!   (`prometheus`): what recording the proxy's metrics costs a request.
//!
//! Pairs of benchmarks run in alternation (chunks of one, then of the other, timing only
//! its own): the load of other processes on a shared machine drifts over seconds, and
//! benchmarks run one after the other would read that drift as a difference.

#![allow(clippy::expect_used)] // a benchmark that cannot set up should stop loudly

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    net::SocketAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use axum::{Router, body::Body, routing::get};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tower::ServiceExt;
use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    identity::Anonymous,
    jwt::{JwtSigner, KeyPair, KeySigner},
};

const SMALL: &[u8] = b"Hello world!";
const MIB: usize = 1024 * 1024;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A minimal hyper HTTP/1.1 upstream: `/small` → 12 bytes, `/1m` → 1 MiB, `POST /sink`
/// reads the body and answers 12 bytes.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream address");
    let big = Bytes::from(vec![b'x'; MIB]);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let big = big.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let big = big.clone();
                    async move {
                        let body = match req.uri().path() {
                            "/1m" => big,
                            "/sink" => {
                                let _ = req.into_body().collect().await;
                                Bytes::from_static(SMALL)
                            }
                            _ => Bytes::from_static(SMALL),
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn app_router() -> Router {
    Router::new().route("/api", get(|| async { "ok" }))
}

fn app_request(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "127.0.0.1:8080")
        .header("user-agent", "criterion")
        .body(Body::empty())
        .expect("request")
}

async fn drain<B: http_body::Body>(res: Response<B>) -> usize
where
    B::Error: std::fmt::Debug,
{
    assert!(res.status().is_success(), "status {}", res.status());
    res.into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .len()
}

/// One request of a benchmark, boxed so that different request kinds can alternate.
type Op<'a> = Box<dyn Fn() -> Pin<Box<dyn Future<Output = usize> + 'a>> + 'a>;

/// Times `timed` in chunks that alternate with untimed chunks of `partner`, so that the
/// two benchmarks of a pair see the same machine: on a shared 2-core machine the load of
/// other processes drifts over seconds, and benchmarks run one after the other would read
/// that drift as a difference between them.
fn alternate<'r, 'a: 'r>(
    rt: &'r tokio::runtime::Runtime,
    timed: &'r Op<'a>,
    partner: &'r Op<'a>,
) -> impl FnMut(u64) -> Duration + 'r {
    const CHUNK: u64 = 8;
    move |iters| {
        rt.block_on(async {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                let start = Instant::now();
                for _ in 0..n {
                    black_box(timed().await);
                }
                total += start.elapsed();
                for _ in 0..n {
                    black_box(partner().await);
                }
                left -= n;
            }
            total
        })
    }
}

fn proxy(c: &mut Criterion) {
    let rt = runtime();
    let addr = rt.block_on(upstream());
    let keys = KeyPair::generate_rsa(2048).expect("RSA key");
    let url = format!("http://{addr}");

    let layer = ProxyLayer::new(KeySigner::rs512(keys.clone()).expect("RS512"))
        .with_identity(Anonymous::unsecured())
        .handle(ProxyHandle::with_target(
            Target::parse(&url).expect("target"),
        ));
    // Signs as the layer does (same key), for the requests sent to the target directly.
    let signer = KeySigner::rs512(keys.clone()).expect("RS512");
    // `with_state(())` turns the router's handlers into services once, as `axum::serve`
    // does for each connection; without it axum re-applies every layer on every request.
    let app = app_router().layer(layer).with_state::<()>(());
    let uncached = ProxyLayer::uncached(KeySigner::rs512(keys).expect("RS512"))
        .with_identity(Anonymous::unsecured())
        .handle(ProxyHandle::with_target(
            Target::parse(&url).expect("target"),
        ));
    let app_uncached = app_router().layer(uncached).with_state::<()>(());

    let direct: Client<HttpConnector, Full<Bytes>> = {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        Client::builder(TokioExecutor::new()).build(http)
    };
    let upstream_uri =
        |path: &str| -> http::Uri { format!("http://{addr}{path}").parse().expect("uri") };

    // What the upstream receives from the proxy, sent directly: tells how much of the
    // layer's cost is the larger request (the ~700-byte token, Via, X-Forwarded-*).
    let token = rt
        .block_on(signer.sign(Anonymous::unsecured().identity()))
        .expect("token");
    let with_proxy_headers = |req: http::request::Builder| {
        req.header("user-agent", "criterion")
            .header("authorization", token.authorization().clone())
            .header("via", "1.1 tip-abcdefghijkl")
            .header("x-forwarded-proto", "http")
            .header("x-forwarded-host", "127.0.0.1:8080")
    };

    let small = upstream_uri("/small");
    let direct_small: Op = Box::new(|| {
        let req = Request::get(small.clone())
            .body(Full::default())
            .expect("request");
        Box::pin(async { drain(direct.request(req).await.expect("direct")).await })
    });
    let direct_small_headers: Op = Box::new(|| {
        let req = with_proxy_headers(Request::get(small.clone()))
            .body(Full::default())
            .expect("request");
        Box::pin(async { drain(direct.request(req).await.expect("direct")).await })
    });
    let layer_small: Op = Box::new(|| {
        let app = app.clone();
        Box::pin(async move {
            let res = app.oneshot(app_request("/proxy/small")).await;
            drain(res.expect("infallible")).await
        })
    });

    let mut group = c.benchmark_group("proxy/small-get");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    group.bench_function("direct", |b| {
        b.iter_custom(alternate(&rt, &direct_small, &layer_small))
    });
    group.bench_function("direct-with-proxy-headers", |b| {
        b.iter_custom(alternate(&rt, &direct_small_headers, &layer_small))
    });
    group.bench_function("layer", |b| {
        b.iter_custom(alternate(&rt, &layer_small, &direct_small))
    });
    group.bench_function("layer-uncached", |b| {
        b.to_async(&rt).iter(|| async {
            let res = app_uncached
                .clone()
                .oneshot(app_request("/proxy/small"))
                .await;
            black_box(drain(res.expect("infallible")).await)
        })
    });
    group.finish();

    let big = upstream_uri("/1m");
    let direct_big: Op = Box::new(|| {
        let req = Request::get(big.clone())
            .body(Full::default())
            .expect("request");
        Box::pin(async { drain(direct.request(req).await.expect("direct")).await })
    });
    let layer_big: Op = Box::new(|| {
        let app = app.clone();
        Box::pin(async move {
            let res = app.oneshot(app_request("/proxy/1m")).await;
            drain(res.expect("infallible")).await
        })
    });
    let mut group = c.benchmark_group("proxy/1mib-get");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("direct", |b| {
        b.iter_custom(alternate(&rt, &direct_big, &layer_big))
    });
    group.bench_function("layer", |b| {
        b.iter_custom(alternate(&rt, &layer_big, &direct_big))
    });
    group.finish();

    let upload = Bytes::from(vec![b'y'; MIB]);
    let sink = upstream_uri("/sink");
    let direct_post: Op = Box::new(|| {
        let req = Request::post(sink.clone())
            .body(Full::new(upload.clone()))
            .expect("request");
        Box::pin(async { drain(direct.request(req).await.expect("direct")).await })
    });
    let layer_post: Op = Box::new(|| {
        let app = app.clone();
        let req = Request::post("/proxy/sink")
            .header("host", "127.0.0.1:8080")
            .header("content-length", MIB.to_string())
            .body(Body::from(upload.clone()))
            .expect("request");
        Box::pin(async move { drain(app.oneshot(req).await.expect("infallible")).await })
    });
    let mut group = c.benchmark_group("proxy/1mib-post");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("direct", |b| {
        b.iter_custom(alternate(&rt, &direct_post, &layer_post))
    });
    group.bench_function("layer", |b| {
        b.iter_custom(alternate(&rt, &layer_post, &direct_post))
    });
    group.finish();
}

/// Runs `chunk` requests through `app` one after the other and returns the time taken.
async fn run_chunk<S, B>(app: &S, chunk: usize) -> Duration
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let requests: Vec<_> = (0..chunk).map(|_| app_request("/api")).collect();
    let start = Instant::now();
    for req in requests {
        let res = app.clone().oneshot(req).await;
        black_box(drain(res.expect("infallible")).await);
    }
    start.elapsed()
}

/// Times `timed` while running `other` in alternation with it (untimed), so that both
/// benchmarks of a pair see the same machine: on a shared 2-core machine, load from other
/// processes drifts over seconds, and sequential benchmarks would read the drift as a
/// difference.
fn paired<T, TB, O, OB>(
    rt: &tokio::runtime::Runtime,
    timed: &T,
    other: &O,
) -> impl FnMut(u64) -> Duration
where
    T: tower::Service<Request<Body>, Response = Response<TB>, Error = Infallible> + Clone,
    TB: http_body::Body,
    TB::Error: std::fmt::Debug,
    O: tower::Service<Request<Body>, Response = Response<OB>, Error = Infallible> + Clone,
    OB: http_body::Body,
    OB::Error: std::fmt::Debug,
{
    const CHUNK: u64 = 32;
    move |iters| {
        rt.block_on(async {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(CHUNK);
                total += run_chunk(timed, n as usize).await;
                run_chunk(other, n as usize).await;
                left -= n;
            }
            total
        })
    }
}

/// The layer on a request it does not take over must cost nothing measurable.
///
/// - `passthrough/around-router`: `ProxyLayer` around the whole router (as
///   `ServiceBuilder::new().layer(proxy).service(router)`), against the router alone, and
///   the router alone once more (`bare-again`: the noise between two runs of the same);
/// - `passthrough/router-layer`: `Router.layer(ProxyLayer)`, against the router alone and
///   against `Router.layer(identity layer)`: axum wraps every route in each layer and boxes
///   the layered route's response body again, whatever the layer;
/// - `passthrough/over-loopback`: the router alone and `Router.layer(ProxyLayer)`, each
///   served by `axum::serve` on 127.0.0.1 and called over HTTP/1.1.
///
/// Each is measured in alternation with its partner (see [`paired`]).
fn passthrough(c: &mut Criterion) {
    let rt = runtime();
    let keys = KeyPair::generate_ed25519().expect("Ed25519 key");
    let layer = ProxyLayer::new(KeySigner::new(keys))
        .with_identity(Anonymous::unsecured())
        .handle(ProxyHandle::with_target(
            Target::parse("http://127.0.0.1:9").expect("target"),
        ));
    // Finalised once, as `axum::serve` does for each connection (see `proxy` above).
    let bare = app_router().with_state::<()>(());
    let wrapped = tower::Layer::layer(&layer, bare.clone());
    let layered = app_router().layer(layer.clone()).with_state::<()>(());
    let noop = app_router()
        .layer(tower::layer::layer_fn(|s| s))
        .with_state::<()>(());

    let mut group = c.benchmark_group("passthrough/around-router");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    group.bench_function("bare", |b| b.iter_custom(paired(&rt, &bare, &wrapped)));
    group.bench_function("layer", |b| b.iter_custom(paired(&rt, &wrapped, &bare)));
    // A/A: `bare` measured again, the same way: how far two measurements of the same
    // service drift apart here, the resolution of the comparison above.
    group.bench_function("bare-again", |b| {
        b.iter_custom(paired(&rt, &bare, &wrapped))
    });
    group.finish();

    let mut group = c.benchmark_group("passthrough/router-layer");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    group.bench_function("bare", |b| b.iter_custom(paired(&rt, &bare, &layered)));
    group.bench_function("layer", |b| b.iter_custom(paired(&rt, &layered, &bare)));
    group.bench_function("noop-layer", |b| {
        b.iter_custom(paired(&rt, &noop, &layered))
    });
    group.bench_function("layer-vs-noop", |b| {
        b.iter_custom(paired(&rt, &layered, &noop))
    });
    group.finish();

    // The same two apps served over loopback HTTP/1.1 (axum::serve), called with a pooled
    // client: what the layer costs a whole request to the app's own routes.
    let served = |app: Router| {
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind app");
            let addr = listener.local_addr().expect("app address");
            tokio::spawn(async move { axum::serve(listener, app).await });
            addr
        })
    };
    let bare_addr = served(app_router());
    let layered_addr = served(app_router().layer(layer));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let get = |addr: SocketAddr| -> Op {
        let uri: http::Uri = format!("http://{addr}/api").parse().expect("uri");
        let client = client.clone();
        Box::new(move || {
            let req = Request::get(uri.clone())
                .body(Full::default())
                .expect("request");
            let client = client.clone();
            Box::pin(async move { drain(client.request(req).await.expect("answer")).await })
        })
    };
    let (bare_http, layered_http) = (get(bare_addr), get(layered_addr));
    let mut group = c.benchmark_group("passthrough/over-loopback");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    group.bench_function("bare", |b| {
        b.iter_custom(alternate(&rt, &bare_http, &layered_http))
    });
    group.bench_function("layer", |b| {
        b.iter_custom(alternate(&rt, &layered_http, &bare_http))
    });
    group.finish();
}

/// The cost of the metrics: one small proxied GET with no recorder installed, and with a
/// Prometheus recorder (`metrics-exporter-prometheus`, the duration histogram with its
/// buckets) installed for the thread, measured in alternation.
fn metrics_cost(c: &mut Criterion) {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use tower_identity_proxy::observability::HTTP_CLIENT_REQUEST_DURATION_BUCKETS;

    let rt = runtime();
    let addr = rt.block_on(upstream());
    let keys = KeyPair::generate_rsa(2048).expect("RSA key");
    let layer = ProxyLayer::new(KeySigner::rs512(keys).expect("RS512"))
        .with_identity(Anonymous::unsecured())
        .handle(ProxyHandle::with_target(
            Target::parse(&format!("http://{addr}")).expect("target"),
        ));
    let app = app_router().layer(layer).with_state::<()>(());
    let recorder = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets_for_metric(
            Matcher::Prefix("http_client_request_duration".into()),
            &HTTP_CLIENT_REQUEST_DURATION_BUCKETS,
        )
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    // As an application would: histogram samples drained now and then.
    rt.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            handle.run_upkeep();
        }
    });

    let without: Op = Box::new(|| {
        let app = app.clone();
        Box::pin(async move {
            let res = app.oneshot(app_request("/proxy/small")).await;
            drain(res.expect("infallible")).await
        })
    });
    let with: Op = Box::new(|| {
        let app = app.clone();
        let recorder = &recorder;
        Box::pin(async move {
            // This thread's recorder while the request runs (the runtime has one thread).
            let _recording = metrics::set_default_local_recorder(recorder);
            let res = app.oneshot(app_request("/proxy/small")).await;
            drain(res.expect("infallible")).await
        })
    });
    let mut group = c.benchmark_group("metrics/small-get");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    group.bench_function("no-recorder", |b| {
        b.iter_custom(alternate(&rt, &without, &with))
    });
    group.bench_function("prometheus", |b| {
        b.iter_custom(alternate(&rt, &with, &without))
    });
    group.finish();
}

criterion_group!(benches, proxy, passthrough, metrics_cost);
criterion_main!(benches);
