//! Signing: the token's claims and header, every algorithm checked by jsonwebtoken, keys
//! from PEM, keys kept out of `Debug`, the verifying side, and the unsigned mode.

use std::time::Duration;

use jsonwebtoken::{Algorithm as A, Validation};
use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    identity::{BasicAuth, CredentialStore, Identity, IdentityExtractor},
    jwt::{
        Algorithm, JwtSigner, KeyPair, KeySigner, PublicKey, TokenPolicy,
        dangerous::InsecureUnsignedSigner,
    },
};

use crate::{
    common::{
        self, EchoTarget, OTHER_RSA_PKCS8_PEM, RSA_PKCS1_PEM, RSA_PKCS8_PEM, RSA_PUBLIC_PEM,
        bearer, decode_jwt, decode_with, ec256_keys, ec384_keys, ed25519_keys, get, jwt_header,
        now_secs, rsa_keys, spawn_app,
    },
    identity::refused_tokens,
    layer_to,
};

/// Sends one request through a layer signing with `signer`; the token the target received.
async fn token_through<J: JwtSigner>(
    signer_layer: ProxyLayer<tower_identity_proxy::identity::Anonymous, J>,
) -> (String, EchoTarget) {
    let target = common::echo_target().await;
    let app = spawn_app(signer_layer.handle(ProxyHandle::with_target(
        Target::parse(&target.url()).unwrap(),
    )))
    .await;
    let r = get(&app.url("/proxy/token")).await;
    assert_eq!(r.status, 200);
    (bearer(&target.last().headers), target)
}

#[tokio::test]
async fn claims_are_sub_authorities_and_a_short_backdated_validity() {
    let target = common::echo_target().await;
    let users = CredentialStore::new();
    users
        .insert("Alice", "pw", ["ROLE_WONDERLAND", "ROLE_USER"])
        .unwrap();
    let app = spawn_app(layer_to(&target).with_identity(BasicAuth::new(users))).await;
    let before = now_secs();
    let r = common::get_with(
        &app.url("/proxy/claims"),
        &[("authorization", &common::basic("Alice", "pw"))],
    )
    .await;
    let after = now_secs();
    assert_eq!(r.status, 200);
    let claims = target.last().claims();
    assert_eq!(claims["sub"], "Alice");
    assert_eq!(
        claims["authorities"],
        serde_json::json!(["ROLE_USER", "ROLE_WONDERLAND"])
    );
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert!(iat < before, "iat is back-dated: {iat} vs {before}");
    assert!(iat + 60 > before, "but only by seconds: {iat} vs {before}");
    assert!(exp > after, "not expired");
    assert!(
        exp <= after + 300,
        "short-lived (default five minutes): {exp} vs {after}"
    );
    for absent in ["iss", "aud", "jti"] {
        assert!(
            claims.get(absent).is_none(),
            "{absent} only when configured"
        );
    }
    let object = claims.as_object().unwrap();
    assert_eq!(object.len(), 4, "{claims}");
}

#[tokio::test]
async fn issuer_audience_and_lifetime_are_configurable() {
    let signer = KeySigner::rs512(rsa_keys()).unwrap().policy(
        TokenPolicy::new()
            .lifetime(Duration::from_secs(60))
            .backdate(Duration::from_secs(5))
            .issuer("https://app.example")
            .audience("https://target.example"),
    );
    let (token, _target) = token_through(ProxyLayer::new(signer)).await;
    let mut v = Validation::new(A::RS512);
    v.set_issuer(&["https://app.example"]);
    v.set_audience(&["https://target.example"]);
    v.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
    let claims = decode_with(&token, RSA_PUBLIC_PEM, &v).unwrap();
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 65);
    // A verifier expecting another audience refuses it.
    v.set_audience(&["https://other.example"]);
    assert!(decode_with(&token, RSA_PUBLIC_PEM, &v).is_err());
}

#[tokio::test]
async fn rs512_by_default_with_the_keys_kid() {
    let (token, _target) = token_through(ProxyLayer::new(KeySigner::new(rsa_keys()))).await;
    let header = jwt_header(&token);
    assert_eq!(header["alg"], "RS512");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["kid"], rsa_keys().kid());
    assert!(decode_jwt(&token, RSA_PUBLIC_PEM, A::RS512).is_ok());
    // Pinned: the same token does not pass as another algorithm.
    assert!(decode_jwt(&token, RSA_PUBLIC_PEM, A::RS256).is_err());
    assert!(decode_jwt(&token, RSA_PUBLIC_PEM, A::PS512).is_err());
    // Nor with another key.
    assert!(decode_jwt(&token, common::OTHER_RSA_PUBLIC_PEM, A::RS512).is_err());
}

#[tokio::test]
async fn every_algorithm_verifies_with_jsonwebtoken() {
    let cases = [
        (Algorithm::RS256, rsa_keys(), A::RS256),
        (Algorithm::RS384, rsa_keys(), A::RS384),
        (Algorithm::RS512, rsa_keys(), A::RS512),
        (Algorithm::PS256, rsa_keys(), A::PS256),
        (Algorithm::PS384, rsa_keys(), A::PS384),
        (Algorithm::PS512, rsa_keys(), A::PS512),
        (Algorithm::ES256, ec256_keys(), A::ES256),
        (Algorithm::ES384, ec384_keys(), A::ES384),
        (Algorithm::EdDSA, ed25519_keys(), A::EdDSA),
    ];
    for (alg, keys, jwt_alg) in cases {
        let signer = KeySigner::with_algorithm(keys.clone(), alg).unwrap();
        assert_eq!(signer.algorithm(), alg);
        let (token, _target) = token_through(ProxyLayer::new(signer)).await;
        assert_eq!(jwt_header(&token)["alg"], alg.as_str());
        let public = if keys.kid() == rsa_keys().kid() {
            RSA_PUBLIC_PEM.to_owned()
        } else {
            keys.public_key_pem()
        };
        let claims = decode_jwt(&token, &public, jwt_alg).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims["sub"], "anonymousUser", "{alg}");
    }
    // The default algorithm follows the key type.
    assert_eq!(KeySigner::new(ec256_keys()).algorithm(), Algorithm::ES256);
    assert_eq!(KeySigner::new(ec384_keys()).algorithm(), Algorithm::ES384);
    assert_eq!(KeySigner::new(ed25519_keys()).algorithm(), Algorithm::EdDSA);
    // A key cannot sign with another family's algorithm.
    assert!(KeySigner::with_algorithm(rsa_keys(), Algorithm::ES256).is_err());
    assert!(KeySigner::with_algorithm(ec256_keys(), Algorithm::ES384).is_err());
    assert!(KeySigner::rs512(ed25519_keys()).is_err());
}

#[tokio::test]
async fn key_pairs_from_pkcs1_and_pkcs8_pem_and_spki_public_keys() {
    let pkcs1 =
        KeyPair::from_pem(RSA_PKCS1_PEM.as_bytes(), Some(RSA_PUBLIC_PEM.as_bytes())).unwrap();
    let pkcs8 = KeyPair::from_pem(RSA_PKCS8_PEM.as_bytes(), None).unwrap();
    let spki = PublicKey::from_pem(RSA_PUBLIC_PEM.as_bytes()).unwrap();
    assert_eq!(pkcs1.kid(), pkcs8.kid());
    assert_eq!(spki.kid(), pkcs1.kid());
    assert_eq!(pkcs1.public_key(), &spki);
    // The exported public key is the same SPKI as OpenSSL's.
    assert_eq!(
        pkcs1
            .public_key_pem()
            .split_whitespace()
            .collect::<String>(),
        RSA_PUBLIC_PEM.split_whitespace().collect::<String>()
    );

    // A token signed with the PKCS#1-loaded key verifies with the OpenSSL public key.
    let (token, _target) = token_through(ProxyLayer::new(KeySigner::rs512(pkcs1).unwrap())).await;
    assert_eq!(
        decode_jwt(&token, RSA_PUBLIC_PEM, A::RS512).unwrap()["sub"],
        "anonymousUser"
    );

    // Mismatched or unreadable keys are configuration errors.
    let err = KeyPair::from_pem(
        OTHER_RSA_PKCS8_PEM.as_bytes(),
        Some(RSA_PUBLIC_PEM.as_bytes()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(
        KeyPair::from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            None
        )
        .is_err()
    );
    assert!(KeyPair::from_pem(RSA_PUBLIC_PEM.as_bytes(), None).is_err());
    assert!(PublicKey::from_pem(RSA_PKCS8_PEM.as_bytes()).is_err());
    // Freshly generated keys, for demos.
    let fresh = KeyPair::generate_rsa(2048).unwrap();
    assert_ne!(fresh.kid(), pkcs8.kid());
    let again = KeyPair::from_pem(
        fresh.private_key_pem().as_bytes(),
        Some(fresh.public_key_pem().as_bytes()),
    )
    .unwrap();
    assert_eq!(again.kid(), fresh.kid());
}

#[tokio::test]
async fn keys_and_tokens_stay_out_of_debug_output() {
    let keys = KeyPair::from_pem(RSA_PKCS1_PEM.as_bytes(), None).unwrap();
    let signer = KeySigner::rs512(keys.clone()).unwrap();
    let token = signer.sign(&Identity::anonymous()).await.unwrap();
    let users = CredentialStore::new();
    users.insert("Alice", "hunter2-password", ["R"]).unwrap();
    let layer = ProxyLayer::new(signer.clone()).with_identity(BasicAuth::new(users.clone()));
    let outputs = [
        format!("{keys:?}"),
        format!("{keys:#?}"),
        format!("{signer:?}"),
        format!("{layer:?}"),
        format!("{token:?}"),
        format!("{users:?}"),
        format!("{:?}", BasicAuth::new(users.clone())),
        format!("{:?}", keys.verifier()),
    ];
    // Any 16-character run of the private key's base64 body would betray it.
    let exported = keys.private_key_pem();
    let secret_lines: Vec<&str> = RSA_PKCS1_PEM
        .lines()
        .chain(exported.lines())
        .filter(|l| !l.starts_with("-----"))
        .collect();
    for out in &outputs {
        assert!(!out.contains("PRIVATE"), "{out}");
        for line in &secret_lines {
            for chunk in line.as_bytes().chunks(16).filter(|c| c.len() == 16) {
                let chunk = std::str::from_utf8(chunk).unwrap();
                assert!(!out.contains(chunk), "key material in {out}");
            }
        }
        assert!(!out.contains(token.as_str()), "the token in {out}");
        assert!(!out.contains("hunter2-password"), "a password in {out}");
    }
}

#[tokio::test]
async fn the_verifying_side_refuses_unsafe_tokens() {
    let verifier = rsa_keys().verifier();
    for (name, token) in refused_tokens() {
        assert!(verifier.verify(&token).is_err(), "{name} was accepted");
    }
    // And accepts the app's own tokens.
    let token = KeySigner::rs512(rsa_keys())
        .unwrap()
        .sign(&Identity::new("Alice", ["ROLE_USER"]))
        .await
        .unwrap();
    let claims = verifier.verify(token.as_str()).unwrap();
    assert_eq!(claims.sub, "Alice");
    assert_eq!(claims.authorities, ["ROLE_USER"]);
}

#[tokio::test]
async fn the_unsigned_mode_is_explicit_and_unverifiable() {
    let (token, target) = token_through(ProxyLayer::uncached(InsecureUnsignedSigner::new())).await;
    assert_eq!(jwt_header(&token)["alg"], "none");
    assert!(token.ends_with('.'), "no signature");
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "anonymousUser");
    assert_eq!(claims["authorities"], serde_json::json!(["ROLE_ANONYMOUS"]));
    assert!(claims["exp"].as_u64().unwrap() > now_secs());
    // No verifier that pins a real algorithm accepts it.
    assert!(decode_jwt(&token, RSA_PUBLIC_PEM, A::RS512).is_err());
    assert!(rsa_keys().verifier().verify(&token).is_err());
    assert_eq!(target.count(), 1);
}

/// Each signature carries a random `jti`, so two tokens are equal only if one signature
/// served both (RS512 alone is deterministic: within one second, an uncached signer would
/// hand out equal tokens too).
#[tokio::test]
async fn tokens_are_cached_per_identity() {
    let extractor = |parts: &http::request::Parts| {
        let user = parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("anon")
            .to_owned();
        async move { Ok(Some(Identity::new(user, ["ROLE_USER"]))) }
    };
    let signer = || {
        KeySigner::rs512(rsa_keys())
            .unwrap()
            .policy(TokenPolicy::new().jti(true))
    };
    let tokens_of = |target: EchoTarget, app: common::Server| async move {
        let mut tokens = Vec::new();
        for user in ["a", "a", "b", "a"] {
            common::get_with(&app.url("/proxy/c"), &[("x-user", user)]).await;
            let token = bearer(&target.last().headers);
            let claims = decode_jwt(&token, RSA_PUBLIC_PEM, A::RS512).unwrap();
            assert_eq!(claims["sub"], user);
            assert!(claims["jti"].is_string(), "{claims}");
            tokens.push(token);
        }
        tokens
    };

    let target = common::echo_target().await;
    let app = spawn_app(ProxyLayer::new(signer()).with_identity(extractor).handle(
        ProxyHandle::with_target(Target::parse(&target.url()).unwrap()),
    ))
    .await;
    let tokens = tokens_of(target, app).await;
    assert_eq!(tokens[0], tokens[1]);
    assert_eq!(tokens[0], tokens[3]);
    assert_ne!(tokens[0], tokens[2]);

    // The control: without the cache, every request has a token of its own.
    let target = common::echo_target().await;
    let app = spawn_app(
        ProxyLayer::uncached(signer())
            .with_identity(extractor)
            .handle(ProxyHandle::with_target(
                Target::parse(&target.url()).unwrap(),
            )),
    )
    .await;
    let tokens = tokens_of(target, app).await;
    assert_ne!(tokens[0], tokens[1]);
    assert_ne!(tokens[0], tokens[3]);
}

thread_local! {
    /// Where the log lines of this thread go, while a test captures them.
    static CAPTURE: std::cell::RefCell<Option<LogBuffer>> = const { std::cell::RefCell::new(None) };
}

#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

/// Writes to the capturing buffer of the current thread, if any; else nowhere.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(b) = &*c.borrow() {
                b.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One global subscriber for the whole test binary, logging everything this crate logs
/// (events, and spans with their fields when they close) at every level. Global, because a
/// thread-scoped subscriber races with the callsite interest cache of the other tests.
fn capture_logs() -> LogBuffer {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "tower_identity_proxy=trace",
            ))
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(|| ThreadWriter)
            .with_ansi(false)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
    let buffer = LogBuffer::default();
    CAPTURE.with(|c| *c.borrow_mut() = Some(buffer.clone()));
    buffer
}

/// The current-thread runtime of `#[tokio::test]` runs the app, the target and the client
/// on this thread, so their log lines are this thread's.
#[tokio::test]
async fn keys_passwords_and_tokens_never_reach_the_logs() {
    let logs = capture_logs();

    let target = common::echo_target().await;
    let users = CredentialStore::new();
    users
        .insert("Alice", "hunter2-password", ["ROLE_USER"])
        .unwrap();
    let keys = KeyPair::from_pem(RSA_PKCS1_PEM.as_bytes(), None).unwrap();
    let identity = BasicAuth::new(users).or(tower_identity_proxy::identity::BearerJwt::new(
        keys.verifier(),
    ));
    let handle = ProxyHandle::new();
    let proxy = ProxyLayer::new(KeySigner::rs512(keys.clone()).unwrap())
        .with_identity(identity)
        .handle(handle.clone());
    let app = spawn_app(proxy).await;
    handle.set_target(Some(&target.url())).unwrap();
    let ok = common::get_with(
        &app.url("/proxy/logged"),
        &[("authorization", &common::basic("Alice", "hunter2-password"))],
    )
    .await;
    assert_eq!(ok.status, 200);
    let token = bearer(&target.last().headers);
    let again = common::get_with(
        &app.url("/proxy/logged"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(again.status, 200);
    let bad = common::get_with(
        &app.url("/proxy/logged"),
        &[(
            "authorization",
            &common::basic("Alice", "wrong-password-xyz"),
        )],
    )
    .await;
    assert_eq!(bad.status, 401);

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("proxy target changed"),
        "the logs were captured: {text}"
    );
    assert!(
        text.contains("/proxy/logged"),
        "requests are logged: {text}"
    );
    let payload = token.split('.').nth(1).unwrap();
    let signature = token.split('.').nth(2).unwrap();
    for secret in ["hunter2-password", "wrong-password-xyz", payload, signature] {
        assert!(!text.contains(secret), "{secret} in the logs");
    }
    for line in RSA_PKCS1_PEM.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!text.contains(&line[..16]), "key material in the logs");
    }
}
