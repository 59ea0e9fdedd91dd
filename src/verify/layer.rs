//! [`VerifyProxyJwtLayer`]: configuration of the target-side verifier.

use std::{fmt, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use tower_layer::Layer;

use super::{
    remote::{FetchConfig, RemoteJwks, parse_url},
    service::{Checker, VerifyProxyJwt},
};
use crate::{
    client::ProxyClient,
    error::ConfigError,
    jwt::{
        keys::{Algorithm, PublicKey},
        verifier::Verifier,
    },
};

/// Verifies the identity token of every request before the inner service sees it, and
/// puts the caller's [`Identity`](crate::identity::Identity) and [`Claims`](crate::jwt::Claims) into the
/// request extensions.
///
/// Keys come from a JWKS URL ([`jwks_url`](Self::jwks_url)) or are given up front
/// ([`new`](Self::new), [`public_key_pem`](Self::public_key_pem)). Every service built from
/// one layer, and every clone of it, shares one key cache.
///
/// See the [module docs](crate::verify) for an example.
#[must_use]
#[derive(Clone)]
pub struct VerifyProxyJwtLayer {
    verifier: Verifier,
    remote: Option<(Arc<RemoteJwks>, FetchConfig)>,
    optional: bool,
    max_token_len: usize,
}

impl VerifyProxyJwtLayer {
    /// Verifies with the keys of `verifier` (each pinned to its algorithm, with the
    /// verifier's leeway, issuer and audience).
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            remote: None,
            optional: false,
            max_token_len: 16 * 1024,
        }
    }

    /// Verifies tokens signed with `alg` by the key in this SPKI PEM (`-----BEGIN PUBLIC
    /// KEY-----`), as the Atoti document's target does with `public_key_pem`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidKey`] if the PEM holds no supported public key or the key
    /// cannot verify `alg`.
    pub fn public_key_pem(pem: &[u8], alg: Algorithm) -> Result<Self, ConfigError> {
        let key = PublicKey::from_pem(pem)?;
        if !key.supports(alg) {
            return Err(ConfigError::InvalidKey(
                format!("this key cannot verify {alg}").into(),
            ));
        }
        Ok(Self::new(Verifier::new(&key, alg)))
    }

    /// Verifies with the keys published at `url` (an RFC 7517 JWK Set, such as the app's
    /// [`Jwks`](crate::jwt::Jwks) service), fetched at the first request and cached.
    ///
    /// - A token naming an unknown `kid` makes the cache refetch, within a rate limit
    ///   ([`refresh_burst`](Self::refresh_burst) fetches, then one per
    ///   [`min_refresh_interval`](Self::min_refresh_interval)), so a flood of made-up
    ///   `kid`s cannot hammer the app; requests arriving during a fetch wait for it.
    /// - Keys older than [`refresh_interval`](Self::refresh_interval) are refetched in the
    ///   background.
    /// - A failed fetch keeps the previous keys.
    /// - Only keys for the [allowed algorithms](Self::algorithms) are used (RS512 by
    ///   default); `oct` (HMAC) keys never are.
    /// - Keys are fetched from this URL only, never from a URL named in a token (`jku`,
    ///   `x5u`), and redirects are not followed.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidSetting`] unless `url` is an absolute `http` or `https` URL
    /// with a host and no user info; [`ConfigError::Tls`] if the default client cannot be
    /// built.
    pub fn jwks_url(url: &str) -> Result<Self, ConfigError> {
        let uri = parse_url(url, "JWKS URL")?;
        let keys = Arc::new(ArcSwap::from_pointee(Vec::new()));
        let remote = Arc::new(RemoteJwks::new(uri, Arc::clone(&keys)));
        let config = FetchConfig {
            client: ProxyClient::new()?,
            algorithms: Arc::new([Algorithm::RS512]),
            min_interval: Duration::from_secs(10),
            burst: 3,
            max_age: Duration::from_secs(300),
            cache_bounds: None,
            timeout: Duration::from_secs(5),
        };
        Ok(Self {
            remote: Some((remote, config)),
            ..Self::new(Verifier::from_shared(keys))
        })
    }

    fn with_fetch(mut self, change: impl FnOnce(&mut FetchConfig)) -> Self {
        if let Some((_, config)) = &mut self.remote {
            change(config);
        }
        self
    }

    /// The algorithms keys from the JWKS may verify; each key verifies only its own `alg`
    /// (or, if the JWK names none, these algorithms that fit the key). Default is RS512
    /// only. Ignored for keys given up front, which carry their algorithm.
    pub fn algorithms<I: IntoIterator<Item = Algorithm>>(self, algorithms: I) -> Self {
        let algorithms: Arc<[Algorithm]> = algorithms.into_iter().collect();
        self.with_fetch(|c| c.algorithms = algorithms)
    }

    /// The rate limit of JWKS fetches, once the [burst](Self::refresh_burst) is used up:
    /// one per `interval`. Default is 10 seconds. `Duration::ZERO` removes the limit.
    ///
    /// While the limit holds, a token signed by a key the cache does not know yet is
    /// refused: publish keys before signing with them (see
    /// [`KeySet::publish`](crate::jwt::KeySet::publish)) if that window matters.
    pub fn min_refresh_interval(self, interval: Duration) -> Self {
        self.with_fetch(|c| c.min_interval = interval)
    }

    /// How many JWKS fetches may happen back to back (the first fetch included) before the
    /// [interval](Self::min_refresh_interval) applies. Default is 3: a rotation shortly
    /// after start-up is picked up at once, and a flood of made-up `kid`s costs at most
    /// that many fetches, then one per interval.
    pub fn refresh_burst(self, burst: u32) -> Self {
        self.with_fetch(|c| c.burst = burst.max(1))
    }

    /// How long fetched keys are used before they are refetched in the background (so
    /// revoked keys disappear). Default is 5 minutes.
    pub fn refresh_interval(self, interval: Duration) -> Self {
        self.with_fetch(|c| c.max_age = interval)
    }

    /// How long a JWKS fetch may take. Default is 5 seconds.
    pub fn fetch_timeout(self, timeout: Duration) -> Self {
        self.with_fetch(|c| c.timeout = timeout)
    }

    /// The client the JWKS is fetched with (e.g. one trusting a private CA). Default is
    /// [`ProxyClient::new`].
    pub fn client(self, client: ProxyClient) -> Self {
        self.with_fetch(|c| c.client = client)
    }

    /// The clock-skew leeway for `exp`, `nbf` and `iat`. Default is 30 seconds; longer
    /// than 10 years (such as [`Duration::MAX`]) is taken as 10 years.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.verifier = self.verifier.leeway(leeway);
        self
    }

    /// Requires this `iss`. Default: not checked.
    pub fn issuer(mut self, issuer: &str) -> Self {
        self.verifier = self.verifier.issuer(issuer);
        self
    }

    /// Requires this `aud` (e.g. the target's own origin). Default: a token carrying an
    /// `aud` is refused, since it was meant for someone else.
    pub fn audience(mut self, audience: &str) -> Self {
        self.verifier = self.verifier.audience(audience);
        self
    }

    /// Lets requests without a bearer token through, with no identity in their extensions
    /// (a request *with* a token that does not verify is still refused). Default is off:
    /// `401`.
    pub fn optional(mut self, optional: bool) -> Self {
        self.optional = optional;
        self
    }

    /// The longest token read; a longer one is refused without being parsed. Default is
    /// 16 KiB.
    pub fn max_token_len(mut self, len: usize) -> Self {
        self.max_token_len = len;
        self
    }

    /// The verifier (with the keys fetched so far, for a JWKS URL).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

impl<S> Layer<S> for VerifyProxyJwtLayer {
    type Service = VerifyProxyJwt<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyProxyJwt::from_checker(
            inner,
            Arc::new(Checker {
                verifier: self.verifier.clone(),
                remote: self.remote.clone(),
                optional: self.optional,
                max_token_len: self.max_token_len,
            }),
        )
    }
}

impl fmt::Debug for VerifyProxyJwtLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyProxyJwtLayer")
            .field("verifier", &self.verifier)
            .field("jwks_url", &self.remote.as_ref().map(|(r, _)| r.url()))
            .field("optional", &self.optional)
            .field("max_token_len", &self.max_token_len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_urls_are_validated() {
        for bad in [
            "ftp://a/jwks",
            "/jwks.json",
            "not a url",
            "http://u:p@a/jwks",
            "file:///etc/passwd",
        ] {
            assert!(VerifyProxyJwtLayer::jwks_url(bad).is_err(), "{bad}");
        }
        let ok = VerifyProxyJwtLayer::jwks_url("http://127.0.0.1:8080/.well-known/jwks.json");
        assert!(ok.is_ok());
    }

    #[test]
    fn a_key_for_another_algorithm_is_refused() {
        let k = crate::jwt::KeyPair::generate_ed25519().unwrap();
        assert!(
            VerifyProxyJwtLayer::public_key_pem(k.public_key_pem().as_bytes(), Algorithm::RS512)
                .is_err()
        );
        assert!(
            VerifyProxyJwtLayer::public_key_pem(k.public_key_pem().as_bytes(), Algorithm::EdDSA)
                .is_ok()
        );
    }
}
