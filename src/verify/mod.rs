//! The target's side: [`VerifyProxyJwtLayer`] checks the identity token the proxy adds, and
//! [`ForwardedOrigin`] rebuilds the app's URL for call-backs.
//!
//! Put the layer in front of the target's routes. For each request it:
//! - takes the token from `Authorization: Bearer`;
//! - refuses tokens whose header names its own key (`jku`, `x5u`, `jwk`, `x5c`; keys are
//!   never fetched from a URL a token names), has critical extensions (`crit`), or whose
//!   `alg` is `none`, an HMAC algorithm, or any algorithm the chosen key is not pinned to
//!   (so a public key can never be used as an HMAC secret);
//! - picks the key by `kid` from a JWKS URL ([`VerifyProxyJwtLayer::jwks_url`]) or from
//!   keys given up front ([`VerifyProxyJwtLayer::new`],
//!   [`VerifyProxyJwtLayer::public_key_pem`]);
//! - checks the signature, then `exp` (required), `nbf` and `iat` with a leeway (30 s by
//!   default), and `iss`/`aud` when configured; the claims must have the shape this crate
//!   signs (`sub`, `authorities`, `iat`, `exp`);
//! - puts the caller's [`Identity`](crate::identity::Identity) and the token's
//!   [`Claims`](crate::jwt::Claims) into the request extensions, where handlers (axum's
//!   `Extension<Identity>`) find them.
//!
//! A failed check is answered `401` with `WWW-Authenticate: Bearer error="invalid_token"`
//! and a plain-text body that says nothing about why; the reason goes to `tracing`.
//!
//! # Example
//!
//! ## Keys from the app's JWKS
//!
//! ```
//! use axum::{Extension, Router, routing::get};
//! use tower_identity_proxy::{identity::Identity, verify::VerifyProxyJwtLayer};
//!
//! # fn main() -> Result<(), tower_identity_proxy::ConfigError> {
//! let target: Router = Router::new()
//!     .route("/whoami", get(|Extension(me): Extension<Identity>| async move {
//!         format!("{} {:?}", me.name(), me.roles())
//!     }))
//!     .layer(VerifyProxyJwtLayer::jwks_url("http://127.0.0.1:8080/.well-known/jwks.json")?);
//! # let _ = target;
//! # Ok(()) }
//! ```
//!
//! ## A public key given up front, as the Atoti document's Python target does
//!
//! ```
//! use axum::{Extension, Router, routing::get};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//! use tower_identity_proxy::{
//!     identity::Identity,
//!     jwt::{Algorithm, JwtSigner, KeyPair, KeySigner},
//!     verify::VerifyProxyJwtLayer,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyPair::generate_rsa(2048)?; // the app's key; the target has only the PEM
//! let verify =
//!     VerifyProxyJwtLayer::public_key_pem(keys.public_key_pem().as_bytes(), Algorithm::RS512)?;
//! let target = Router::new()
//!     .route("/whoami", get(|Extension(me): Extension<Identity>| async move {
//!         me.name().to_owned()
//!     }))
//!     .layer(verify);
//!
//! let token = KeySigner::rs512(keys)?.sign(&Identity::new("Alice", ["ROLE_USER"])).await?;
//! let req = Request::get("/whoami")
//!     .header("authorization", token.authorization())
//!     .body(axum::body::Body::empty())?;
//! assert_eq!(target.clone().oneshot(req).await?.status(), StatusCode::OK);
//!
//! let forged = Request::get("/whoami")
//!     .header("authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.")
//!     .body(axum::body::Body::empty())?;
//! let res = target.oneshot(forged).await?;
//! assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
//! assert_eq!(res.headers()["www-authenticate"], r#"Bearer error="invalid_token""#);
//! # Ok(()) }
//! ```
//!
//! ## Calling the app back
//!
//! Behind the proxy, `X-Forwarded-Proto` and `X-Forwarded-Host` name the app as the client
//! reached it; [`ForwardedOrigin`] validates them and builds the URL to call with the
//! token the request carried (see its docs for the security note).
//!
//! # Caveat: rotation and the JWKS cache
//!
//! The cache refetches the JWKS when a token names an unknown `kid`, within a rate limit
//! (by default a burst of 3 fetches, then one per 10 s; see
//! [`min_refresh_interval`](VerifyProxyJwtLayer::min_refresh_interval)). A rotation is
//! picked up at once unless a flood of made-up `kid`s has just used the burst up; then
//! tokens of the new key are refused until the next fetch is allowed. Publish the next key
//! first ([`KeySet::publish`](crate::jwt::KeySet::publish)) to close that window.

mod forwarded;
mod layer;
pub(crate) mod remote;
mod service;

pub use forwarded::{ForwardedOrigin, InvalidForwarded};
pub use layer::VerifyProxyJwtLayer;
pub use service::{ResponseFuture, VerifyProxyJwt};
