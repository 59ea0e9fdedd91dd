//! Where the run-time state lives: the target, the published keys and the users, in this
//! process ([`MemoryStore`], the default) or shared by several replicas (`RedisStore`,
//! feature `redis`).
//!
//! The request path never asks the store anything. Each replica keeps the whole state in
//! its own [`ProxyHandle`], [`KeySet`] and [`CredentialStore`], which read it without a
//! lock; a [`SharedState`] writes each change to the store first and applies it here only
//! once the store has taken it, and the store tells every other replica, which applies it
//! through the same objects. A store that cannot be reached refuses the write
//! ([`StateError::Unavailable`]) and nothing changes; forwarding, signing and verifying
//! go on with the state last known.
//!
//! # Keys
//!
//! No private key leaves its replica. Each replica publishes its public key through the
//! store, and every replica's JWK Set and verifier cover every replica's keys. A replica
//! that joins signs only once its key has been published for the [rotation
//! delay](KeySet::rotation_delay) (at once for the first replica of an empty store, or for
//! a key already published, such as one read from a file every replica shares); until
//! then the proxy answers `503` and [`SharedState::is_ready`] is `false`. A rotation
//! publishes the new key everywhere first and signs with it after the delay. Each replica
//! renews its key's record every 30 s; the key of a replica that stopped (not renewed for 2
//! minutes) retires once the tokens it may have signed have expired.
//!
//! # Example
//!
//! ```
//! use tower_identity_proxy::{
//!     ProxyHandle, ProxyLayer,
//!     identity::CredentialStore,
//!     jwt::{KeyPair, KeySet, KeySigner},
//!     state::SharedState,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = KeySet::new(KeySigner::new(KeyPair::generate_ed25519()?));
//! let handle = ProxyHandle::new();
//! let proxy = ProxyLayer::new(keys.signer()).handle(handle.clone());
//! let users = CredentialStore::new();
//! // In memory: this process only. With the `redis` feature,
//! // `SharedState::new(RedisStore::open("redis://127.0.0.1:6379")?, ...)`.
//! let state = SharedState::in_memory(handle.clone(), users.clone(), keys.clone());
//! assert!(state.is_ready());
//!
//! state.set_target(Some("http://127.0.0.1:1991")).await?;
//! assert!(handle.is_enabled());
//! # let _ = proxy;
//! state.put_user("Alice", "abcdef123456", vec!["ROLE_USER".into()]).await?;
//! assert!(users.contains("Alice"));
//! let rotation = state.rotate(KeyPair::generate_ed25519()?).await?;
//! assert!(keys.kids().contains(&rotation.kid().to_owned()));
//! # Ok(()) }
//! ```
//!
//! # Trusting Redis
//!
//! - *Threat model.* Whoever can write to Redis can add a public key that every replica then
//!   publishes and accepts, change the target (which then receives the users' tokens) and add
//!   users: Redis is as trusted as the admin endpoints. Put it on a private network, with a
//!   password (`redis://:PASSWORD@HOST`) or ACL user, and keep it out of reach of the targets.
//!   Reading Redis gives public keys and Argon2id hashes only: no key that could sign a token
//!   and no password.
//! - *Shared key files instead.* `--keys DIR` on every replica, mounted from a Kubernetes
//!   Secret, gives all replicas one key: a replica that starts later finds it published
//!   already and is ready at once. The private key then lives in the Secret, guarded as such.
//!   Per-replica keys need no secret distribution; the cost is a wait at start (below).
//! - *Revocation* is immediate on every replica: `SharedState::revoke(kid)`.
//!
//!
//! # Rotation that JWKS clients survive
//!
//! A standard JWKS client caches the set and refetches it for an unknown `kid` at most once
//! per cool-down (PyJWT's `PyJWKClient`: the set cached 300 s, a refresh at most every 30 s;
//! `jose` alike). A key must therefore be published for longer than that, plus the JWK Set's
//! `max-age`, before it signs. `KeySet::rotate` publishes the new key at once and signs with it
//! after the rotation delay (default 95 s: 60 s `max-age`, 30 s cool-down, 5 s); the demo's
//! `POST /admin/keys/rotate` answers the new `kid` and `signs_from`. A replica that joins
//! others publishes its key the same way and is not ready until the delay has passed (the
//! first replica of an empty Redis signs at once: no target can have fetched a set without its
//! key). The previous key stays published until its tokens have expired.
//!
//!
//! # When Redis is down
//!
//! - Requests go on: forwarding, signing, Bearer verification and the JWK Set all use the
//!   state each replica holds in memory. `/ready` stays `200`.
//! - Changes are refused: the admin endpoints answer `503 The shared state cannot be reached;
//!   nothing was changed.` and nothing changes on the replica either, so no replica drifts
//!   from the others.
//! - Reconnection is automatic (backoff from 50 ms to 2 s); on reconnection each replica reads
//!   the whole state again and republishes its keys if Redis lost them. Use Redis persistence
//!   (`appendonly yes`): a Redis that comes back empty has no target and no users.
//! - A replica that starts while Redis is down stays not ready (`503`) until it has read the
//!   state.
//!
//! # Kubernetes
//!
//! ```text
//! apiVersion: apps/v1
//! kind: Deployment
//! metadata: { name: app }
//! spec:
//!   replicas: 3
//!   selector: { matchLabels: { app: app } }
//!   template:
//!     metadata: { labels: { app: app } }
//!     spec:
//!       containers:
//!         - name: app
//!           image: registry.example.com/app:1.0   # built with --features redis
//!           args: ["--listen", "0.0.0.0:8080", "--redis", "redis://redis:6379/0",
//!                  "--user", "admin:$(ADMIN_PASSWORD):ROLE_ADMIN,ROLE_USER"]
//!           env:
//!             - name: ADMIN_PASSWORD
//!               valueFrom: { secretKeyRef: { name: app-admin, key: password } }
//!           ports: [{ containerPort: 8080 }]
//!           readinessProbe:            # in the Service only once its key is published long enough
//!             httpGet: { path: /ready, port: 8080 }
//!             periodSeconds: 2
//!           livenessProbe:
//!             tcpSocket: { port: 8080 }
//! ---
//! apiVersion: v1
//! kind: Service
//! metadata: { name: app }
//! spec:
//!   selector: { app: app }
//!   ports: [{ port: 80, targetPort: 8080 }]
//! ---
//! apiVersion: apps/v1
//! kind: StatefulSet
//! metadata: { name: redis }
//! spec:
//!   serviceName: redis
//!   replicas: 1
//!   selector: { matchLabels: { app: redis } }
//!   template:
//!     metadata: { labels: { app: redis } }
//!     spec:
//!       containers:
//!         - name: redis
//!           image: redis:7
//!           args: ["--appendonly", "yes"]
//!           ports: [{ containerPort: 6379 }]
//!           volumeMounts: [{ name: data, mountPath: /data }]
//!   volumeClaimTemplates:
//!     - metadata: { name: data }
//!       spec: { accessModes: [ReadWriteOnce], resources: { requests: { storage: 1Gi } } }
//! ---
//! apiVersion: v1
//! kind: Service
//! metadata: { name: redis }
//! spec:
//!   selector: { app: redis }
//!   ports: [{ port: 6379 }]
//! ```
//!
//! Targets verify tokens with the JWK Set of the Service, `http://app/.well-known/jwks.json`
//! (any replica serves every replica's keys). With a rolling update, each new pod is ready
//! about 95 s after it starts (its key's rotation delay): set `maxUnavailable: 0` so that the
//! old pods serve meanwhile, or share one key through `--keys` to be ready at once. Behind an
//! Ingress that terminates TLS, name its pods' network with `--trusted-proxy CIDR` and the
//! app's origin with `--public-origin`, so that targets learn the origin clients used.
//!
//!
//! # Sizing
//!
//! - Per request: **zero Redis round trips**. The target, keys and users are read from memory
//!   without a lock, as with one process; Redis is touched only by changes and at
//!   (re)connection.
//! - Memory and Redis: the target is one string; a user is about 150 bytes (an Argon2id hash
//!   and its roles); a key is its public PEM (about 600 bytes for RSA-3072). Every replica
//!   holds everything: 10,000 users take a few megabytes per replica. The JWK Set lists each
//!   live replica's key, plus the previous keys of recent rotations and of replicas gone: a
//!   replica renews its key's record every 30 s; a key not renewed for 2 minutes (its replica
//!   stopped) retires once the tokens it may have signed have expired (token lifetime plus
//!   grace), and its record is deleted a minute later. Each renewal is one small write and
//!   one notification.
//! - A change costs one Redis script call (the write, a version number and the notification
//!   at once) and reaches each replica in one pub/sub message. A reconnection reads the whole
//!   state in one transaction.
//! - Client: the [`redis`](https://crates.io/crates/redis) crate (1.x): its
//!   `ConnectionManager` reconnects by itself, its pub/sub connection streams notifications,
//!   and it is the most used Redis client of the ecosystem; `fred` offers the same with more
//!   machinery (pools, its own reconnect policies) than one connection and one subscription
//!   need.

#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::redis::RedisStore;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::{
    error::{BoxError, ConfigError},
    identity::CredentialStore,
    jwt::{Algorithm, KeyPair, KeySet, KeySigner, PublicKey, Rotation, keyset::epoch_millis},
    proxy::handle::ProxyHandle,
    target::Target,
};

/// How often a replica renews the record of the key it signs with.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// How long a key's record may go without renewal before its replica counts as gone.
const STALE: Duration = Duration::from_secs(120);
/// How long a key's record stays in the store after its retirement.
const KEEP_RETIRED: Duration = Duration::from_secs(60);

/// A boxed future, as [`StateStore`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One change to the shared state, as written to a [`StateStore`] and sent to the other
/// replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// The target URL (validated), or `None`: the proxy is disabled.
    Target(Option<String>),
    /// A user added or replaced (`Some`), or removed (`None`).
    User {
        /// The user name.
        name: String,
        /// The password hash and roles.
        user: Option<StoredUser>,
    },
    /// Public keys published or updated (their retirement).
    Keys(Vec<StoredKey>),
    /// A key revoked: withdrawn at once.
    KeyRevoked(String),
    /// Keys whose retirement has passed, deleted from the store (each replica retired
    /// them already).
    KeysRetired(Vec<String>),
}

impl Change {
    /// The items it changes, for versioning: `target`, `user:NAME`, `key:KID`.
    fn items(&self) -> Vec<String> {
        match self {
            Self::Target(_) => vec!["target".to_owned()],
            Self::User { name, .. } => vec![format!("user:{name}")],
            Self::Keys(keys) => keys.iter().map(|k| format!("key:{}", k.kid)).collect(),
            Self::KeyRevoked(kid) => vec![format!("key:{kid}")],
            Self::KeysRetired(kids) => kids.iter().map(|kid| format!("key:{kid}")).collect(),
        }
    }
}

/// A user as stored: its password hash (a PHC string) and roles, never its password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    /// The Argon2 hash, a PHC string.
    pub hash: String,
    /// The roles.
    pub roles: Vec<String>,
}

impl fmt::Debug for StoredUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredUser")
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// A published public key as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Its `kid` (RFC 7638 thumbprint).
    pub kid: String,
    /// The algorithm it verifies, e.g. `RS512`.
    pub alg: String,
    /// The public key, SPKI PEM.
    pub public_pem: String,
    /// When its replica starts signing with it, in milliseconds since the Unix epoch.
    pub signs_from_ms: u64,
    /// When it stops being published, in milliseconds since the Unix epoch; `None` while
    /// its replica signs with it.
    pub retire_at_ms: Option<u64>,
    /// When its replica last said it still signs with it (every 30 s), in milliseconds
    /// since the Unix epoch: a key not renewed for 2 minutes belongs to a replica that is
    /// gone, and retires once the tokens it may have signed have expired.
    #[serde(default)]
    pub alive_ms: Option<u64>,
}

impl StoredKey {
    fn new(
        key: &PublicKey,
        alg: Algorithm,
        signs_from: SystemTime,
        retire_at: Option<SystemTime>,
    ) -> Self {
        Self {
            kid: key.kid().to_owned(),
            alg: alg.as_str().to_owned(),
            public_pem: key.to_pem(),
            signs_from_ms: epoch_millis(signs_from),
            retire_at_ms: retire_at.map(epoch_millis),
            alive_ms: retire_at.is_none().then(|| epoch_millis(SystemTime::now())),
        }
    }

    /// The key and algorithm, checked: its `kid` must be the key's thumbprint.
    fn parse(&self) -> Result<(PublicKey, Algorithm), ConfigError> {
        let key = PublicKey::from_pem(self.public_pem.as_bytes())?;
        let alg = Algorithm::from_name(&self.alg).ok_or_else(|| {
            ConfigError::InvalidKey(format!("unknown algorithm {}", self.alg).into())
        })?;
        if key.kid() != self.kid {
            return Err(ConfigError::InvalidKey(
                format!("the stored key {} has another thumbprint", self.kid).into(),
            ));
        }
        Ok((key, alg))
    }

    fn retire_at(&self) -> Option<SystemTime> {
        self.retire_at_ms.map(from_millis)
    }

    fn signs_from(&self) -> SystemTime {
        from_millis(self.signs_from_ms)
    }
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH)
}

/// The whole state as a store holds it, read at once: each item with the version of its
/// last change.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Names this store's data: a store emptied or replaced gets another one, and the
    /// versions start again.
    pub epoch: String,
    /// The version of the last change the snapshot includes.
    pub version: u64,
    /// Every item as a change that sets it, with its version.
    pub items: Vec<(u64, Change)>,
}

/// A change could not be made; nothing changed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StateError {
    /// The value was refused (a bad URL, user name or key): `400 Bad Request`.
    Invalid(ConfigError),
    /// The store could not be reached or refused the write: `503 Service Unavailable`.
    Unavailable(BoxError),
}

impl StateError {
    /// The status code an admin endpoint should answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(e) => e.fmt(f),
            Self::Unavailable(_) => {
                f.write_str("The shared state cannot be reached; nothing was changed.")
            }
        }
    }
}

impl std::error::Error for StateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Invalid(e) => Some(e),
            Self::Unavailable(e) => Some(&**e),
        }
    }
}

impl From<ConfigError> for StateError {
    fn from(e: ConfigError) -> Self {
        Self::Invalid(e)
    }
}

/// Where the shared state is kept, and how the replicas hear of changes.
///
/// Implemented by [`MemoryStore`] and, with the `redis` feature, `RedisStore`. A store
/// numbers changes with increasing versions; a replica applies an item's change only if
/// it is newer than the one it has, so a change seen twice, or late, changes nothing.
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// Stores `change` and tells the other replicas; returns its version. With
    /// `if_absent`, stores it only if none of its items exists yet (`Ok(None)` otherwise).
    fn write(
        &self,
        change: Change,
        if_absent: bool,
    ) -> BoxFuture<'_, Result<Option<u64>, BoxError>>;

    /// Starts feeding `replica`: [`Replica::sync`] with the whole state first and after
    /// every reconnection, [`Replica::apply`] for every change since (the replica's own
    /// included), [`Replica::disconnected`] when the store is lost. Called once.
    fn subscribe(&self, replica: Replica);

    /// Whether the replicas share this store (anything but memory): a replica then waits
    /// for the store before it serves.
    fn is_shared(&self) -> bool {
        true
    }
}

/// The state of this process only: every write succeeds at once. The default.
#[derive(Debug, Default)]
pub struct MemoryStore {
    version: AtomicU64,
}

impl MemoryStore {
    /// A new store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateStore for MemoryStore {
    fn write(&self, _: Change, _: bool) -> BoxFuture<'_, Result<Option<u64>, BoxError>> {
        let version = self.version.fetch_add(1, Ordering::AcqRel) + 1;
        Box::pin(std::future::ready(Ok(Some(version))))
    }

    fn subscribe(&self, replica: Replica) {
        replica.release();
    }

    fn is_shared(&self) -> bool {
        false
    }
}

/// This replica's side of a [`StateStore`]: applies the store's state and changes to the
/// target handle, the users and the keys. Handed to [`StateStore::subscribe`].
#[derive(Clone)]
pub struct Replica {
    inner: Arc<ReplicaInner>,
}

struct ReplicaInner {
    handle: ProxyHandle,
    users: CredentialStore,
    keys: KeySet,
    store: Mutex<Option<Weak<dyn StateStore>>>,
    /// The version of the last change applied to each item (deletions included).
    versions: Mutex<Versions>,
    synced: AtomicBool,
    connected: AtomicBool,
    /// The key records of the store, as last seen.
    records: Mutex<HashMap<String, StoredKey>>,
    /// Since when the store has been reachable, and when the own key was last renewed.
    upkeep: Mutex<Upkeep>,
}

#[derive(Default)]
struct Upkeep {
    connected_since: Option<SystemTime>,
    renewed: Option<SystemTime>,
}

#[derive(Default)]
struct Versions {
    epoch: Option<String>,
    items: HashMap<String, u64>,
}

impl fmt::Debug for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replica")
            .field("synced", &self.is_synced())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Whether the store's state has been applied once.
    pub fn is_synced(&self) -> bool {
        self.inner.synced.load(Ordering::Acquire)
    }

    /// Whether the store is reachable, as last seen.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// Whether the replica's [`SharedState`] still exists: a store stops feeding it once
    /// it is gone.
    pub fn is_alive(&self) -> bool {
        self.store().is_some()
    }

    fn store(&self) -> Option<Arc<dyn StateStore>> {
        self.inner
            .store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Weak::upgrade)
    }

    /// Nothing to wait for (a store of this process only): serve at once.
    fn release(&self) {
        let kid = self.inner.keys.active_kid();
        if self.inner.keys.signs_from().is_none() {
            self.inner.keys.hold_active(&kid, Some(SystemTime::now()));
        }
        self.inner.synced.store(true, Ordering::Release);
        self.inner.connected.store(true, Ordering::Release);
        self.inner.handle.set_ready(true);
    }

    /// The store was lost: the replica goes on with the state it has.
    pub fn disconnected(&self) {
        self.inner
            .upkeep
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connected_since = None;
        if self.inner.connected.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                target: "tower_identity_proxy",
                "shared state unreachable: serving the state last known, refusing changes"
            );
        }
    }

    /// Applies the change numbered `version` unless every item it touches already has a
    /// newer one.
    pub fn apply(&self, version: u64, change: Change) {
        let mut versions = self
            .inner
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let items = change.items();
        if items
            .iter()
            .all(|item| versions.items.get(item).is_some_and(|v| *v >= version))
        {
            return;
        }
        for item in items {
            let v = versions.items.entry(item).or_insert(0);
            *v = (*v).max(version);
        }
        self.apply_now(change);
    }

    fn apply_now(&self, change: Change) {
        let inner = &self.inner;
        match change {
            Change::Target(url) => match url.as_deref().map(Target::parse).transpose() {
                Ok(target) => {
                    if inner.handle.target().as_deref() != target.as_ref() {
                        inner.handle.set(target);
                    }
                }
                Err(e) => {
                    tracing::error!(target: "tower_identity_proxy", error = %e, "stored target refused")
                }
            },
            Change::User {
                name,
                user: Some(user),
            } => {
                if let Err(e) = inner.users.insert_hashed(&name, &user.hash, user.roles) {
                    tracing::error!(target: "tower_identity_proxy", error = %e, "stored user refused");
                }
            }
            Change::User { name, user: None } => {
                inner.users.remove(&name);
            }
            Change::Keys(keys) => {
                for key in keys {
                    self.apply_key(&key);
                    self.records().insert(key.kid.clone(), key);
                }
            }
            Change::KeyRevoked(kid) => {
                self.records().remove(&kid);
                if let Err(e) = inner.keys.revoke(&kid) {
                    tracing::error!(target: "tower_identity_proxy", error = %e, kid, "revocation not applied");
                }
            }
            Change::KeysRetired(kids) => {
                let mut records = self.records();
                for kid in kids {
                    records.remove(&kid);
                }
            }
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, StoredKey>> {
        self.inner.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply_key(&self, key: &StoredKey) {
        let keys = &self.inner.keys;
        let own = keys.own_keys();
        let is_own = own.active.0.keys().kid() == key.kid
            || own
                .pending
                .as_ref()
                .is_some_and(|(s, _)| s.keys().kid() == key.kid)
            || own.previous.iter().any(|(k, _, _)| k.kid() == key.kid);
        if is_own {
            return;
        }
        match key.parse() {
            Ok((public, alg)) => {
                if let Err(e) = keys.publish_shared(&public, alg, key.retire_at()) {
                    tracing::error!(target: "tower_identity_proxy", error = %e, "stored key refused");
                }
            }
            Err(e) => {
                tracing::error!(target: "tower_identity_proxy", error = %e, "stored key refused")
            }
        }
    }

    /// Applies the store's whole state (at start and after every reconnection), then
    /// publishes this replica's own keys if the store lacks them; the replica serves once
    /// this has succeeded.
    pub async fn sync(&self, snapshot: Snapshot) {
        let inner = &self.inner;
        {
            let mut versions = inner.versions.lock().unwrap_or_else(|e| e.into_inner());
            if versions.epoch.as_deref() != Some(snapshot.epoch.as_str()) {
                versions.items.clear();
                versions.epoch = Some(snapshot.epoch.clone());
            }
        }
        let mut stored_users = Vec::new();
        let mut stored_keys = Vec::new();
        let mut has_target = false;
        for (version, change) in &snapshot.items {
            match change {
                Change::Target(_) => has_target = true,
                Change::User { name, .. } => stored_users.push(name.clone()),
                Change::Keys(keys) => stored_keys.extend(keys.iter().cloned()),
                Change::KeyRevoked(_) | Change::KeysRetired(_) => {}
            }
            self.apply(*version, change.clone());
        }
        *self.records() = stored_keys
            .iter()
            .map(|k| (k.kid.clone(), k.clone()))
            .collect();
        {
            let mut upkeep = inner.upkeep.lock().unwrap_or_else(|e| e.into_inner());
            upkeep.connected_since.get_or_insert_with(SystemTime::now);
        }
        // What the store no longer has, unless changed here since the snapshot was read.
        let newer = |item: &str| {
            let versions = inner.versions.lock().unwrap_or_else(|e| e.into_inner());
            versions
                .items
                .get(item)
                .is_some_and(|v| *v > snapshot.version)
        };
        if !has_target && !newer("target") && inner.handle.is_enabled() {
            inner.handle.set(None);
        }
        for name in inner.users.names() {
            if !stored_users.contains(&name) && !newer(&format!("user:{name}")) {
                inner.users.remove(&name);
            }
        }
        // Collected first: the key set calls `keep` under its own lock.
        let newer_keys: Vec<String> = {
            let versions = inner.versions.lock().unwrap_or_else(|e| e.into_inner());
            versions
                .items
                .iter()
                .filter(|(item, v)| item.starts_with("key:") && **v > snapshot.version)
                .map(|(item, _)| item["key:".len()..].to_owned())
                .collect()
        };
        let lifetime = inner
            .keys
            .own_keys()
            .active
            .0
            .token_policy()
            .token_lifetime();
        inner.keys.retain_shared(
            &|kid| stored_keys.iter().any(|k| k.kid == kid) || newer_keys.iter().any(|k| k == kid),
            lifetime,
        );
        inner.connected.store(true, Ordering::Release);
        if let Err(e) = self.publish_own_keys(&stored_keys).await {
            tracing::warn!(target: "tower_identity_proxy", error = %e, "own keys not published yet");
            return;
        }
        inner.handle.set_ready(true);
        if !inner.synced.swap(true, Ordering::AcqRel) {
            tracing::info!(target: "tower_identity_proxy", "shared state synchronised");
        }
    }

    /// Upkeep of the keys in the store, for a store to call every few seconds while it is
    /// reachable: renews the record of the key this replica signs with (every 30 s),
    /// retires the keys of replicas gone (not renewed for 2 minutes: they retire once the
    /// tokens they may have signed have expired, plus the grace), and deletes the records
    /// retired a minute ago. A replica reachable for less than 2 minutes retires nothing:
    /// after an outage, the others must have had the time to renew theirs.
    ///
    /// # Errors
    ///
    /// A write the store refused.
    pub async fn maintain(&self) -> Result<(), BoxError> {
        self.maintain_at(SystemTime::now()).await
    }

    async fn maintain_at(&self, now: SystemTime) -> Result<(), BoxError> {
        if !self.is_synced() {
            return Ok(());
        }
        let store = self.store().ok_or("the shared state is gone")?;
        let keys = &self.inner.keys;
        let (renew, clean) = {
            let upkeep = self.inner.upkeep.lock().unwrap_or_else(|e| e.into_inner());
            let due = |since: Option<SystemTime>, every| {
                since.is_none_or(|t| now.duration_since(t).is_ok_and(|d| d >= every))
            };
            (
                due(upkeep.renewed, HEARTBEAT),
                upkeep.connected_since.is_some() && due(upkeep.connected_since, STALE),
            )
        };
        let own = keys.own_keys();
        let active_kid = own.active.0.keys().kid().to_owned();
        let pending_kid = own.pending.as_ref().map(|(s, _)| s.keys().kid().to_owned());
        if renew {
            // The key it signs with, and the one it will sign with (a rotation delay may be
            // longer than the time after which a key counts as its replica's no more).
            let renewed: Vec<StoredKey> = {
                let records = self.records();
                std::iter::once(&active_kid)
                    .chain(pending_kid.as_ref())
                    .filter_map(|kid| records.get(kid))
                    .filter(|record| record.retire_at_ms.is_none())
                    .map(|record| StoredKey {
                        alive_ms: Some(epoch_millis(now)),
                        ..record.clone()
                    })
                    .collect()
            };
            if !renewed.is_empty() {
                store.write(Change::Keys(renewed), false).await?;
                self.inner
                    .upkeep
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .renewed = Some(now);
            }
        }
        if !clean {
            return Ok(());
        }
        let lifetime = own.active.0.token_policy().token_lifetime();
        let grace = keys.grace();
        let is_own = |kid: &str| kid == active_kid || pending_kid.as_deref() == Some(kid);
        let (mut gone, mut deleted) = (Vec::new(), Vec::new());
        for record in self.records().values() {
            match record.retire_at() {
                Some(at) if at.checked_add(KEEP_RETIRED).is_some_and(|t| t < now) => {
                    deleted.push(record.kid.clone());
                }
                Some(_) => {}
                None if is_own(&record.kid) => {}
                None => {
                    let alive = from_millis(record.alive_ms.unwrap_or(record.signs_from_ms));
                    if alive.checked_add(STALE).is_some_and(|t| t < now) {
                        let mut record = record.clone();
                        let retire_at = alive
                            .checked_add(lifetime)
                            .and_then(|t| t.checked_add(grace))
                            .unwrap_or(now);
                        record.retire_at_ms = Some(epoch_millis(retire_at));
                        gone.push(record);
                    }
                }
            }
        }
        if !gone.is_empty() {
            tracing::info!(target: "tower_identity_proxy", keys = gone.len(), "retiring the keys of replicas gone");
            let version = store.write(Change::Keys(gone.clone()), false).await?;
            if let Some(version) = version {
                self.apply(version, Change::Keys(gone));
            }
        }
        if !deleted.is_empty() {
            let version = store
                .write(Change::KeysRetired(deleted.clone()), false)
                .await?;
            if let Some(version) = version {
                self.apply(version, Change::KeysRetired(deleted));
            }
        }
        Ok(())
    }

    /// Writes this replica's keys the store lacks; the active key signs from the time
    /// recorded for it.
    async fn publish_own_keys(&self, stored: &[StoredKey]) -> Result<(), BoxError> {
        let keys = &self.inner.keys;
        let store = self.store().ok_or("the shared state is gone")?;
        let own = keys.own_keys();
        let (active, signs_from) = own.active;
        let kid = active.keys().kid().to_owned();
        let now = SystemTime::now();
        let mut missing = Vec::new();
        match stored.iter().find(|k| k.kid == kid) {
            Some(record) => {
                keys.hold_active(&kid, Some(record.signs_from()));
                if record.retire_at_ms.is_some() {
                    // Retired by the others while this replica could not renew it: it
                    // still signs with it.
                    let mut record = record.clone();
                    record.retire_at_ms = None;
                    record.alive_ms = Some(epoch_millis(now));
                    missing.push(record);
                }
            }
            None => {
                // The first key of an empty store signs at once: no target can have
                // fetched a JWK Set without it. Any other waits for the rotation delay.
                let others = stored
                    .iter()
                    .any(|k| k.retire_at().is_none_or(|at| at > now));
                let from = match signs_from {
                    Some(at) if at <= now => at,
                    _ if !others => now,
                    _ => now.checked_add(keys.delay()).unwrap_or(now),
                };
                let record =
                    StoredKey::new(active.keys().public_key(), active.algorithm(), from, None);
                let version = store
                    .write(Change::Keys(vec![record.clone()]), true)
                    .await?;
                match version {
                    Some(_) => {
                        keys.hold_active(&kid, Some(from));
                        self.records().insert(kid.clone(), record);
                    }
                    // Published meanwhile (the same key on another replica): read it at the
                    // next sync; keep holding.
                    None => return Err("the key was published meanwhile".into()),
                }
            }
        }
        if let Some((pending, from)) = own.pending
            && !stored.iter().any(|k| k.kid == pending.keys().kid())
        {
            missing.push(StoredKey::new(
                pending.keys().public_key(),
                pending.algorithm(),
                from,
                None,
            ));
        }
        for (public, alg, retire_at) in own.previous {
            if !stored.iter().any(|k| k.kid == public.kid()) {
                missing.push(StoredKey::new(&public, alg, UNIX_EPOCH, retire_at));
            }
        }
        if !missing.is_empty() {
            store.write(Change::Keys(missing.clone()), false).await?;
            let mut records = self.records();
            for record in missing {
                records.insert(record.kid.clone(), record);
            }
        }
        Ok(())
    }
}

/// The target, users and keys of one replica, changed through a [`StateStore`] so that
/// every replica sharing it makes the same change. Cheap to clone.
///
/// Reads go to the objects themselves ([`ProxyHandle::target`], [`KeySet::jwks`],
/// [`CredentialStore::verify`]); changes made on them directly stay in this process.
///
/// See the [module docs](crate::state) for an example.
#[derive(Clone)]
pub struct SharedState {
    store: Arc<dyn StateStore>,
    replica: Replica,
}

impl fmt::Debug for SharedState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedState")
            .field("store", &self.store)
            .field("replica", &self.replica)
            .finish()
    }
}

impl SharedState {
    /// Joins the replicas sharing `store`. Until the store's state has been applied and
    /// this replica's key published long enough, the proxy answers `503 The proxy is not
    /// ready.` ([`ProxyHandle::is_ready`], [`KeySet::signs_from`]). Call it inside a Tokio
    /// runtime: a shared store starts a background task.
    pub fn new(
        store: impl StateStore,
        handle: ProxyHandle,
        users: CredentialStore,
        keys: KeySet,
    ) -> Self {
        let store: Arc<dyn StateStore> = Arc::new(store);
        if store.is_shared() {
            handle.set_ready(false);
            keys.hold_active(&keys.active_kid(), None);
        }
        let replica = Replica {
            inner: Arc::new(ReplicaInner {
                handle,
                users,
                keys,
                store: Mutex::new(Some(Arc::downgrade(&store))),
                versions: Mutex::default(),
                synced: AtomicBool::new(false),
                connected: AtomicBool::new(false),
                records: Mutex::default(),
                upkeep: Mutex::default(),
            }),
        };
        store.subscribe(replica.clone());
        Self { store, replica }
    }

    /// This process only, as without a [`SharedState`]: ready at once.
    pub fn in_memory(handle: ProxyHandle, users: CredentialStore, keys: KeySet) -> Self {
        Self::new(MemoryStore::new(), handle, users, keys)
    }

    /// The target handle.
    pub fn handle(&self) -> &ProxyHandle {
        &self.replica.inner.handle
    }

    /// The users.
    pub fn users(&self) -> &CredentialStore {
        &self.replica.inner.users
    }

    /// The keys.
    pub fn keys(&self) -> &KeySet {
        &self.replica.inner.keys
    }

    /// Whether the store's state has been applied (at least once).
    pub fn is_synced(&self) -> bool {
        self.replica.is_synced()
    }

    /// Whether the store is reachable, as last seen: changes are refused while it is not.
    pub fn is_connected(&self) -> bool {
        self.replica.is_connected()
    }

    /// Whether the proxy can serve without a failed request: the state is synchronised and
    /// this replica's key signs (published for the rotation delay). A readiness probe.
    pub fn is_ready(&self) -> bool {
        self.is_synced() && self.handle().is_ready() && self.keys().is_signing()
    }

    async fn write(&self, change: Change, if_absent: bool) -> Result<bool, StateError> {
        let version = self
            .store
            .write(change.clone(), if_absent)
            .await
            .map_err(|e| {
                tracing::warn!(target: "tower_identity_proxy", error = %e, "shared state write failed");
                StateError::Unavailable(e)
            })?;
        match version {
            Some(version) => {
                self.replica.apply(version, change);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Sets the target of every replica, or disables the proxy with `None`.
    ///
    /// # Errors
    ///
    /// [`StateError::Invalid`] for an invalid URL, [`StateError::Unavailable`] when the
    /// store cannot be reached; nothing changes then.
    pub async fn set_target(&self, url: Option<&str>) -> Result<(), StateError> {
        let target = url.map(Target::parse).transpose()?;
        let url = target.map(|t| t.as_str().to_owned());
        self.write(Change::Target(url), false).await.map(drop)
    }

    /// Sets the target unless the store has one (set or disabled) already: a start-up
    /// default. Returns whether it was set.
    ///
    /// # Errors
    ///
    /// As [`set_target`](Self::set_target).
    pub async fn set_target_if_absent(&self, url: Option<&str>) -> Result<bool, StateError> {
        let target = url.map(Target::parse).transpose()?;
        let url = target.map(|t| t.as_str().to_owned());
        self.write(Change::Target(url), true).await
    }

    /// Adds a user to every replica, or replaces its password and roles; returns whether
    /// it existed here. Hashes the password on a blocking thread: only the hash is stored.
    ///
    /// # Errors
    ///
    /// [`StateError::Invalid`] for a name [`CredentialStore::insert`] refuses,
    /// [`StateError::Unavailable`] when the store cannot be reached; nothing changes then.
    pub async fn put_user(
        &self,
        name: &str,
        password: &str,
        roles: Vec<String>,
    ) -> Result<bool, StateError> {
        let existed = self.users().contains(name);
        self.write_user(name, password, roles, false).await?;
        Ok(existed)
    }

    /// Adds a user unless the store has one of that name: a start-up default. Returns
    /// whether it was added.
    ///
    /// # Errors
    ///
    /// As [`put_user`](Self::put_user).
    pub async fn put_user_if_absent(
        &self,
        name: &str,
        password: &str,
        roles: Vec<String>,
    ) -> Result<bool, StateError> {
        self.write_user(name, password, roles, true).await
    }

    async fn write_user(
        &self,
        name: &str,
        password: &str,
        roles: Vec<String>,
        if_absent: bool,
    ) -> Result<bool, StateError> {
        let user = self.hash_user(name, password, roles).await?;
        let change = Change::User {
            name: name.to_owned(),
            user: Some(user),
        };
        self.write(change, if_absent).await
    }

    async fn hash_user(
        &self,
        name: &str,
        password: &str,
        roles: Vec<String>,
    ) -> Result<StoredUser, StateError> {
        let users = self.users().clone();
        let (name, password) = (name.to_owned(), password.to_owned());
        // Hashing a password is deliberately slow: keep it off the async workers.
        let hashed = tokio::task::spawn_blocking(move || {
            // The same checks as an insert, before anything is stored.
            let probe = CredentialStore::new();
            let hash = users.hash_password(&password)?;
            probe.insert_hashed(&name, &hash, roles.iter().map(String::as_str))?;
            Ok::<_, ConfigError>(StoredUser { hash, roles })
        })
        .await
        .map_err(|e| StateError::Unavailable(Box::new(e)))?;
        Ok(hashed?)
    }

    /// Removes a user from every replica; returns whether it existed here.
    ///
    /// # Errors
    ///
    /// [`StateError::Unavailable`] when the store cannot be reached; nothing changes then.
    pub async fn remove_user(&self, name: &str) -> Result<bool, StateError> {
        let existed = self.users().contains(name);
        self.write(
            Change::User {
                name: name.to_owned(),
                user: None,
            },
            false,
        )
        .await?;
        Ok(existed)
    }

    /// Rotates this replica's key to `keys` (same algorithm and token policy): published
    /// to every replica now, signing after the [rotation delay](KeySet::rotation_delay);
    /// the previous key retires once its tokens have expired.
    ///
    /// # Errors
    ///
    /// [`StateError::Invalid`] as [`KeySet::rotate`] refuses, [`StateError::Unavailable`]
    /// when the store cannot be reached; nothing changes then.
    pub async fn rotate(&self, keys: KeyPair) -> Result<Rotation, StateError> {
        let set = self.keys();
        let own = set.own_keys();
        let (active, _) = &own.active;
        let signer = KeySigner::with_algorithm(keys, active.algorithm())?
            .policy(active.token_policy().clone());
        let signs_from = SystemTime::now()
            .checked_add(set.delay())
            .unwrap_or(SystemTime::now());
        let grace = set.grace();
        let retire_at = signs_from
            .checked_add(active.token_policy().token_lifetime())
            .and_then(|t| t.checked_add(grace));
        let records = vec![
            StoredKey::new(
                signer.keys().public_key(),
                signer.algorithm(),
                signs_from,
                None,
            ),
            StoredKey::new(
                active.keys().public_key(),
                active.algorithm(),
                UNIX_EPOCH,
                retire_at,
            ),
        ];
        if set.kids().iter().any(|k| k == signer.keys().kid()) {
            return Err(StateError::Invalid(ConfigError::InvalidKey(
                format!("the key {} is already published", signer.keys().kid()).into(),
            )));
        }
        self.write(Change::Keys(records), false).await?;
        Ok(set.rotate_at(signer, signs_from)?)
    }

    /// Revokes a key on every replica at once (see [`KeySet::revoke`]); returns whether it
    /// was published here.
    ///
    /// # Errors
    ///
    /// [`StateError::Invalid`] for this replica's active key, or a key another replica
    /// signs with (renewed in the last 2 minutes: rotate it there first),
    /// [`StateError::Unavailable`] when the store cannot be reached; nothing changes then.
    pub async fn revoke(&self, kid: &str) -> Result<bool, StateError> {
        if self.keys().active_kid() == kid {
            return Err(StateError::Invalid(ConfigError::InvalidKey(
                "the active key cannot be revoked; rotate to another key first".into(),
            )));
        }
        let own = self.keys().own_keys();
        let is_own = own
            .pending
            .as_ref()
            .is_some_and(|(s, _)| s.keys().kid() == kid)
            || own.previous.iter().any(|(key, _, _)| key.kid() == kid);
        let signing_elsewhere = !is_own
            && self.replica.records().get(kid).is_some_and(|record| {
                record.retire_at_ms.is_none()
                    && record
                        .alive_ms
                        .map(from_millis)
                        .and_then(|alive| alive.checked_add(STALE))
                        .is_some_and(|until| until > SystemTime::now())
            });
        if signing_elsewhere {
            return Err(StateError::Invalid(ConfigError::InvalidKey(
                format!("the key {kid} signs on another replica; rotate it there first").into(),
            )));
        }
        let known = self.keys().kids().iter().any(|k| k == kid);
        self.write(Change::KeyRevoked(kid.to_owned()), false)
            .await?;
        Ok(known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{identity::Identity, jwt::JwtSigner};

    fn parts() -> (ProxyHandle, CredentialStore, KeySet) {
        let keys = KeySet::new(KeySigner::new(KeyPair::generate_ed25519().unwrap()))
            .rotation_delay(Duration::from_secs(3600));
        (ProxyHandle::new(), CredentialStore::new(), keys)
    }

    /// A store that is down: every write fails.
    #[derive(Debug)]
    struct Down;

    impl StateStore for Down {
        fn write(&self, _: Change, _: bool) -> BoxFuture<'_, Result<Option<u64>, BoxError>> {
            Box::pin(std::future::ready(Err("connection refused".into())))
        }

        fn subscribe(&self, _: Replica) {}
    }

    #[tokio::test]
    async fn in_memory_changes_apply_at_once() {
        let (handle, users, keys) = parts();
        let state = SharedState::in_memory(handle.clone(), users.clone(), keys.clone());
        assert!(state.is_ready() && state.is_synced() && state.is_connected());
        state
            .set_target(Some("http://127.0.0.1:1991/base/"))
            .await
            .unwrap();
        assert_eq!(
            handle.target().unwrap().as_str(),
            "http://127.0.0.1:1991/base"
        );
        let bad = state.set_target(Some("ftp://x")).await.unwrap_err();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert!(handle.is_enabled());

        assert!(
            !state
                .put_user("Alice", "pw-123456", vec!["ROLE_USER".into()])
                .await
                .unwrap()
        );
        assert!(
            state
                .put_user("Alice", "pw-654321", vec!["ROLE_USER".into()])
                .await
                .unwrap()
        );
        assert!(users.verify("Alice", "pw-654321").is_some());
        assert!(state.put_user("a:b", "pw", vec![]).await.is_err());
        assert!(state.remove_user("Alice").await.unwrap());
        assert!(!users.contains("Alice"));

        let first = keys.active_kid();
        let rotation = state
            .rotate(KeyPair::generate_ed25519().unwrap())
            .await
            .unwrap();
        assert_eq!(keys.kids(), [first.clone(), rotation.kid().to_owned()]);
        assert_eq!(keys.active_kid(), first, "signing after the delay");
        assert!(state.revoke(&first).await.is_err(), "the active key");
        assert!(state.revoke(rotation.kid()).await.unwrap());
        assert_eq!(keys.kids(), [first]);
    }

    #[tokio::test]
    async fn a_store_that_is_down_refuses_changes_and_nothing_changes() {
        let (handle, users, keys) = parts();
        handle.set_target(Some("http://127.0.0.1:1")).unwrap();
        users.insert("Bob", "pw-123456", ["ROLE_USER"]).unwrap();
        let state = SharedState::new(Down, handle.clone(), users.clone(), keys.clone());
        // Never synchronised: not ready, the proxy answers 503, the key does not sign.
        assert!(!state.is_ready() && !handle.is_ready());
        let held = keys.signer().sign(&Identity::new("u", ["R"])).await;
        assert!(held.is_err_and(|e| e.is_not_ready()));

        let kids = keys.kids();
        for refused in [
            state.set_target(None).await.unwrap_err(),
            state
                .put_user("Carol", "pw-123456", vec![])
                .await
                .unwrap_err(),
            state.remove_user("Bob").await.unwrap_err(),
            state
                .rotate(KeyPair::generate_ed25519().unwrap())
                .await
                .unwrap_err(),
            state.revoke("some-kid").await.unwrap_err(),
        ] {
            assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                refused.to_string(),
                "The shared state cannot be reached; nothing was changed."
            );
        }
        assert!(handle.is_enabled());
        assert!(users.contains("Bob") && !users.contains("Carol"));
        assert_eq!(keys.kids(), kids);
    }

    #[tokio::test]
    async fn changes_apply_in_version_order_and_a_sync_replaces_the_state() {
        let (handle, users, keys) = parts();
        let state = SharedState::new(Down, handle.clone(), users.clone(), keys.clone());
        let replica = state.replica.clone();
        let target = |url: &str| Change::Target(Some(url.to_owned()));
        replica.apply(5, target("http://127.0.0.1:5"));
        replica.apply(4, target("http://127.0.0.1:4"));
        assert_eq!(
            handle.target().unwrap().as_str(),
            "http://127.0.0.1:5",
            "late"
        );
        replica.apply(6, target("http://127.0.0.1:6"));
        assert_eq!(handle.target().unwrap().as_str(), "http://127.0.0.1:6");

        let hash = users.hash_password("pw-123456").unwrap();
        let user = |name: &str| Change::User {
            name: name.to_owned(),
            user: Some(StoredUser {
                hash: hash.clone(),
                roles: vec!["ROLE_USER".into()],
            }),
        };
        replica.apply(7, user("Alice"));
        replica.apply(8, user("Bob"));
        assert!(users.verify("Alice", "pw-123456").is_some());

        // Another replica's key, then a snapshot without it and without Bob: both go (the
        // key once its tokens may have expired), Alice stays.
        let other = KeyPair::generate_ed25519().unwrap();
        let record = StoredKey::new(other.public_key(), Algorithm::EdDSA, UNIX_EPOCH, None);
        replica.apply(9, Change::Keys(vec![record]));
        assert!(keys.kids().contains(&other.kid().to_owned()));
        assert!(keys.verifier().knows_kid(other.kid()));
        let snapshot = Snapshot {
            epoch: "e1".into(),
            version: 9,
            items: vec![(6, target("http://127.0.0.1:6")), (7, user("Alice"))],
        };
        // The write of its own key fails (the store is down): synchronised, not ready.
        replica.sync(snapshot).await;
        assert!(users.contains("Alice") && !users.contains("Bob"));
        assert!(!state.is_ready());
        assert!(
            keys.kids().contains(&other.kid().to_owned()),
            "retiring, not gone"
        );

        // A new epoch (Redis emptied): versions start again.
        let snapshot = Snapshot {
            epoch: "e2".into(),
            version: 1,
            items: vec![(1, target("http://127.0.0.1:1"))],
        };
        replica.sync(snapshot).await;
        assert_eq!(handle.target().unwrap().as_str(), "http://127.0.0.1:1");
        assert!(!users.contains("Alice"));
    }

    /// A store that takes every write and remembers it.
    #[derive(Debug, Default)]
    struct Recording {
        writes: Mutex<Vec<Change>>,
    }

    impl StateStore for Recording {
        fn write(&self, change: Change, _: bool) -> BoxFuture<'_, Result<Option<u64>, BoxError>> {
            let mut writes = self.writes.lock().unwrap();
            writes.push(change);
            let version = 100 + writes.len() as u64;
            Box::pin(std::future::ready(Ok(Some(version))))
        }

        fn subscribe(&self, _: Replica) {}
    }

    #[tokio::test]
    async fn keys_of_replicas_gone_retire_and_their_records_go() {
        let (handle, users, keys) = parts();
        let store = Arc::new(Recording::default());
        // The state holds the store through a handle to the same recording.
        #[derive(Debug)]
        struct Shared(Arc<Recording>);
        impl StateStore for Shared {
            fn write(&self, c: Change, a: bool) -> BoxFuture<'_, Result<Option<u64>, BoxError>> {
                self.0.write(c, a)
            }
            fn subscribe(&self, _: Replica) {}
        }
        let state = SharedState::new(Shared(store.clone()), handle, users, keys.clone());
        let replica = state.replica.clone();
        let now = SystemTime::now();
        let other = KeyPair::generate_ed25519().unwrap();
        let mut record = StoredKey::new(other.public_key(), Algorithm::EdDSA, UNIX_EPOCH, None);
        record.alive_ms = Some(epoch_millis(now - Duration::from_secs(600)));
        let snapshot = Snapshot {
            epoch: "e".into(),
            version: 1,
            items: vec![(1, Change::Keys(vec![record.clone()]))],
        };
        replica.sync(snapshot).await;
        assert!(state.is_synced());
        let live = KeyPair::generate_ed25519().unwrap();
        let record_live = StoredKey::new(live.public_key(), Algorithm::EdDSA, UNIX_EPOCH, None);
        replica.apply(2, Change::Keys(vec![record_live]));
        let refused = state.revoke(live.kid()).await.unwrap_err().to_string();
        assert!(refused.contains("signs on another replica"), "{refused}");
        replica.apply(3, Change::KeysRetired(vec![live.kid().to_owned()]));
        assert!(keys.kids().contains(&other.kid().to_owned()));
        // Its own key published (to sign after the delay: another replica's key is live),
        // then renewed on the first upkeep.
        let own = keys.active_kid();
        replica.maintain_at(now).await.unwrap();
        {
            let writes = store.writes.lock().unwrap();
            assert!(matches!(&writes[0], Change::Keys(k) if k[0].kid == own));
            assert!(
                matches!(&writes[1], Change::Keys(k) if k[0].kid == own && k[0].alive_ms == Some(epoch_millis(now)))
            );
            assert_eq!(writes.len(), 2, "connected too shortly to retire anything");
        }
        // Two minutes later: the other replica has not renewed its key for 12 minutes.
        let later = now + STALE + Duration::from_secs(1);
        replica.maintain_at(later).await.unwrap();
        let retire_at = {
            let writes = store.writes.lock().unwrap();
            let Change::Keys(gone) = writes.last().unwrap() else {
                panic!("{writes:?}")
            };
            assert_eq!(gone[0].kid, other.kid());
            gone[0].retire_at().unwrap()
        };
        // The tokens it may have signed until it was last seen expire first.
        let alive = from_millis(record.alive_ms.unwrap());
        assert_eq!(
            epoch_millis(retire_at),
            epoch_millis(alive + Duration::from_secs(300) + keys.grace())
        );
        // Seen 10 minutes ago, its tokens have all expired: retired here at once.
        assert!(retire_at < SystemTime::now());
        assert_eq!(keys.retire_expired(), 1);
        assert!(!keys.kids().contains(&other.kid().to_owned()));
        // A minute after its retirement (already past here): its record is deleted.
        let last = (retire_at + KEEP_RETIRED + Duration::from_secs(1)).max(later);
        replica.maintain_at(last).await.unwrap();
        let writes = store.writes.lock().unwrap();
        assert_eq!(
            writes.last(),
            Some(&Change::KeysRetired(vec![other.kid().to_owned()]))
        );
    }

    #[test]
    fn stored_keys_must_match_their_kid() {
        let a = KeyPair::generate_ed25519().unwrap();
        let b = KeyPair::generate_ed25519().unwrap();
        let mut record = StoredKey::new(a.public_key(), Algorithm::EdDSA, UNIX_EPOCH, None);
        assert!(record.parse().is_ok());
        record.kid = b.kid().to_owned();
        assert!(record.parse().is_err());
        let debug = format!(
            "{:?}",
            StoredUser {
                hash: "$argon2id$secret".into(),
                roles: vec![]
            }
        );
        assert!(!debug.contains("argon2"), "{debug}");
    }
}
