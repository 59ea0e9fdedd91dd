//! HTTP/2 towards the target (h2c) with HTTP/1.1 and HTTP/2 callers, the connection
//! pool (reuse, idle timeout, max idle per host, stale connections) and HTTP/2 keep-alive
//! pings (a dead connection is dropped).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::*;
use http::{Request, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tower_identity_proxy::client::ProxyClient;

type AnyBody = BoxBody<Bytes, Infallible>;

fn client(h2: bool) -> TestClient<AnyBody> {
    if h2 { h2_client() } else { common::client() }
}

/// A body of unknown length, sent in pieces (chunked over HTTP/1.1).
fn streaming(parts: &[&'static str]) -> AnyBody {
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
        .collect();
    StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

fn post(app: SocketAddr, path: &str, body: AnyBody) -> Request<AnyBody> {
    Request::post(format!("http://{app}{path}"))
        .header("te", "trailers")
        .header("connection", "x-hop")
        .header("x-hop", "must not pass")
        .header("x-keep", "passes")
        .body(body)
        .unwrap()
}

/// What the target at `target` must have seen for [`post`], whatever the protocols.
fn assert_forwarded(seen: &serde_json::Value, body: &str, version: &str, target: SocketAddr) {
    assert_eq!(seen["version"], version, "{seen}");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], body);
    assert_alice(header_of(seen, "authorization").unwrap());
    assert_eq!(header_of(seen, "x-keep"), Some("passes"));
    assert_eq!(header_of(seen, "te"), Some("trailers"));
    for gone in ["x-hop", "connection", "keep-alive", "upgrade"] {
        assert!(header_of(seen, gone).is_none(), "{gone}: {seen}");
    }
    let hosts: Vec<&str> = seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0] == "host")
        .map(|h| h[1].as_str().unwrap())
        .collect();
    if version == "HTTP/2.0" {
        // Connection-specific headers are malformed in HTTP/2 (RFC 9113 §8.2.2); the target
        // is named by `:authority` alone (§8.3.1).
        assert!(header_of(seen, "transfer-encoding").is_none(), "{seen}");
        assert!(hosts.is_empty(), "{seen}");
        assert_eq!(seen["uri"], format!("http://{target}/p"), "{seen}");
    } else {
        // The target's own authority, once, whatever the caller's.
        assert_eq!(hosts, [target.to_string()], "{seen}");
    }
}

#[tokio::test]
async fn h1_and_h2_callers_to_an_http1_target() {
    let target = echo_target().await;
    let app = alice_app(
        ProxyClient::new().unwrap(),
        &format!("http://{}", target.addr()),
    )
    .await;
    for (h2, version) in [(false, Version::HTTP_11), (true, Version::HTTP_2)] {
        let c = client(h2);
        for body in [
            Full::from("sized body").boxed(),
            streaming(&["sized", " body"]),
        ] {
            let got = within("h1 target", send_on(&c, post(app, "/proxy/p", body))).await;
            assert_eq!(got.status, 200, "{}", got.text());
            assert_eq!(got.version, version);
            assert_forwarded(&got.json(), "sized body", "HTTP/1.1", target.addr());
            assert!(!got.headers.contains_key("transfer-encoding") || !h2);
        }
    }
}

#[tokio::test]
async fn h1_and_h2_callers_to_an_h2c_target() {
    let target = echo_target().await;
    let client_h2c = ProxyClient::builder()
        .http2_prior_knowledge(true)
        .build()
        .unwrap();
    let app = alice_app(client_h2c, &format!("http://{}", target.addr())).await;
    for (h2, version) in [(false, Version::HTTP_11), (true, Version::HTTP_2)] {
        let c = client(h2);
        for body in [Full::from("a body").boxed(), streaming(&["a", " ", "body"])] {
            let got = within("h2c target", send_on(&c, post(app, "/proxy/p", body))).await;
            assert_eq!(got.status, 200, "{}", got.text());
            assert_eq!(got.version, version);
            assert_forwarded(&got.json(), "a body", "HTTP/2.0", target.addr());
        }
    }
    // A GET without a body, and the app's own routes, still work.
    let got = within(
        "get",
        get_on(&h2_client(), &format!("http://{app}/proxy/x?q=1")),
    )
    .await;
    assert_eq!(got.json()["uri"], format!("http://{}/x?q=1", target.addr()));
    let got = within("api", get_on(&h2_client(), &format!("http://{app}/api"))).await;
    assert_eq!(got.text(), "api");
}

// ---------------------------------------------------------------------------------------
// Connection pool
// ---------------------------------------------------------------------------------------

/// Counts the connections a plain target accepted.
async fn counting_target() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::from("ok")))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, count)
}

async fn sequential(app: SocketAddr, n: usize, pause: Duration) {
    let c = common::client();
    for _ in 0..n {
        let got = within("pool", get_on(&c, &format!("http://{app}/proxy/"))).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "ok");
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test]
async fn pool_reuses_within_idle_timeout_and_honours_max_idle() {
    let settle = Duration::from_millis(50);

    // Default pool: one connection serves sequential requests. A connection goes back to
    // the pool once the client's connection task has seen the response end: a request
    // sent sooner opens another, so the pause after each request doubles on every attempt
    // until the machine keeps up (a pool that never reuses fails all four).
    common::despite_stalls(settle, |settle| async move {
        let (taddr, count) = counting_target().await;
        let app = alice_app(ProxyClient::new().unwrap(), &format!("http://{taddr}")).await;
        sequential(app, 4, settle).await;
        match count.load(Ordering::SeqCst) {
            1 => common::Attempt::Held,
            n => common::Attempt::Stalled(format!("{n} connections for 4 requests")),
        }
    })
    .await;

    // No idle connection kept: one connection per request.
    let (taddr, count) = counting_target().await;
    let c = ProxyClient::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let app = alice_app(c, &format!("http://{taddr}")).await;
    sequential(app, 4, settle).await;
    assert_eq!(count.load(Ordering::SeqCst), 4);

    // A short idle timeout: a connection idle for longer is not reused.
    let (taddr, count) = counting_target().await;
    let c = ProxyClient::builder()
        .pool_idle_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let app = alice_app(c, &format!("http://{taddr}")).await;
    sequential(app, 2, Duration::from_millis(1000)).await;
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

/// `Duration::MAX`, "no limit", as the pool idle and connect timeouts: connections are
/// pooled and reused, and the pool's idle task (which hyper-util spawns on this test's
/// current-thread runtime, where tokio would swallow its panic) does not overflow the clock.
#[tokio::test]
async fn unlimited_pool_and_connect_timeouts_pool_without_panicking() {
    let test_thread = std::thread::current().id();
    let panicked = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&panicked);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == test_thread {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    let (taddr, count) = counting_target().await;
    let c = ProxyClient::builder()
        .pool_idle_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .build()
        .unwrap();
    let app = alice_app(c, &format!("http://{taddr}")).await;
    sequential(app, 3, Duration::from_millis(50)).await;
    assert_eq!(count.load(Ordering::SeqCst), 1, "one pooled connection");
    assert_eq!(panicked.load(Ordering::SeqCst), 0, "a task panicked");
}

#[test]
fn default_idle_timeout_is_below_nodes_keep_alive() {
    let debug = format!("{:?}", ProxyClient::builder());
    assert!(debug.contains("pool_idle_timeout: 4.5s"), "{debug}");
}

/// One request as a raw target saw it.
#[derive(Debug, Clone)]
struct Arrival {
    conn: usize,
    id: String,
    /// The whole body was read and answered.
    answered: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Stale {
    /// Answers the first request with keep-alive, then closes as soon as the next one
    /// arrives, without reading or answering it.
    CloseOnNextRequest,
    /// Answers the first request with keep-alive, then closes at once.
    CloseAfterResponse,
}

/// A raw HTTP/1.1 target whose kept-alive connections go stale, recording every arrival.
async fn stale_target(mode: Stale) -> (SocketAddr, Arc<Mutex<Vec<Arrival>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    tokio::spawn(async move {
        let mut conn = 0;
        while let Ok((stream, _)) = listener.accept().await {
            conn += 1;
            tokio::spawn(stale_conn(stream, conn, mode, l.clone()));
        }
    });
    (addr, log)
}

async fn stale_conn(mut s: TcpStream, conn: usize, mode: Stale, log: Arc<Mutex<Vec<Arrival>>>) {
    let mut buf = Vec::new();
    for nth in 0.. {
        if nth > 0 && mode == Stale::CloseOnNextRequest {
            // Wait for the next request and close without reading it: the unread bytes
            // make the close a reset, as when a server times a connection out just as a
            // request arrives.
            let mut peeked = [0u8; 4096];
            let Ok(n) = s.peek(&mut peeked).await else {
                return;
            };
            let head = String::from_utf8_lossy(&peeked[..n]).to_ascii_lowercase();
            let id = head
                .lines()
                .find_map(|l| l.strip_prefix("x-req-id: "))
                .unwrap_or("?")
                .to_owned();
            log.lock().unwrap().push(Arrival {
                conn,
                id,
                answered: false,
            });
            return;
        }
        // Read a head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-req-id: "))
            .unwrap_or("?")
            .to_owned();
        buf.drain(..head_end);
        // Read the body: Content-Length or chunked (until the last chunk).
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = head.contains("transfer-encoding: chunked");
        loop {
            let done = match (length, chunked) {
                (Some(n), _) => buf.len() >= n,
                (None, true) => buf.windows(5).any(|w| w == b"0\r\n\r\n"),
                (None, false) => true,
            };
            if done {
                break;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.clear();
        log.lock().unwrap().push(Arrival {
            conn,
            id,
            answered: true,
        });
        let res = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok";
        if s.write_all(res).await.is_err() {
            return;
        }
        if mode == Stale::CloseAfterResponse {
            return;
        }
    }
}

/// Sends numbered uploads one after the other; every answer must be `200` or the plain
/// `502`, none may hang, and no upload may reach the target twice.
async fn uploads_through_stale_connections(
    mode: Stale,
    pause: Duration,
) -> (usize, usize, Vec<Arrival>) {
    let (taddr, log) = stale_target(mode).await;
    let app = alice_app(ProxyClient::new().unwrap(), &format!("http://{taddr}")).await;
    let c = client(false);
    let (mut ok, mut bad_gateway) = (0, 0);
    for i in 0..12 {
        let id = format!("u{i}");
        // Sized and streaming uploads, each both on fresh and on stale connections.
        let body = if i % 4 < 2 {
            Full::from("sized upload").boxed()
        } else {
            streaming(&["streaming", " upload"])
        };
        let req = Request::post(format!("http://{app}/proxy/upload"))
            .header("x-req-id", &id)
            .body(body)
            .unwrap();
        let got = within("upload", send_on(&c, req)).await;
        match got.status.as_u16() {
            200 => {
                assert_eq!(got.text(), "ok");
                ok += 1;
            }
            502 => {
                // Reached, then closed under the request.
                assert_eq!(got.text(), "The proxy target sent no valid response.");
                bad_gateway += 1;
            }
            other => panic!("upload {id}: {other} {}", got.text()),
        }
        let arrivals: Vec<Arrival> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.id == id)
            .cloned()
            .collect();
        assert!(
            arrivals.len() <= 1,
            "upload {id} reached the target twice: {arrivals:?}"
        );
        if got.status == 200 {
            assert!(arrivals.len() == 1 && arrivals[0].answered, "{arrivals:?}");
        }
        tokio::time::sleep(pause).await;
    }
    let log = log.lock().unwrap().clone();
    (ok, bad_gateway, log)
}

#[tokio::test]
async fn connection_closed_under_a_written_request_is_502_never_replayed() {
    let (ok, bad_gateway, log) =
        uploads_through_stale_connections(Stale::CloseOnNextRequest, Duration::from_millis(20))
            .await;
    // Every second request lands on a kept-alive connection that the target closes as the
    // request arrives: it was written, so it is answered 502 and not retried elsewhere.
    assert!(
        ok > 0 && bad_gateway > 0,
        "ok {ok}, 502 {bad_gateway}: {log:?}"
    );
    assert_eq!(bad_gateway, log.iter().filter(|a| !a.answered).count());
    for lost in log.iter().filter(|a| !a.answered) {
        assert!(
            log.iter().any(|a| a.answered && a.conn == lost.conn),
            "{lost:?} was not on a reused connection: {log:?}"
        );
    }
}

#[tokio::test]
async fn connection_closed_after_keep_alive_response_never_hangs() {
    // The race of a pooled connection closed by the target just before reuse: either the
    // pool notices (new connection, or a retry of the unwritten request) or the request
    // fails with 502. Both orders are exercised, with and without a pause.
    for pause in [Duration::ZERO, Duration::from_millis(20)] {
        let (ok, bad_gateway, log) =
            uploads_through_stale_connections(Stale::CloseAfterResponse, pause).await;
        assert_eq!(ok + bad_gateway, 12, "{log:?}");
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/2 keep-alive pings
// ---------------------------------------------------------------------------------------

/// A TCP relay in front of a target, to watch the proxy's connections to it: bytes moved,
/// connections accepted, HTTP/2 frames seen, and connections that go deaf (everything they
/// carry is dropped, as on a dead network path that sends no reset).
struct Relay {
    addr: SocketAddr,
    bytes: Arc<AtomicUsize>,
    conns: Arc<AtomicUsize>,
    deaf: Arc<Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>>,
    /// Signalled when the proxy closes a connection (its side reads EOF or fails).
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
    /// The frames of h2c connections, each direction in order (meaningless for other
    /// traffic): proxy to target, and target to proxy.
    frames: [tokio::sync::watch::Receiver<Vec<FrameHead>>; 2],
}

/// An HTTP/2 frame's type and flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FrameHead {
    kind: u8,
    flags: u8,
}

impl FrameHead {
    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    /// `END_STREAM` on `DATA` and `HEADERS`, `ACK` on `SETTINGS` and `PING`.
    const END_STREAM_OR_ACK: u8 = 0x1;

    fn is_settings_ack(self) -> bool {
        self.kind == Self::SETTINGS && self.flags & Self::END_STREAM_OR_ACK != 0
    }

    /// A `PING`, or its acknowledgement with `ack`.
    fn is_ping(self, ack: bool) -> bool {
        self.kind == Self::PING && (self.flags & Self::END_STREAM_OR_ACK != 0) == ack
    }

    fn ends_stream(self) -> bool {
        matches!(self.kind, Self::DATA | Self::HEADERS) && self.flags & Self::END_STREAM_OR_ACK != 0
    }
}

/// Reads the frame heads out of one direction of one h2c connection as bytes pass.
struct FrameReader {
    out: Arc<tokio::sync::watch::Sender<Vec<FrameHead>>>,
    /// Connection preface bytes still to skip (the proxy's direction only).
    preface: usize,
    head: Vec<u8>,
    /// Payload bytes of the current frame still to skip.
    payload: usize,
}

impl FrameReader {
    fn new(out: Arc<tokio::sync::watch::Sender<Vec<FrameHead>>>, to_target: bool) -> Self {
        Self {
            out,
            preface: if to_target { 24 } else { 0 },
            head: Vec::with_capacity(9),
            payload: 0,
        }
    }

    fn feed(&mut self, mut data: &[u8]) {
        let n = self.preface.min(data.len());
        self.preface -= n;
        data = &data[n..];
        loop {
            let n = self.payload.min(data.len());
            self.payload -= n;
            data = &data[n..];
            let n = (9 - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.payload > 0 || self.head.len() < 9 {
                return;
            }
            let h = &self.head;
            self.payload = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let frame = FrameHead {
                kind: h[3],
                flags: h[4],
            };
            self.out.send_modify(|frames| frames.push(frame));
            self.head.clear();
        }
    }
}

impl Relay {
    /// Every connection open now drops all it carries from here on.
    fn deafen_open_connections(&self) {
        for d in self.deaf.lock().unwrap().iter() {
            d.store(true, Ordering::SeqCst);
        }
    }
}

async fn relay(to: SocketAddr) -> Relay {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bytes = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let deaf: Arc<Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>> = Arc::default();
    let (tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let (to_target, to_target_rx) = tokio::sync::watch::channel(Vec::new());
    let (to_proxy, to_proxy_rx) = tokio::sync::watch::channel(Vec::new());
    let (to_target, to_proxy) = (Arc::new(to_target), Arc::new(to_proxy));
    let (b, c, d) = (bytes.clone(), conns.clone(), deaf.clone());
    tokio::spawn(async move {
        while let Ok((proxy_side, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let Ok(target_side) = TcpStream::connect(to).await else {
                continue;
            };
            let is_deaf = Arc::new(std::sync::atomic::AtomicBool::new(false));
            d.lock().unwrap().push(is_deaf.clone());
            let (pr, pw) = proxy_side.into_split();
            let (tr, tw) = target_side.into_split();
            let tx = tx.clone();
            let up = FrameReader::new(to_target.clone(), true);
            let down = FrameReader::new(to_proxy.clone(), false);
            tokio::spawn(pipe(pr, tw, b.clone(), up, is_deaf.clone(), Some(tx)));
            tokio::spawn(pipe(tr, pw, b.clone(), down, is_deaf, None));
        }
    });
    Relay {
        addr,
        bytes,
        conns,
        deaf,
        closed,
        frames: [to_target_rx, to_proxy_rx],
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    bytes: Arc<AtomicUsize>,
    mut frames: FrameReader,
    deaf: Arc<std::sync::atomic::AtomicBool>,
    on_eof: Option<tokio::sync::mpsc::UnboundedSender<()>>,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                bytes.fetch_add(n, Ordering::SeqCst);
                frames.feed(&buf[..n]);
                if !deaf.load(Ordering::SeqCst) && to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Some(tx) = on_eof {
        let _ = tx.send(());
    }
    // A deaf connection passes nothing on, not even the close.
    if !deaf.load(Ordering::SeqCst) {
        let _ = to.shutdown().await;
    }
}

/// A client whose pooled connections would outlive the test unless pings close them.
fn pinging(
    builder: tower_identity_proxy::client::ClientBuilder,
    interval: Option<Duration>,
    timeout: Duration,
) -> ProxyClient {
    builder
        .pool_idle_timeout(Duration::from_secs(60))
        .http2_keep_alive_interval(interval)
        .http2_keep_alive_timeout(timeout)
        .http2_keep_alive_while_idle(true)
        .build()
        .unwrap()
}

/// [`pinging`], speaking h2c.
fn h2c_pinging(interval: Option<Duration>, timeout: Duration) -> ProxyClient {
    pinging(
        ProxyClient::builder().http2_prior_knowledge(true),
        interval,
        timeout,
    )
}

/// The pings (`ack` false) or acknowledgements (`ack` true) among `frames`.
fn pings(frames: &[FrameHead], ack: bool) -> usize {
    frames.iter().filter(|f| f.is_ping(ack)).count()
}

impl Relay {
    /// The keep-alive pings from the proxy and the acknowledgements from the target so far.
    fn pings_so_far(&self) -> [usize; 2] {
        [
            pings(&self.frames[0].borrow(), false),
            pings(&self.frames[1].borrow(), true),
        ]
    }

    /// Waits until `n` more keep-alive pings and acknowledgements than `after` (as
    /// [`pings_so_far`](Self::pings_so_far) counts them) have crossed.
    async fn pinged(&self, n: usize, after: [usize; 2]) {
        let [mut up, mut down] = self.frames.clone();
        within("keep-alive pings and their acknowledgements", async {
            // (Each borrow ends before the next wait: a held borrow blocks the relay.)
            drop(
                up.wait_for(|f| pings(f, false) >= after[0] + n)
                    .await
                    .unwrap(),
            );
            drop(
                down.wait_for(|f| pings(f, true) >= after[1] + n)
                    .await
                    .unwrap(),
            );
        })
        .await
    }
}

#[tokio::test]
async fn h2c_target_keeps_answering_with_keep_alive_pings_across_idle_time() {
    let target = echo_target().await;
    let relay = relay(target.addr()).await;
    // Pings every 100 ms; an acknowledgement may take as long as any wait of the suite,
    // so that a stalled test machine does not read as a dead target.
    let app = alice_app(
        h2c_pinging(Some(Duration::from_millis(100)), LIVENESS),
        &format!("http://{}", relay.addr),
    )
    .await;
    let c = common::client();
    let got = within("first", get_on(&c, &format!("http://{app}/proxy/one"))).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["version"], "HTTP/2.0");

    // Idle, with no request in flight: pings cross the connection and are acknowledged.
    relay.pinged(3, relay.pings_so_far()).await;

    // The same connection still serves requests.
    for path in ["/proxy/two", "/proxy/three"] {
        let got = within("after idle", get_on(&c, &format!("http://{app}{path}"))).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.json()["version"], "HTTP/2.0");
    }
    assert_eq!(relay.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn without_pings_an_idle_h2c_connection_is_silent() {
    // The counterpart of the test above: what moves on an idle connection are the pings.
    let target = echo_target().await;
    let relay = relay(target.addr()).await;
    let app = alice_app(
        h2c_pinging(None, Duration::from_secs(2)),
        &format!("http://{}", relay.addr),
    )
    .await;
    // And a connection that pings every 100 ms, as the clock to watch the silence by.
    let pinging_relay = self::relay(target.addr()).await;
    let pinging_app = alice_app(
        h2c_pinging(Some(Duration::from_millis(100)), LIVENESS),
        &format!("http://{}", pinging_relay.addr),
    )
    .await;
    for app in [app, pinging_app] {
        let got = within(
            "first",
            get_on(&common::client(), &format!("http://{app}/proxy/one")),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    // Settled once each side has acknowledged the other's settings and ended the stream:
    // the last frames an exchange without pings makes cross. (The proxy acknowledges the
    // target's settings after sending its request, so the ack can still be on its way when
    // the response has been read.)
    let [mut up, mut down] = relay.frames.clone();
    let settled = |f: &Vec<FrameHead>| {
        f.iter().any(|h| h.is_settings_ack()) && f.iter().any(|h| h.ends_stream())
    };
    within("the exchange's last frames cross the relay", async {
        up.wait_for(settled).await.unwrap();
        down.wait_for(settled).await.unwrap();
    })
    .await;
    let before = relay.bytes.load(Ordering::SeqCst);
    let seen = [up.borrow().len(), down.borrow().len()];
    // Then nothing moves, for as long as the other connection takes to ping ten times:
    // ten of its 100 ms intervals, by the proxy's own clock.
    pinging_relay.pinged(10, pinging_relay.pings_so_far()).await;
    assert_eq!(
        relay.bytes.load(Ordering::SeqCst),
        before,
        "frames to the target {:?}, to the proxy {:?}",
        &up.borrow()[seen[0]..],
        &down.borrow()[seen[1]..]
    );
}

#[tokio::test]
async fn an_h2c_target_that_stops_answering_pings_is_dropped_and_replaced() {
    let target = echo_target().await;
    let relay = relay(target.addr()).await;
    let client = h2c_pinging(Some(Duration::from_millis(100)), Duration::from_secs(1));
    let app = alice_app(client, &format!("http://{}", relay.addr)).await;
    dead_connection_is_dropped_and_replaced(app, relay).await;
}

#[cfg(feature = "https")]
#[tokio::test]
async fn an_https_h2_target_that_stops_answering_pings_is_dropped_and_replaced() {
    // The same over TLS, where the target chose h2 by ALPN.
    let ca = Ca::new("keep-alive CA");
    let leaf = ca.leaf(&["localhost"], false);
    let target = tls_echo_target(server_config(&leaf, &[b"h2", b"http/1.1"], None)).await;
    let relay = relay(target.addr()).await;
    let client = pinging(
        client_trusting(&ca),
        Some(Duration::from_millis(100)),
        Duration::from_secs(1),
    );
    let app = alice_app(client, &format!("https://localhost:{}", relay.addr.port())).await;
    dead_connection_is_dropped_and_replaced(app, relay).await;
    assert_eq!(target.last().json()["alpn"], "h2");
}

/// One request through `app` to the relay, then the relay's connection goes deaf: the
/// proxy must close it after an unanswered ping and use a new one for the next request.
async fn dead_connection_is_dropped_and_replaced(app: SocketAddr, mut relay: Relay) {
    let c = common::client();
    let got = within("first", get_on(&c, &format!("http://{app}/proxy/one"))).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["version"], "HTTP/2.0");

    // The path to the target dies silently: no ping is acknowledged any more, so the proxy
    // closes the connection (the pool would otherwise keep it for 60 s).
    relay.deafen_open_connections();
    within("the proxy closes the dead connection", relay.closed.recv())
        .await
        .expect("close signal");

    // The next request gets a new connection.
    let got = within("after", get_on(&c, &format!("http://{app}/proxy/two"))).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(relay.conns.load(Ordering::SeqCst), 2);
}
