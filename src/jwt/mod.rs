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
//! use tower_identity_proxy::{identity::Identity, jwt::{JwtSigner, KeyPair, KeySet, KeySigner}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeySet::new(KeySigner::rs512(KeyPair::generate_rsa(2048)?)?);
//! let signer = keys.signer();
//! let verifier = keys.verifier();
//! let alice = Identity::new("Alice", ["ROLE_USER"]);
//! let before = signer.sign(&alice).await?;
//!
//! let new_kid = keys.rotate(KeyPair::generate_rsa(2048)?)?;
//! let after = signer.sign(&alice).await?;
//! assert_eq!(keys.active_kid(), new_kid);
//! assert_eq!(keys.kids().len(), 2); // the previous key is still published
//! verifier.verify(before.as_str())?; // so its tokens still verify
//! verifier.verify(after.as_str())?;
//! # Ok(()) }
//! ```
//!
//! ## Several replicas
//!
//! Give every replica the same key files, or [`publish`](KeySet::publish) the other
//! replicas' public keys, so that a token signed by one verifies everywhere.
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
//! [`rotate`](KeySet::rotate) makes a new key active at once. The previous key stays
//! published, and accepted by the verifier, until every token it signed has expired: the
//! token lifetime of the previous signer plus a [grace](KeySet::retirement_grace) for
//! clock skew and caches. It is then retired. Nothing needs a restart; a request being
//! signed while the rotation happens finishes with the key it started with, and its token
//! verifies.
//!
//! [`revoke`](KeySet::revoke) withdraws a key at once (a leaked key): it disappears from
//! the JWK Set and the verifier, and a [`CachingSigner`] in front of
//! the signer drops every cached token.
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
//! A [`KeySet`] signs with a new key as soon as it is rotated. A verifier that caches the
//! document refetches it when it meets an unknown `kid`, but a shared HTTP cache (a CDN) in
//! between could serve the old document for up to `max-age`. Behind such a cache, publish
//! the next key first ([`KeySet::publish`]) and rotate to it once `max-age` has passed.

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
pub use keyset::{KeySet, KeySetSigner};
pub use signer::{CachingSigner, JwtSigner, KeySigner, SignError, Token, TokenPolicy};
pub use verifier::{Verifier, VerifyError};
