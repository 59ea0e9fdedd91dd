//! A tower layer that forwards requests under `/proxy` to a target URL that can change at
//! run time, adding who the caller is as a signed JWT. Everything else passes through.
//!
//! It reproduces the proxy of Atoti Server: `{app}/proxy/some/path?foo=bar` is forwarded to
//! `{target}/some/path?foo=bar` with the same method, headers and streamed body, plus
//! `Authorization: Bearer <JWT>` (claims `sub` and `authorities`, RS512 by default),
//! `X-Forwarded-Proto` and `X-Forwarded-Host`; the target's status, headers and body come
//! back as they are. The proxy is disabled until a target is set:
//! `501 The proxy is disabled.`
//!
//! ```text
//! client ──/proxy/x?y──▶ app + ProxyLayer ──/x?y + Bearer JWT──▶ target
//!                         (everything else ──▶ the app's own routes)
//! ```
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_identity_proxy::{
//!     ProxyHandle, ProxyLayer,
//!     identity::{BasicAuth, BearerJwt, CredentialStore, IdentityExtractor},
//!     jwt::{KeyPair, KeySigner},
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyPair::generate_rsa(2048)?; // or KeyPair::from_pem(private, Some(public))
//! let users = CredentialStore::new();
//! users.insert("Alice", "abcdef123456", ["ROLE_USER", "ROLE_WONDERLAND"])?;
//!
//! let handle = ProxyHandle::new(); // cheap to clone; changes the target at run time
//! let proxy = ProxyLayer::new(KeySigner::rs512(keys.clone())?)
//!     .with_identity(
//!         BasicAuth::new(users)
//!             .or(BearerJwt::new(keys.verifier()))
//!             .or_anonymous(),
//!     )
//!     .handle(handle.clone());
//! let app: Router = Router::new()
//!     .route("/api/whoami", get(|| async { "me" }))
//!     .layer(proxy);
//!
//! handle.set_target(Some("http://localhost:1991"))?;
//! handle.set_target(None)?; // disabled again
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! # What the target receives
//!
//! | | |
//! |---|---|
//! | request line | same method; the path after the prefix appended to the target's base path; the query byte for byte |
//! | `Authorization` | `Bearer <JWT>`, always replacing what the client sent |
//! | `X-Forwarded-Proto` | with [`ProxyLayer::public_origin`], the scheme of the origin the request came through; else a [trusted proxy](ProxyLayer::trusted_proxies)'s, the HTTP/2 `:scheme`, or the one set with [`ProxyLayer::forwarded_proto`] (default `http`) |
//! | `X-Forwarded-Host` | with [`ProxyLayer::public_origin`], the host of the origin the request came through (a `Host` that names none is `421`); else the `Host` (HTTP/2: `:authority`) the client used, or a trusted proxy's: any host a client names |
//! | `X-Forwarded-For` | only with [`ProxyLayer::forwarded_for`]: the client's address as the server reports it (e.g. axum's `ConnectInfo`), or the nearest untrusted hop a trusted proxy reports |
//! | `Forwarded`, `X-Forwarded-*`, `X-Real-IP` | never the client's: only the `X-Forwarded-*` above, set by the proxy |
//! | `Authorization`'s `iss` | with [`ProxyLayer::public_origin`], the origin the request came through |
//! | `Host` | the target's authority |
//! | `Via` | the client's `Via` plus this proxy's pseudonym (a request that already names it is a loop: `508`) |
//! | `Max-Forwards` | on `OPTIONS`: `0` is answered by the proxy itself (`200` with `Allow`, nothing forwarded), `n` is forwarded as `n - 1`, an invalid value or more than one is `400`; on other methods, as sent |
//! | other headers | as sent, minus hop-by-hop headers, `Proxy-Authorization`, `Expect`, `Cookie` (see [`CookiePolicy`](rules::CookiePolicy)), `X-Original-URL`, `X-Rewrite-URL` and `X-Original-URI` (a target that honours them would serve a path outside the base path), the headers only a hop in front of the target may state (`Proxy`, `True-Client-IP`, `X-Original-Host`, `Remote-User`, `X-Auth-Request-*`...: see the README), and the names with `_` that read, with `-` for `_`, as a header the proxy removes or sets (`X_Forwarded_Host`, `Transfer_Encoding`, `_Authorization`, `Max_Forwards`...), which CGI and WSGI targets would take for it |
//! | body | streamed, any bytes, any size |
//! | trailers | as sent, minus the fields the proxy manages in the header section (`Authorization`, `Host`, `Cookie`, `Via`, `Forwarded`, `X-Forwarded-*`, hop-by-hop and framing fields, path and method overrides...) and the content and control fields RFC 9110 §6.5.1 keeps out of trailers |
//!
//! # Identity and signing
//!
//! Who the caller is comes from an [`IdentityExtractor`](identity::IdentityExtractor) (see
//! [`identity`]): Basic users, the app's own tokens, an OpenID Connect provider's access
//! tokens ([`OidcBearer`](identity::OidcBearer)), or an extractor of the app's own; how the
//! token is signed from a [`JwtSigner`](jwt::JwtSigner) (see [`jwt`]). [`ProxyLayer::new`] caches tokens per
//! identity, so the RSA signature is paid once per identity every few minutes, not per
//! request.
//!
//! # Trust chain
//!
//! Every token signed by a [`KeySigner`](jwt::KeySigner) or a [`KeySet`](jwt::KeySet) names
//! its key in a `kid` header (the key's RFC 7638 thumbprint); the unsigned tokens of
//! [`jwt::dangerous::InsecureUnsignedSigner`] carry none. A [`KeySet`](jwt::KeySet) holds the
//! signing key and rotates it at run time, keeping the previous key published until its
//! tokens have expired; [`Jwks`](jwt::Jwks) serves the keys as a JWK Set (e.g. at `/.well-known/jwks.json`), so
//! targets need no key handed over out of band. A Rust target verifies tokens with
//! [`verify::VerifyProxyJwtLayer`]; a Python one with PyJWT's `PyJWKClient`.
//!
//! # With tower-http
//!
//! A production app stacks tower-http's layers around the proxy. This order composes
//! (outermost first):
//!
//! 1. `SetRequestIdLayer`: an `x-request-id` for requests without one; the proxy forwards
//!    it to the target like any end-to-end header;
//! 2. `SetSensitiveRequestHeadersLayer` for `Authorization` and `Cookie`: the layers inside
//!    it log them as `Sensitive`;
//! 3. `TraceLayer`: one span per request, `/proxy` included;
//! 4. `PropagateRequestIdLayer`: the same `x-request-id` on the response;
//! 5. `RequestBodyLimitLayer`: a body declared too large is answered `413` before the proxy
//!    forwards anything (one that turns out too large while streamed is cut off);
//! 6. [`ProxyLayer`]: answers `/proxy` itself, before routing;
//! 7. the router, with its own `TimeoutLayer` and, per protected route,
//!    [`identity::Authenticate`] (the proxy's identity chain for the app's routes). Keep
//!    `TimeoutLayer` off `/proxy`: the proxy's own
//!    [`upstream_timeout`](ProxyLayer::upstream_timeout) answers `504` for a slow target,
//!    and a timeout around the streamed response would cut long downloads off.
//!
//! ```
//! use std::time::Duration;
//!
//! use axum::{Router, routing::get};
//! use http::{StatusCode, header};
//! use tower::ServiceBuilder;
//! use tower_http::{
//!     ServiceBuilderExt, limit::RequestBodyLimitLayer, request_id::MakeRequestUuid,
//!     timeout::TimeoutLayer, trace::TraceLayer,
//! };
//! use tower_identity_proxy::{
//!     ProxyLayer,
//!     identity::{Authenticate, Identity, IdentityExtractor},
//!     jwt::{KeyPair, KeySigner},
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyPair::generate_ed25519()?;
//! let identity = tower_identity_proxy::identity::FromExtensions.or_anonymous();
//! let routes: Router = Router::new()
//!     .route("/api/whoami", get(|who: Identity| async move { who.name().to_owned() }))
//!     .route_layer(Authenticate::new(identity.clone()))
//!     .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(10)));
//! let app = ServiceBuilder::new()
//!     .set_x_request_id(MakeRequestUuid)
//!     .sensitive_request_headers([header::AUTHORIZATION, header::COOKIE].into())
//!     .layer(TraceLayer::new_for_http())
//!     .propagate_x_request_id()
//!     .layer(RequestBodyLimitLayer::new(1 << 20))
//!     .layer(ProxyLayer::new(KeySigner::new(keys)).with_identity(identity))
//!     .service(routes);
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! `tests/tower_http.rs` runs this stack over real sockets. `examples/demo/` is built
//! this way.
//!
//! # Basic authentication in a debug build
//!
//! [`BasicAuth`](identity::BasicAuth) checks passwords with Argon2id, which is slow on
//! purpose and far slower unoptimised: a Basic request can take half a second in a debug
//! build of your app. This crate's own profile settings do not reach your build; add to
//! your `Cargo.toml`:
//!
//! ```toml
//! [profile.dev.package.argon2]
//! opt-level = 3
//! [profile.dev.package.blake2]
//! opt-level = 3
//! ```
//!
//! # Security
//!

//! `/proxy` needs no authentication: anonymous callers reach the target as
//! `anonymousUser`. The target must verify the token (signature, algorithm, `exp`) before
//! trusting it; a Rust target can use [`verify::VerifyProxyJwtLayer`] (or a [`Verifier`](jwt::Verifier)).
//! Anyone who can change the target URL receives tokens the app itself accepts: guard it
//! as an admin setting.
//!
//! # Modules
//!
//! | Module | What it holds |
//! |---|---|
//! | crate root | [`ProxyLayer`], [`Proxy`], [`ProxyHandle`], [`Target`] and the errors: what most apps need |
//! | [`proxy`] | the request path's other types: response future and body, WebSocket [`Tunnels`](proxy::Tunnels), the builder's validated values |
//! | [`rules`] | the header rules of an intermediary: hop-by-hop removal, `X-Forwarded-*`, the cookie policy |
//! | [`identity`] | who the caller is: [`IdentityExtractor`](identity::IdentityExtractor), Basic, Bearer, anonymous |
//! | [`jwt`] | keys, signers and their token cache, key rotation, the JWK Set, token verification |
//! | [`client`] | the pooled HTTP client that reaches the target (TLS, HTTP/2) |
//! | [`verify`] | the target's side: a layer that verifies the proxy's tokens |
//! | [`state`] | where the target, users and published keys live: this process, or Redis shared by replicas |
//!
//! # Feature flags
//!
//! | Feature | Default? | What it adds |
//! |---|---|---|
//! | `https` | yes | https targets through rustls (aws-lc-rs provider) |
//! | `webpki-roots` | yes | Mozilla's root certificates for https targets; implies `https` |
//! | `tower-http` | yes | [`identity::Authenticate`]: the identity chain as tower-http's `AsyncAuthorizeRequest`, for the app's own routes (tower-http 0.7, feature `auth` only) |
//! | `axum` | yes | [`Identity`](identity::Identity) as an axum extractor, [`Rejection`](identity::Rejection) as an axum response (axum-core 0.5, i.e. axum 0.8; tonic 0.14 depends on it too) |
//! | `metrics` | yes | metrics through the [`metrics`](https://docs.rs/metrics) facade: request outcomes, upstream latency, token cache, tunnels (see [`observability`]) |
//! | `opentelemetry` | no | the proxy's span becomes the parent of the target's: W3C trace context injected through the global OpenTelemetry propagator (`tracing-opentelemetry`; see [`observability`]) |
//! | `native-roots` | no | the platform's root certificates for https targets, trusted once a client is built with `ClientBuilder::native_roots(true)`; implies `https` |
//! | `redis` | no | `state::RedisStore`: several replicas share the target, users and published keys through Redis |

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod boxed;
pub mod client;
mod error;
pub mod identity;
pub mod jwt;
pub mod observability;
pub mod proxy;
pub mod rules;
pub mod state;
mod target;
pub mod verify;

pub use error::{BoxError, ConfigError, ProxyError, ProxyErrorKind};
pub use proxy::{handle::ProxyHandle, layer::ProxyLayer, service::Proxy};
pub use target::Target;

/// Internals exposed for the fuzz target and the benches; not part of the API, and may
/// change in any release.
#[doc(hidden)]
pub mod __fuzzing {
    pub use crate::rules::rewrite::{
        Framing, RewriteConfig, check_response, rewrite_request, rewrite_response,
        scope_set_cookies,
    };
}

/// The README's examples, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
