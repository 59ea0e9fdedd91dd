//! Helpers shared by the integration tests: key fixtures, an independent JWT decoder, real
//! servers on 127.0.0.1:0 (the app with a layer, an echoing target), an HTTP client and a
//! raw-TCP client.
//!
//! Include it with `mod common;` and use what you need; each test binary uses a part.
//!
//! - Keys: [`rsa_keys`] (from the OpenSSL-made fixtures in `tests/fixtures/`, see its
//!   README), [`ec256_keys`], [`ec384_keys`], [`ed25519_keys`]: made once per test binary.
//! - [`decode_jwt`]: verifies a token with `jsonwebtoken` directly, algorithm pinned, `exp`
//!   and `sub` required: never with the crate's own verifier.
//! - [`serve`]: serves any axum `Router` on 127.0.0.1:0; the server stops when the
//!   [`Server`] is dropped. [`spawn_app`] serves [`inner_echo`] wrapped in a `ProxyLayer`.
//! - [`echo_target`]: a target that records every request it receives ([`Seen`]) and answers
//!   with a JSON description of it, or echoes the body (`x-echo: body`), after a delay
//!   (`x-echo-delay-ms`), with a status (`x-echo-status`) or with hop-by-hop response headers
//!   (`x-echo-hop: 1`). It always adds `X-Custom-Header: lorem ipsum`.
//! - [`send`], [`get`], [`Reply`]: an HTTP/1.1 client (hyper-util's legacy client).
//! - [`raw`]: writes exact bytes on a TCP connection and reads the answer until the server
//!   closes, for requests a well-behaved client cannot make.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc
)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{Router, body::Body, extract::Request, response::Response};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tower_identity_proxy::{Curve, IdentityExtractor, JwtSigner, KeyPair, ProxyLayer};

/// A boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The request body type of [`send`]: anything, streamed.
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

// ---------------------------------------------------------------------------------------
// Keys

/// RSA-2048, PKCS#1 (`BEGIN RSA PRIVATE KEY`), made by `openssl genrsa -traditional`.
pub const RSA_PKCS1_PEM: &str = include_str!("../fixtures/rsa-pkcs1.pem");
/// The same key as PKCS#8 (`BEGIN PRIVATE KEY`).
pub const RSA_PKCS8_PEM: &str = include_str!("../fixtures/rsa-pkcs8.pem");
/// Its public key, SPKI (`BEGIN PUBLIC KEY`).
pub const RSA_PUBLIC_PEM: &str = include_str!("../fixtures/rsa-public.pem");
/// An unrelated RSA-2048 key, PKCS#8.
pub const OTHER_RSA_PKCS8_PEM: &str = include_str!("../fixtures/other-rsa-pkcs8.pem");
/// Its public key, SPKI.
pub const OTHER_RSA_PUBLIC_PEM: &str = include_str!("../fixtures/other-rsa-public.pem");

/// The fixture RSA key pair (PKCS#8 private + SPKI public), parsed once.
pub fn rsa_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| {
        KeyPair::from_pem(RSA_PKCS8_PEM.as_bytes(), Some(RSA_PUBLIC_PEM.as_bytes()))
            .expect("fixture RSA key")
    })
    .clone()
}

/// A P-256 key pair, generated once per test binary.
pub fn ec256_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::generate_ec(Curve::P256).expect("P-256 key"))
        .clone()
}

/// A P-384 key pair, generated once per test binary.
pub fn ec384_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::generate_ec(Curve::P384).expect("P-384 key"))
        .clone()
}

/// An Ed25519 key pair, generated once per test binary.
pub fn ed25519_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::generate_ed25519().expect("Ed25519 key"))
        .clone()
}

/// A fresh temporary directory (removed by the caller with [`remove_dir`]).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tip-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes a directory made by [`temp_dir`], ignoring errors.
pub fn remove_dir(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
}

// ---------------------------------------------------------------------------------------
// Independent JWT checks (jsonwebtoken, called directly)

/// Verifies `token` with `public_pem` (SPKI) and exactly `alg`, requiring `exp` and `sub`;
/// returns the claims.
pub fn decode_jwt(
    token: &str,
    public_pem: &str,
    alg: jsonwebtoken::Algorithm,
) -> Result<Value, jsonwebtoken::errors::Error> {
    use jsonwebtoken::{Algorithm as A, DecodingKey, Validation};
    let key = match alg {
        A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => {
            DecodingKey::from_rsa_pem(public_pem.as_bytes())?
        }
        A::ES256 | A::ES384 => DecodingKey::from_ec_pem(public_pem.as_bytes())?,
        A::EdDSA => DecodingKey::from_ed_pem(public_pem.as_bytes())?,
        other => panic!("not an asymmetric algorithm: {other:?}"),
    };
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &validation).map(|d| d.claims)
}

/// [`decode_jwt`] with the fixture RSA key and RS512, panicking on failure.
pub fn decode_rs512(token: &str) -> Value {
    decode_jwt(token, RSA_PUBLIC_PEM, jsonwebtoken::Algorithm::RS512).expect("valid RS512 token")
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> String {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .expect("an Authorization header")
        .to_str()
        .unwrap();
    value
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer header: {value}"))
        .to_owned()
}

/// The header of a compact JWT, decoded but not verified.
pub fn jwt_header(token: &str) -> Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------
// Servers

/// A server on 127.0.0.1; it stops when dropped.
#[derive(Debug)]
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on 127.0.0.1:0 (HTTP/1.1 and HTTP/2 cleartext).
pub async fn serve(router: Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Server { addr, task }
}

/// Serves [`inner_echo`] wrapped in `layer`.
pub async fn spawn_app<I: IdentityExtractor, J: JwtSigner>(layer: ProxyLayer<I, J>) -> Server {
    serve(inner_echo().layer(layer)).await
}

/// A request extension put by a test middleware, reported by [`inner_echo`].
#[derive(Clone, Debug)]
pub struct Marker(pub String);

/// The app's own service in the tests: answers every request with a JSON description of it,
/// `"inner": true`, and the [`Marker`] extension if present.
pub fn inner_echo() -> Router {
    Router::new().fallback(|req: Request| async move {
        let marker = req.extensions().get::<Marker>().map(|m| m.0.clone());
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        axum::Json(json!({
            "inner": true,
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers_json(&parts.headers),
            "body": String::from_utf8_lossy(&body),
            "marker": marker,
        }))
    })
}

/// Headers as `[[name, value], …]`, in order, values lossy.
pub fn headers_json(headers: &HeaderMap) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
            .collect(),
    )
}

/// A request as the echo target received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// The request target (origin form: path and query).
    pub uri: Uri,
    /// The HTTP version.
    pub version: Version,
    /// The headers, as received.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Seen {
    /// The one value of header `name`, as a string.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut values = self.headers.get_all(name).iter();
        let v = values.next()?;
        assert!(values.next().is_none(), "several {name} headers");
        Some(String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The verified claims of its `Authorization: Bearer` token (fixture RSA key, RS512).
    pub fn claims(&self) -> Value {
        decode_rs512(&bearer(&self.headers))
    }
}

/// The echo target. See the [module docs](self).
#[derive(Debug)]
pub struct EchoTarget {
    /// The server.
    pub server: Server,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EchoTarget {
    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url("")
    }

    /// The address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the target received a request")
    }
}

/// Starts an [`EchoTarget`] on 127.0.0.1:0.
pub async fn echo_target() -> EchoTarget {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = Arc::clone(&seen);
    let router = Router::new().fallback(move |req: Request| {
        let record = Arc::clone(&record);
        async move { echo(record, req).await }
    });
    EchoTarget {
        server: serve(router).await,
        seen,
    }
}

async fn echo(record: Arc<Mutex<Vec<Seen>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(StatusCode::BAD_REQUEST, "broken body"),
    };
    let seen = Seen {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    record.lock().unwrap().push(seen);

    let h = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(ms) = h("x-echo-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = h("x-echo-status")
        .and_then(|v| v.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut res = if h("x-echo").as_deref() == Some("body") {
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        r
    } else {
        let description = json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "headers": headers_json(&parts.headers),
            "body_len": body.len(),
        });
        let mut r = Response::new(Body::from(description.to_string()));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert("x-custom-header", HeaderValue::from_static("lorem ipsum"));
    if h("x-echo-hop").is_some() {
        headers.insert("connection", HeaderValue::from_static("x-hop-secret"));
        headers.insert(
            "x-hop-secret",
            HeaderValue::from_static("only for the proxy"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
        headers.insert("x-end-to-end", HeaderValue::from_static("kept"));
    }
    res
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = Response::new(Body::from(text));
    *r.status_mut() = status;
    r
}

// ---------------------------------------------------------------------------------------
// Clients

/// A response with its whole body.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
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

    /// The one value of header `name`.
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

/// A new HTTP/1.1 client (one per test: a pool must not outlive its runtime).
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` (absolute URI) and reads the whole response.
pub async fn send(req: http::Request<TestBody>) -> Reply {
    try_send(req).await.expect("the request was answered")
}

/// Like [`send`], returning the client's error instead of panicking.
pub async fn try_send(req: http::Request<TestBody>) -> Result<Reply, BoxError> {
    let res = client().request(req).await?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
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

/// `n` random-looking bytes covering every byte value (a fixed xorshift sequence).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `request` as is on a new connection to `addr` and reads until the server closes
/// (send `Connection: close`), or 10 seconds pass.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    out
}

/// A raw HTTP/1.1 response, parsed loosely: status, headers (lower-cased names) and body
/// (de-chunked when chunked).
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The headers, lower-cased names, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Parses the first response in `bytes`.
    pub fn parse(bytes: &[u8]) -> Self {
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(bytes)));
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = bytes[end + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
        {
            body = dechunk(&body);
        }
        Self {
            status,
            headers,
            body,
        }
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[line_end + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}
