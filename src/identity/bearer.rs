//! Bearer tokens signed by the app's own key, so a target can call the app back with the
//! token it received.

use http::{HeaderValue, header, request::Parts};

use super::{ExtractResult, IdentityExtractor, Rejection, authorization_scheme};
use crate::verifier::Verifier;

/// Accepts `Authorization: Bearer <JWT>` when the token verifies with the app's keys
/// (see [`Verifier`]: pinned algorithm, `exp` required, `alg: none` refused).
///
/// With [`KeySet::verifier`](crate::KeySet::verifier), the key is chosen by the token's
/// `kid` among every published key and follows rotations.
///
/// No `Authorization` header or another scheme: no identity (a chain that finds none answers
/// `401` with `WWW-Authenticate: Bearer`). A token that does not verify: `401` with
/// `WWW-Authenticate: Bearer error="invalid_token"`.
#[derive(Clone, Debug)]
pub struct BearerJwt {
    verifier: Verifier,
}

impl BearerJwt {
    /// Bearer tokens checked by `verifier`, e.g. [`KeyPair::verifier`](crate::KeyPair::verifier).
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier }
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

pub(crate) fn invalid_token(message: &'static str) -> Rejection {
    Rejection::unauthorized(
        Some(HeaderValue::from_static(r#"Bearer error="invalid_token""#)),
        message,
    )
}

impl IdentityExtractor for BearerJwt {
    /// `Bearer` (RFC 6750 §3: no error code when the request carries no token).
    fn challenges(&self) -> Vec<HeaderValue> {
        vec![HeaderValue::from_static("Bearer")]
    }

    async fn extract(&self, parts: &Parts) -> ExtractResult {
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        let Some((scheme, token)) = authorization_scheme(value) else {
            return Err(invalid_token("The Authorization header is malformed."));
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(None);
        }
        if values.next().is_some() {
            return Err(invalid_token("Several Authorization headers were sent."));
        }
        match self.verifier.verify(token) {
            Ok(claims) => Ok(Some(claims.identity())),
            Err(e) => {
                tracing::debug!(target: "tower_identity_proxy", reason = e.reason(), "bearer token refused");
                Err(invalid_token("The bearer token is not valid."))
            }
        }
    }
}
