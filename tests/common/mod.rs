//! Helpers shared by every integration-test binary, one concern a module:
//!
//! - [`keys`]: the OpenSSL-made fixtures in `tests/fixtures/` (see its README) and keys made
//!   once per test binary: [`rsa_keys`], [`ec256_keys`], [`ec384_keys`], [`ed25519_keys`].
//! - [`jwt`]: independent JWT checks, with `jsonwebtoken` called directly (never the crate's
//!   own verifier): [`decode_jwt`], [`decode_rs512`], [`decode_with_jwks`]; PyJWT's
//!   interpreter ([`python_with_pyjwt`]).
//! - [`server`]: [`serve`] runs any axum `Router` on 127.0.0.1:0 until the [`Server`] is
//!   dropped; [`spawn_app`] serves [`inner_echo`] wrapped in a `ProxyLayer`.
//! - [`target`]: [`echo_target`] (plain or TLS), a target that records every request it
//!   receives ([`Seen`]) and describes it back (see [`EchoTarget`]), or answers the bearer
//!   token it got ([`token_target`]); upgrades are handled by [`upgrade`].
//! - [`client`]: hyper-util's pooled client over HTTP/1.1 or HTTP/2 ([`client`],
//!   [`h2_client`]), [`send`], [`get`] and a response read whole, [`Reply`].
//! - [`raw`]: a raw TCP client writing exact bytes and reading HTTP/1.1 responses as sent
//!   ([`Raw`], [`raw()`]), for requests a well-behaved client cannot make.
//! - [`tls`]: a test PKI made with rcgen and TLS server configurations.
//! - [`app`]: identity extractors and the protocol tests' app (Alice's identity).
//!
//! Include it with `mod common;` (or `#[path = "../common/mod.rs"] mod common;` from a
//! directory binary) and use what you need; each test binary uses a part.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc
)]

pub mod app;
pub mod client;
pub mod jwt;
pub mod keys;
pub mod raw;
pub mod server;
pub mod target;
pub mod tls;
pub mod upgrade;

use std::{future::Future, time::Duration};

// Each binary uses a part.
#[allow(unused_imports)]
pub use {app::*, client::*, jwt::*, keys::*, raw::*, server::*, target::*, tls::*};

/// How long any single wait may take before the test fails as hung.
pub const LIVENESS: Duration = Duration::from_secs(20);

/// Awaits `f`, failing the test if it takes longer than [`LIVENESS`]: a hang becomes a
/// failure; no timing is asserted.
pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(LIVENESS, f).await {
        Ok(v) => v,
        Err(_) => panic!("hung (liveness bound exceeded): {what}"),
    }
}

/// A fresh temporary directory (removed by the caller with [`remove_dir`]).
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tip-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes a directory made by [`temp_dir`], ignoring errors.
pub fn remove_dir(dir: &std::path::Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `n` random-looking bytes covering every byte value (a fixed xorshift sequence).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ n as u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
