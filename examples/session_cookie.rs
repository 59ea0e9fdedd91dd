//! An `IdentityExtractor` of your own, written as a type: callers known by a `session`
//! cookie, for the proxy and the app's routes alike, next to HTTP Basic.
//!
//! ```text
//! cargo run --example session_cookie -- --target http://127.0.0.1:1991
//! curl -i -X POST -u Alice:abcdef123456 http://127.0.0.1:3000/login   # Set-Cookie: session=…
//! curl -b 'theme=dark; session=…' http://127.0.0.1:3000/api/whoami     # Alice
//! curl -b 'theme=dark; session=…' http://127.0.0.1:3000/proxy/anything # forwarded as Alice
//! ```
//!
//! `POST /login` (Basic: `Alice`, `abcdef123456`) opens a session; a request with a known
//! `session` cookie is that user's, one with an unknown session is `401` (with the
//! session's challenge, never Basic's), one without is asked to the next extractor (Basic,
//! then anonymous). It prints `listening on http://ADDR` once it accepts connections.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header, request::Parts},
    response::IntoResponse,
    routing::{get, post},
};
use clap::Parser;
use tower_identity_proxy::{
    ProxyHandle, ProxyLayer, Target,
    identity::{
        Authenticate, BasicAuth, CredentialStore, ExtractResult, Identity, IdentityExtractor,
        Rejection,
    },
    jwt::{KeyPair, KeySigner},
};

/// The sessions: id → who opened it. A real app keeps them in its session store.
#[derive(Clone, Default)]
struct Sessions(Arc<RwLock<HashMap<String, Identity>>>);

impl IdentityExtractor for Sessions {
    async fn extract(&self, parts: &Parts) -> ExtractResult {
        // Every `Cookie` field, every pair in it: `theme=dark; session=…`.
        let session = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|field| field.to_str().ok())
            .flat_map(|field| field.split(';'))
            .find_map(|pair| pair.trim().strip_prefix("session="));
        let Some(session) = session else {
            return Ok(None); // no session: the next extractor is asked
        };
        let sessions = self.0.read().map_err(|_| refused())?;
        sessions.get(session).cloned().map(Some).ok_or_else(refused)
    }

    fn challenges(&self) -> Vec<HeaderValue> {
        vec![HeaderValue::from_static(
            r#"Cookie realm="app", cookie-name="session""#,
        )]
    }
}

fn refused() -> Rejection {
    Rejection::unauthorized(None, "The session is not valid.")
}

#[derive(Parser)]
struct Options {
    /// Where to listen; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// Where `/proxy` forwards to; without it the proxy answers `501`.
    #[arg(long)]
    target: Option<Target>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let opts = Options::parse();
    let users = CredentialStore::new();
    let store = users.clone();
    tokio::task::spawn_blocking(move || store.insert("Alice", "abcdef123456", ["ROLE_USER"]))
        .await??;

    let sessions = Sessions::default();
    let identity = sessions.clone().or(BasicAuth::new(users)).or_anonymous();
    let handle = opts
        .target
        .map(ProxyHandle::with_target)
        .unwrap_or_default();
    let app = Router::new()
        .route("/login", post(login))
        .route(
            "/api/whoami",
            get(|who: Identity| async move { who.name().to_owned() }),
        )
        .route_layer(Authenticate::new(identity.clone()))
        .with_state(sessions)
        .layer(
            ProxyLayer::new(KeySigner::new(KeyPair::generate_ed25519()?))
                .with_identity(identity)
                .handle(handle),
        );

    let listener = tokio::net::TcpListener::bind(&opts.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Opens a session for a caller known otherwise (Basic): `Set-Cookie: session=…`.
async fn login(State(sessions): State<Sessions>, who: Identity) -> axum::response::Response {
    if who.name() == Identity::ANONYMOUS_USER {
        return refused().into_response();
    }
    let mut id = [0; 16];
    if aws_lc_rs::rand::fill(&mut id).is_err() {
        return (http::StatusCode::INTERNAL_SERVER_ERROR, "No session.").into_response();
    }
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let cookie = format!("session={id}; HttpOnly; SameSite=Strict; Path=/");
    match sessions.0.write() {
        Ok(mut sessions) => sessions.insert(id, who),
        Err(_) => return (http::StatusCode::INTERNAL_SERVER_ERROR, "No session.").into_response(),
    };
    ([(header::SET_COOKIE, cookie)], "Logged in.").into_response()
}
