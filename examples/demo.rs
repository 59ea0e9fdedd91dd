//! The whole feature in one axum app: a `/proxy` that forwards to a target chosen at run
//! time, with the caller's identity as a signed JWT, next to the app's own routes.
//!
//! ```text
//! cargo run --example demo -- --user admin:admin-password:ROLE_ADMIN,ROLE_USER
//! cargo run --example demo -- --help
//! ```
//!
//! It prints `listening on http://ADDR` as its first line on stdout once it accepts
//! connections; everything else (the generated key, logs) goes to stderr.
//!
//! With `--metrics-listen ADDR` it serves `GET /metrics`, the proxy's metrics in the
//! Prometheus text format (see `tower_identity_proxy::observability`), on a listener of its
//! own, never on `--listen`; it logs `metrics on http://ADDR/metrics` once that listener is
//! bound.
//!
//! Routes:
//! - `GET /api/whoami` → `{"name": …, "roles": [sorted]}` for callers holding `ROLE_USER`
//!   (`403` otherwise, `401` for bad credentials);
//! - `GET /admin/proxy` → `{"url": "…" | null}`; `PUT /admin/proxy` with the same body sets
//!   or disables the target (`400` with the reason for an invalid URL);
//! - `PUT /admin/users/{name}` with `{"password": "…", "roles": […]}` adds or updates a user;
//!   `DELETE /admin/users/{name}` removes one;
//! - `POST /admin/keys/rotate` publishes a fresh key of the same type and answers
//!   `{"kid": "<the new kid>", "signs_from": <Unix time>, "signs_in_seconds": N,
//!   "published": [every published kid]}`: it signs after `--rotation-delay-secs`; the
//!   previous key stays published until the tokens it signed have expired. `/admin/*`
//!   needs `ROLE_ADMIN`, and refuses (`403`) identities read from a token this app signed
//!   (a target calling the app back acts for a user, it does not administer the app); with
//!   `--redis`, a change Redis cannot take answers `503` and changes nothing;
//! - `GET /ready` (no authentication): `200` once `/proxy` can be served without a failed
//!   request (with `--redis`: the shared state read, this replica's key published for the
//!   rotation delay), `503` before; a readiness probe;
//! - `GET /.well-known/jwks.json`: the public keys as a JWK Set (no authentication), for
//!   targets such as `cargo run --example target -- --jwks http://ADDR/.well-known/jwks.json`;
//! - `/proxy` and `/proxy/*`: the [`ProxyLayer`].
//!
//! `--redis redis://HOST:PORT[/DB]` (feature `redis`) joins the replicas sharing that Redis:
//! the target, the users (password hashes) and every replica's public key are shared, and
//! `--user` and `--proxy-url` are written to Redis only if it has no such user or target.
//!
//! Who the caller is comes from the same extractor for the app's routes and for the proxy:
//! HTTP Basic against the users, else a Bearer access token of the OpenID Connect provider
//! (with `--oidc-issuer URL --oidc-audience AUD`: its roles upper-cased and prefixed with
//! `ROLE_`), else a Bearer JWT this app signed (what a target receives and may send back,
//! as the document's `session` mode does), else anonymous. The app's routes read it
//! through [`Authenticate`], tower-http's `AsyncRequireAuthorizationLayer`.
//!
//! Built as a production app is, from tower-http (outermost first): an `x-request-id` for
//! each request (forwarded to the target, and sent back), `Authorization` and `Cookie`
//! marked sensitive, a `TraceLayer` (`RUST_LOG=tower_http=debug` logs each request with its
//! headers, those two as `Sensitive`), a request body limit (`--body-limit-bytes`: `413`,
//! nothing forwarded), the proxy, then the routes with a 30 s `TimeoutLayer` (`503`); the
//! proxy has its own `--upstream-timeout-ms`.
//!
//! Verified passwords and tokens are cached (`--credential-cache-secs`); failed sign-ins are
//! limited per user name and per client address (`429` with `Retry-After`); a token this app signed whose user was
//! removed, or given other roles, since it was signed is refused (`401`) at the next
//! request.
//!
//! Origins: `--public-origin URL` (repeatable) names the origins clients reach the app
//! under; `/proxy` requests naming another `Host` get `421`, and tokens carry the origin as
//! `iss`. Without it the target is told whatever `Host` a client sends, and the demo warns
//! at start. `--trusted-proxy CIDR` (repeatable) names the load balancers in front whose
//! `Forwarded` or `X-Forwarded-For`/`-Proto`/`-Host` count (it implies `--forwarded-for`).
//!
//! Shutdown: on SIGTERM or Ctrl-C the listening socket closes (new connections are
//! refused), open connections shut down gracefully (HTTP/1.1: closed after the response in
//! progress, at once when idle; h2c: `GOAWAY`) and the demo exits with status 0 once the
//! requests in flight and the WebSocket tunnels have ended, or once
//! `--shutdown-timeout-ms` has passed (those still open are dropped, with a warning). A
//! second signal exits at once (status 130 or 143).

#[path = "support/replicas.rs"]
mod replicas;

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Path, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use clap::Parser;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch, task::JoinSet, time::timeout};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::{
    ServiceBuilderExt,
    limit::RequestBodyLimitLayer,
    request_id::MakeRequestUuid,
    timeout::TimeoutLayer,
    trace::{DefaultMakeSpan, TraceLayer},
};
use tower_identity_proxy::{
    ProxyHandle, ProxyLayer, Target,
    client::{ClientBuilder, ProxyClient},
    identity::{
        Anonymous, Authenticate, BasicAuth, BearerJwt, CredentialStore, ExtractResult, Identity,
        IdentityExtractor, OidcBearer, Or, RoleCase,
    },
    jwt::{Algorithm, Curve, KeyPair, KeySet, KeySigner},
    observability,
    proxy::{IpNet, PublicOrigin, TrustedProxies, Tunnels},
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// An axum app whose /proxy forwards to a run-time target with the caller's identity as a
/// signed JWT.
#[derive(Parser, Debug)]
#[command(name = "demo")]
struct Options {
    /// Where to listen; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,

    /// A directory holding `private-key.pem` (PKCS#1 or PKCS#8) and `public-key.pem`
    /// (SPKI); without it an RSA key pair is generated, so tokens do not survive a restart.
    #[arg(long, value_name = "DIR")]
    keys: Option<PathBuf>,

    /// Every caller is anonymousUser with ROLE_ADMIN, ROLE_ANONYMOUS and ROLE_USER, as a
    /// session without security.
    #[arg(long)]
    unsecured: bool,

    /// A Basic-authentication user (repeatable).
    #[arg(long = "user", value_name = "NAME:PASSWORD:ROLE,ROLE", value_parser = parse_user)]
    users: Vec<UserSpec>,

    /// The initial proxy target; without it the proxy is disabled.
    #[arg(long, value_name = "URL")]
    proxy_url: Option<String>,

    /// How long the target may take to send its response headers (`504` after), in ms.
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    upstream_timeout_ms: u64,

    /// Also trust the root certificates in this PEM file for https targets (a private CA);
    /// the webpki roots stay trusted.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,

    /// Speak HTTP/2 with prior knowledge (h2c) to plain-http targets, as gRPC backends need.
    #[arg(long)]
    upstream_h2c: bool,

    /// How long a client may take to send a request's headers, and a new connection its
    /// first request, in ms; a slower client (slowloris) is disconnected.
    #[arg(long, value_name = "N", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_ms: u64,

    /// How long a connection may stay open with no request in flight, in ms, before it is
    /// closed gracefully (h2c: `GOAWAY`), as nginx's `keepalive_timeout`.
    #[arg(long, value_name = "N", default_value_t = 75_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_ms: u64,

    /// How long a shutdown (SIGTERM, Ctrl-C) waits for the requests in flight, in ms.
    #[arg(long, value_name = "N", default_value_t = 30_000)]
    shutdown_timeout_ms: u64,

    /// Send the target `X-Forwarded-For` with the client's address (the TCP peer's IP),
    /// never the client's own `X-Forwarded-For`.
    #[arg(long)]
    forwarded_for: bool,

    /// The largest request body accepted, `/proxy` included, in bytes: `413` above it.
    #[arg(long, value_name = "N", default_value_t = 16 << 20)]
    body_limit_bytes: usize,

    /// How long a verified Basic user name and password are recognised without the slow
    /// hash, in seconds (a keyed hash of them is kept in memory); 0 turns the cache off.
    #[arg(long, value_name = "N", default_value_t = 300)]
    credential_cache_secs: u64,

    /// Share the target, the users and the public keys with the replicas using this Redis
    /// (`redis://HOST:PORT[/DB]`; feature `redis`).
    #[arg(long, value_name = "URL")]
    redis: Option<String>,

    /// How long a new key is published before it signs (a rotation, or a replica joining
    /// others), in seconds.
    #[arg(long, value_name = "N", default_value_t = 95)]
    rotation_delay_secs: u64,

    /// The JWK Set's `Cache-Control: max-age`, in seconds.
    #[arg(long, value_name = "N", default_value_t = 60)]
    jwks_max_age_secs: u64,

    /// Also accept Bearer access tokens of this OpenID Connect provider (its `iss`, e.g.
    /// `https://sso.example.com/realms/demo`; keys from its discovery document); needs
    /// `--oidc-audience`. The target receives the app's token, never the provider's.
    #[arg(long, value_name = "URL", requires = "oidc_audiences")]
    oidc_issuer: Option<String>,

    /// An audience (`aud`) the provider's tokens may be issued for (repeatable: any).
    #[arg(long = "oidc-audience", value_name = "AUD", requires = "oidc_issuer")]
    oidc_audiences: Vec<String>,

    /// The claim naming the caller in the provider's tokens.
    #[arg(long, value_name = "CLAIM", default_value = "sub")]
    oidc_name_claim: String,

    /// A claim path holding roles in the provider's tokens (repeatable): an array
    /// (`realm_access.roles`, `resource_access.CLIENT.roles`, `groups`) or a space-separated
    /// string (`scope`); each role upper-cased and prefixed with `ROLE_` (`user` →
    /// `ROLE_USER`).
    #[arg(long = "oidc-roles-claim", value_name = "PATH")]
    oidc_roles_claims: Vec<String>,

    /// An origin clients reach the app under (repeatable), e.g. https://app.example.com:
    /// /proxy requests naming another Host get 421, and tokens name the origin as `iss`.
    /// Without it, targets are told whatever Host a client sends (a warning says so).
    #[arg(long = "public-origin", value_name = "URL")]
    public_origins: Vec<PublicOrigin>,

    /// A network (CIDR) or address of trusted load balancers in front of the app
    /// (repeatable): their Forwarded or X-Forwarded-For/-Proto/-Host count. Implies
    /// --forwarded-for.
    #[arg(long = "trusted-proxy", value_name = "CIDR", value_parser = parse_network)]
    trusted_proxies: Vec<IpNet>,

    /// Serve `GET /metrics` (Prometheus text format) on a listener of its own at this
    /// address; never on `--listen`.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

/// A `--trusted-proxy`: `10.0.0.0/8`, or an address alone (a network of one).
fn parse_network(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither a network (10.0.0.0/8) nor an address"))
}

/// A `--user NAME:PASSWORD:ROLE,ROLE` option.
#[derive(Clone)]
struct UserSpec {
    name: String,
    password: String,
    roles: Vec<String>,
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
    let usage = "expected NAME:PASSWORD:ROLE,ROLE";
    let (name, rest) = s.split_once(':').ok_or(usage)?;
    // The password may contain ':'; the roles are after the last one.
    let (password, roles) = rest.rsplit_once(':').ok_or(usage)?;
    if name.is_empty() {
        return Err("the user name is empty".into());
    }
    let roles = roles.split(',').map(str::trim).filter(|r| !r.is_empty());
    Ok(UserSpec {
        name: name.to_owned(),
        password: password.to_owned(),
        roles: roles.map(str::to_owned).collect(),
    })
}

/// Who the caller is, for the app's routes and for the proxy alike: an extractor written
/// by the app, an enum over the security modes.
#[derive(Clone, Debug)]
enum DemoIdentity {
    /// Basic, else a Bearer JWT this app signed, else `anonymousUser` with `ROLE_ANONYMOUS`.
    Secured(Or<Or<BasicAuth, BearerJwt>, Anonymous>),
    /// Basic, else a Bearer access token of the OpenID Connect provider, else a Bearer JWT
    /// this app signed, else `anonymousUser` with `ROLE_ANONYMOUS`.
    SecuredOidc(Or<Or<Or<BasicAuth, OidcBearer>, BearerJwt>, Anonymous>),
    /// Every caller is `anonymousUser` with `ROLE_ADMIN`, `ROLE_ANONYMOUS`, `ROLE_USER`.
    Unsecured(Anonymous),
}

impl IdentityExtractor for DemoIdentity {
    async fn extract(&self, parts: &Parts) -> ExtractResult {
        match self {
            Self::Secured(e) => e.extract(parts).await,
            Self::SecuredOidc(e) => e.extract(parts).await,
            Self::Unsecured(e) => e.extract(parts).await,
        }
    }

    fn challenges(&self) -> Vec<HeaderValue> {
        match self {
            Self::Secured(e) => e.challenges(),
            Self::SecuredOidc(e) => e.challenges(),
            Self::Unsecured(e) => e.challenges(),
        }
    }
}

/// What the handlers share.
#[derive(Clone, Debug)]
struct AppState {
    /// Changes the proxy target.
    handle: ProxyHandle,
    /// The signing key and the published keys.
    key_set: KeySet,
    /// Changes the target, users and keys on every replica; readiness.
    replicas: replicas::Replicas,
}

/// How long the app's own routes may take (`503` after); `/proxy` has the upstream timeout.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the app from the options, and the WebSocket tunnels it opens (to wait for on
/// shutdown): tower-http's layers around the proxy layer, itself around the whole router,
/// so a request under `/proxy` goes straight to the proxy, before any routing.
async fn build(
    opts: &Options,
) -> Result<
    (
        impl Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<
                impl http_body::Body<Data = bytes::Bytes, Error: Into<Error>> + Send + 'static,
            >,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static,
        Tunnels,
    ),
    Error,
> {
    let keys = match &opts.keys {
        Some(dir) => {
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
            };
            KeyPair::from_pem(&read("private-key.pem")?, Some(&read("public-key.pem")?))?
        }
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
    for user in opts
        .users
        .clone()
        .into_iter()
        .filter(|_| !store.is_shared())
    {
        let store = users.clone();
        // Hashing a password is deliberately slow: keep it off the async workers.
        tokio::task::spawn_blocking(move || store.insert(&user.name, &user.password, user.roles))
            .await??;
    }

    // One active key, rotated at run time; Bearer tokens verify against every published key.
    let key_set = KeySet::new(KeySigner::new(keys))
        .rotation_delay(Duration::from_secs(opts.rotation_delay_secs));
    let basic = BasicAuth::new(users.clone())
        .credential_cache(Duration::from_secs(opts.credential_cache_secs), 1024)
        // Failed sign-ins are counted per TCP peer, as `serve` puts it in each request.
        .client_address(|parts| {
            let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
            Some(peer.ip().to_canonical())
        });
    // The app's own tokens, sent back by targets: refused once their user changed.
    let callback = BearerJwt::new(key_set.verifier()).users(users.clone());
    let identity = match (opts.unsecured, oidc(opts).await?) {
        (true, Some(_)) => return Err("--oidc-issuer cannot be used with --unsecured".into()),
        (true, None) => DemoIdentity::Unsecured(Anonymous::unsecured()),
        (false, None) => DemoIdentity::Secured(basic.or(callback).or_anonymous()),
        (false, Some(oidc)) => {
            DemoIdentity::SecuredOidc(basic.or(oidc).or(callback).or_anonymous())
        }
    };

    let handle = match &opts.proxy_url {
        // With a shared store, the target comes from it (and is written to it if absent).
        Some(url) if !store.is_shared() => ProxyHandle::with_target(Target::parse(url)?),
        _ => ProxyHandle::new(),
    };
    let tunnels = Tunnels::new();
    let mut proxy = ProxyLayer::new(key_set.signer())
        .with_identity(identity.clone())
        .upstream_timeout(Duration::from_millis(opts.upstream_timeout_ms))
        .client(upstream_client(opts)?)
        .handle(handle.clone())
        .tunnels(tunnels.clone());
    if let Some(pseudonym) = store.pseudonym() {
        proxy = proxy.via_pseudonym(pseudonym);
    }
    if opts.forwarded_for || !opts.trusted_proxies.is_empty() {
        // The TCP peer, as `serve` puts it in each request.
        proxy = proxy.forwarded_for(|parts| {
            let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
            Some(peer.ip().to_canonical())
        });
    }
    if !opts.trusted_proxies.is_empty() {
        let trusted = opts.trusted_proxies.iter();
        proxy = proxy.trusted_proxies(trusted.fold(TrustedProxies::new(), |t, n| t.network(*n)));
    }
    for origin in &opts.public_origins {
        proxy = proxy.public_origin(origin.clone());
    }
    if opts.public_origins.is_empty() {
        tracing::warn!(
            "no --public-origin: targets are told the Host each client sends, so a target \
             that calls the app back can be sent elsewhere; name the app's origins"
        );
    }
    let replicas = replicas::Replicas::join(store, opts, handle.clone(), users, key_set.clone());
    let state = AppState {
        handle,
        key_set,
        replicas,
    };
    let app = ServiceBuilder::new()
        .set_x_request_id(MakeRequestUuid)
        .sensitive_request_headers([header::AUTHORIZATION, header::COOKIE].into())
        .layer(
            TraceLayer::new_for_http().make_span_with(DefaultMakeSpan::new().include_headers(true)),
        )
        .propagate_x_request_id()
        .layer(RequestBodyLimitLayer::new(opts.body_limit_bytes))
        .layer(proxy)
        .service(router(state, identity));
    Ok((app, tunnels))
}

/// The OpenID Connect provider of `--oidc-issuer`, its keys fetched once to report a
/// misconfigured or unreachable provider at start-up (tokens fetch them anyway).
async fn oidc(opts: &Options) -> Result<Option<OidcBearer>, Error> {
    let Some(issuer) = &opts.oidc_issuer else {
        return Ok(None);
    };
    let mut oidc = OidcBearer::discover(issuer, opts.oidc_audiences.iter().cloned())?
        .name_claim(opts.oidc_name_claim.clone())
        .role_case(RoleCase::Upper)
        .role_prefix("ROLE_");
    for path in &opts.oidc_roles_claims {
        oidc = oidc.roles_claim(path.clone());
    }
    let kids = oidc.fetch_keys().await;
    if kids.is_empty() {
        eprintln!(
            "no keys from the OpenID Connect provider {issuer} yet (see the log): its tokens \
             are refused until they can be fetched"
        );
    } else {
        eprintln!("OpenID Connect provider {issuer}: keys {kids:?}");
    }
    Ok(Some(oidc))
}

/// The client that reaches the target: `--upstream-ca`, `--upstream-h2c`.
fn upstream_client(opts: &Options) -> Result<ProxyClient, Error> {
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

/// The app's own routes, behind the same identity chain as the proxy (`401` for bad
/// credentials, `403` without the role); the JWKS is public.
fn router(state: AppState, identity: DemoIdentity) -> Router {
    let api = Router::new()
        .route("/api/whoami", get(whoami))
        .route_layer(Authenticate::new(identity.clone()).require_role("ROLE_USER"));
    let admin = Router::new()
        .route("/admin/proxy", get(get_proxy).put(put_proxy))
        .route("/admin/users/{name}", put(put_user).delete(delete_user))
        .route("/admin/keys/rotate", post(rotate_keys))
        .route_layer(axum::middleware::from_fn(refuse_call_back_tokens))
        .route_layer(Authenticate::new(identity).require_role("ROLE_ADMIN"));
    Router::new()
        .merge(api)
        .merge(admin)
        .route_service(
            "/.well-known/jwks.json",
            state.key_set.jwks().max_age(state.replicas.jwks_max_age),
        )
        .route(
            "/ready",
            get(replicas::ready).with_state(state.replicas.clone()),
        )
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            ROUTE_TIMEOUT,
        ))
        .with_state(state)
}

async fn whoami(who: Identity) -> Json<Value> {
    Json(json!({ "name": who.name(), "roles": who.roles() }))
}

/// `403` for an identity read from a call-back token: a target acting for its caller never
/// administers the app.
async fn refuse_call_back_tokens(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match req.extensions().get::<Identity>() {
        Some(who) if who.is_callback() => (
            StatusCode::FORBIDDEN,
            "The admin API does not accept tokens that a target sends back.",
        )
            .into_response(),
        _ => next.run(req).await,
    }
}

fn target_json(handle: &ProxyHandle) -> Json<Value> {
    Json(json!({ "url": handle.target().map(|t| t.as_str().to_owned()) }))
}

async fn get_proxy(State(state): State<AppState>) -> Json<Value> {
    target_json(&state.handle)
}

#[derive(Deserialize)]
struct ProxyUrl {
    url: Option<String>,
}

async fn put_proxy(State(state): State<AppState>, Json(body): Json<ProxyUrl>) -> Response {
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
    Path(name): Path<String>,
    Json(user): Json<NewUser>,
) -> Response {
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

async fn rotate_keys(State(state): State<AppState>) -> Response {
    let alg = state.key_set.algorithm();
    // Generating an RSA key takes a while: keep it off the async workers.
    let rotated = match tokio::task::spawn_blocking(move || fresh_key(alg)).await {
        Ok(Ok(key)) => state.replicas.shared.rotate(key).await,
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            Err(tower_identity_proxy::ConfigError::InvalidKey("no key generated".into()).into())
        }
    };
    match rotated {
        Ok(rotation) => Json(replicas::rotation_json(&rotation, &state.key_set)).into_response(),
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

async fn delete_user(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.replicas.shared.remove_user(&name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "No such user.").into_response(),
        Err(e) => replicas::refused(&e),
    }
}

/// How long the server waits for a client (`--*-timeout-ms`).
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
    shutdown: Duration,
}

/// Serves `app` on `listener` (HTTP/1.1 and h2c, with upgrades) until SIGTERM or Ctrl-C,
/// then shuts down gracefully; a second signal exits at once.
///
/// hyper-util's server rather than `axum::serve`, for what the options promise: hyper's
/// header-read timeout for HTTP/1.1, and a timer per connection for the rest (a first
/// request, an idle connection, HTTP/2 included). hyper-util's `GracefulShutdown` cannot
/// be told to close one idle connection, so each connection also watches for the shutdown.
async fn serve<A, B>(
    listener: TcpListener,
    (app, tunnels): (A, Tunnels),
    t: Timeouts,
    mut signals: Signals,
) -> Result<(), Error>
where
    A: Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    A::Future: Send,
    B: http_body::Body<Data = bytes::Bytes, Error: Into<Error>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(t.header_read);
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let signal = loop {
        let (tcp, peer) = tokio::select! {
            signal = signals.next() => break signal,
            // Forgets the connections that ended.
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let load = Arc::new(watch::Sender::new(Load::default()));
        // Each request carries the peer's address (axum's `ConnectInfo`, which
        // `--forwarded-for` reads) and counts as in flight until its response body is done.
        let service = hyper::service::service_fn({
            let (app, load) = (app.clone(), Arc::clone(&load));
            move |mut req: http::Request<hyper::body::Incoming>| {
                let in_flight = InFlight::begin(&load);
                req.extensions_mut().insert(ConnectInfo(peer));
                let call = app.clone().oneshot(req);
                async move {
                    let res = call.await?;
                    Ok::<_, Infallible>(res.map(|body| Counted { body, in_flight }))
                }
            }
        });
        let (builder, mut stopping) = (builder.clone(), stopping.clone());
        connections.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                quiet = quiet(load.subscribe(), t) => if !quiet { return },
                _ = stopping.wait_for(|stop| *stop) => {}
            }
            // HTTP/2: GOAWAY, the streams in flight finish; HTTP/1.1: closed after the
            // response in progress. A client that then neither sends nor closes is dropped.
            connection.as_mut().graceful_shutdown();
            loop {
                tokio::select! {
                    _ = connection.as_mut() => return,
                    () = tokio::time::sleep(t.header_read) => {
                        if load.borrow().in_flight == 0 {
                            return;
                        }
                    }
                }
            }
        });
    };

    tracing::info!(signal = signal.0, "shutting down gracefully");
    // Closing the socket: new connections are refused.
    drop(listener);
    let _ = stop.send(true);
    // An upgraded connection (a WebSocket) is no longer hyper's: its tunnel is waited for
    // apart, within the same grace period.
    let drain = timeout(t.shutdown, async {
        while connections.join_next().await.is_some() {}
        tunnels.ended().await;
    });
    let drained = tokio::select! {
        drained = drain => drained.is_ok(),
        (signal, status) = signals.next() => {
            tracing::warn!(signal, "second shutdown signal: exiting at once");
            std::process::exit(status)
        }
    };
    if !drained {
        while connections.try_join_next().is_some() {}
        let cut = connections.len() + tunnels.close();
        // The tunnels' tasks close both their connections once polled.
        let _ = timeout(Duration::from_secs(1), tunnels.ended()).await;
        tracing::warn!(
            cut,
            "the shutdown grace period ended: dropped {cut} connection(s) still open"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// The requests of one connection: how many have begun, how many are in flight.
#[derive(Debug, Default)]
struct Load {
    started: u64,
    in_flight: usize,
}

/// One request in flight, from its headers to the end (or drop) of its response body.
struct InFlight(Arc<watch::Sender<Load>>);

impl InFlight {
    fn begin(load: &Arc<watch::Sender<Load>>) -> Self {
        load.send_modify(|load| {
            load.started += 1;
            load.in_flight += 1;
        });
        Self(Arc::clone(load))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|load| load.in_flight -= 1);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it is done (or dropped).
    struct Counted<B> {
        #[pin]
        body: B,
        in_flight: InFlight,
    }
}

impl<B: http_body::Body> http_body::Body for Counted<B> {
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

/// Resolves once a connection has been quiet too long: `false` if it sent no request
/// within `header_read` (hyper's own timer does not cover the silence before the first
/// byte, nor a partial HTTP/2 preface), `true` once none has been in flight for `idle`
/// (hyper has no idle timeout for HTTP/2).
async fn quiet(mut load: watch::Receiver<Load>, t: Timeouts) -> bool {
    let first = async { load.wait_for(|l| l.started > 0).await.is_ok() };
    if timeout(t.header_read, first).await.is_err() {
        return false;
    }
    loop {
        let seen = load.wait_for(|l| l.in_flight == 0).await.map(|l| l.started);
        // Err: the connection is gone.
        let Ok(seen) = seen else {
            return std::future::pending().await;
        };
        let next = async { load.wait_for(|l| l.started != seen).await.is_ok() };
        if timeout(t.idle, next).await.is_err() {
            return true;
        }
    }
}

/// The signals that stop the demo: Ctrl-C (SIGINT) and, on unix, SIGTERM. Installed once,
/// before start-up, so that none is lost between two waits.
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
        tokio::select! {
            Some(()) = self.interrupt.recv() => ("SIGINT", 130),
            Some(()) = self.terminate.recv() => ("SIGTERM", 143),
            else => std::future::pending().await,
        }
        #[cfg(not(unix))]
        match tokio::signal::ctrl_c().await {
            Ok(()) => ("Ctrl-C", 130),
            Err(_) => std::future::pending().await,
        }
    }
}

/// Installs a Prometheus recorder for the process (the duration histogram with the buckets
/// OpenTelemetry advises, so a histogram rather than a summary; names as Prometheus
/// recommends: `_seconds`, `_total`) and serves `GET /metrics` on `listen`, a listener of
/// its own, in a task; returns the address it is bound to.
async fn serve_metrics(listen: &str) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen} for metrics: {e}"))?;
    let addr = listener.local_addr()?;
    let recorder = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .set_buckets_for_metric(
            Matcher::Prefix("http_client_request_duration".into()),
            &observability::HTTP_CLIENT_REQUEST_DURATION_BUCKETS,
        )?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    observability::describe();
    // Histogram samples wait in the recorder until drained: drain them now and then,
    // scraped or not.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let text = handle.render();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tower_identity_proxy=info,demo=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let opts = Options::parse();
    // First: a signal during start-up then shuts down instead of killing the process.
    let signals = Signals::new()?;
    // Before the app is built, so that everything it records is kept.
    if let Some(listen) = &opts.metrics_listen {
        let addr = serve_metrics(listen).await?;
        tracing::info!("metrics on http://{addr}/metrics");
    }
    let app = build(&opts).await?;
    let listener = TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    let timeouts = Timeouts {
        header_read: Duration::from_millis(opts.header_read_timeout_ms),
        idle: Duration::from_millis(opts.idle_timeout_ms),
        shutdown: Duration::from_millis(opts.shutdown_timeout_ms),
    };
    serve(listener, app, timeouts, signals).await
}
