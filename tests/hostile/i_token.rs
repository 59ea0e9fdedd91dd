//! I. The JWT: signer and verifier (RFC 8725). Tokens are checked with jsonwebtoken called
//! directly, never with the crate's own verifier.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, crypto::sign};
use tower_identity_proxy::{
    ProxyLayer,
    jwt::{KeyPair, KeySigner, TokenPolicy},
};

use crate::{h_credentials::base64_basic, support::*};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_header(token: &str) -> serde_json::Value {
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

async fn token_for(extra: &str) -> String {
    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    let r = app.get("/proxy/x", extra).await;
    assert_eq!(r.status, 200, "{}", r.text());
    up.only().bearer()
}

#[tokio::test]
async fn i1_token_verifies_as_rs512_with_sorted_authorities() {
    let basic = base64_basic(ALICE, ALICE_PW);
    let token = token_for(&format!("Authorization: Basic {basic}\r\n")).await;
    assert_eq!(token_header(&token)["alg"], "RS512");
    let claims = decode_rs512(&token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["authorities"],
        serde_json::json!(["ROLE_USER", "ROLE_WONDERLAND"])
    );
    let anonymous = decode_rs512(&token_for("").await);
    assert_eq!(anonymous["sub"], "anonymousUser");
    assert_eq!(
        anonymous["authorities"],
        serde_json::json!(["ROLE_ANONYMOUS"])
    );
}

#[tokio::test]
async fn i2_iat_is_never_ahead_and_exp_is_short() {
    let claims = decode_rs512(&token_for("").await);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    // decode_jwt verified with zero leeway; iat must not be in the future either.
    assert!(iat <= now(), "iat {iat} is ahead of now {}", now());
    assert!(exp > now());
    assert!(exp - iat <= 15 * 60, "token lives {} s", exp - iat);
}

#[tokio::test]
async fn i3_audience_is_opt_in_and_checked() {
    let default = decode_rs512(&token_for("").await);
    assert!(default.get("aud").is_none(), "{default}");
    assert!(default.get("iss").is_none(), "{default}");

    let signer = KeySigner::rs512(rsa_keys())
        .unwrap()
        .policy(TokenPolicy::new().audience("https://target.example"));
    let up = Upstream::ok().await;
    let app = start_app(ProxyLayer::new(signer)).await;
    app.target(&up, "");
    assert_eq!(app.get("/proxy/x", "").await.status, 200);
    let token = up.only().bearer();
    // A verifier expecting this audience accepts it; one expecting another refuses it.
    let public_pem = rsa_keys().public_key_pem();
    let mut v = jsonwebtoken::Validation::new(Algorithm::RS512);
    v.set_audience(&["https://target.example"]);
    assert!(crate::common::decode_with(&token, &public_pem, &v).is_ok());
    v.set_audience(&["https://other.example"]);
    assert!(crate::common::decode_with(&token, &public_pem, &v).is_err());
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

/// header.payload signed with `key` and `alg`.
fn forge(header: serde_json::Value, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{payload}", b64(&header));
    let sig = sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

fn claims_json(exp: Option<u64>) -> serde_json::Value {
    let mut c = serde_json::json!({
        "sub": "admin", "authorities": ["ROLE_ADMIN"], "iat": now() - 5,
    });
    if let Some(exp) = exp {
        c["exp"] = exp.into();
    }
    c
}

#[tokio::test]
async fn i4_forged_bearer_tokens_are_refused_and_nothing_is_forwarded() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
    );
    let ours = EncodingKey::from_rsa_pem(rsa_keys().private_key_pem().as_bytes()).unwrap();
    let attacker_keys = KeyPair::generate_rsa(2048).unwrap();
    let attacker = EncodingKey::from_rsa_pem(attacker_keys.private_key_pem().as_bytes()).unwrap();
    let public_pem = rsa_keys().public_key_pem();
    let good_payload = b64(&claims_json(Some(now() + 300)));
    // jku/x5u must never be fetched: point them at a listener and check it stays silent.
    let trap = Upstream::ok().await;
    let trap_url = format!("http://{}/jwks.json", trap.addr);
    let rs512 = serde_json::json!({"alg": "RS512", "typ": "JWT"});

    let valid = forge(rs512.clone(), &good_payload, &ours, Algorithm::RS512);
    let mut tampered: Vec<&str> = valid.split('.').collect();
    let other_payload = b64(&serde_json::json!({
        "sub": "root", "authorities": ["ROLE_ADMIN"], "iat": now() - 5, "exp": now() + 300
    }));
    tampered[1] = &other_payload;
    let tampered = tampered.join(".");

    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            format!(
                "{}.{good_payload}.",
                b64(&serde_json::json!({"alg": "none", "typ": "JWT"}))
            ),
        ),
        (
            "HS512 with the public key as secret",
            forge(
                serde_json::json!({"alg": "HS512", "typ": "JWT"}),
                &good_payload,
                &EncodingKey::from_secret(public_pem.as_bytes()).unwrap(),
                Algorithm::HS512,
            ),
        ),
        (
            "RS256 where RS512 is pinned",
            forge(
                serde_json::json!({"alg": "RS256", "typ": "JWT"}),
                &good_payload,
                &ours,
                Algorithm::RS256,
            ),
        ),
        (
            "expired beyond leeway",
            forge(
                rs512.clone(),
                &b64(&claims_json(Some(now() - 3600))),
                &ours,
                Algorithm::RS512,
            ),
        ),
        (
            "no exp",
            forge(
                rs512.clone(),
                &b64(&claims_json(None)),
                &ours,
                Algorithm::RS512,
            ),
        ),
        ("tampered payload", tampered),
        (
            "another key",
            forge(rs512.clone(), &good_payload, &attacker, Algorithm::RS512),
        ),
        (
            "kid path traversal",
            forge(
                serde_json::json!({"alg": "RS512", "kid": "../../../../dev/null"}),
                &good_payload,
                &attacker,
                Algorithm::RS512,
            ),
        ),
        (
            "jku",
            forge(
                serde_json::json!({"alg": "RS512", "jku": trap_url}),
                &good_payload,
                &attacker,
                Algorithm::RS512,
            ),
        ),
        (
            "x5u",
            forge(
                serde_json::json!({"alg": "RS512", "x5u": trap_url}),
                &good_payload,
                &attacker,
                Algorithm::RS512,
            ),
        ),
        (
            "embedded jwk",
            forge(
                serde_json::json!({"alg": "RS512", "jwk": attacker_keys.public_key().to_jwk(tower_identity_proxy::jwt::Algorithm::RS512)}),
                &good_payload,
                &attacker,
                Algorithm::RS512,
            ),
        ),
        (
            "unknown crit",
            forge(
                serde_json::json!({"alg": "RS512", "crit": ["x-must-understand"], "x-must-understand": true}),
                &good_payload,
                &ours,
                Algorithm::RS512,
            ),
        ),
        ("non-UTF-8 payload", {
            let payload = URL_SAFE_NO_PAD.encode(b"{\"sub\":\"\xff\xfe\",\"exp\":99999999999}");
            forge(rs512.clone(), &payload, &ours, Algorithm::RS512)
        }),
        (
            "aud for someone else",
            forge(
                rs512.clone(),
                &b64(
                    &serde_json::json!({"sub": "admin", "authorities": [], "iat": now() - 5, "exp": now() + 300, "aud": "https://other.example"}),
                ),
                &ours,
                Algorithm::RS512,
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];

    let up = Upstream::ok().await;
    let app = start_app(layer()).await;
    app.target(&up, "");
    // The control: a token signed by the app's key the way the app signs is accepted.
    let r = app
        .get("/proxy/x", &format!("Authorization: Bearer {valid}\r\n"))
        .await;
    assert_eq!(
        r.status,
        200,
        "the valid control token was refused: {}",
        r.text()
    );
    assert_eq!(decode_rs512(&up.only().bearer())["sub"], "admin");

    for (name, token) in cases {
        let r = app
            .get("/proxy/x", &format!("Authorization: Bearer {token}\r\n"))
            .await;
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        assert!(
            r.one("www-authenticate").starts_with("Bearer"),
            "{name}: {}",
            r.head_str()
        );
    }
    assert_eq!(up.requests().len(), 1, "a forged token was forwarded");
    trap.assert_untouched();
}

#[tokio::test]
async fn i5_unreadable_keys_are_configuration_errors() {
    assert!(KeyPair::from_pem(b"not a key", None).is_err());
    assert!(KeyPair::from_pem(b"", None).is_err());
    assert!(
        KeyPair::generate_rsa(1024).is_err(),
        "short RSA keys are refused"
    );
}

#[tokio::test]
async fn i6_private_key_never_in_debug_output() {
    let pem = rsa_keys().private_key_pem();
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("");
    for shown in [
        format!("{:?}", rsa_keys()),
        format!("{:?}", KeySigner::rs512(rsa_keys()).unwrap()),
        format!("{:?}", layer()),
    ] {
        assert!(!shown.contains(&body[..40]), "private key in {shown}");
        assert!(!shown.contains("PRIVATE"), "private key in {shown}");
    }
}

#[tokio::test]
async fn i7_jti_per_token_when_configured_and_short_lifetime() {
    let signer = KeySigner::rs512(rsa_keys())
        .unwrap()
        .policy(TokenPolicy::new().jti(true));
    let up = Upstream::ok().await;
    // Uncached, so every request gets a fresh token (and jti).
    let app = start_app(ProxyLayer::uncached(signer)).await;
    app.target(&up, "");
    for _ in 0..3 {
        assert_eq!(app.get("/proxy/x", "").await.status, 200);
    }
    let jtis: Vec<String> = up
        .requests()
        .iter()
        .map(|r| {
            decode_rs512(&r.bearer())["jti"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 3);
    assert!(jtis[0] != jtis[1] && jtis[1] != jtis[2] && jtis[0] != jtis[2]);
}

#[tokio::test]
async fn i8_odd_claim_values_round_trip_as_json() {
    let name = "bob \"the\" \\ builder\n\0 ünïcødé 🦀";
    let roles = ["ROLE_\"Q\"", "ROLE_\\", "ROLE_ü"];
    let extractor = move |_: &http::request::Parts| async move {
        Ok(Some(tower_identity_proxy::identity::Identity::new(
            name, roles,
        )))
    };
    let up = Upstream::ok().await;
    let app = start_app(layer().with_identity(extractor)).await;
    app.target(&up, "");
    assert_eq!(app.get("/proxy/x", "").await.status, 200);
    let got = up.only();
    let claims = decode_rs512(&got.bearer());
    assert_eq!(claims["sub"], name);
    let mut want: Vec<&str> = roles.to_vec();
    want.sort();
    assert_eq!(claims["authorities"], serde_json::json!(want));
    // The claims only travel inside the token: no header carries them.
    assert!(!got.head_str().contains("builder"));
}
