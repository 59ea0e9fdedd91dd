//! Identity from an OpenID Connect provider, over real sockets: a provider served by the
//! test (discovery document and JWK Set on 127.0.0.1:0, counting its requests), tokens it
//! signs with Keycloak-shaped claims, the app's proxy, and an echo target that records what
//! it receives. The target's tokens are checked with jsonwebtoken directly, never with the
//! crate's verifier.

mod common;

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Json, Router, extract::State, http::header, response::IntoResponse, routing::get};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{
    EchoTarget, Example, OTHER_RSA_PKCS8_PEM, OTHER_RSA_PUBLIC_PEM, Reply, basic, echo_target,
    get_with, now_secs, rsa_keys, serve, spawn_app, within,
};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tower_identity_proxy::{
    ProxyHandle, ProxyLayer,
    identity::{BasicAuth, BearerJwt, CredentialStore, IdentityExtractor, OidcBearer, RoleCase},
    jwt::{Algorithm, KeyPair, KeySigner},
};

/// The realm path of the provider, as Keycloak names its issuers.
const REALM: &str = "/realms/demo";
const AUDIENCE: &str = "my-app";

/// The provider's first signing key (an OpenSSL-made fixture).
fn key_a() -> KeyPair {
    KeyPair::from_pem(
        OTHER_RSA_PKCS8_PEM.as_bytes(),
        Some(OTHER_RSA_PUBLIC_PEM.as_bytes()),
    )
    .unwrap()
}

/// The provider's next key (rotation), made once per test binary.
fn key_b() -> KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate_rsa(2048).unwrap())
        .clone()
}

/// A key the provider never published, made once per test binary.
fn foreign_key() -> KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate_rsa(2048).unwrap())
        .clone()
}

/// The provider's state: its issuer, the keys it publishes, what it was asked.
#[derive(Default)]
struct ProviderState {
    issuer: OnceLock<String>,
    /// The issuer its discovery document names (default: its own).
    claimed_issuer: OnceLock<String>,
    jwks: Mutex<Vec<Value>>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

/// An OpenID Connect provider on 127.0.0.1:0, shaped as Keycloak serves a realm.
struct Provider {
    state: Arc<ProviderState>,
    _server: common::Server,
}

impl Provider {
    async fn start() -> Self {
        Self::start_claiming(None).await
    }

    /// A provider whose discovery document names `claimed` as its issuer.
    async fn start_claiming(claimed: Option<&str>) -> Self {
        let state = Arc::new(ProviderState::default());
        let router = Router::new()
            .route(
                &format!("{REALM}/.well-known/openid-configuration"),
                get(discovery),
            )
            .route(
                &format!("{REALM}/protocol/openid-connect/certs"),
                get(certs),
            )
            .with_state(Arc::clone(&state));
        let server = serve(router).await;
        let issuer = format!("http://{}{REALM}", server.addr);
        state.issuer.set(issuer.clone()).unwrap();
        state
            .claimed_issuer
            .set(claimed.map_or(issuer, str::to_owned))
            .unwrap();
        let provider = Self {
            state,
            _server: server,
        };
        provider.publish(&[(&key_a(), "kc-a")]);
        provider
    }

    fn issuer(&self) -> String {
        self.state.issuer.get().unwrap().clone()
    }

    /// Publishes exactly these keys, under these `kid`s.
    fn publish(&self, keys: &[(&KeyPair, &str)]) {
        let jwks = keys
            .iter()
            .map(|(key, kid)| {
                let mut jwk = key.public_key().to_jwk(Algorithm::RS256);
                jwk["kid"] = json!(kid);
                jwk
            })
            .collect();
        *self.state.jwks.lock().unwrap() = jwks;
    }

    fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    /// Keycloak-shaped access-token claims for Alice, valid for five minutes.
    fn claims(&self) -> Value {
        let now = now_secs();
        json!({
            "exp": now + 300,
            "iat": now - 5,
            "jti": "5b3f1c2e-7d1a-4c1e-9a43-2f1d0c9e8b7a",
            "iss": self.issuer(),
            "aud": [AUDIENCE, "account"],
            "sub": "f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "typ": "Bearer",
            "azp": AUDIENCE,
            "scope": "openid profile email",
            "preferred_username": "alice",
            "email": "alice@example.com",
            "realm_access": {"roles": ["offline_access", "uma_authorization", "user"]},
            "resource_access": {
                AUDIENCE: {"roles": ["admin"]},
                "account": {"roles": ["manage-account"]},
            },
        })
    }
}

async fn discovery(State(state): State<Arc<ProviderState>>) -> Json<Value> {
    state.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let issuer = state.issuer.get().unwrap();
    Json(json!({
        "issuer": state.claimed_issuer.get().unwrap(),
        "authorization_endpoint": format!("{issuer}/protocol/openid-connect/auth"),
        "token_endpoint": format!("{issuer}/protocol/openid-connect/token"),
        "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
}

async fn certs(State(state): State<Arc<ProviderState>>) -> impl IntoResponse {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let keys = state.jwks.lock().unwrap().clone();
    // As Keycloak answers its certs endpoint.
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(json!({ "keys": keys })),
    )
}

/// `claims` signed with `key` under `kid` (RS256).
fn sign(key: &KeyPair, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(key.private_key_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// The extractor for the test provider, mapping Keycloak roles to the app's. Its keys stay
/// fresh for an hour (the provider says `no-cache`, which would be a minute), so that the
/// tests' counts of fetches hold however slowly the machine runs.
fn oidc(provider: &Provider) -> OidcBearer {
    OidcBearer::discover(&provider.issuer(), [AUDIENCE])
        .unwrap()
        .cache_bounds(Duration::from_secs(3600), Duration::from_secs(3600))
        .name_claim("preferred_username")
        .roles_claim("realm_access.roles")
        .roles_claim(format!("resource_access.{AUDIENCE}.roles"))
        .allowed_roles(["user", "admin"])
        .role_case(RoleCase::Upper)
        .role_prefix("ROLE_")
}

/// The app: Basic users, the provider, the app's own tokens (a target calling back), else
/// anonymous; it signs with the fixture RSA key (RS512), which [`common::Seen::claims`]
/// checks.
async fn app(target: &EchoTarget, identity: impl IdentityExtractor) -> common::Server {
    let handle = ProxyHandle::new();
    handle.set_target(Some(&target.url())).unwrap();
    let proxy = ProxyLayer::new(KeySigner::rs512(rsa_keys()).unwrap())
        .with_identity(identity)
        .handle(handle);
    spawn_app(proxy).await
}

fn full_chain(oidc: impl IdentityExtractor) -> impl IdentityExtractor {
    let users = CredentialStore::new();
    users.insert("bob", "bob-password", ["ROLE_USER"]).unwrap();
    BasicAuth::new(users)
        .or(oidc)
        .or(BearerJwt::new(rsa_keys().verifier()))
        .or_anonymous()
}

async fn call(app: &common::Server, token: &str) -> Reply {
    within(
        "a proxied request",
        get_with(
            &app.url("/proxy/api/data"),
            &[("authorization", &format!("Bearer {token}"))],
        ),
    )
    .await
}

fn assert_invalid_token(r: &Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(r#"Bearer error="invalid_token""#),
        "{what}: {challenge}"
    );
}

#[tokio::test]
async fn a_provider_token_becomes_the_apps_own_identity() {
    let provider = Provider::start().await;
    let target = echo_target().await;
    let app = app(&target, full_chain(oidc(&provider))).await;
    let claims = provider.claims();
    let idp_token = sign(&key_a(), "kc-a", &claims);

    let r = call(&app, &idp_token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = target.last();
    // The target never sees the provider's token, anywhere.
    let forwarded = seen.token();
    assert_ne!(forwarded, idp_token);
    assert!(!format!("{:?}{:?}", seen.headers, seen.body).contains(&idp_token));
    // It gets the app's token (checked with jsonwebtoken and the app's public key), with
    // the name and mapped roles the provider vouched for, expiring no later than its token.
    let app_claims = seen.claims();
    assert_eq!(app_claims["sub"], "alice");
    assert_eq!(
        app_claims["authorities"],
        json!(["ROLE_ADMIN", "ROLE_USER"])
    );
    assert!(app_claims["exp"].as_u64().unwrap() <= claims["exp"].as_u64().unwrap());
    assert!(app_claims.get("realm_access").is_none());
    assert_eq!(provider.discovery_hits(), 1);
    assert_eq!(provider.jwks_hits(), 1);

    // The same token again: the keys are cached.
    assert_eq!(call(&app, &idp_token).await.status, 200);
    assert_eq!(provider.jwks_hits(), 1);

    // The other members of the chain still work: the target calling back with the app's
    // token, a Basic user, an anonymous caller.
    assert_eq!(call(&app, &forwarded).await.status, 200);
    assert_eq!(target.last().claims()["sub"], "alice");
    let r = get_with(
        &app.url("/proxy/x"),
        &[("authorization", &basic("bob", "bob-password"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(target.last().claims()["sub"], "bob");
    assert_eq!(get_with(&app.url("/proxy/x"), &[]).await.status, 200);
    assert_eq!(target.last().claims()["sub"], "anonymousUser");
}

#[tokio::test]
async fn a_token_without_roles_gives_an_identity_with_none() {
    let provider = Provider::start().await;
    let target = echo_target().await;
    let app = app(&target, full_chain(oidc(&provider))).await;
    let mut claims = provider.claims();
    claims.as_object_mut().unwrap().remove("realm_access");
    claims.as_object_mut().unwrap().remove("resource_access");
    let r = call(&app, &sign(&key_a(), "kc-a", &claims)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = target.last().claims();
    assert_eq!(seen["sub"], "alice");
    assert_eq!(seen["authorities"], json!([]));
}

#[tokio::test]
async fn refused_tokens_are_answered_401_and_never_forwarded() {
    let provider = Provider::start().await;
    let target = echo_target().await;
    let app = app(&target, full_chain(oidc(&provider))).await;
    let good = provider.claims();
    let with = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = good.clone();
        change(claims.as_object_mut().unwrap());
        claims
    };
    let signed = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        sign(&key_a(), "kc-a", &with(change))
    };
    let now = now_secs();
    let public_pem = key_a().public_key_pem();
    let valid = sign(&key_a(), "kc-a", &good);
    let mut parts: Vec<&str> = valid.split('.').collect();
    let mut more_roles = good.clone();
    more_roles["realm_access"]["roles"] = json!(["user", "admin"]);
    more_roles["preferred_username"] = json!("root");
    let tampered_payload = b64(&more_roles);
    parts[1] = &tampered_payload;
    let tampered = parts.join(".");

    let cases: Vec<(&str, String)> = vec![
        (
            "wrong issuer",
            signed(&|c| {
                c.insert("iss".into(), json!("http://127.0.0.1:1/realms/other"));
            }),
        ),
        (
            "wrong audience",
            signed(&|c| {
                c.insert("aud".into(), json!(["another-app", "account"]));
            }),
        ),
        (
            "no audience",
            signed(&|c| {
                c.remove("aud");
            }),
        ),
        (
            "expired",
            signed(&|c| {
                c.insert("iat".into(), json!(now - 7200));
                c.insert("exp".into(), json!(now - 3600));
            }),
        ),
        (
            "no exp",
            signed(&|c| {
                c.remove("exp");
            }),
        ),
        (
            "not valid yet",
            signed(&|c| {
                c.insert("nbf".into(), json!(now + 3600));
            }),
        ),
        (
            "issued in the future",
            signed(&|c| {
                c.insert("iat".into(), json!(now + 3600));
            }),
        ),
        (
            "no name claim",
            signed(&|c| {
                c.remove("preferred_username");
            }),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT", "kid": "kc-a"})),
                b64(&good)
            ),
        ),
        ("HS256 with the provider's public key as secret", {
            let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some("kc-a".into());
            let key = EncodingKey::from_secret(public_pem.as_bytes()).unwrap();
            jsonwebtoken::encode(&header, &good, &key).unwrap()
        }),
        (
            "a foreign key under a known kid",
            sign(&foreign_key(), "kc-a", &good),
        ),
        ("a tampered payload", tampered),
        ("a key named by the token (jwk header)", {
            let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = Some("kc-a".into());
            header.jwk =
                serde_json::from_value(foreign_key().public_key().to_jwk(Algorithm::RS256)).ok();
            assert!(header.jwk.is_some());
            let key =
                EncodingKey::from_rsa_pem(foreign_key().private_key_pem().as_bytes()).unwrap();
            jsonwebtoken::encode(&header, &good, &key).unwrap()
        }),
        ("a key URL named by the token (jku header)", {
            let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = Some("kc-a".into());
            header.jku = Some("http://127.0.0.1:1/certs".into());
            let key = EncodingKey::from_rsa_pem(key_a().private_key_pem().as_bytes()).unwrap();
            jsonwebtoken::encode(&header, &good, &key).unwrap()
        }),
    ];
    // The valid token passes, so each refusal below is for what the case changed.
    assert_eq!(call(&app, &valid).await.status, 200);
    let before = target.count();
    for (what, token) in &cases {
        let r = call(&app, token).await;
        assert_invalid_token(&r, what);
        assert!(!r.text().contains("BEGIN"), "{what}: {}", r.text());
    }
    assert_eq!(target.count(), before, "a refused token was forwarded");
    assert_eq!(provider.jwks_hits(), 1, "known kids never refetch the keys");

    // The provider's refusals say why, in the challenge.
    let r = call(&app, &cases[3].1).await;
    assert_eq!(
        r.header("www-authenticate").unwrap(),
        r#"Bearer error="invalid_token", error_description="the token has expired""#
    );
}

#[tokio::test]
async fn another_issuers_token_is_refused_when_no_one_else_checks_bearer_tokens() {
    let provider = Provider::start().await;
    let target = echo_target().await;
    let app = app(
        &target,
        oidc(&provider).refuse_other_issuers().or_anonymous(),
    )
    .await;
    let mut claims = provider.claims();
    claims["iss"] = json!("https://evil.example/realms/demo");
    for token in [sign(&key_a(), "kc-a", &claims), "opaque-token".to_owned()] {
        let r = call(&app, &token).await;
        assert_invalid_token(&r, &token);
    }
    assert_eq!(target.count(), 0);
    // Without a token: anonymous, as the chain says.
    assert_eq!(get_with(&app.url("/proxy/x"), &[]).await.status, 200);
    assert_eq!(target.last().claims()["sub"], "anonymousUser");
}

#[tokio::test]
async fn a_provider_key_rotation_is_followed() {
    let provider = Provider::start().await;
    let target = echo_target().await;
    let app = app(&target, full_chain(oidc(&provider))).await;
    let claims = provider.claims();
    assert_eq!(
        call(&app, &sign(&key_a(), "kc-a", &claims)).await.status,
        200
    );
    assert_eq!(provider.jwks_hits(), 1);

    // The provider rolls over to a new key and withdraws the old one.
    provider.publish(&[(&key_b(), "kc-b")]);
    let r = call(&app, &sign(&key_b(), "kc-b", &claims)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(target.last().claims()["sub"], "alice");
    assert_eq!(provider.jwks_hits(), 2);
    // The withdrawn key verifies nothing any more.
    assert_invalid_token(
        &call(&app, &sign(&key_a(), "kc-a", &claims)).await,
        "withdrawn key",
    );
    assert_eq!(provider.discovery_hits(), 1);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_keys_at_most_three_times() {
    let provider = Provider::start().await;
    let target = echo_target().await;
    // The interval is an hour, so the bound holds however slowly the machine runs.
    let oidc = oidc(&provider).min_refresh_interval(Duration::from_secs(3600));
    let app = app(&target, full_chain(oidc)).await;
    let claims = provider.claims();
    let flood: Vec<String> = (0..50)
        .map(|i| sign(&key_a(), &format!("made-up-{i}"), &claims))
        .collect();
    let replies = futures_util::future::join_all(flood.iter().map(|t| call(&app, t))).await;
    for r in &replies {
        assert_invalid_token(r, "unknown kid");
    }
    assert!(
        provider.jwks_hits() <= 3,
        "{} JWK Set fetches",
        provider.jwks_hits()
    );
    assert!(provider.discovery_hits() <= 3);
    assert_eq!(target.count(), 0);
    // The provider's real key was learnt on the way.
    let r = call(&app, &sign(&key_a(), "kc-a", &claims)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(provider.jwks_hits() <= 3);
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_is_not_trusted() {
    // The document is served for the issuer asked for, but names another one.
    let provider = Provider::start_claiming(Some("https://sso.example.com/realms/demo")).await;
    let target = echo_target().await;
    let app = app(&target, full_chain(oidc(&provider))).await;
    let r = call(&app, &sign(&key_a(), "kc-a", &provider.claims())).await;
    assert_invalid_token(&r, "issuer mismatch");
    assert_eq!(provider.discovery_hits(), 1);
    assert_eq!(
        provider.jwks_hits(),
        0,
        "keys of an unverified issuer were fetched"
    );
    assert_eq!(target.count(), 0);
}

#[tokio::test]
async fn keys_from_a_jwks_url_and_several_issuers() {
    let first = Provider::start().await;
    let second = Provider::start().await;
    second.publish(&[(&key_b(), "kc-b")]);
    let target = echo_target().await;
    // The second provider without discovery, its users named by `sub`, its roles in a
    // space-separated `scope`.
    let by_url = OidcBearer::jwks_url(
        &second.issuer(),
        &format!("{}/protocol/openid-connect/certs", second.issuer()),
        ["other-api", AUDIENCE],
    )
    .unwrap()
    .roles_claim("scope")
    .role_prefix("SCOPE_");
    let app = app(&target, full_chain(oidc(&first).or(by_url))).await;

    let r = call(&app, &sign(&key_a(), "kc-a", &first.claims())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(target.last().claims()["sub"], "alice");

    let r = call(&app, &sign(&key_b(), "kc-b", &second.claims())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = target.last().claims();
    assert_eq!(seen["sub"], "f81d4fae-7dec-11d0-a765-00a0c91e6bf6");
    assert_eq!(
        seen["authorities"],
        json!(["SCOPE_email", "SCOPE_openid", "SCOPE_profile"])
    );
    assert_eq!(second.discovery_hits(), 0);
    assert_eq!(second.jwks_hits(), 1);

    // One provider's key does not vouch for the other's users.
    assert_invalid_token(
        &call(&app, &sign(&key_a(), "kc-b", &second.claims())).await,
        "the first provider's key under the second's kid",
    );
}

/// The demo's binary, as a user runs it (`cargo build --examples` first when running this
/// binary alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_knows_provider_users_on_its_own_routes_and_through_the_proxy() {
    let provider = Provider::start().await;
    let target = echo_target().await;
    let issuer = provider.issuer();
    // The issuer and the audience go together.
    for half in [
        &["--oidc-issuer", issuer.as_str()][..],
        &["--oidc-audience", AUDIENCE],
    ] {
        let args = [&["--listen", "127.0.0.1:0", "--unsecured"][..], half].concat();
        let refused = Example::try_start("demo", &args).await;
        let (status, stderr) = refused.expect_err("the demo refuses half the options");
        assert!(status.is_some_and(|s| !s.success()), "{stderr}");
        assert!(stderr.contains("--oidc-"), "{stderr}");
    }

    let keys_dir = common::fixture_keys_dir("oidc-demo-keys");
    let demo = Example::start(
        "demo",
        &[
            "--listen",
            "127.0.0.1:0",
            "--keys",
            keys_dir.to_str().unwrap(),
            "--user",
            "bob:bob-password:ROLE_USER",
            "--proxy-url",
            &target.url(),
            "--oidc-issuer",
            &issuer,
            "--oidc-audience",
            AUDIENCE,
            "--oidc-name-claim",
            "preferred_username",
            "--oidc-roles-claim",
            "realm_access.roles",
            "--oidc-roles-claim",
            "resource_access.my-app.roles",
        ],
    )
    .await;
    common::remove_dir(&keys_dir);
    // The keys were fetched at start-up.
    assert_eq!(provider.jwks_hits(), 1, "{}", demo.stderr());
    let token = sign(&key_a(), "kc-a", &provider.claims());
    let auth = format!("Bearer {token}");
    let roles = json!([
        "ROLE_ADMIN",
        "ROLE_OFFLINE_ACCESS",
        "ROLE_UMA_AUTHORIZATION",
        "ROLE_USER"
    ]);

    let r = within(
        "whoami",
        get_with(&demo.url("/api/whoami"), &[("authorization", &auth)]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"name": "alice", "roles": roles}));

    let r = within(
        "proxy",
        get_with(&demo.url("/proxy/x"), &[("authorization", &auth)]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = target.last();
    assert_ne!(seen.token(), token);
    assert_eq!(seen.claims()["sub"], "alice");
    assert_eq!(seen.claims()["authorities"], roles);

    // Refused on the app's routes as on the proxy; Basic users are still known.
    let mut expired = provider.claims();
    expired["exp"] = json!(now_secs() - 3600);
    let bad = format!("Bearer {}", sign(&key_a(), "kc-a", &expired));
    let r = get_with(&demo.url("/api/whoami"), &[("authorization", &bad)]).await;
    assert_invalid_token(&r, "expired, on /api/whoami");
    let r = get_with(
        &demo.url("/api/whoami"),
        &[("authorization", &basic("bob", "bob-password"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "bob");
}

#[tokio::test]
async fn keys_the_provider_marks_stale_are_refetched_and_a_withdrawn_key_stops_verifying() {
    let provider = Provider::start().await;
    let target = echo_target().await;
    // The provider says `no-cache`; with no lower bound, the keys are stale at once.
    let oidc = oidc(&provider)
        .cache_bounds(Duration::ZERO, Duration::from_secs(3600))
        .min_refresh_interval(Duration::ZERO);
    let app = app(&target, full_chain(oidc)).await;
    let token_a = sign(&key_a(), "kc-a", &provider.claims());
    assert_eq!(call(&app, &token_a).await.status, 200);
    assert_eq!(provider.jwks_hits(), 1);

    // The provider withdraws key A. The cached key still verifies, and the request that
    // finds the keys stale refetches them in the background.
    provider.publish(&[(&key_b(), "kc-b")]);
    assert_eq!(call(&app, &token_a).await.status, 200);
    // Once the refetched keys are in (the fetch is not waited for), A verifies nothing.
    let refused = within("the background refresh", async {
        loop {
            let r = call(&app, &token_a).await;
            if r.status != 200 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_invalid_token(&refused, "a key the provider withdrew");
    assert!(provider.jwks_hits() >= 2);
    let r = call(&app, &sign(&key_b(), "kc-b", &provider.claims())).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
