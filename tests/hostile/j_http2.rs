//! J. HTTP/2 on the inbound side (the app serves h2c with prior knowledge): RFC 9113 §8.1.1
//! (malformed messages, `content-length`), §8.2.2 (connection-specific fields);
//! CVE-2023-44487 (rapid reset).

use bytes::Bytes;
use http_body_util::Empty;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::support::*;

/// An HTTP/2 (prior knowledge) client connection to the app.
pub async fn h2_client<B>(app: &App) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn j1_h2_request_reaches_an_http11_target() {
    let (up, app) = setup().await;
    let mut sender = h2_client(&app).await;
    let req = Request::get("http://app.example:1337/proxy/echo?x=1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = within("h2 response", sender.send_request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), hyper::Version::HTTP_2);
    let body = within("h2 body", collect(res.into_body())).await.unwrap();
    assert_eq!(&body[..], b"ok");
    let got = up.only();
    assert_eq!(got.version, "HTTP/1.1");
    assert_eq!(got.target, "/api/v1/echo?x=1");
    assert_eq!(got.one("x-forwarded-host"), "app.example:1337");
    assert_eq!(got.one("host"), up.addr.to_string());
    assert!(got.one("via").starts_with("2 tip-"), "{}", got.head_str());
    decode_rs512(&got.bearer());
}

// --- A minimal raw HTTP/2 client, to send what a well-behaved client library refuses to.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman.
fn hpack(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

struct H2 {
    wire: Wire,
}

#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl H2 {
    async fn connect(app: &App) -> Self {
        let mut wire = Wire::new(TcpStream::connect(app.addr).await.unwrap());
        use tokio::io::AsyncWriteExt;
        wire.stream.write_all(PREFACE).await.unwrap();
        wire.stream.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
        Self { wire }
    }

    async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let _ = self.wire.stream.write_all(bytes).await;
    }

    async fn headers(&mut self, stream: u32, flags: u8, fields: &[(&[u8], &[u8])]) {
        self.send(&frame(0x1, flags | END_HEADERS, stream, &hpack(fields)))
            .await;
    }

    /// The next frame, acknowledging the server's SETTINGS; `None` when closed.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            let (head, all) = self.wire.read_n(9).await;
            if !all {
                return None;
            }
            let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
            let (payload, all) = self.wire.read_n(len).await;
            if !all {
                return None;
            }
            let f = Frame {
                kind: head[3],
                flags: head[4],
                stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                payload,
            };
            if f.kind == 0x4 && f.flags & 0x1 == 0 {
                self.send(&frame(0x4, 0x1, 0, &[])).await;
                continue;
            }
            return Some(f);
        }
    }

    /// How stream `id` ended: reset, a response (first HPACK byte), or a GOAWAY.
    async fn outcome(&mut self, id: u32) -> Outcome {
        within("h2 outcome", async {
            while let Some(f) = self.next().await {
                match f.kind {
                    0x3 if f.stream == id => return Outcome::Reset,
                    0x7 => return Outcome::GoAway,
                    0x1 if f.stream == id => return Outcome::Response(f.payload[0]),
                    _ => {}
                }
            }
            Outcome::Closed
        })
        .await
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Reset,
    GoAway,
    Closed,
    /// First byte of the response header block: `0x88` is `:status 200`, `0x8c` is `400`.
    Response(u8),
}

fn request_fields<'a>(app: &'a str, path: &'a str) -> Vec<(&'a [u8], &'a [u8])> {
    vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", app.as_bytes()),
    ]
}

#[tokio::test]
async fn j2_host_disagreeing_with_authority_is_400() {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let a = app.addr.to_string();
    let mut h2 = H2::connect(&app).await;
    let mut fields = request_fields(&a, "/proxy/x");
    fields[0].1 = b"GET";
    fields.push((b"host", b"evil.example"));
    h2.headers(1, END_STREAM, &fields).await;
    let outcome = h2.outcome(1).await;
    assert!(
        matches!(outcome, Outcome::Response(0x8c) | Outcome::Reset),
        "{outcome:?}"
    );
    up.assert_untouched();
}

#[tokio::test]
async fn j3_h2_content_length_smuggling_never_reaches_the_target() {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let a = app.addr.to_string();
    let mut h2 = H2::connect(&app).await;
    let mut fields = request_fields(&a, "/proxy/x");
    fields.push((b"content-length", b"0"));
    h2.headers(1, 0, &fields).await;
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr);
    h2.send(&frame(0x0, END_STREAM, 1, smuggled.as_bytes()))
        .await;
    let outcome = h2.outcome(1).await;
    // h2 treats DATA beyond content-length as malformed; whatever the proxy had already
    // sent upstream is one request with an empty body, never a second one.
    assert!(
        matches!(outcome, Outcome::Reset | Outcome::Response(_)),
        "{outcome:?}"
    );
    for got in up.requests() {
        assert!(!got.raw().windows(9).any(|w| w == b"smuggled"), "{got:?}");
        assert!(got.body.data.is_empty());
    }
    assert!(up.requests().len() <= 1);
}

#[tokio::test]
async fn j3_h2_transfer_encoding_is_a_stream_error() {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let a = app.addr.to_string();
    let mut h2 = H2::connect(&app).await;
    let mut fields = request_fields(&a, "/proxy/x");
    fields.push((b"transfer-encoding", b"chunked"));
    h2.headers(1, 0, &fields).await;
    h2.send(&frame(
        0x0,
        END_STREAM,
        1,
        b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    ))
    .await;
    let outcome = h2.outcome(1).await;
    assert!(
        matches!(
            outcome,
            Outcome::Reset | Outcome::GoAway | Outcome::Response(0x8c)
        ),
        "{outcome:?}"
    );
    up.assert_untouched();
}

#[tokio::test]
async fn j3_crlf_inside_an_h2_field_is_a_stream_error() {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let a = app.addr.to_string();
    for (name, value) in [
        (&b"foo"[..], &b"bar\r\ntransfer-encoding: chunked"[..]),
        (b"foo", b"bar\nx: y"),
        (b"foo", b"a\x00b"),
        (b"foo\r\nx", b"1"),
        (b"Upper", b"1"),
        (b"connection", b"close"),
    ] {
        let mut h2 = H2::connect(&app).await;
        let mut fields = request_fields(&a, "/proxy/x");
        fields[0].1 = b"GET";
        fields.push((name, value));
        h2.headers(1, END_STREAM, &fields).await;
        let outcome = h2.outcome(1).await;
        assert!(
            matches!(
                outcome,
                Outcome::Reset | Outcome::GoAway | Outcome::Response(0x8c)
            ),
            "{:?}: {outcome:?}",
            String::from_utf8_lossy(value)
        );
    }
    up.assert_untouched();
}

#[tokio::test]
async fn j4_cookie_crumbs_become_one_line() {
    let up = Upstream::ok().await;
    let app =
        start_app(layer().cookies(tower_identity_proxy::rules::CookiePolicy::new().forward(true)))
            .await;
    app.target(&up, "");
    let a = app.addr.to_string();
    let mut h2 = H2::connect(&app).await;
    let mut fields = request_fields(&a, "/proxy/x");
    fields[0].1 = b"GET";
    fields.push((b"cookie", b"a=1"));
    fields.push((b"cookie", b"b=2"));
    h2.headers(1, END_STREAM, &fields).await;
    assert_eq!(h2.outcome(1).await, Outcome::Response(0x88));
    assert_eq!(up.only().one("cookie"), "a=1; b=2");
}

#[tokio::test]
async fn j5_rapid_reset_cancels_upstream_work() {
    let up = Upstream::silent().await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let a = app.addr.to_string();
    let mut h2 = H2::connect(&app).await;
    let mut burst = Vec::new();
    for i in 0..200u32 {
        let id = 2 * i + 1;
        let mut fields = request_fields(&a, "/proxy/x");
        fields[0].1 = b"GET";
        burst.extend(frame(0x1, END_STREAM | END_HEADERS, id, &hpack(&fields)));
        burst.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    h2.send(&burst).await;
    // Drain until the server is done with the connection or has nothing more to say.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while h2.next().await.is_some() {}
    })
    .await;
    drop(h2);
    // Every upstream request that was started is cancelled: its connection is closed.
    up.wait("every upstream connection closed", |v| v.eofs >= v.accepted)
        .await;
    assert!(up.accepted() <= 200);

    // The burst above is usually refused before any upstream work starts. Now the resets
    // come once the upstream requests are under way: each one is cancelled all the same.
    let mut h2 = H2::connect(&app).await;
    let (mut heads, mut resets) = (Vec::new(), Vec::new());
    for i in 0..20u32 {
        let id = 2 * i + 1;
        let mut fields = request_fields(&a, "/proxy/x");
        fields[0].1 = b"GET";
        heads.extend(frame(0x1, END_STREAM | END_HEADERS, id, &hpack(&fields)));
        resets.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    let before = up.view();
    h2.send(&heads).await;
    up.wait("the requests upstream", |v| {
        v.requests >= before.requests + 20
    })
    .await;
    h2.send(&resets).await;
    up.wait("every upstream connection closed", |v| v.eofs >= v.accepted)
        .await;
    assert!(up.accepted() >= before.accepted + 20);
    drop(h2);
    // The app is still serving.
    let r = app.get("/health", "").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
}

/// An HTTP/2 request may carry trailers after a body whose length it states; an HTTP/1.1
/// message with `Content-Length` cannot, so such a request (trailers announced with
/// `Trailer`, RFC 9110 §6.6.2) goes chunked to an HTTP/1.1 target instead of losing them.
#[tokio::test]
async fn j_h2_request_trailers_survive_a_content_length() {
    use http_body_util::{BodyExt, Full};
    let (up, app) = setup().await;
    let mut sender = h2_client(&app).await;
    for announced in [true, false] {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("42"));
        let body =
            Full::new(Bytes::from_static(b"hello")).with_trailers(std::future::ready(Some(Ok::<
                _,
                std::convert::Infallible,
            >(
                trailers,
            ))));
        let mut req = Request::post("http://app.example/proxy/echo")
            .header("content-length", "5")
            .header("te", "trailers");
        if announced {
            req = req.header("trailer", "x-sum");
        }
        let res = within("h2 response", sender.send_request(req.body(body).unwrap()))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        within("h2 body", collect(res.into_body())).await.unwrap();
    }
    let got = up.requests();
    assert_eq!(got.len(), 2);
    for g in &got {
        g.assert_framing();
        assert_eq!(g.body.data, b"hello");
    }
    // Announced: chunked, with the trailer.
    assert_eq!(
        got[0].one("transfer-encoding"),
        "chunked",
        "{}",
        got[0].head_str()
    );
    assert!(!got[0].has("content-length"));
    assert_eq!(values(&got[0].body.trailers, "x-sum"), [b"42"]);
    // Not announced: the stated length is kept, as any other request's.
    assert_eq!(got[1].one("content-length"), "5", "{}", got[1].head_str());
}

/// The status of a `GET` of `uri` (its scheme and authority as `:scheme` and `:authority`)
/// over a new HTTP/2 connection to `app`.
async fn h2_get_status(app: &App, uri: &str) -> u16 {
    let mut sender = h2_client(app).await;
    let req = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
    let res = within("h2 response", sender.send_request(req));
    res.await.unwrap().status().as_u16()
}

#[tokio::test]
async fn j6_the_h2_scheme_counts_for_the_forwarded_origin() {
    use tower_identity_proxy::proxy::PublicOrigin;
    // Without public origins, `:scheme` is the scheme the target is told.
    let (up, app) = setup().await;
    assert_eq!(
        h2_get_status(&app, "https://app.example/proxy/x").await,
        200
    );
    assert_eq!(up.only().one("x-forwarded-proto"), "https");

    // With an https public origin, an `http` `:scheme` for its host is not that origin.
    let up = Upstream::ok().await;
    let app =
        start_app(layer().public_origin(PublicOrigin::from_static("https://app.example"))).await;
    app.target(&up, "");
    for (uri, status) in [
        ("http://app.example:443/proxy/x", 421),
        ("https://app.example/proxy/x", 200),
    ] {
        assert_eq!(h2_get_status(&app, uri).await, status, "{uri}");
    }
    assert_eq!(up.only().one("x-forwarded-proto"), "https");
}
