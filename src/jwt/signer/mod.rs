//! Signing the identity: the pluggable [`JwtSigner`], the key-based [`KeySigner`], the
//! [`CachingSigner`] decorator, and [`TokenPolicy`] (lifetime and optional claims).
//!
//! See the [module docs](crate::jwt) for examples.

use std::{
    borrow::Cow,
    fmt,
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::HeaderValue;
use serde_json::{Map, Value};

use crate::{
    error::ConfigError,
    jwt::{
        claims::Claims,
        keys::{Algorithm, KeyPair},
        subject::Identity,
    },
};

mod cache;

pub use cache::CachingSigner;

/// A signed token, ready to be sent as `Authorization: Bearer <token>`.
///
/// `Debug` does not show the token.
#[derive(Clone)]
pub struct Token {
    authorization: HeaderValue,
    issued_at: SystemTime,
    expires_at: SystemTime,
}

impl Token {
    /// Wraps a compact JWT with its validity window.
    ///
    /// # Errors
    ///
    /// [`SignError`] if the token has characters a header cannot carry.
    pub fn new(
        jwt: &str,
        issued_at: SystemTime,
        expires_at: SystemTime,
    ) -> Result<Self, SignError> {
        let mut authorization = HeaderValue::try_from(format!("Bearer {jwt}"))
            .map_err(|_| SignError::new("the token is not a valid header value"))?;
        authorization.set_sensitive(true);
        Ok(Self {
            authorization,
            issued_at,
            expires_at,
        })
    }

    /// The compact JWT.
    pub fn as_str(&self) -> &str {
        // Built from a `String` in `new`, so always valid UTF-8 and prefixed.
        self.authorization
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .unwrap_or_default()
    }

    /// The `Authorization` header value, `Bearer <token>`, marked sensitive.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// When the token was issued (its `iat`, back-dated for clock skew).
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }

    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A token could not be signed; the proxy answers `500` (`503` when the signer is
/// [not ready](Self::not_ready)) and sends nothing upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignError {
    reason: Cow<'static, str>,
    not_ready: bool,
}

impl SignError {
    /// A new error with a reason (for logs; the client never sees it).
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
            not_ready: false,
        }
    }

    /// The signer cannot sign yet (its key is not published long enough): the proxy
    /// answers `503 The proxy is not ready.`
    pub fn not_ready(reason: impl Into<Cow<'static, str>>) -> Self {
        Self {
            reason: reason.into(),
            not_ready: true,
        }
    }

    /// Whether the signer was not ready yet, see [`not_ready`](Self::not_ready).
    pub fn is_not_ready(&self) -> bool {
        self.not_ready
    }
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not sign the identity token: {}", self.reason)
    }
}

impl std::error::Error for SignError {}

/// Turns an identity into a signed token.
///
/// Implemented by [`KeySigner`], [`KeySetSigner`](crate::jwt::KeySetSigner), [`CachingSigner`],
/// `Arc<J>` of any signer `J` and, for tests and explicitly insecure setups,
/// [`dangerous::InsecureUnsignedSigner`](crate::jwt::dangerous::InsecureUnsignedSigner).
pub trait JwtSigner: Send + Sync + 'static {
    /// Signs a token for `identity`.
    fn sign(&self, identity: &Identity) -> impl Future<Output = Result<Token, SignError>> + Send;

    /// A number that changes when tokens signed earlier must no longer be handed out (for
    /// example after a key was revoked); a [`CachingSigner`] signs afresh when it changes.
    /// Default: always `0`.
    fn generation(&self) -> u64 {
        0
    }
}

impl<J: JwtSigner> JwtSigner for Arc<J> {
    fn sign(&self, identity: &Identity) -> impl Future<Output = Result<Token, SignError>> + Send {
        J::sign(self, identity)
    }

    fn generation(&self) -> u64 {
        J::generation(self)
    }
}

type ClaimsHook = Arc<dyn Fn(&Identity) -> Map<String, Value> + Send + Sync>;
type RoleFilter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The longest token lifetime [`TokenPolicy::lifetime`] accepts: 100 years.
const MAX_LIFETIME: Duration = Duration::from_secs(86_400 * 365 * 100);

/// How long tokens live and which optional claims they carry.
#[derive(Clone)]
pub struct TokenPolicy {
    lifetime: Duration,
    backdate: Duration,
    issuer: Option<String>,
    audience: Option<String>,
    jti: bool,
    max_len: usize,
    extra: Option<ClaimsHook>,
    role_filter: Option<RoleFilter>,
    max_roles: Option<usize>,
}

impl TokenPolicy {
    /// Five-minute tokens, `iat` back-dated 10 seconds, no `iss`/`aud`/`jti`, every role in
    /// `authorities`, at most 8 KiB.
    pub fn new() -> Self {
        Self {
            lifetime: Duration::from_secs(300),
            backdate: Duration::from_secs(10),
            issuer: None,
            audience: None,
            jti: false,
            max_len: 8 * 1024,
            extra: None,
            role_filter: None,
            max_roles: None,
        }
    }

    /// How long a token is valid. Default is 5 minutes; longer than 100 years is taken as
    /// 100 years (`Duration::MAX` would not fit in an `exp`).
    #[must_use]
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.min(MAX_LIFETIME);
        self
    }

    /// How far `iat` is set in the past, so a verifier whose clock is behind does not see a
    /// token from the future. Default is 10 seconds.
    #[must_use]
    pub fn backdate(mut self, backdate: Duration) -> Self {
        self.backdate = backdate;
        self
    }

    /// Adds `iss`. Default: none. An identity [issued by](Identity::issued_by) an origin
    /// (the proxy's [public origins](crate::ProxyLayer::public_origin)) carries that one
    /// instead.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Adds `aud`, e.g. the target's origin. Default: none (as Atoti Server; verifiers that
    /// do not expect an audience refuse tokens that carry one).
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Adds a random `jti` to each token. Default: off. With the token cache, a token (and
    /// so its `jti`) is shared by the requests of one identity while it is cached.
    #[must_use]
    pub fn jti(mut self, on: bool) -> Self {
        self.jti = on;
        self
    }

    /// The largest token, in bytes, that is sent; a larger one fails with a [`SignError`]
    /// (`500`) rather than being refused by the target's header limits. Default is 8 KiB.
    #[must_use]
    pub fn max_token_len(mut self, len: usize) -> Self {
        self.max_len = len;
        self
    }

    /// Adds claims computed from the identity. Claims named like the standard ones
    /// (`sub`, `authorities`, `iat`, `exp`, `iss`, `aud`, `jti`) are ignored.
    #[must_use]
    pub fn extra_claims<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Identity) -> Map<String, Value> + Send + Sync + 'static,
    {
        self.extra = Some(Arc::new(hook));
        self
    }

    /// Keeps in `authorities` only the roles for which `keep` answers `true`, e.g. the
    /// roles a target cares about. Default: every role.
    ///
    /// The token cache still tells identities apart by all their roles, so two users whose
    /// roles differ only in filtered-out ones never share a token.
    ///
    /// ```
    /// use tower_identity_proxy::jwt::TokenPolicy;
    ///
    /// let policy = TokenPolicy::new().authorities_filter(|role| role.starts_with("ROLE_"));
    /// # let _ = policy;
    /// ```
    #[must_use]
    pub fn authorities_filter<F>(mut self, keep: F) -> Self
    where
        F: Fn(&str) -> bool + Send + Sync + 'static,
    {
        self.role_filter = Some(Arc::new(keep));
        self
    }

    /// The most roles a token may carry (after the [filter](Self::authorities_filter)); an
    /// identity with more fails to sign with a [`SignError`] (`500`, nothing sent upstream)
    /// rather than losing roles silently. Default: no count limit, only the
    /// [length limit](Self::max_token_len).
    #[must_use]
    pub fn max_authorities(mut self, max: usize) -> Self {
        self.max_roles = Some(max);
        self
    }

    /// The configured token lifetime.
    pub fn token_lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The claims for `identity`, issued now, with the token's validity window.
    pub fn claims(&self, identity: &Identity) -> (Claims, SystemTime, SystemTime) {
        let now = SystemTime::now();
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        // `iat` and `exp` count whole seconds: the window handed back (which the token cache
        // trusts) is the one a verifier reads, never a fraction of a second longer.
        let whole = |t: SystemTime| UNIX_EPOCH + Duration::from_secs(secs(t));
        let issued = whole(now.checked_sub(self.backdate).unwrap_or(now));
        let expires = now.checked_add(self.lifetime).unwrap_or(now + MAX_LIFETIME);
        // An identity vouched for only so long (one read from a token) gets no longer.
        let expires = whole(identity.expires_at().map_or(expires, |at| at.min(expires)));
        let mut extra = self.extra.as_ref().map(|f| f(identity)).unwrap_or_default();
        for reserved in ["sub", "authorities", "iat", "exp", "iss", "aud", "jti"] {
            extra.remove(reserved);
        }
        let authorities = match &self.role_filter {
            Some(keep) => identity
                .roles()
                .iter()
                .filter(|r| keep(r))
                .cloned()
                .collect(),
            None => identity.roles().to_vec(),
        };
        let claims = Claims {
            sub: identity.name().to_owned(),
            authorities,
            iat: secs(issued),
            exp: secs(expires),
            iss: identity
                .issuer()
                .map(str::to_owned)
                .or_else(|| self.issuer.clone()),
            aud: self.audience.clone(),
            jti: self.jti.then(random_id),
            extra,
        };
        (claims, issued, expires)
    }

    /// Serialises the signing input's payload part and checks the size budget later.
    pub(crate) fn encode_payload(&self, claims: &Claims) -> Result<String, SignError> {
        if let Some(max) = self.max_roles
            && claims.authorities.len() > max
        {
            return Err(SignError::new(format!(
                "the identity has {} roles, over the limit of {max}",
                claims.authorities.len()
            )));
        }
        let json =
            serde_json::to_vec(claims).map_err(|_| SignError::new("claims do not serialise"))?;
        Ok(URL_SAFE_NO_PAD.encode(json))
    }

    pub(crate) fn check_len(&self, jwt: &str) -> Result<(), SignError> {
        if jwt.len() > self.max_len {
            return Err(SignError::new(format!(
                "the token would be {} bytes, over the {}-byte limit (too many roles?)",
                jwt.len(),
                self.max_len
            )));
        }
        Ok(())
    }
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TokenPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPolicy")
            .field("lifetime", &self.lifetime)
            .field("backdate", &self.backdate)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jti", &self.jti)
            .field("max_len", &self.max_len)
            .field("extra", &self.extra.is_some())
            .field("authorities_filter", &self.role_filter.is_some())
            .field("max_authorities", &self.max_roles)
            .finish()
    }
}

/// 128 random bits, base64url.
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // The system RNG does not fail on supported platforms; zeros would still be unique enough
    // for an audit id only by accident, so log if it ever does.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        tracing::warn!(target: "tower_identity_proxy", "system random generator failed");
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs tokens with a [`KeyPair`]: RS512 for RSA keys by default.
#[derive(Clone)]
pub struct KeySigner {
    keys: KeyPair,
    alg: Algorithm,
    /// `base64url({"alg":…,"typ":"JWT","kid":…})`, computed once.
    header_b64: Arc<str>,
    policy: TokenPolicy,
}

impl KeySigner {
    /// Signs with the key's default algorithm (RS512 for RSA, ES256/ES384, EdDSA).
    pub fn new(keys: KeyPair) -> Self {
        let alg = keys.default_algorithm();
        Self::build(keys, alg)
    }

    /// Signs with RS512, as Atoti Server does.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] if the key is not an RSA key.
    pub fn rs512(keys: KeyPair) -> Result<Self, ConfigError> {
        Self::with_algorithm(keys, Algorithm::RS512)
    }

    /// Signs with `alg`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] if the key cannot sign with `alg`.
    pub fn with_algorithm(keys: KeyPair, alg: Algorithm) -> Result<Self, ConfigError> {
        if !keys.supports(alg) {
            return Err(ConfigError::InvalidKey(
                format!("this key cannot sign with {alg}").into(),
            ));
        }
        Ok(Self::build(keys, alg))
    }

    fn build(keys: KeyPair, alg: Algorithm) -> Self {
        let header = serde_json::json!({ "alg": alg.as_str(), "typ": "JWT", "kid": keys.kid() });
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string()).into();
        Self {
            keys,
            alg,
            header_b64,
            policy: TokenPolicy::new(),
        }
    }

    /// Sets the token policy. Default is [`TokenPolicy::new`].
    #[must_use]
    pub fn policy(mut self, policy: TokenPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The token policy.
    pub fn token_policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key pair.
    pub fn keys(&self) -> &KeyPair {
        &self.keys
    }

    /// Signs synchronously (the work [`JwtSigner::sign`] moves off the async workers).
    ///
    /// # Errors
    ///
    /// [`SignError`] if the signature fails or the token is over the size limit.
    pub fn sign_blocking(&self, identity: &Identity) -> Result<Token, SignError> {
        let (claims, issued, expires) = self.policy.claims(identity);
        let payload = self.policy.encode_payload(&claims)?;
        let mut jwt = String::with_capacity(self.header_b64.len() + payload.len() + 700);
        jwt.push_str(&self.header_b64);
        jwt.push('.');
        jwt.push_str(&payload);
        let signature = self
            .keys
            .sign(self.alg, jwt.as_bytes())
            .map_err(|_| SignError::new("the signature operation failed"))?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        self.policy.check_len(&jwt)?;
        crate::observability::record::signature();
        Token::new(&jwt, issued, expires)
    }

    fn is_expensive(&self) -> bool {
        !matches!(
            self.alg,
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA
        )
    }
}

impl JwtSigner for KeySigner {
    async fn sign(&self, identity: &Identity) -> Result<Token, SignError> {
        // RSA signatures take hundreds of microseconds: keep them off the async workers.
        if self.is_expensive() && tokio::runtime::Handle::try_current().is_ok() {
            let signer = self.clone();
            let identity = identity.clone();
            tokio::task::spawn_blocking(move || signer.sign_blocking(&identity))
                .await
                .map_err(|_| SignError::new("the signing task failed"))?
        } else {
            self.sign_blocking(identity)
        }
    }
}

impl fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySigner")
            .field("alg", &self.alg)
            .field("kid", &self.keys.kid())
            .field("policy", &self.policy)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signs_every_algorithm_its_key_allows() {
        let rsa = KeyPair::generate_rsa(2048).unwrap();
        let ec = KeyPair::generate_ec(crate::jwt::Curve::P256).unwrap();
        let ec384 = KeyPair::generate_ec(crate::jwt::Curve::P384).unwrap();
        let ed = KeyPair::generate_ed25519().unwrap();
        let cases = [
            (&rsa, Algorithm::RS256),
            (&rsa, Algorithm::RS384),
            (&rsa, Algorithm::RS512),
            (&rsa, Algorithm::PS256),
            (&rsa, Algorithm::PS384),
            (&rsa, Algorithm::PS512),
            (&ec, Algorithm::ES256),
            (&ec384, Algorithm::ES384),
            (&ed, Algorithm::EdDSA),
        ];
        let id = Identity::new("Alice", ["ROLE_USER"]);
        for (keys, alg) in cases {
            let token = KeySigner::with_algorithm(keys.clone(), alg)
                .unwrap()
                .sign(&id)
                .await
                .unwrap();
            let v = crate::jwt::Verifier::new(keys.public_key(), alg);
            let claims = v
                .verify(token.as_str())
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(claims.sub, "Alice");
        }
        assert!(KeySigner::with_algorithm(ec, Algorithm::RS512).is_err());
        assert!(KeySigner::rs512(ed).is_err());
    }

    #[tokio::test]
    async fn oversized_tokens_fail_instead_of_being_sent() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let signer = KeySigner::new(keys).policy(TokenPolicy::new().max_token_len(512));
        let roles: Vec<String> = (0..100).map(|i| format!("ROLE_{i:04}")).collect();
        let err = signer.sign(&Identity::new("x", roles)).await.unwrap_err();
        assert!(err.to_string().contains("limit"));
    }

    /// The window the token cache trusts is exactly the one a verifier reads: `exp` and
    /// `iat` count whole seconds, so `expires_at` may not fall later than `exp`.
    #[tokio::test]
    async fn the_validity_window_is_the_claims() {
        let keys = KeyPair::generate_ed25519().unwrap();
        for lifetime in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(300),
        ] {
            let signer = KeySigner::new(keys.clone()).policy(TokenPolicy::new().lifetime(lifetime));
            let token = signer.sign(&Identity::new("Alice", ["R"])).await.unwrap();
            let key =
                jsonwebtoken::DecodingKey::from_ed_pem(keys.public_key_pem().as_bytes()).unwrap();
            let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
            validation.validate_exp = false;
            let claims = jsonwebtoken::decode::<Value>(token.as_str(), &key, &validation)
                .unwrap()
                .claims;
            let at = |name: &str| UNIX_EPOCH + Duration::from_secs(claims[name].as_u64().unwrap());
            assert_eq!(token.expires_at(), at("exp"), "{lifetime:?}");
            assert_eq!(token.issued_at(), at("iat"), "{lifetime:?}");
        }
    }

    #[test]
    fn token_debug_hides_the_token() {
        let t = Token::new("aaa.bbb.ccc", SystemTime::now(), SystemTime::now()).unwrap();
        assert!(!format!("{t:?}").contains("aaa"));
        assert_eq!(t.as_str(), "aaa.bbb.ccc");
        assert!(t.authorization().is_sensitive());
    }
}
