//! HTTP Basic authentication against a [`CredentialStore`].

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, RwLock},
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use http::{HeaderValue, request::Parts};
use tokio::sync::Semaphore;

use super::{ExtractResult, Identity, IdentityExtractor, Rejection, credentials_for};
use crate::error::ConfigError;

/// Users with their password hashes and roles, changeable at run time.
///
/// Passwords are kept only as Argon2id hashes (PHC strings, random salt each); a
/// verification compares in constant time and costs the same for unknown users as for known
/// ones, so timing does not tell which users exist. Cheap to clone: clones share the users.
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
    users: RwLock<HashMap<String, User>>,
    hasher: Argon2<'static>,
    /// Verified against when the user does not exist, to keep the timing equal.
    dummy: String,
}

struct User {
    hash: String,
    roles: Arc<[String]>,
}

impl CredentialStore {
    /// An empty store using Argon2id with the `argon2` crate's default (OWASP) parameters.
    pub fn new() -> Self {
        Self::with_hasher(Argon2::default())
    }

    /// An empty store using these Argon2 parameters.
    pub fn with_hasher(hasher: Argon2<'static>) -> Self {
        let salt = SaltString::generate(&mut OsRng);
        let dummy = hasher
            .hash_password(b"not a password", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default();
        Self {
            inner: Arc::new(StoreInner {
                users: RwLock::new(HashMap::new()),
                hasher,
                dummy,
            }),
        }
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
        check_name(name)?;
        let hash = self.hash_password(password)?;
        self.insert_hashed(name, &hash, roles)
    }

    /// The Argon2 hash (a PHC string, with a random salt) of `password`, made with this
    /// store's parameters, for [`insert_hashed`](Self::insert_hashed). Slow by design.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] if hashing fails.
    pub fn hash_password(&self, password: &str) -> Result<String, ConfigError> {
        let salt = SaltString::generate(&mut OsRng);
        Ok(self
            .inner
            .hasher
            .hash_password(password.as_bytes(), &salt)
            .map_err(|_| ConfigError::InvalidSetting {
                name: "password",
                reason: "the password could not be hashed".into(),
            })?
            .to_string())
    }

    /// Adds a user or replaces its password hash and roles, from a password hash in the
    /// PHC string format (`$argon2id$v=19$...`, as [`hash_password`](Self::hash_password)
    /// makes): how users travel between replicas, never as passwords. Fast.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] for a user name [`insert`](Self::insert) refuses,
    /// or a hash that is not a PHC string.
    pub fn insert_hashed<R: Into<String>>(
        &self,
        name: &str,
        hash: &str,
        roles: impl IntoIterator<Item = R>,
    ) -> Result<(), ConfigError> {
        check_name(name)?;
        if PasswordHash::new(hash).is_err() {
            return Err(ConfigError::InvalidSetting {
                name: "password hash",
                reason: "the password hash is not a PHC string".into(),
            });
        }
        let roles = Identity::new(name, roles).roles;
        let mut users = self.inner.users.write().unwrap_or_else(|e| e.into_inner());
        users.insert(
            name.to_owned(),
            User {
                hash: hash.to_owned(),
                roles,
            },
        );
        Ok(())
    }

    /// The names of the users, in no particular order.
    pub fn names(&self) -> Vec<String> {
        let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
        users.keys().cloned().collect()
    }

    /// Removes a user; returns whether it existed.
    pub fn remove(&self, name: &str) -> bool {
        let mut users = self.inner.users.write().unwrap_or_else(|e| e.into_inner());
        users.remove(name).is_some()
    }

    /// Whether a user of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
        users.contains_key(name)
    }

    /// Checks a name and password; the identity when they match.
    ///
    /// Slow by design, like [`insert`](Self::insert).
    pub fn verify(&self, name: &str, password: &str) -> Option<Identity> {
        let (hash, roles) = {
            let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
            match users.get(name) {
                Some(u) => (u.hash.clone(), Some(u.roles.clone())),
                None => (self.inner.dummy.clone(), None),
            }
        };
        let parsed = PasswordHash::new(&hash).ok()?;
        let ok = self
            .inner
            .hasher
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        match (ok, roles) {
            (true, Some(roles)) => Some(Identity::from_parts(name.into(), roles, None, None)),
            _ => None,
        }
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

impl Default for CredentialStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users = self.inner.users.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("CredentialStore")
            .field("users", &users.len())
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
/// The password check runs on tokio's blocking pool, never on the async workers, and at
/// most [`max_concurrent_checks`](Self::max_concurrent_checks) of them run at once (one per
/// CPU by default); further requests wait their turn. Anyone may send credentials to a
/// proxy that needs no login, and each Argon2id check takes tens of milliseconds and about
/// 19 MiB: unbounded, a flood of wrong passwords would fill tokio's blocking pool (up to 512
/// threads) and gigabytes of memory. A check whose request is abandoned keeps its place
/// until the hash is done, so dropped connections cannot slip past the bound. At most
/// [`max_queued_checks`](Self::max_queued_checks) requests wait for a turn (128 by
/// default); more are answered `503 Service Unavailable` at once, so that a flood of wrong
/// passwords delays real sign-ins by a bounded time instead of minutes.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    store: CredentialStore,
    challenge: HeaderValue,
    checks: Arc<Checks>,
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
    /// Basic authentication against `store`, realm `proxy`.
    pub fn new(store: CredentialStore) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            store,
            challenge: HeaderValue::from_static(r#"Basic realm="proxy", charset="UTF-8""#),
            checks: Checks::new(cpus, DEFAULT_MAX_QUEUED),
        }
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
        let store = self.store.clone();
        let verified =
            match queued_blocking(&self.checks, move || store.verify(&user, &password)).await {
                Ok(verified) => verified.flatten(),
                Err(Busy) => {
                    tracing::warn!(
                        target: "tower_identity_proxy",
                        max_queued = self.checks.max_queued,
                        "too many password checks waiting; request refused with 503"
                    );
                    return Err(Rejection::new(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "Too many sign-ins are being checked; try again shortly.",
                    ));
                }
            };
        verified
            .map(Some)
            .ok_or_else(|| self.reject("The user name or password is wrong."))
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
        assert!(!users["u"].hash.contains("hunter2-secret"));
        assert!(users["u"].hash.starts_with("$argon2id$"));
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
