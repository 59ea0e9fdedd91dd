//! The JWKS cache of the target-side verifier: fetched from one configured URL, refreshed
//! when stale or when a token names an unknown `kid`, never more often than a minimum
//! interval.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::{
    client::ProxyClient,
    error::BoxError,
    jwt::{
        keys::{Algorithm, PublicKey},
        verifier::{SharedKeys, VerifyingKey},
    },
};

/// The largest JWKS document read.
const MAX_DOCUMENT: usize = 256 * 1024;

/// How the JWKS is fetched; set on the layer, shared by its services.
#[derive(Clone)]
pub(crate) struct FetchConfig {
    pub(crate) client: ProxyClient,
    pub(crate) algorithms: Arc<[Algorithm]>,
    pub(crate) min_interval: Duration,
    pub(crate) burst: u32,
    pub(crate) max_age: Duration,
    pub(crate) timeout: Duration,
}

/// A token bucket: `burst` fetches at once, then one per `min_interval`.
#[derive(Default)]
struct FetchState {
    /// Fetches allowed now, once refilled; `None` until the first fetch (a full bucket).
    allowance: Option<f64>,
    last_refill: Option<Instant>,
}

impl FetchState {
    /// Takes one fetch from the bucket, if there is one.
    fn take(&mut self, config: &FetchConfig) -> bool {
        if config.min_interval.is_zero() {
            return true;
        }
        let burst = f64::from(config.burst.max(1));
        let now = Instant::now();
        let refilled = self.last_refill.map_or(0.0, |at| {
            now.duration_since(at).as_secs_f64() / config.min_interval.as_secs_f64()
        });
        let allowance = self.allowance.map_or(burst, |a| (a + refilled).min(burst));
        self.last_refill = Some(now);
        if allowance < 1.0 {
            self.allowance = Some(allowance);
            return false;
        }
        self.allowance = Some(allowance - 1.0);
        true
    }
}

/// The cached keys of one JWKS URL, shared by every service of a layer.
pub(crate) struct RemoteJwks {
    url: Uri,
    keys: SharedKeys,
    state: Mutex<FetchState>,
    /// Bumped after each fetch attempt, so callers that waited for one do not start another.
    attempts: AtomicU64,
    /// Whether the keys are older than `max_age` (checked on the request path without a lock).
    stale_at: std::sync::Mutex<Option<Instant>>,
    background: AtomicBool,
}

impl RemoteJwks {
    pub(crate) fn new(url: Uri, keys: SharedKeys) -> Self {
        Self {
            url,
            keys,
            state: Mutex::new(FetchState::default()),
            attempts: AtomicU64::new(0),
            stale_at: std::sync::Mutex::new(None),
            background: AtomicBool::new(false),
        }
    }

    pub(crate) fn url(&self) -> &Uri {
        &self.url
    }

    /// Fetches the JWKS if the rate limit allows it (`burst` fetches, then one per
    /// `min_interval`); callers arriving during a fetch wait for it instead of starting
    /// another, and a caller looking for `kid` does not fetch once another fetch has
    /// brought it.
    pub(crate) async fn refresh(&self, config: &FetchConfig, kid: Option<&str>) {
        let seen = self.attempts.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return; // another caller fetched while this one waited
        }
        if let Some(kid) = kid
            && self.keys.load().iter().any(|k| k.kid == kid)
        {
            return; // a fetch that finished meanwhile brought the key
        }
        if !state.take(config) {
            tracing::debug!(target: "tower_identity_proxy", url = %self.url, "JWKS refresh skipped: rate limit");
            return;
        }
        match tokio::time::timeout(config.timeout, self.fetch(config)).await {
            Ok(Ok(keys)) => {
                tracing::debug!(target: "tower_identity_proxy", url = %self.url, keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
                if let Ok(mut stale) = self.stale_at.lock() {
                    *stale = Instant::now().checked_add(config.max_age);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "tower_identity_proxy", url = %self.url, error = %e, "JWKS fetch failed; keeping the previous keys");
            }
            Err(_) => {
                tracing::warn!(target: "tower_identity_proxy", url = %self.url, "JWKS fetch timed out; keeping the previous keys");
            }
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts a refresh in the background when the keys are older than `max_age`, so a
    /// request never waits for a routine refresh.
    pub(crate) fn refresh_if_stale(self: &Arc<Self>, config: &FetchConfig) {
        let stale = self
            .stale_at
            .lock()
            .map(|at| at.is_some_and(|at| Instant::now() >= at))
            .unwrap_or(false);
        if !stale || self.background.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.background.store(false, Ordering::Release);
            return;
        };
        let this = Arc::clone(self);
        let config = config.clone();
        runtime.spawn(async move {
            this.refresh(&config, None).await;
            this.background.store(false, Ordering::Release);
        });
    }

    async fn fetch(&self, config: &FetchConfig) -> Result<Vec<VerifyingKey>, BoxError> {
        let res = config.client.get(self.url.clone()).await?;
        if res.status() != StatusCode::OK {
            return Err(format!("the JWKS URL answered {}", res.status()).into());
        }
        let body = Limited::new(res.into_body(), MAX_DOCUMENT)
            .collect()
            .await?
            .to_bytes();
        let doc: Value = serde_json::from_slice(&body)?;
        let Some(jwks) = doc.get("keys").and_then(Value::as_array) else {
            return Err("the JWKS has no `keys` array".into());
        };
        Ok(parse_keys(jwks, &config.algorithms))
    }
}

/// The usable verifying keys of a JWK Set: signature keys of a supported type, each with
/// the allowed algorithm(s) it may verify. Other keys are skipped (and logged).
pub(crate) fn parse_keys(jwks: &[Value], allowed: &[Algorithm]) -> Vec<VerifyingKey> {
    let mut keys = Vec::new();
    for jwk in jwks {
        if jwk.get("use").is_some_and(|u| u != "sig") {
            continue;
        }
        let key = match PublicKey::from_jwk(jwk) {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(target: "tower_identity_proxy", error = %e, "JWK skipped");
                continue;
            }
        };
        let kid = match jwk.get("kid") {
            Some(Value::String(kid)) => kid.clone(),
            Some(_) => continue,
            None => key.kid().to_owned(),
        };
        match jwk.get("alg") {
            Some(alg) => {
                let Some(alg) = alg.as_str().and_then(Algorithm::from_name) else {
                    continue;
                };
                if allowed.contains(&alg) && key.supports(alg) {
                    keys.push(VerifyingKey::with_kid(kid, &key, alg));
                }
            }
            None => {
                for &alg in allowed.iter().filter(|a| key.supports(**a)) {
                    keys.push(VerifyingKey::with_kid(kid.clone(), &key, alg));
                }
            }
        }
    }
    keys
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.url)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jwt::KeyPair;

    #[test]
    fn the_bucket_allows_a_burst_then_one_per_interval() {
        let config = FetchConfig {
            client: ProxyClient::new().unwrap(),
            algorithms: Arc::new([Algorithm::RS512]),
            min_interval: Duration::from_millis(200),
            max_age: Duration::from_secs(300),
            timeout: Duration::from_secs(1),
            burst: 3,
        };
        let mut state = FetchState::default();
        assert!((0..3).all(|_| state.take(&config)));
        assert!(!state.take(&config));
        std::thread::sleep(Duration::from_millis(250));
        assert!(state.take(&config));
        assert!(!state.take(&config));
        let unlimited = FetchConfig {
            min_interval: Duration::ZERO,
            ..config
        };
        assert!((0..100).all(|_| state.take(&unlimited)));
    }

    #[test]
    fn only_allowed_signature_keys_are_kept() {
        let rsa = KeyPair::generate_rsa(2048).unwrap();
        let ec = KeyPair::generate_ec(crate::jwt::Curve::P256).unwrap();
        let mut enc = rsa.public_key().to_jwk(Algorithm::RS512);
        enc["use"] = json!("enc");
        let mut no_alg = rsa.public_key().to_jwk(Algorithm::RS512);
        no_alg.as_object_mut().unwrap().remove("alg");
        no_alg["kid"] = json!("custom-kid");
        let jwks = [
            rsa.public_key().to_jwk(Algorithm::RS512),
            rsa.public_key().to_jwk(Algorithm::RS256),
            ec.public_key().to_jwk(Algorithm::ES256),
            enc,
            no_alg,
            json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS512", "kid": "hmac"}),
            json!({"kty": "RSA", "alg": "none"}),
        ];
        let keys = parse_keys(&jwks, &[Algorithm::RS512]);
        let got: Vec<(&str, Algorithm)> = keys.iter().map(|k| (k.kid.as_str(), k.alg)).collect();
        assert_eq!(
            got,
            [
                (rsa.kid(), Algorithm::RS512),
                ("custom-kid", Algorithm::RS512)
            ]
        );
    }

    #[test]
    fn a_kid_named_twice_by_a_jwk_set_is_listed_once() {
        // One RSA key published for two algorithms, around another key.
        let rsa = KeyPair::generate_rsa(2048).unwrap();
        let ed = KeyPair::generate_ed25519().unwrap();
        let jwks = [
            rsa.public_key().to_jwk(Algorithm::RS512),
            ed.public_key().to_jwk(Algorithm::EdDSA),
            rsa.public_key().to_jwk(Algorithm::PS512),
        ];
        let keys = parse_keys(
            &jwks,
            &[Algorithm::RS512, Algorithm::PS512, Algorithm::EdDSA],
        );
        assert_eq!(keys.len(), 3);
        let verifier =
            crate::jwt::Verifier::from_shared(Arc::new(arc_swap::ArcSwap::from_pointee(keys)));
        assert_eq!(verifier.kids(), [rsa.kid(), ed.kid()]);
    }
}
