//! The demo's replicas: `--redis` shares the target, the users and the published keys
//! through Redis; `GET /ready` says when a replica can serve `/proxy`.
//!
//! Without `--redis` the state is this process's own (a `MemoryStore`), as before.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tower_identity_proxy::{
    ProxyHandle,
    identity::CredentialStore,
    jwt::{KeySet, Rotation},
    proxy::Pseudonym,
    state::{MemoryStore, SharedState, StateError},
};

use crate::{Error, Options, args::UserSpec};

/// The state every replica shares, and whether this one is ready.
#[derive(Clone, Debug)]
pub(crate) struct Replicas {
    /// Changes the target, users and keys on every replica.
    pub(crate) shared: SharedState,
    /// Set once the command-line users and target have been written (if absent).
    seeded: Arc<AtomicBool>,
    /// The JWK Set's `Cache-Control: max-age`.
    pub(crate) jwks_max_age: Duration,
}

/// The store chosen on the command line.
pub(crate) enum Store {
    /// This process only.
    Memory,
    /// Redis, shared with the other replicas.
    #[cfg(feature = "redis")]
    Redis(tower_identity_proxy::state::RedisStore),
}

impl Store {
    /// `--redis URL`, else memory.
    ///
    /// # Errors
    ///
    /// An invalid URL, or `--redis` without the `redis` feature.
    pub(crate) fn from_options(opts: &Options) -> Result<Self, Error> {
        match &opts.redis {
            None => Ok(Self::Memory),
            #[cfg(feature = "redis")]
            Some(url) => Ok(Self::Redis(tower_identity_proxy::state::RedisStore::open(
                url,
            )?)),
            #[cfg(not(feature = "redis"))]
            Some(_) => {
                Err("--redis needs the `redis` feature (cargo run --features redis ...)".into())
            }
        }
    }

    /// Whether the replicas share it.
    pub(crate) fn is_shared(&self) -> bool {
        !matches!(self, Self::Memory)
    }

    /// The `Via` pseudonym every replica of the store uses, so that a loop through the
    /// balancer ends at the second pass, whichever replica it reaches.
    pub(crate) fn pseudonym(&self) -> Option<Pseudonym> {
        match self {
            Self::Memory => None,
            #[cfg(feature = "redis")]
            Self::Redis(store) => Some(store.pseudonym()),
        }
    }
}

impl Replicas {
    /// Joins the store; with a shared one, writes the command-line users and target once
    /// the state is read, unless the store has them already.
    pub(crate) fn join(
        store: Store,
        opts: &Options,
        handle: ProxyHandle,
        users: CredentialStore,
        keys: KeySet,
    ) -> Self {
        let seeded = Arc::new(AtomicBool::new(!store.is_shared()));
        let shared = match store {
            Store::Memory => SharedState::new(MemoryStore::new(), handle, users, keys),
            #[cfg(feature = "redis")]
            Store::Redis(store) => SharedState::new(store, handle, users, keys),
        };
        let replicas = Self {
            shared,
            seeded,
            jwks_max_age: Duration::from_secs(opts.jwks_max_age_secs),
        };
        if !replicas.seeded.load(Ordering::Acquire) {
            let (this, users, target) = (
                replicas.clone(),
                opts.server.users.clone(),
                opts.server.proxy_url.clone(),
            );
            tokio::spawn(async move { this.seed(users, target).await });
        }
        replicas
    }

    async fn seed(self, users: Vec<UserSpec>, target: Option<String>) {
        loop {
            while !self.shared.is_synced() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            match self.seed_once(&users, target.as_deref()).await {
                Ok(()) => break,
                Err(e @ StateError::Invalid(_)) => {
                    tracing::error!(error = %e, "command-line users and target refused");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "command-line users and target not written yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        self.seeded.store(true, Ordering::Release);
    }

    async fn seed_once(&self, users: &[UserSpec], target: Option<&str>) -> Result<(), StateError> {
        for user in users {
            self.shared
                .put_user_if_absent(&user.name, &user.password, user.roles.clone())
                .await?;
        }
        if let Some(url) = target {
            self.shared.set_target_if_absent(Some(url)).await?;
        }
        Ok(())
    }

    /// Whether `/proxy` can be served without a failed request.
    pub(crate) fn is_ready(&self) -> bool {
        self.seeded.load(Ordering::Acquire) && self.shared.is_ready()
    }
}

/// `GET /ready`: `200` once the replica can serve `/proxy` (state read, its signing key
/// published long enough), `503` before.
pub(crate) async fn ready(State(replicas): State<Replicas>) -> Response {
    if replicas.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

/// An admin change refused: `400` with the reason, or `503` when the shared state cannot
/// be reached (nothing changed).
pub(crate) fn refused(e: &StateError) -> Response {
    (e.status(), e.to_string()).into_response()
}

/// What `POST /admin/keys/rotate` answers: the new `kid`, when it signs, and every key
/// published now.
pub(crate) fn rotation_json(rotation: &Rotation, keys: &KeySet) -> Value {
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let signs_in = rotation
        .signs_from()
        .duration_since(std::time::SystemTime::now())
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
    json!({
        "kid": rotation.kid(),
        "signs_from": unix(rotation.signs_from()),
        "signs_in_seconds": signs_in,
        "published": keys.kids(),
    })
}
