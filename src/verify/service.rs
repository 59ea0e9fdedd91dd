//! [`VerifyProxyJwt`]: the service checking each request's token.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{HeaderMap, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::remote::{FetchConfig, RemoteJwks};
use crate::{
    identity::{Rejection, credentials_for},
    jwt::{
        claims::Claims,
        verifier::{Verifier, VerifyError},
    },
    observability::record::{self, Verification},
    proxy::body::{ResponseBody, local},
};

/// What every service of one layer shares.
pub(crate) struct Checker {
    pub(crate) verifier: Verifier,
    pub(crate) remote: Option<(Arc<RemoteJwks>, FetchConfig)>,
    pub(crate) optional: bool,
    pub(crate) max_token_len: usize,
}

enum Outcome {
    Verified(Claims),
    NoToken,
    Refused(Rejection),
    /// The token names a key the JWKS cache does not know: refresh, then verify again.
    Refresh(String),
}

fn invalid_token() -> Rejection {
    Rejection::unauthorized(
        Some(HeaderValue::from_static(r#"Bearer error="invalid_token""#)),
        "The bearer token is not valid.",
    )
}

fn missing_token() -> Rejection {
    // RFC 6750 §3.1: no error code when the request carries no credentials.
    Rejection::unauthorized(
        Some(HeaderValue::from_static("Bearer")),
        "A bearer token is required.",
    )
}

fn refused(reason: VerifyError) -> Rejection {
    tracing::debug!(target: "tower_identity_proxy", reason = reason.reason(), "proxy token refused");
    invalid_token()
}

impl Checker {
    fn check(&self, headers: &HeaderMap) -> Outcome {
        let token = match credentials_for(headers, "bearer") {
            Ok(Some(token)) => token,
            // No field, or another scheme: no bearer token.
            Ok(None) => return Outcome::NoToken,
            Err(_) => return Outcome::Refused(invalid_token()),
        };
        if token.is_empty() || token.len() > self.max_token_len {
            return Outcome::Refused(invalid_token());
        }
        match self.verifier.verify(token) {
            Ok(claims) => {
                if let Some((remote, config)) = &self.remote {
                    remote.refresh_if_stale(config);
                }
                Outcome::Verified(claims)
            }
            Err(e) if e == VerifyError::UNKNOWN_KEY && self.remote.is_some() => {
                Outcome::Refresh(token.to_owned())
            }
            Err(e) => Outcome::Refused(refused(e)),
        }
    }

    async fn refresh_and_verify(self: Arc<Self>, token: String) -> Result<Claims, Rejection> {
        if let Some((remote, config)) = &self.remote {
            let kid = jsonwebtoken::decode_header(&token).ok().and_then(|h| h.kid);
            remote.refresh(config, kid.as_deref()).await;
        }
        let verified = self.verifier.verify(&token).map_err(refused);
        record::verification(if verified.is_ok() {
            Verification::Valid
        } else {
            Verification::Invalid
        });
        verified
    }
}

fn accept<B>(req: &mut Request<B>, claims: Claims) {
    req.extensions_mut().insert(claims.identity());
    req.extensions_mut().insert(claims);
}

/// Verifies each request's bearer token, then calls the inner service with the caller's
/// [`Identity`](crate::identity::Identity) and [`Claims`] in the request extensions; answers `401`
/// itself otherwise:
///
/// - no bearer token: `401`, `WWW-Authenticate: Bearer`, `A bearer token is required.`
///   (unless the layer is [optional](super::VerifyProxyJwtLayer::optional));
/// - a token that does not verify: `401`, `WWW-Authenticate: Bearer error="invalid_token"`,
///   `The bearer token is not valid.` The reason goes to `tracing` (debug level), never to
///   the client.
///
/// # Readiness
///
/// `poll_ready` is the inner service's. A request whose token verifies at once (known key)
/// goes to the service that was made ready; one that must wait for a JWKS fetch takes that
/// service into its future and leaves a clone in its place, as tower-http's
/// `AsyncRequireAuthorization` does.
///
/// See the [module docs](crate::verify) for an example.
pub struct VerifyProxyJwt<S> {
    inner: S,
    checker: Arc<Checker>,
}

impl<S> VerifyProxyJwt<S> {
    pub(crate) fn from_checker(inner: S, checker: Arc<Checker>) -> Self {
        Self { inner, checker }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the verifier.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for VerifyProxyJwt<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            checker: Arc::clone(&self.checker),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for VerifyProxyJwt<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyProxyJwt")
            .field("inner", &self.inner)
            .field("verifier", &self.checker.verifier)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for VerifyProxyJwt<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, ResBody, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let outcome = self.checker.check(req.headers());
        match &outcome {
            Outcome::Verified(_) => record::verification(Verification::Valid),
            Outcome::NoToken => record::verification(Verification::Missing),
            Outcome::Refused(_) => record::verification(Verification::Invalid),
            // Counted once the keys are refreshed.
            Outcome::Refresh(_) => {}
        }
        let kind = match outcome {
            Outcome::Verified(claims) => {
                accept(&mut req, claims);
                Kind::Inner {
                    future: self.inner.call(req),
                }
            }
            Outcome::NoToken if self.checker.optional => Kind::Inner {
                future: self.inner.call(req),
            },
            Outcome::NoToken => Kind::Ready {
                response: Some(local(missing_token().into_response())),
            },
            Outcome::Refused(rejection) => Kind::Ready {
                response: Some(local(rejection.into_response())),
            },
            Outcome::Refresh(token) => {
                // The ready service goes into the future; a clone takes its place.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                Kind::Refresh {
                    check: Box::pin(Arc::clone(&self.checker).refresh_and_verify(token)),
                    pending: Some((service, req)),
                }
            }
        };
        ResponseFuture { kind }
    }
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<Claims, Rejection>> + Send>>;

pin_project! {
    /// The response future of [`VerifyProxyJwt`].
    pub struct ResponseFuture<S, ReqBody, ResBody, F> {
        #[pin]
        kind: Kind<S, ReqBody, ResBody, F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqBody, ResBody, F> {
        Inner { #[pin] future: F },
        Refresh { check: CheckFuture, pending: Option<(S, Request<ReqBody>)> },
        Ready { response: Option<Response<ResponseBody<ResBody>>> },
    }
}

impl<S, ReqBody, ResBody, F, E> Future for ResponseFuture<S, ReqBody, ResBody, F>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>, Future = F, Error = E>,
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Inner { future } => {
                    return future
                        .poll(cx)
                        .map(|r| r.map(|res| res.map(ResponseBody::inner)));
                }
                KindProj::Refresh { check, pending } => {
                    let outcome = ready!(check.as_mut().poll(cx));
                    let Some((mut service, mut req)) = pending.take() else {
                        // Polled after completion: stay pending rather than panic.
                        return Poll::Pending;
                    };
                    let next = match outcome {
                        Ok(claims) => {
                            accept(&mut req, claims);
                            Kind::Inner {
                                future: service.call(req),
                            }
                        }
                        Err(rejection) => Kind::Ready {
                            response: Some(local(rejection.into_response())),
                        },
                    };
                    this.kind.set(next);
                }
                KindProj::Ready { response } => {
                    return match response.take() {
                        Some(res) => Poll::Ready(Ok(res)),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}

impl<S, ReqBody, ResBody, F> fmt::Debug for ResponseFuture<S, ReqBody, ResBody, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
