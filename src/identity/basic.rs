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
use http::{HeaderValue, header, request::Parts};

use super::{ExtractResult, Identity, IdentityExtractor, Rejection, authorization_scheme};
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
/// use tower_identity_proxy::CredentialStore;
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
    /// Basic authentication cannot carry), or if hashing fails.
    pub fn insert<R: Into<String>>(
        &self,
        name: &str,
        password: &str,
        roles: impl IntoIterator<Item = R>,
    ) -> Result<(), ConfigError> {
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
            return Err(ConfigError::InvalidSetting {
                name: "user name",
                reason: "a user name must be non-empty, without ':' or control characters".into(),
            });
        }
        let salt = SaltString::generate(&mut OsRng);
        let hash = self
            .inner
            .hasher
            .hash_password(password.as_bytes(), &salt)
            .map_err(|_| ConfigError::InvalidSetting {
                name: "password",
                reason: "the password could not be hashed".into(),
            })?
            .to_string();
        let roles = Identity::new(name, roles).roles;
        let mut users = self.inner.users.write().unwrap_or_else(|e| e.into_inner());
        users.insert(name.to_owned(), User { hash, roles });
        Ok(())
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
            (true, Some(roles)) => Some(Identity {
                name: name.into(),
                roles,
            }),
            _ => None,
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
            .field("users", &users.len())
            .finish_non_exhaustive()
    }
}

/// HTTP Basic authentication (RFC 7617) against a [`CredentialStore`].
///
/// No `Authorization` header, or another scheme: no identity (the next extractor is asked).
/// Malformed Basic credentials or a wrong user or password: `401` with
/// `WWW-Authenticate: Basic realm="…", charset="UTF-8"`, the challenge it also names when a
/// chain finds no credentials. The password check runs on tokio's blocking pool, never on
/// the async workers.
#[derive(Clone, Debug)]
pub struct BasicAuth {
    store: CredentialStore,
    challenge: HeaderValue,
}

impl BasicAuth {
    /// Basic authentication against `store`, realm `proxy`.
    pub fn new(store: CredentialStore) -> Self {
        Self {
            store,
            challenge: HeaderValue::from_static(r#"Basic realm="proxy", charset="UTF-8""#),
        }
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
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        let Some((scheme, credentials)) = authorization_scheme(value) else {
            return Err(self.reject("The Authorization header is malformed."));
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return Ok(None);
        }
        if values.next().is_some() {
            return Err(self.reject("Several Authorization headers were sent."));
        }
        let Some((user, password)) = decode_basic(credentials) else {
            return Err(self.reject("The Basic credentials are malformed."));
        };
        let store = self.store.clone();
        let verified = tokio::task::spawn_blocking(move || store.verify(&user, &password))
            .await
            .ok()
            .flatten();
        verified
            .map(Some)
            .ok_or_else(|| self.reject("The user name or password is wrong."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
