//! The JWK Set served over HTTP lets independent decoders verify the proxy's tokens with
//! nothing else configured: jsonwebtoken's own `JwkSet`/`DecodingKey::from_jwk`, and
//! PyJWT's `PyJWKClient`.

mod common;

use std::{net::SocketAddr, time::Duration};

use axum::Router;
use common::{
    decode_with_jwks, fetch_jwks, get_with, python_with_pyjwt, serve, token_target, user_header,
};
use jsonwebtoken::jwk::ThumbprintHash;
use serde_json::Value;
use tower_identity_proxy::{ProxyHandle, Target};
use tower_identity_proxy::{
    ProxyLayer,
    identity::IdentityExtractor,
    jwt::{Algorithm, Curve, KeyPair, KeySet, KeySigner},
};

const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The app: the proxy signing with `keys`, the JWK Set mounted next to it.
async fn app(keys: &KeySet, target: SocketAddr) -> SocketAddr {
    let proxy = ProxyLayer::new(keys.signer())
        .with_identity(user_header.or_anonymous())
        .handle(ProxyHandle::with_target(
            Target::parse(&format!("http://{target}")).unwrap(),
        ));
    serve(
        Router::new()
            .route_service(JWKS_PATH, keys.jwks())
            .layer(proxy),
    )
    .await
    .detach()
}

fn signers() -> Vec<(KeySigner, Algorithm)> {
    let rsa = KeyPair::generate_rsa(2048).unwrap();
    vec![
        (KeySigner::rs512(rsa.clone()).unwrap(), Algorithm::RS512),
        (
            KeySigner::with_algorithm(rsa, Algorithm::PS256).unwrap(),
            Algorithm::PS256,
        ),
        (
            KeySigner::new(KeyPair::generate_ec(Curve::P256).unwrap()),
            Algorithm::ES256,
        ),
        (
            KeySigner::new(KeyPair::generate_ec(Curve::P384).unwrap()),
            Algorithm::ES384,
        ),
        (
            KeySigner::new(KeyPair::generate_ed25519().unwrap()),
            Algorithm::EdDSA,
        ),
    ]
}

async fn token_via_proxy(app: SocketAddr, user: &str) -> String {
    // An empty user: no credentials, so the anonymous identity.
    let headers: &[(&str, &str)] = if user.is_empty() {
        &[]
    } else {
        &[("x-test-user", user)]
    };
    let reply = get_with(&format!("http://{app}/proxy/anything"), headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

#[tokio::test]
async fn jsonwebtoken_verifies_tokens_with_the_jwks_alone() {
    let target = token_target().await;
    for (signer, alg) in signers() {
        let keys = KeySet::new(signer).rotation_delay(Duration::ZERO);
        let app = app(&keys, target.addr()).await;
        let token = token_via_proxy(app, "Alice:ROLE_WONDERLAND,ROLE_USER").await;

        let (reply, jwks) = fetch_jwks(&format!("http://{app}{JWKS_PATH}")).await;
        assert_eq!(reply.header("content-type").unwrap(), "application/json");
        assert!(
            reply.header("cache-control").unwrap().contains("max-age="),
            "{alg}: {:?}",
            reply.headers
        );
        assert!(reply.headers.contains_key("etag"));

        // The members RFC 7517/7518 name, and no private ones.
        let raw = reply.json();
        let jwk = &raw["keys"][0];
        assert_eq!(jwk["use"], "sig", "{alg}");
        assert_eq!(jwk["alg"], alg.as_str());
        let (kty, members): (&str, &[&str]) = match alg {
            Algorithm::RS512 | Algorithm::PS256 => ("RSA", &["n", "e"]),
            Algorithm::ES256 | Algorithm::ES384 => ("EC", &["crv", "x", "y"]),
            _ => ("OKP", &["crv", "x"]),
        };
        assert_eq!(jwk["kty"], kty);
        for m in members {
            assert!(jwk[m].is_string(), "{alg}: no {m} in {jwk}");
        }
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(jwk.get(private).is_none(), "{alg}: {private} published");
        }

        // kid = RFC 7638 thumbprint, as computed by jsonwebtoken; the token names it.
        let header = jsonwebtoken::decode_header(&token).unwrap();
        let kid = header.kid.clone().unwrap();
        assert_eq!(kid, keys.active_kid());
        let thumbprint = jwks.keys[0].thumbprint(ThumbprintHash::SHA256).unwrap();
        assert_eq!(kid, thumbprint, "{alg}");

        let claims = decode_with_jwks(&token, &jwks).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims["sub"], "Alice");
        assert_eq!(
            claims["authorities"],
            serde_json::json!(["ROLE_USER", "ROLE_WONDERLAND"])
        );

        // A token from another key set is not verified by this JWKS.
        let stranger = KeySet::new(KeySigner::new(KeyPair::generate_ed25519().unwrap()))
            .rotation_delay(Duration::ZERO);
        let other_app = app_with_stranger(&stranger, target.addr()).await;
        let foreign = token_via_proxy(other_app, "Mallory:ROLE_ADMIN").await;
        assert!(decode_with_jwks(&foreign, &jwks).is_err());
    }
}

async fn app_with_stranger(keys: &KeySet, target: SocketAddr) -> SocketAddr {
    app(keys, target).await
}

const PYJWT_CHECK: &str = r#"
import json, sys
import jwt
url, alg, tokens = sys.argv[1], sys.argv[2], sys.argv[3:]
client = jwt.PyJWKClient(url)
out = []
for token in tokens:
    key = client.get_signing_key_from_jwt(token)
    out.append(jwt.decode(token, key.key, algorithms=[alg]))
print(json.dumps(out))
"#;

async fn pyjwt_verify(python: &str, url: &str, alg: Algorithm, tokens: &[&str]) -> Vec<Value> {
    let out = tokio::process::Command::new(python)
        .args(["-c", PYJWT_CHECK, url, alg.as_str()])
        .args(tokens)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused a token ({alg}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn pyjwt_jwk_client_verifies_tokens_and_rotations() {
    let Some(python) = python_with_pyjwt("pyjwt_jwk_client_verifies_tokens_and_rotations") else {
        return;
    };
    let target = token_target().await;
    for (signer, alg) in signers() {
        let keys = KeySet::new(signer).rotation_delay(Duration::ZERO);
        let app = app(&keys, target.addr()).await;
        let url = format!("http://{app}{JWKS_PATH}");
        let before = token_via_proxy(app, "Alice:ROLE_USER,ROLE_WONDERLAND").await;
        let anonymous = token_via_proxy(app, "").await;
        let claims = pyjwt_verify(&python, &url, alg, &[&before]).await;
        assert_eq!(claims[0]["sub"], "Alice", "{alg}");
        assert_eq!(
            claims[0]["authorities"],
            serde_json::json!(["ROLE_USER", "ROLE_WONDERLAND"])
        );

        // After a rotation both the previous and the new key verify, by kid.
        let next = match alg {
            Algorithm::RS512 | Algorithm::PS256 => KeyPair::generate_rsa(2048).unwrap(),
            Algorithm::ES256 => KeyPair::generate_ec(Curve::P256).unwrap(),
            Algorithm::ES384 => KeyPair::generate_ec(Curve::P384).unwrap(),
            _ => KeyPair::generate_ed25519().unwrap(),
        };
        let new_kid = keys.rotate(next).unwrap().into_kid();
        // A user the cache has not seen gets a token from the new key.
        let after = token_via_proxy(app, "Bob:ROLE_USER").await;
        assert_eq!(
            jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(),
            new_kid
        );
        let claims = pyjwt_verify(&python, &url, alg, &[&before, &anonymous, &after]).await;
        assert_eq!(claims[0]["sub"], "Alice");
        assert_eq!(claims[1]["sub"], "anonymousUser");
        assert_eq!(
            claims[1]["authorities"],
            serde_json::json!(["ROLE_ANONYMOUS"])
        );
        assert_eq!(claims[2]["sub"], "Bob");
    }
}
