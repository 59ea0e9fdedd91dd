//! Independent JWT checks: `jsonwebtoken` called directly (with a PEM key or a JWK Set
//! fetched over HTTP) or PyJWT, never the crate's own verifier.

use std::{io::Write as _, process::Command};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::Error, jwk::JwkSet};
use serde_json::Value;

use super::{RSA_PUBLIC_PEM, Reply, get};

/// The checks of every decode here: exactly `alg`, `exp` and `sub` required, no clock
/// leeway; `aud` is validated, so a token naming an audience fails unless the caller sets
/// the expected one.
pub fn validation(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 0;
    validation
}

/// Verifies `token` with `public_pem` (SPKI) as `validation` says (its first algorithm
/// picks the key type); returns the claims.
pub fn decode_with(token: &str, public_pem: &str, validation: &Validation) -> Result<Value, Error> {
    use Algorithm as A;
    let pem = public_pem.as_bytes();
    let key = match validation.algorithms[0] {
        A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512 => {
            DecodingKey::from_rsa_pem(pem)?
        }
        A::ES256 | A::ES384 => DecodingKey::from_ec_pem(pem)?,
        A::EdDSA => DecodingKey::from_ed_pem(pem)?,
        other => panic!("not an asymmetric algorithm: {other:?}"),
    };
    jsonwebtoken::decode::<Value>(token, &key, validation).map(|d| d.claims)
}

/// Verifies `token` with `public_pem` (SPKI) and exactly `alg` ([`validation`]); returns the
/// claims.
pub fn decode_jwt(token: &str, public_pem: &str, alg: Algorithm) -> Result<Value, Error> {
    decode_with(token, public_pem, &validation(alg))
}

/// [`decode_jwt`] with the fixture RSA key and RS512, panicking on failure.
pub fn decode_rs512(token: &str) -> Value {
    decode_jwt(token, RSA_PUBLIC_PEM, Algorithm::RS512)
        .unwrap_or_else(|e| panic!("not a valid RS512 token ({e}): {token}"))
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer_token(authorization: &str) -> &str {
    authorization
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer header: {authorization}"))
}

/// The token of the `Authorization: Bearer <token>` header.
pub fn bearer(headers: &HeaderMap) -> String {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .expect("an Authorization header")
        .to_str()
        .unwrap();
    bearer_token(value).to_owned()
}

/// The header of a compact JWT, decoded but not verified.
pub fn jwt_header(token: &str) -> Value {
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap()
}

/// The `kid` a token's header names (not verified).
pub fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .unwrap()
        .kid
        .expect("a kid")
}

/// Fetches a JWK Set over HTTP and parses it with jsonwebtoken's own `JwkSet`.
pub async fn fetch_jwks(url: &str) -> (Reply, JwkSet) {
    let reply = get(url).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let set: JwkSet = serde_json::from_slice(&reply.body).unwrap();
    (reply, set)
}

/// Verifies `token` with jsonwebtoken alone: the key is the JWK whose `kid` the token
/// names, the algorithm the one that JWK declares ([`validation`]). Returns the claims.
pub fn decode_with_jwks(token: &str, jwks: &JwkSet) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} not in JWKS"))?;
    let alg = jwk
        .common
        .key_algorithm
        .ok_or("the JWK has no alg")?
        .to_string()
        .parse()
        .map_err(|_| "unknown alg")?;
    if header.alg != alg {
        return Err(format!(
            "token alg {:?} is not the key's {alg:?}",
            header.alg
        ));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    jsonwebtoken::decode::<Value>(token, &key, &validation(alg))
        .map(|data| data.claims)
        .map_err(|e| e.to_string())
}

/// The Python interpreter with PyJWT and cryptography: `$TIP_PYTHON`, else `python3`.
///
/// When it is missing, the test fails if `$CI` is set and is skipped (with a line saying
/// so) otherwise.
pub fn python_with_pyjwt(test: &str) -> Option<String> {
    let python = std::env::var("TIP_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let why = format!(
        "{python} cannot `import jwt, cryptography`: set TIP_PYTHON to an interpreter with \
         `pyjwt[crypto]` (`.ci/run` makes one in a venv)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}");
    }
    // Straight to stderr: libtest captures `eprintln!` of passing tests, not this.
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
    None
}
