//! The whole feature in one axum app: a `/proxy` that forwards to a target chosen at run
//! time, with the caller's identity as a signed JWT, next to the app's own routes.
//!
//! Run it, then walk through the steps of the README:
//!
//! ```text
//! cargo run --example demo -- --user admin:admin-password:ROLE_ADMIN,ROLE_USER
//! cargo run --example demo -- --help
//! ```
//!
//! It prints `listening on http://ADDR` as its first line on stdout once it accepts
//! connections; everything else (the generated key, logs) goes to stderr.
//!
//! Options:
//! - `--listen ADDR`: where to listen. Default `127.0.0.1:8080`; port 0 picks a free port.
//! - `--keys DIR`: read `DIR/private-key.pem` and `DIR/public-key.pem` (PKCS#1 or PKCS#8
//!   private key, SPKI public key). Without it a fresh RSA key pair is generated (and said
//!   so on stderr, with its public key), so tokens do not survive a restart.
//! - `--unsecured`: every caller is `anonymousUser` with `ROLE_ADMIN`, `ROLE_ANONYMOUS` and
//!   `ROLE_USER`, as a session without security.
//! - `--user NAME:PASSWORD:ROLE,ROLE` (repeatable): a Basic-authentication user.
//! - `--proxy-url URL`: the initial target. Default: none, the proxy is disabled.
//! - `--upstream-timeout-ms N`: how long the target may take to answer (`504` after).
//! - `--upstream-ca FILE`: also trust the root certificates in this PEM file for https
//!   targets (a private CA); the webpki roots stay trusted.
//! - `--upstream-h2c`: speak HTTP/2 with prior knowledge to plain-http targets (h2c), as
//!   gRPC backends need.
//! - `--header-read-timeout-ms N` (default 30 000): how long a client may take to send a
//!   request's headers, and a new connection its first request (slowloris).
//! - `--idle-timeout-ms N` (default 75 000, as nginx's `keepalive_timeout`): a connection
//!   with no request in flight that long is closed gracefully (h2c: `GOAWAY`).
//! - `--shutdown-timeout-ms N` (default 30 000, as orchestrators' usual grace period): how
//!   long a shutdown waits for the requests in flight (see below).
//! - `--forwarded-for`: the target gets `X-Forwarded-For` with the client's address (the
//!   TCP peer's IP; the client's own `X-Forwarded-For` is never forwarded). Off by default.
//! - `--redis redis://HOST:PORT[/DB]` (feature `redis`): join the replicas sharing this
//!   Redis: the target, the users (password hashes) and every replica's public key are
//!   shared; `--user` and `--proxy-url` are written only if Redis has no such user or
//!   target yet. Changes while Redis is unreachable answer `503` and change nothing.
//! - `--rotation-delay-secs N` (default 95): how long a new key is published before it
//!   signs (a rotation, or a replica joining others).
//! - `--jwks-max-age-secs N` (default 60): the JWK Set's `Cache-Control: max-age`.
//!
//! Shutdown: on SIGTERM or Ctrl-C (SIGINT) the demo shuts down gracefully, as nginx's quit
//! signal: every server thread closes its listening socket (new connections are refused),
//! every open connection is shut down gracefully (HTTP/1.1: closed after the response in
//! progress, at once when idle; h2c: `GOAWAY`, the streams in flight finish), and once the
//! requests in flight have been served to their end (streaming responses included) the
//! demo exits with status 0. Connections still open `--shutdown-timeout-ms` after the
//! signal are dropped, with a warning saying how many, and the demo exits (still 0). A
//! second SIGTERM or Ctrl-C exits at once (status 143 or 130).
//!
//! Routes:
//! - `GET /api/whoami` → `{"name": …, "roles": [sorted]}` for callers holding `ROLE_USER`
//!   (`403` otherwise, `401` for bad credentials);
//! - `GET /admin/proxy` → `{"url": "…" | null}`; `PUT /admin/proxy` with the same body sets
//!   or disables the target (`400` with the reason for an invalid URL);
//! - `PUT /admin/users/{name}` with `{"password": "…", "roles": […]}` adds or updates a user;
//!   `DELETE /admin/users/{name}` removes one;
//! - `POST /admin/keys/rotate` publishes a freshly generated key of the same type and
//!   answers `{"kid": "<the new kid>", "signs_from": <Unix time>, "signs_in_seconds": N,
//!   "published": [every published kid]}`: it signs after the rotation delay. The previous
//!   key stays published until the tokens it signed have expired. `/admin/*` needs
//!   `ROLE_ADMIN`;
//! - `GET /ready` (no authentication): `200` once this replica can serve `/proxy` without
//!   a failed request (shared state read, its signing key published for the rotation
//!   delay), `503` before; a readiness probe;
//! - `GET /.well-known/jwks.json`: the public keys as a JWK Set (no authentication), for
//!   targets such as `cargo run --example target -- --jwks http://ADDR/.well-known/jwks.json`;
//! - `/proxy` and `/proxy/*`: the [`ProxyLayer`].
//!
//! Who the caller is comes from the same extractor for the app's routes and for the proxy:
//! HTTP Basic against the users, else a Bearer JWT this app signed (what a target receives
//! and may send back, as the document's `session` mode does), else anonymous.

#[path = "support/replicas.rs"]
pub mod replicas;

use std::{
    net::SocketAddr,
    path::{Path as FsPath, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    Extension, Json, Router,
    extract::{ConnectInfo, Path, Request, State},
    http::{HeaderValue, StatusCode, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tower_identity_proxy::{
    Algorithm, Anonymous, BasicAuth, BearerJwt, CachingSigner, CredentialStore, Curve, Identity,
    IdentityExtractor, KeyPair, KeySet, KeySetSigner, KeySigner, Or, ProxyClient, ProxyHandle,
    ProxyLayer, Tunnels, client::ClientBuilder, identity::ExtractResult,
};

/// A boxed error for the demo's start-up failures.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The demo's command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "demo",
    about = "An axum app whose /proxy forwards to a run-time target with the caller's identity as a signed JWT"
)]
pub struct Options {
    /// Where to listen; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// A directory holding `private-key.pem` and `public-key.pem`; without it a key pair is
    /// generated.
    #[arg(long, value_name = "DIR")]
    pub keys: Option<PathBuf>,

    /// Every caller is anonymous with ROLE_ADMIN, ROLE_ANONYMOUS and ROLE_USER.
    #[arg(long)]
    pub unsecured: bool,

    /// A Basic-authentication user (repeatable).
    #[arg(long = "user", value_name = "NAME:PASSWORD:ROLE,ROLE", value_parser = parse_user)]
    pub users: Vec<UserSpec>,

    /// The initial proxy target; without it the proxy is disabled.
    #[arg(long, value_name = "URL")]
    pub proxy_url: Option<String>,

    /// How long the target may take to send its response headers, in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    pub upstream_timeout_ms: u64,

    /// Also trust the root certificates in this PEM file for https targets (a private CA).
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,

    /// Speak HTTP/2 with prior knowledge (h2c) to plain-http targets, as gRPC backends need.
    #[arg(long)]
    pub upstream_h2c: bool,

    /// How long a client may take to send a request's headers, in milliseconds: a new
    /// connection (HTTP/1.1 or h2c) must deliver its first request within it, and an
    /// HTTP/1.1 connection each following request's headers, counted from the moment the
    /// server waits for them (so also how long it may stay idle). A client slower than that
    /// (slowloris) is disconnected.
    #[arg(long, value_name = "N", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_ms: u64,

    /// How long a connection may stay open with no request in flight, in milliseconds,
    /// before the server closes it gracefully (an HTTP/2 `GOAWAY`, or the end of an
    /// HTTP/1.1 keep-alive connection, as nginx's `keepalive_timeout`). A request whose
    /// response is still streaming keeps its connection open.
    #[arg(long, value_name = "N", default_value_t = 75_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,

    /// How long a shutdown (SIGTERM, Ctrl-C) waits for the requests in flight, in
    /// milliseconds: connections still open after it are dropped. A second signal exits at
    /// once.
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    pub shutdown_timeout_ms: u64,

    /// Send the target `X-Forwarded-For` with the client's address (the TCP peer's IP),
    /// never the client's own `X-Forwarded-For`.
    #[arg(long)]
    pub forwarded_for: bool,

    /// Share the target, users and public keys with the replicas using this Redis
    /// (`redis://HOST:PORT[/DB]`; feature `redis`).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,

    /// How long a new key is published before it signs, in seconds.
    #[arg(long, value_name = "N", default_value_t = 95)]
    pub rotation_delay_secs: u64,

    /// The JWK Set's `Cache-Control: max-age`, in seconds.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub jwks_max_age_secs: u64,
}

/// A `--user NAME:PASSWORD:ROLE,ROLE` option.
#[derive(Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: String,
    /// The roles.
    pub roles: Vec<String>,
}

impl std::fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSpec")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

fn parse_user(s: &str) -> Result<UserSpec, String> {
    let (name, rest) = s
        .split_once(':')
        .ok_or("expected NAME:PASSWORD:ROLE,ROLE")?;
    // The password may contain ':'; the roles are after the last one.
    let (password, roles) = rest
        .rsplit_once(':')
        .ok_or("expected NAME:PASSWORD:ROLE,ROLE")?;
    if name.is_empty() {
        return Err("the user name is empty".into());
    }
    let roles = roles
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(UserSpec {
        name: name.to_owned(),
        password: password.to_owned(),
        roles,
    })
}

/// Who the caller is, for the app's routes and for the proxy alike.
///
/// An extractor written by the app: an enum over the two security modes.
#[derive(Clone, Debug)]
pub enum DemoIdentity {
    /// Basic, else a Bearer JWT this app signed, else `anonymousUser` with `ROLE_ANONYMOUS`.
    Secured(Or<Or<BasicAuth, BearerJwt>, Anonymous>),
    /// Every caller is `anonymousUser` with `ROLE_ADMIN`, `ROLE_ANONYMOUS`, `ROLE_USER`.
    Unsecured(Anonymous),
}

impl IdentityExtractor for DemoIdentity {
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

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Changes the proxy target.
    pub handle: ProxyHandle,
    /// The Basic-authentication users.
    pub users: CredentialStore,
    /// The key pair tokens were first signed with.
    pub keys: KeyPair,
    /// The signing key and the published keys, rotated by `POST /admin/keys/rotate`.
    pub key_set: KeySet,
    /// The identity extractor of the app's routes and of the proxy.
    pub identity: DemoIdentity,
    /// Changes the target, users and keys on every replica; readiness.
    pub replicas: replicas::Replicas,
}

/// The demo app, built but not yet listening.
#[derive(Debug)]
pub struct Demo {
    /// The router: the app's routes inside the proxy layer.
    pub router: Router,
    /// The shared state (target handle, users, keys).
    pub state: AppState,
    /// The same app again for each server thread of [`serve`].
    pub worker_app: WorkerApp,
    /// How long [`serve`] waits for a client.
    pub timeouts: Timeouts,
    /// Whether [`serve`] puts each connection's peer address into its requests, as axum's
    /// `ConnectInfo<SocketAddr>` (`--forwarded-for` reads it there). Off, requests carry no
    /// extension for it (inserting one allocates the request's extension map).
    pub connect_info: bool,
}

/// Builds the app again with a connection pool to the target of its own, and a set of
/// WebSocket tunnels of its own (to wait for on shutdown); the target handle, the token
/// cache and the users stay shared with every other copy.
#[derive(Clone)]
pub struct WorkerApp(Arc<dyn Fn() -> Result<(WorkerService, Tunnels), Error> + Send + Sync>);

/// What each server thread of [`serve`] serves: the proxy layer around the whole router
/// (`ProxyLayer::layer(router)`, as `ServiceBuilder` composes), so a request under `/proxy`
/// goes straight to the proxy, before any routing.
pub type WorkerService =
    tower_identity_proxy::Proxy<Router, DemoIdentity, CachingSigner<KeySetSigner>>;

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
pub fn load_keys(dir: &FsPath) -> Result<KeyPair, Error> {
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
pub async fn build(opts: &Options) -> Result<Demo, Error> {
    let keys = match &opts.keys {
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

    let store = replicas::Store::from_options(opts)?;
    let users = CredentialStore::new();
    // With a shared store, the users come from it (and are written to it if absent).
    for user in opts.users.iter().filter(|_| !store.is_shared()) {
        let (store, user) = (users.clone(), user.clone());
        // Hashing a password is deliberately slow: keep it off the async workers.
        tokio::task::spawn_blocking(move || store.insert(&user.name, &user.password, user.roles))
            .await??;
    }

    // One active key, rotated at run time; Bearer tokens verify against every published key.
    let key_set = KeySet::new(KeySigner::new(keys.clone()))
        .rotation_delay(Duration::from_secs(opts.rotation_delay_secs));
    let identity = if opts.unsecured {
        DemoIdentity::Unsecured(Anonymous::unsecured())
    } else {
        DemoIdentity::Secured(
            BasicAuth::new(users.clone())
                .or(BearerJwt::new(key_set.verifier()))
                .or_anonymous(),
        )
    };

    let mut proxy = ProxyLayer::new(key_set.signer())
        .identity(identity.clone())
        .upstream_timeout(Duration::from_millis(opts.upstream_timeout_ms))
        .client(upstream_client(opts)?);
    if let Some(url) = opts.proxy_url.as_ref().filter(|_| !store.is_shared()) {
        proxy = proxy.target(url)?;
    }
    if let Some(pseudonym) = store.pseudonym() {
        proxy = proxy.via_pseudonym(&pseudonym)?;
    }
    if opts.forwarded_for {
        // The TCP peer, as `serve` (and `start`) put it in each request.
        proxy = proxy.forwarded_for(|parts| {
            let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
            Some(peer.ip().to_canonical())
        });
    }

    let replicas =
        replicas::Replicas::join(store, opts, proxy.handle(), users.clone(), key_set.clone());
    let state = AppState {
        handle: proxy.handle(),
        users,
        keys,
        key_set,
        identity,
        replicas,
    };
    let app = router(state.clone()).layer(proxy.clone());
    let worker_app = {
        let (state, opts) = (state.clone(), opts.clone());
        WorkerApp(Arc::new(move || {
            let proxy = proxy
                .clone()
                .client(upstream_client(&opts)?)
                .with_tunnels(Tunnels::new());
            let tunnels = proxy.tunnels();
            Ok((tower::Layer::layer(&proxy, router(state.clone())), tunnels))
        }))
    };
    Ok(Demo {
        router: app,
        state,
        worker_app,
        timeouts: Timeouts {
            header_read: Duration::from_millis(opts.header_read_timeout_ms),
            idle: Duration::from_millis(opts.idle_timeout_ms),
            shutdown: Duration::from_millis(opts.shutdown_timeout_ms),
        },
        connect_info: opts.forwarded_for,
    })
}

/// The client that reaches the target: `--upstream-ca`, `--upstream-h2c`.
///
/// # Errors
///
/// When the CA file cannot be read or holds no certificate.
pub fn upstream_client(opts: &Options) -> Result<ProxyClient, Error> {
    let client = ProxyClient::builder().http2_prior_knowledge(opts.upstream_h2c);
    let client = match &opts.upstream_ca {
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

/// The app's own routes, each behind the identity middleware.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/whoami", get(whoami))
        .route("/admin/proxy", get(get_proxy).put(put_proxy))
        .route(
            "/admin/users/{name}",
            axum::routing::put(put_user).delete(delete_user),
        )
        .route("/admin/keys/rotate", axum::routing::post(rotate_keys))
        .route_layer(middleware::from_fn_with_state(
            state.identity.clone(),
            authenticate,
        ))
        // Public: targets fetch it without credentials.
        .route_service(
            "/.well-known/jwks.json",
            state.key_set.jwks().max_age(state.replicas.jwks_max_age),
        )
        .route(
            "/ready",
            get(replicas::ready).with_state(state.replicas.clone()),
        )
        .with_state(state)
}

/// A running demo.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The shared state (target handle, users, keys).
    pub state: AppState,
    /// The server task.
    pub task: JoinHandle<std::io::Result<()>>,
}

/// Builds the app, binds `--listen` and serves in a background task.
///
/// # Errors
///
/// Invalid options or an address that cannot be bound.
pub async fn start(opts: &Options) -> Result<Running, Error> {
    let demo = build(opts).await?;
    let listener = TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let addr = listener.local_addr()?;
    let task = if demo.connect_info {
        let app = demo
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await })
    } else {
        tokio::spawn(async move { axum::serve(listener, demo.router).await })
    };
    Ok(Running {
        addr,
        state: demo.state,
        task,
    })
}

/// Serves the demo on `listen` with `threads` server threads until `shutdown` resolves (or
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
/// they are all closed, or once `demo.timeouts.shutdown` has passed, dropping those still
/// open ([`Stopped::cut`]).
///
/// # Errors
///
/// An address that cannot be bound, or a thread whose server fails.
pub fn serve(
    demo: &Demo,
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
        let (app, tunnels) = (demo.worker_app.0)()?;
        let (timeouts, connect_info) = (demo.timeouts, demo.connect_info);
        let (up, stopping, exited) = (up.clone(), stopping.clone(), Exited(exited.clone()));
        let worker = std::thread::Builder::new()
            .name(format!("demo-server-{i}"))
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
                grace_ms = demo.timeouts.shutdown.as_millis(),
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
            grace_ms = demo.timeouts.shutdown.as_millis(),
            "the shutdown grace period ended: dropped {cut} connection(s) still open"
        );
    }
    tracing::info!("stopped");
    Ok(Stopped { cut })
}

/// How [`serve`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// The connections still open when the shutdown's grace period ended, dropped:
    /// HTTP connections and WebSocket tunnels.
    pub cut: usize,
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

/// How long [`serve`] waits for a client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a request's headers, and for a new connection's first request
    /// (`--header-read-timeout-ms`).
    pub header_read: Duration,
    /// For the next request once none is in flight (`--idle-timeout-ms`).
    pub idle: Duration,
    /// For the requests in flight once a shutdown begins (`--shutdown-timeout-ms`).
    pub shutdown: Duration,
}

/// Serves every connection `listener` accepts with `app`: HTTP/1.1 or HTTP/2 (h2c), with
/// upgrades, `TCP_NODELAY` on, an HTTP/1.1 client that takes longer than
/// `timeouts.header_read` to send a request's headers disconnected, and a connection
/// without a request in flight for `timeouts.idle` closed. hyper is driven directly,
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
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::conn::auto,
        service::TowerToHyperService,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The proxy layer bounds its own exchanges with the target; how long a client may take
    // is the server's to bound (axum::serve sets no such limit).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
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
        let _ = tcp.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let service = TowerToHyperService::new(Tracked {
            inner: app.clone(),
            activity: Arc::clone(&activity),
            peer: connect_info.then_some(peer),
        });
        let (builder, stopping) = (builder.clone(), stopping.clone());
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            watch_connection(connection, &activity, timeouts, stopping).await;
        });
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
    timeouts: Timeouts,
    connect_info: bool,
}

/// Drives one connection until it ends, closing it when it has been quiet too long.
///
/// Until its first request a connection has `header_read` in all: hyper's timer covers a
/// request's headers once it knows the protocol, not the silence before the first byte nor
/// a partial HTTP/2 preface. After that, once no request has been in flight for `idle`, it
/// is shut down gracefully; hyper has no idle timeout for HTTP/2 connections, so without
/// this an h2c client could hold a connection (and its buffers) forever. Once `stopping`
/// says the server stops, it is shut down gracefully at once.
async fn watch_connection(
    connection: Connection<'_>,
    activity: &Activity,
    timeouts: Timeouts,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::time::{Instant, sleep_until};
    tokio::pin!(connection);
    let start = activity.origin;
    let mut deadline = start + timeouts.header_read.min(timeouts.idle);
    loop {
        tokio::select! {
            _ = &mut connection => return,
            () = sleep_until(deadline) => {}
            () = stopped(&mut stopping) => break,
        }
        let now = Instant::now();
        deadline = match activity.idle_since() {
            // Not even a first request's headers in time.
            Idle::NeverUsed if now >= start + timeouts.header_read => return,
            Idle::NeverUsed => (start + timeouts.header_read).min(now + timeouts.idle),
            Idle::Busy => now + timeouts.idle,
            Idle::Since(since) if now < since + timeouts.idle => since + timeouts.idle,
            Idle::Since(_) => break,
        };
    }
    // HTTP/2: GOAWAY, then close once the streams in flight are done; HTTP/1.1: close
    // after the request being read, if any.
    connection.as_mut().graceful_shutdown();
    // A request that slipped in as the shutdown began is served to its end; then a client
    // that does not close within `header_read` is dropped.
    loop {
        tokio::select! {
            _ = &mut connection => return,
            () = tokio::time::sleep(timeouts.header_read) => {}
        }
        if activity.idle_since() != Idle::Busy {
            return;
        }
    }
}

/// A served connection of the demo.
type Connection<'a> = hyper_util::server::conn::auto::UpgradeableConnection<
    'a,
    hyper_util::rt::TokioIo<tokio::net::TcpStream>,
    hyper_util::service::TowerToHyperService<Tracked<WorkerService>>,
    hyper_util::rt::TokioExecutor,
>;

/// Requests in flight on one connection, and when the last one ended.
#[derive(Debug)]
struct Activity {
    origin: tokio::time::Instant,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds from `origin` to the end of the last request; `u64::MAX` before the
    /// first one.
    idle_since_ms: std::sync::atomic::AtomicU64,
}

/// Whether a connection has a request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idle {
    NeverUsed,
    Busy,
    Since(tokio::time::Instant),
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            in_flight: 0.into(),
            idle_since_ms: u64::MAX.into(),
        }
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    fn idle_since(&self) -> Idle {
        use std::sync::atomic::Ordering::Relaxed;
        if self.in_flight.load(Relaxed) > 0 {
            return Idle::Busy;
        }
        match self.idle_since_ms.load(Relaxed) {
            u64::MAX => Idle::NeverUsed,
            ms => Idle::Since(self.origin + Duration::from_millis(ms)),
        }
    }
}

/// One request in flight, from its headers to the end (or drop) of its response body.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let activity = &self.0;
        // Rounded up: the idle clock never starts before the request ended.
        let ms = activity.origin.elapsed().as_millis().saturating_add(1);
        activity
            .idle_since_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX - 1), Relaxed);
        activity.in_flight.fetch_sub(1, Relaxed);
    }
}

/// The app, counting the requests in flight on its connection.
#[derive(Debug, Clone)]
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// The connection's peer, put into each request as axum's `ConnectInfo` when set.
    peer: Option<SocketAddr>,
}

impl<S, R, B> tower::Service<http::Request<R>> for Tracked<S>
where
    S: tower::Service<http::Request<R>, Response = http::Response<B>>,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<R>) -> Self::Future {
        if let Some(peer) = self.peer {
            req.extensions_mut().insert(ConnectInfo(peer));
        }
        TrackedFuture {
            in_flight: Some(self.activity.begin()),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// [`Tracked`]'s response future: hands the request's [`InFlight`] to the body.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> std::future::Future for TrackedFuture<F>
where
    F: std::future::Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx));
        let in_flight = this.in_flight.take();
        std::task::Poll::Ready(res.map(|res| {
            res.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            })
        }))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is done.
    struct TrackedBody<B> {
        #[pin]
        body: B,
        _in_flight: Option<InFlight>,
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
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

/// Starts the demo, writes `listening on http://ADDR` to `out` once it accepts connections
/// (the first line the demo prints on stdout), then serves until SIGTERM or Ctrl-C (SIGINT).
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
pub async fn run(
    opts: &Options,
    mut out: impl std::io::Write + Send + 'static,
) -> Result<(), Error> {
    // First: a signal during start-up then shuts down instead of killing the process.
    let mut signals = Signals::new()?;
    let demo = build(opts).await?;
    let listen = opts.listen.clone();
    let (begin_shutdown, shutdown) = tokio::sync::oneshot::channel::<()>();
    let (done, mut finished) = tokio::sync::oneshot::channel();
    // A thread of its own, not a blocking task: dropping the caller's runtime must not wait
    // for the server.
    std::thread::Builder::new()
        .name("demo-server".into())
        .spawn(move || {
            let ready = |addr| {
                let _ = writeln!(out, "listening on http://{addr}");
                let _ = out.flush();
            };
            // A dropped sender (the caller gone) shuts down too.
            let shutdown = async move {
                let _ = shutdown.await;
            };
            let _ = done.send(serve(&demo, &listen, server_threads(), ready, shutdown));
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

/// The signals that stop the demo: Ctrl-C (SIGINT) and, on unix, SIGTERM. Installed once,
/// so that none is lost between two waits.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// The next signal: its name, and the exit status that says a process died of it.
    async fn next(&mut self) -> (&'static str, i32) {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.interrupt.recv() => ("SIGINT", 130),
                Some(()) = self.terminate.recv() => ("SIGTERM", 143),
                // No more signals (the runtime is going away): never.
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => ("Ctrl-C", 130),
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Puts the caller's [`Identity`] into the request extensions: `401` for bad credentials.
async fn authenticate(State(identity): State<DemoIdentity>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    match identity.extract(&parts).await {
        Ok(Some(who)) => {
            parts.extensions.insert(who);
            next.run(Request::from_parts(parts, body)).await
        }
        // Unreachable with the demo's chains (both end anonymous), but a 401 names its
        // challenges (RFC 9110 §15.5.2), as the proxy's own do.
        Ok(None) => {
            let mut res = (StatusCode::UNAUTHORIZED, "Authentication is required.").into_response();
            let mut challenges = identity.challenges();
            if challenges.is_empty() {
                challenges.push(tower_identity_proxy::identity::FALLBACK_CHALLENGE);
            }
            for challenge in challenges {
                res.headers_mut()
                    .append(http::header::WWW_AUTHENTICATE, challenge);
            }
            res
        }
        Err(rejection) => rejection.into_response().map(axum::body::Body::new),
    }
}

fn forbidden(role: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        format!("This requires the role {role}."),
    )
        .into_response()
}

async fn whoami(Extension(who): Extension<Identity>) -> Response {
    if !who.has_role("ROLE_USER") {
        return forbidden("ROLE_USER");
    }
    Json(json!({ "name": who.name(), "roles": who.roles() })).into_response()
}

fn target_json(handle: &ProxyHandle) -> Json<Value> {
    Json(json!({ "url": handle.target().map(|t| t.as_str().to_owned()) }))
}

async fn get_proxy(State(state): State<AppState>, Extension(who): Extension<Identity>) -> Response {
    if !who.has_role("ROLE_ADMIN") {
        return forbidden("ROLE_ADMIN");
    }
    target_json(&state.handle).into_response()
}

#[derive(Deserialize)]
struct ProxyUrl {
    url: Option<String>,
}

async fn put_proxy(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Json(body): Json<ProxyUrl>,
) -> Response {
    if !who.has_role("ROLE_ADMIN") {
        return forbidden("ROLE_ADMIN");
    }
    match state.replicas.shared.set_target(body.url.as_deref()).await {
        Ok(()) => target_json(&state.handle).into_response(),
        Err(e) => replicas::refused(&e),
    }
}

#[derive(Deserialize)]
struct NewUser {
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn put_user(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
    Json(user): Json<NewUser>,
) -> Response {
    if !who.has_role("ROLE_ADMIN") {
        return forbidden("ROLE_ADMIN");
    }
    let saved = Identity::new(name.clone(), user.roles.clone());
    // Hashed on a blocking thread; only the hash is stored (and shared).
    let inserted = state
        .replicas
        .shared
        .put_user(&name, &user.password, user.roles)
        .await;
    match inserted {
        Ok(existed) => {
            let status = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                Json(json!({ "name": saved.name(), "roles": saved.roles() })),
            )
                .into_response()
        }
        Err(e) => replicas::refused(&e),
    }
}

/// A fresh key of the same type as the active one (RSA-3072 for RSA, as Atoti Server).
fn fresh_key(alg: Algorithm) -> Result<KeyPair, tower_identity_proxy::ConfigError> {
    match alg {
        Algorithm::ES256 => KeyPair::generate_ec(Curve::P256),
        Algorithm::ES384 => KeyPair::generate_ec(Curve::P384),
        Algorithm::EdDSA => KeyPair::generate_ed25519(),
        _ => KeyPair::generate_rsa(3072),
    }
}

async fn rotate_keys(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
) -> Response {
    if !who.has_role("ROLE_ADMIN") {
        return forbidden("ROLE_ADMIN");
    }
    let alg = state.key_set.algorithm();
    // Generating an RSA key takes a while: keep it off the async workers.
    let key = tokio::task::spawn_blocking(move || fresh_key(alg)).await;
    let rotated = match key {
        Ok(Ok(key)) => state.replicas.shared.rotate(key).await,
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The key was not rotated.",
            )
                .into_response();
        }
    };
    match rotated {
        Ok(rotation) => {
            let unix = |t: std::time::SystemTime| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            };
            let signs_in = rotation
                .signs_from()
                .duration_since(std::time::SystemTime::now())
                .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
            Json(json!({
                "kid": rotation.kid(),
                "signs_from": unix(rotation.signs_from()),
                "signs_in_seconds": signs_in,
                "published": state.key_set.kids(),
            }))
            .into_response()
        }
        Err(e @ tower_identity_proxy::state::StateError::Unavailable(_)) => replicas::refused(&e),
        Err(e) => {
            tracing::error!(error = %e, "key rotation failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "The key was not rotated.",
            )
                .into_response()
        }
    }
}

async fn delete_user(
    State(state): State<AppState>,
    Extension(who): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    if !who.has_role("ROLE_ADMIN") {
        return forbidden("ROLE_ADMIN");
    }
    match state.replicas.shared.remove_user(&name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "No such user.").into_response(),
        Err(e) => replicas::refused(&e),
    }
}

// The start-up runtime: it builds the app and waits; `run` serves on runtimes of its own.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tower_identity_proxy=info,demo=info".into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a terminal: a log captured to a file or a journal stays plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    run(&Options::parse(), std::io::stdout()).await
}
