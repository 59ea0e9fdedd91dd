//! Bearer tokens issued by an OpenID Connect provider (Keycloak, Auth0, Entra ID, Okta,
//! Dex...): [`OidcBearer`].

use std::{collections::HashSet, fmt, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::{HeaderValue, request::Parts};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{ExtractResult, Identity, IdentityExtractor, Rejection, credentials_for};
use crate::{
    client::ProxyClient,
    error::ConfigError,
    jwt::{
        keys::Algorithm,
        verifier::{
            MAX_LEEWAY_SECS, SharedKeys, Verifier, VerifyError, VerifyingKey, check_iat, validation,
        },
    },
    verify::remote::{FetchConfig, RemoteJwks, parse_issuer, parse_url},
};

/// The longest token read; a longer one is refused without being parsed.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Accepts `Authorization: Bearer <JWT>` issued by one OpenID Connect provider, checked
/// against the provider's published keys, and makes the caller's [`Identity`] from its
/// claims. The target never sees the provider's token: the proxy replaces it with the
/// app's own, as for any identity.
///
/// # What is checked
///
/// - The token is this provider's when its `iss` is the configured issuer, character for
///   character; a bearer token of another issuer (the app's own tokens, another provider's)
///   is left to the next extractor of the chain (see
///   [`refuse_other_issuers`](Self::refuse_other_issuers)).
/// - The key is the provider's JWK with the token's `kid`, from the JWK Set the discovery
///   document names ([`discover`](Self::discover)) or from a JWKS URL
///   ([`jwks_url`](Self::jwks_url)); never from the token (`jku`, `x5u`, `jwk`, `x5c` are
///   refused), and pinned to the [accepted algorithms](Self::algorithms) (RS256 by
///   default; asymmetric only: `alg: none` and HMAC, which would take a public key as a
///   secret, are never accepted).
/// - `exp` is required; `exp`, `nbf` and `iat` are checked with a [leeway](Self::leeway);
///   `aud` is required and must name one of the configured audiences.
/// - The [name claim](Self::name_claim) (default `sub`) must be a non-empty string.
///
/// A token that fails any of these is answered `401` with `WWW-Authenticate: Bearer
/// error="invalid_token", error_description="…"` (the reason, which names no key material
/// and echoes nothing from the token); nothing is forwarded, and the caller never becomes
/// anonymous.
///
/// # Keys
///
/// The provider's JWK Set is fetched at the first token and cached for as long as its
/// `Cache-Control` says, within [bounds](Self::cache_bounds) (1 minute to 1 hour by
/// default; 5 minutes when it says nothing), then refreshed in the background. A token
/// naming an unknown `kid` refreshes it at once (a key rotation is followed), within a
/// rate limit: [`refresh_burst`](Self::refresh_burst) fetches (3), then one per
/// [`min_refresh_interval`](Self::min_refresh_interval) (10 s), so a flood of made-up
/// `kid`s cannot hammer the provider. A failed fetch keeps the previous keys. This is the
/// cache [`VerifyProxyJwtLayer::jwks_url`](crate::verify::VerifyProxyJwtLayer::jwks_url)
/// uses.
///
/// # Identity
///
/// The name is read from [`name_claim`](Self::name_claim), the roles from each
/// [`roles_claim`](Self::roles_claim) path: an array of strings (Keycloak's
/// `realm_access.roles` and `resource_access.<client>.roles`, a `groups` array) or a
/// space-separated string (`scope`, `scp`). The roles can then be kept to an
/// [allow-list](Self::allowed_roles), [re-cased](Self::role_case) and
/// [prefixed](Self::role_prefix) to read like the app's (`ROLE_ADMIN`). A token without
/// roles gives an identity with none. The identity is vouched for until the token's `exp`
/// ([`Identity::valid_until`]): the app's token does not outlive the provider's.
///
/// Several providers: one `OidcBearer` each, chained with
/// [`or`](IdentityExtractor::or).
///
/// # Example
///
/// ## Keycloak users, Basic users, and the app's own tokens for call-backs
///
/// ```
/// use tower_identity_proxy::{
///     identity::{BasicAuth, BearerJwt, CredentialStore, IdentityExtractor, OidcBearer, RoleCase},
///     jwt::KeyPair,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keycloak = OidcBearer::discover("https://sso.example.com/realms/demo", ["my-app"])?
///     .name_claim("preferred_username")
///     .roles_claim("realm_access.roles")
///     .roles_claim("resource_access.my-app.roles")
///     .role_case(RoleCase::Upper)
///     .role_prefix("ROLE_");
/// let keys = KeyPair::generate_ed25519()?;
/// let identity = BasicAuth::new(CredentialStore::new())
///     .or(keycloak.clone())
///     .or(BearerJwt::new(keys.verifier()))
///     .or_anonymous();
///
/// // A request without a bearer token is not the provider's: the next extractor decides.
/// let (parts, ()) = http::Request::new(()).into_parts();
/// assert_eq!(keycloak.extract(&parts).await, Ok(None));
/// let anonymous = identity.extract(&parts).await.unwrap().unwrap();
/// assert_eq!(anonymous.name(), "anonymousUser");
/// # Ok(()) }
/// ```
///
/// ## Auth0, with the roles in a namespaced claim
///
/// ```
/// use tower_identity_proxy::identity::OidcBearer;
///
/// let auth0 = OidcBearer::discover("https://example.eu.auth0.com/", ["https://api.example.com"])?
///     .roles_claim("https://example.com/roles")
///     .role_prefix("ROLE_");
/// # let _ = auth0;
/// # Ok::<(), tower_identity_proxy::ConfigError>(())
/// ```
///
/// # Security
///
/// The identity's name is the provider's: a provider user whose name claim reads like one
/// of the app's own users (`admin`) is, to the target, that name with the provider's
/// roles. Prefer an immutable claim (`sub`, the default) or one the provider does not let
/// users choose, and keep the roles to an [allow-list](Self::allowed_roles).
///
/// The audience is required: a token the provider issued for another client or API is
/// refused, so a token leaked from another application does not open this one. Keys come
/// from the configured issuer's discovery document or JWKS URL only, never from a URL in
/// the token; an https issuer's `jwks_uri` must be https. Fetched over plain http, the keys
/// are as trustworthy as the network.
///
/// # Provider settings
///
/// ## Keycloak
///
/// | Setting | Value |
/// |---|---|
/// | issuer | `https://sso.example.com/realms/<realm>` (the realm's URL, no trailing slash) |
/// | audience | the client id: add an *Audience* mapper to the client's dedicated scope (*Included Client Audience*: the client, *Add to access token* on), or access tokens carry only `account` |
/// | name | `preferred_username` (or `sub`, the user's id, which never changes) |
/// | roles | `realm_access.roles` (realm roles), `resource_access.<client>.roles` (client roles), `groups` (with a *Group Membership* mapper) |
/// | algorithm | RS256 (the realm's default key) |
///
/// Keycloak serves its keys with `Cache-Control: no-cache`: they are refetched in the
/// background once a minute at most.
///
/// ## Auth0
///
/// | Setting | Value |
/// |---|---|
/// | issuer | `https://<tenant>.<region>.auth0.com/` (with its trailing slash, as the tokens carry it), or the custom domain |
/// | audience | the API's *Identifier* (*Applications → APIs*), e.g. `https://api.example.com`, requested as `audience` at login |
/// | name | `sub` (`auth0\|…`); access tokens carry no `email` unless an Action adds it |
/// | roles | `permissions` (the API's *RBAC* with *Add Permissions in the Access Token*), `scope`, or a claim an Action adds, e.g. `https://example.com/roles` |
/// | algorithm | RS256 |
#[derive(Clone)]
pub struct OidcBearer {
    config: Arc<Config>,
    remote: Arc<RemoteJwks>,
    verifier: Verifier,
}

/// How roles are re-cased by [`OidcBearer::role_case`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoleCase {
    /// As the provider spells them (the default).
    #[default]
    Keep,
    /// Upper case: `admin` → `ADMIN`.
    Upper,
    /// Lower case: `Admin` → `admin`.
    Lower,
}

#[derive(Clone)]
struct Config {
    issuer: Arc<str>,
    audiences: Vec<String>,
    fetch: FetchConfig,
    leeway: u64,
    name_claim: String,
    roles_claims: Vec<String>,
    allowed_roles: Option<HashSet<String>>,
    role_case: RoleCase,
    role_prefix: String,
    refuse_other_issuers: bool,
}

impl OidcBearer {
    /// Tokens of the OpenID Connect provider `issuer` (its `iss`, e.g.
    /// `https://sso.example.com/realms/demo`), whose keys are found through its discovery
    /// document, `{issuer}/.well-known/openid-configuration` → `jwks_uri`. The document's
    /// `issuer` must be `issuer`, character for character (OpenID Connect Discovery 1.0
    /// §4.3), and an https issuer's `jwks_uri` must be https. Nothing is fetched until the
    /// first token arrives.
    ///
    /// `audiences` are the `aud` values accepted (at least one): the API or client the
    /// provider issues the tokens for.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] unless `issuer` is an absolute `http` or `https`
    /// URL with a host and no user info, query or fragment, or when `audiences` is empty;
    /// [`ConfigError::Tls`] if the default client cannot be built.
    pub fn discover<A>(issuer: &str, audiences: A) -> Result<Self, ConfigError>
    where
        A: IntoIterator,
        A::Item: Into<String>,
    {
        let keys = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let remote = RemoteJwks::discover(issuer, Arc::clone(&keys))?;
        Self::with_remote(issuer, audiences, remote, keys)
    }

    /// Tokens of the issuer `issuer` (their `iss`), checked with the keys of the JWK Set at
    /// `jwks_url`, for a provider without a discovery document or to skip it.
    ///
    /// # Errors
    ///
    /// As [`discover`](Self::discover), and for a `jwks_url` that is not an absolute `http`
    /// or `https` URL with a host and no user info.
    pub fn jwks_url<A>(issuer: &str, jwks_url: &str, audiences: A) -> Result<Self, ConfigError>
    where
        A: IntoIterator,
        A::Item: Into<String>,
    {
        parse_issuer(issuer)?;
        let keys = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let remote = RemoteJwks::new(parse_url(jwks_url, "JWKS URL")?, Arc::clone(&keys));
        Self::with_remote(issuer, audiences, remote, keys)
    }

    fn with_remote<A>(
        issuer: &str,
        audiences: A,
        remote: RemoteJwks,
        keys: SharedKeys,
    ) -> Result<Self, ConfigError>
    where
        A: IntoIterator,
        A::Item: Into<String>,
    {
        let audiences: Vec<String> = audiences.into_iter().map(Into::into).collect();
        if audiences.is_empty() {
            return Err(ConfigError::InvalidSetting {
                name: "OpenID Connect audience",
                reason: "at least one accepted audience is required".into(),
            });
        }
        let config = Config {
            issuer: issuer.into(),
            audiences,
            fetch: FetchConfig {
                client: ProxyClient::new()?,
                algorithms: Arc::new([Algorithm::RS256]),
                min_interval: Duration::from_secs(10),
                burst: 3,
                max_age: Duration::from_secs(300),
                cache_bounds: Some((Duration::from_secs(60), Duration::from_secs(3600))),
                timeout: Duration::from_secs(5),
            },
            leeway: 30,
            name_claim: "sub".to_owned(),
            roles_claims: Vec::new(),
            allowed_roles: None,
            role_case: RoleCase::Keep,
            role_prefix: String::new(),
            refuse_other_issuers: false,
        };
        Ok(Self {
            config: Arc::new(config),
            remote: Arc::new(remote),
            verifier: Verifier::from_shared(keys),
        })
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// The algorithms the provider's keys may verify; each key verifies only its own `alg`
    /// (or, if its JWK names none, these algorithms that fit the key). Default is RS256,
    /// the algorithm every OpenID Connect provider supports. Only asymmetric algorithms
    /// exist here: `none` and HMAC cannot be named.
    #[must_use]
    pub fn algorithms<I: IntoIterator<Item = Algorithm>>(self, algorithms: I) -> Self {
        let algorithms: Arc<[Algorithm]> = algorithms.into_iter().collect();
        self.with(|c| c.fetch.algorithms = algorithms)
    }

    /// Accepts tokens for this audience too (`aud`).
    #[must_use]
    pub fn audience(self, audience: impl Into<String>) -> Self {
        let audience = audience.into();
        self.with(|c| {
            if !c.audiences.contains(&audience) {
                c.audiences.push(audience);
            }
        })
    }

    /// The clock-skew leeway for `exp`, `nbf` and `iat`. Default is 30 seconds; longer
    /// than 10 years is taken as 10 years.
    #[must_use]
    pub fn leeway(self, leeway: Duration) -> Self {
        self.with(|c| c.leeway = leeway.as_secs().min(MAX_LEEWAY_SECS))
    }

    /// The claim holding the caller's name, the `sub` of the app's token. Default is
    /// `sub`; Keycloak users read better as `preferred_username`, Auth0 ones as `email`
    /// (when the access token carries it). Nested claims are named as for
    /// [`roles_claim`](Self::roles_claim). A token without it is refused.
    #[must_use]
    pub fn name_claim(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.with(|c| c.name_claim = path)
    }

    /// Also reads roles from the claim at `path`: an array of strings, or a string of
    /// space-separated values (`scope`, `scp`). Default: no roles claim, so identities have
    /// no roles.
    ///
    /// A path names a claim (`groups`, `https://example.com/roles`) or, with dots, a claim
    /// inside one: `realm_access.roles`, `resource_access.my-app.roles`. A name that
    /// contains dots is found too (Auth0's namespaced claims, a client id `my.app`): the
    /// whole path is tried as one name first, then each split at a dot.
    #[must_use]
    pub fn roles_claim(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.with(|c| c.roles_claims.push(path))
    }

    /// Keeps only these roles, named as the provider spells them (before
    /// [`role_case`](Self::role_case) and [`role_prefix`](Self::role_prefix)). Default:
    /// every role is kept.
    #[must_use]
    pub fn allowed_roles<I, R>(self, roles: I) -> Self
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        let roles: HashSet<String> = roles.into_iter().map(Into::into).collect();
        self.with(|c| c.allowed_roles = Some(roles))
    }

    /// Re-cases each role. Default is [`RoleCase::Keep`].
    #[must_use]
    pub fn role_case(self, case: RoleCase) -> Self {
        self.with(|c| c.role_case = case)
    }

    /// Puts `prefix` before each role that does not already start with it, after
    /// [`role_case`](Self::role_case): `ROLE_` turns `admin` into `ROLE_admin` (with
    /// [`RoleCase::Upper`], `ROLE_ADMIN`), as Spring Security's authority mapper does.
    /// Default: no prefix.
    #[must_use]
    pub fn role_prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.with(|c| c.role_prefix = prefix)
    }

    /// Refuses (`401`, `invalid_token`) a bearer token of another issuer, or one that is
    /// not a JWT, instead of leaving it to the next extractor.
    ///
    /// By default such a token goes on down the chain, so the app's own tokens and other
    /// providers' reach their extractors; a [`BearerJwt`](super::BearerJwt) after this one
    /// refuses what nobody accepts. Call this when no extractor after this one checks
    /// bearer tokens (`oidc.refuse_other_issuers().or_anonymous()`): otherwise a token of
    /// another issuer would make its caller anonymous.
    #[must_use]
    pub fn refuse_other_issuers(self) -> Self {
        self.with(|c| c.refuse_other_issuers = true)
    }

    /// The rate limit of key fetches once the [burst](Self::refresh_burst) is used up: one
    /// per `interval`. Default is 10 seconds. `Duration::ZERO` removes the limit.
    ///
    /// While the limit holds, a token signed by a key the cache does not know yet is
    /// refused.
    #[must_use]
    pub fn min_refresh_interval(self, interval: Duration) -> Self {
        self.with(|c| c.fetch.min_interval = interval)
    }

    /// How many key fetches may happen back to back (the first one included) before the
    /// [interval](Self::min_refresh_interval) applies. Default is 3.
    #[must_use]
    pub fn refresh_burst(self, burst: u32) -> Self {
        self.with(|c| c.fetch.burst = burst.max(1))
    }

    /// How long fetched keys are used, at least and at most, whatever the JWK Set's
    /// `Cache-Control` says (`no-cache` and `no-store` count as zero; no `max-age`, as 5
    /// minutes). Default is 1 minute to 1 hour. After that, keys are refetched in the
    /// background, so a key the provider withdrew stops verifying.
    #[must_use]
    pub fn cache_bounds(self, shortest: Duration, longest: Duration) -> Self {
        let bounds = (shortest.min(longest), longest.max(shortest));
        self.with(|c| c.fetch.cache_bounds = Some(bounds))
    }

    /// How long one fetch of the keys (with the discovery document, the first time) may
    /// take. Default is 5 seconds.
    #[must_use]
    pub fn fetch_timeout(self, timeout: Duration) -> Self {
        self.with(|c| c.fetch.timeout = timeout)
    }

    /// The client the discovery document and the keys are fetched with (e.g. one trusting
    /// a private CA). Default is [`ProxyClient::new`]. Redirects are not followed.
    #[must_use]
    pub fn client(self, client: ProxyClient) -> Self {
        self.with(|c| c.fetch.client = client)
    }

    /// The issuer, as configured.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// The accepted audiences.
    pub fn audiences(&self) -> &[String] {
        &self.config.audiences
    }

    /// Fetches the provider's keys now (the discovery document first, the first time),
    /// within the rate limit, and returns the `kid`s known afterwards: at start-up, to
    /// learn early that the issuer is misconfigured or unreachable (the reason goes to
    /// `tracing`). Tokens do not need it: the first one fetches the keys.
    pub async fn fetch_keys(&self) -> Vec<String> {
        self.remote.refresh(&self.config.fetch, None).await;
        self.verifier.kids()
    }

    /// The claims of `token`, checked, with one refresh of the keys for an unknown `kid`.
    async fn verify(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        match self.verifier.verify_by(token, |key| self.check(token, key)) {
            Err(e) if e == VerifyError::UNKNOWN_KEY => {
                let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
                self.remote
                    .refresh(&self.config.fetch, kid.as_deref())
                    .await;
                self.verifier.verify_by(token, |key| self.check(token, key))
            }
            Ok(claims) => {
                self.remote.refresh_if_stale(&self.config.fetch);
                Ok(claims)
            }
            Err(e) => Err(e),
        }
    }

    fn check(&self, token: &str, key: &VerifyingKey) -> Result<Map<String, Value>, VerifyError> {
        let config = &self.config;
        let audiences: Vec<&str> = config.audiences.iter().map(String::as_str).collect();
        let validation = validation(key.alg, config.leeway, Some(&config.issuer), &audiences);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| VerifyError::from_jsonwebtoken(&e))?
            .claims;
        match claims.get("iat") {
            None => {}
            Some(iat) => match iat.as_f64() {
                // Seconds, possibly with a fraction (RFC 7519 §2 NumericDate).
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Some(secs) if secs >= 0.0 => check_iat(secs as u64, config.leeway)?,
                _ => return Err(VerifyError::because("the token is malformed")),
            },
        }
        Ok(claims)
    }

    /// The identity the verified `claims` carry.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, VerifyError> {
        let config = &self.config;
        let name = claim(claims, &config.name_claim)
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .ok_or(VerifyError::because("the token lacks the name claim"))?;
        let mut roles = Vec::new();
        for path in &config.roles_claims {
            match claim(claims, path) {
                Some(Value::Array(items)) => {
                    roles.extend(items.iter().filter_map(Value::as_str).map(str::to_owned));
                }
                Some(Value::String(list)) => {
                    roles.extend(list.split_whitespace().map(str::to_owned));
                }
                _ => {}
            }
        }
        let roles = roles.into_iter().filter_map(|role| config.map_role(role));
        let mut identity = Identity::new(name, roles);
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
            identity = identity.valid_until(std::time::UNIX_EPOCH + Duration::from_secs(exp));
        }
        Ok(identity)
    }
}

impl Config {
    /// A provider's role as the app names it, or `None` if it is not kept.
    fn map_role(&self, role: String) -> Option<String> {
        if role.is_empty()
            || self
                .allowed_roles
                .as_ref()
                .is_some_and(|a| !a.contains(&role))
        {
            return None;
        }
        let role = match self.role_case {
            RoleCase::Keep => role,
            RoleCase::Upper => role.to_uppercase(),
            RoleCase::Lower => role.to_lowercase(),
        };
        Some(if role.starts_with(&self.role_prefix) {
            role
        } else {
            format!("{}{role}", self.role_prefix)
        })
    }
}

/// The claim at `path` (see [`OidcBearer::roles_claim`]): the whole path as one name first,
/// then each split at a dot, the shorter names first.
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    path.match_indices('.').find_map(|(at, _)| {
        let inner = claims.get(&path[..at])?.as_object()?;
        claim(inner, &path[at + 1..])
    })
}

/// The `iss` a token claims, read without checking anything: only to tell whose it is.
fn claimed_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Issuer {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Issuer>(&json).ok()?.iss
}

/// `401` with `WWW-Authenticate: Bearer error="invalid_token", error_description="…"`.
fn invalid_token(reason: &VerifyError) -> Rejection {
    tracing::debug!(target: "tower_identity_proxy", reason = reason.reason(), "identity provider token refused");
    // The reasons are fixed sentences without `"` or `\`: a valid quoted-string.
    let challenge = HeaderValue::try_from(format!(
        r#"Bearer error="invalid_token", error_description="{}""#,
        reason.reason()
    ))
    .unwrap_or(HeaderValue::from_static(r#"Bearer error="invalid_token""#));
    Rejection::unauthorized(Some(challenge), "The bearer token is not valid.")
}

impl IdentityExtractor for OidcBearer {
    /// `Bearer` (RFC 6750 §3: no error code when the request carries no token).
    fn challenges(&self) -> Vec<HeaderValue> {
        vec![HeaderValue::from_static("Bearer")]
    }

    async fn extract(&self, parts: &Parts) -> ExtractResult {
        let token = match credentials_for(&parts.headers, "bearer") {
            Ok(Some(token)) => token,
            Ok(None) => return Ok(None),
            Err(_) => {
                return Err(invalid_token(&VerifyError::because(
                    "the Authorization header is malformed",
                )));
            }
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid_token(&VerifyError::because(
                "the token is too long",
            )));
        }
        if claimed_issuer(token).as_deref() != Some(&*self.config.issuer) {
            if self.config.refuse_other_issuers {
                return Err(invalid_token(&VerifyError::because(
                    "the token comes from another issuer",
                )));
            }
            return Ok(None);
        }
        let claims = self.verify(token).await.map_err(|e| invalid_token(&e))?;
        self.identity(&claims)
            .map(Some)
            .map_err(|e| invalid_token(&e))
    }
}

impl fmt::Debug for OidcBearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("OidcBearer")
            .field("issuer", &c.issuer)
            .field("audiences", &c.audiences)
            .field("keys", &self.remote)
            .field("algorithms", &c.fetch.algorithms)
            .field("name_claim", &c.name_claim)
            .field("roles_claims", &c.roles_claims)
            .field("role_case", &c.role_case)
            .field("role_prefix", &c.role_prefix)
            .field("refuse_other_issuers", &c.refuse_other_issuers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn keycloak() -> OidcBearer {
        OidcBearer::discover("https://sso.example.com/realms/demo", ["my-app"]).unwrap()
    }

    #[test]
    fn claim_paths_reach_nested_and_dotted_names() {
        let c = claims(json!({
            "realm_access": {"roles": ["admin"]},
            "resource_access": {"my.app": {"roles": ["viewer"]}, "my": {"app": 1}},
            "https://example.com/roles": ["editor"],
            "scope": "openid profile",
        }));
        assert_eq!(claim(&c, "realm_access.roles"), Some(&json!(["admin"])));
        assert_eq!(
            claim(&c, "resource_access.my.app.roles"),
            Some(&json!(["viewer"]))
        );
        assert_eq!(
            claim(&c, "https://example.com/roles"),
            Some(&json!(["editor"]))
        );
        assert_eq!(claim(&c, "scope"), Some(&json!("openid profile")));
        for absent in ["groups", "realm_access.groups", "scope.x", "", "."] {
            assert_eq!(claim(&c, absent), None, "{absent}");
        }
    }

    #[test]
    fn roles_come_from_every_shape_then_are_mapped() {
        let oidc = keycloak()
            .roles_claim("realm_access.roles")
            .roles_claim("resource_access.my-app.roles")
            .roles_claim("groups")
            .roles_claim("scope")
            .roles_claim("absent")
            .allowed_roles(["admin", "viewer", "ops", "read", "ROLE_USER"])
            .role_case(RoleCase::Upper)
            .role_prefix("ROLE_");
        let c = claims(json!({
            "sub": "f81d4fae", "exp": 4_000_000_000u64,
            "realm_access": {"roles": ["admin", "offline_access", 7]},
            "resource_access": {"my-app": {"roles": ["viewer"]}},
            "groups": ["ops", ""],
            "scope": "openid  read",
            "absent_shape": {"roles": "x"},
        }));
        let who = oidc.identity(&c).unwrap();
        assert_eq!(who.name(), "f81d4fae");
        assert_eq!(
            who.roles(),
            ["ROLE_ADMIN", "ROLE_OPS", "ROLE_READ", "ROLE_VIEWER"]
        );
        assert!(who.expires_at().is_some());

        // The prefix is not doubled; without mapping, roles stay as spelled.
        let plain = keycloak().roles_claim("groups").role_prefix("ROLE_");
        let c = claims(json!({"sub": "a", "groups": ["ROLE_USER", "User"]}));
        assert_eq!(
            plain.identity(&c).unwrap().roles(),
            ["ROLE_USER", "ROLE_User"]
        );
        let lower = keycloak().roles_claim("groups").role_case(RoleCase::Lower);
        assert_eq!(lower.identity(&c).unwrap().roles(), ["role_user", "user"]);
    }

    #[test]
    fn the_name_claim_is_required_and_roles_are_not() {
        let oidc = keycloak()
            .name_claim("preferred_username")
            .roles_claim("groups");
        let who = oidc
            .identity(&claims(json!({"preferred_username": "alice"})))
            .unwrap();
        assert_eq!(who.name(), "alice");
        assert!(who.roles().is_empty());
        for c in [
            json!({"sub": "a"}),
            json!({"preferred_username": ""}),
            json!({"preferred_username": 42}),
        ] {
            let err = oidc.identity(&claims(c.clone())).unwrap_err();
            assert_eq!(err.reason(), "the token lacks the name claim", "{c}");
        }
    }

    #[test]
    fn the_claimed_issuer_is_read_without_checking() {
        let token =
            |payload: &Value| format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload.to_string()));
        assert_eq!(
            claimed_issuer(&token(&json!({"iss": "https://a"}))).as_deref(),
            Some("https://a")
        );
        for not in [
            token(&json!({"sub": "a"})),
            token(&json!({"iss": 5})),
            "opaque-token".to_owned(),
            "a.!!!.c".to_owned(),
        ] {
            assert_eq!(claimed_issuer(&not), None, "{not}");
        }
    }

    #[test]
    fn a_refusal_says_why_in_the_challenge() {
        let r = invalid_token(&VerifyError::because("the token has expired"));
        assert_eq!(r.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.challenge().unwrap(),
            r#"Bearer error="invalid_token", error_description="the token has expired""#
        );
        assert_eq!(r.message(), "The bearer token is not valid.");
    }

    #[test]
    fn configuration_is_checked_when_built() {
        let no_audience: [&str; 0] = [];
        assert!(OidcBearer::discover("https://sso.example.com", no_audience).is_err());
        for bad in [
            "ftp://sso",
            "sso.example.com",
            "https://u:p@sso",
            "/realms/x",
        ] {
            assert!(OidcBearer::discover(bad, ["a"]).is_err(), "{bad}");
            assert!(OidcBearer::jwks_url(bad, "https://sso/certs", ["a"]).is_err());
            if !bad.contains(['?', '#']) {
                assert!(OidcBearer::jwks_url("https://sso", bad, ["a"]).is_err());
            }
        }
        let oidc = keycloak().audience("other").audience("my-app");
        assert_eq!(oidc.audiences(), ["my-app", "other"]);
        assert_eq!(oidc.issuer(), "https://sso.example.com/realms/demo");
        let debug = format!("{oidc:?}");
        assert!(
            debug.contains("https://sso.example.com/realms/demo"),
            "{debug}"
        );
    }
}
