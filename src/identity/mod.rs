//! Who the caller is: [`Identity`], the pluggable [`IdentityExtractor`], and the extractors
//! this crate provides.
//!
//! An extractor reads the request's parts (never its body) and answers one of three things:
//! - `Ok(Some(identity))`: the caller is known;
//! - `Ok(None)`: the request carries no credentials this extractor understands, so the next
//!   extractor in an [`or`](IdentityExtractor::or) chain is asked;
//! - `Err(rejection)`: credentials were sent but are wrong or malformed: the request is
//!   answered with the rejection (`401` with `WWW-Authenticate`) and nothing is forwarded.
//!   Wrong credentials never silently become anonymous.
//!
//! When a chain ends with `Ok(None)`, the proxy answers `401`. End the chain with
//! [`or_anonymous`](IdentityExtractor::or_anonymous) to let anonymous callers through, as
//! Atoti Server does: `/proxy` needs no authentication.
//!
//! # Challenges
//!
//! A `401` always carries `WWW-Authenticate` (RFC 9110 §15.5.2). When no extractor found
//! credentials, it lists the challenges the chain names
//! ([`IdentityExtractor::challenges`]), one header line each, in chain order:
//! [`BasicAuth`] names `Basic realm="proxy", charset="UTF-8"`, [`BearerJwt`] and
//! [`OidcBearer`] name `Bearer`, so `BasicAuth::new(users).or(BearerJwt::new(verifier))`
//! answers both. When the
//! chain names none (a closure, [`FromExtensions`]), the `401` carries
//! [`FALLBACK_CHALLENGE`] (`Bearer`); name another with
//! [`with_challenge`](IdentityExtractor::with_challenge). A `401` [`Rejection`] without a
//! challenge of its own gets the same ones.
//!
//! # Example
//!
//! ## Basic, then the app's own Bearer tokens, else anonymous
//!
//! ```
//! use tower_identity_proxy::{
//!     identity::{BasicAuth, BearerJwt, CredentialStore, IdentityExtractor},
//!     jwt::KeyPair,
//! };
//!
//! let keys = KeyPair::generate_ed25519()?;
//! let users = CredentialStore::new();
//! users.insert("Alice", "abcdef123456", ["ROLE_USER", "ROLE_WONDERLAND"])?;
//! let identity = BasicAuth::new(users)
//!     .or(BearerJwt::new(keys.verifier()))
//!     .or_anonymous();
//! # let _ = identity;
//! # Ok::<(), tower_identity_proxy::ConfigError>(())
//! ```
//!
//! ## An extractor of your own, from a session cookie
//!
//! A closure taking `&Parts` and returning a `'static` future is an extractor:
//!
//! ```
//! use http::request::Parts;
//! use tower_identity_proxy::identity::{Identity, IdentityExtractor, Rejection};
//!
//! let from_session = |parts: &Parts| {
//!     // Look the session up in your store; here, a cookie names the user.
//!     let cookie = parts.headers.get(http::header::COOKIE).cloned();
//!     async move {
//!         let Some(cookie) = cookie else { return Ok(None) }; // no session: next extractor
//!         match cookie.to_str().ok().and_then(|c| c.strip_prefix("session=")) {
//!             Some("s3cr3t") => Ok(Some(Identity::new("Alice", ["ROLE_USER"]))),
//!             _ => Err(Rejection::unauthorized(None, "The session is not valid.")),
//!         }
//!     }
//! };
//! let extractor = from_session.or_anonymous();
//! # let _ = extractor;
//! ```

use std::{borrow::Cow, future::Future, sync::Arc};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header, request::Parts};
use http_body_util::Full;

mod basic;
mod bearer;
mod oidc;

pub use crate::jwt::subject::Identity;

pub use basic::{BasicAuth, CredentialStore};
pub use oidc::{OidcBearer, RoleCase};

/// The `WWW-Authenticate` challenge of a `401` when the extractors name none: `Bearer`
/// (RFC 6750), the scheme of the tokens this crate issues and accepts. Unlike `Basic`, it
/// makes no browser open a password dialog.
pub const FALLBACK_CHALLENGE: HeaderValue = HeaderValue::from_static("Bearer");
pub use bearer::BearerJwt;

/// Why an extractor refused a request: a status, a plain-text message and, for `401`, a
/// `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    message: Cow<'static, str>,
    challenge: Option<HeaderValue>,
}

impl Rejection {
    /// `401 Unauthorized` with an optional `WWW-Authenticate` challenge. Without one, the
    /// proxy sends the extractor chain's challenges (see the
    /// [module docs](crate::identity#challenges)).
    pub fn unauthorized(
        challenge: Option<HeaderValue>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            challenge,
        }
    }

    /// Any status with a plain-text message.
    pub fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            message: message.into(),
            challenge: None,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message sent as the body.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `WWW-Authenticate` challenge, if any.
    pub fn challenge(&self) -> Option<&HeaderValue> {
        self.challenge.as_ref()
    }

    /// The response the client receives.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut res = crate::error::plain_text(self.status, self.message.into_owned().into());
        if let Some(challenge) = self.challenge {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        res
    }
}

/// What an extractor answers: an identity, no identity (ask the next one), or a rejection.
pub type ExtractResult = Result<Option<Identity>, Rejection>;

/// Finds out who the caller is from the request's parts.
///
/// Implemented by the extractors of this crate and by any
/// `Fn(&Parts) -> impl Future<Output = ExtractResult>` closure whose future owns what it
/// needs (clone headers out of `parts` before the `async move`). See the
/// [module docs](crate::identity) for an example.
pub trait IdentityExtractor: Clone + Send + Sync + 'static {
    /// Reads the caller's identity.
    fn extract(&self, parts: &Parts) -> impl Future<Output = ExtractResult> + Send;

    /// The `WWW-Authenticate` challenges of the credentials this extractor accepts, sent
    /// with the `401` that answers a request without any (see the
    /// [module docs](crate::identity#challenges)). Default: none, so the chain's other
    /// extractors name them, or [`FALLBACK_CHALLENGE`] is sent.
    fn challenges(&self) -> Vec<HeaderValue> {
        Vec::new()
    }

    /// Names `challenge` as this extractor's `WWW-Authenticate` challenge, instead of the
    /// ones it names itself (for a closure: instead of none).
    ///
    /// ```
    /// use http::{HeaderValue, request::Parts};
    /// use tower_identity_proxy::identity::{IdentityExtractor, Rejection};
    ///
    /// let from_session = |_: &Parts| async { Ok::<_, Rejection>(None) };
    /// let extractor =
    ///     from_session.with_challenge(HeaderValue::from_static(r#"Session realm="app""#));
    /// assert_eq!(extractor.challenges(), [r#"Session realm="app""#]);
    /// ```
    fn with_challenge(self, challenge: HeaderValue) -> WithChallenge<Self> {
        WithChallenge {
            inner: self,
            challenge,
        }
    }

    /// Asks `other` when `self` finds no credentials it understands.
    fn or<B>(self, other: B) -> Or<Self, B>
    where
        B: IdentityExtractor,
    {
        Or {
            first: self,
            second: other,
        }
    }

    /// Lets callers without credentials through as `anonymousUser` with `ROLE_ANONYMOUS`.
    fn or_anonymous(self) -> Or<Self, Anonymous> {
        self.or(Anonymous::new())
    }
}

impl<F, Fut> IdentityExtractor for F
where
    F: Fn(&Parts) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ExtractResult> + Send,
{
    fn extract(&self, parts: &Parts) -> impl Future<Output = ExtractResult> + Send {
        self(parts)
    }
}

/// Two extractors in turn: the second is asked only when the first finds no credentials.
#[derive(Clone, Debug)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: IdentityExtractor, B: IdentityExtractor> IdentityExtractor for Or<A, B> {
    async fn extract(&self, parts: &Parts) -> ExtractResult {
        match self.first.extract(parts).await? {
            Some(identity) => Ok(Some(identity)),
            None => self.second.extract(parts).await,
        }
    }

    /// The first extractor's challenges, then the second's not already named.
    fn challenges(&self) -> Vec<HeaderValue> {
        let mut all = self.first.challenges();
        for c in self.second.challenges() {
            if !all.contains(&c) {
                all.push(c);
            }
        }
        all
    }
}

/// An extractor with the `WWW-Authenticate` challenge named by
/// [`with_challenge`](IdentityExtractor::with_challenge).
#[derive(Clone, Debug)]
pub struct WithChallenge<E> {
    inner: E,
    challenge: HeaderValue,
}

impl<E: IdentityExtractor> IdentityExtractor for WithChallenge<E> {
    fn extract(&self, parts: &Parts) -> impl Future<Output = ExtractResult> + Send {
        self.inner.extract(parts)
    }

    fn challenges(&self) -> Vec<HeaderValue> {
        vec![self.challenge.clone()]
    }
}

/// The response to a request refused by `extractor`'s `rejection`, or without an identity
/// (`None`: `401`). A `401` always carries `WWW-Authenticate`: the rejection's own
/// challenge, else the extractor's, else [`FALLBACK_CHALLENGE`].
pub(crate) fn refusal<E: IdentityExtractor>(
    extractor: &E,
    rejection: Option<Rejection>,
) -> Response<Full<Bytes>> {
    let rejection =
        rejection.unwrap_or_else(|| Rejection::unauthorized(None, "Authentication is required."));
    let needs_challenge =
        rejection.status() == StatusCode::UNAUTHORIZED && rejection.challenge().is_none();
    let mut res = rejection.into_response();
    if needs_challenge {
        let challenges = extractor.challenges();
        let headers = res.headers_mut();
        if challenges.is_empty() {
            headers.insert(header::WWW_AUTHENTICATE, FALLBACK_CHALLENGE);
        }
        for c in challenges {
            headers.append(header::WWW_AUTHENTICATE, c);
        }
    }
    res
}

/// Every caller is anonymous: `anonymousUser` with `ROLE_ANONYMOUS` by default.
///
/// An app without security gives its anonymous callers every role, as Atoti Server does:
/// use [`Anonymous::unsecured`].
#[derive(Clone, Debug)]
pub struct Anonymous {
    identity: Arc<Identity>,
}

impl Anonymous {
    /// `anonymousUser` with `ROLE_ANONYMOUS`.
    pub fn new() -> Self {
        Self {
            identity: Arc::new(Identity::anonymous()),
        }
    }

    /// `anonymousUser` with `ROLE_ADMIN`, `ROLE_ANONYMOUS` and `ROLE_USER`: the identity of
    /// every caller of an app without security.
    pub fn unsecured() -> Self {
        Self::with_roles(["ROLE_ADMIN", "ROLE_ANONYMOUS", "ROLE_USER"])
    }

    /// `anonymousUser` with these roles.
    pub fn with_roles<R: Into<String>>(roles: impl IntoIterator<Item = R>) -> Self {
        Self {
            identity: Arc::new(Identity::new(Identity::ANONYMOUS_USER, roles)),
        }
    }

    /// The identity given to every caller.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }
}

impl Default for Anonymous {
    fn default() -> Self {
        Self::new()
    }
}

impl IdentityExtractor for Anonymous {
    fn extract(&self, _parts: &Parts) -> impl Future<Output = ExtractResult> + Send {
        std::future::ready(Ok(Some(Identity::clone(&self.identity))))
    }
}

/// Takes the [`Identity`] that the app's own authentication middleware put into the request
/// extensions; `None` when there is none.
#[derive(Clone, Copy, Debug, Default)]
pub struct FromExtensions;

impl IdentityExtractor for FromExtensions {
    fn extract(&self, parts: &Parts) -> impl Future<Output = ExtractResult> + Send {
        std::future::ready(Ok(parts.extensions.get::<Identity>().cloned()))
    }
}

/// The credentials of `scheme` (`basic`, `bearer`: matched case-insensitively) in a
/// request's `Authorization` field: `Ok(None)` without the field or for another scheme,
/// `Err` with the reason for a field no extractor may read: without even a scheme, or in
/// several lines, whatever their schemes (never the credentials of one caller, and a line
/// of a scheme no extractor knows must not hide wrong credentials in another).
pub(crate) fn credentials_for<'a>(
    headers: &'a http::HeaderMap,
    scheme: &str,
) -> Result<Option<&'a str>, &'static str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("Several Authorization headers were sent.");
    }
    match authorization_scheme(value) {
        Some((named, credentials)) if named.eq_ignore_ascii_case(scheme) => Ok(Some(credentials)),
        Some(_) => Ok(None),
        None => Err("The Authorization header is malformed."),
    }
}

/// Splits an `Authorization` value into its scheme and credentials, if it is well formed
/// enough to have a scheme: an RFC 9110 token, then a space or nothing. A scheme followed by
/// a tab or a comma (`Basic\t<credentials>`) is no scheme at all: read as "another scheme",
/// the credentials behind it would make the caller anonymous instead of `401`.
pub(crate) fn authorization_scheme(value: &HeaderValue) -> Option<(&str, &str)> {
    let value = value.to_str().ok()?.trim();
    let (scheme, credentials) = match value.split_once(' ') {
        Some((scheme, rest)) => (scheme, rest.trim()),
        None => (value, ""),
    };
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!scheme.is_empty() && scheme.bytes().all(is_tchar)).then_some((scheme, credentials))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri("/proxy");
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn equal_identities_hash_alike_however_they_were_made() {
        use std::hash::BuildHasher;
        let hasher = std::hash::RandomState::new();
        let a = Identity::new("Alice", ["ROLE_WONDERLAND", "ROLE_USER"]);
        let b = Identity::new(
            String::from("Alice"),
            ["ROLE_USER", "ROLE_WONDERLAND", "ROLE_USER"],
        );
        let c: Identity =
            serde_json::from_str(r#"{"name":"Alice","roles":["ROLE_WONDERLAND","ROLE_USER"]}"#)
                .unwrap();
        for same in [&b, &c] {
            assert_eq!(&a, same);
            assert_eq!(hasher.hash_one(&a), hasher.hash_one(same));
        }
        for other in [
            Identity::new("Alice", ["ROLE_USER"]),
            Identity::new("alice", ["ROLE_USER", "ROLE_WONDERLAND"]),
            // Name and roles are hashed apart: moving a string across does not collide.
            Identity::new("AliceROLE_USER", ["ROLE_WONDERLAND"]),
        ] {
            assert_ne!(a, other);
            assert_ne!(hasher.hash_one(&a), hasher.hash_one(&other), "{other:?}");
        }
    }

    #[test]
    fn a_bound_only_ever_comes_earlier() {
        use std::time::{Duration, UNIX_EPOCH};
        let (early, late) = (
            UNIX_EPOCH + Duration::from_secs(100),
            UNIX_EPOCH + Duration::from_secs(200),
        );
        let alice = Identity::new("Alice", ["ROLE_USER"]);
        assert_eq!(alice.expires_at(), None);
        let bounded = alice.clone().valid_until(late).valid_until(early);
        assert_eq!(bounded.expires_at(), Some(early));
        assert_eq!(bounded.clone().valid_until(late).expires_at(), Some(early));
        // Another key for the token cache: its tokens are not the unbounded caller's.
        assert_ne!(alice, bounded);
        assert_eq!(bounded.name(), "Alice");
    }

    #[test]
    fn roles_are_sorted_and_unique() {
        let i = Identity::new("Alice", ["ROLE_WONDERLAND", "ROLE_USER", "ROLE_USER"]);
        assert_eq!(i.roles(), ["ROLE_USER", "ROLE_WONDERLAND"]);
        assert!(i.has_role("ROLE_USER"));
        assert!(!i.has_role("ROLE_ADMIN"));
    }

    #[test]
    fn serialises_as_name_and_roles() {
        let i = Identity::new("Alice", ["ROLE_WONDERLAND", "ROLE_USER"]);
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "Alice", "roles": ["ROLE_USER", "ROLE_WONDERLAND"]})
        );
        assert_eq!(serde_json::from_value::<Identity>(json).unwrap(), i);
    }

    #[test]
    fn a_deserialised_identity_has_sorted_unique_roles() {
        let json = serde_json::json!({
            "name": "Alice", "roles": ["ROLE_WONDERLAND", "ROLE_USER", "ROLE_WONDERLAND"]
        });
        let i: Identity = serde_json::from_value(json).unwrap();
        assert_eq!(i.roles(), ["ROLE_USER", "ROLE_WONDERLAND"]);
        assert!(i.has_role("ROLE_WONDERLAND"));
        assert_eq!(i, Identity::new("Alice", ["ROLE_USER", "ROLE_WONDERLAND"]));

        // The token's `authorities`, read by jsonwebtoken itself, are sorted and unique.
        let keys = crate::jwt::KeyPair::generate_ed25519().unwrap();
        let token = crate::jwt::KeySigner::new(keys.clone())
            .sign_blocking(&i)
            .unwrap();
        let key = jsonwebtoken::DecodingKey::from_ed_pem(keys.public_key_pem().as_bytes()).unwrap();
        let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
        let claims = jsonwebtoken::decode::<serde_json::Value>(token.as_str(), &key, &validation)
            .unwrap()
            .claims;
        assert_eq!(
            claims["authorities"],
            serde_json::json!(["ROLE_USER", "ROLE_WONDERLAND"])
        );
    }

    #[tokio::test]
    async fn a_fixed_identity_is_shared_not_copied() {
        let anonymous = Anonymous::unsecured();
        let p = parts(None);
        let a = anonymous.extract(&p).await.unwrap().unwrap();
        let b = anonymous.extract(&p).await.unwrap().unwrap();
        assert_eq!(a, b);
        assert!(Arc::ptr_eq(&a.name, &b.name));
        assert!(Arc::ptr_eq(&a.roles, &b.roles));
    }

    #[tokio::test]
    async fn anonymous_variants() {
        let p = parts(None);
        let a = Anonymous::new().extract(&p).await.unwrap().unwrap();
        assert_eq!(a.name(), "anonymousUser");
        assert_eq!(a.roles(), ["ROLE_ANONYMOUS"]);
        let u = Anonymous::unsecured().extract(&p).await.unwrap().unwrap();
        assert_eq!(u.roles(), ["ROLE_ADMIN", "ROLE_ANONYMOUS", "ROLE_USER"]);
    }

    #[tokio::test]
    async fn or_stops_at_the_first_answer_and_errors() {
        let none = |_: &Parts| async { Ok(None) };
        let reject = |_: &Parts| async { Err(Rejection::unauthorized(None, "bad")) };
        let p = parts(None);
        let got = none.or_anonymous().extract(&p).await.unwrap().unwrap();
        assert_eq!(got.name(), "anonymousUser");
        let err = reject.or_anonymous().extract(&p).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(none.or(none).extract(&p).await.unwrap(), None);
    }

    fn challenges_of(res: &Response<Full<Bytes>>) -> Vec<&str> {
        res.headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn every_401_names_a_challenge() {
        let none = |_: &Parts| async { Ok(None) };
        let basic = HeaderValue::from_static("Basic realm=\"x\"");
        let bearer = HeaderValue::from_static("Bearer");

        // Named by no one: the fallback.
        let res = refusal(&none, None);
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenges_of(&res), ["Bearer"]);
        // Named along the chain, in order, once each.
        let chain = none
            .with_challenge(basic.clone())
            .or(none)
            .or(none.with_challenge(bearer.clone()))
            .or(none.with_challenge(basic.clone()));
        assert_eq!(chain.challenges(), [basic.clone(), bearer.clone()]);
        assert_eq!(
            challenges_of(&refusal(&chain, None)),
            ["Basic realm=\"x\"", "Bearer"]
        );
        // A 401 rejection without a challenge gets the chain's; one with its own keeps it.
        let bare = Rejection::unauthorized(None, "no");
        assert_eq!(
            challenges_of(&refusal(&chain, Some(bare))),
            ["Basic realm=\"x\"", "Bearer"]
        );
        let own = Rejection::unauthorized(Some(bearer), "no");
        assert_eq!(challenges_of(&refusal(&chain, Some(own))), ["Bearer"]);
        // Other statuses get none.
        let forbidden = Rejection::new(StatusCode::FORBIDDEN, "no");
        assert!(challenges_of(&refusal(&chain, Some(forbidden))).is_empty());
    }

    #[tokio::test]
    async fn from_extensions_reads_the_apps_identity() {
        let mut p = parts(None);
        assert_eq!(FromExtensions.extract(&p).await.unwrap(), None);
        p.extensions.insert(Identity::new("bob", ["ROLE_USER"]));
        let got = FromExtensions.extract(&p).await.unwrap().unwrap();
        assert_eq!(got.name(), "bob");
    }

    #[test]
    fn a_rejection_tells_its_status_message_and_challenge() {
        let challenge = HeaderValue::from_static("Bearer");
        let r = Rejection::unauthorized(Some(challenge.clone()), "The token is not valid.");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.message(), "The token is not valid.");
        assert_eq!(r.challenge(), Some(&challenge));
        let r = Rejection::new(StatusCode::FORBIDDEN, String::from("Not for you."));
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.message(), "Not for you.");
        assert_eq!(r.challenge(), None);
    }
}
