//! axum integration (feature `axum`): [`Identity`] as an extractor, [`Rejection`] as a
//! response.

use axum_core::{
    body::Body,
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::{StatusCode, request::Parts};

use super::{Identity, Rejection};

/// The caller's identity, as [`Authenticate`](super::Authenticate) or
/// [`VerifyProxyJwtLayer`](crate::verify::VerifyProxyJwtLayer) put it into the request
/// extensions (or the app's own middleware: any `Identity` extension).
///
/// A route outside those layers has none: `500`, `No identity: the route is not behind an
/// identity layer.`, a programming error as axum's `Extension` treats a missing extension.
/// Take `Option<Identity>` where a route may be reached without one.
impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Identity>().cloned().ok_or_else(|| {
            Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No identity: the route is not behind an identity layer.",
            )
        })
    }
}

/// `Option<Identity>`: `None` for a request without an `Identity` extension.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Identity>().cloned())
    }
}

/// The rejection's status, its `WWW-Authenticate` challenge if any, and its message as
/// `text/plain; charset=utf-8`: what the proxy itself answers.
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.into_http_response::<Body>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[tokio::test]
    async fn an_identity_in_the_extensions_is_extracted() {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        let err = <Identity as FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let none = <Identity as OptionalFromRequestParts<()>>::from_request_parts(&mut parts, &());
        assert_eq!(none.await.unwrap(), None);

        parts
            .extensions
            .insert(Identity::new("Alice", ["ROLE_USER"]));
        let who = <Identity as FromRequestParts<()>>::from_request_parts(&mut parts, &())
            .await
            .unwrap();
        assert_eq!(who.name(), "Alice");
    }

    #[tokio::test]
    async fn a_rejection_is_a_plain_text_response_with_its_challenge() {
        use http_body_util::BodyExt;
        let challenge = HeaderValue::from_static("Bearer");
        let res = IntoResponse::into_response(Rejection::unauthorized(
            Some(challenge),
            "The session is not valid.",
        ));
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "The session is not valid.");
    }
}
