//! Shared helpers of the protocol tests (tls, upstream, grpc, websocket): a test PKI made
//! with rcgen, TLS and plain targets that echo what they received, the app with the layer,
//! and an independent JWT check (jsonwebtoken called directly).
#![allow(dead_code, unreachable_pub)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
};

use axum::{Router, routing};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyUsagePurpose};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, RootCertStore, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
        server::WebPkiClientVerifier,
    },
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{handshake::derive_accept_key, protocol::Role},
};
use tower_identity_proxy::{Identity, KeyPair, KeySigner, ProxyClient, ProxyLayer};

// ---------------------------------------------------------------------------------------
// Identity and the independent JWT check
// ---------------------------------------------------------------------------------------

/// One RSA key per test binary (generation is the slow part).
pub fn keys() -> &'static KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::generate_rsa(2048).expect("rsa key"))
}

/// Verifies `Authorization: Bearer <JWT>` with jsonwebtoken (not the crate's verifier) and
/// returns the claims.
pub fn verify_bearer(authorization: &str) -> Value {
    let token = authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer token: {authorization}"));
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS512);
    v.set_required_spec_claims(&["exp", "sub"]);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(keys().public_key_pem().as_bytes())
        .expect("public key");
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .expect("token verifies")
        .claims
}

/// Asserts the token is Alice's, as the app's identity extractor says.
pub fn assert_alice(authorization: &str) {
    let claims = verify_bearer(authorization);
    assert_eq!(claims["sub"], "alice", "{claims}");
    assert_eq!(claims["authorities"], json!(["ROLE_ADMIN", "ROLE_USER"]));
}

type AliceFuture = std::future::Ready<Result<Option<Identity>, tower_identity_proxy::Rejection>>;
type AliceFn = fn(&http::request::Parts) -> AliceFuture;
/// The layer type of the test apps.
pub type TestLayer = ProxyLayer<AliceFn, tower_identity_proxy::CachingSigner<KeySigner>>;

fn alice(_: &http::request::Parts) -> AliceFuture {
    std::future::ready(Ok(Some(Identity::new(
        "alice",
        ["ROLE_USER", "ROLE_ADMIN"],
    ))))
}

/// The proxy layer every test app uses: Alice's identity, RS512 tokens, `target`.
pub fn layer(client: ProxyClient, target: &str) -> TestLayer {
    ProxyLayer::new(KeySigner::rs512(keys().clone()).expect("signer"))
        .identity(alice as AliceFn)
        .client(client)
        .target(target)
        .expect("target")
}

/// Starts an axum app (HTTP/1.1 and HTTP/2 with prior knowledge) with the proxy layer in
/// front of one route, `/api`.
pub async fn start_app(client: ProxyClient, target: &str) -> SocketAddr {
    let app = Router::new()
        .route("/api", routing::get(|| async { "api" }))
        .layer(layer(client, target));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

// ---------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate chain and its key, as PEM and as rustls types.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().expect("ca key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca cert"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A certificate for these DNS names / IPs signed by this CA.
    pub fn leaf(&self, names: &[&str], client: bool) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            names.first().copied().unwrap_or("client"),
        );
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS server configuration presenting `leaf`, offering `alpn`, and requiring a client
/// certificate issued by `client_ca` if given.
pub fn server_config(leaf: &Leaf, alpn: &[&[u8]], client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.der()).expect("client ca");
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
        .expect("server cert");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------

/// What one connection to a target looked like.
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    pub alpn: Option<String>,
    pub client_cert: bool,
}

/// Everything a target saw: the request heads (as JSON, like the echo body) in order.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<Value>>>);

impl Seen {
    pub fn all(&self) -> Vec<Value> {
        self.0.lock().expect("seen").clone()
    }
    pub fn last(&self) -> Value {
        self.all()
            .last()
            .cloned()
            .expect("the target saw a request")
    }
    fn push(&self, v: Value) {
        self.0.lock().expect("seen").push(v);
    }
}

/// A running target.
pub struct Target {
    pub addr: SocketAddr,
    pub seen: Seen,
    /// Signalled (once per WebSocket session) when the target's side of a WebSocket
    /// connection saw the peer close the TCP connection after the close handshake.
    pub ws_closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

fn head_json(req: &Request<Incoming>, conn: &ConnInfo) -> Value {
    let mut headers = serde_json::Map::new();
    for (k, v) in req.headers() {
        let entry = headers
            .entry(k.as_str().to_owned())
            .or_insert_with(|| json!([]));
        if let Value::Array(a) = entry {
            a.push(Value::from(
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            ));
        }
    }
    json!({
        "version": format!("{:?}", req.version()),
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
        "alpn": conn.alpn,
        "client_cert": conn.client_cert,
    })
}

/// The first value of header `name` in a head recorded by [`head_json`].
pub fn header_of<'a>(head: &'a Value, name: &str) -> Option<&'a str> {
    head["headers"][name][0].as_str()
}

fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res
}

/// The target's request handler:
/// - `/ws`: a WebSocket echo (text, binary; pings are answered by tungstenite);
/// - `/x-echo`: `Upgrade: x-echo`, reads until the peer's half-close, answers
///   `got: <bytes>` and closes;
/// - `/wrong-upgrade`: answers `101` with another protocol than asked;
/// - anything else: `200` with the request head and body as JSON.
async fn handle(
    mut req: Request<Incoming>,
    conn: ConnInfo,
    seen: Seen,
    ws_closed: tokio::sync::mpsc::UnboundedSender<()>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let head = head_json(&req, &conn);
    seen.push(head.clone());
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    match req.uri().path() {
        "/ws" if wants_upgrade => {
            let Some(key) = req.headers().get("sec-websocket-key") else {
                return Ok(response(StatusCode::BAD_REQUEST, "no key"));
            };
            let accept = derive_accept_key(key.as_bytes());
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on.await else { return };
                let mut ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                use futures_util::{SinkExt, StreamExt};
                use tokio_tungstenite::tungstenite::Message;
                // The target pings first; the client's pong is reported back as text.
                if ws
                    .send(Message::Ping(Bytes::from_static(b"from-target")))
                    .await
                    .is_err()
                {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    let reply = match msg {
                        Message::Text(_) | Message::Binary(_) => msg,
                        Message::Pong(data) => {
                            Message::text(format!("pong seen: {}", String::from_utf8_lossy(&data)))
                        }
                        _ => continue,
                    };
                    if ws.send(reply).await.is_err() {
                        break;
                    }
                }
                // The close handshake is done (tungstenite answered the client's Close);
                // now wait for the proxy to pass on the client's TCP close.
                let mut io = ws.into_inner();
                let mut buf = [0u8; 64];
                use tokio::io::AsyncReadExt;
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 {
                        let _ = ws_closed.send(());
                        break;
                    }
                }
            });
            Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header("sec-websocket-accept", accept)
                .body(Full::default())
                .expect("response"))
        }
        "/x-echo" if wants_upgrade => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(upgraded) = on.await else { return };
                let mut io = TokioIo::new(upgraded);
                let mut got = Vec::new();
                if io.read_to_end(&mut got).await.is_err() {
                    return;
                }
                let mut reply = b"got: ".to_vec();
                reply.extend_from_slice(&got);
                let _ = io.write_all(&reply).await;
                let _ = io.shutdown().await;
            });
            Ok(Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, "x-echo")
                .body(Full::default())
                .expect("response"))
        }
        "/wrong-upgrade" => Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "something-else")
            .body(Full::default())
            .expect("response")),
        _ => {
            let body = match req.into_body().collect().await {
                Ok(c) => c.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let mut out = head;
            out["body"] = Value::from(String::from_utf8_lossy(&body).into_owned());
            let mut res = response(StatusCode::OK, out.to_string());
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok(res)
        }
    }
}

async fn serve_conn<IO>(
    io: IO,
    conn: ConnInfo,
    seen: Seen,
    tx: tokio::sync::mpsc::UnboundedSender<()>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(req, conn.clone(), seen.clone(), tx.clone()));
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

/// A plain-http target speaking HTTP/1.1 and HTTP/2 with prior knowledge.
pub async fn start_target() -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let (tx, ws_closed) = tokio::sync::mpsc::unbounded_channel();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_conn(
                stream,
                ConnInfo::default(),
                s.clone(),
                tx.clone(),
            ));
        }
    });
    Target {
        addr,
        seen,
        ws_closed,
    }
}

/// An https target with this TLS configuration (HTTP/1.1 or HTTP/2 as ALPN decides).
pub async fn start_tls_target(config: Arc<ServerConfig>) -> Target {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Seen::default();
    let (tx, ws_closed) = tokio::sync::mpsc::unbounded_channel();
    let s = seen.clone();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let (s, tx) = (s.clone(), tx.clone());
            tokio::spawn(async move {
                // A refused handshake (unknown CA, missing client certificate) ends here.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, session) = tls.get_ref();
                let conn = ConnInfo {
                    alpn: session
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                    client_cert: session.peer_certificates().is_some_and(|c| !c.is_empty()),
                };
                serve_conn(tls, conn, s, tx).await;
            });
        }
    });
    Target {
        addr,
        seen,
        ws_closed,
    }
}

// ---------------------------------------------------------------------------------------
// Clients to the app
// ---------------------------------------------------------------------------------------

/// An HTTP/1.1 client to the app.
pub fn h1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 (prior knowledge) client to the app.
pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A finished response.
pub struct Got {
    pub status: StatusCode,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends `req` and reads the whole response.
pub async fn send<B>(client: &Client<HttpConnector, B>, req: Request<B>) -> Got
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let res = client.request(req).await.expect("response from the app");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Got {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// `GET http://{app}{path}` over `client`.
pub async fn get(client: &Client<HttpConnector, Full<Bytes>>, app: SocketAddr, path: &str) -> Got {
    let req = Request::get(format!("http://{app}{path}"))
        .body(Full::default())
        .expect("request");
    send(client, req).await
}

/// A proxy client trusting `ca` (and the webpki roots).
#[cfg(feature = "https")]
pub fn client_trusting(ca: &Ca) -> tower_identity_proxy::client::ClientBuilder {
    ProxyClient::builder()
        .add_root_certificates_pem(ca.pem().as_bytes())
        .expect("ca pem")
}

/// The plain message of a 502 from the proxy.
pub const UNREACHABLE: &str = "The proxy target could not be reached.";

/// Runs `f` within a generous bound, so a hang fails the test instead of blocking it.
pub async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(std::time::Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 20 s (hang)"))
}

// ---------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP (for upgrades the client libraries would not send)
// ---------------------------------------------------------------------------------------

/// Reads a response head (up to the blank line); returns it and any bytes read past it.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        let n = stream.read(&mut chunk).await.expect("read head");
        assert!(
            n > 0,
            "connection closed before the response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}
