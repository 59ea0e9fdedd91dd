//! [`Jwks`]: a tower service serving the public keys as an RFC 7517 JWK Set.
//!
//! See the [module docs](crate::jwt) for examples.

use std::{
    convert::Infallible,
    fmt,
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use aws_lc_rs::digest;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::Value;
use tower_service::Service;

use crate::{
    error::ConfigError,
    jwt::keys::{Algorithm, PublicKey},
};

/// A serialised JWK Set with its entity tag.
#[derive(Clone)]
pub(crate) struct Document {
    body: Bytes,
    etag: HeaderValue,
}

impl Document {
    /// `{"keys": [...]}` from JWKs.
    pub(crate) fn new(keys: Vec<Value>) -> Self {
        let body = serde_json::json!({ "keys": keys }).to_string();
        let hash = digest::digest(&digest::SHA256, body.as_bytes());
        let tag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&hash.as_ref()[..16]));
        Self {
            body: Bytes::from(body),
            // Quoted base64url: always a valid header value.
            etag: HeaderValue::try_from(tag).unwrap_or(HeaderValue::from_static("\"0\"")),
        }
    }

    /// The JSON text.
    pub(crate) fn body(&self) -> &Bytes {
        &self.body
    }
}

/// Where the document comes from: a key set's current document, read on each request so
/// that rotations show at once, or a fixed one.
#[derive(Clone)]
enum Source {
    Live(Arc<dyn Fn() -> Arc<Document> + Send + Sync>),
    Fixed(Arc<Document>),
}

/// Serves public keys as an RFC 7517 JWK Set. Cheap to clone.
///
/// See the [module docs](crate::jwt) for an example.
#[derive(Clone)]
pub struct Jwks {
    source: Source,
    cache_control: HeaderValue,
}

impl Jwks {
    /// Serves the document `current` returns on each request (a key set's, which changes
    /// as its keys rotate).
    pub(crate) fn live(current: impl Fn() -> Arc<Document> + Send + Sync + 'static) -> Self {
        Self::with_source(Source::Live(Arc::new(current)))
    }

    /// Serves a fixed set of public keys, each with the one algorithm it verifies.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] if a key cannot be used with its algorithm.
    pub fn from_keys<'a, I>(keys: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (&'a PublicKey, Algorithm)>,
    {
        let mut jwks = Vec::new();
        for (key, alg) in keys {
            if !key.supports(alg) {
                return Err(ConfigError::InvalidKey(
                    format!("the key {} cannot verify {alg}", key.kid()).into(),
                ));
            }
            jwks.push(key.to_jwk(alg));
        }
        Ok(Self::with_source(Source::Fixed(Arc::new(Document::new(
            jwks,
        )))))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            cache_control: HeaderValue::from_static("public, max-age=60"),
        }
    }

    /// How long clients and shared caches may keep the document (`Cache-Control: public,
    /// max-age=N`). Default is 60 seconds. See the [caching caveat](crate::jwt#caching-caveat).
    #[must_use]
    pub fn max_age(mut self, max_age: Duration) -> Self {
        // Digits only: always a valid header value.
        self.cache_control =
            HeaderValue::try_from(format!("public, max-age={}", max_age.as_secs()))
                .unwrap_or(HeaderValue::from_static("no-cache"));
        self
    }

    fn document(&self) -> Arc<Document> {
        match &self.source {
            Source::Live(current) => current(),
            Source::Fixed(doc) => Arc::clone(doc),
        }
    }

    fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            let mut res = crate::error::plain_text(
                StatusCode::METHOD_NOT_ALLOWED,
                Bytes::from_static(b"Only GET and HEAD are allowed."),
            );
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        let doc = self.document();
        let not_modified = req
            .headers()
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t.as_bytes() == doc.etag.as_bytes());
        let (status, body) = if not_modified {
            (StatusCode::NOT_MODIFIED, Bytes::new())
        } else if head {
            (StatusCode::OK, Bytes::new())
        } else {
            (StatusCode::OK, doc.body.clone())
        };
        let mut res = Response::new(Full::new(body));
        *res.status_mut() = status;
        let headers = res.headers_mut();
        headers.insert(header::ETAG, doc.etag.clone());
        headers.insert(header::CACHE_CONTROL, self.cache_control.clone());
        if status == StatusCode::OK {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(doc.body.len()));
        }
        res
    }
}

impl<B> Service<Request<B>> for Jwks {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(self.respond(&req)))
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match &self.source {
            Source::Live(_) => "KeySet",
            Source::Fixed(_) => "fixed",
        };
        f.debug_struct("Jwks")
            .field("source", &source)
            .field("cache_control", &self.cache_control)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::jwt::{KeyPair, KeySet, KeySigner};

    async fn call(jwks: &mut Jwks, req: Request<()>) -> (Response<()>, Bytes) {
        let res = jwks.call(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (Response::from_parts(parts, ()), bytes)
    }

    #[tokio::test]
    async fn serves_the_set_with_cache_headers() {
        let keys = KeySet::new(KeySigner::new(KeyPair::generate_ed25519().unwrap()));
        let mut jwks = keys.jwks().max_age(Duration::from_secs(120));
        let (res, body) = call(&mut jwks, Request::new(())).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "public, max-age=120");
        let set: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(set["keys"][0]["kid"], keys.active_kid());
        assert_eq!(set["keys"][0]["use"], "sig");
        assert_eq!(set["keys"][0]["alg"], "EdDSA");
        assert!(set["keys"][0].get("d").is_none());

        let etag = res.headers()[header::ETAG].clone();
        let req = Request::builder()
            .header(header::IF_NONE_MATCH, etag.clone())
            .body(())
            .unwrap();
        let (res, body) = call(&mut jwks, req).await;
        assert_eq!(res.status(), 304);
        assert!(body.is_empty());

        let head = Request::builder().method("HEAD").body(()).unwrap();
        let (res, body) = call(&mut jwks, head).await;
        assert_eq!(res.status(), 200);
        assert!(body.is_empty());

        let post = Request::builder().method("POST").body(()).unwrap();
        let (res, _) = call(&mut jwks, post).await;
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()[header::ALLOW], "GET, HEAD");

        keys.rotate(KeyPair::generate_ed25519().unwrap()).unwrap();
        let req = Request::builder()
            .header(header::IF_NONE_MATCH, etag)
            .body(())
            .unwrap();
        let (res, body) = call(&mut jwks, req).await;
        assert_eq!(res.status(), 200, "a rotation changes the ETag");
        let set: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(set["keys"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn fixed_keys_are_checked_against_their_algorithm() {
        let ec = KeyPair::generate_ec(crate::jwt::Curve::P256).unwrap();
        assert!(Jwks::from_keys([(ec.public_key(), Algorithm::RS512)]).is_err());
        let jwks = Jwks::from_keys([(ec.public_key(), Algorithm::ES256)]).unwrap();
        let doc = jwks.document();
        let set: Value = serde_json::from_slice(doc.body()).unwrap();
        assert_eq!(set["keys"][0]["crv"], "P-256");
        assert_eq!(set["keys"][0]["kid"], ec.kid());
    }
}
