//! Requests counted in instructions, for `benches/instructions.sh`: on a shared machine
//! wall-clock benchmarks drift by a few percent between two runs of the same code, while
//! `valgrind --tool=callgrind` counts the same instructions every time.
//!
//! `instructions MODE N` sends `N` requests one after the other and reads each response
//! body, all inside [`measured`] (what the script counts: one single-threaded runtime, so
//! the tasks it spawns, hyper's connection tasks among them, are counted too):
//!
//! - `bare`: `GET /api`, a route of an axum `Router`, through `ServiceExt::oneshot` on a
//!   clone of the router (the route of `cargo bench --bench proxy -- passthrough`);
//! - `layer`: the same through `ProxyLayer` around that router: the pass-through cost;
//! - `direct`: `GET /` to an HTTP/1.1 upstream on 127.0.0.1 (a child process, not counted)
//!   through a `cache` of hyper-util's composable pool over `hyper::client::conn`, the
//!   pool the crate's client keeps per thread, each connection given back once its
//!   response has been read: the floor of any proxy built on it;
//! - `legacy`: the same with hyper-util's legacy pooled `Client`, for comparison;
//! - `proxied`: `GET /proxy/` through `ProxyLayer` around the router to that upstream, the
//!   identity (`Anonymous::unsecured`) signed once and then taken from the token cache:
//!   what the layer adds to a proxied request, over `direct`;
//! - `forwarded`: `proxied` with `ProxyLayer::forwarded_for` giving a fixed IPv4 address,
//!   which the target gets in `X-Forwarded-For`: what that field costs, over `proxied`.
//!
//! The script runs each mode with two request counts and divides the difference in
//! instructions by the difference in requests, so that start-up costs (the first
//! connection, the first signature) cancel out.
//!
//! Build: `cargo build --release --bench instructions` (`bench = false`: `cargo bench` does
//! not run it).

#![allow(clippy::expect_used)] // a measurement that cannot set up should stop loudly

#[path = "support/cached.rs"]
mod cached;

use cached::{H1, Held};

use std::{
    convert::Infallible,
    error::Error,
    future::Future,
    hint::black_box,
    io::{BufRead, Write},
    net::SocketAddr,
    pin::Pin,
};

use axum::{Router, body::Body, routing::get};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tower::{Service, ServiceExt};
use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    identity::Anonymous,
    jwt::{KeyPair, KeySigner},
};

const USAGE: &str = "usage: instructions bare|layer|direct|legacy|proxied|forwarded N";

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or(USAGE)?;
    if mode == "upstream" {
        return upstream();
    }
    let n: u64 = args.next().ok_or(USAGE)?.parse()?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Finalised once, as `axum::serve` does for each connection.
    let router = Router::new()
        .route("/api", get(|| async { "ok" }))
        .with_state::<()>(());
    let layer = || -> Result<_, Box<dyn Error>> {
        Ok(
            ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519()?))
                .with_identity(Anonymous::unsecured()),
        )
    };
    let bytes = match mode.as_str() {
        "bare" => measured(&rt, requests(&router, "/api", n)),
        "layer" => {
            let wrapped = tower::Layer::layer(
                &layer()?.handle(ProxyHandle::with_target(Target::parse(
                    "http://127.0.0.1:9",
                )?)),
                router,
            );
            measured(&rt, requests(&wrapped, "/api", n))
        }
        "direct" => {
            let child = Upstream::start()?;
            let addr = child.addr;
            let cache = hyper_util::client::pool::cache::builder()
                .executor(TokioExecutor::new())
                .build(tower::service_fn(move |_: ()| connect(addr)));
            let send = tower::service_fn(move |req: Request<Body>| {
                let mut cache = cache.clone();
                async move {
                    let (mut parts, _) = req.into_parts();
                    parts.uri = http::Uri::from_static("/");
                    let mut conn = cache.call(()).await?;
                    conn.ready().await?;
                    let res = conn
                        .call(Request::from_parts(parts, Empty::<Bytes>::new()))
                        .await?;
                    Ok::<_, Box<dyn Error + Send + Sync>>(res.map(|body| Held {
                        body,
                        conn: Some(conn),
                    }))
                }
            });
            let bytes = measured(&rt, requests(&send, "/", n));
            drop(child);
            bytes
        }
        "legacy" => {
            let child = Upstream::start()?;
            let client = Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_max_idle_per_host(256)
                .build(connector());
            let uri: http::Uri = format!("http://{}/", child.addr).parse()?;
            let send = tower::service_fn(move |req: Request<Body>| {
                let (mut parts, _) = req.into_parts();
                parts.uri = uri.clone();
                client.request(Request::from_parts(parts, Empty::<Bytes>::new()))
            });
            let bytes = measured(&rt, requests(&send, "/", n));
            drop(child);
            bytes
        }
        "proxied" | "forwarded" => {
            let child = Upstream::start()?;
            let mut proxy = layer()?;
            if mode == "forwarded" {
                proxy = proxy.forwarded_for(|_: &http::request::Parts| {
                    Some(std::net::IpAddr::from([203, 0, 113, 77]))
                });
            }
            let proxy = proxy.handle(ProxyHandle::with_target(Target::parse(&format!(
                "http://{}",
                child.addr
            ))?));
            let wrapped = tower::Layer::layer(&proxy, router);
            let bytes = measured(&rt, requests(&wrapped, "/proxy/", n));
            drop(child);
            bytes
        }
        _ => return Err(USAGE.into()),
    };
    println!("{mode}: {n} requests, {bytes} body bytes");
    Ok(())
}

/// What `benches/instructions.sh` counts (`--toggle-collect`): everything the runtime does
/// while it runs `work`.
#[inline(never)]
fn measured<F: Future>(rt: &tokio::runtime::Runtime, work: F) -> F::Output {
    rt.block_on(work)
}

fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

/// Sends `n` requests for `GET path` through clones of `app`; the body bytes read.
async fn requests<S, B, E>(app: &S, path: &str, n: u64) -> u64
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = E> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
    E: std::fmt::Debug,
{
    let mut bytes = 0;
    for _ in 0..n {
        let req = Request::get(path)
            .header("host", "127.0.0.1:8080")
            .header("user-agent", "callgrind")
            .body(Body::empty())
            .expect("request");
        let res = app.clone().oneshot(req).await.expect("a response");
        assert!(res.status().is_success(), "status {}", res.status());
        let body = res.into_body().collect().await.expect("body").to_bytes();
        bytes += black_box(body.len()) as u64;
    }
    bytes
}

/// A new HTTP/1.1 connection to `addr`, for the `direct` mode's cache.
fn connect(
    addr: SocketAddr,
) -> Pin<Box<dyn Future<Output = Result<H1<Empty<Bytes>>, Box<dyn Error + Send + Sync>>> + Send>> {
    Box::pin(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(H1(send))
    })
}

/// The upstream, in a child process of its own so that its instructions are not counted.
struct Upstream {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Upstream {
    fn start() -> Result<Self, Box<dyn Error>> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .arg("upstream")
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line.trim().parse()?;
        Ok(Self { child, addr })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `instructions upstream`: an HTTP/1.1 server on 127.0.0.1 answering `Hello world!`,
/// until killed; prints its address first.
fn upstream() -> Result<(), Box<dyn Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", listener.local_addr()?)?;
        out.flush()?;
        drop(out);
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let hello = service_fn(|_: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"Hello world!",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), hello)
                    .await;
            });
        }
    })
}
