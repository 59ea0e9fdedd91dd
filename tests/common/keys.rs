//! Key fixtures: the OpenSSL-made PEM files of `tests/fixtures/` (see its README) and key
//! pairs made once per test binary.

use std::sync::OnceLock;

use tower_identity_proxy::jwt::{Curve, KeyPair};

/// RSA-2048, PKCS#1 (`BEGIN RSA PRIVATE KEY`), made by `openssl genrsa -traditional`.
pub const RSA_PKCS1_PEM: &str = include_str!("../fixtures/rsa-pkcs1.pem");
/// The same key as PKCS#8 (`BEGIN PRIVATE KEY`).
pub const RSA_PKCS8_PEM: &str = include_str!("../fixtures/rsa-pkcs8.pem");
/// Its public key, SPKI (`BEGIN PUBLIC KEY`).
pub const RSA_PUBLIC_PEM: &str = include_str!("../fixtures/rsa-public.pem");
/// An unrelated RSA-2048 key, PKCS#8.
pub const OTHER_RSA_PKCS8_PEM: &str = include_str!("../fixtures/other-rsa-pkcs8.pem");
/// Its public key, SPKI.
pub const OTHER_RSA_PUBLIC_PEM: &str = include_str!("../fixtures/other-rsa-public.pem");

/// The fixture RSA key pair (PKCS#8 private + SPKI public), parsed once: the key the tests'
/// apps sign with unless a test needs its own.
pub fn rsa_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| {
        KeyPair::from_pem(RSA_PKCS8_PEM.as_bytes(), Some(RSA_PUBLIC_PEM.as_bytes()))
            .expect("fixture RSA key")
    })
    .clone()
}

/// A P-256 key pair, generated once per test binary.
pub fn ec256_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::generate_ec(Curve::P256).expect("P-256 key"))
        .clone()
}

/// A P-384 key pair, generated once per test binary.
pub fn ec384_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::generate_ec(Curve::P384).expect("P-384 key"))
        .clone()
}

/// An Ed25519 key pair, generated once per test binary.
pub fn ed25519_keys() -> KeyPair {
    static KEYS: OnceLock<KeyPair> = OnceLock::new();
    KEYS.get_or_init(|| KeyPair::generate_ed25519().expect("Ed25519 key"))
        .clone()
}
