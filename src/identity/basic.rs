//! HTTP Basic authentication against a [`CredentialStore`].

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    sync::{
        Arc, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use http::{HeaderValue, request::Parts};
use tokio::sync::Semaphore;

use super::{
    ExtractResult, Identity, IdentityExtractor, Rejection,
    clock::Clock,
    credentials_for,
    failures::{self, Failures, Rate},
    verified::{self, VerifiedCredentials},
};
use crate::error::ConfigError;

/// Users with their password hashes and roles, changeable at run time.
///
/// Passwords are kept only as Argon2id hashes (PHC strings, random salt each); a
/// verification compares in constant time and costs the same for unknown users as for known
/// ones, so timing does not tell which users exist. Cheap to clone: clones share the users.
///
/// Every change ([`insert`](Self::insert), [`insert_hashed`](Self::insert_hashed),
/// [`remove`](Self::remove)) takes effect at once for the extractors that use the store: a
/// [`BasicAuth`] forgets the user's cached password before the change returns, and a
/// [`BearerJwt`](super::BearerJwt) following the store ([`BearerJwt::users`]) refuses the
/// tokens of a user removed, or given other roles, since they were signed. For that, the
/// store remembers the names it removed (not their passwords or roles) until they are
/// added again.
///
/// [`BearerJwt::users`]: super::BearerJwt::users
///
/// # Example
///
/// ```
/// use tower_identity_proxy::identity::CredentialStore;
///
/// let users = CredentialStore::new();
/// users.insert("Alice", "abcdef123456", ["ROLE_USER", "ROLE_WONDERLAND"])?;
/// assert_eq!(users.verify("Alice", "abcdef123456").unwrap().roles(), ["ROLE_USER", "ROLE_WONDERLAND"]);
/// assert!(users.verify("Alice", "wrong").is_none());
/// users.remove("Alice");
/// assert!(users.verify("Alice", "abcdef123456").is_none());
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct CredentialStore {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    users: RwLock<Users>,
    hasher: Box<dyn SlowHash>,
    /// Verified against when the user does not exist, to keep the timing equal.
    dummy: String,
    /// Gives each stored user record a number of its own.
    versions: AtomicU64,
    /// The verified-credential caches of the extractors that use this store, told of every
    /// change while the change is being made.
    caches: std::sync::Mutex<Vec<Weak<VerifiedCredentials>>>,
}

#[derive(Default)]
struct Users {
    active: HashMap<String, User>,
    /// Names removed and not added again, with when they were last removed.
    removed: HashMap<String, u64>,
}

struct User {
    hash: String,
    roles: Arc<[String]>,
    /// Which record this is: a change makes a new one.
    version: u64,
    /// When a user of that name was last removed (seconds since the epoch), if ever.
    removed_at: Option<u64>,
}

/// The slow hash: Argon2 in the crate, a counting one in tests.
trait SlowHash: Send + Sync + 'static {
    fn hash(&self, password: &[u8]) -> Option<String>;
    fn verify(&self, password: &[u8], hash: &PasswordHash<'_>) -> bool;
}

impl SlowHash for Argon2<'static> {
    fn hash(&self, password: &[u8]) -> Option<String> {
        let salt = SaltString::generate(&mut OsRng);
        self.hash_password(password, &salt)
            .ok()
            .map(|h| h.to_string())
    }

    fn verify(&self, password: &[u8], hash: &PasswordHash<'_>) -> bool {
        self.verify_password(password, hash).is_ok()
    }
}

fn epoch_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl CredentialStore {
    /// An empty store using Argon2id with the `argon2` crate's default (OWASP) parameters.
    pub fn new() -> Self {
        Self::with_hasher(Argon2::default())
    }

    /// An empty store using these Argon2 parameters.
    pub fn with_hasher(hasher: Argon2<'static>) -> Self {
        Self::with_slow_hash(Box::new(hasher))
    }

    fn with_slow_hash(hasher: Box<dyn SlowHash>) -> Self {
        let dummy = hasher.hash(b"not a password").unwrap_or_default();
        Self {
            inner: Arc::new(StoreInner {
                users: RwLock::new(Users::default()),
                hasher,
                dummy,
                versions: AtomicU64::new(1),
                caches: std::sync::Mutex::new(Vec::new()),
            }),
        }
    }

    fn check_name(name: &str) -> Result<(), ConfigError> {
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
            return Err(ConfigError::InvalidSetting {
                name: "user name",
                reason: "a user name must be non-empty, without ':' or control characters".into(),
            });
        }
        Ok(())
    }

    /// The PHC string of `password` hashed with this store's parameters and a fresh salt:
    /// what [`insert_hashed`](Self::insert_hashed) takes (to hash once and store the
    /// result in several places, such as other replicas).
    ///
    /// Slow by design, like [`insert`](Self::insert).
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] if hashing fails.
    pub fn hash_password(&self, password: &str) -> Result<String, ConfigError> {
        self.inner
            .hasher
            .hash(password.as_bytes())
            .ok_or_else(|| ConfigError::InvalidSetting {
                name: "password",
                reason: "the password could not be hashed".into(),
            })
    }

    /// Adds a user or replaces its password and roles.
    ///
    /// Hashing is deliberately slow (tens of milliseconds): call this from a blocking
    /// context (`tokio::task::spawn_blocking`) in async code.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] for an empty user name, a name containing `:` (which
    /// Basic authentication cannot carry) or control characters, or if hashing fails.
    pub fn insert<R: Into<String>>(
        &self,
        name: &str,
        password: &str,
        roles: impl IntoIterator<Item = R>,
    ) -> Result<(), ConfigError> {
        Self::check_name(name)?;
        let hash = self.hash_password(password)?;
        self.store(name, hash, roles);
        Ok(())
    }

    /// Adds a user or replaces its password and roles, with a password already hashed: a
    /// PHC string such as [`hash_password`](Self::hash_password) returns
    /// (`$argon2id$v=19$...`), verified with the parameters it names. Fast: nothing is
    /// hashed.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] for a user name [`insert`](Self::insert) refuses, or
    /// a hash that is not an Argon2 PHC string.
    pub fn insert_hashed<R: Into<String>>(
        &self,
        name: &str,
        phc: &str,
        roles: impl IntoIterator<Item = R>,
    ) -> Result<(), ConfigError> {
        Self::check_name(name)?;
        let parsed = PasswordHash::new(phc).map_err(|_| ConfigError::InvalidSetting {
            name: "password hash",
            reason: "not a PHC string".into(),
        })?;
        if !parsed.algorithm.as_str().starts_with("argon2") || parsed.hash.is_none() {
            return Err(ConfigError::InvalidSetting {
                name: "password hash",
                reason: "not an Argon2 hash".into(),
            });
        }
        self.store(name, phc.to_owned(), roles);
        Ok(())
    }

    fn store<R: Into<String>>(&self, name: &str, hash: String, roles: impl IntoIterator<Item = R>) {
        let roles = Identity::new(name, roles).roles;
        let version = self.inner.versions.fetch_add(1, Ordering::Relaxed);
        let mut users = self.inner.users.write().unwrap_or_else(|e| e.into_inner());
        let removed_at = match users.active.get(name) {
            Some(was) => was.removed_at,
            None => users.removed.remove(name),
        };
        users.active.insert(
            name.to_owned(),
            User {
                hash,
                roles,
                version,
                removed_at,
            },
        );
        self.changed(name);
    }

    /// Removes a user; returns whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        let mut users = self.inner.users.write().unwrap_or_else(|e| e.into_inner());
        let existed = users.active.remove(name).is_some();
        if existed {
            users
                .removed
                .insert(name.to_owned(), epoch_secs(SystemTime::now()));
        }
        self.changed(name);
        existed
    }

    /// Tells the caches that `name` changed. Called with the users locked for writing, so
    /// that no password checked before the change can be cached after it (see
    /// [`while_current`](Self::while_current)).
    fn changed(&self, name: &str) {
        let caches = self.inner.caches.lock().unwrap_or_else(|e| e.into_inner());
        for cache in caches.iter().filter_map(Weak::upgrade) {
            cache.invalidate(name);
        }
    }

    /// Tells `cache` of every change from now on.
    fn subscribe(&self, cache: &Arc<VerifiedCredentials>) {
        let mut caches = self.inner.caches.lock().unwrap_or_else(|e| e.into_inner());
        caches.retain(|c| c.strong_count() > 0);
        caches.push(Arc::downgrade(cache));
    }

    /// The names of the users, in no particular order.
    pub fn names(&self) -> Vec<String> {
        let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
        users.active.keys().cloned().collect()
    }

    /// Whether a user of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
        users.active.contains_key(name)
    }

    /// Checks a name and password; the identity when they match.
    ///
    /// Slow by design, like [`insert`](Self::insert).
    pub fn verify(&self, name: &str, password: &str) -> Option<Identity> {
        self.verify_versioned(name, password)
            .map(|(identity, _)| identity)
    }

    /// [`verify`](Self::verify), with the version of the record that matched.
    fn verify_versioned(&self, name: &str, password: &str) -> Option<(Identity, u64)> {
        let (hash, found) = {
            let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
            match users.active.get(name) {
                Some(u) => (u.hash.clone(), Some((u.roles.clone(), u.version))),
                None => (self.inner.dummy.clone(), None),
            }
        };
        let parsed = PasswordHash::new(&hash).ok()?;
        let ok = self.inner.hasher.verify(password.as_bytes(), &parsed);
        match (ok, found) {
            (true, Some((roles, version))) => Some((
                Identity::from_parts(name.into(), roles, None, None),
                version,
            )),
            _ => None,
        }
    }

    /// Runs `f` if `name`'s record is still `version`, holding the users so that no change
    /// happens meanwhile.
    fn while_current(&self, name: &str, version: u64, f: impl FnOnce()) {
        let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
        if users.active.get(name).is_some_and(|u| u.version == version) {
            f();
        }
    }

    /// Whether a token issued at `issued_at` (its `iat`, seconds since the epoch) for
    /// `name` with `roles` still speaks for a user of this store:
    /// - `false` if the store removed that name and has not added it again, or if the user
    ///   now has other roles;
    /// - `false` if the name was removed, then added again, and the token was issued no
    ///   later than that removal (by its `iat`, which a signer back-dates: 10 s by default,
    ///   so a token signed within that time after a removal is refused too);
    /// - `true` for a name the store never held (the anonymous user, users of an identity
    ///   provider), and for a user as the token names it.
    ///
    /// A changed password alone does not refuse a token.
    pub fn vouches_for(&self, name: &str, roles: &[String], issued_at: u64) -> bool {
        let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
        match users.active.get(name) {
            Some(user) => *user.roles == *roles && user.removed_at.is_none_or(|at| issued_at > at),
            None => !users.removed.contains_key(name),
        }
    }
}

impl Default for CredentialStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("CredentialStore")
            .field("users", &users.active.len())
            .finish_non_exhaustive()
    }
}

/// HTTP Basic authentication (RFC 7617) against a [`CredentialStore`].
///
/// No `Authorization` header, or another scheme: no identity (the next extractor is asked).
/// Malformed Basic credentials or a wrong user or password: `401` with
/// `WWW-Authenticate: Basic realm="…", charset="UTF-8"`, the challenge it also names when a
/// chain finds no credentials.
///
/// # The slow hash, bounded
///
/// The password check runs on tokio's blocking pool, never on the async workers, and at
/// most [`max_concurrent_checks`](Self::max_concurrent_checks) of them run at once (one per
/// CPU by default); further requests wait their turn. Anyone may send credentials to a
/// proxy that needs no login, and each Argon2id check takes tens of milliseconds and about
/// 19 MiB: unbounded, a flood of wrong passwords would fill tokio's blocking pool (up to 512
/// threads) and gigabytes of memory. A check whose request is abandoned keeps its place
/// until the hash is done, so dropped connections cannot slip past the bound. At most
/// [`max_queued_checks`](Self::max_queued_checks) requests wait for a turn (128 by
/// default); more are answered `503 Service Unavailable` at once.
///
/// # Verified credentials are cached
///
/// After a successful check, the same user name and password are recognised without the
/// slow hash for [5 minutes](Self::credential_cache) (at most 1024 users by default): the
/// cache keeps, per user, the HMAC-SHA256 of the name and password under a key drawn at
/// random when the extractor is made, compared in constant time, and the identity. It never
/// keeps the password or the slow hash, and never answers another password: a wrong
/// password for a cached user goes to the slow hash, and fails there. A change to the user
/// in the store ([`insert`](CredentialStore::insert),
/// [`insert_hashed`](CredentialStore::insert_hashed), [`remove`](CredentialStore::remove))
/// forgets the entry before it returns. Cached checks never wait behind slow-hash work.
///
/// The trade-off: a memory dump of the process holds, for each recently signed-in user, a
/// keyed hash of their password. It cannot be searched for passwords without the key, which
/// the same dump holds: with both, guessing a password costs one fast hash per guess
/// instead of one Argon2id check. Turn the cache off with
/// [`credential_cache(Duration::ZERO, 0)`](Self::credential_cache): every request then pays
/// the slow hash.
///
/// # Failed sign-ins are limited before the slow hash
///
/// A request that is not answered from the cache is counted against its user name and its
/// client address (when [`client_address`](Self::client_address) says how to find it):
/// past [10 failures for a name](Self::failures_per_name) (then one more every 6 s) or
/// [20 from an address](Self::failures_per_address) (then one every 3 s), it is answered
/// `429 Too Many Requests` with `Retry-After`, after a [delay](Self::refusal_delay) (1 s by
/// default, so that a client hammering the proxy is slowed rather than answered at once),
/// and never reaches the slow hash. A successful sign-in is not counted. So that a flood
/// against one name does not lock its user out, the name's limit does not apply to a
/// request from an address without recent failures; users whose credentials are cached
/// are never limited at all. Without a client address only the name's limit applies.
///
/// ```
/// use std::{net::SocketAddr, time::Duration};
/// use tower_identity_proxy::identity::{BasicAuth, CredentialStore};
///
/// # #[derive(Clone)] struct ConnectInfo(SocketAddr);
/// let auth = BasicAuth::new(CredentialStore::new())
///     // axum's `ConnectInfo<SocketAddr>`, say
///     .client_address(|parts| parts.extensions.get::<ConnectInfo>().map(|c| c.0.ip()))
///     .credential_cache(Duration::from_secs(60), 256)
///     .failures_per_name(5, Duration::from_secs(12));
/// # let _ = auth;
/// ```
#[derive(Clone)]
pub struct BasicAuth {
    store: CredentialStore,
    challenge: HeaderValue,
    checks: Arc<Checks>,
    cache: Option<Arc<VerifiedCredentials>>,
    failures: Arc<Failures>,
    client_address: Option<ClientAddress>,
    refusal_delay: Duration,
    clock: Clock,
}

/// A function that finds the client's address in a request's head.
type ClientAddress = Arc<dyn Fn(&Parts) -> Option<IpAddr> + Send + Sync>;

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("store", &self.store)
            .field("challenge", &self.challenge)
            .field("checks", &self.checks)
            .field("cache", &self.cache)
            .field("failures", &self.failures)
            .field("client_address", &self.client_address.is_some())
            .field("refusal_delay", &self.refusal_delay)
            .finish()
    }
}

/// The password checks of a [`BasicAuth`] and its clones.
#[derive(Debug)]
struct Checks {
    /// One per check that may run at once.
    slots: Arc<Semaphore>,
    /// How many there are in all.
    slot_count: usize,
    /// Requests waiting for a slot.
    queued: std::sync::atomic::AtomicUsize,
    max_queued: usize,
}

impl Checks {
    fn new(slots: usize, max_queued: usize) -> Arc<Self> {
        let slot_count = slots.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(slot_count)),
            slot_count,
            queued: 0.into(),
            max_queued,
        })
    }
}

/// Too many requests already wait for a password check.
#[derive(Debug, PartialEq, Eq)]
struct Busy;

/// Counts a request as waiting for a slot until it gets one or gives up.
struct Queued<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Runs `f` on tokio's blocking pool once one of `checks.slots` is free (see
/// [`run_holding`]), unless `checks.max_queued` requests already wait for a slot:
/// `Err(Busy)` at once then. `Ok(None)` if `f` panicked (or the semaphore was closed, which
/// this crate never does).
async fn queued_blocking<T: Send + 'static>(
    checks: &Checks,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<Option<T>, Busy> {
    use std::sync::atomic::Ordering::AcqRel;
    if let Ok(slot) = Arc::clone(&checks.slots).try_acquire_owned() {
        return Ok(run_holding(slot, f).await);
    }
    if checks.queued.fetch_add(1, AcqRel) >= checks.max_queued {
        checks.queued.fetch_sub(1, AcqRel);
        return Err(Busy);
    }
    let queued = Queued(&checks.queued);
    let Ok(slot) = Arc::clone(&checks.slots).acquire_owned().await else {
        return Ok(None);
    };
    drop(queued);
    Ok(run_holding(slot, f).await)
}

impl BasicAuth {
    /// Basic authentication against `store`, realm `proxy`, with the default cache and
    /// limits (see above).
    pub fn new(store: CredentialStore) -> Self {
        Self::with_clock(store, Clock::default())
    }

    fn with_clock(store: CredentialStore, clock: Clock) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let auth = Self {
            store,
            challenge: HeaderValue::from_static(r#"Basic realm="proxy", charset="UTF-8""#),
            checks: Checks::new(cpus, DEFAULT_MAX_QUEUED),
            cache: None,
            failures: Arc::new(Failures::new(
                failures::PER_NAME,
                failures::PER_ADDRESS,
                failures::MAX_TRACKED,
                clock.clone(),
            )),
            client_address: None,
            refusal_delay: DEFAULT_REFUSAL_DELAY,
            clock,
        };
        auth.credential_cache(verified::DEFAULT_TTL, verified::DEFAULT_CAPACITY)
    }

    /// How many password checks may run at once, shared by the clones of this extractor.
    /// Default is the number of CPUs this process may use. `0` is taken as `1`.
    pub fn max_concurrent_checks(mut self, max: usize) -> Self {
        self.checks = Checks::new(max, self.checks.max_queued);
        self
    }

    /// How many requests may wait for a password check while the
    /// [`max_concurrent_checks`](Self::max_concurrent_checks) run, shared by the clones of
    /// this extractor; more are answered `503` at once. Default is 128.
    pub fn max_queued_checks(mut self, max: usize) -> Self {
        self.checks = Checks::new(self.checks.slot_count, max);
        self
    }

    /// Recognises a verified user name and password for `ttl` without the slow hash,
    /// keeping at most `capacity` users (when full, expired entries go first, then the
    /// oldest). Default: 5 minutes, 1024 users. A zero `ttl` or `capacity` turns the cache
    /// off. See [the type's docs](Self#verified-credentials-are-cached) for what it keeps.
    /// The cache is shared by the clones of this extractor; this makes a new, empty one.
    pub fn credential_cache(mut self, ttl: Duration, capacity: usize) -> Self {
        self.cache = VerifiedCredentials::new(ttl, capacity, self.clock.clone()).map(Arc::new);
        if let Some(cache) = &self.cache {
            self.store.subscribe(cache);
        }
        self
    }

    /// How many failed sign-ins one user name may have in a row (`burst`), and how often
    /// it earns one more back (`every`); past that, requests for it are answered `429`
    /// before the slow hash, except from addresses without recent failures. Default: 10,
    /// then one every 6 seconds. A zero `burst` or `every` turns this limit off. The counts
    /// are shared by the clones of this extractor; this starts them afresh.
    pub fn failures_per_name(mut self, burst: u32, every: Duration) -> Self {
        self.failures = Arc::new(Failures::new(
            Rate { burst, every },
            self.failures.per_address(),
            self.failures.max_tracked(),
            self.clock.clone(),
        ));
        self
    }

    /// How many failed sign-ins one client address may have in a row (`burst`, whatever
    /// the user names), and how often it earns one more back (`every`); past that, its
    /// requests are answered `429` before the slow hash. IPv6 addresses count per /64
    /// network. Default: 20, then one every 3 seconds. A zero `burst` or `every` turns this
    /// limit off. Needs [`client_address`](Self::client_address).
    pub fn failures_per_address(mut self, burst: u32, every: Duration) -> Self {
        self.failures = Arc::new(Failures::new(
            self.failures.per_name(),
            Rate { burst, every },
            self.failures.max_tracked(),
            self.clock.clone(),
        ));
        self
    }

    /// How many user names, and how many client addresses, the failure counts track at
    /// most (when full, those without recent failures go first, then the ones that owe
    /// least). Default: 10 000 each.
    pub fn max_tracked_failures(mut self, max: usize) -> Self {
        self.failures = Arc::new(Failures::new(
            self.failures.per_name(),
            self.failures.per_address(),
            max,
            self.clock.clone(),
        ));
        self
    }

    /// How to find the client's address in a request's head, for
    /// [`failures_per_address`](Self::failures_per_address): typically the TCP peer the
    /// server put into the extensions (axum's `ConnectInfo<SocketAddr>`), or a trusted
    /// proxy's `X-Forwarded-For`. Default: none, so only the per-name limit applies.
    pub fn client_address(
        mut self,
        find: impl Fn(&Parts) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.client_address = Some(Arc::new(find));
        self
    }

    /// How long a request refused with `429` waits before it is answered. It holds no
    /// slot of the slow hash and costs no CPU; it slows a client that tries again at once.
    /// Default: 1 second.
    pub fn refusal_delay(mut self, delay: Duration) -> Self {
        self.refusal_delay = delay;
        self
    }

    /// Sets the realm in the challenge. Default is `proxy`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] if the realm contains `"`, `\` or control characters.
    pub fn realm(mut self, realm: &str) -> Result<Self, ConfigError> {
        if realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(ConfigError::InvalidSetting {
                name: "realm",
                reason: "a realm cannot contain quotes, backslashes or control characters".into(),
            });
        }
        self.challenge = HeaderValue::from_str(&format!(
            r#"Basic realm="{realm}", charset="UTF-8""#
        ))
        .map_err(|_| ConfigError::InvalidSetting {
            name: "realm",
            reason: "not a valid header value".into(),
        })?;
        Ok(self)
    }

    /// The store the credentials are checked against.
    pub fn store(&self) -> &CredentialStore {
        &self.store
    }

    fn reject(&self, message: &'static str) -> Rejection {
        Rejection::unauthorized(Some(self.challenge.clone()), message)
    }
}

/// How many requests may wait for a password check by default.
const DEFAULT_MAX_QUEUED: usize = 128;

/// How long a `429` waits by default.
const DEFAULT_REFUSAL_DELAY: Duration = Duration::from_secs(1);

/// Runs `f` on tokio's blocking pool, holding `slot` until `f` returns: the slot is given
/// back when the check is done, even if the caller stopped waiting. `None` if `f` panicked.
async fn run_holding<T: Send + 'static>(
    slot: tokio::sync::OwnedSemaphorePermit,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    tokio::task::spawn_blocking(move || {
        let out = f();
        drop(slot);
        out
    })
    .await
    .ok()
}

/// Decodes `base64(user:password)`.
fn decode_basic(credentials: &str) -> Option<(String, String)> {
    let bytes = STANDARD.decode(credentials.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl IdentityExtractor for BasicAuth {
    /// `Basic realm="…", charset="UTF-8"`.
    fn challenges(&self) -> Vec<HeaderValue> {
        vec![self.challenge.clone()]
    }

    async fn extract(&self, parts: &Parts) -> ExtractResult {
        let Some(credentials) =
            credentials_for(&parts.headers, "basic").map_err(|why| self.reject(why))?
        else {
            return Ok(None);
        };
        let Some((user, password)) = decode_basic(credentials) else {
            return Err(self.reject("The Basic credentials are malformed."));
        };
        if let Some(identity) = self.cache.as_ref().and_then(|c| c.get(&user, &password)) {
            return Ok(Some(identity));
        }
        let address = self.client_address.as_ref().and_then(|find| find(parts));
        let attempt = match self.failures.attempt(&user, address) {
            Ok(attempt) => attempt,
            Err(wait) => {
                tracing::debug!(
                    target: "tower_identity_proxy",
                    retry_after_ms = wait.as_millis(),
                    "too many failed sign-ins; request refused with 429"
                );
                if !self.refusal_delay.is_zero() {
                    tokio::time::sleep(self.refusal_delay).await;
                }
                return Err(Rejection::new(
                    http::StatusCode::TOO_MANY_REQUESTS,
                    "Too many failed sign-ins; try again later.",
                )
                .retry_after(wait));
            }
        };
        let (store, cache) = (self.store.clone(), self.cache.clone());
        let check = move || {
            let (identity, version) = store.verify_versioned(&user, &password)?;
            if let Some(cache) = cache {
                // Only if the user did not change while the hash ran.
                store.while_current(&user, version, || {
                    cache.insert(&user, &password, identity.clone());
                });
            }
            Some(identity)
        };
        let verified = match queued_blocking(&self.checks, check).await {
            Ok(verified) => verified.flatten(),
            Err(Busy) => {
                // Not a failed password: the attempt is not held against anyone.
                self.failures.succeeded(attempt);
                tracing::warn!(
                    target: "tower_identity_proxy",
                    max_queued = self.checks.max_queued,
                    "too many password checks waiting; request refused with 503"
                );
                return Err(Rejection::new(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "Too many sign-ins are being checked; try again shortly.",
                )
                .retry_after(Duration::from_secs(1)));
            }
        };
        match verified {
            Some(identity) => {
                self.failures.succeeded(attempt);
                Ok(Some(identity))
            }
            None => Err(self.reject("The user name or password is wrong.")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn parts(auth: &str) -> Parts {
        http::Request::builder()
            .header(header::AUTHORIZATION, auth)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[tokio::test]
    async fn good_bad_and_foreign_credentials() {
        let store = CredentialStore::new();
        store
            .insert("Alice", "abcdef123456", ["ROLE_WONDERLAND", "ROLE_USER"])
            .unwrap();
        let auth = BasicAuth::new(store.clone());

        let id = auth
            .extract(&parts(&basic("Alice:abcdef123456")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id.name(), "Alice");
        assert_eq!(id.roles(), ["ROLE_USER", "ROLE_WONDERLAND"]);

        for bad in [
            basic("Alice:nope"),
            basic("Bob:abcdef123456"),
            basic("no-colon"),
            "Basic %%%".into(),
        ] {
            let err = auth.extract(&parts(&bad)).await.unwrap_err();
            assert_eq!(err.status(), 401, "{bad}");
            assert!(
                err.challenge()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("Basic realm=")
            );
        }
        assert_eq!(auth.extract(&parts("Bearer abc")).await.unwrap(), None);

        // Two lines are refused whatever the first one's scheme: one of a scheme this
        // extractor leaves to others must not hide wrong Basic credentials.
        for (first, second) in [
            (basic("Alice:abcdef123456"), "Bearer abc".to_owned()),
            ("Foo x".to_owned(), basic("Alice:nope")),
            ("Foo x".to_owned(), "Foo y".to_owned()),
        ] {
            let mut two = parts(&first);
            two.headers
                .append(header::AUTHORIZATION, second.parse().unwrap());
            let err = auth.extract(&two).await.unwrap_err();
            assert_eq!(err.status(), 401, "{first} then {second}");
        }
    }

    /// At most as many checks as slots run at once, and a check whose caller gave up keeps
    /// its slot until it is done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_are_bounded_even_when_their_callers_give_up() {
        use std::sync::{
            Condvar, Mutex,
            atomic::{AtomicUsize, Ordering},
        };
        use std::time::Duration;

        /// Opens the gate when dropped, also when an assertion fails: the runtime waits for
        /// its blocking threads, so a closed gate would turn a failure into a hang.
        struct Gate(Arc<(Mutex<bool>, Condvar)>);
        impl Gate {
            fn open(&self) {
                *self.0.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
                self.0.1.notify_all();
            }
        }
        impl Drop for Gate {
            fn drop(&mut self) {
                self.open();
            }
        }

        // No bound on the queue here: this is about the slots.
        let checks = Checks::new(2, usize::MAX);
        let queued = |f| {
            let checks = Arc::clone(&checks);
            tokio::spawn(async move { queued_blocking(&checks, f).await })
        };
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let gate = Gate(Arc::new((Mutex::new(false), Condvar::new())));
        let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
        let check = || {
            let (running, most, gate, started) = (
                running.clone(),
                most.clone(),
                gate.0.clone(),
                started.clone(),
            );
            move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = started.send(());
                let (open, opened) = &*gate;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = opened.wait(open).unwrap();
                }
                running.fetch_sub(1, Ordering::SeqCst);
            }
        };
        let liveness = Duration::from_secs(20);

        // Two checks start, then their callers give up (a client that disconnects).
        let abandoned: Vec<_> = (0..2).map(|_| queued(check())).collect();
        for _ in 0..2 {
            tokio::time::timeout(liveness, starts.recv()).await.unwrap();
        }
        for task in abandoned {
            task.abort();
        }
        // Their hashing goes on and keeps both slots: no further check starts.
        let waiting: Vec<_> = (0..4).map(|_| queued(check())).collect();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), starts.recv())
                .await
                .is_err(),
            "a check started while two were running"
        );
        // Once they finish, the others run, two at a time.
        gate.open();
        for task in waiting {
            let done = tokio::time::timeout(liveness, task).await.unwrap().unwrap();
            assert_eq!(done, Ok(Some(())));
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        // Every slot comes back, the abandoned checks' too (they may finish last).
        let all = tokio::time::timeout(liveness, checks.slots.acquire_many(2)).await;
        assert!(matches!(all, Ok(Ok(_))), "a slot was never given back");
    }

    /// Past `max_queued` requests waiting for a slot, the next is refused at once; those
    /// waiting run in turn, and the count goes back to zero.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_of_checks_refuses_at_once() {
        use std::time::Duration;
        let checks = Checks::new(1, 1);
        let liveness = Duration::from_secs(20);
        // The one slot, held until told.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, mut starts) = tokio::sync::mpsc::unbounded_channel();
        let running = {
            let checks = Arc::clone(&checks);
            tokio::spawn(async move {
                queued_blocking(&checks, move || {
                    let _ = started.send(());
                    let _ = held.recv_timeout(Duration::from_secs(20));
                    1
                })
                .await
            })
        };
        tokio::time::timeout(liveness, starts.recv()).await.unwrap();
        // One waits for it...
        let waiting = {
            let checks = Arc::clone(&checks);
            tokio::spawn(async move { queued_blocking(&checks, || 2).await })
        };
        tokio::time::timeout(liveness, async {
            while checks.queued.load(std::sync::atomic::Ordering::Acquire) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        // ...and the next is refused without waiting.
        let refused = tokio::time::timeout(liveness, queued_blocking(&checks, || 3)).await;
        assert_eq!(refused, Ok(Err(Busy)), "the third request waited");
        release.send(()).unwrap();
        let running = tokio::time::timeout(liveness, running).await.unwrap();
        assert_eq!(running.unwrap(), Ok(Some(1)));
        let waiting = tokio::time::timeout(liveness, waiting).await.unwrap();
        assert_eq!(waiting.unwrap(), Ok(Some(2)));
        assert_eq!(checks.queued.load(std::sync::atomic::Ordering::Acquire), 0);
        // A slot is free again: no queue, no refusal.
        assert_eq!(queued_blocking(&checks, || 4).await, Ok(Some(4)));
    }

    /// Argon2id with small parameters, counting its verifications.
    #[derive(Clone)]
    struct Counting {
        argon2: Argon2<'static>,
        verified: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl SlowHash for Counting {
        fn hash(&self, password: &[u8]) -> Option<String> {
            self.argon2.hash(password)
        }

        fn verify(&self, password: &[u8], hash: &PasswordHash<'_>) -> bool {
            self.verified
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.argon2.verify(password, hash)
        }
    }

    /// A store whose slow hash counts its calls: the store and the count.
    fn counting_store() -> (CredentialStore, impl Fn() -> usize) {
        let counting = Counting {
            argon2: Argon2::new(
                argon2::Algorithm::Argon2id,
                argon2::Version::V0x13,
                argon2::Params::new(8, 1, 1, None).unwrap(),
            ),
            verified: Arc::default(),
        };
        let count = Arc::clone(&counting.verified);
        let store = CredentialStore::with_slow_hash(Box::new(counting));
        (store, move || {
            count.load(std::sync::atomic::Ordering::SeqCst)
        })
    }

    async fn status(auth: &BasicAuth, user_pass: &str) -> Result<Vec<String>, u16> {
        auth.extract(&parts(&basic(user_pass)))
            .await
            .map(|id| id.unwrap().roles().to_vec())
            .map_err(|e| e.status().as_u16())
    }

    #[tokio::test]
    async fn a_cache_hit_skips_the_slow_hash_and_never_answers_a_wrong_password() {
        let (store, hashed) = counting_store();
        store.insert("Alice", "secret", ["ROLE_USER"]).unwrap();
        let auth = BasicAuth::new(store.clone());
        assert_eq!(hashed(), 0);
        assert_eq!(
            status(&auth, "Alice:secret").await,
            Ok(vec!["ROLE_USER".into()])
        );
        assert_eq!(hashed(), 1);
        for _ in 0..5 {
            assert!(status(&auth, "Alice:secret").await.is_ok());
        }
        assert_eq!(hashed(), 1, "the hits skipped the slow hash");
        // A clone shares the cache.
        assert!(status(&auth.clone(), "Alice:secret").await.is_ok());
        assert_eq!(hashed(), 1);
        // A wrong password for a cached user goes to the slow hash, and fails there.
        for wrong in ["Alice:secreT", "Alice:secret ", "Alice:", "Alice:secret:"] {
            assert_eq!(status(&auth, wrong).await, Err(401), "{wrong}");
        }
        assert_eq!(hashed(), 5);
        assert!(status(&auth, "Alice:secret").await.is_ok());
        assert_eq!(hashed(), 5);

        // Turned off, every request pays.
        let uncached = BasicAuth::new(store).credential_cache(Duration::ZERO, 0);
        assert!(status(&uncached, "Alice:secret").await.is_ok());
        assert!(status(&uncached, "Alice:secret").await.is_ok());
        assert_eq!(hashed(), 7);
    }

    #[tokio::test]
    async fn every_change_to_the_user_invalidates_at_once() {
        let (store, hashed) = counting_store();
        store.insert("Alice", "first", ["ROLE_USER"]).unwrap();
        let auth = BasicAuth::new(store.clone());
        let other = BasicAuth::new(store.clone());
        for a in [&auth, &other] {
            assert!(status(a, "Alice:first").await.is_ok());
        }
        // A new password: the old one is refused by the very next request, in both.
        store.insert("Alice", "second", ["ROLE_USER"]).unwrap();
        for a in [&auth, &other] {
            assert_eq!(status(a, "Alice:first").await, Err(401));
        }
        assert_eq!(
            status(&auth, "Alice:second").await,
            Ok(vec!["ROLE_USER".into()])
        );
        // New roles, same password: the next request sees them.
        store.insert("Alice", "second", ["ROLE_ADMIN"]).unwrap();
        assert_eq!(
            status(&auth, "Alice:second").await,
            Ok(vec!["ROLE_ADMIN".into()])
        );
        // Removed: refused.
        assert!(store.remove("Alice"));
        assert_eq!(status(&auth, "Alice:second").await, Err(401));
        // Added back pre-hashed (as another replica would send it).
        let phc = store.hash_password("third").unwrap();
        store.insert_hashed("Alice", &phc, ["ROLE_USER"]).unwrap();
        assert!(status(&auth, "Alice:third").await.is_ok());
        let before = hashed();
        assert!(status(&auth, "Alice:third").await.is_ok());
        assert_eq!(hashed(), before, "cached");
        let phc = store.hash_password("fourth").unwrap();
        store.insert_hashed("Alice", &phc, ["ROLE_USER"]).unwrap();
        assert_eq!(status(&auth, "Alice:third").await, Err(401));
        assert!(status(&auth, "Alice:fourth").await.is_ok());
        // Not a PHC string, or not Argon2: refused, nothing changes.
        for bad in ["", "plain", "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA"] {
            assert!(store.insert_hashed("Alice", bad, ["R"]).is_err(), "{bad}");
        }
        assert!(status(&auth, "Alice:fourth").await.is_ok());
    }

    /// A password checked against a record that changes while the hash runs is not cached.
    #[test]
    fn a_check_racing_a_change_is_not_cached() {
        let (store, _) = counting_store();
        store.insert("Alice", "old", ["R"]).unwrap();
        let (_, version) = store.verify_versioned("Alice", "old").unwrap();
        let mut ran = false;
        store.while_current("Alice", version, || ran = true);
        assert!(ran);
        store.insert("Alice", "new", ["R"]).unwrap();
        let mut ran = false;
        store.while_current("Alice", version, || ran = true);
        assert!(!ran, "the record changed");
        store.remove("Alice");
        store.while_current("Alice", version, || ran = true);
        assert!(!ran, "the record is gone");
    }

    #[tokio::test]
    async fn the_ttl_holds() {
        let (store, hashed) = counting_store();
        store.insert("Alice", "pw", ["R"]).unwrap();
        let clock = Clock::stopped();
        let auth = BasicAuth::with_clock(store, clock.clone())
            .credential_cache(Duration::from_secs(30), 4);
        assert!(status(&auth, "Alice:pw").await.is_ok());
        clock.advance(Duration::from_secs(29));
        assert!(status(&auth, "Alice:pw").await.is_ok());
        assert_eq!(hashed(), 1);
        clock.advance(Duration::from_secs(1));
        assert!(status(&auth, "Alice:pw").await.is_ok());
        assert_eq!(hashed(), 2, "expired: checked again");
        assert!(status(&auth, "Alice:pw").await.is_ok());
        assert_eq!(hashed(), 2, "and cached again");
    }

    #[tokio::test]
    async fn failures_are_refused_before_the_slow_hash_but_cached_users_pass() {
        let (store, hashed) = counting_store();
        store.insert("Alice", "pw", ["R"]).unwrap();
        let clock = Clock::stopped();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let auth = BasicAuth::with_clock(store, clock.clone())
            .failures_per_name(3, Duration::from_secs(10))
            .failures_per_address(5, Duration::from_secs(10))
            .client_address(move |_| Some(ip))
            .refusal_delay(Duration::ZERO);
        assert!(status(&auth, "Alice:pw").await.is_ok());
        for _ in 0..3 {
            assert_eq!(status(&auth, "Alice:guess").await, Err(401));
        }
        assert_eq!(hashed(), 4);
        // The name's limit: refused with Retry-After, without hashing.
        let refused = auth
            .extract(&parts(&basic("Alice:guess")))
            .await
            .unwrap_err();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.retry_after_secs(), Some(10));
        assert_eq!(
            refused
                .into_http_response::<http_body_util::Full<bytes::Bytes>>()
                .headers()[http::header::RETRY_AFTER],
            "10"
        );
        assert_eq!(hashed(), 4);
        // Alice, cached, is served.
        assert!(status(&auth, "Alice:pw").await.is_ok());
        // Other names, from the same address, until the address's limit.
        assert_eq!(status(&auth, "Bob:x").await, Err(401));
        assert_eq!(status(&auth, "Carol:x").await, Err(401));
        assert_eq!(status(&auth, "Dave:x").await, Err(429));
        assert_eq!(hashed(), 6);
        assert!(status(&auth, "Alice:pw").await.is_ok(), "still served");
        // Time gives attempts back.
        clock.advance(Duration::from_secs(10));
        assert_eq!(status(&auth, "Dave:x").await, Err(401));
        assert_eq!(hashed(), 7);
    }

    #[test]
    fn a_user_travels_as_its_hash() {
        let here = CredentialStore::new();
        let hash = here.hash_password("abcdef123456").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let there = CredentialStore::new();
        there.insert_hashed("Alice", &hash, ["ROLE_USER"]).unwrap();
        assert_eq!(
            there.verify("Alice", "abcdef123456").unwrap().roles(),
            ["ROLE_USER"]
        );
        assert!(there.verify("Alice", "wrong").is_none());
        assert_eq!(there.names(), ["Alice"]);
        assert!(there.insert_hashed("Bob", "abcdef123456", ["R"]).is_err());
        assert!(there.insert_hashed("a:b", &hash, ["R"]).is_err());
        assert!(!there.contains("Bob"));
    }

    #[test]
    fn store_keeps_no_plaintext() {
        let store = CredentialStore::new();
        store.insert("u", "hunter2-secret", ["R"]).unwrap();
        let users = store.inner.users.read().unwrap();
        assert!(!users.active["u"].hash.contains("hunter2-secret"));
        assert!(users.active["u"].hash.starts_with("$argon2id$"));
        drop(users);
        assert!(store.insert("a:b", "x", ["R"]).is_err());
        assert!(!format!("{store:?}").contains("argon2"));
    }

    #[test]
    fn users_are_added_replaced_and_removed() {
        let store = CredentialStore::new();
        assert!(!store.contains("Alice"));
        store
            .insert("Alice", "first-password", ["ROLE_USER"])
            .unwrap();
        assert!(store.contains("Alice"));
        assert!(!store.contains("alice"), "names are case-sensitive");
        // The extractor checks against the same users, not a copy.
        assert!(BasicAuth::new(store.clone()).store().contains("Alice"));
        store
            .insert("Alice", "second-password", ["ROLE_ADMIN"])
            .unwrap();
        assert!(store.verify("Alice", "first-password").is_none());
        let alice = store.verify("Alice", "second-password").unwrap();
        assert_eq!(alice.roles(), ["ROLE_ADMIN"]);
        assert!(store.remove("Alice"));
        assert!(!store.remove("Alice"));
        assert!(!store.contains("Alice"));
        assert!(store.verify("Alice", "second-password").is_none());
        for bad in ["", "a:b", "a\nb", "a\tb"] {
            assert!(store.insert(bad, "x", ["R"]).is_err(), "{bad:?}");
            assert!(!store.contains(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_realm_cannot_break_out_of_its_quotes() {
        let store = CredentialStore::new();
        let auth = BasicAuth::new(store.clone()).realm("orders").unwrap();
        assert_eq!(
            auth.challenges(),
            [r#"Basic realm="orders", charset="UTF-8""#]
        );
        // A tab is a valid header value byte: only the realm check refuses it.
        for bad in [r#"a", charset="x"#, r"a\", "a\tb", "a\nb"] {
            assert!(BasicAuth::new(store.clone()).realm(bad).is_err(), "{bad:?}");
        }
    }
}
