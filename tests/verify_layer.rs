//! The target-side verifier, `VerifyProxyJwtLayer`, over real sockets: the whole chain
//! (client → app with the proxy → target verifying with the app's JWKS) works; every
//! forgery RFC 8725 §2.1, §3.1 and §3.10 describe (`alg: none`, HMAC with the public key as
//! in CVE-2015-9235 and CVE-2016-10555, an embedded `jwk` as in CVE-2018-0114, `kid`
//! injection, `jku`/`x5u`) is refused with `401` before the handler runs; keys named inside a
//! token are never fetched; JWKS refreshes are rate-limited.
//!
//! The forged tokens are built by hand (header and payload bytes) and signed with
//! jsonwebtoken's own `crypto::sign`, so nothing here relies on the crate's signer.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{Extension, Json, Router, routing::get as route_get};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{Reply, get, get_with, serve, user_header, within};
use jsonwebtoken::{Algorithm as JwtAlg, EncodingKey};
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceBuilder;
use tower_identity_proxy::ProxyHandle;
use tower_identity_proxy::{
    ProxyLayer,
    identity::{Identity, IdentityExtractor},
    jwt::{Algorithm, Claims, KeyPair, KeySet, KeySigner},
    verify::VerifyProxyJwtLayer,
};

const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The app: a key set, its JWKS (fetches counted) and the proxy.
struct App {
    addr: SocketAddr,
    keys: KeySet,
    pair: KeyPair,
    fetches: Arc<AtomicUsize>,
    /// While `false`, JWKS fetches (counted already) wait before being answered.
    jwks_open: watch::Sender<bool>,
    proxy: tower_identity_proxy::ProxyHandle,
}

async fn start_app() -> App {
    let pair = KeyPair::generate_rsa(2048).unwrap();
    let keys = KeySet::new(KeySigner::rs512(pair.clone()).unwrap()).rotation_delay(Duration::ZERO);
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&fetches);
    let (jwks_open, open) = watch::channel(true);
    let jwks = ServiceBuilder::new()
        .map_request(move |req: axum::extract::Request| {
            counter.fetch_add(1, Ordering::SeqCst);
            req
        })
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let mut open = open.clone();
                async move {
                    let _ = open.wait_for(|open| *open).await;
                    next.run(req).await
                }
            },
        ))
        .service(keys.jwks());
    let handle = ProxyHandle::new();
    let proxy = ProxyLayer::new(keys.signer())
        .with_identity(user_header.or_anonymous())
        .handle(handle.clone());
    let addr = serve(Router::new().route_service(JWKS_PATH, jwks).layer(proxy))
        .await
        .detach();
    App {
        addr,
        keys,
        pair,
        fetches,
        jwks_open,
        proxy: handle,
    }
}

impl App {
    fn jwks_url(&self) -> String {
        format!("http://{}{JWKS_PATH}", self.addr)
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A target whose `/whoami` answers the identity the layer found; counts handler calls.
async fn start_target(layer: VerifyProxyJwtLayer) -> (SocketAddr, Arc<AtomicUsize>) {
    start_target_counting(layer, watch::channel(0).0).await
}

/// [`start_target`], also counting in `arrived` the requests that reach the layer.
async fn start_target_counting(
    layer: VerifyProxyJwtLayer,
    arrived: watch::Sender<usize>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let app = Router::new()
        .route(
            "/whoami",
            route_get(
                move |me: Option<Extension<Identity>>, claims: Option<Extension<Claims>>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        Json(json!({
                            "name": me.as_ref().map(|m| m.name().to_owned()),
                            "roles": me.as_ref().map(|m| m.roles().to_vec()),
                            "exp": claims.map(|c| c.exp),
                        }))
                    }
                },
            ),
        )
        .layer(layer)
        .layer(axum::middleware::map_request(
            move |req: axum::extract::Request| {
                arrived.send_modify(|n| *n += 1);
                std::future::ready(req)
            },
        ));
    (serve(app).await.detach(), calls)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `header.payload.signature`, signed over the exact bytes given.
fn jws(header: &[u8], payload: &[u8], key: Option<(&EncodingKey, JwtAlg)>) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = match key {
        Some((key, alg)) => jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap(),
        None => String::new(),
    };
    format!("{input}.{signature}")
}

fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "authorities": ["ROLE_ADMIN"], "iat": now() - 5, "exp": now() + 300 })
}

fn rsa_key(pair: &KeyPair) -> EncodingKey {
    EncodingKey::from_rsa_pem(pair.private_key_pem().as_bytes()).unwrap()
}

/// Every forgery of RFC 8725 §2.1, §3.1 and §3.10, and a few more, by name.
fn forgeries(app: &App, attacker: &KeyPair, listener: SocketAddr) -> Vec<(&'static str, String)> {
    let kid = app.keys.active_kid();
    let real = rsa_key(&app.pair);
    let evil = rsa_key(attacker);
    let pem = app.pair.public_key_pem();
    let header = |extra: Value| {
        let mut h = json!({ "alg": "RS512", "typ": "JWT", "kid": kid });
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        serde_json::to_vec(&h).unwrap()
    };
    let payload = serde_json::to_vec(&claims("admin")).unwrap();
    let rs512 = |h: &[u8], p: &[u8]| jws(h, p, Some((&real, JwtAlg::RS512)));
    let valid = rs512(&header(json!({})), &payload);
    let hmac = |alg: &str, jalg: JwtAlg| {
        let secret = EncodingKey::from_secret(pem.as_bytes()).unwrap();
        jws(
            &header(json!({ "alg": alg })),
            &payload,
            Some((&secret, jalg)),
        )
    };
    let mut tampered: Vec<&str> = valid.split('.').collect();
    let admin2 = b64(&serde_json::to_vec(&claims("root")).unwrap());
    tampered[1] = &admin2;
    let tampered = tampered.join(".");
    let local = format!("http://{listener}/jwks.json");
    let attacker_kid = attacker.kid().to_owned();
    let attacker_header = |extra: Value| {
        let mut h = json!({ "alg": "RS512", "typ": "JWT", "kid": attacker_kid });
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        serde_json::to_vec(&h).unwrap()
    };
    let by_attacker = |h: Vec<u8>| jws(&h, &payload, Some((&evil, JwtAlg::RS512)));
    let mut non_utf8 = br#"{"sub":"adm"#.to_vec();
    non_utf8.extend_from_slice(&[0xff, 0xfe]);
    non_utf8.extend_from_slice(
        format!(
            r#"in","authorities":["ROLE_ADMIN"],"iat":{},"exp":{}}}"#,
            now() - 5,
            now() + 300
        )
        .as_bytes(),
    );
    let mut non_utf8_header = br#"{"alg":"RS512","typ":"JWT","kid":""#.to_vec();
    non_utf8_header.extend_from_slice(kid.as_bytes());
    non_utf8_header.extend_from_slice(&[0xc3, 0x28]);
    non_utf8_header.extend_from_slice(br#""}"#);

    vec![
        (
            "alg none, no kid, sub only",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhZG1pbiJ9.".to_owned(),
        ),
        (
            "alg none with the real kid and full claims",
            jws(&header(json!({ "alg": "none" })), &payload, None),
        ),
        (
            "alg None, odd case",
            jws(&header(json!({ "alg": "None" })), &payload, None),
        ),
        (
            "HS512 with the public key PEM as secret",
            hmac("HS512", JwtAlg::HS512),
        ),
        (
            "HS256 with the public key PEM as secret",
            hmac("HS256", JwtAlg::HS256),
        ),
        (
            "RS256 with the real key when only RS512 is allowed",
            jws(
                &header(json!({ "alg": "RS256" })),
                &payload,
                Some((&real, JwtAlg::RS256)),
            ),
        ),
        (
            "PS512 with the real key when only RS512 is allowed",
            jws(
                &header(json!({ "alg": "PS512" })),
                &payload,
                Some((&real, JwtAlg::PS512)),
            ),
        ),
        (
            "expired beyond the leeway",
            rs512(
                &header(json!({})),
                &serde_json::to_vec(&json!({
                    "sub": "admin", "authorities": [], "iat": now() - 600, "exp": now() - 120
                }))
                .unwrap(),
            ),
        ),
        (
            "missing exp",
            rs512(
                &header(json!({})),
                &serde_json::to_vec(&json!({ "sub": "admin", "authorities": [], "iat": now() }))
                    .unwrap(),
            ),
        ),
        (
            "exp not a number",
            rs512(
                &header(json!({})),
                &serde_json::to_vec(&json!({
                    "sub": "admin", "authorities": [], "iat": now(), "exp": "tomorrow"
                }))
                .unwrap(),
            ),
        ),
        (
            "nbf beyond the leeway",
            rs512(
                &header(json!({})),
                &serde_json::to_vec(&json!({
                    "sub": "admin", "authorities": [], "iat": now(), "exp": now() + 600,
                    "nbf": now() + 300
                }))
                .unwrap(),
            ),
        ),
        (
            "iat in the future beyond the leeway",
            rs512(
                &header(json!({})),
                &serde_json::to_vec(&json!({
                    "sub": "admin", "authorities": [], "iat": now() + 300, "exp": now() + 600
                }))
                .unwrap(),
            ),
        ),
        (
            "aud present while the target expects none",
            rs512(
                &header(json!({})),
                &serde_json::to_vec(&json!({
                    "sub": "admin", "authorities": [], "iat": now(), "exp": now() + 300,
                    "aud": "https://other-target.example"
                }))
                .unwrap(),
            ),
        ),
        ("payload tampered", tampered),
        (
            "signature cut off",
            valid.rsplit_once('.').unwrap().0.to_owned() + ".",
        ),
        (
            "kid path traversal",
            rs512(&header(json!({ "kid": "../../../../dev/null" })), &payload),
        ),
        (
            "kid SQL-ish injection",
            rs512(&header(json!({ "kid": "x' UNION SELECT 'key" })), &payload),
        ),
        (
            "the real kid on another key's signature",
            jws(&header(json!({})), &payload, Some((&evil, JwtAlg::RS512))),
        ),
        (
            "jku to a local listener, attacker key",
            by_attacker(attacker_header(json!({ "jku": local }))),
        ),
        (
            "jku to a local listener, real key and kid",
            rs512(&header(json!({ "jku": local })), &payload),
        ),
        (
            "x5u to a local listener, attacker key",
            by_attacker(attacker_header(json!({ "x5u": local }))),
        ),
        (
            "x5u to a local listener, real key and kid",
            rs512(&header(json!({ "x5u": local })), &payload),
        ),
        (
            "embedded jwk of the attacker",
            by_attacker(attacker_header(
                json!({ "jwk": attacker.public_key().to_jwk(Algorithm::RS512) }),
            )),
        ),
        (
            "embedded jwk, no kid",
            jws(
                &serde_json::to_vec(&json!({
                    "alg": "RS512",
                    "jwk": attacker.public_key().to_jwk(Algorithm::RS512),
                }))
                .unwrap(),
                &payload,
                Some((&evil, JwtAlg::RS512)),
            ),
        ),
        (
            "x5c chain",
            rs512(&header(json!({ "x5c": ["MIIB"] })), &payload),
        ),
        (
            "unknown crit",
            rs512(
                &header(json!({ "crit": ["urn:example:unknown"], "urn:example:unknown": 1 })),
                &payload,
            ),
        ),
        (
            "crit naming exp",
            rs512(&header(json!({ "crit": ["exp"] })), &payload),
        ),
        (
            "b64 false (unencoded payload)",
            rs512(&header(json!({ "crit": ["b64"], "b64": false })), &payload),
        ),
        (
            "non-UTF-8 payload JSON",
            rs512(&header(json!({})), &non_utf8),
        ),
        ("non-UTF-8 header JSON", rs512(&non_utf8_header, &payload)),
        ("payload not JSON", rs512(&header(json!({})), b"admin")),
        (
            "payload a JSON array",
            rs512(&header(json!({})), br#"["admin"]"#),
        ),
        (
            "two parts only",
            format!("{}.{}", b64(&header(json!({}))), b64(&payload)),
        ),
        ("four parts", format!("{valid}.AAAA")),
        ("not base64", "!!!.@@@.###".to_owned()),
        ("empty", String::new()),
        (
            "over 16 KiB",
            format!("{}.{}.x", "a".repeat(9000), "b".repeat(9000)),
        ),
    ]
}

fn assert_invalid_token(name: &str, reply: &Reply) {
    assert_eq!(reply.status, 401, "{name}: {}", reply.text());
    assert_eq!(
        reply.header("www-authenticate").unwrap(),
        r#"Bearer error="invalid_token""#,
        "{name}"
    );
    assert_eq!(
        reply.header("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(reply.text(), "The bearer token is not valid.", "{name}");
}

async fn refuses_forgeries(layer: VerifyProxyJwtLayer, app: &App) {
    let (target, calls) = start_target(layer).await;
    let url = format!("http://{target}/whoami");
    let attacker = KeyPair::generate_rsa(2048).unwrap();
    // A listener the jku/x5u headers point to: it must never see a connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forged = forgeries(app, &attacker, listener.local_addr().unwrap());

    // The genuine chain first: client → app /proxy → target, verified by the layer.
    app.proxy
        .set_target(Some(&format!("http://{target}")))
        .unwrap();
    let reply = get_with(
        &format!("http://{}/proxy/whoami", app.addr),
        &[("x-test-user", "Alice:ROLE_WONDERLAND,ROLE_USER")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["name"], "Alice");
    assert_eq!(
        reply.json()["roles"],
        json!(["ROLE_USER", "ROLE_WONDERLAND"])
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    for (name, token) in &forged {
        let bearer = format!("Bearer {token}");
        let reply = get_with(&url, &[("authorization", bearer.as_str())]).await;
        assert_invalid_token(name, &reply);
    }
    // Credentials that are not one bearer token.
    let valid = app.keys.signer();
    let token = tower_identity_proxy::jwt::JwtSigner::sign(&valid, &Identity::new("Alice", ["R"]))
        .await
        .unwrap();
    let bearer = format!("Bearer {}", token.as_str());
    let two = http::Request::get(&url)
        .header("authorization", &bearer)
        .header("authorization", &bearer)
        .body(common::empty())
        .unwrap();
    assert_invalid_token("two Authorization headers", &common::send(two).await);
    for (name, auth) in [
        ("no token", None),
        ("Basic credentials", Some("Basic QWxpY2U6eA==")),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let reply = get_with(&url, &headers).await;
        assert_eq!(reply.status, 401, "{name}");
        assert_eq!(
            reply.header("www-authenticate").unwrap(),
            "Bearer",
            "{name}"
        );
        assert_eq!(reply.text(), "A bearer token is required.");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no forgery reached the handler"
    );

    // The same valid token is accepted directly, with lower-case scheme too.
    let lower = format!("bearer {}", token.as_str());
    let reply = get_with(&url, &[("authorization", lower.as_str())]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["name"], "Alice");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "a jku/x5u URL was fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_mode_refuses_every_forged_token() {
    let app = start_app().await;
    let layer = VerifyProxyJwtLayer::jwks_url(&app.jwks_url()).unwrap();
    refuses_forgeries(layer, &app).await;
    // The unknown kids among the forgeries refetched the JWKS only within the burst.
    assert!(
        (1..=3).contains(&app.fetches()),
        "{} fetches",
        app.fetches()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_key_mode_refuses_every_forged_token() {
    let app = start_app().await;
    let layer =
        VerifyProxyJwtLayer::public_key_pem(app.pair.public_key_pem().as_bytes(), Algorithm::RS512)
            .unwrap();
    refuses_forgeries(layer, &app).await;
    assert_eq!(app.fetches(), 0);
}

/// A token signed by `key` under `kid`, valid otherwise.
fn signed_with(key: &KeyPair, kid: &str, sub: &str) -> String {
    let header = serde_json::to_vec(&json!({ "alg": "RS512", "typ": "JWT", "kid": kid })).unwrap();
    let payload = serde_json::to_vec(&claims(sub)).unwrap();
    jws(&header, &payload, Some((&rsa_key(key), JwtAlg::RS512)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_cannot_hammer_the_jwks() {
    let app = start_app().await;
    let layer = VerifyProxyJwtLayer::jwks_url(&app.jwks_url())
        .unwrap()
        .min_refresh_interval(Duration::from_secs(3600));
    let (target, calls) = start_target(layer).await;
    let url = format!("http://{target}/whoami");

    let good = signed_with(&app.pair, &app.keys.active_kid(), "Alice");
    let reply = get_with(&url, &[("authorization", &format!("Bearer {good}"))]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(app.fetches(), 1);

    // Floods of 60 concurrent requests with made-up kids: all refused. Together they fetch
    // at most the burst of 3 (the start-up fetch included): the first two floods may use
    // it up (concurrent requests share one fetch), the third fetches nothing.
    let attacker = KeyPair::generate_rsa(2048).unwrap();
    let mut counts = Vec::new();
    for flood in 0..3 {
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let token = signed_with(&attacker, &format!("kid-{flood}-{i}"), "Mallory");
                let url = url.clone();
                tokio::spawn(async move {
                    get_with(&url, &[("authorization", &format!("Bearer {token}"))]).await
                })
            })
            .collect();
        for task in tasks {
            assert_invalid_token("made-up kid", &task.await.unwrap());
        }
        counts.push(app.fetches());
    }
    assert!(counts[0] >= 2, "the burst allows a refetch: {counts:?}");
    assert!(counts[2] <= 3, "fetches after each flood: {counts:?}");
    assert_eq!(
        counts[2], counts[1],
        "the third flood refetched: {counts:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_fetches_only_at_start() {
    let app = start_app().await;
    let layer = VerifyProxyJwtLayer::jwks_url(&app.jwks_url())
        .unwrap()
        .min_refresh_interval(Duration::from_secs(3600))
        .refresh_burst(1);
    let (target, _) = start_target(layer).await;
    let url = format!("http://{target}/whoami");
    let good = signed_with(&app.pair, &app.keys.active_kid(), "Alice");
    let reply = get_with(&url, &[("authorization", &format!("Bearer {good}"))]).await;
    assert_eq!(reply.status, 200);
    // A genuinely new key is refused while the limit holds: the documented window.
    let next = KeyPair::generate_rsa(2048).unwrap();
    let kid = app.keys.rotate(next.clone()).unwrap().into_kid();
    let fresh = signed_with(&next, &kid, "Alice");
    let reply = get_with(&url, &[("authorization", &format!("Bearer {fresh}"))]).await;
    assert_invalid_token("new key within the limit", &reply);
    assert_eq!(app.fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_soon_after_start_is_picked_up_with_the_default_limit() {
    let app = start_app().await;
    let layer = VerifyProxyJwtLayer::jwks_url(&app.jwks_url()).unwrap();
    let (target, _) = start_target(layer).await;
    let url = format!("http://{target}/whoami");
    let good = signed_with(&app.pair, &app.keys.active_kid(), "Alice");
    assert_eq!(
        get_with(&url, &[("authorization", &format!("Bearer {good}"))])
            .await
            .status,
        200
    );
    let next = KeyPair::generate_rsa(2048).unwrap();
    let kid = app.keys.rotate(next.clone()).unwrap().into_kid();
    let fresh = signed_with(&next, &kid, "Bob");
    let reply = get_with(&url, &[("authorization", &format!("Bearer {fresh}"))]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["name"], "Bob");
    assert_eq!(app.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_once_for_concurrent_requests() {
    let app = start_app().await;
    let layer = VerifyProxyJwtLayer::jwks_url(&app.jwks_url())
        .unwrap()
        .min_refresh_interval(Duration::ZERO);
    let (arrived, mut arrivals) = watch::channel(0);
    let (target, _) = start_target_counting(layer, arrived).await;
    let url = format!("http://{target}/whoami");
    let good = signed_with(&app.pair, &app.keys.active_kid(), "Alice");
    assert_eq!(
        get_with(&url, &[("authorization", &format!("Bearer {good}"))])
            .await
            .status,
        200
    );
    assert_eq!(app.fetches(), 1);

    // The JWKS holds its answers until all 20 requests for the new kid have reached the
    // target's layer: they overlap the first one's fetch, whatever the machine's speed.
    app.jwks_open.send_replace(false);
    let next = KeyPair::generate_rsa(2048).unwrap();
    let kid = app.keys.rotate(next.clone()).unwrap().into_kid();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let token = signed_with(&next, &kid, &format!("user{i}"));
            let url = url.clone();
            tokio::spawn(async move {
                get_with(&url, &[("authorization", &format!("Bearer {token}"))]).await
            })
        })
        .collect();
    within("20 requests at the target", arrivals.wait_for(|n| *n >= 21))
        .await
        .unwrap();
    app.jwks_open.send_replace(true);
    for (i, task) in tasks.into_iter().enumerate() {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.json()["name"], format!("user{i}"));
    }
    assert_eq!(app.fetches(), 2, "one fetch for the new kid");
    // The previous key is still published, so its tokens still pass.
    let reply = get_with(&url, &[("authorization", &format!("Bearer {good}"))]).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_audience_and_optional_mode() {
    let app = start_app().await;
    let layer = VerifyProxyJwtLayer::jwks_url(&app.jwks_url())
        .unwrap()
        .issuer("http://app.example")
        .audience("http://target.example")
        .optional(true);
    let (target, calls) = start_target(layer).await;
    let url = format!("http://{target}/whoami");
    let kid = app.keys.active_kid();
    let token = |iss: &str, aud: &str| {
        let header = serde_json::to_vec(&json!({ "alg": "RS512", "kid": kid })).unwrap();
        let mut c = claims("Alice");
        c["iss"] = json!(iss);
        c["aud"] = json!(aud);
        let payload = serde_json::to_vec(&c).unwrap();
        format!(
            "Bearer {}",
            jws(
                &header,
                &payload,
                Some((&rsa_key(&app.pair), JwtAlg::RS512))
            )
        )
    };
    let ok = get_with(
        &url,
        &[(
            "authorization",
            &token("http://app.example", "http://target.example"),
        )],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["name"], "Alice");
    for (iss, aud) in [
        ("http://evil.example", "http://target.example"),
        ("http://app.example", "http://other.example"),
    ] {
        assert_invalid_token(
            iss,
            &get_with(&url, &[("authorization", &token(iss, aud))]).await,
        );
    }
    // Optional: no token passes without an identity; a bad one is still refused.
    let anonymous = get(&url).await;
    assert_eq!(anonymous.status, 200);
    assert_eq!(anonymous.json()["name"], Value::Null);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// `Duration::MAX`, "no limit", for every duration of the layer: no panic (nothing adds it
/// to the clock as is); the leeway is taken as 10 years, so a token expired an hour ago
/// passes while one twenty years old does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_durations_verify_normally() {
    let app = start_app().await;
    let layer = VerifyProxyJwtLayer::jwks_url(&app.jwks_url())
        .unwrap()
        .leeway(Duration::MAX)
        .min_refresh_interval(Duration::MAX)
        .refresh_interval(Duration::MAX)
        .fetch_timeout(Duration::MAX);
    let (target, calls) = start_target(layer).await;
    let url = format!("http://{target}/whoami");
    let header = serde_json::to_vec(&json!({ "alg": "RS512", "kid": app.keys.active_kid() }));
    let bearer = |iat: u64, exp: u64| {
        let payload = json!({ "sub": "Alice", "authorities": [], "iat": iat, "exp": exp });
        let key = Some((&rsa_key(&app.pair), JwtAlg::RS512));
        let jwt = jws(
            header.as_ref().unwrap(),
            &serde_json::to_vec(&payload).unwrap(),
            key,
        );
        format!("Bearer {jwt}")
    };
    for (what, iat, exp) in [
        ("fresh", now() - 5, now() + 300),
        ("expired an hour ago", now() - 7200, now() - 3600),
    ] {
        let reply = get_with(&url, &[("authorization", &bearer(iat, exp))]).await;
        assert_eq!(reply.status, 200, "{what}: {}", reply.text());
        assert_eq!(reply.json()["name"], "Alice");
    }
    let twenty_years = 20 * 365 * 24 * 3600;
    let ancient = bearer(now() - twenty_years - 60, now() - twenty_years);
    assert_invalid_token(
        "twenty years old",
        &get_with(&url, &[("authorization", &ancient)]).await,
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(app.fetches(), 1);
}
