//! A proxy target in Rust: the twin of the Python server in the Atoti proxy documentation,
//! verifying the identity token with [`VerifyProxyJwtLayer`] and the app's JWKS.
//!
//! ```text
//! cargo run --example demo -- --user Alice:abcdef123456:ROLE_USER,ROLE_WONDERLAND
//! cargo run --example target -- --jwks http://127.0.0.1:8080/.well-known/jwks.json --listen 127.0.0.1:1991
//! curl -X PUT -H 'content-type: application/json' -d '{"url": "http://127.0.0.1:1991"}' \
//!      http://127.0.0.1:8080/admin/proxy        # as an admin: add -u NAME:PASSWORD
//! curl -u Alice:abcdef123456 'http://127.0.0.1:8080/proxy/whoami?mode=jwt'
//! ```
//!
//! It prints `listening on http://ADDR` as its first line on stdout once it accepts
//! connections; logs go to stderr.
//!
//! Options:
//! - `--jwks URL`: the app's JWK Set (the demo serves it at `/.well-known/jwks.json`);
//!   fetched at the first request, refetched for unknown `kid`s within a rate limit.
//! - `--public-key FILE`: the app's public key (SPKI PEM) instead, as the document's
//!   target uses it; `--algorithm ALG` (default `RS512`) is the one algorithm accepted.
//! - `--listen ADDR`: default `127.0.0.1:1991`; port 0 picks a free port.
//! - `--issuer ISS`, `--audience AUD`: require these claims (default: not checked; a
//!   token carrying an `aud` is refused).
//! - `--app-origin URL` (repeatable): an origin of the app that `mode=session` may call
//!   back whatever the token says, e.g. `http://127.0.0.1:8080`. Default: none, so only
//!   the origin a verified token names as `iss` is called back (the demo names it when it
//!   runs with `--public-origin`).
//!
//! Routes, as the document's `RequestHandler`:
//! - `GET /whoami?mode=jwt`: verifies the token (signature, pinned algorithm, `exp`) and
//!   answers `{"name": …, "roles": […]}` from its claims; `401` if it does not verify.
//! - `GET /whoami?mode=session`: hands the token to the app: rebuilds the app's URL from
//!   `X-Forwarded-Proto` and `X-Forwarded-Host` (validated by [`ForwardedOrigin`]), calls
//!   `GET /api/whoami` there with the token, and answers its `{"name", "roles"}`, or `403`
//!   when that call fails (the app needs `ROLE_USER`). The origin must be vouched for
//!   first, or the target answers `403` without calling anything: it is one of the
//!   `--app-origin`s, or the token verifies and its `iss` names it. Otherwise a client
//!   that sent the app another `Host` would have the target send the user's token there
//!   and believe the answer. Plain-http apps only: an https app would need a TLS client
//!   here.
//! - `GET /whoami` with another mode: `400`; any other `GET` path: `404`.
//! - `POST` to any path: the body back, with `X-Custom-Header: lorem ipsum`.
//! - Other methods: `501`, as Python's `BaseHTTPRequestHandler`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    body::{Body, Bytes},
    extract::{Query, Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tower::ServiceExt;
use tower_identity_proxy::{
    identity::Identity,
    jwt::{Algorithm, Claims},
    proxy::PublicOrigin,
    verify::{ForwardedOrigin, VerifyProxyJwtLayer},
};

/// A boxed error for start-up failures.
type Error = Box<dyn std::error::Error + Send + Sync>;

/// The target's command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "target",
    about = "A proxy target verifying the app's identity tokens (the Rust twin of the Atoti document's Python server)"
)]
struct Options {
    /// The app's JWK Set URL, e.g. http://127.0.0.1:8080/.well-known/jwks.json.
    #[arg(
        long,
        value_name = "URL",
        required_unless_present = "public_key",
        conflicts_with = "public_key"
    )]
    jwks: Option<String>,

    /// The app's public key (SPKI PEM file), instead of --jwks.
    #[arg(long, value_name = "FILE")]
    public_key: Option<PathBuf>,

    /// The one signing algorithm accepted.
    #[arg(long, value_name = "ALG", default_value = "RS512", value_parser = parse_algorithm)]
    algorithm: Algorithm,

    /// Where to listen; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:1991")]
    listen: String,

    /// Require this `iss` claim.
    #[arg(long, value_name = "ISS")]
    issuer: Option<String>,

    /// Require this `aud` claim.
    #[arg(long, value_name = "AUD")]
    audience: Option<String>,

    /// An origin of the app that `mode=session` may call back (repeatable).
    #[arg(long = "app-origin", value_name = "URL")]
    app_origins: Vec<PublicOrigin>,
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    Algorithm::from_name(name).ok_or_else(|| {
        format!("unsupported algorithm {name:?} (RS256/384/512, PS256/384/512, ES256/384, EdDSA)")
    })
}

/// The verifier layer the options describe.
///
/// # Errors
///
/// An invalid JWKS URL, or a public key file that cannot be read or does not fit the
/// algorithm.
fn verify_layer(opts: &Options) -> Result<VerifyProxyJwtLayer, Error> {
    let mut layer = match (&opts.jwks, &opts.public_key) {
        (Some(url), _) => VerifyProxyJwtLayer::jwks_url(url)?.algorithms([opts.algorithm]),
        (None, Some(path)) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            VerifyProxyJwtLayer::public_key_pem(&pem, opts.algorithm)?
        }
        (None, None) => return Err("either --jwks or --public-key is needed".into()),
    };
    if let Some(issuer) = &opts.issuer {
        layer = layer.issuer(issuer);
    }
    if let Some(audience) = &opts.audience {
        layer = layer.audience(audience);
    }
    Ok(layer)
}

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    /// `mode=jwt`: the identity from the verified token, behind the verifier layer.
    jwt: Router,
    /// `mode=session` for an origin that is not an `--app-origin`: the call-back once the
    /// verified token's `iss` vouches for it, behind the verifier layer.
    vouched: Router,
    /// The `--app-origin`s.
    app_origins: Arc<[PublicOrigin]>,
    client: CallBack,
}

/// The client calling the app back.
type CallBack = Client<HttpConnector, Full<Bytes>>;

/// The target's routes, verifying tokens with `verify` in `mode=jwt`; `mode=session` calls
/// back only `app_origins` or the origin a verified token names.
fn router(verify: VerifyProxyJwtLayer, app_origins: Vec<PublicOrigin>) -> Router {
    let jwt = Router::new()
        .fallback(|Extension(me): Extension<Identity>| async move {
            Json(json!({ "name": me.name(), "roles": me.roles() }))
        })
        .layer(verify.clone());
    let client: CallBack = Client::builder(TokioExecutor::new()).build_http();
    let vouched = Router::new()
        .fallback(
            |State(client): State<CallBack>,
             Extension(claims): Extension<Claims>,
             headers: HeaderMap| async move {
                match ForwardedOrigin::from_headers(&headers) {
                    Ok(origin) if origin.vouched_by(&claims) => {
                        session(&client, origin, &headers).await
                    }
                    _ => unvouched(),
                }
            },
        )
        .layer(verify)
        .with_state(client.clone());
    let state = AppState {
        jwt,
        vouched,
        app_origins: app_origins.into(),
        client,
    };
    Router::new()
        .route(
            "/whoami",
            get(whoami)
                .post(echo)
                .fallback(|| async { status(StatusCode::NOT_IMPLEMENTED) }),
        )
        .fallback(elsewhere)
        .with_state(state)
}

/// A running target.
#[derive(Debug)]
struct Running {
    /// The address it listens on.
    addr: SocketAddr,
    /// The server task.
    task: JoinHandle<std::io::Result<()>>,
}

/// Builds the target, binds `--listen` and serves in a background task.
///
/// # Errors
///
/// Invalid options or an address that cannot be bound.
async fn start(opts: &Options) -> Result<Running, Error> {
    let app = router(verify_layer(opts)?, opts.app_origins.clone());
    let listener = TcpListener::bind(&opts.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Running { addr, task })
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// `do_GET` for `/whoami`: the mode decides how the caller is known.
async fn whoami(
    State(state): State<AppState>,
    Query(params): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    // As Python's `parse_qs`: blank values are dropped; exactly one mode must remain.
    let modes: Vec<&str> = params
        .iter()
        .filter(|(k, v)| k == "mode" && !v.is_empty())
        .map(|(_, v)| v.as_str())
        .collect();
    let [mode] = modes.as_slice() else {
        return status(StatusCode::NOT_FOUND);
    };
    match *mode {
        // The verifier layer answers 401 itself when the token does not verify.
        "jwt" => match state.jwt.oneshot(req).await {
            Ok(res) => res,
            Err(never) => match never {},
        },
        "session" => {
            // Nothing is called back before the origin is vouched for.
            let origin = match ForwardedOrigin::from_headers(req.headers()) {
                Ok(origin) => origin,
                Err(e) => {
                    tracing::info!(error = %e, "no usable app origin");
                    return status(StatusCode::FORBIDDEN);
                }
            };
            if state.app_origins.iter().any(|app| origin.is(app)) {
                return session(&state.client, origin, req.headers()).await;
            }
            match state.vouched.oneshot(req).await {
                // A token that does not verify vouches for nothing.
                Ok(res) if res.status() == StatusCode::UNAUTHORIZED => unvouched(),
                Ok(res) => res,
                Err(never) => match never {},
            }
        }
        _ => status(StatusCode::BAD_REQUEST),
    }
}

/// `403` for an origin nothing vouches for; nothing was called.
fn unvouched() -> Response {
    tracing::info!("app origin not vouched for: not called back");
    status(StatusCode::FORBIDDEN)
}

/// `mode=session`: asks the app at `origin` (vouched for) who the token's holder is.
async fn session(client: &CallBack, origin: ForwardedOrigin, headers: &HeaderMap) -> Response {
    // This server does not have to know the app's URL: the proxy's headers name it.
    let (Some(authorization), Ok(url)) = (
        headers.get(header::AUTHORIZATION),
        origin.url("/api/whoami"),
    ) else {
        return status(StatusCode::FORBIDDEN);
    };
    let request = http::Request::get(url)
        .header(header::AUTHORIZATION, authorization)
        .body(Full::default());
    let Ok(request) = request else {
        return status(StatusCode::FORBIDDEN);
    };
    let user = async {
        let res = client.request(request).await.ok()?;
        if res.status() != StatusCode::OK {
            return None;
        }
        let body = res.into_body().collect().await.ok()?.to_bytes();
        let user: Value = serde_json::from_slice(&body).ok()?;
        let name = user["name"].as_str()?.to_owned();
        let mut roles: Vec<String> = user["roles"]
            .as_array()?
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect();
        roles.sort();
        Some((name, roles))
    };
    match tokio::time::timeout(Duration::from_secs(10), user).await {
        Ok(Some((name, roles))) => Json(json!({ "name": name, "roles": roles })).into_response(),
        _ => status(StatusCode::FORBIDDEN),
    }
}

/// `do_POST`: the body back, with a custom header to show response headers come back.
async fn echo(body: Bytes) -> Response {
    ([("x-custom-header", "lorem ipsum")], body).into_response()
}

/// Any other path: `GET` is `404`, `POST` echoes, other methods are not implemented.
async fn elsewhere(method: Method, body: Body) -> Response {
    match method {
        Method::GET => status(StatusCode::NOT_FOUND),
        Method::POST => match body.collect().await {
            Ok(collected) => echo(collected.to_bytes()).await,
            Err(_) => status(StatusCode::BAD_REQUEST),
        },
        _ => status(StatusCode::NOT_IMPLEMENTED),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tower_identity_proxy=info,target=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let running = start(&Options::parse()).await?;
    println!("listening on http://{}", running.addr);
    running.task.await??;
    Ok(())
}
