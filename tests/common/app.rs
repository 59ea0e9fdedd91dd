//! Identities for the tests' apps: the cheap `x-test-user` header ([`user_header`]), and the
//! protocol tests' app that forwards everyone as Alice ([`alice_app`], [`assert_alice`]).

use std::net::SocketAddr;

use axum::{Router, routing};
use http::request::Parts;
use serde_json::json;
use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    client::ProxyClient,
    identity::{ExtractResult, Identity, Rejection},
    jwt::{CachingSigner, KeySigner},
};

use super::{bearer_token, decode_rs512, rsa_keys, serve};

/// The plain message of a 502 from the proxy.
pub const UNREACHABLE: &str = "The proxy target could not be reached.";

/// The identity named by `x-test-user: NAME:ROLE,ROLE` (none without the header): cheap,
/// so load tests measure signing and forwarding, not password hashing.
pub fn user_header(parts: &Parts) -> impl Future<Output = ExtractResult> + Send + use<> {
    let value = parts
        .headers
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    async move {
        Ok(value.map(|v| {
            let (name, roles) = v.split_once(':').unwrap_or((v.as_str(), ""));
            Identity::new(name, roles.split(',').filter(|r| !r.is_empty()))
        }))
    }
}

type AliceFuture = std::future::Ready<Result<Option<Identity>, Rejection>>;
type AliceFn = fn(&Parts) -> AliceFuture;
/// The layer type of [`alice_layer`].
pub type AliceLayer = ProxyLayer<AliceFn, CachingSigner<KeySigner>>;

fn alice(_: &Parts) -> AliceFuture {
    std::future::ready(Ok(Some(Identity::new(
        "alice",
        ["ROLE_USER", "ROLE_ADMIN"],
    ))))
}

/// A proxy layer forwarding everyone as Alice, RS512 tokens (fixture key), to `target`
/// through `client`.
pub fn alice_layer(client: ProxyClient, target: &str) -> AliceLayer {
    ProxyLayer::new(KeySigner::rs512(rsa_keys()).expect("signer"))
        .with_identity(alice as AliceFn)
        .client(client)
        .handle(ProxyHandle::with_target(
            Target::parse(target).expect("target"),
        ))
}

/// Starts an axum app (HTTP/1.1 and HTTP/2 with prior knowledge) with [`alice_layer`] in
/// front of one route, `/api`; it runs until the test's runtime ends.
pub async fn alice_app(client: ProxyClient, target: &str) -> SocketAddr {
    let app = Router::new()
        .route("/api", routing::get(|| async { "api" }))
        .layer(alice_layer(client, target));
    serve(app).await.detach()
}

/// Asserts `Authorization: Bearer <JWT>` verifies (jsonwebtoken, fixture key) and is
/// Alice's, as [`alice_layer`]'s identity extractor says.
pub fn assert_alice(authorization: &str) {
    let claims = decode_rs512(bearer_token(authorization));
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["authorities"], json!(["ROLE_ADMIN", "ROLE_USER"]));
}
