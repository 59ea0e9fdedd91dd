//! The demo's own routes: who the caller is, and the admin API that sets the target, the
//! users and the keys (on every replica).

use std::time::Duration;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::timeout::TimeoutLayer;
use tower_identity_proxy::{
    ConfigError, ProxyHandle,
    identity::{Authenticate, Identity},
    jwt::{Algorithm, Curve, KeyPair},
    state::StateError,
};

use crate::{AppState, DemoIdentity, replicas};

/// How long the app's own routes may take (`503` after); `/proxy` has the upstream timeout.
const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The app's own routes, behind the same identity chain as the proxy (`401` for bad
/// credentials, `403` without the role); the JWKS is public.
pub(crate) fn router(state: AppState, identity: DemoIdentity) -> Router {
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
fn fresh_key(alg: Algorithm) -> Result<KeyPair, ConfigError> {
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
        Err(_) => Err(ConfigError::InvalidKey("no key generated".into()).into()),
    };
    match rotated {
        Ok(rotation) => Json(replicas::rotation_json(&rotation, &state.key_set)).into_response(),
        Err(e @ StateError::Unavailable(_)) => replicas::refused(&e),
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
