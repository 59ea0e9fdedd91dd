//! The smallest axum app with the proxy: `/proxy/*` forwarded with the caller's identity as
//! a signed JWT, and the app's own route protected by the same identity chain.
//!
//! ```text
//! cargo run --example axum -- --target http://127.0.0.1:1991
//! curl -u Alice:abcdef123456 http://127.0.0.1:3000/api/whoami     # Alice
//! curl -u Alice:abcdef123456 http://127.0.0.1:3000/proxy/anything # forwarded, with a JWT
//! ```
//!
//! One user, `Alice` (password `abcdef123456`, `ROLE_USER`); other callers are anonymous
//! (`/api/whoami` answers them `403`). It prints `listening on http://ADDR` once it accepts
//! connections, and stops on Ctrl-C or SIGTERM.

use axum::{Json, Router, routing::get};
use clap::Parser;
use serde_json::{Value, json};
use tower_identity_proxy::{
    ProxyHandle, ProxyLayer, Target,
    identity::{Authenticate, BasicAuth, BearerJwt, CredentialStore, Identity, IdentityExtractor},
    jwt::{KeyPair, KeySigner},
};

#[derive(Parser)]
struct Options {
    /// Where to listen; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Where `/proxy` forwards to; without it the proxy answers `501`.
    #[arg(long)]
    target: Option<Target>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let opts = Options::parse();
    // Generating a key and hashing a password are slow on purpose: off the async workers.
    let keys = tokio::task::spawn_blocking(|| KeyPair::generate_rsa(2048)).await??;
    let users = CredentialStore::new();
    let store = users.clone();
    tokio::task::spawn_blocking(move || {
        store.insert("Alice", "abcdef123456", ["ROLE_USER", "ROLE_WONDERLAND"])
    })
    .await??;

    // Basic, else a token this app signed, else anonymous: for the proxy and the routes.
    let identity = BasicAuth::new(users)
        .or(BearerJwt::new(keys.verifier()))
        .or_anonymous();
    let handle = match opts.target {
        Some(target) => ProxyHandle::with_target(target),
        None => ProxyHandle::new(),
    };
    let app = Router::new()
        .route("/api/whoami", get(whoami))
        .route_layer(Authenticate::new(identity.clone()).require_role("ROLE_USER"))
        .route("/", get(|| async { "Try /api/whoami and /proxy/." }))
        .layer(
            ProxyLayer::new(KeySigner::rs512(keys)?)
                .with_identity(identity)
                .handle(handle),
        );

    let listener = tokio::net::TcpListener::bind(&opts.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

/// The caller, as `Authenticate` put it in the request.
async fn whoami(who: Identity) -> Json<Value> {
    Json(json!({ "name": who.name(), "roles": who.roles() }))
}

/// Ctrl-C, or SIGTERM on unix.
async fn shutdown() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
