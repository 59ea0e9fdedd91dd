//! JWT keys and signing: key pairs, the pluggable [`JwtSigner`] and its token cache, key
//! rotation with [`KeySet`], the JWK Set a target fetches, and token verification.
//!
//! A token carries `sub` (the user name), `authorities` (the sorted roles), `iat` (back-dated
//! a few seconds for clock skew) and `exp`, plus `iss`, `aud`, `jti` and extra claims when
//! configured; its header carries `alg`, `typ: JWT` and `kid` (the key's RFC 7638
//! thumbprint). RS512 is the default for RSA keys, as Atoti Server signs.
//!
//! Keys are parsed once; RSA signatures run on tokio's blocking pool so they never stall the
//! async workers. [`ProxyLayer::new`](crate::ProxyLayer::new) wraps the signer in a
//! [`CachingSigner`], which reuses a caller's token until half its lifetime is gone.
//!
//! # Example
//!
//! ## Default: RS512, five-minute tokens
//!
//! ```
//! use tower_identity_proxy::{identity::Identity, jwt::{JwtSigner, KeyPair, KeySigner}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeyPair::generate_rsa(2048)?;
//! let signer = KeySigner::rs512(keys.clone())?;
//! let token = signer.sign(&Identity::new("Alice", ["ROLE_USER"])).await?;
//! let claims = keys.verifier().verify(token.as_str())?;
//! assert_eq!(claims.authorities, ["ROLE_USER"]);
//! # Ok(()) }
//! ```
//!
//! ## Customised: ES256, one-minute tokens with issuer and audience
//!
//! ```
//! use std::time::Duration;
//! use tower_identity_proxy::jwt::{Algorithm, Curve, KeyPair, KeySigner, TokenPolicy};
//!
//! let keys = KeyPair::generate_ec(Curve::P256)?;
//! let signer = KeySigner::with_algorithm(keys, Algorithm::ES256)?.policy(
//!     TokenPolicy::new()
//!         .lifetime(Duration::from_secs(60))
//!         .issuer("https://app.example.com")
//!         .audience("https://target.example.com"),
//! );
//! # let _ = signer;
//! # Ok::<(), tower_identity_proxy::ConfigError>(())
//! ```
//!
//! ## Rotation
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use tower_identity_proxy::{identity::Identity, jwt::{JwtSigner, KeyPair, KeySet, KeySigner}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeySet::new(KeySigner::rs512(KeyPair::generate_rsa(2048)?)?);
//! let signer = keys.signer();
//! let verifier = keys.verifier();
//! let alice = Identity::new("Alice", ["ROLE_USER"]);
//! let first_kid = keys.active_kid();
//! let before = signer.sign(&alice).await?;
//!
//! let rotation = keys.rotate(KeyPair::generate_rsa(2048)?)?;
//! // Published at once, signing only after the rotation delay (95 s by default).
//! assert_eq!(keys.kids(), [first_kid.clone(), rotation.kid().to_owned()]);
//! assert_eq!(keys.active_kid(), first_kid);
//! assert!(rotation.signs_from() > SystemTime::now() + Duration::from_secs(90));
//!
//! // Signing with it now (an emergency): the previous key stays published.
//! let now = keys.rotate_at(keys.pending().unwrap(), SystemTime::now())?;
//! let after = signer.sign(&alice).await?;
//! assert_eq!(keys.active_kid(), now.kid());
//! verifier.verify(before.as_str())?; // the previous key's tokens still verify
//! verifier.verify(after.as_str())?;
//! # Ok(()) }
//! ```
//!
//! ## Several replicas
//!
//! Give every replica the same key files, or [`publish`](KeySet::publish) the other
//! replicas' public keys, so that a token signed by one verifies everywhere. A
//! [`SharedState`](crate::state::SharedState) does the latter through a state store.
//!
//! ```
//! use tower_identity_proxy::jwt::{Algorithm, KeyPair, KeySet, KeySigner};
//!
//! let mine = KeySet::new(KeySigner::new(KeyPair::generate_ed25519()?));
//! let other_replica = KeyPair::generate_ed25519()?; // in practice, read its PEM
//! mine.publish(other_replica.public_key(), Algorithm::EdDSA)?;
//! assert_eq!(mine.kids().len(), 2);
//! # Ok::<(), tower_identity_proxy::ConfigError>(())
//! ```
//!
//! ## Publishing the keys, next to the proxy
//!
//! ```
//! use axum::Router;
//! use tower_identity_proxy::{ProxyLayer, jwt::{KeyPair, KeySet, KeySigner}};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeySet::new(KeySigner::rs512(KeyPair::generate_rsa(2048)?)?);
//! let app: Router = Router::new()
//!     .route_service("/.well-known/jwks.json", keys.jwks())
//!     .layer(ProxyLayer::new(keys.signer()));
//! # let _ = app;
//! # Ok(()) }
//! ```
//!
//! ## A fixed set of keys, cached for five minutes
//!
//! ```
//! use std::time::Duration;
//! use tower_identity_proxy::jwt::{Algorithm, Jwks, KeyPair};
//!
//! let key = KeyPair::generate_ed25519()?;
//! let jwks = Jwks::from_keys([(key.public_key(), Algorithm::EdDSA)])?
//!     .max_age(Duration::from_secs(300));
//! # let _ = jwks;
//! # Ok::<(), tower_identity_proxy::ConfigError>(())
//! ```
//!
//! # Key rotation
//!
//! [`rotate`](KeySet::rotate) publishes a new key at once and signs with it only after the
//! [rotation delay](KeySet::rotation_delay) (default [`DEFAULT_ROTATION_DELAY`], 95 s):
//! long enough for a target's JWKS client to have seen it. PyJWT's `PyJWKClient` and
//! `jose` keep a fetched JWK Set and, on meeting an unknown `kid`, fetch it again at most
//! once every 30 s; a shared HTTP cache may serve the set for its `max-age` (60 s by
//! default, [`Jwks::max_age`]). A token signed with a key the target has not fetched would
//! be refused for up to that long, so the delay must be longer than both added up.
//!
//! Once the new key signs, the previous one stays published, and accepted by the verifier,
//! until every token it signed has expired: the token lifetime of the previous signer plus
//! a [grace](KeySet::retirement_grace) for clock skew and caches. It is then retired.
//! Nothing needs a restart; a request being signed while the switch happens finishes with
//! the key it started with, and its token verifies.
//!
//! [`revoke`](KeySet::revoke) withdraws a key at once (a leaked key): it disappears from
//! the JWK Set and the verifier, and a [`CachingSigner`] in front of
//! the signer drops every cached token. To replace a leaked active key, rotate with
//! [`rotate_at`](KeySet::rotate_at) and the current time, then revoke it.
//!
//! # JWK Set
//!
//! [`Jwks`] serves the public keys as an RFC 7517 JWK Set. Targets that verify the identity
//! tokens (PyJWT's `PyJWKClient`, `jose`, Envoy's
//! `jwt_authn`, this crate's [`VerifyProxyJwtLayer`](crate::verify::VerifyProxyJwtLayer))
//! fetch it, pick the key whose `kid` the token names, and need nothing else
//! configured. Each key carries `kty`, `kid` (its RFC 7638 thumbprint, the same `kid` the
//! tokens carry), `alg`, `use: "sig"` and its public parameters (`n`/`e` for RSA,
//! `crv`/`x`/`y` for EC, `crv`/`x` for Ed25519). Private parameters are never published.
//!
//! The service answers `GET` and `HEAD` with `200`, `Content-Type: application/json`,
//! `Cache-Control: public, max-age=60` and an `ETag` (and `304` to a matching
//! `If-None-Match`); other methods get `405`. Served from a [`KeySet`], the document
//! follows rotations at once.
//!
//! # Caching caveat
//!
//! A verifier that caches the document refetches it when it meets an unknown `kid`, at
//! most once per cool-down (30 s for PyJWT's `PyJWKClient` and `jose`), and a shared HTTP
//! cache (a CDN) in between could serve the old document for up to `max-age`. A
//! [`KeySet`] therefore publishes a rotated-to key for its
//! [rotation delay](KeySet::rotation_delay) (95 s by default: the default `max-age` of
//! 60 s, the 30 s cool-down and 5 s) before it signs with it. With a longer `max-age`, set
//! a longer delay.

pub(crate) mod claims;
pub mod dangerous;
pub(crate) mod jwks;
pub(crate) mod keys;
pub(crate) mod keyset;
pub(crate) mod signer;
pub(crate) mod subject;
pub(crate) mod verifier;

pub use claims::Claims;
pub use jwks::Jwks;
pub use keys::{Algorithm, Curve, KeyPair, PublicKey};
pub use keyset::{DEFAULT_ROTATION_DELAY, KeySet, KeySetSigner, Rotation};
pub use signer::{CachingSigner, JwtSigner, KeySigner, SignError, Token, TokenPolicy};
pub use verifier::{Verifier, VerifyError};
