//! [`Authenticate`]: an [`IdentityExtractor`] as tower-http's [`AsyncAuthorizeRequest`], for
//! the app's own routes.

use std::{borrow::Cow, fmt, future::Future, marker::PhantomData, pin::Pin, sync::Arc};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower_http::auth::{
    AsyncAuthorizeRequest, AsyncRequireAuthorization, AsyncRequireAuthorizationLayer,
};

use super::{IdentityExtractor, Rejection, refusal};

/// Protects an app's own routes with the same [`IdentityExtractor`] as the proxy: each
/// request gets the caller's [`Identity`](super::Identity) in its extensions, or is answered
/// by the extractor's refusal, exactly as the proxy would answer it.
///
/// - an identity: the request goes on, with the [`Identity`](super::Identity) in its
///   extensions (read it with axum's `Extension<Identity>`, or with `Identity` itself as an
///   extractor under the `axum` feature);
/// - no identity (a chain that does not end with
///   [`or_anonymous`](IdentityExtractor::or_anonymous)): `401` with the chain's
///   `WWW-Authenticate` challenges;
/// - a rejection: its status, message and challenge;
/// - an identity without a role named by [`require_role`](Self::require_role): `403`,
///   `This requires the role ROLE_X.`
///
/// It is an [`AsyncAuthorizeRequest`] and its own layer (tower-http's
/// [`AsyncRequireAuthorizationLayer`] with it). The refusal's body
/// is built from the message bytes, so any body type that is `From<Bytes>` works (axum's
/// `Body`, `Full<Bytes>`); it is inferred from the service it protects.
///
/// # Where it goes
///
/// Put it on the routes it protects (axum: `Router::route_layer`), inside the
/// [`ProxyLayer`](crate::ProxyLayer) that wraps the whole router: the proxy answers `/proxy`
/// before routing, so a proxied request never meets this layer and pays nothing for it; the
/// proxy runs the extractor itself.
///
/// # Readiness
///
/// tower-http's `AsyncRequireAuthorization` calls a clone of the inner service, not the one
/// made ready by `poll_ready`. An axum `Router` and its routes are always ready, so this
/// does not matter there; in front of a service whose readiness carries a reservation (a
/// concurrency limit, a buffer), put that service's layer inside this one.
///
/// # Example
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_identity_proxy::identity::{Authenticate, Identity, IdentityExtractor};
///
/// let from_header = |parts: &http::request::Parts| {
///     let user = parts.headers.get("x-user").and_then(|v| v.to_str().ok()).map(str::to_owned);
///     async move { Ok(user.map(|name| Identity::new(name, ["ROLE_USER"]))) }
/// };
/// let app: Router = Router::new()
///     .route("/api/whoami", get(|who: Identity| async move { who.name().to_owned() }))
///     .route_layer(Authenticate::new(from_header.or_anonymous()).require_role("ROLE_USER"));
/// # let _ = app;
/// ```
pub struct Authenticate<E, ResBody> {
    extractor: E,
    role: Option<Arc<str>>,
    _body: PhantomData<fn() -> ResBody>,
}

impl<E: IdentityExtractor, ResBody> Authenticate<E, ResBody> {
    /// Reads each request's identity with `extractor`.
    pub fn new(extractor: E) -> Self {
        Self {
            extractor,
            role: None,
            _body: PhantomData,
        }
    }

    /// Answers `403` (`This requires the role ROLE_X.`) to an identity without `role`.
    /// Default: any identity is let through.
    pub fn require_role(mut self, role: impl Into<Arc<str>>) -> Self {
        self.role = Some(role.into());
        self
    }
}

impl<E: Clone, ResBody> Clone for Authenticate<E, ResBody> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            role: self.role.clone(),
            _body: PhantomData,
        }
    }
}

impl<E: fmt::Debug, ResBody> fmt::Debug for Authenticate<E, ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate")
            .field("extractor", &self.extractor)
            .field("role", &self.role)
            .finish()
    }
}

/// The future of [`Authenticate`]: the extractor's future, boxed (it cannot be named).
pub type AuthenticateFuture<ReqBody, ResBody> =
    Pin<Box<dyn Future<Output = Result<Request<ReqBody>, Response<ResBody>>> + Send>>;

impl<E, ReqBody, ResBody> AsyncAuthorizeRequest<ReqBody> for Authenticate<E, ResBody>
where
    E: IdentityExtractor,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + 'static,
{
    type RequestBody = ReqBody;
    type ResponseBody = ResBody;
    type Future = AuthenticateFuture<ReqBody, ResBody>;

    fn authorize(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (extractor, role) = (self.extractor.clone(), self.role.clone());
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let identity = match extractor.extract(&parts).await {
                Ok(Some(identity)) => identity,
                Ok(None) => return Err(refusal(&extractor, None)),
                Err(rejection) => return Err(refusal(&extractor, Some(rejection))),
            };
            if let Some(role) = role
                && !identity.has_role(&role)
            {
                let message = Cow::Owned(format!("This requires the role {role}."));
                return Err(Rejection::new(StatusCode::FORBIDDEN, message).into_http_response());
            }
            parts.extensions.insert(identity);
            Ok(Request::from_parts(parts, body))
        })
    }
}

/// `Authenticate` is its own layer: tower-http's [`AsyncRequireAuthorization`] around the
/// inner service, as [`AsyncRequireAuthorizationLayer`] builds it.
impl<S, E: Clone, ResBody> tower_layer::Layer<S> for Authenticate<E, ResBody> {
    type Service = AsyncRequireAuthorization<S, Self>;

    fn layer(&self, inner: S) -> Self::Service {
        AsyncRequireAuthorizationLayer::new(self.clone()).layer(inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{FALLBACK_CHALLENGE, Identity};
    use http::{HeaderValue, request::Parts};
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt};

    /// `x-user: NAME` is that user with `ROLE_USER`; `x-user: -` is refused; no field: none.
    fn from_header(parts: &Parts) -> impl Future<Output = crate::identity::ExtractResult> + use<> {
        let user = parts.headers.get("x-user").cloned();
        async move {
            match user.as_ref().map(HeaderValue::to_str) {
                None => Ok(None),
                Some(Ok("-")) => Err(Rejection::unauthorized(None, "Refused.")),
                Some(Ok(name)) => Ok(Some(Identity::new(name, ["ROLE_USER"]))),
                Some(Err(_)) => Err(Rejection::new(StatusCode::BAD_REQUEST, "Bad.")),
            }
        }
    }

    async fn call<E: IdentityExtractor>(
        auth: Authenticate<E, Full<Bytes>>,
        user: Option<&str>,
    ) -> (StatusCode, String, Option<HeaderValue>) {
        let svc = ServiceBuilder::new()
            .layer(auth)
            .service_fn(|req: Request<()>| async move {
                let who = req
                    .extensions()
                    .get::<Identity>()
                    .map(|i| i.name().to_owned());
                Ok::<_, std::convert::Infallible>(Response::new(Full::from(
                    who.unwrap_or_default(),
                )))
            });
        let mut req = Request::new(());
        if let Some(user) = user {
            req.headers_mut()
                .insert("x-user", HeaderValue::from_str(user).unwrap());
        }
        let res = svc.oneshot(req).await.unwrap();
        let challenge = res.headers().get(http::header::WWW_AUTHENTICATE).cloned();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap(), challenge)
    }

    #[tokio::test]
    async fn the_identity_reaches_the_service_or_the_refusal_answers() {
        let auth = || Authenticate::new(from_header);
        assert_eq!(
            call(auth(), Some("Alice")).await,
            (StatusCode::OK, "Alice".into(), None)
        );
        // No identity: 401 with the chain's challenge (here the fallback).
        let none = call(auth(), None).await;
        assert_eq!(none.0, StatusCode::UNAUTHORIZED);
        assert_eq!(none.2, Some(FALLBACK_CHALLENGE));
        // A rejection: its status and message.
        let refused = call(auth(), Some("-")).await;
        assert_eq!(
            (refused.0, refused.1.as_str()),
            (StatusCode::UNAUTHORIZED, "Refused.")
        );
        // Anonymous passes; a required role it lacks is 403.
        let anonymous = Authenticate::new(from_header.or_anonymous());
        assert_eq!(call(anonymous.clone(), None).await.1, "anonymousUser");
        let admin = call(anonymous.require_role("ROLE_ADMIN"), Some("Alice")).await;
        assert_eq!(
            (admin.0, admin.1.as_str()),
            (StatusCode::FORBIDDEN, "This requires the role ROLE_ADMIN.")
        );
    }
}
