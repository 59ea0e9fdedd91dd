//! Pass-through requests counted in instructions, for `benches/instructions.sh`: on a shared
//! machine wall-clock benchmarks of a few hundred nanoseconds drift by a few percent between
//! two runs of the same code, while `valgrind --tool=callgrind` counts the same instructions
//! every time.
//!
//! `instructions MODE N` sends `N` requests for a non-`/proxy` route (`GET /api`, the route
//! of `cargo bench --bench proxy -- passthrough`) one after the other through
//! `ServiceExt::oneshot` on a clone of the service, and reads each response body:
//!
//! - `bare`: the axum `Router` alone;
//! - `layer`: `ProxyLayer` around that router (`Layer::layer(&proxy, router)`).
//!
//! The script runs each mode with two request counts and divides the difference in
//! instructions by the difference in requests, so that start-up costs cancel out.
//!
//! Build: `cargo build --release --bench instructions` (`bench = false`: `cargo bench` does
//! not run it).

#![allow(clippy::expect_used)] // a measurement that cannot set up should stop loudly

use std::{convert::Infallible, error::Error, hint::black_box};

use axum::{Router, body::Body, routing::get};
use http::{Request, Response};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_identity_proxy::{Anonymous, KeyPair, KeySigner, ProxyLayer};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: instructions bare|layer N";
    let mode = args.next().ok_or(usage)?;
    let n: u64 = args.next().ok_or(usage)?.parse()?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Finalised once, as `axum::serve` does for each connection.
    let router = Router::new()
        .route("/api", get(|| async { "ok" }))
        .with_state::<()>(());
    let bytes = match mode.as_str() {
        "bare" => rt.block_on(requests(&router, n)),
        "layer" => {
            let proxy = ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519()?))
                .identity(Anonymous::unsecured())
                .target("http://127.0.0.1:9")?;
            let wrapped = tower::Layer::layer(&proxy, router);
            rt.block_on(requests(&wrapped, n))
        }
        _ => return Err(usage.into()),
    };
    println!("{mode}: {n} requests, {bytes} body bytes");
    Ok(())
}

/// Sends `n` requests for `GET /api` through clones of `app`; the body bytes read.
async fn requests<S, B>(app: &S, n: u64) -> u64
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let mut bytes = 0;
    for _ in 0..n {
        let req = Request::get("/api")
            .header("host", "127.0.0.1:8080")
            .header("user-agent", "callgrind")
            .body(Body::empty())
            .expect("request");
        let res = app.clone().oneshot(req).await.expect("infallible");
        assert!(res.status().is_success(), "status {}", res.status());
        let body = res.into_body().collect().await.expect("body").to_bytes();
        bytes += black_box(body.len()) as u64;
    }
    bytes
}
