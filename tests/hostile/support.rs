//! The harness of the hostile-input suite, over real loopback sockets:
//! - [`Upstream`]: a plain TCP listener standing in for the target. It records the exact bytes
//!   of every request it receives (head, body as on the wire, decoded body, trailers), parses
//!   just enough to find the end of each request, and answers what the test scripts — a canned
//!   reply, a reply computed from the request, or any byte-level misbehaviour.
//! - [`App`]: an axum `Router` with the [`ProxyLayer`], served by hyper-util's auto (HTTP/1.1
//!   and HTTP/2) connection builder on `127.0.0.1:0`.
//! - [`Raw`]: a raw TCP client that writes bytes and parses the responses it reads back.
//!
//! No timing is asserted anywhere: every wait has a generous liveness bound ([`LIVENESS`])
//! that only turns a hang into a failure.

#![allow(dead_code)]

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::StatusCode,
    routing::{any, get},
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};
use tower_identity_proxy::{
    Anonymous, BasicAuth, BearerJwt, CachingSigner, CredentialStore, IdentityExtractor, JwtSigner,
    KeyPair, KeySigner, Or, ProxyHandle, ProxyLayer,
};

/// How long any single wait may take before the test fails as hung.
pub const LIVENESS: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`LIVENESS`].
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIVENESS, f).await {
        Ok(v) => v,
        Err(_) => panic!("hung (liveness bound exceeded): {what}"),
    }
}

// ---------------------------------------------------------------------------------------
// Keys and users, made once per test binary (RSA key generation and Argon2 are slow).

pub const ALICE: &str = "alice";
pub const ALICE_PW: &str = "alice-password";

/// The app's RSA key pair (RS512 signing, as Atoti Server).
pub fn keys() -> &'static KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::generate_rsa(2048).expect("RSA key"))
}

pub fn users() -> CredentialStore {
    static USERS: OnceLock<CredentialStore> = OnceLock::new();
    USERS
        .get_or_init(|| {
            let users = CredentialStore::new();
            users
                .insert(ALICE, ALICE_PW, ["ROLE_WONDERLAND", "ROLE_USER"])
                .expect("user");
            users
        })
        .clone()
}

pub type DefaultIdentity = Or<Or<BasicAuth, BearerJwt>, Anonymous>;
pub type DefaultLayer = ProxyLayer<DefaultIdentity, CachingSigner<KeySigner>>;

/// The layer every test starts from: RS512 through the token cache, Basic users, the app's
/// own Bearer tokens, else anonymous.
pub fn layer() -> DefaultLayer {
    ProxyLayer::new(KeySigner::rs512(keys().clone()).expect("signer"))
        .identity(
            BasicAuth::new(users())
                .or(BearerJwt::new(keys().verifier()))
                .or_anonymous(),
        )
        .upstream_timeout(Duration::from_secs(15))
}

/// Decodes and verifies a token with jsonwebtoken directly (not the crate's verifier).
pub fn decode_jwt(token: &str) -> serde_json::Value {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS512);
    v.set_required_spec_claims(&["exp", "sub"]);
    v.leeway = 0;
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(keys().public_key_pem().as_bytes())
        .expect("public key");
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .expect("token verifies")
        .claims
}

// ---------------------------------------------------------------------------------------
// Byte-level HTTP/1.1 reading, shared by the upstream and the client.

/// Header lines as received: name as sent, value with surrounding blanks trimmed.
pub type Headers = Vec<(String, Vec<u8>)>;

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Splits a head (start line + header lines) into the start line and the headers.
pub fn parse_head(head: &[u8]) -> (String, Headers) {
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            headers.push((String::from_utf8_lossy(line).into_owned(), Vec::new()));
            continue;
        };
        let name = String::from_utf8_lossy(&line[..colon]).into_owned();
        let value = line[colon + 1..].trim_ascii().to_vec();
        headers.push((name, value));
    }
    (start, headers)
}

pub fn values<'a>(headers: &'a Headers, name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// A stream (TCP, or its read half) with a read buffer.
pub struct Wire<S = TcpStream> {
    pub stream: S,
    pub buf: Vec<u8>,
    pub eof: bool,
}

impl<S: tokio::io::AsyncRead + Unpin> Wire<S> {
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Reads more bytes; false at EOF or on a reset.
    pub async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The bytes up to and including `pat`, or `None` at EOF (what was read stays buffered).
    pub async fn read_until(&mut self, pat: &[u8]) -> Option<Vec<u8>> {
        let mut from = 0;
        loop {
            if let Some(i) = find(&self.buf[from..], pat) {
                let end = from + i + pat.len();
                return Some(self.buf.drain(..end).collect());
            }
            from = self.buf.len().saturating_sub(pat.len());
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Up to `n` bytes; the flag says whether all `n` arrived before EOF.
    pub async fn read_n(&mut self, n: usize) -> (Vec<u8>, bool) {
        while self.buf.len() < n {
            if !self.fill().await {
                let all = std::mem::take(&mut self.buf);
                return (all, false);
            }
        }
        (self.buf.drain(..n).collect(), true)
    }

    /// Everything until EOF.
    pub async fn read_to_eof(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

/// A message body as received.
#[derive(Clone, Debug, Default)]
pub struct ReadBody {
    /// The bytes as on the wire (chunk framing included).
    pub raw: Vec<u8>,
    /// The payload.
    pub data: Vec<u8>,
    pub trailers: Headers,
    /// Whether the framing said the body ended (last chunk, or all `Content-Length` bytes).
    pub complete: bool,
}

async fn read_chunked<S: tokio::io::AsyncRead + Unpin>(wire: &mut Wire<S>) -> ReadBody {
    let mut body = ReadBody::default();
    loop {
        let Some(line) = wire.read_until(b"\r\n").await else {
            body.raw.extend(std::mem::take(&mut wire.buf));
            return body;
        };
        body.raw.extend_from_slice(&line);
        let size_text = line[..line.len() - 2]
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let Some(size) = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
        else {
            return body; // broken framing: incomplete
        };
        if size == 0 {
            loop {
                let Some(line) = wire.read_until(b"\r\n").await else {
                    return body;
                };
                body.raw.extend_from_slice(&line);
                if line == b"\r\n" {
                    body.complete = true;
                    return body;
                }
                let (_, mut t) = parse_head(&[b"-\r\n", line.as_slice()].concat());
                body.trailers.append(&mut t);
            }
        }
        let (data, all) = wire.read_n(size + 2).await;
        body.raw.extend_from_slice(&data);
        if !all {
            body.data.extend_from_slice(&data[..data.len().min(size)]);
            return body;
        }
        body.data.extend_from_slice(&data[..size]);
    }
}

// ---------------------------------------------------------------------------------------
// The capturing upstream.

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Captured {
    /// Which upstream connection carried it (0, 1, ...).
    pub conn: usize,
    /// Request line and header lines, as received, up to and including the blank line.
    pub head: Vec<u8>,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Headers,
    pub body: ReadBody,
}

impl Captured {
    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    /// The whole request as received.
    pub fn raw(&self) -> Vec<u8> {
        [self.head.as_slice(), self.body.raw.as_slice()].concat()
    }

    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        values(&self.headers, name)
    }

    pub fn count(&self, name: &str) -> usize {
        self.all(name).len()
    }

    pub fn has(&self, name: &str) -> bool {
        self.count(name) > 0
    }

    /// The value of a header that must appear exactly once.
    pub fn one(&self, name: &str) -> String {
        let all = self.all(name);
        assert_eq!(all.len(), 1, "{name} lines in:\n{}", self.head_str());
        String::from_utf8_lossy(all[0]).into_owned()
    }

    /// The JWT of the `Authorization: Bearer` line, which must be the only one.
    pub fn bearer(&self) -> String {
        let auth = self.one("authorization");
        auth.strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("not a bearer token: {auth}"))
            .to_owned()
    }

    /// At most one framing header; exactly one when there is a body; `chunked` only.
    pub fn assert_framing(&self) {
        let cl = self.count("content-length");
        let te = self.count("transfer-encoding");
        assert!(cl + te <= 1, "ambiguous framing:\n{}", self.head_str());
        if !self.body.data.is_empty() {
            assert_eq!(cl + te, 1, "body without framing:\n{}", self.head_str());
        }
        if te == 1 {
            assert!(
                self.one("transfer-encoding")
                    .eq_ignore_ascii_case("chunked"),
                "{}",
                self.head_str()
            );
        }
        if cl == 1 {
            assert_eq!(
                self.one("content-length"),
                self.body.data.len().to_string(),
                "{}",
                self.head_str()
            );
        }
        assert!(self.body.complete, "incomplete body:\n{}", self.head_str());
    }
}

#[derive(Default)]
struct Log {
    accepted: usize,
    heads: usize,
    requests: Vec<Captured>,
    /// Requests whose connection ended before their end: (connection, bytes received).
    partials: Vec<(usize, Vec<u8>)>,
    /// Connections on which the upstream saw the proxy close (EOF or reset).
    eofs: Vec<usize>,
}

struct UpShared {
    log: Mutex<Log>,
    changed: Notify,
}

impl UpShared {
    fn update(&self, f: impl FnOnce(&mut Log)) {
        f(&mut self.log.lock().expect("log"));
        self.changed.notify_waiters();
    }
}

/// One connection accepted by the upstream, handed to the test's script.
pub struct UpConn {
    pub id: usize,
    pub wire: Wire,
    shared: Arc<UpShared>,
}

impl UpConn {
    /// Reads a request head; records that it arrived. `None` at EOF (recorded).
    pub async fn read_head(&mut self) -> Option<(Vec<u8>, String, Headers)> {
        let head = match self.wire.read_until(b"\r\n\r\n").await {
            Some(h) => h,
            None => {
                let rest = std::mem::take(&mut self.wire.buf);
                let id = self.id;
                self.shared.update(|l| {
                    if !rest.is_empty() {
                        l.partials.push((id, rest));
                    }
                    l.eofs.push(id);
                });
                return None;
            }
        };
        self.shared.update(|l| l.heads += 1);
        let (start, headers) = parse_head(&head);
        Some((head, start, headers))
    }

    /// Reads one whole request and records it; `None` at EOF, recording what part of a
    /// request had arrived, if any.
    pub async fn read_request(&mut self) -> Option<Captured> {
        let (head, start, headers) = self.read_head().await?;
        let mut words = start.splitn(3, ' ');
        let method = words.next().unwrap_or_default().to_owned();
        let target = words.next().unwrap_or_default().to_owned();
        let version = words.next().unwrap_or_default().to_owned();
        let chunked = values(&headers, "transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case(b"chunked"));
        let length = values(&headers, "content-length")
            .first()
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
        let body = if chunked {
            read_chunked(&mut self.wire).await
        } else if let Some(n) = length {
            let (data, complete) = self.wire.read_n(n).await;
            ReadBody {
                raw: data.clone(),
                data,
                trailers: Vec::new(),
                complete,
            }
        } else {
            ReadBody {
                complete: true,
                ..ReadBody::default()
            }
        };
        let captured = Captured {
            conn: self.id,
            head,
            method,
            target,
            version,
            headers,
            body,
        };
        let id = self.id;
        if !captured.body.complete {
            let raw = captured.raw();
            self.shared.update(|l| {
                l.partials.push((id, raw));
                l.eofs.push(id);
            });
            return None;
        }
        self.shared.update(|l| l.requests.push(captured.clone()));
        Some(captured)
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        let _ = self.wire.stream.write_all(bytes).await;
        let _ = self.wire.stream.flush().await;
    }

    /// Waits until the proxy closes the connection, discarding what it sends; records it.
    pub async fn wait_eof(&mut self) {
        self.wire.read_to_eof().await;
        let id = self.id;
        self.shared.update(|l| l.eofs.push(id));
    }
}

/// What the upstream does after a request.
pub enum Then {
    /// Wait for the next request on the connection.
    KeepAlive,
    /// Close the connection.
    Close,
    /// Send nothing more and keep the connection open until the proxy closes it.
    Stall,
}

/// Bytes to write after a request, then what to do.
pub struct Action {
    pub bytes: Vec<u8>,
    pub then: Then,
}

impl Action {
    pub fn keep(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: bytes.into(),
            then: Then::KeepAlive,
        }
    }
    pub fn close(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: bytes.into(),
            then: Then::Close,
        }
    }
    pub fn stall(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: bytes.into(),
            then: Then::Stall,
        }
    }
}

pub type Script = Arc<dyn Fn(UpConn) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The capturing upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<UpShared>,
}

pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

impl Upstream {
    /// Runs `script` on every accepted connection.
    pub async fn script<F, Fut>(script: F) -> Self
    where
        F: Fn(UpConn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let script: Script = Arc::new(move |c| Box::pin(script(c)));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(UpShared {
            log: Mutex::new(Log::default()),
            changed: Notify::new(),
        });
        let s = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let mut id = 0;
                s.update(|l| {
                    id = l.accepted;
                    l.accepted += 1;
                });
                let conn = UpConn {
                    id,
                    wire: Wire::new(stream),
                    shared: Arc::clone(&s),
                };
                tokio::spawn(script(conn));
            }
        });
        Self { addr, shared }
    }

    /// Answers each request with what `reply` says.
    pub async fn replying<F>(reply: F) -> Self
    where
        F: Fn(&Captured) -> Action + Send + Sync + 'static,
    {
        let reply = Arc::new(reply);
        Self::script(move |mut conn| {
            let reply = Arc::clone(&reply);
            async move {
                while let Some(req) = conn.read_request().await {
                    let action = reply(&req);
                    conn.write(&action.bytes).await;
                    match action.then {
                        Then::KeepAlive => continue,
                        Then::Close => return,
                        Then::Stall => {
                            conn.wait_eof().await;
                            return;
                        }
                    }
                }
            }
        })
        .await
    }

    /// Answers every request with these bytes and keeps the connection.
    pub async fn canned(bytes: &'static [u8]) -> Self {
        Self::replying(move |_| Action::keep(bytes)).await
    }

    /// `200 ok`, keep-alive.
    pub async fn ok() -> Self {
        Self::canned(OK).await
    }

    /// `200` whose body is the request exactly as received (head and body).
    pub async fn echo() -> Self {
        Self::replying(|req| {
            let raw = req.raw();
            let mut out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                raw.len()
            )
            .into_bytes();
            out.extend_from_slice(&raw);
            Action::keep(out)
        })
        .await
    }

    /// Reads requests and never answers.
    pub async fn silent() -> Self {
        Self::replying(|_| Action::stall(Vec::new())).await
    }

    fn with<R>(&self, f: impl FnOnce(&Log) -> R) -> R {
        f(&self.shared.log.lock().expect("log"))
    }

    pub fn accepted(&self) -> usize {
        self.with(|l| l.accepted)
    }

    pub fn heads(&self) -> usize {
        self.with(|l| l.heads)
    }

    pub fn requests(&self) -> Vec<Captured> {
        self.with(|l| l.requests.clone())
    }

    pub fn partials(&self) -> Vec<(usize, Vec<u8>)> {
        self.with(|l| l.partials.clone())
    }

    pub fn eofs(&self) -> Vec<usize> {
        self.with(|l| l.eofs.clone())
    }

    /// The only request received.
    pub fn only(&self) -> Captured {
        let reqs = self.requests();
        assert_eq!(reqs.len(), 1, "requests upstream: {reqs:#?}");
        reqs.into_iter().next().expect("one")
    }

    /// Nothing reached the upstream: no connection at all.
    pub fn assert_untouched(&self) {
        assert_eq!(
            self.accepted(),
            0,
            "upstream was contacted: {:#?}",
            self.requests()
        );
    }

    /// Waits until `pred` holds on the log.
    pub async fn wait(&self, what: &str, pred: impl Fn(&UpView) -> bool) {
        within(what, async {
            loop {
                let notified = self.shared.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let view = self.view();
                if pred(&view) {
                    return;
                }
                // Also re-check now and then: the log may change through paths we don't see.
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            }
        })
        .await
    }

    pub fn view(&self) -> UpView {
        self.with(|l| UpView {
            accepted: l.accepted,
            heads: l.heads,
            requests: l.requests.len(),
            partials: l.partials.len(),
            eofs: l.eofs.len(),
        })
    }
}

/// Counters of the upstream's log.
#[derive(Debug, Clone, Copy)]
pub struct UpView {
    pub accepted: usize,
    pub heads: usize,
    pub requests: usize,
    pub partials: usize,
    pub eofs: usize,
}

// ---------------------------------------------------------------------------------------
// The app.

/// The app under test: inner routes plus the proxy layer.
pub struct App {
    pub addr: SocketAddr,
    pub handle: ProxyHandle,
    /// Connections the app accepted.
    pub accepted: Arc<AtomicUsize>,
}

#[derive(Clone, Default)]
pub struct ServeOptions {
    /// hyper's HTTP/1 header read timeout (slowloris guard); hyper's default when `None`.
    pub header_read_timeout: Option<Duration>,
}

/// `GET /health` → `ok`; `/inner/echo` → the request as the inner service saw it;
/// anything else → `404 inner 404`.
pub fn inner_router() -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/inner/echo", any(inner_echo))
        .fallback(|| async { (StatusCode::NOT_FOUND, "inner 404") })
}

async fn inner_echo(req: Request) -> String {
    let (parts, body) = req.into_parts();
    let mut out = format!("{} {} {:?}\n", parts.method, parts.uri, parts.version);
    for (n, v) in &parts.headers {
        out.push_str(&format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())));
    }
    out.push('\n');
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    out.push_str(&String::from_utf8_lossy(&body));
    out
}

pub async fn start_app<I, J>(layer: ProxyLayer<I, J>) -> App
where
    I: IdentityExtractor,
    J: JwtSigner,
{
    start_app_with(layer, ServeOptions::default()).await
}

pub async fn start_app_with<I, J>(layer: ProxyLayer<I, J>, options: ServeOptions) -> App
where
    I: IdentityExtractor,
    J: JwtSigner,
{
    let handle = layer.handle();
    let router = inner_router().layer(layer);
    serve_router(router, handle, options).await
}

/// Serves `router` the way the demo does (hyper-util auto: HTTP/1.1 and h2c prior knowledge,
/// upgrades enabled).
pub async fn serve_router(router: Router, handle: ProxyHandle, options: ServeOptions) -> App {
    serve_service(router, handle, options).await
}

/// Serves any tower service like [`serve_router`].
pub async fn serve_service<S, B>(service: S, handle: ProxyHandle, options: ServeOptions) -> App
where
    S: tower::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    if let Some(t) = options.header_read_timeout {
        builder.http1().header_read_timeout(t);
    }
    builder.http2().timer(TokioTimer::new());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let svc = TowerToHyperService::new(service.clone());
            let builder = builder.clone();
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    App {
        addr,
        handle,
        accepted,
    }
}

impl App {
    /// Points the proxy at `upstream` with base path `base` (e.g. `/api/v1`, or ``).
    pub fn target(&self, upstream: &Upstream, base: &str) {
        self.handle
            .set_target(Some(&format!("http://{}{base}", upstream.addr)))
            .expect("target");
    }

    pub async fn raw(&self) -> Raw {
        Raw::connect(self.addr).await
    }

    /// Sends `bytes` on a new connection and reads one response (HEAD-aware if `head`).
    pub async fn exchange(&self, bytes: &[u8]) -> (Resp, Raw) {
        let mut c = self.raw().await;
        c.send(bytes).await;
        let head = bytes.starts_with(b"HEAD ");
        let r = c.response(head).await.expect("a response");
        (r, c)
    }

    /// A `GET` of `path` with `Host: <app>` plus `extra` header lines (each ending `\r\n`).
    pub async fn get(&self, path: &str, extra: &str) -> Resp {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", self.addr);
        self.exchange(req.as_bytes()).await.0
    }
}

/// A handler for hyper servers used as targets in a few tests.
pub type Infallibly = Result<hyper::Response<Body>, Infallible>;

// ---------------------------------------------------------------------------------------
// The raw client.

/// One response as the client read it.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub head: Vec<u8>,
    pub headers: Headers,
    pub body: ReadBody,
    /// `true` if the body was delimited by the connection closing.
    pub close_delimited: bool,
}

impl Resp {
    pub fn all(&self, name: &str) -> Vec<&[u8]> {
        values(&self.headers, name)
    }
    pub fn count(&self, name: &str) -> usize {
        self.all(name).len()
    }
    pub fn has(&self, name: &str) -> bool {
        self.count(name) > 0
    }
    pub fn one(&self, name: &str) -> String {
        let all = self.all(name);
        assert_eq!(all.len(), 1, "{name} lines in:\n{}", self.head_str());
        String::from_utf8_lossy(all[0]).into_owned()
    }
    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body.data).into_owned()
    }
}

/// What came after a response on a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// The server closed the connection.
    Closed,
    /// More bytes arrived.
    Data(Vec<u8>),
}

/// A raw TCP client (or the read half of one, after [`Raw::split`]).
pub struct Raw<S = TcpStream> {
    pub wire: Wire<S>,
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        Self {
            wire: Wire::new(stream),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.wire.stream.write_all(bytes).await.expect("write");
        self.wire.stream.flush().await.expect("flush");
    }

    /// Sends, ignoring errors (the server may already have closed).
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        self.wire.stream.write_all(bytes).await.is_ok()
    }

    /// A reader and a writer that can be used at the same time.
    pub fn split(
        self,
    ) -> (
        Raw<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        let (rd, wr) = self.wire.stream.into_split();
        (
            Raw {
                wire: Wire {
                    stream: rd,
                    buf: self.wire.buf,
                    eof: self.wire.eof,
                },
            },
            wr,
        )
    }
}

impl<S: tokio::io::AsyncRead + Unpin> Raw<S> {
    /// Reads one response (a `1xx` is a response of its own). `None` if the connection
    /// closed before any byte of it.
    pub async fn response(&mut self, head_request: bool) -> Option<Resp> {
        within("reading a response", self.read_response(head_request)).await
    }

    async fn read_response(&mut self, head_request: bool) -> Option<Resp> {
        let head = match self.wire.read_until(b"\r\n\r\n").await {
            Some(h) => h,
            None if self.wire.buf.is_empty() => return None,
            None => panic!(
                "connection closed inside a response head: {:?}",
                String::from_utf8_lossy(&self.wire.buf)
            ),
        };
        let (start, headers) = parse_head(&head);
        let status: u16 = start
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {start:?}"));
        let chunked = values(&headers, "transfer-encoding")
            .iter()
            .any(|v| v.eq_ignore_ascii_case(b"chunked"));
        let length = values(&headers, "content-length")
            .first()
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
        let mut close_delimited = false;
        let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304
        {
            ReadBody {
                complete: true,
                ..ReadBody::default()
            }
        } else if chunked {
            read_chunked(&mut self.wire).await
        } else if let Some(n) = length {
            let (data, complete) = self.wire.read_n(n).await;
            ReadBody {
                raw: data.clone(),
                data,
                trailers: Vec::new(),
                complete,
            }
        } else {
            close_delimited = true;
            let data = self.wire.read_to_eof().await;
            ReadBody {
                raw: data.clone(),
                data,
                trailers: Vec::new(),
                complete: true,
            }
        };
        Some(Resp {
            status,
            head,
            headers,
            body,
            close_delimited,
        })
    }

    /// Reads a final response, skipping `1xx` ones.
    pub async fn final_response(&mut self, head_request: bool) -> Option<Resp> {
        loop {
            let r = self.response(head_request).await?;
            if !(100..200).contains(&r.status) {
                return Some(r);
            }
        }
    }

    /// Waits for the server to close the connection or send more bytes.
    pub async fn after(&mut self) -> After {
        within("waiting for the connection to close", async {
            if !self.wire.buf.is_empty() {
                return After::Data(std::mem::take(&mut self.wire.buf));
            }
            if self.wire.fill().await {
                After::Data(std::mem::take(&mut self.wire.buf))
            } else {
                After::Closed
            }
        })
        .await
    }

    /// The connection must be closed by the server, with nothing more sent.
    pub async fn assert_closed(&mut self) {
        let after = self.after().await;
        assert_eq!(
            after,
            After::Closed,
            "expected the connection to close; got {:?}",
            match &after {
                After::Data(d) => String::from_utf8_lossy(d).into_owned(),
                After::Closed => String::new(),
            }
        );
    }
}

/// Bytes for `Host: <addr>`.
pub fn host(addr: SocketAddr) -> String {
    addr.to_string()
}

/// Collects a hyper body (client side) into bytes.
pub async fn collect<B>(body: B) -> Result<Bytes, B::Error>
where
    B: hyper::body::Body,
{
    body.collect().await.map(|c| c.to_bytes())
}

/// Every request the upstream started has ended (EOF seen for each head), and none of them
/// arrived complete: nothing was forwarded as a whole message.
pub async fn assert_no_complete_request(up: &Upstream) {
    up.wait("every started upstream request ends", |v| v.heads <= v.eofs)
        .await;
    assert!(
        up.requests().is_empty(),
        "a complete request was forwarded: {:#?}",
        up.requests()
    );
}

/// The app, pointed at a `200 ok` upstream under `/api/v1`: the setup most cases share.
pub async fn setup() -> (Upstream, App) {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "/api/v1");
    (up, app)
}
