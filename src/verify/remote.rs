//! The JWKS cache of the target-side verifier and of the identity-provider extractor:
//! fetched from one configured URL (or the URL an OpenID Connect discovery document names),
//! refreshed when stale or when a token names an unknown `kid`, never more often than a
//! minimum interval.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::{HeaderMap, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::{
    client::ProxyClient,
    error::{BoxError, ConfigError},
    jwt::{
        keys::{Algorithm, PublicKey},
        verifier::{SharedKeys, VerifyingKey},
    },
    observability::record::{self, Fetch},
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
    /// How long fetched keys are used before a background refresh, when the response's
    /// `Cache-Control` is not honoured or says nothing.
    pub(crate) max_age: Duration,
    /// `Some((shortest, longest))`: the response's `Cache-Control` (`max-age`, `no-cache`,
    /// `no-store`) decides how long the keys are used, within these bounds.
    pub(crate) cache_bounds: Option<(Duration, Duration)>,
    pub(crate) timeout: Duration,
}

impl FetchConfig {
    /// How long the keys of a response with these headers are used.
    fn freshness(&self, headers: &HeaderMap) -> Duration {
        let Some((shortest, longest)) = self.cache_bounds else {
            return self.max_age;
        };
        cache_max_age(headers).map_or(self.max_age, |age| age.max(shortest).min(longest))
    }
}

/// The freshness lifetime a response's `Cache-Control` gives (RFC 9111 §5.2.2): `max-age`,
/// or zero for `no-cache` and `no-store`; `None` when it says neither.
fn cache_max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut age = None;
    let directives = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for directive in directives {
        let (name, value) = match directive.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            // An invalid value makes the response stale (RFC 9111 §4.2.1).
            let secs = value.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            age = Some(age.map_or(secs, |a: u64| a.min(secs)));
        }
    }
    age.map(Duration::from_secs)
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

/// Where the JWK Set is found.
enum Source {
    /// At this URL.
    Jwks(Uri),
    /// At the `jwks_uri` of an OpenID Connect issuer's discovery document (found at the
    /// configured URL); the document's `issuer` must be this, character for character.
    Discovery { issuer: Arc<str> },
}

/// The cached keys of one JWKS URL, shared by every service of a layer.
pub(crate) struct RemoteJwks {
    /// The configured URL: the JWK Set's, or the discovery document's.
    url: Uri,
    source: Source,
    /// The JWK Set's URL, once discovered; forgotten when it fails, to discover it again.
    discovered: std::sync::Mutex<Option<Uri>>,
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
        Self::with_source(url.clone(), Source::Jwks(url), keys)
    }

    /// The keys of the OpenID Connect provider `issuer`, whose discovery document is at
    /// `{issuer}/.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §4).
    pub(crate) fn discover(issuer: &str, keys: SharedKeys) -> Result<Self, ConfigError> {
        parse_issuer(issuer)?;
        let document = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let url = parse_url(&document, "OpenID Connect issuer")?;
        let source = Source::Discovery {
            issuer: issuer.into(),
        };
        Ok(Self::with_source(url, source, keys))
    }

    fn with_source(url: Uri, source: Source, keys: SharedKeys) -> Self {
        Self {
            url,
            source,
            discovered: std::sync::Mutex::new(None),
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
            Ok(Ok((keys, fresh_for))) => {
                record::jwks_fetch(Fetch::Ok);
                tracing::debug!(target: "tower_identity_proxy", url = %self.url, keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
                if let Ok(mut stale) = self.stale_at.lock() {
                    *stale = Instant::now().checked_add(fresh_for);
                }
            }
            Ok(Err(e)) => {
                record::jwks_fetch(Fetch::Error);
                tracing::warn!(target: "tower_identity_proxy", url = %self.url, error = %e, "JWKS fetch failed; keeping the previous keys");
            }
            Err(_) => {
                record::jwks_fetch(Fetch::Timeout);
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

    /// The keys of the JWK Set and how long to use them.
    async fn fetch(&self, config: &FetchConfig) -> Result<(Vec<VerifyingKey>, Duration), BoxError> {
        let url = match &self.source {
            Source::Jwks(url) => url.clone(),
            Source::Discovery { issuer } => self.jwks_uri(config, issuer).await?,
        };
        let res = config.client.get(url).await;
        let res = match res {
            Ok(res) if res.status() == StatusCode::OK => res,
            failed => {
                // The provider may have moved its keys: discover them again next time.
                if let Ok(mut discovered) = self.discovered.lock() {
                    *discovered = None;
                }
                return Err(match failed {
                    Ok(res) => format!("the JWKS URL answered {}", res.status()).into(),
                    Err(e) => e,
                });
            }
        };
        let fresh_for = config.freshness(res.headers());
        let doc = read_json(res).await?;
        let Some(jwks) = doc.get("keys").and_then(Value::as_array) else {
            return Err("the JWKS has no `keys` array".into());
        };
        Ok((parse_keys(jwks, &config.algorithms), fresh_for))
    }

    /// The `jwks_uri` of the discovery document at `url`, read once and kept.
    async fn jwks_uri(&self, config: &FetchConfig, issuer: &str) -> Result<Uri, BoxError> {
        let url = &self.url;
        if let Some(known) = self.discovered.lock().ok().and_then(|d| d.clone()) {
            return Ok(known);
        }
        let res = config.client.get(url.clone()).await?;
        if res.status() != StatusCode::OK {
            return Err(format!("the discovery document's URL answered {}", res.status()).into());
        }
        let doc = read_json(res).await?;
        // OpenID Connect Discovery 1.0 §4.3: the issuer must be the one asked for, exactly.
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err("the discovery document names another issuer".into());
        }
        let Some(jwks_uri) = doc.get("jwks_uri").and_then(Value::as_str) else {
            return Err("the discovery document has no `jwks_uri`".into());
        };
        let jwks_uri = parse_url(jwks_uri, "jwks_uri")?;
        if url.scheme() == Some(&http::uri::Scheme::HTTPS)
            && jwks_uri.scheme() != Some(&http::uri::Scheme::HTTPS)
        {
            return Err("the discovery document's `jwks_uri` is not https".into());
        }
        if let Ok(mut discovered) = self.discovered.lock() {
            *discovered = Some(jwks_uri.clone());
        }
        Ok(jwks_uri)
    }
}

/// A JSON document of at most [`MAX_DOCUMENT`] bytes.
async fn read_json(res: http::Response<crate::client::Received>) -> Result<Value, BoxError> {
    let body = Limited::new(res.into_body(), MAX_DOCUMENT)
        .collect()
        .await?
        .to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// An OpenID Connect issuer: an `http` or `https` URL with a host and neither user info,
/// query nor fragment (OpenID Connect Discovery 1.0 §3).
pub(crate) fn parse_issuer(issuer: &str) -> Result<Uri, ConfigError> {
    if issuer.contains(['?', '#']) {
        return Err(ConfigError::InvalidSetting {
            name: "OpenID Connect issuer",
            reason: format!("{issuer:?}: an issuer has no query or fragment").into(),
        });
    }
    parse_url(issuer, "OpenID Connect issuer")
}

/// An absolute `http` or `https` URL with a host and no user info; `name` names the setting
/// in the error.
pub(crate) fn parse_url(url: &str, name: &'static str) -> Result<Uri, ConfigError> {
    let bad = |reason: &'static str| ConfigError::InvalidSetting {
        name,
        reason: format!("{url:?}: {reason}").into(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme must be http or https")),
    }
    let Some(authority) = uri.authority() else {
        return Err(bad("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(bad("user info is not allowed"));
    }
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    Ok(uri)
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
            cache_bounds: None,
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
    fn cache_control_sets_how_long_keys_are_used_within_bounds() {
        let config = |bounds| FetchConfig {
            client: ProxyClient::new().unwrap(),
            algorithms: Arc::new([Algorithm::RS256]),
            min_interval: Duration::from_secs(10),
            burst: 3,
            max_age: Duration::from_secs(300),
            cache_bounds: bounds,
            timeout: Duration::from_secs(1),
        };
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CACHE_CONTROL, v.parse().unwrap());
            }
            h
        };
        let bounded = config(Some((Duration::from_secs(60), Duration::from_secs(3600))));
        for (values, secs) in [
            (&["public, max-age=600"][..], 600),
            (&["max-age=15, stale-while-revalidate=15"], 60),
            (&["max-age=86400"], 3600),
            (&["no-cache"], 60),
            (&["public", "no-store"], 60),
            (&["max-age=\"120\""], 120),
            (&["max-age=junk"], 60),
            (&["max-age=900", "max-age=700"], 700),
            (&["public"], 300),
            (&[], 300),
        ] {
            let got = bounded.freshness(&headers(values));
            assert_eq!(got, Duration::from_secs(secs), "{values:?}");
        }
        // Not honoured: always `max_age`.
        let fixed = config(None);
        assert_eq!(
            fixed.freshness(&headers(&["max-age=10"])),
            Duration::from_secs(300)
        );
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
