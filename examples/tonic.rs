//! A tonic gRPC server with the proxy: the app's own gRPC services (here the standard health
//! service) answer as usual, `/proxy/*` is forwarded with the caller's identity as a JWT.
//!
//! ```text
//! cargo run --example tonic -- --target http://127.0.0.1:1991
//! curl http://127.0.0.1:50051/proxy/anything          # HTTP/1.1, forwarded as anonymousUser
//! grpcurl -plaintext 127.0.0.1:50051 grpc.health.v1.Health/Check
//! ```
//!
//! tonic speaks only HTTP/2 unless told otherwise: `accept_http1(true)` lets HTTP/1.1
//! callers (browsers, curl) reach `/proxy`. To forward gRPC to an h2c target, give the
//! proxy a client built with `http2_prior_knowledge(true)` (`--h2c`). It prints
//! `listening on http://ADDR` once it accepts connections, and stops on Ctrl-C.

use clap::Parser;
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};
use tower_identity_proxy::{
    ProxyHandle, ProxyLayer, Target,
    client::ProxyClient,
    identity::{Anonymous, BearerJwt, IdentityExtractor},
    jwt::{KeyPair, KeySigner},
};

#[derive(Parser)]
struct Options {
    /// Where to listen; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// Where `/proxy` forwards to; without it the proxy answers `501`.
    #[arg(long)]
    target: Option<Target>,
    /// Speak HTTP/2 with prior knowledge to a plain-http target (a gRPC backend).
    #[arg(long)]
    h2c: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let opts = Options::parse();
    let keys = KeyPair::generate_ed25519()?;
    let handle = match opts.target {
        Some(target) => ProxyHandle::with_target(target),
        None => ProxyHandle::new(),
    };
    let proxy = ProxyLayer::new(KeySigner::new(keys.clone()))
        // Tokens this app signed, else anonymous.
        .with_identity(BearerJwt::new(keys.verifier()).or(Anonymous::new()))
        .client(
            ProxyClient::builder()
                .http2_prior_knowledge(opts.h2c)
                .build()?,
        )
        .handle(handle);

    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind(&opts.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    Server::builder()
        .accept_http1(true)
        .layer(proxy)
        .add_service(health)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
