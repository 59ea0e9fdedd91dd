//! Floors for `benches/load.sh` (`FLOOR=1`): forwarders that do less than any real proxy,
//! to show what bounds the demo's requests per second on this machine. Not a use of the
//! crate, and not a proxy anyone should deploy.
//!
//! - `--mode relay`: bytes copied both ways between each client connection and an upstream
//!   connection of its own (`tokio::io::copy_bidirectional`): no HTTP at all, so only the
//!   kernel's loopback TCP and tokio's event loop. No proxy that parses HTTP can be faster.
//! - `--mode hyper-pool`: hyper's HTTP/1.1 server and hyper-util's pooled legacy client,
//!   the same pieces the crate forwards with, and nothing else: no layer, no token, no
//!   header rules; the request goes out with its headers as they came, `/proxy` cut off.
//! - `--mode hyper-cache`: hyper's HTTP/1.1 server and a `cache` of hyper-util's composable
//!   pool (`client::pool`) per thread over `hyper::client::conn::http1`, the pieces the
//!   crate's client is built from, and nothing else; a connection goes back to its thread's
//!   cache once the response body has been read.
//! - `--mode hyper-sticky`: hyper's HTTP/1.1 server, each client connection tied to one
//!   upstream connection of its own (`hyper::client::conn::http1`): no pool.
//!
//! Each serves on `--listen` (default `127.0.0.1:0`) with one single-threaded runtime per
//! thread (`TOKIO_WORKER_THREADS`, default 1) sharing the port through `SO_REUSEPORT`, as
//! the demo does, prints `listening on http://ADDR` and forwards to `--proxy-url
//! http://HOST:PORT`. Other arguments (the demo's, which `load.sh` passes) are ignored.
//!
//! Build: `cargo build --release --bench floor` (`bench = false`: `cargo bench` does not
//! run it).

#[path = "support/cached.rs"]
mod cached;

use cached::{H1, Held};

use std::{error::Error, future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::{
    body::{Bytes, Incoming},
    service::HttpService,
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tower::{Service, ServiceExt};

type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Clone, Copy)]
enum Mode {
    Relay,
    HyperPool,
    HyperCache,
    HyperSticky,
}

#[derive(Clone)]
struct Upstream {
    /// `host:port`.
    authority: Arc<str>,
    host: HeaderValue,
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut mode = None;
    let mut listen = "127.0.0.1:0".to_owned();
    let mut url = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mode" => {
                mode = Some(match args.next().as_deref() {
                    Some("relay") => Mode::Relay,
                    Some("hyper-pool") => Mode::HyperPool,
                    Some("hyper-cache") => Mode::HyperCache,
                    Some("hyper-sticky") => Mode::HyperSticky,
                    other => return Err(format!("unknown --mode {other:?}").into()),
                })
            }
            "--listen" => listen = args.next().ok_or("--listen needs a value")?,
            "--proxy-url" => url = args.next(),
            _ => {}
        }
    }
    let mode = mode.ok_or("--mode relay|hyper-pool|hyper-cache|hyper-sticky is required")?;
    let url = url.ok_or("--proxy-url http://HOST:PORT is required")?;
    let authority = url
        .strip_prefix("http://")
        .ok_or("--proxy-url must be http://HOST:PORT")?
        .trim_end_matches('/');
    let upstream = Upstream {
        authority: authority.into(),
        host: HeaderValue::from_str(authority)?,
    };
    let threads = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(1);

    let addr: SocketAddr = listen.parse()?;
    let mut sockets = vec![bind(addr)?];
    let addr = sockets[0].local_addr()?;
    for _ in 1..threads {
        sockets.push(bind(addr)?);
    }
    let (up, listening) = std::sync::mpsc::channel();
    let mut workers = Vec::new();
    for socket in sockets {
        let upstream = upstream.clone();
        let up = up.clone();
        workers.push(std::thread::spawn(move || -> std::io::Result<()> {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async move {
                    let listener = socket.listen(1024)?;
                    let _ = up.send(());
                    serve(listener, mode, upstream).await
                })
        }));
    }
    drop(up);
    for _ in 0..threads {
        listening
            .recv()
            .map_err(|_| "a server thread stopped before listening")?;
    }
    println!("listening on http://{addr}");
    for worker in workers {
        worker.join().map_err(|_| "a server thread panicked")??;
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

async fn serve(listener: TcpListener, mode: Mode, upstream: Upstream) -> std::io::Result<()> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let pool: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(http);
    // This thread's cache of upstream connections.
    let authority = upstream.authority.clone();
    let cache = hyper_util::client::pool::cache::builder()
        .executor(TokioExecutor::new())
        .build(tower::service_fn(move |_: ()| {
            let authority = authority.clone();
            Box::pin(async move {
                let up = TcpStream::connect(&*authority).await?;
                up.set_nodelay(true)?;
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await?;
                tokio::spawn(conn);
                Ok::<_, Box<dyn Error + Send + Sync>>(H1(send))
            }) as Pin<Box<dyn Future<Output = _> + Send>>
        }));
    loop {
        let (client, _) = listener.accept().await?;
        client.set_nodelay(true)?;
        let upstream = upstream.clone();
        let pool = pool.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            let _ = match mode {
                Mode::Relay => relay(client, &upstream).await,
                Mode::HyperPool => hyper_pool(client, pool, upstream).await,
                Mode::HyperCache => {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let mut cache = cache.clone();
                        let host = upstream.host.clone();
                        async move {
                            let Some(req) = to_upstream(req, host) else {
                                return Ok::<_, hyper::Error>(bad_gateway());
                            };
                            let Ok(mut conn) = cache.call(()).await else {
                                return Ok(bad_gateway());
                            };
                            // A closed connection fails here and is dropped, not cached again.
                            if conn.ready().await.is_err() {
                                return Ok(bad_gateway());
                            }
                            let response: Result<Response<Incoming>, hyper::Error> =
                                conn.call(req).await;
                            Ok(match response {
                                Ok(res) => res.map(|body| {
                                    Held {
                                        body,
                                        conn: Some(conn),
                                    }
                                    .boxed()
                                }),
                                Err(_) => bad_gateway(),
                            })
                        }
                    });
                    serve_h1(client, service).await
                }
                Mode::HyperSticky => hyper_sticky(client, &upstream).await,
            };
        });
    }
}

async fn relay(mut client: TcpStream, upstream: &Upstream) -> Result<(), Box<dyn Error>> {
    let mut up = TcpStream::connect(&*upstream.authority).await?;
    up.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut up).await?;
    Ok(())
}

/// `/proxy/x?q` → `/x?q`, as the crate maps paths.
fn upstream_path(uri: &Uri) -> &str {
    let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
    match pq.strip_prefix("/proxy") {
        Some("") => "/",
        Some(rest) if rest.starts_with(['/', '?']) => rest,
        _ => pq,
    }
}

/// The request as sent on a connection to the upstream: origin-form path, upstream `Host`;
/// `None` if the path cannot be.
fn to_upstream(req: Request<Incoming>, host: HeaderValue) -> Option<Request<Incoming>> {
    let (mut parts, body) = req.into_parts();
    parts.uri = upstream_path(&parts.uri).parse().ok()?;
    parts.headers.insert(header::HOST, host);
    Some(Request::from_parts(parts, body))
}

fn bad_gateway() -> Response<Body> {
    let mut res = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res
}

async fn hyper_pool(
    client: TcpStream,
    pool: Client<HttpConnector, Incoming>,
    upstream: Upstream,
) -> Result<(), Box<dyn Error>> {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let pool = pool.clone();
        let upstream = upstream.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            let uri = format!("http://{}{}", upstream.authority, upstream_path(&parts.uri));
            let Ok(uri) = uri.parse() else {
                return Ok::<_, hyper::Error>(bad_gateway());
            };
            parts.uri = uri;
            relayed(pool.request(Request::from_parts(parts, body)).await)
        }
    });
    serve_h1(client, service).await
}

async fn hyper_sticky(client: TcpStream, upstream: &Upstream) -> Result<(), Box<dyn Error>> {
    let up = TcpStream::connect(&*upstream.authority).await?;
    up.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(up)).await?;
    tokio::spawn(conn);
    // hyper's HTTP/1.1 server calls the service for one request at a time per connection:
    // the lock is never contended, it only hands the sender to the request in flight.
    let send = Arc::new(tokio::sync::Mutex::new(send));
    let host = upstream.host.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let send = send.clone();
        let host = host.clone();
        async move {
            let Some(req) = to_upstream(req, host) else {
                return Ok::<_, hyper::Error>(bad_gateway());
            };
            let mut send = send.lock().await;
            if send.ready().await.is_err() {
                return Ok(bad_gateway());
            }
            let response = send.send_request(req);
            drop(send);
            relayed(response.await)
        }
    });
    serve_h1(client, service).await
}

/// The target's response as it came, or `502` if there was none.
fn relayed<E>(response: Result<Response<Incoming>, E>) -> Result<Response<Body>, hyper::Error> {
    Ok(match response {
        Ok(res) => res.map(BodyExt::boxed),
        Err(_) => bad_gateway(),
    })
}

/// Serves one client connection with hyper's HTTP/1.1 server.
async fn serve_h1<S>(client: TcpStream, service: S) -> Result<(), Box<dyn Error>>
where
    S: HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn Error + Send + Sync>>,
{
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}
