//! The harness of the hostile-input suite (`tests/hostile/`) and of
//! `tests/tracing_redaction.rs`, over real loopback sockets:
//! - [`Upstream`]: a plain TCP listener standing in for the target. It records the exact bytes
//!   of every request it receives (head, body as on the wire, decoded body, trailers), parses
//!   just enough to find the end of each request, and answers what the test scripts — a canned
//!   reply, a reply computed from the request, or any byte-level misbehaviour.
//! - [`App`]: an axum `Router` with the [`ProxyLayer`], served by hyper-util's auto (HTTP/1.1
//!   and HTTP/2) connection builder on `127.0.0.1:0`.
//! - [`Raw`] (from [`super::raw`]): a raw TCP client that writes bytes and parses the
//!   responses it reads back.
//!
//! No timing is asserted anywhere: every wait has a generous liveness bound ([`LIVENESS`])
//! that only turns a hang into a failure.

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
use tokio::{io::AsyncWriteExt, net::TcpListener, sync::Notify};
use tower_identity_proxy::{
    ProxyLayer,
    identity::{Anonymous, BasicAuth, BearerJwt, CredentialStore, IdentityExtractor, Or},
    jwt::{CachingSigner, JwtSigner, KeySigner},
};

// The shared support the cases use.
#[allow(unused_imports)]
pub use super::{
    Attempt, Head, Headers, LIVENESS, Raw, ReadBody, Resp, Wire, bearer_token, decode_rs512,
    despite_stalls, dribbled_headers, find, parse_head, read_body, rsa_keys, stalled_or_broken,
    values, while_progressing, within,
};
#[allow(unused_imports)]
pub use tower_identity_proxy::{ProxyHandle, proxy::ForwardedProto};

// ---------------------------------------------------------------------------------------
// Keys and users, made once per test binary (RSA key generation and Argon2 are slow).

pub const ALICE: &str = "alice";
pub const ALICE_PW: &str = "alice-password";

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
///
/// The upstream timeout is far beyond every wait of the suite ([`LIVENESS`]): an upstream
/// request left running when it should have been cancelled shows as a hang, never ends
/// by timing out first and passes.
pub fn layer() -> DefaultLayer {
    ProxyLayer::new(KeySigner::rs512(rsa_keys()).expect("signer"))
        .with_identity(
            BasicAuth::new(users())
                .or(BearerJwt::new(rsa_keys().verifier()))
                .or_anonymous(),
        )
        .upstream_timeout(3 * LIVENESS)
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
    /// The whole request as received.
    pub fn raw(&self) -> Vec<u8> {
        [self.head.as_slice(), self.body.raw.as_slice()].concat()
    }

    /// The JWT of the `Authorization: Bearer` line, which must be the only one.
    pub fn bearer(&self) -> String {
        bearer_token(&self.one("authorization")).to_owned()
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

impl Head for Captured {
    fn head_lines(&self) -> (&[u8], &Headers) {
        (&self.head, &self.headers)
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
        let body = match read_body(&mut self.wire, &headers).await {
            Some(body) => body,
            None => ReadBody {
                complete: true,
                ..ReadBody::default()
            },
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
    let handle = ProxyHandle::new();
    let router = inner_router().layer(layer.handle(handle.clone()));
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

    /// Sends `bytes` on a new connection and reads one response (HEAD-aware).
    pub async fn exchange(&self, bytes: &[u8]) -> (Resp, Raw) {
        super::exchange(self.addr, bytes).await
    }

    /// A `GET` of `path` with `Host: <app>` plus `extra` header lines (each ending `\r\n`).
    pub async fn get(&self, path: &str, extra: &str) -> Resp {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", self.addr);
        self.exchange(req.as_bytes()).await.0
    }
}

/// A handler for hyper servers used as targets in a few tests.
pub type Infallibly = Result<hyper::Response<Body>, Infallible>;

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
