//! The echo target: a real server on 127.0.0.1:0, over plain TCP or TLS, HTTP/1.1 or HTTP/2
//! (prior knowledge or ALPN), that records every request it receives ([`Seen`]) and answers
//! with a JSON description of it ([`Seen::json`]), or:
//! - echoes the body (`x-echo: body`), after a delay (`x-echo-delay-ms`), with a status
//!   (`x-echo-status`) or with hop-by-hop response headers (`x-echo-hop: 1`);
//! - on the upgrade routes, switches protocols (see [`upgrade::route`](super::upgrade::route));
//! - started with [`token_target`], answers the bearer token it received as the body.
//!
//! It always adds `X-Custom-Header: lorem ipsum`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};

use super::{Server, bearer, decode_rs512, headers_json, upgrade};

/// A request as the echo target received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// The request target (origin form: path and query; absolute over HTTP/2).
    pub uri: Uri,
    /// The HTTP version.
    pub version: Version,
    /// The headers, as received.
    pub headers: HeaderMap,
    /// The whole body (empty on an upgrade route).
    pub body: Bytes,
    /// The protocol TLS negotiated by ALPN.
    pub alpn: Option<String>,
    /// Whether the TLS client presented a certificate.
    pub client_cert: bool,
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

    /// Its `Authorization: Bearer` token, empty if it had none.
    pub fn token(&self) -> String {
        self.headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned()
    }

    /// The description the target answers with: method, path, query, uri, version,
    /// headers (`[[name, value], …]`, see [`header_of`]), body (`body_len` and as text),
    /// alpn, client_cert.
    pub fn json(&self) -> Value {
        json!({
            "method": self.method.as_str(),
            "path": self.uri.path(),
            "query": self.uri.query(),
            "uri": self.uri.to_string(),
            "version": format!("{:?}", self.version),
            "headers": headers_json(&self.headers),
            "body_len": self.body.len(),
            "body": String::from_utf8_lossy(&self.body),
            "alpn": self.alpn,
            "client_cert": self.client_cert,
        })
    }
}

/// The first value of header `name` in a description ([`Seen::json`]).
pub fn header_of<'a>(description: &'a Value, name: &str) -> Option<&'a str> {
    description["headers"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == name)?[1]
        .as_str()
}

/// What the target answers to requests outside the upgrade routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// The description, or what the `x-echo*` headers ask for.
    Echo,
    /// The bearer token it received.
    Token,
}

/// The echo target. See the [module docs](self).
#[derive(Debug)]
pub struct EchoTarget {
    /// The server.
    pub server: Server,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Signalled (once per WebSocket session) when the target's side of a WebSocket
    /// connection saw the peer close the TCP connection after the close handshake.
    pub ws_closed: UnboundedReceiver<()>,
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

    /// The bearer token of every request received so far (empty for none).
    pub fn tokens(&self) -> Vec<String> {
        self.seen().iter().map(Seen::token).collect()
    }
}

/// Starts a plain-http [`EchoTarget`] on 127.0.0.1:0.
pub async fn echo_target() -> EchoTarget {
    start(None, Answer::Echo).await
}

/// Starts an https [`EchoTarget`] with this TLS configuration (HTTP/1.1 or HTTP/2 as ALPN
/// decides).
pub async fn tls_echo_target(config: Arc<ServerConfig>) -> EchoTarget {
    start(Some(TlsAcceptor::from(config)), Answer::Echo).await
}

/// Starts a plain-http [`EchoTarget`] answering every request `200` with the bearer token it
/// received as the body.
pub async fn token_target() -> EchoTarget {
    start(None, Answer::Token).await
}

/// What every connection's handler shares.
#[derive(Clone)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    ws_closed: UnboundedSender<()>,
    answer: Answer,
}

/// What one connection looked like.
#[derive(Clone, Debug, Default)]
struct ConnInfo {
    alpn: Option<String>,
    client_cert: bool,
}

async fn start(tls: Option<TlsAcceptor>, answer: Answer) -> EchoTarget {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (tx, ws_closed) = unbounded_channel();
    let shared = Shared {
        seen: Arc::clone(&seen),
        ws_closed: tx,
        answer,
    };
    let server = Server::spawn(|listener| async move {
        while let Ok((stream, _)) = listener.accept().await {
            let shared = shared.clone();
            let Some(acceptor) = tls.clone() else {
                tokio::spawn(serve_conn(stream, ConnInfo::default(), shared));
                continue;
            };
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
                serve_conn(tls, conn, shared).await;
            });
        }
    })
    .await;
    EchoTarget {
        server,
        seen,
        ws_closed,
    }
}

async fn serve_conn<IO>(io: IO, conn: ConnInfo, shared: Shared)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| handle(req, conn.clone(), shared.clone()));
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .await;
}

async fn handle(
    mut req: Request<Incoming>,
    conn: ConnInfo,
    shared: Shared,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let record = |parts: &http::request::Parts, body: Bytes| {
        let seen = Seen {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body,
            alpn: conn.alpn.clone(),
            client_cert: conn.client_cert,
        };
        shared.seen.lock().unwrap().push(seen.clone());
        seen
    };
    if let Some(res) = upgrade::route(&mut req, &shared.ws_closed) {
        record(&req.into_parts().0, Bytes::new());
        return Ok(res);
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(response(StatusCode::BAD_REQUEST, "broken body")),
    };
    // This request's record: with concurrent requests, not necessarily the last one.
    let seen = record(&parts, body);
    let mut res = match shared.answer {
        Answer::Echo => echo(&seen).await,
        Answer::Token => response(StatusCode::OK, seen.token()),
    };
    res.headers_mut()
        .insert("x-custom-header", HeaderValue::from_static("lorem ipsum"));
    Ok(res)
}

async fn echo(seen: &Seen) -> Response<Full<Bytes>> {
    let h = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(ms) = h("x-echo-delay-ms").and_then(|v| v.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = h("x-echo-status")
        .and_then(|v| v.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let (body, content_type) = if h("x-echo") == Some("body") {
        (seen.body.clone(), "application/octet-stream")
    } else {
        (Bytes::from(seen.json().to_string()), "application/json")
    };
    let mut res = response(status, body);
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
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

/// A response with this status and body.
pub(super) fn response(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res
}

/// A target that accepts connections and reads what comes, never answering: `http://ADDR`.
pub async fn silent_target() -> String {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{addr}")
}

/// An address on 127.0.0.1 where nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("addr")
}
