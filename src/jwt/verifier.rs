//! [`Verifier`]: checks tokens signed by this crate (or any RFC 7519 token of the same shape).
//!
//! It pins the algorithm of each key, requires `exp`, checks `exp`/`nbf`/`iat` with a
//! leeway, checks `iss` and `aud` when configured, and refuses `alg: none`, HMAC algorithms
//! (so a public key can never be used as an HMAC secret), and tokens whose header carries
//! `jku`, `x5u`, `jwk` or `x5c` (keys are never taken from the token).

use std::{
    fmt,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use jsonwebtoken::{DecodingKey, Validation};

use crate::jwt::{
    claims::Claims,
    keys::{Algorithm, KeyPair, PublicKey},
};

/// Makes sure jsonwebtoken has a crypto provider, so that it never panics when a downstream
/// crate also enables its other backend.
pub(crate) fn ensure_jwt_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
            let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
                &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
            );
        }
    });
}

/// Why a token was refused. The message is safe to show (it names no key material).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError(&'static str);

impl VerifyError {
    /// The reason, a short sentence.
    pub fn reason(&self) -> &'static str {
        self.0
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for VerifyError {}

impl VerifyError {
    /// No key with the token's `kid` (or no key at all) is known: a JWKS cache may refresh.
    pub(crate) const UNKNOWN_KEY: Self = Self("the token's key id is unknown");

    /// A refusal with this reason.
    pub(crate) const fn because(reason: &'static str) -> Self {
        Self(reason)
    }

    /// The reason of a refusal by `jsonwebtoken::decode`.
    pub(crate) fn from_jsonwebtoken(e: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        Self(match e.kind() {
            K::ExpiredSignature => "the token has expired",
            K::ImmatureSignature => "the token is not valid yet",
            K::InvalidSignature => "the token's signature is invalid",
            K::InvalidAudience => "the token is meant for another audience",
            K::InvalidIssuer => "the token comes from another issuer",
            K::MissingRequiredClaim(_) => "the token lacks a required claim",
            K::InvalidAlgorithm => "the token's algorithm is not accepted",
            _ => "the token is malformed",
        })
    }
}

/// The `jsonwebtoken` checks of a token signed with `alg`: `exp` required, `exp` and `nbf`
/// with `leeway` seconds, `iss` required and equal to `issuer` if given, `aud` required and
/// one of `audiences` if any are given (refused when carried otherwise: check that apart).
pub(crate) fn validation(
    alg: Algorithm,
    leeway: u64,
    issuer: Option<&str>,
    audiences: &[&str],
) -> Validation {
    let mut validation = Validation::new(alg.to_jsonwebtoken());
    validation.leeway = leeway;
    validation.validate_nbf = true;
    // jsonwebtoken checks `aud` and `iss` only when the token carries them: a required
    // one must also be a required claim, or a token without it passes.
    let mut required = vec!["exp"];
    if audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(audiences);
        required.push("aud");
    }
    if let Some(iss) = issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Refuses an `iat` (seconds since the epoch) later than now plus `leeway` seconds.
pub(crate) fn check_iat(iat: u64, leeway: u64) -> Result<(), VerifyError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if iat > now.saturating_add(leeway) {
        return Err(VerifyError("the token was issued in the future"));
    }
    Ok(())
}

/// One verifying key with the one algorithm it accepts.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    pub(crate) key: Arc<DecodingKey>,
    /// After this instant the key is retired and verifies nothing (key rotation).
    pub(crate) not_after: Option<SystemTime>,
}

impl VerifyingKey {
    pub(crate) fn new(public: &PublicKey, alg: Algorithm) -> Self {
        Self::with_kid(public.kid().to_owned(), public, alg)
    }

    /// A key known under another `kid` than its thumbprint (a JWKS from elsewhere).
    pub(crate) fn with_kid(kid: String, public: &PublicKey, alg: Algorithm) -> Self {
        Self {
            kid,
            alg,
            key: Arc::new(public.decoding_key()),
            not_after: None,
        }
    }

    fn is_live(&self, now: SystemTime) -> bool {
        self.not_after.is_none_or(|end| now <= end)
    }
}

/// A set of verifying keys that can change at run time (shared with a key set or a JWKS
/// cache).
pub(crate) type SharedKeys = Arc<ArcSwap<Vec<VerifyingKey>>>;

/// The longest leeway, in seconds (10 years): jsonwebtoken checks `exp` against the
/// current time minus the leeway in seconds since 1970, which must not go below zero.
pub(crate) const MAX_LEEWAY_SECS: u64 = 10 * 365 * 24 * 60 * 60;

/// Checks identity tokens. Cheap to clone.
///
/// It pins the algorithm of each key, requires `exp` and `sub`, checks `exp`/`nbf`/`iat`
/// with a [leeway](Self::leeway), checks `iss` and `aud` when configured (and refuses a
/// token carrying an `aud` when none is), and refuses `alg: none`, HMAC algorithms (so a
/// public key can never be used as an HMAC secret), tokens whose header carries `jku`,
/// `x5u`, `jwk` or `x5c` (keys are never taken from the token) and tokens with `crit`
/// header parameters.
///
/// # Example
///
/// ```
/// use tower_identity_proxy::{identity::Identity, jwt::{JwtSigner, KeyPair, KeySigner}};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let keys = KeyPair::generate_ed25519()?;
/// let token = KeySigner::new(keys.clone()).sign(&Identity::new("Alice", ["ROLE_USER"])).await?;
/// let claims = keys.verifier().verify(token.as_str())?;
/// assert_eq!(claims.sub, "Alice");
/// assert!(keys.verifier().verify("eyJhbGciOiJub25lIn0.e30.").is_err());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verifier {
    /// The keys it shares with a key set or a JWKS cache (follows their changes).
    keys: SharedKeys,
    /// Keys added with [`with_key`](Self::with_key), after the shared ones.
    extra: Arc<[VerifyingKey]>,
    leeway: u64,
    issuer: Option<Arc<str>>,
    audience: Option<Arc<str>>,
}

impl Verifier {
    /// A verifier for tokens signed by `key` with `alg`.
    pub fn new(key: &PublicKey, alg: Algorithm) -> Self {
        Self::from_shared(Arc::new(ArcSwap::from_pointee(vec![VerifyingKey::new(
            key, alg,
        )])))
    }

    pub(crate) fn from_shared(keys: SharedKeys) -> Self {
        ensure_jwt_provider();
        Self {
            keys,
            extra: Arc::new([]),
            leeway: 30,
            issuer: None,
            audience: None,
        }
    }

    /// Also accepts tokens signed by `key` with `alg` (e.g. the previous key during a
    /// rotation, or another replica's key). A verifier of a [`KeySet`](crate::jwt::KeySet) keeps
    /// following its rotations and revocations.
    #[must_use]
    pub fn with_key(self, key: &PublicKey, alg: Algorithm) -> Self {
        let mut extra = self.extra.to_vec();
        extra.push(VerifyingKey::new(key, alg));
        Self {
            extra: extra.into(),
            ..self
        }
    }

    /// The clock-skew leeway for `exp`, `nbf` and `iat`. Default is 30 seconds; longer
    /// than 10 years (such as [`Duration::MAX`]) is taken as 10 years.
    #[must_use]
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.as_secs().min(MAX_LEEWAY_SECS);
        self
    }

    /// Requires this `iss`. Default: `iss` is not checked.
    #[must_use]
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires this `aud`. Default: a token that carries an `aud` is refused, since it was
    /// meant for someone else (RFC 8725 §3.9).
    #[must_use]
    pub fn audience(mut self, audience: &str) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The `kid`s this verifier currently accepts, each once, in the order of its keys
    /// (the shared ones, then those of [`with_key`](Self::with_key)).
    pub fn kids(&self) -> Vec<String> {
        let now = SystemTime::now();
        let mut kids: Vec<String> = Vec::new();
        // A `kid` can come back after others: one key for two algorithms in a JWK Set, or
        // a `with_key` of a key already shared. The lists are short.
        for key in self.keys.load().iter().chain(self.extra.iter()) {
            if key.is_live(now) && !kids.contains(&key.kid) {
                kids.push(key.kid.clone());
            }
        }
        kids
    }

    /// Whether a key with this `kid` is known.
    pub fn knows_kid(&self, kid: &str) -> bool {
        let now = SystemTime::now();
        self.keys
            .load()
            .iter()
            .chain(self.extra.iter())
            .any(|k| k.kid == kid && k.is_live(now))
    }

    /// Verifies `token` and returns its claims.
    ///
    /// # Errors
    ///
    /// A [`VerifyError`] saying why the token was refused.
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.verify_by(token, |key| self.verify_with(token, key))
    }

    /// The checks every token goes through whatever its claims: its header (no key named
    /// by the token, no `crit`), then `check` with each live key of the token's `kid` (all
    /// live keys without one) pinned to the token's `alg`, until one succeeds.
    pub(crate) fn verify_by<T>(
        &self,
        token: &str,
        mut check: impl FnMut(&VerifyingKey) -> Result<T, VerifyError>,
    ) -> Result<T, VerifyError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| VerifyError("the token is malformed"))?;
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
        {
            return Err(VerifyError(
                "the token names its own key (jku, x5u, jwk or x5c)",
            ));
        }
        // No JWS extension is understood here, so none may be critical (RFC 7515 §4.1.11).
        if header.crit.is_some() {
            return Err(VerifyError("the token has critical header parameters"));
        }
        let keys = self.keys.load();
        let now = SystemTime::now();
        let all = keys.iter().chain(self.extra.iter());
        let candidates: Vec<&VerifyingKey> = match &header.kid {
            Some(kid) => all.filter(|k| &k.kid == kid && k.is_live(now)).collect(),
            None => all.filter(|k| k.is_live(now)).collect(),
        };
        if candidates.is_empty() {
            return Err(VerifyError::UNKNOWN_KEY);
        }
        let mut last = VerifyError("the token's algorithm is not accepted");
        for key in candidates {
            if key.alg.to_jsonwebtoken() != header.alg {
                continue;
            }
            match check(key) {
                Ok(claims) => return Ok(claims),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_with(&self, token: &str, key: &VerifyingKey) -> Result<Claims, VerifyError> {
        let audiences: Vec<&str> = self.audience.as_deref().into_iter().collect();
        let mut validation = validation(key.alg, self.leeway, self.issuer.as_deref(), &audiences);
        validation.required_spec_claims.insert("sub".to_owned());
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| VerifyError::from_jsonwebtoken(&e))?;
        let claims = data.claims;
        if self.audience.is_none() && claims.aud.is_some() {
            return Err(VerifyError("the token is meant for another audience"));
        }
        check_iat(claims.iat, self.leeway)?;
        Ok(claims)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.kids())
            .field("leeway", &self.leeway)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl KeyPair {
    /// A verifier for tokens this key signs with its default algorithm.
    pub fn verifier(&self) -> Verifier {
        Verifier::new(self.public_key(), self.default_algorithm())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        identity::Identity,
        jwt::{JwtSigner, KeySigner, TokenPolicy},
    };

    #[tokio::test]
    async fn a_leeway_too_long_for_the_clock_is_ten_years() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let signer =
            KeySigner::new(keys.clone()).policy(TokenPolicy::new().lifetime(Duration::ZERO));
        let token = signer.sign(&Identity::new("Alice", ["R"])).await.unwrap();
        let verifier = keys.verifier().leeway(Duration::MAX);
        assert_eq!(verifier.verify(token.as_str()).unwrap().sub, "Alice");
        assert_eq!(verifier.leeway, MAX_LEEWAY_SECS);
        assert_eq!(MAX_LEEWAY_SECS, 315_360_000, "ten years of 365 days");
        let verifier = keys.verifier().leeway(Duration::from_secs(90));
        assert_eq!(verifier.leeway, 90);
    }

    #[test]
    fn kids_lists_each_kid_once() {
        let a = KeyPair::generate_ed25519().unwrap();
        let b = KeyPair::generate_ed25519().unwrap();
        let verifier = a
            .verifier()
            .with_key(b.public_key(), Algorithm::EdDSA)
            .with_key(a.public_key(), Algorithm::EdDSA);
        assert_eq!(verifier.kids(), [a.kid(), b.kid()]);

        // A key set's verifier given a key the set already publishes.
        let set = crate::jwt::KeySet::new(KeySigner::new(a.clone()));
        set.publish(b.public_key(), Algorithm::EdDSA).unwrap();
        let verifier = set.verifier().with_key(a.public_key(), Algorithm::EdDSA);
        assert_eq!(verifier.kids(), [a.kid(), b.kid()]);
    }

    /// A token signed by jsonwebtoken itself with `claims`.
    fn foreign_token(keys: &KeyPair, claims: serde_json::Value) -> String {
        let key =
            jsonwebtoken::EncodingKey::from_ed_pem(keys.private_key_pem().as_bytes()).unwrap();
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    #[test]
    fn a_required_issuer_or_audience_must_be_present() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = |iss: Option<&str>, aud: Option<&str>| {
            let mut c = serde_json::json!({
                "sub": "Alice", "authorities": ["ROLE_USER"], "iat": now - 5, "exp": now + 300,
            });
            if let Some(iss) = iss {
                c["iss"] = iss.into();
            }
            if let Some(aud) = aud {
                c["aud"] = aud.into();
            }
            c
        };
        let verifier = keys
            .verifier()
            .issuer("https://app.example")
            .audience("https://target.example");
        let both = foreign_token(
            &keys,
            claims(Some("https://app.example"), Some("https://target.example")),
        );
        assert_eq!(verifier.verify(&both).unwrap().sub, "Alice");
        for (what, iss, aud) in [
            ("no aud", Some("https://app.example"), None),
            ("no iss", None, Some("https://target.example")),
            ("neither", None, None),
        ] {
            let token = foreign_token(&keys, claims(iss, aud));
            assert!(verifier.verify(&token).is_err(), "{what} was accepted");
        }
    }

    #[test]
    fn a_refusal_says_why() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let e = keys.verifier().verify("not a token").unwrap_err();
        assert_eq!(e.reason(), "the token is malformed");
        assert_eq!(e.to_string(), e.reason());
    }

    #[tokio::test]
    async fn a_retired_key_verifies_nothing() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let token = KeySigner::new(keys.clone())
            .sign(&Identity::new("Alice", ["R"]))
            .await
            .unwrap();
        let with = |not_after| {
            let mut key = VerifyingKey::new(keys.public_key(), keys.default_algorithm());
            key.not_after = Some(not_after);
            Verifier::from_shared(Arc::new(ArcSwap::from_pointee(vec![key])))
        };
        let retired = with(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(
            retired.verify(token.as_str()).unwrap_err(),
            VerifyError::UNKNOWN_KEY
        );
        assert!(!retired.knows_kid(keys.kid()));
        assert!(retired.kids().is_empty());
        let live = with(SystemTime::now() + Duration::from_secs(3600));
        assert_eq!(live.verify(token.as_str()).unwrap().sub, "Alice");
        assert!(live.knows_kid(keys.kid()));
        assert_eq!(live.kids(), [keys.kid()]);
    }

    #[test]
    fn each_refusal_names_its_reason() {
        use serde_json::json;

        let keys = KeyPair::generate_ed25519().unwrap();
        let other = KeyPair::generate_ed25519().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = |extra: serde_json::Value| {
            let mut c = serde_json::json!({
                "sub": "Alice", "authorities": ["ROLE_USER"], "iat": now - 5, "exp": now + 300,
            });
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        let reason = |verifier: &Verifier, signer: &KeyPair, extra| {
            verifier
                .verify(&foreign_token(signer, claims(extra)))
                .unwrap_err()
                .reason()
        };
        let plain = keys.verifier();
        for (verifier, signer, extra, want) in [
            (
                &plain,
                &keys,
                json!({"iat": now - 7200, "exp": now - 3600}),
                "the token has expired",
            ),
            (
                &plain,
                &keys,
                json!({"nbf": now + 3600}),
                "the token is not valid yet",
            ),
            (
                &plain,
                &other,
                json!({}),
                "the token's signature is invalid",
            ),
            (
                &plain.clone().audience("https://target.example"),
                &keys,
                json!({"aud": "https://elsewhere.example"}),
                "the token is meant for another audience",
            ),
            (
                &plain.clone().issuer("https://app.example"),
                &keys,
                json!({"iss": "https://elsewhere.example"}),
                "the token comes from another issuer",
            ),
            (
                &plain.clone().issuer("https://app.example"),
                &keys,
                json!({}),
                "the token lacks a required claim",
            ),
        ] {
            assert_eq!(reason(verifier, signer, extra), want);
        }
    }
}
