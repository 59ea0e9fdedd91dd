//! [`Proxy`]: the service that takes over the prefix and passes everything else through.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use crate::{
    error::{BoxError, ProxyError, ProxyErrorKind},
    identity::IdentityExtractor,
    jwt::signer::JwtSigner,
    proxy::{
        body::ResponseBody,
        forward::{self, Shared, error_response},
        future::ResponseFuture,
    },
};

/// Forwards requests under the prefix to the target with the caller's identity; passes
/// every other request to the inner service untouched.
///
/// # Readiness
///
/// `poll_ready` is the inner service's: a request outside the prefix is handed to the inner
/// service that was made ready for it. A request under the prefix does not use the inner
/// service at all (the readiness it reserved is kept for the next request), and is never
/// held back by it: the pooled client is always ready, and back-pressure towards the target
/// is the connection pool's.
///
/// See the [crate docs](crate) for an example.
pub struct Proxy<S, I, J> {
    inner: S,
    shared: Arc<Shared<I, J>>,
}

impl<S, I, J> Proxy<S, I, J> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<I, J>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the proxy.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, I, J> Clone for Proxy<S, I, J> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, I, J> fmt::Debug for Proxy<S, I, J> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("inner", &self.inner)
            .field("prefix", &self.shared.rewrite.prefix())
            .field("target", &self.shared.handle)
            .finish_non_exhaustive()
    }
}

impl<S, I, J, ReqBody, ResBody> Service<Request<ReqBody>> for Proxy<S, I, J>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: 'static,
    I: IdentityExtractor,
    J: JwtSigner,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if !self.shared.rewrite.matches(req.uri().path()) {
            return ResponseFuture::inner(self.inner.call(req));
        }
        if !self.shared.handle.is_ready() {
            return ResponseFuture::ready(error_response(&ProxyError::new(
                ProxyErrorKind::NotReady,
            )));
        }
        match self.shared.handle.target() {
            None => {
                crate::observability::record::request(Some(ProxyErrorKind::Disabled));
                ResponseFuture::ready(error_response(&ProxyError::new(ProxyErrorKind::Disabled)))
            }
            Some(target) => {
                ResponseFuture::proxy(forward::proxy(Arc::clone(&self.shared), target, req))
            }
        }
    }
}
