//! Bearer tokens signed by the app's own key, so a target can call the app back with the
//! token it received.

use http::{HeaderValue, request::Parts};

use super::{ExtractResult, IdentityExtractor, Rejection, credentials_for};
use crate::jwt::verifier::Verifier;

/// Accepts `Authorization: Bearer <JWT>` when the token verifies with the app's keys
/// (see [`Verifier`]: pinned algorithm, `exp` required, `alg: none` refused).
///
/// With [`KeySet::verifier`](crate::jwt::KeySet::verifier), the key is chosen by the token's
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
    /// Bearer tokens checked by `verifier`, e.g. [`KeyPair::verifier`](crate::jwt::KeyPair::verifier).
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
        let Some(token) = credentials_for(&parts.headers, "bearer").map_err(invalid_token)? else {
            return Ok(None);
        };
        match self.verifier.verify(token) {
            Ok(claims) => Ok(Some(claims.identity())),
            Err(e) => {
                tracing::debug!(target: "tower_identity_proxy", reason = e.reason(), "bearer token refused");
                Err(invalid_token("The bearer token is not valid."))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{JwtSigner, KeyPair, KeySigner};
    use http::header;

    fn parts(lines: &[&str]) -> Parts {
        let mut parts = http::Request::new(()).into_parts().0;
        for line in lines {
            parts
                .headers
                .append(header::AUTHORIZATION, line.parse().unwrap());
        }
        parts
    }

    #[tokio::test]
    async fn one_good_token_only() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let bearer = BearerJwt::new(keys.verifier());
        let token = KeySigner::new(keys)
            .sign(&crate::identity::Identity::new("Alice", ["ROLE_USER"]))
            .await
            .unwrap();
        let good = token.authorization().to_str().unwrap().to_owned();

        let who = bearer.extract(&parts(&[&good])).await.unwrap().unwrap();
        assert_eq!(who.name(), "Alice");
        assert_eq!(bearer.extract(&parts(&[])).await.unwrap(), None);
        assert_eq!(bearer.extract(&parts(&["Basic eDp5"])).await.unwrap(), None);
        for lines in [
            &["Bearer forged"][..],
            &["Bearer"],
            &[&good, &good],
            // A line of another scheme must not hide a forged token in a second one.
            &["Foo x", "Bearer forged"],
            &["Basic eDp5", &good],
            // A tab where the space belongs: no scheme, not "another scheme".
            &["Bearer\tforged"],
        ] {
            let got = bearer.extract(&parts(lines)).await;
            assert_eq!(got.map_err(|e| e.status().as_u16()), Err(401), "{lines:?}");
        }
    }
}
