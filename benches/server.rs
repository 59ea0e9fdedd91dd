//! The server the load scripts measure (`benches/load.sh`, `benches/demo-instructions.sh`,
//! `benches/memory.sh`): the proxy layer tuned as a production server would run it, not an
//! example (see `examples/demo/` for that). `cargo bench` skips it (`bench = false`).
//!
//! ```text
//! cargo build --release --bench server --message-format=json   # the binary's path
//! target/release/deps/server-HASH --listen 127.0.0.1:0 --unsecured --proxy-url http://127.0.0.1:9000
//! ```
//!
//! It prints `listening on http://ADDR` as its first line on stdout once it accepts
//! connections; everything else (the generated key, logs) goes to stderr. Its options are
//! the demo's, with the same meaning: `--listen`, `--keys`, `--unsecured`, `--user`,
//! `--proxy-url`, `--upstream-timeout-ms`, `--upstream-ca`, `--upstream-h2c`,
//! `--header-read-timeout-ms`, `--idle-timeout-ms`, `--release-idle-buffers-ms`,
//! `--shutdown-timeout-ms`, `--forwarded-for`, `--credential-cache-secs`, and `--redis URL`
//! when built with the `redis` feature (then it prints its address once the shared state is read and the target
//! written to Redis if Redis had none). Its only route besides `/proxy` is
//! `GET /.well-known/jwks.json`. Secured, it authenticates as the demo does: Basic with
//! cached credentials and failed sign-ins counted per TCP peer, else a Bearer token the
//! server signed (cached, following the users), else anonymous.
//!
//! How it serves: one single-threaded runtime per server thread (`TOKIO_WORKER_THREADS`,
//! else one per CPU), each with a listening socket of its own (`SO_REUSEPORT`) and a
//! connection pool of its own, all sharing the target handle and the token cache; hyper
//! driven directly, so a request under `/proxy` keeps hyper's body type all the way to the
//! target. Shutdown on SIGTERM or Ctrl-C is graceful, as the demo's; a second signal exits
//! at once (status 143 or 130).

use std::{net::SocketAddr, path::Path as FsPath, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::ConnectInfo,
    http::{HeaderValue, request::Parts},
};
use clap::Parser;
use signals::Signals;
use tokio::net::TcpListener;
use tower_identity_proxy::{
    ProxyHandle, ProxyLayer, Target,
    client::{ClientBuilder, ProxyClient},
    identity::{
        Anonymous, BasicAuth, BearerJwt, CredentialStore, ExtractResult, IdentityExtractor, Or,
    },
    jwt::{CachingSigner, KeyPair, KeySet, KeySetSigner, KeySigner},
    proxy::Tunnels,
};

/// A boxed error for start-up failures.
type Error = Box<dyn std::error::Error + Send + Sync>;

// The demo's Prometheus recorder and `/metrics` listener, the same code.
#[path = "../examples/demo/metrics.rs"]
mod metrics;
// Ctrl-C and SIGTERM, as the demo takes them.
#[path = "../examples/demo/signals.rs"]
mod signals;
// One client connection, served as the demo serves it: the same code.
#[path = "../examples/demo/connection.rs"]
mod connection;
// The options it shares with the demo.
#[path = "../examples/demo/args.rs"]
mod args;

/// The server's command line (the demo's options).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "server",
    about = "The tuned proxy server the load scripts measure"
)]
struct Options {
    #[command(flatten)]
    server: args::ServerArgs,

    /// How long a verified Basic user name and password are recognised without the slow
    /// hash, in seconds; 0 turns the cache off.
    #[arg(long, value_name = "N", default_value_t = 300)]
    credential_cache_secs: u64,

    /// Share the target, the users and the public keys with the replicas using this Redis
    /// (feature `redis`).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,

    /// Install a Prometheus recorder and serve `GET /metrics` on a listener of its own at
    /// this address (as the demo does): what recording the metrics costs under load.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

/// Who the caller is, for the app's routes and for the proxy alike.
///
/// An extractor written by the app: an enum over the two security modes.
#[derive(Clone, Debug)]
enum AppIdentity {
    /// Basic, else a Bearer JWT this app signed, else `anonymousUser` with `ROLE_ANONYMOUS`.
    Secured(Or<Or<BasicAuth, BearerJwt>, Anonymous>),
    /// Every caller is `anonymousUser` with `ROLE_ADMIN`, `ROLE_ANONYMOUS`, `ROLE_USER`.
    Unsecured(Anonymous),
}

impl IdentityExtractor for AppIdentity {
    async fn extract(&self, parts: &Parts) -> ExtractResult {
        match self {
            Self::Secured(e) => e.extract(parts).await,
            Self::Unsecured(e) => e.extract(parts).await,
        }
    }

    fn challenges(&self) -> Vec<HeaderValue> {
        match self {
            Self::Secured(e) => e.challenges(),
            Self::Unsecured(e) => e.challenges(),
        }
    }
}

/// The server's app, built but not yet listening.
#[derive(Debug)]
struct App {
    /// The same app again for each server thread of [`serve`].
    worker_app: WorkerApp,
    /// How long [`serve`] waits for a client.
    timeouts: connection::Timeouts,
    /// Whether [`serve`] puts each connection's peer address into its requests, as axum's
    /// `ConnectInfo<SocketAddr>` (`--forwarded-for` and the count of failed sign-ins per
    /// client address read it there): on unless `--unsecured` without `--forwarded-for`.
    /// Off, requests carry no extension for it (inserting one allocates the request's
    /// extension map).
    connect_info: bool,
    /// The shared state with `--redis`, kept for as long as the server runs.
    #[cfg(feature = "redis")]
    _shared: Option<tower_identity_proxy::state::SharedState>,
}

/// Builds the app again with a connection pool to the target of its own, and a set of
/// WebSocket tunnels of its own (to wait for on shutdown); the target handle, the token
/// cache and the users stay shared with every other copy.
#[derive(Clone)]
struct WorkerApp(Arc<dyn Fn() -> Result<(WorkerService, Tunnels), Error> + Send + Sync>);

/// What each server thread of [`serve`] serves: the proxy layer around the whole router
/// (`ProxyLayer::layer(router)`, as `ServiceBuilder` composes), so a request under `/proxy`
/// goes straight to the proxy, before any routing.
type WorkerService = tower_identity_proxy::Proxy<Router, AppIdentity, CachingSigner<KeySetSigner>>;

impl std::fmt::Debug for WorkerApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkerApp")
    }
}

/// Reads the key pair from `DIR/private-key.pem` and `DIR/public-key.pem`.
///
/// # Errors
///
/// When a file cannot be read or the keys are invalid or do not match.
fn load_keys(dir: &FsPath) -> Result<KeyPair, Error> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let private = read("private-key.pem")?;
    let public = read("public-key.pem")?;
    Ok(KeyPair::from_pem(&private, Some(&public))?)
}

/// Builds the app from parsed options: keys, users, proxy layer and routes.
///
/// # Errors
///
/// Invalid keys, users or initial target.
async fn build(opts: &Options) -> Result<App, Error> {
    let keys = match &opts.server.keys {
        Some(dir) => load_keys(dir)?,
        None => {
            let keys = tokio::task::spawn_blocking(|| KeyPair::generate_rsa(3072)).await??;
            eprintln!(
                "no --keys DIR given: generated a fresh RSA key pair (kid {}); tokens signed \
                 now will not verify after a restart. Targets verify them with this public key:\n{}",
                keys.kid(),
                keys.public_key_pem()
            );
            keys
        }
    };

    let users = CredentialStore::new();
    for user in &opts.server.users {
        let (store, user) = (users.clone(), user.clone());
        // Hashing a password is deliberately slow: keep it off the async workers.
        tokio::task::spawn_blocking(move || store.insert(&user.name, &user.password, user.roles))
            .await??;
    }

    // One active key, rotated at run time; Bearer tokens verify against every published key.
    let key_set = KeySet::new(KeySigner::new(keys.clone()));
    let identity = if opts.server.unsecured {
        AppIdentity::Unsecured(Anonymous::unsecured())
    } else {
        let cache = Duration::from_secs(opts.credential_cache_secs);
        AppIdentity::Secured(
            BasicAuth::new(users.clone())
                .credential_cache(cache, 1024)
                // The TCP peer, as `serve` puts it in each request.
                .client_address(|parts| {
                    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
                    Some(peer.ip().to_canonical())
                })
                .or(BearerJwt::new(key_set.verifier()).users(users.clone()))
                .or_anonymous(),
        )
    };

    let handle = match &opts.server.proxy_url {
        Some(url) if opts.redis.is_none() => ProxyHandle::with_target(Target::parse(url)?),
        _ => ProxyHandle::new(),
    };
    let mut proxy = ProxyLayer::new(key_set.signer())
        .with_identity(identity.clone())
        .upstream_timeout(Duration::from_millis(opts.server.upstream_timeout_ms))
        .client(upstream_client(opts)?)
        .handle(handle.clone());
    #[cfg(feature = "redis")]
    let shared = match &opts.redis {
        Some(url) => {
            let (shared, pseudonym) = join_redis(url, opts, handle, users, key_set.clone()).await?;
            proxy = proxy.via_pseudonym(pseudonym);
            Some(shared)
        }
        None => None,
    };
    #[cfg(not(feature = "redis"))]
    if opts.redis.is_some() {
        return Err("--redis needs the `redis` feature".into());
    }
    if opts.server.forwarded_for {
        // The TCP peer, as `serve` (and `start`) put it in each request.
        proxy = proxy.forwarded_for(|parts| {
            let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
            Some(peer.ip().to_canonical())
        });
    }

    let worker_app = {
        let opts = opts.clone();
        WorkerApp(Arc::new(move || {
            let tunnels = Tunnels::new();
            let proxy = proxy
                .clone()
                .client(upstream_client(&opts)?)
                .tunnels(tunnels.clone());
            Ok((tower::Layer::layer(&proxy, router(&key_set)), tunnels))
        }))
    };
    Ok(App {
        worker_app,
        timeouts: opts.server.timeouts.timeouts(),
        connect_info: opts.server.reads_peer(),
        #[cfg(feature = "redis")]
        _shared: shared,
    })
}

/// `--redis`: joins the replicas sharing that Redis, and waits (30 s at most) until the
/// state is read, the command-line users and target are written if Redis lacks them, and
/// the key signs.
#[cfg(feature = "redis")]
async fn join_redis(
    url: &str,
    opts: &Options,
    handle: ProxyHandle,
    users: CredentialStore,
    keys: KeySet,
) -> Result<
    (
        tower_identity_proxy::state::SharedState,
        tower_identity_proxy::proxy::Pseudonym,
    ),
    Error,
> {
    use tower_identity_proxy::state::{RedisStore, SharedState};
    let store = RedisStore::open(url)?;
    let pseudonym = store.pseudonym();
    let shared = SharedState::new(store, handle, users, keys);
    let ready = async {
        while !shared.is_synced() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for user in &opts.server.users {
            shared
                .put_user_if_absent(&user.name, &user.password, user.roles.clone())
                .await?;
        }
        if let Some(target) = &opts.server.proxy_url {
            shared.set_target_if_absent(Some(target)).await?;
        }
        while !shared.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<_, Error>(())
    };
    tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .map_err(|_| format!("{url}: the shared state was not ready within 30 s"))??;
    Ok((shared, pseudonym))
}

/// The client that reaches the target: `--upstream-ca`, `--upstream-h2c`.
///
/// # Errors
///
/// When the CA file cannot be read or holds no certificate.
fn upstream_client(opts: &Options) -> Result<ProxyClient, Error> {
    let client = ProxyClient::builder().http2_prior_knowledge(opts.server.upstream_h2c);
    let client = match &opts.server.upstream_ca {
        None => client,
        Some(file) => {
            let pem =
                std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            trust_pem(client, &pem).map_err(|e| format!("{}: {e}", file.display()))?
        }
    };
    Ok(client.build()?)
}

#[cfg(feature = "https")]
fn trust_pem(client: ClientBuilder, pem: &[u8]) -> Result<ClientBuilder, Error> {
    Ok(client.add_root_certificates_pem(pem)?)
}

#[cfg(not(feature = "https"))]
fn trust_pem(_: ClientBuilder, _: &[u8]) -> Result<ClientBuilder, Error> {
    Err("--upstream-ca needs the `https` feature".into())
}

/// The app behind the proxy layer: only the public JWKS (everything else is `404`).
fn router(key_set: &KeySet) -> Router {
    Router::new().route_service("/.well-known/jwks.json", key_set.jwks())
}

/// Serves the app on `listen` with `threads` server threads until `shutdown` resolves (or
/// a thread fails); `ready` is called with the bound address once every thread accepts
/// connections.
///
/// Each thread runs a single-threaded runtime with a listening socket of its own
/// (`SO_REUSEPORT`: the kernel spreads connections over them) and an app of its own, so a
/// connection pool of its own: as in nginx's worker processes, a request and its exchange
/// with the target stay on the thread that accepted the connection, and no task is ever
/// woken on another thread. (A work-stealing runtime whose workers share one pool hands
/// each request between threads several times.) Without `SO_REUSEPORT` (not unix), one
/// thread serves.
///
/// `shutdown` is polled on the calling thread (in a runtime of its own, with I/O and
/// timers). Once it resolves, the shutdown is graceful: every thread closes its listening
/// socket, so new connections are refused; every open connection is shut down gracefully
/// (HTTP/1.1: closed after the response in progress, at once when idle; HTTP/2: `GOAWAY`,
/// the streams in flight finish), and WebSocket tunnels keep running; `serve` returns once
/// they are all closed, or once `app.timeouts.shutdown` has passed, dropping those still
/// open ([`Stopped::cut`]).
///
/// # Errors
///
/// An address that cannot be bound, or a thread whose server fails.
fn serve(
    server: &App,
    listen: &str,
    threads: usize,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<Stopped, Error> {
    use std::net::ToSocketAddrs;
    let cannot = |e: std::io::Error| format!("cannot listen on {listen}: {e}");
    let addr = listen
        .to_socket_addrs()
        .map_err(cannot)?
        .next()
        .ok_or_else(|| format!("cannot listen on {listen}: no address"))?;
    let socket = |addr: SocketAddr| -> std::io::Result<tokio::net::TcpSocket> {
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        #[cfg(unix)]
        socket.set_reuseport(true)?;
        socket.bind(addr)?;
        Ok(socket)
    };
    let threads = if cfg!(unix) { threads.max(1) } else { 1 };
    let first = socket(addr).map_err(cannot)?;
    // Port 0: the others bind to the port the first one got.
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..threads {
        sockets.push(socket(addr).map_err(cannot)?);
    }
    // Waits for `shutdown` on this thread.
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // `true` once the server stops; a worker also stops if `stop` is dropped (an error
    // return below).
    let (stop, stopping) = tokio::sync::watch::channel(false);
    // Told when a worker thread ends, which before the shutdown means it failed.
    let (exited, mut worker_exited) = tokio::sync::mpsc::unbounded_channel();
    let (up, listening) = std::sync::mpsc::channel();
    let mut workers = Vec::with_capacity(threads);
    for (i, socket) in sockets.into_iter().enumerate() {
        let (app, tunnels) = (server.worker_app.0)()?;
        let (timeouts, connect_info) = (server.timeouts, server.connect_info);
        let (up, stopping, exited) = (up.clone(), stopping.clone(), Exited(exited.clone()));
        let worker = std::thread::Builder::new()
            .name(format!("server-{i}"))
            .spawn(move || -> std::io::Result<usize> {
                let _exited = exited;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = match socket.listen(1024) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = up.send(Err(e.to_string()));
                            return Err(e);
                        }
                    };
                    let _ = up.send(Ok(()));
                    let worker = Worker {
                        app,
                        tunnels,
                        timeouts,
                        connect_info,
                    };
                    Ok(accept_loop(listener, worker, stopping).await)
                })
                // Dropping the runtime drops the connections cut by the grace period.
            })?;
        workers.push(worker);
    }
    drop((up, exited, stopping));
    for _ in 0..threads {
        listening
            .recv()
            .map_err(|_| "a server thread stopped before listening")?
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    }
    ready(addr);
    control.block_on(async {
        tokio::select! {
            () = shutdown => tracing::info!(
                grace_ms = server.timeouts.shutdown.as_millis(),
                "shutting down: no new connections, open ones close once their requests are served"
            ),
            _ = worker_exited.recv() => tracing::error!("a server thread stopped: shutting down"),
        }
    });
    let _ = stop.send(true);
    let mut cut = 0;
    let mut failure: Option<Error> = None;
    for worker in workers {
        match worker.join() {
            Ok(Ok(n)) => cut += n,
            Ok(Err(e)) => failure = failure.or_else(|| Some(e.into())),
            Err(_) => failure = failure.or_else(|| Some("a server thread panicked".into())),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if cut > 0 {
        tracing::warn!(
            cut,
            grace_ms = server.timeouts.shutdown.as_millis(),
            "the shutdown grace period ended: dropped {cut} connection(s) still open"
        );
    }
    tracing::info!("stopped");
    Ok(Stopped { cut })
}

/// How [`serve`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stopped {
    /// The connections still open when the shutdown's grace period ended, dropped:
    /// HTTP connections and WebSocket tunnels.
    cut: usize,
}

/// Tells [`serve`] that its worker thread ended, however it did (a panic included).
struct Exited(tokio::sync::mpsc::UnboundedSender<()>);

impl Drop for Exited {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Resolves once [`serve`] says to stop, or is gone.
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Serves every connection `listener` accepts with `app`: HTTP/1.1 or HTTP/2 (h2c), with
/// upgrades, `TCP_NODELAY` on, an HTTP/1.1 client that takes longer than
/// `timeouts.header_read` to send a request's headers disconnected, and a connection
/// without a request in flight for `timeouts.idle` closed, an idle HTTP/1.1 connection's
/// buffers released after `timeouts.release` (see `connection`). hyper is driven directly,
/// without `axum::serve`: a request under `/proxy` keeps hyper's own body type all the way
/// to the target, instead of being boxed into axum's `Body` first. With `connect_info`,
/// each request carries its connection's peer address (axum's `ConnectInfo`).
///
/// Once `stopping` says so, it closes the listener, lets every connection shut down
/// gracefully and waits for them and for the WebSocket tunnels, at most
/// `timeouts.shutdown`: it returns how many of either were still open then (the caller
/// drops the connections with the runtime; the tunnels are closed).
async fn accept_loop(
    listener: TcpListener,
    worker: Worker,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> usize {
    let Worker {
        app,
        tunnels,
        timeouts,
        connect_info,
    } = worker;
    let settings = connection::Settings::new(timeouts);
    // The open connections, to wait for (and count) on shutdown.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(&mut stopping) => break,
            // Forgets the connections that ended.
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if is_connection_error(&e) => continue,
            // Out of file descriptors and the like: wait instead of spinning, as axum::serve.
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        connections.spawn(connection::serve(
            tcp,
            connect_info.then_some(peer),
            app.clone(),
            Arc::clone(&settings),
            stopping.clone(),
        ));
    }
    // Closing the socket: new connections are refused (those in its backlog are reset).
    drop(listener);
    // A WebSocket is no longer a connection of hyper's once upgraded: its tunnel is waited
    // for apart, within the same grace period.
    let drained = tokio::time::timeout(timeouts.shutdown, async {
        while connections.join_next().await.is_some() {}
        tunnels.ended().await;
    })
    .await;
    if drained.is_ok() {
        return 0;
    }
    let cut_tunnels = tunnels.close();
    // The tunnels' tasks end (closing both their connections) once polled: before this
    // thread drops its runtime, so each end is logged.
    let _ = tokio::time::timeout(Duration::from_secs(1), tunnels.ended()).await;
    while connections.try_join_next().is_some() {}
    connections.len() + cut_tunnels
}

/// What one server thread of [`serve`] serves, and how.
struct Worker {
    app: WorkerService,
    /// The tunnels `app` opens.
    tunnels: Tunnels,
    timeouts: connection::Timeouts,
    connect_info: bool,
}

/// Errors of one connection that `accept` reports, which say nothing of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// The number of server threads: `TOKIO_WORKER_THREADS` if set, else one per CPU this
/// process may run on.
fn server_threads() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
        .unwrap_or(1)
}

/// Starts the server, writes `listening on http://ADDR` to `out` once it accepts connections
/// (its first line on stdout), then serves until SIGTERM or Ctrl-C (SIGINT).
///
/// It serves with [`serve`]: one single-threaded runtime per server thread
/// (`TOKIO_WORKER_THREADS`, else one per CPU this process may use); the caller's runtime
/// does the start-up work (key generation, password hashing) and waits for the signals.
/// The first signal shuts the server down gracefully (see [`serve`]; so does dropping this
/// future); `run` returns once it has stopped. A second one exits the process at once, with
/// status 130 (SIGINT) or 143 (SIGTERM).
///
/// # Errors
///
/// Invalid options, an address that cannot be bound, a signal handler that cannot be
/// installed, or a failing server.
async fn run(opts: &Options, mut out: impl std::io::Write + Send + 'static) -> Result<(), Error> {
    // First: a signal during start-up then shuts down instead of killing the process.
    let mut signals = Signals::new()?;
    // Before the app is built, so that everything it records is kept.
    if let Some(listen) = &opts.metrics_listen {
        let addr = metrics::serve(listen).await?;
        tracing::info!("metrics on http://{addr}/metrics");
    }
    let app = build(opts).await?;
    let listen = opts.server.listen.clone();
    let (begin_shutdown, shutdown) = tokio::sync::oneshot::channel::<()>();
    let (done, mut finished) = tokio::sync::oneshot::channel();
    // A thread of its own, not a blocking task: dropping the caller's runtime must not wait
    // for the server.
    std::thread::Builder::new()
        .name("server".into())
        .spawn(move || {
            let ready = |addr| {
                let _ = writeln!(out, "listening on http://{addr}");
                let _ = out.flush();
            };
            // A dropped sender (the caller gone) shuts down too.
            let shutdown = async move {
                let _ = shutdown.await;
            };
            let _ = done.send(serve(&app, &listen, server_threads(), ready, shutdown));
        })?;
    let outcome = |res: Result<Result<Stopped, Error>, _>| {
        res.map_err(|_| "the server thread stopped unexpectedly")?
            .map(drop)
    };
    tokio::select! {
        res = &mut finished => return outcome(res),
        (signal, _) = signals.next() => {
            tracing::info!(signal, "shutdown signal received");
            let _ = begin_shutdown.send(());
        }
    }
    tokio::select! {
        res = finished => outcome(res),
        (signal, status) = signals.next() => {
            tracing::warn!(signal, "second shutdown signal: exiting at once");
            std::process::exit(status)
        }
    }
}

// The start-up runtime: it builds the app and waits; `run` serves on runtimes of its own.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tower_identity_proxy=info,server=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: a log captured to a file or a journal stays plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    run(&Options::parse(), std::io::stdout()).await
}
