//! The tests' own HTTP client: hyper-util's pooled legacy client over HTTP/1.1 or HTTP/2
//! (prior knowledge), and responses read whole ([`Reply`]).

use std::convert::Infallible;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

use super::{LIVENESS, within_for};

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The request body type of [`send`]: anything, streamed.
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;
/// A client of the tests, with request bodies of type `B` ([`TestBody`] by default).
pub type TestClient<B = TestBody> = Client<HttpConnector, B>;

/// A response with its whole body.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The HTTP version it came in.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// The (first) value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A body of these bytes (with a known length).
pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> TestBody {
    Empty::new()
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// A new pooled HTTP/1.1 client (one per test: a pool must not outlive its runtime).
pub fn client<B>() -> TestClient<B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// A new pooled HTTP/2 client (prior knowledge).
pub fn h2_client<B>() -> TestClient<B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends `req` (absolute URI) over `client` and reads the whole response, failing the test
/// as hung past the [`LIVENESS`](super::LIVENESS) bound.
pub async fn try_send_on<B>(
    client: &TestClient<B>,
    req: http::Request<B>,
) -> Result<Reply, BoxError>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    try_send_on_within(LIVENESS, client, req).await
}

/// [`try_send_on`] for a request whose handling does CPU-heavy work (see
/// [`within_for`](super::within_for)): bounded by `bound` instead of the liveness bound.
pub async fn try_send_on_within<B>(
    bound: std::time::Duration,
    client: &TestClient<B>,
    req: http::Request<B>,
) -> Result<Reply, BoxError>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    within_for(bound, "the response, whole", async {
        let res = client.request(req).await?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    })
    .await
}

/// Like [`try_send_on`], panicking if the request was not answered.
pub async fn send_on<B>(client: &TestClient<B>, req: http::Request<B>) -> Reply
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    try_send_on(client, req)
        .await
        .expect("the request was answered")
}

/// Sends `req` (absolute URI) over a new HTTP/1.1 client and reads the whole response.
pub async fn send(req: http::Request<TestBody>) -> Reply {
    send_on(&client(), req).await
}

/// Like [`send`], returning the client's error instead of panicking.
pub async fn try_send(req: http::Request<TestBody>) -> Result<Reply, BoxError> {
    try_send_on(&client(), req).await
}

/// `GET url` over `client` (e.g. an [`h2_client`]).
pub async fn get_on(client: &TestClient, url: &str) -> Reply {
    send_on(client, http::Request::get(url).body(empty()).unwrap()).await
}

/// `GET url`.
pub async fn get(url: &str) -> Reply {
    send(http::Request::get(url).body(empty()).unwrap()).await
}

/// `GET url` with these headers.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = http::Request::get(url);
    for (k, v) in headers {
        b = b.header(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    send(b.body(empty()).unwrap()).await
}

/// The `Authorization` value of HTTP Basic credentials.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// `METHOD url` with an optional `Authorization` and an optional JSON body, on a
/// connection of its own: an admin call. Bounded by three times the liveness bound: each
/// one may check an Argon2id password, or generate an RSA key (a rotation), work a loaded
/// machine stretches.
pub async fn json_request(
    method: &str,
    url: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = http::Request::builder().method(method).uri(url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let body = match body {
        Some(json) => {
            req = req.header("content-type", "application/json");
            json.to_string()
        }
        None => String::new(),
    };
    try_send_on_within(3 * LIVENESS, &client(), req.body(full(body)).unwrap())
        .await
        .expect("the request was answered")
}
