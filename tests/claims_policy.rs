//! Claims control through the layer over sockets: `iss`, `aud`, `jti`, extra claims from a
//! hook, the authorities filter and cap, and the token length limit (an error, never a
//! token the target would refuse). Tokens are checked with jsonwebtoken.

mod common;

use std::net::SocketAddr;

use axum::Router;
use common::{EchoTarget, decode_with, get, get_with, serve, token_target, user_header};
use serde_json::{Map, Value, json};
use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    identity::IdentityExtractor,
    jwt::{KeyPair, KeySigner, TokenPolicy},
};

/// The app signing with `keys` under `policy`, and its target, which answers the token it
/// received.
async fn app(keys: &KeyPair, policy: TokenPolicy) -> (SocketAddr, EchoTarget) {
    let target = token_target().await;
    let proxy = ProxyLayer::new(KeySigner::rs512(keys.clone()).unwrap().policy(policy))
        .with_identity(user_header.or_anonymous())
        .handle(ProxyHandle::with_target(
            Target::parse(&target.url()).unwrap(),
        ));
    (serve(Router::new().layer(proxy)).await.detach(), target)
}

fn decode(keys: &KeyPair, token: &str, validation: jsonwebtoken::Validation) -> Value {
    decode_with(token, &keys.public_key_pem(), &validation)
        .unwrap_or_else(|e| panic!("{e}: {token}"))
}

fn rs512() -> jsonwebtoken::Validation {
    common::validation(jsonwebtoken::Algorithm::RS512)
}

#[tokio::test]
async fn issuer_audience_jti_and_extra_claims_reach_the_target() {
    let keys = KeyPair::generate_rsa(2048).unwrap();
    let policy = TokenPolicy::new()
        .issuer("http://app.example:8080")
        .audience("http://target.example:1991")
        .jti(true)
        .extra_claims(|identity| {
            let mut extra = Map::new();
            extra.insert("name_length".into(), json!(identity.name().len()));
            extra.insert("tenant".into(), json!("wonderland"));
            // Reserved names cannot be overridden by the hook.
            extra.insert("sub".into(), json!("root"));
            extra.insert("authorities".into(), json!(["ROLE_ADMIN"]));
            extra
        });
    let (app, _target) = app(&keys, policy).await;
    let alice = get_with(
        &format!("http://{app}/proxy/x"),
        &[("x-test-user", "Alice:ROLE_USER")],
    )
    .await;
    assert_eq!(alice.status, 200, "{}", alice.text());
    let bob = get_with(
        &format!("http://{app}/proxy/x"),
        &[("x-test-user", "Bob:ROLE_USER")],
    )
    .await;

    let mut v = rs512();
    v.set_audience(&["http://target.example:1991"]);
    v.set_issuer(&["http://app.example:8080"]);
    let claims = decode(&keys, &alice.text(), v.clone());
    assert_eq!(claims["sub"], "Alice");
    assert_eq!(claims["authorities"], json!(["ROLE_USER"]));
    assert_eq!(claims["iss"], "http://app.example:8080");
    assert_eq!(claims["aud"], "http://target.example:1991");
    assert_eq!(claims["tenant"], "wonderland");
    assert_eq!(claims["name_length"], 5);
    let jti = claims["jti"].as_str().unwrap();
    assert!(jti.len() >= 16);
    let bob_claims = decode(&keys, &bob.text(), v);
    assert_ne!(bob_claims["jti"].as_str().unwrap(), jti);

    // A verifier expecting another audience refuses the token (RFC 8725 §3.9).
    let mut other = rs512();
    other.set_audience(&["http://other.example"]);
    assert!(decode_with(&alice.text(), &keys.public_key_pem(), &other).is_err());
}

#[tokio::test]
async fn default_claims_stay_atoti_compatible() {
    let keys = KeyPair::generate_rsa(2048).unwrap();
    let (app, _target) = app(&keys, TokenPolicy::new()).await;
    let token = get(&format!("http://{app}/proxy/x")).await.text();
    let claims = decode(&keys, &token, rs512());
    let mut names: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["authorities", "exp", "iat", "sub"]);
}

#[tokio::test]
async fn authorities_are_filtered() {
    let keys = KeyPair::generate_rsa(2048).unwrap();
    let policy = TokenPolicy::new().authorities_filter(|role| role.starts_with("ROLE_"));
    let (app, _target) = app(&keys, policy).await;
    let reply = get_with(
        &format!("http://{app}/proxy/x"),
        &[(
            "x-test-user",
            "Alice:group:finance,ROLE_USER,ROLE_ADMIN,scope:read",
        )],
    )
    .await;
    assert_eq!(reply.status, 200);
    let claims = decode(&keys, &reply.text(), rs512());
    assert_eq!(claims["authorities"], json!(["ROLE_ADMIN", "ROLE_USER"]));
}

#[tokio::test]
async fn too_many_authorities_is_an_error_and_nothing_is_sent() {
    let keys = KeyPair::generate_rsa(2048).unwrap();
    let policy = TokenPolicy::new()
        .authorities_filter(|role| role.starts_with("ROLE_"))
        .max_authorities(3);
    let (app, recorded) = app(&keys, policy).await;
    // Four roles, but only three pass the filter: fine.
    let ok = get_with(
        &format!("http://{app}/proxy/x"),
        &[("x-test-user", "Alice:ROLE_A,ROLE_B,ROLE_C,other")],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(recorded.count(), 1);
    let over = get_with(
        &format!("http://{app}/proxy/x"),
        &[("x-test-user", "Bob:ROLE_A,ROLE_B,ROLE_C,ROLE_D")],
    )
    .await;
    assert_eq!(over.status, 500);
    assert_eq!(
        over.header("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(over.text(), "The proxy could not sign the identity token.");
    assert_eq!(recorded.count(), 1, "nothing sent upstream");
}

#[tokio::test]
async fn the_default_length_limit_keeps_tokens_under_8_kib() {
    let keys = KeyPair::generate_rsa(2048).unwrap();
    let (app, recorded) = app(&keys, TokenPolicy::new()).await;
    let many = |n: usize| {
        let roles: Vec<String> = (0..n).map(|i| format!("ROLE_GROUP_{i:05}")).collect();
        format!("Alice:{}", roles.join(","))
    };
    // 100 roles: about 2.7 KiB, sent.
    let ok = get_with(
        &format!("http://{app}/proxy/x"),
        &[("x-test-user", &many(100))],
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(ok.text().len() < 8 * 1024);
    assert_eq!(
        decode(&keys, &ok.text(), rs512())["authorities"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    // 1,000 roles: over 8 KiB, refused before anything is sent.
    let over = get_with(
        &format!("http://{app}/proxy/x"),
        &[("x-test-user", &many(1000))],
    )
    .await;
    assert_eq!(over.status, 500);
    assert_eq!(over.text(), "The proxy could not sign the identity token.");
    assert_eq!(recorded.count(), 1);

    // A lower limit is honoured too.
    let (app, recorded) = app_with_limit(&keys, 1024).await;
    let over = get_with(
        &format!("http://{app}/proxy/x"),
        &[("x-test-user", &many(30))],
    )
    .await;
    assert_eq!(over.status, 500);
    assert_eq!(recorded.count(), 0);
}

async fn app_with_limit(keys: &KeyPair, limit: usize) -> (SocketAddr, EchoTarget) {
    app(keys, TokenPolicy::new().max_token_len(limit)).await
}
