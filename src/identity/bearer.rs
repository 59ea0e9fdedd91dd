//! Bearer tokens signed by the app's own key, so a target can call the app back with the
//! token it received.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::digest::{SHA256, digest};
use http::{HeaderValue, request::Parts};

use super::{
    CredentialStore, ExtractResult, Identity, IdentityExtractor, Rejection, clock::Clock,
    credentials_for,
};
use crate::jwt::verifier::{Verifier, VerifyError, VerifyingKey};

/// Accepts `Authorization: Bearer <JWT>` when the token verifies with the app's keys
/// (see [`Verifier`]: pinned algorithm, `exp` required, `alg: none` refused).
///
/// With [`KeySet::verifier`](crate::jwt::KeySet::verifier), the key is chosen by the token's
/// `kid` among every published key and follows rotations.
///
/// No `Authorization` header or another scheme: no identity (a chain that finds none answers
/// `401` with `WWW-Authenticate: Bearer`). A token that does not verify: `401` with
/// `WWW-Authenticate: Bearer error="invalid_token"`.
///
/// The identities it reads are marked as call-back identities
/// ([`Identity::is_callback`]): routes meant for people only refuse them.
///
/// # Verified tokens are cached
///
/// A token that verified is recognised again without its signature being checked, until
/// its `exp` (never later, whatever the verifier's leeway), or until the key that signed it
/// retires. The cache is keyed by the SHA-256 of the whole token and holds at most
/// [10 000 tokens](Self::token_cache) (when full, expired ones go first, then any); it is
/// emptied whenever the verifier's shared keys change, so a key revoked with
/// [`KeySet::revoke`](crate::jwt::KeySet::revoke) verifies nothing from the cache either. It keeps
/// no token, only its hash and the identity it carries. Turn it off with
/// [`token_cache(0)`](Self::token_cache).
///
/// # Following the users
///
/// A token outlives a change to its user. With [`users`](Self::users), a token is refused
/// (`401`) as soon as its user is removed from the store, or given other roles, even if the
/// token is still valid; tokens of identities the store never held (the anonymous user,
/// users of an identity provider) are unaffected. See
/// [`CredentialStore::vouches_for`].
#[derive(Clone, Debug)]
pub struct BearerJwt {
    verifier: Verifier,
    cache: Option<Arc<VerifiedTokens>>,
    users: Option<CredentialStore>,
}

/// How many verified tokens are kept by default.
const DEFAULT_TOKEN_CACHE: usize = 10_000;

impl BearerJwt {
    /// Bearer tokens checked by `verifier`, e.g. [`KeyPair::verifier`](crate::jwt::KeyPair::verifier),
    /// with a cache of 10 000 verified tokens.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            cache: None,
            users: None,
        }
        .token_cache(DEFAULT_TOKEN_CACHE)
    }

    /// Keeps at most `capacity` verified tokens (see
    /// [the type's docs](Self#verified-tokens-are-cached)); `0` turns the cache off.
    /// Default: 10 000. The cache is shared by the clones of this extractor; this makes a
    /// new, empty one.
    pub fn token_cache(mut self, capacity: usize) -> Self {
        self.cache =
            (capacity > 0).then(|| Arc::new(VerifiedTokens::new(capacity, Clock::default())));
        self
    }

    /// Refuses the tokens of users that `store` removed, or gave other roles, since the
    /// tokens were signed (see [`CredentialStore::vouches_for`]), at the next request.
    /// Give it the store the app's [`BasicAuth`](super::BasicAuth) checks passwords
    /// against.
    pub fn users(mut self, store: CredentialStore) -> Self {
        self.users = Some(store);
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The identity in `token` and its `iat`: from the cache, else verified (and cached).
    fn verify(&self, token: &str) -> Result<(Identity, u64), VerifyError> {
        match &self.cache {
            Some(cache) => cache.verify(&self.verifier, token),
            None => self
                .verifier
                .verify(token)
                .map(|claims| (claims.identity().callback(), claims.iat)),
        }
    }
}

pub(crate) fn invalid_token(message: &'static str) -> Rejection {
    Rejection::unauthorized(
        Some(HeaderValue::from_static(r#"Bearer error="invalid_token""#)),
        message,
    )
}

impl IdentityExtractor for BearerJwt {
    /// `Bearer` (RFC 6750 §3: no error code when the request carries no token).
    fn challenges(&self) -> Vec<HeaderValue> {
        vec![HeaderValue::from_static("Bearer")]
    }

    async fn extract(&self, parts: &Parts) -> ExtractResult {
        let Some(token) = credentials_for(&parts.headers, "bearer").map_err(invalid_token)? else {
            return Ok(None);
        };
        match self.verify(token) {
            Ok((identity, issued_at)) => {
                if let Some(users) = &self.users
                    && !users.vouches_for(identity.name(), identity.roles(), issued_at)
                {
                    tracing::debug!(
                        target: "tower_identity_proxy",
                        "bearer token refused: its user was removed or changed since it was signed"
                    );
                    return Err(invalid_token("The bearer token is not valid."));
                }
                Ok(Some(identity))
            }
            Err(e) => {
                tracing::debug!(target: "tower_identity_proxy", reason = e.reason(), "bearer token refused");
                Err(invalid_token("The bearer token is not valid."))
            }
        }
    }
}

/// Tokens that verified, by the SHA-256 of the whole token, with the keys they verified
/// against: when those change, the cache is emptied.
#[derive(Debug)]
struct VerifiedTokens {
    capacity: usize,
    state: RwLock<Tokens>,
    clock: Clock,
}

#[derive(Default)]
struct Tokens {
    /// The shared keys the entries verified against (the same `Arc`, so never a new set at
    /// a reused address).
    keys: Option<Arc<Vec<VerifyingKey>>>,
    entries: HashMap<[u8; 32], Verified>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Verified {
    identity: Identity,
    issued_at: u64,
    /// The token's `exp`, or its key's retirement if sooner.
    until: SystemTime,
}

impl VerifiedTokens {
    fn new(capacity: usize, clock: Clock) -> Self {
        Self {
            capacity,
            state: RwLock::new(Tokens::default()),
            clock,
        }
    }

    fn verify(&self, verifier: &Verifier, token: &str) -> Result<(Identity, u64), VerifyError> {
        let mut hash = [0; 32];
        hash.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
        let keys = verifier.current_keys();
        let now = self.clock.system_now();
        let same_keys = |state: &Tokens| state.keys.as_ref().is_some_and(|k| Arc::ptr_eq(k, &keys));
        let stale = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if same_keys(&state)
                && let Some(hit) = state.entries.get(&hash)
                && now < hit.until
            {
                return Ok((hit.identity.clone(), hit.issued_at));
            }
            !same_keys(&state)
        };
        if stale {
            // The keys changed (a rotation, a revocation): nothing verified before counts.
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if !same_keys(&state) && Arc::ptr_eq(&keys, &verifier.current_keys()) {
                state.entries.clear();
                state.keys = Some(Arc::clone(&keys));
            }
        }
        let (claims, retires) = verifier.verify_against(token, &keys)?;
        let identity = claims.identity().callback();
        let exp = UNIX_EPOCH + Duration::from_secs(claims.exp);
        let until = retires.map_or(exp, |at| at.min(exp));
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if !same_keys(&state) || now >= until {
            // The keys changed again meanwhile (or the token is past `exp`, within the
            // verifier's leeway): not cached.
            return Ok((identity, claims.iat));
        }
        if state.entries.len() >= self.capacity && !state.entries.contains_key(&hash) {
            state.entries.retain(|_, v| now < v.until);
            if state.entries.len() >= self.capacity {
                let any = state.entries.keys().next().copied();
                if let Some(any) = any {
                    state.entries.remove(&any);
                }
            }
        }
        state.entries.insert(
            hash,
            Verified {
                identity: identity.clone(),
                issued_at: claims.iat,
                until,
            },
        );
        Ok((identity, claims.iat))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{JwtSigner, KeyPair, KeySigner};
    use http::header;
    use std::time::SystemTime;

    fn parts(lines: &[&str]) -> Parts {
        let mut parts = http::Request::new(()).into_parts().0;
        for line in lines {
            parts
                .headers
                .append(header::AUTHORIZATION, line.parse().unwrap());
        }
        parts
    }

    async fn sign(signer: &impl JwtSigner, name: &str, roles: &[&str]) -> crate::jwt::Token {
        signer
            .sign(&crate::identity::Identity::new(name, roles.iter().copied()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn verified_tokens_are_cached_marked_and_bounded() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let signer = KeySigner::new(keys.clone());
        let bearer = BearerJwt::new(keys.verifier()).token_cache(2);
        let cache = bearer.cache.clone().unwrap();
        let alice = sign(&signer, "Alice", &["ROLE_USER"]).await;
        for _ in 0..3 {
            let who = bearer
                .extract(&bearer_parts(&alice))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(who.name(), "Alice");
            assert!(who.is_callback());
        }
        assert_eq!(cache.len(), 1);
        for name in ["b", "c", "d"] {
            let token = sign(&signer, name, &["R"]).await;
            assert!(accepts(&bearer, &token).await);
            assert!(cache.len() <= 2);
        }
        // A token whose signature was tampered with is no hit, whatever the cache holds.
        // The signature's last character, changed to another that decodes canonically.
        let mut forged = alice.as_str().to_owned();
        let last = forged.pop();
        forged.push(if last == Some('A') { 'Q' } else { 'A' });
        let forged = parts(&[&format!("Bearer {forged}")]);
        assert_eq!(
            bearer
                .extract(&forged)
                .await
                .map_err(|e| e.status().as_u16()),
            Err(401)
        );
        // Off: still verified, still marked.
        let uncached = BearerJwt::new(keys.verifier()).token_cache(0);
        assert!(uncached.cache.is_none());
        assert!(accepts(&uncached, &alice).await);
    }

    fn bearer_parts(token: &crate::jwt::Token) -> Parts {
        parts(&[token.authorization().to_str().unwrap()])
    }

    /// Whether `bearer` takes `token`: panics on a refusal other than `401`, or on a token
    /// it does not read at all.
    async fn accepts(bearer: &BearerJwt, token: &crate::jwt::Token) -> bool {
        match bearer.extract(&bearer_parts(token)).await {
            Ok(who) => {
                assert!(who.unwrap().is_callback());
                true
            }
            Err(e) => {
                assert_eq!(e.status(), 401);
                false
            }
        }
    }

    /// The cache answers until `exp` and never after: with a moved clock, the entry is
    /// no hit (the verifier, on the real clock, then decides).
    #[tokio::test]
    async fn the_cache_answers_until_exp_only() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let signer = KeySigner::new(keys.clone())
            .policy(crate::jwt::TokenPolicy::new().lifetime(Duration::from_secs(60)));
        let token = sign(&signer, "Alice", &["R"]).await;
        let clock = Clock::stopped();
        let cache = VerifiedTokens::new(8, clock.clone());
        let verifier = keys.verifier();
        cache.verify(&verifier, token.as_str()).unwrap();
        let exp = {
            let state = cache.state.read().unwrap();
            state.entries.values().next().unwrap().until
        };
        assert_eq!(
            exp,
            UNIX_EPOCH + Duration::from_secs(verifier.verify(token.as_str()).unwrap().exp)
        );
        // Up to `exp` by the cache's clock: a hit; past it: none, and the verifier (on
        // the real clock) decides, with its leeway.
        let live = |cache: &VerifiedTokens| {
            let state = cache.state.read().unwrap();
            let now = cache.clock.system_now();
            state.entries.values().any(|v| now < v.until)
        };
        assert!(live(&cache));
        let to_exp = exp.duration_since(clock.system_now()).unwrap();
        clock.advance(to_exp - Duration::from_millis(1));
        assert!(live(&cache));
        clock.advance(Duration::from_millis(1));
        assert!(!live(&cache), "no entry answers at exp or later");
    }

    /// On the real clock: a token of two seconds' lifetime, cached, is refused once
    /// its `exp` has passed (a bounded wait on the clock, nothing timed).
    #[tokio::test]
    async fn a_token_is_never_accepted_past_exp() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let signer = KeySigner::new(keys.clone())
            .policy(crate::jwt::TokenPolicy::new().lifetime(Duration::from_secs(2)));
        let bearer = BearerJwt::new(keys.verifier().leeway(Duration::ZERO));
        let token = sign(&signer, "Alice", &["R"]).await;
        let exp = keys.verifier().verify(token.as_str()).unwrap().exp;
        assert!(accepts(&bearer, &token).await);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while SystemTime::now() <= UNIX_EPOCH + Duration::from_secs(exp + 1) {
            assert!(
                std::time::Instant::now() < deadline,
                "the clock did not move"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!accepts(&bearer, &token).await);
    }

    #[tokio::test]
    async fn a_revoked_key_verifies_nothing_from_the_cache() {
        let first = KeyPair::generate_ed25519().unwrap();
        // Signing switches to a rotated key at once.
        let set =
            crate::jwt::KeySet::new(KeySigner::new(first.clone())).rotation_delay(Duration::ZERO);
        let bearer = BearerJwt::new(set.verifier());
        let old = sign(&set.signer(), "Alice", &["R"]).await;
        assert!(accepts(&bearer, &old).await);
        set.rotate(KeyPair::generate_ed25519().unwrap()).unwrap();
        // Rotated: the previous key still verifies until it retires.
        assert!(accepts(&bearer, &old).await);
        let new = sign(&set.signer(), "Alice", &["R"]).await;
        assert!(accepts(&bearer, &new).await);
        assert!(set.revoke(first.kid()).unwrap());
        assert!(!accepts(&bearer, &old).await);
        assert!(accepts(&bearer, &new).await);
        assert_eq!(
            bearer.cache.as_ref().unwrap().len(),
            1,
            "emptied, then the new one"
        );
    }

    #[tokio::test]
    async fn tokens_follow_the_users() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let signer = KeySigner::new(keys.clone());
        let store = CredentialStore::with_hasher(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8, 1, 1, None).unwrap(),
        ));
        store.insert("Alice", "pw", ["ROLE_USER"]).unwrap();
        let bearer = BearerJwt::new(keys.verifier()).users(store.clone());
        let alice = sign(&signer, "Alice", &["ROLE_USER"]).await;
        assert!(accepts(&bearer, &alice.clone()).await);
        // Identities the store never held.
        assert!(
            accepts(
                &bearer,
                &sign(&signer, "anonymousUser", &["ROLE_ANONYMOUS"]).await
            )
            .await
        );
        assert!(accepts(&bearer, &sign(&signer, "idp-user", &["ROLE_USER"]).await).await);
        // A new password alone: still Alice.
        store.insert("Alice", "pw2", ["ROLE_USER"]).unwrap();
        assert!(accepts(&bearer, &alice.clone()).await);
        // Other roles: refused at once, although the token is cached.
        store
            .insert("Alice", "pw2", ["ROLE_USER", "ROLE_MORE"])
            .unwrap();
        assert!(!accepts(&bearer, &alice).await);
        store.insert("Alice", "pw2", ["ROLE_USER"]).unwrap();
        assert!(accepts(&bearer, &alice.clone()).await);
        // Removed: refused; added again, even with the same roles: the old token stays
        // refused.
        assert!(store.remove("Alice"));
        assert!(!accepts(&bearer, &alice).await);
        store.insert("Alice", "pw3", ["ROLE_USER"]).unwrap();
        assert!(!accepts(&bearer, &alice).await);
        // Without `users`, the store is not asked.
        let blind = BearerJwt::new(keys.verifier());
        assert!(accepts(&blind, &alice).await);
    }

    #[tokio::test]
    async fn one_good_token_only() {
        let keys = KeyPair::generate_ed25519().unwrap();
        let bearer = BearerJwt::new(keys.verifier());
        let token = KeySigner::new(keys)
            .sign(&crate::identity::Identity::new("Alice", ["ROLE_USER"]))
            .await
            .unwrap();
        let good = token.authorization().to_str().unwrap().to_owned();

        let who = bearer.extract(&parts(&[&good])).await.unwrap().unwrap();
        assert_eq!(who.name(), "Alice");
        assert_eq!(bearer.extract(&parts(&[])).await.unwrap(), None);
        assert_eq!(bearer.extract(&parts(&["Basic eDp5"])).await.unwrap(), None);
        for lines in [
            &["Bearer forged"][..],
            &["Bearer"],
            &[&good, &good],
            // A line of another scheme must not hide a forged token in a second one.
            &["Foo x", "Bearer forged"],
            &["Basic eDp5", &good],
            // A tab where the space belongs: no scheme, not "another scheme".
            &["Bearer\tforged"],
        ] {
            let got = bearer.extract(&parts(lines)).await;
            assert_eq!(got.map_err(|e| e.status().as_u16()), Err(401), "{lines:?}");
        }
    }
}
