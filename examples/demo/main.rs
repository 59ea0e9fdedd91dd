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
//! Routes:
//! - `/proxy` and `/proxy/*`: the [`ProxyLayer`];
//! - `GET /api/whoami` → `{"name": …, "roles": [sorted]}` for callers holding `ROLE_USER`
//!   (`403` otherwise, `401` for bad credentials);
//! - `GET /admin/proxy` → `{"url": "…" | null}`; `PUT /admin/proxy` with the same body sets
//!   or disables the target (`400` with the reason for an invalid URL);
//! - `PUT /admin/users/{name}` with `{"password": "…", "roles": […]}` adds or updates a user;
//!   `DELETE /admin/users/{name}` removes one;
//! - `POST /admin/keys/rotate` publishes a fresh key of the same type and answers
//!   `{"kid", "signs_from", "signs_in_seconds", "published"}`: it signs after
//!   `--rotation-delay-secs`. `/admin/*` needs `ROLE_ADMIN` and refuses (`403`) identities
//!   read from a token this app signed; with `--redis`, a change Redis cannot take is `503`;
//! - `GET /ready`: `200` once `/proxy` can be served without a failed request, `503` before;
//! - `GET /.well-known/jwks.json`: the public keys as a JWK Set, for targets such as
//!   `cargo run --example target -- --jwks http://ADDR/.well-known/jwks.json`;
//! - with `--metrics-listen ADDR`, `GET /metrics` (Prometheus text) on that listener only.
//!
//! Who the caller is comes from one extractor, for the app's routes (through
//! `Authenticate`, tower-http's `AsyncRequireAuthorizationLayer`) and for the proxy alike:
//! HTTP Basic against the users, else a Bearer access token of the OpenID Connect provider
//! (`--oidc-issuer`, `--oidc-audience`), else a Bearer JWT this app signed (what a target
//! sends back), else anonymous.
//!
//! The app is built from tower-http as a production app is (outermost first): an
//! `x-request-id` (forwarded to the target and sent back), `Authorization` and `Cookie`
//! marked sensitive, a `TraceLayer` (`RUST_LOG=tower_http=debug`), a request body limit
//! (`413`, nothing forwarded), the proxy, then the routes with a 30 s timeout.
//!
//! The other modules: `routes` (the app's own routes), `server` (the accept loop and the
//! graceful shutdown on SIGTERM or Ctrl-C, WebSocket tunnels included), `connection` (one
//! client connection: HTTP/1.1 or h2c, its timeouts, an idle connection's buffers freed),
//! `args` (the options shared with `benches/server.rs`), `replicas` (the state shared
//! through Redis with `--redis`, feature `redis`), `metrics`.

mod args;
mod connection;
mod metrics;
mod replicas;
mod routes;
mod server;
mod signals;

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use axum::{
    extract::ConnectInfo,
    http::{HeaderValue, header, request::Parts},
};
use clap::Parser;
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};
use tower_http::{
    ServiceBuilderExt,
    limit::RequestBodyLimitLayer,
    request_id::MakeRequestUuid,
    trace::{DefaultMakeSpan, TraceLayer},
};
use tower_identity_proxy::{
    ProxyHandle, ProxyLayer, Target,
    client::{ClientBuilder, ProxyClient},
    identity::{
        Anonymous, BasicAuth, BearerJwt, CredentialStore, ExtractResult, IdentityExtractor,
        OidcBearer, Or, RoleCase,
    },
    jwt::{KeyPair, KeySet, KeySigner},
    proxy::{IpNet, PublicOrigin, TrustedProxies, Tunnels},
};

use crate::signals::Signals;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// An axum app whose /proxy forwards to a run-time target with the caller's identity as a
/// signed JWT.
#[derive(Parser, Debug)]
#[command(name = "demo")]
struct Options {
    #[command(flatten)]
    server: args::ServerArgs,

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
    let keys = match &opts.server.keys {
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
        .server
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
    let identity = match (opts.server.unsecured, oidc(opts).await?) {
        (true, Some(_)) => return Err("--oidc-issuer cannot be used with --unsecured".into()),
        (true, None) => DemoIdentity::Unsecured(Anonymous::unsecured()),
        (false, None) => DemoIdentity::Secured(basic.or(callback).or_anonymous()),
        (false, Some(oidc)) => {
            DemoIdentity::SecuredOidc(basic.or(oidc).or(callback).or_anonymous())
        }
    };

    let handle = match &opts.server.proxy_url {
        // With a shared store, the target comes from it (and is written to it if absent).
        Some(url) if !store.is_shared() => ProxyHandle::with_target(Target::parse(url)?),
        _ => ProxyHandle::new(),
    };
    let tunnels = Tunnels::new();
    let mut proxy = ProxyLayer::new(key_set.signer())
        .with_identity(identity.clone())
        .upstream_timeout(Duration::from_millis(opts.server.upstream_timeout_ms))
        .client(upstream_client(opts)?)
        .handle(handle.clone())
        .tunnels(tunnels.clone());
    if let Some(pseudonym) = store.pseudonym() {
        proxy = proxy.via_pseudonym(pseudonym);
    }
    if opts.server.forwarded_for || !opts.trusted_proxies.is_empty() {
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
        .service(routes::router(state, identity));
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
        let addr = metrics::serve(listen).await?;
        tracing::info!("metrics on http://{addr}/metrics");
    }
    let app = build(&opts).await?;
    let listener = TcpListener::bind(&opts.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.server.listen))?;
    println!("listening on http://{}", listener.local_addr()?);
    // Trusted proxies read the peer's address too (to know whether to believe it).
    let connect_info = opts.server.reads_peer() || !opts.trusted_proxies.is_empty();
    server::serve(
        listener,
        app,
        opts.server.timeouts.timeouts(),
        connect_info,
        signals,
    )
    .await
}
